package store

import (
	"bytes"
	"context"
	"strconv"

	"github.com/cellplane/cellplane/internal/cperr"
	cellv1 "github.com/cellplane/cellplane/proto/cellplane/cell/v1"
	"github.com/cockroachdb/pebble/v2"
	"google.golang.org/protobuf/proto"
)

// This file is the store's side of replication (docs/design.md §8): a STANDBY
// tenant applies its source's change events and imports its exports
// through this cell's Raft; the source keeps the change-log events its
// standby still needs (replica floor); exports read a consistent snapshot.

// apply_changes applies other operations, so it joins the dispatch table
// after the table exists.
func init() {
	ops[22] = opSpec{name: "apply_changes", tenant: true, apply: applyChanges}
}

// notStandby is the rejection of replication commands for a tenant that is
// not a standby here (it was promoted, fenced or removed meanwhile).
func notStandby(rec *cellv1.TenantRecord) *cperr.Error {
	if rec == nil {
		return cperr.New(cperr.TenantNotFound, "tenant not found in this cell")
	}
	return cperr.New(cperr.WrongCell, "tenant is not a standby in this cell").
		With(cperr.MetaRole, rec.GetRole().String()).
		With(cperr.MetaEpoch, strconv.FormatUint(rec.GetEpoch(), 10))
}

// needsBootstrap tells the sink to import an export before streaming.
func needsBootstrap(msg string, args ...any) *cperr.Error {
	return cperr.New(cperr.ChangesTrimmed, msg, args...)
}

// applyChanges applies a source's change events to a STANDBY tenant. The
// events must continue the tenant's tseq without a gap (those at or below
// it were applied before and are skipped). Each event is applied with the
// source's command and timestamp and logged with the source's result, so
// the standby's state, change log and dedup window are the source's.
//
// An event the standby cannot apply means its copy diverged from the
// source (it cannot happen while both follow the rules): the standby is
// marked not bootstrapped, so the sink imports a fresh export, whose first
// chunk clears whatever this batch wrote.
func applyChanges(o *opCtx) (*cellv1.CommandResult, error) {
	rec := o.st.rec
	if rec == nil || rec.GetRole() != cellv1.Role_ROLE_STANDBY {
		return nil, notStandby(rec)
	}
	if err := checkEvents(o.c.GetTenant(), o.c.GetApplyChanges().GetEvents()); err != nil {
		// Invariant 12: nothing of the batch is applied.
		if o.tx.f.onRejected != nil {
			o.tx.f.onRejected()
		}
		logRejected(o.tx.f.log, "apply", o.c.GetTenant(), rec.GetSourceCell(), err)
		return nil, err
	}
	if !rec.GetBootstrapped() {
		return nil, needsBootstrap("the standby has not been bootstrapped from its source")
	}
	next := rec.GetTseq() + 1
	for _, ev := range o.c.GetApplyChanges().GetEvents() {
		switch t := ev.GetTseq(); {
		case t < next:
			continue
		case t > next:
			return nil, needsBootstrap("change %d does not follow the standby's tseq %d", t, next-1)
		}
		next++
	}
	o.st.dirty = true
	for _, ev := range o.c.GetApplyChanges().GetEvents() {
		if ev.GetTseq() <= rec.GetTseq() {
			continue
		}
		// The command as this tenant's: checkEvents made sure it names
		// no other, and the copy keeps it so whatever the event holds.
		cmd := proto.Clone(ev.GetCommand()).(*cellv1.Command)
		cmd.Tenant = o.c.GetTenant()
		spec, ok := lookupOp(cmd)
		if ok && spec.owner && cmd.GetVersion() <= commandVersion {
			// A data mutation: the source applied it, so must we.
			op := &opCtx{tx: o.tx, c: cmd, st: o.st, now: cmd.GetTimeUnixNano(), replicated: true, source: ev.GetResult()}
			if _, err := spec.apply(op); err != nil {
				rec.Bootstrapped = false
				o.tx.f.log.Warn("standby diverged from its source; it will bootstrap again",
					"tenant", o.c.GetTenant(), "tseq", ev.GetTseq(), "op", spec.name, "err", err)
				return &cellv1.CommandResult{Tseq: rec.GetTseq()}, nil
			}
		}
		// A source's quota change is the tenant's, wherever it is owner
		// next (a promoted standby enforces it).
		if q := cmd.GetSetTenant().GetQuota(); q != nil {
			setQuota(rec, q)
		}
		// Role changes of the source (a fence) and unknown ignorable
		// operations only continue the log.
		res, _ := proto.Clone(ev.GetResult()).(*cellv1.CommandResult)
		if res == nil {
			res = &cellv1.CommandResult{}
		}
		rec.Tseq = ev.GetTseq() - 1
		o.tx.finishMutation(cmd, o.st, res, true)
		rec.UpdateTimeUnixNano = ev.GetTimeUnixNano()
	}
	return &cellv1.CommandResult{Tseq: rec.GetTseq()}, nil
}

