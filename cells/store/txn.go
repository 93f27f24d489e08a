package store

import (
	"errors"
	"fmt"
	"strconv"

	"github.com/cellplane/cellplane/internal/cperr"
	cellv1 "github.com/cellplane/cellplane/proto/cellplane/cell/v1"
	"github.com/cockroachdb/pebble/v2"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// txn applies the commands of one Raft apply batch to one Pebble indexed
// batch (so later commands read what earlier ones wrote). Tenant records
// are cached and written once at the end.
type txn struct {
	f       *fsm
	b       *pebble.Batch
	recs    map[string]*tenantState
	touched map[string]struct{}
	// settings in force for this batch (a cell_settings command changes
	// them for the commands after it).
	settings *cellv1.CellSettings
	// err is a storage failure; it stops the state machine.
	err error
}

type tenantState struct {
	rec     *cellv1.TenantRecord // nil: the tenant does not exist
	existed bool                 // the record existed before this batch
	dirty   bool
	deleted bool
}

func newTxn(f *fsm) *txn {
	return &txn{f: f, b: f.db.NewIndexedBatch(), recs: map[string]*tenantState{}, touched: map[string]struct{}{}, settings: f.settings.Load()}
}

func (tx *txn) close() { _ = tx.b.Close() }

// get reads key into m; false when the key does not exist.
func (tx *txn) get(key []byte, m proto.Message) bool {
	v, closer, err := tx.b.Get(key)
	if errors.Is(err, pebble.ErrNotFound) {
		return false
	}
	if err != nil {
		tx.fail(err)
		return false
	}
	defer closer.Close()
	if err := proto.Unmarshal(v, m); err != nil {
		tx.fail(fmt.Errorf("decode %q: %w", key, err))
		return false
	}
	return true
}

// getRaw returns a copy of key's value, or nil.
func (tx *txn) getRaw(key []byte) []byte {
	v, closer, err := tx.b.Get(key)
	if errors.Is(err, pebble.ErrNotFound) {
		return nil
	}
	if err != nil {
		tx.fail(err)
		return nil
	}
	defer closer.Close()
	return append([]byte(nil), v...)
}

// put writes m at key and returns its encoded size.
func (tx *txn) put(key []byte, m proto.Message) int {
	v, err := marshalOpts.Marshal(m)
	if err != nil {
		tx.fail(err)
		return 0
	}
	tx.setRaw(key, v)
	return len(v)
}

func (tx *txn) setRaw(key, v []byte) {
	if err := tx.b.Set(key, v, nil); err != nil {
		tx.fail(err)
	}
}

func (tx *txn) del(key []byte) {
	if err := tx.b.Delete(key, nil); err != nil {
		tx.fail(err)
	}
}

func (tx *txn) delRange(start, end []byte) {
	if err := tx.b.DeleteRange(start, end, nil); err != nil {
		tx.fail(err)
	}
}

func (tx *txn) fail(err error) {
	if tx.err == nil {
		tx.err = fmt.Errorf("storage: %w", err)
	}
}

// tenant returns the cached state of a tenant.
func (tx *txn) tenant(id string) *tenantState {
	if st, ok := tx.recs[id]; ok {
		return st
	}
	st := &tenantState{}
	var rec cellv1.TenantRecord
	if tx.get(recordKey(id), &rec) {
		st.rec = &rec
		st.existed = true
	}
	tx.recs[id] = st
	return st
}

func (tx *txn) flushRecords() error {
	delta := 0
	for id, st := range tx.recs {
		switch {
		case st.deleted:
			tx.del(recordKey(id))
			if st.existed {
				delta--
			}
		case st.dirty && st.rec != nil:
			tx.put(recordKey(id), st.rec)
			if !st.existed {
				delta++
			}
		}
	}
	if delta != 0 {
		n, _ := strconv.ParseInt(string(tx.getRaw(keyTenantCount)), 10, 64)
		tx.setRaw(keyTenantCount, []byte(strconv.FormatInt(max(n+int64(delta), 0), 10)))
	}
	return tx.err
}

// apply applies one command and returns its result. Rejections are
// results with an error; nothing of a rejected command is written.
func (tx *txn) apply(c *cellv1.Command) *cellv1.CommandResult {
	spec, ok := lookupOp(c)
	if !ok || c.GetVersion() > commandVersion {
		return &cellv1.CommandResult{} // ignorable and unknown or newer: skipped (checkKnown vetted it)
	}
	var st *tenantState
	if spec.tenant {
		if c.GetTenant() == "" {
			return reject(cperr.Invalid(cperr.FieldViolation{Field: "tenant", Description: "required"}))
		}
		st = tx.tenant(c.GetTenant())
		if spec.owner {
			if err := checkOwner(st.rec, c.GetEpoch()); err != nil {
				return reject(err)
			}
		}
		if spec.mutation && c.GetRequestId() != "" && st.rec != nil {
			var d cellv1.DedupRecord
			if tx.get(dedupKey(c.GetTenant(), c.GetRequestId()), &d) {
				res := proto.Clone(d.GetResult()).(*cellv1.CommandResult)
				res.Deduplicated = true
				return res
			}
		}
	}
	op := &opCtx{tx: tx, c: c, st: st, now: c.GetTimeUnixNano()}
	res, err := spec.apply(op)
	if err != nil {
		var ce *cperr.Error
		if !errors.As(err, &ce) {
			ce = cperr.New(cperr.Internal, "%s failed", spec.name)
		}
		return reject(ce)
	}
	if res == nil {
		res = &cellv1.CommandResult{}
	}
	if spec.mutation && op.changed {
		tx.finishMutation(c, st, res, false)
	}
	if st != nil {
		tx.touched[c.GetTenant()] = struct{}{}
	}
	return res
}

// reject turns an error into a rejected result.
func reject(err *cperr.Error) *cellv1.CommandResult {
	return &cellv1.CommandResult{Error: &cellv1.CommandError{Reason: string(err.Reason), Message: err.Message, Metadata: err.Metadata}}
}

// finishMutation gives a tenant mutation its tseq, logs it in the change
// log, remembers its request id, and trims both to their bounds. A
// replicated mutation (a standby applying its source's event) keeps the
// source's result as it is.
func (tx *txn) finishMutation(c *cellv1.Command, st *tenantState, res *cellv1.CommandResult, replicated bool) {
	rec, tenant := st.rec, c.GetTenant()
	rec.Tseq++
	res.Tseq = rec.Tseq
	if res.GetTenant() != nil && !replicated {
		res.Result = &cellv1.CommandResult_Tenant{Tenant: tenantInfo(tenant, rec)}
	}
	rec.UpdateTimeUnixNano = c.GetTimeUnixNano()
	st.dirty = true

	n := tx.put(changeKey(tenant, rec.Tseq), &cellv1.ChangeEvent{Tseq: rec.Tseq, TimeUnixNano: c.GetTimeUnixNano(), Command: c, Result: res})
	if rec.ChangelogCount == 0 {
		rec.ChangelogFirstTseq = rec.Tseq
		rec.ChangelogFirstTimeUnixNano = c.GetTimeUnixNano()
	}
	rec.ChangelogCount++
	rec.ChangelogBytes += uint64(n)
	tx.trimChanges(tenant, rec, c.GetTimeUnixNano())

	window := tx.settings.GetDedupWindow()
	if id := c.GetRequestId(); id != "" && window > 0 {
		tx.put(dedupKey(tenant, id), &cellv1.DedupRecord{Tseq: rec.Tseq, Result: res})
		tx.setRaw(dedupQueueKey(tenant, rec.DedupNext), []byte(id))
		rec.DedupNext++
	}
	if over := rec.DedupNext - rec.DedupFirst - min(window, rec.DedupNext-rec.DedupFirst); over >= dedupEvictChunk(window) {
		tx.evictDedup(tenant, rec, over)
	}
}

// dedupEvictChunk is how far past the window the dedup queue may grow
// before the oldest ids are evicted together: one queue scan and one range
// delete per chunk instead of a read and two deletes per write. At least
// DedupWindow ids are always remembered.
func dedupEvictChunk(window uint64) uint64 { return max(1, window/16) }

// evictDedup forgets the n oldest remembered request ids.
func (tx *txn) evictDedup(tenant string, rec *cellv1.TenantRecord, n uint64) {
	lo, hi := dedupQueueKey(tenant, rec.DedupFirst), dedupQueueKey(tenant, rec.DedupFirst+n)
	it, err := tx.b.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: hi})
	if err != nil {
		tx.fail(err)
		return
	}
	for ok := it.First(); ok; ok = it.Next() {
		tx.del(dedupKey(tenant, string(it.Value())))
	}
	if err := it.Close(); err != nil {
		tx.fail(err)
		return
	}
	tx.delRange(lo, hi)
	rec.DedupFirst += n
}

