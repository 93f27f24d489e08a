package store

import (
	"bytes"
	"context"
	"encoding/binary"
	"time"

	cellv1 "github.com/cellplane/cellplane/proto/cellplane/cell/v1"
	contextv1 "github.com/cellplane/cellplane/proto/cellplane/context/v1"
	"github.com/cockroachdb/pebble/v2"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Retention. A context or memory key may carry an expire_time: the
// request's, its ttl added to the command's proposal time, or the tenant's
// default retention (TenantQuota.default_retention_nanos: the tenant's
// own, else the cell's). The state machine compares it with the command's
// time only (never a replica's clock), so every replica decides alike;
// a standby takes the expiry its source resolved from the source's result
// (its own cell's default may differ). Expired items read as missing at
// once; an expire_sweep command, proposed by the leader, removes them in
// bounded batches through the expiry index ('x' keys), and the change log
// carries the sweep to the standby, which removes the same items.

// defaultSweepBatch is an expire_sweep's batch when the op names none.
const defaultSweepBatch = 1024

// nanos is a timestamp in unix nanoseconds (validated timestamps fit).
func nanos(t *timestamppb.Timestamp) int64 {
	return t.GetSeconds()*int64(time.Second) + int64(t.GetNanos())
}

// expired reports whether an item with expiry t is expired at time now
// (unix nanos; 0: unknown, nothing is expired).
func expired(t *timestamppb.Timestamp, now int64) bool {
	return t != nil && now != 0 && nanos(t) <= now
}

// retentionOf is the default retention in force for a tenant: its own,
// else the cell's (0: none).
func retentionOf(settings *cellv1.CellSettings, rec *cellv1.TenantRecord) int64 {
	if d := rec.GetQuota().GetDefaultRetentionNanos(); d > 0 {
		return d
	}
	return settings.GetTenantQuota().GetDefaultRetentionNanos()
}

// expiry resolves a new item's expiry: at, else now + ttl, else the
// tenant's default retention, else none. A standby applying its source's
// event takes what the source resolved (source, from its result).
func (o *opCtx) expiry(at *timestamppb.Timestamp, ttl *durationpb.Duration, source *timestamppb.Timestamp) *timestamppb.Timestamp {
	if o.replicated {
		return source
	}
	switch {
	case at != nil:
		return timestamppb.New(at.AsTime())
	case ttl != nil:
		return timestamppb.New(time.Unix(0, o.now+int64(ttl.AsDuration())))
	}
	if d := retentionOf(o.tx.settings, o.st.rec); d > 0 {
		return timestamppb.New(time.Unix(0, o.now+d))
	}
	return nil
}

// indexExpiry moves an item's entry in the expiry index from old to new
// (either nil: none).
func (o *opCtx) indexExpiry(kind byte, id string, old, new *timestamppb.Timestamp) {
	tenant := o.c.GetTenant()
	if old != nil {
		o.tx.del(expiryKey(tenant, nanos(old), kind, id))
	}
	if new != nil {
		o.tx.setRaw(expiryKey(tenant, nanos(new), kind, id), nil)
	}
}

// dueItem is an expiry index entry.
type dueItem struct {
	key  []byte
	at   int64
	kind byte
	id   string
}

// applyExpireSweep removes up to a batch of the tenant's items expired at
// the command's time, oldest expiry first. A context forks still read
// becomes a deleted record (its entries stay until its last fork goes).
func applyExpireSweep(o *opCtx) (*cellv1.CommandResult, error) {
	limit := int(o.c.GetExpireSweep().GetMaxItems())
	if limit <= 0 {
		limit = defaultSweepBatch
	}
	tenant := o.c.GetTenant()
	prefix := tenantKey(tenant, kindExpiry, 0)
	it, err := o.tx.b.NewIter(&pebble.IterOptions{LowerBound: prefix, UpperBound: expiryKey(tenant, o.now+1, 0, "")})
	if err != nil {
		o.tx.fail(err)
		return nil, nil
	}
	var due []dueItem
	more := false
	for ok := it.First(); ok; ok = it.Next() {
		if len(due) == limit {
			more = true
			break
		}
		k := it.Key()[len(prefix):]
		if len(k) < 9 {
			continue
		}
		due = append(due, dueItem{key: bytes.Clone(it.Key()), at: int64(binary.BigEndian.Uint64(k)), kind: k[8], id: string(k[9:])})
	}
	if err := it.Close(); err != nil {
		o.tx.fail(err)
		return nil, nil
	}
	res := &cellv1.ExpireSweepResult{More: more}
	for _, d := range due {
		o.tx.del(d.key)
		switch d.kind {
		case kindContext:
			c, ok := o.getContext(d.id)
			if !ok || c.GetDeleted() || c.GetExpireTime() == nil || nanos(c.GetExpireTime()) != d.at {
				continue // a stale index entry: nothing else to do
			}
			c.ExpireTime = nil // its index entry is gone already
			o.removeContext(d.id, c)
			res.Contexts++
		case kindMemory, kindPrincipalMemory:
			var m contextv1.MemoryItem
			mkey := memoryKeyOfIndex(tenant, d.kind, d.id)
			if !o.tx.get(mkey, &m) || m.GetExpireTime() == nil || nanos(m.GetExpireTime()) != d.at {
				continue
			}
			o.tx.del(mkey)
			if p, k, ok := memoryScopeOfIndex(d.kind, d.id); ok {
				o.dropMemoryVector(p, k, m.GetEmbeddingDims())
			}
			o.unindexDoc(mkey[len(tenantPrefix(tenant)):])
			u := usage(o.st.rec)
			u.MemoryKeys = sub(u.MemoryKeys, 1)
			u.Bytes = sub(u.Bytes, memoryBytes(&m))
			res.MemoryKeys++
		}
	}
	o.changed = len(due) > 0
	return &cellv1.CommandResult{Result: &cellv1.CommandResult_ExpireSweep{ExpireSweep: res}}, nil
}

// nextExpiry returns the earliest expiry in the tenant's index (0: none).
func nextExpiry(r pebble.Reader, tenant string) (int64, error) {
	prefix := tenantKey(tenant, kindExpiry, 0)
	var at int64
	err := scan(r, prefix, prefixEnd(prefix), func(k, _ []byte) (bool, error) {
		if k = k[len(prefix):]; len(k) >= 8 {
			at = int64(binary.BigEndian.Uint64(k))
		}
		return false, nil
	})
	return at, err
}

// runExpirySweeper proposes expiry sweeps on the leader: every
// Expiry.SweepInterval, for each tenant it owns whose earliest expiry is
// due, sweeps of Expiry.SweepBatch items until none is due (at most
// Expiry.MaxSweepsPerTenant per round, so that one tenant cannot hold the
// others back).
func (s *Store) runExpirySweeper() {
	defer s.workers.Done()
	t := time.NewTimer(s.cfg.Expiry.SweepInterval)
	defer t.Stop()
	for {
		select {
		case <-s.closing:
			return
		case <-t.C:
		}
		if s.IsLeader() {
			s.sweepExpired()
		}
		t.Reset(s.cfg.Expiry.SweepInterval)
	}
}

// sweepExpired runs one round of runExpirySweeper.
func (s *Store) sweepExpired() {
	var due []string
	now := s.clock.peek()
	after := ""
	for {
		var page []*cellv1.TenantInfo
		var more bool
		err := s.fsm.view(func(r pebble.Reader) error {
			var err error
			page, more, err = (&CellView{r: r}).ListTenants(after, 256)
			if err != nil {
				return err
			}
			for _, ti := range page {
				if ti.GetRole() != cellv1.Role_ROLE_OWNER {
					continue
				}
				at, err := nextExpiry(r, ti.GetTenant())
				if err != nil {
					return err
				}
				if at != 0 && at <= now {
					due = append(due, ti.GetTenant())
				}
			}
			return nil
		})
		if err != nil {
			s.log.Warn("expiry sweep: reading tenants failed", "err", err)
			return
		}
		if !more || len(page) == 0 {
			break
		}
		after = page[len(page)-1].GetTenant()
	}
	for _, tenant := range due {
		for range s.cfg.Expiry.MaxSweepsPerTenant {
			ctx, cancel := context.WithTimeout(context.Background(), s.cfg.ApplyTimeout)
			res, err := s.Propose(ctx, &cellv1.Command{Tenant: tenant,
				Op: &cellv1.Command_ExpireSweep{ExpireSweep: &cellv1.ExpireSweepOp{MaxItems: uint32(s.cfg.Expiry.SweepBatch)}}})
			cancel()
			if err != nil || res.GetError() != nil {
				s.log.Debug("expiry sweep not applied", "tenant", tenant, "err", err, "rejected", res.GetError().GetReason())
				break
			}
			if sw := res.GetExpireSweep(); sw.GetContexts()+sw.GetMemoryKeys() > 0 {
				s.log.Debug("expiry sweep", "tenant", tenant, "contexts", sw.GetContexts(), "memory_keys", sw.GetMemoryKeys(), "tseq", res.GetTseq())
			}
			if !res.GetExpireSweep().GetMore() {
				break
			}
		}
	}
}