// applyImport loads one chunk of an export into a STANDBY tenant.
func applyImport(o *opCtx) (*cellv1.CommandResult, error) {
	rec := o.st.rec
	op := o.c.GetImportTenant()
	if rec == nil || rec.GetRole() != cellv1.Role_ROLE_STANDBY {
		return nil, notStandby(rec)
	}
	if op.GetSourceCell() != rec.GetSourceCell() {
		return nil, cperr.New(cperr.StaleEpoch, "export of cell %q, but the standby follows %q", op.GetSourceCell(), rec.GetSourceCell())
	}
	tenant := o.c.GetTenant()
	if op.GetFirst() {
		o.tx.delRange(tenantPrefix(tenant), tenantEnd(tenant))
		rec.Bootstrapped = false
	}
	prefix := tenantPrefix(tenant)
	for _, kv := range op.GetPairs() {
		o.tx.setRaw(append(bytes.Clone(prefix), kv.GetKey()...), kv.GetValue())
	}
	if src := op.GetRecord(); src != nil {
		rec.Tseq = src.GetTseq()
		rec.Usage = proto.Clone(usage(src)).(*cellv1.TenantUsage)
		rec.DedupFirst, rec.DedupNext = src.GetDedupFirst(), src.GetDedupNext()
		rec.DedupFirstTimeUnixNano = src.GetDedupFirstTimeUnixNano()
		rec.ChangelogFirstTseq, rec.ChangelogCount = src.GetChangelogFirstTseq(), src.GetChangelogCount()
		rec.ChangelogBytes, rec.ChangelogFirstTimeUnixNano = src.GetChangelogBytes(), src.GetChangelogFirstTimeUnixNano()
		rec.UpdateTimeUnixNano = src.GetUpdateTimeUnixNano()
		rec.AuditFirstTseq, rec.AuditCount = src.GetAuditFirstTseq(), src.GetAuditCount()
		rec.AuditFirstTimeUnixNano = src.GetAuditFirstTimeUnixNano()
		setQuota(rec, src.GetQuota())
		rec.Bootstrapped = true
	}
	o.st.dirty = true
	return &cellv1.CommandResult{Tseq: rec.GetTseq()}, nil
}

// applyReplicaAck records the standby's applied tseq (the replica floor).
func applyReplicaAck(o *opCtx) (*cellv1.CommandResult, error) {
	rec := o.st.rec
	if rec == nil {
		return nil, cperr.New(cperr.TenantNotFound, "tenant not found in this cell")
	}
	if rec.GetRole() == cellv1.Role_ROLE_STANDBY {
		return nil, cperr.New(cperr.WrongCell, "a standby has no standby of its own").With(cperr.MetaRole, rec.GetRole().String())
	}
	rec.ReplicaFloorTseq = o.c.GetReplicaAck().GetTseq()
	o.st.dirty = true
	return &cellv1.CommandResult{Tseq: rec.GetTseq()}, nil
}