// trimChanges drops the oldest change-log events while the log is over a
// bound; the newest event always stays. The state machine trims (not each
// node on its own) so that replicas hold the same log.
//
// While a standby follows the tenant (replica floor set), events it has not
// applied yet are kept past the age and count bounds; only the byte bound
// (the hard one) trims them, and each such trim is counted: the standby
// will find its position gone and bootstrap again.
func (tx *txn) trimChanges(tenant string, rec *cellv1.TenantRecord, now int64) {
	cfg := tx.settings
	floor := rec.GetReplicaFloorTseq()
	for rec.ChangelogCount > 1 {
		hard := cfg.GetChangelogMaxBytes() > 0 && rec.ChangelogBytes > cfg.GetChangelogMaxBytes()
		soft := (cfg.GetChangelogMaxEvents() > 0 && rec.ChangelogCount > cfg.GetChangelogMaxEvents()) ||
			(cfg.GetChangelogRetentionNanos() > 0 && now-rec.ChangelogFirstTimeUnixNano > cfg.GetChangelogRetentionNanos())
		if !hard && !soft {
			return
		}
		if floor > 0 && rec.ChangelogFirstTseq > floor {
			if !hard {
				return // the standby still needs this event
			}
			rec.ReplicaForcedTrims++
		}
		k := changeKey(tenant, rec.ChangelogFirstTseq)
		size := len(tx.getRaw(k))
		tx.del(k)
		rec.ChangelogCount--
		rec.ChangelogBytes -= min(uint64(size), rec.ChangelogBytes)
		rec.ChangelogFirstTseq++
		// Always kept current, so that enabling age retention later
		// measures from the real oldest event.
		rec.ChangelogFirstTimeUnixNano = eventTime(tx.getRaw(changeKey(tenant, rec.ChangelogFirstTseq)))
	}
}

// eventTime reads ChangeEvent.time_unix_nano (field 2) without decoding
// the whole event.
func eventTime(b []byte) int64 {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return 0
		}
		b = b[n:]
		if num == 2 && typ == protowire.VarintType {
			v, _ := protowire.ConsumeVarint(b)
			return int64(v)
		}
		n = protowire.ConsumeFieldValue(num, typ, b)
		if n < 0 {
			return 0
		}
		b = b[n:]
	}
	return 0
}