// ReadReplica runs fn on a read-only view of a tenant in any role (the
// replication source reads FENCED and OWNER tenants alike). It reads this
// node's applied state, which only holds committed entries; it does not
// establish linearizability. fn must not keep the view.
func (s *Store) ReadReplica(tenant string, fn func(*TenantView) error) error {
	return s.fsm.view(func(r pebble.Reader) error {
		rec, err := getRecord(r, tenant)
		if err != nil {
			return err
		}
		if rec == nil {
			return cperr.New(cperr.TenantNotFound, "tenant not found in this cell")
		}
		return fn(&TenantView{r: r, tenant: tenant, rec: rec})
	})
}

// Record returns a copy of the tenant's record as of the view.
func (v *TenantView) Record() *cellv1.TenantRecord {
	return proto.Clone(v.rec).(*cellv1.TenantRecord)
}

// ExportChunk is one chunk of a tenant export. Record is set on the last
// chunk only: the tenant's record as of the export's snapshot.
type ExportChunk struct {
	Pairs  []*cellv1.KeyValue
	Bytes  int
	Record *cellv1.TenantRecord
}

// ExportTenant reads a consistent snapshot of the tenant's data range and
// calls fn with chunks of about chunkBytes, the last one carrying the
// record. The snapshot is not held across fn under any lock, so a slow
// consumer does not stall the node; closing the store ends the export with
// CELL_UNAVAILABLE.
func (s *Store) ExportTenant(ctx context.Context, tenant string, chunkBytes int, fn func(ExportChunk) error) error {
	if chunkBytes <= 0 {
		chunkBytes = 1 << 20
	}
	snap, err := s.fsm.openSnapshot()
	if err != nil {
		return err
	}
	defer s.fsm.releaseSnapshot(snap)
	var rec *cellv1.TenantRecord
	err = s.fsm.withSnapshot(snap, func(r pebble.Reader) error {
		var err error
		rec, err = getRecord(r, tenant)
		return err
	})
	if err != nil {
		return err
	}
	if rec == nil {
		return cperr.New(cperr.TenantNotFound, "tenant not found in this cell")
	}
	prefix := tenantPrefix(tenant)
	lower, upper := prefix, tenantEnd(tenant)
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		var chunk ExportChunk
		var more bool
		err := s.fsm.withSnapshot(snap, func(r pebble.Reader) error {
			return scan(r, lower, upper, func(k, v []byte) (bool, error) {
				if chunk.Bytes >= chunkBytes {
					more = true
					lower = bytes.Clone(k) // the next chunk starts at k
					return false, nil
				}
				chunk.Pairs = append(chunk.Pairs, &cellv1.KeyValue{Key: bytes.Clone(k[len(prefix):]), Value: bytes.Clone(v)})
				chunk.Bytes += len(k) + len(v)
				return true, nil
			})
		})
		if err != nil {
			return err
		}
		if !more {
			chunk.Record = proto.Clone(rec).(*cellv1.TenantRecord)
		}
		if err := fn(chunk); err != nil {
			return err
		}
		if !more {
			return nil
		}
	}
}

// Authority says whether this cell may acknowledge writes now (docs/design.md §8,
// the cell authority lease). It must answer from local state only.
type Authority interface {
	Valid() bool
}

// SetAuthority installs the authority gate (nil removes it: a cell
// without a registry has no lease and is always allowed). While the gate
// says no, client writes, linearizable reads and LEADER reads are refused
// with AUTHORITY_LEASE_EXPIRED (STALE reads are still served: their bound
// is contact with this cell's Raft leader, not the cell's authority); a write applied while the lease lapsed is not
// acknowledged (a retry with its request id gets its result later).
func (s *Store) SetAuthority(a Authority) {
	if a == nil {
		s.authority.Store(nil)
		return
	}
	s.authority.Store(&a)
}

// checkAuthority returns AUTHORITY_LEASE_EXPIRED while the gate says no.
func (s *Store) checkAuthority() error {
	a := s.authority.Load()
	if a == nil || (*a).Valid() {
		return nil
	}
	s.metrics.authorityRefusals.Inc()
	return cperr.New(cperr.AuthorityLeaseExpired, "this cell cannot confirm its authority lease; it acknowledges no writes until it can").
		WithRetryAfter(s.cfg.Raft.HeartbeatTimeout)
}
