package store

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"
	"time"

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
	// ownerEpoch is the tenant's epoch the last applied owner command was
	// admitted at (0: not an owner command, or rejected before).
	ownerEpoch uint64
	// raw is the encoded form of the command being applied, as it is in
	// the Raft entry (nil: none, e.g. a standby's replicated event).
	raw []byte
	// heads is what this batch read and wrote of context heads, published
	// to the fsm's headCache once the batch is committed.
	heads headTxn
	// vec is what this batch changed of vector keys, published to the
	// fsm's vector indexes once the batch is committed.
	vec vecTxn
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
	v := tx.getRaw(key)
	if v == nil {
		return false
	}
	if err := proto.Unmarshal(v, m); err != nil {
		tx.fail(fmt.Errorf("decode %q: %w", key, err))
		return false
	}
	return true
}

// getRaw returns key's value, or nil when the key does not exist. The
// value is the caller's to keep but not to modify (a context head may be
// shared with the headCache).
func (tx *txn) getRaw(key []byte) []byte {
	head := tx.f.heads != nil && isContextKey(key)
	if head {
		if v, ok := tx.heads.lookup(tx.f.heads, key); ok {
			return v
		}
	}
	v, closer, err := tx.b.Get(key)
	if errors.Is(err, pebble.ErrNotFound) {
		if head {
			tx.heads.read(key, nil)
		}
		return nil
	}
	if err != nil {
		tx.fail(err)
		return nil
	}
	defer closer.Close()
	out := append([]byte(nil), v...)
	if head {
		tx.heads.read(key, out)
	}
	return out
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
	if tx.f.dedup != nil {
		if tenant, kind, ok := tenantKind(key); ok && (kind == kindDedup || kind == kindDedupQ) {
			tx.f.dedup.drop(tenant) // not a command's own record (an import): built again
		}
	}
	if tx.f.heads != nil && isContextKey(key) {
		tx.heads.wrote(key, bytes.Clone(v))
	}
	if tx.f.vectors != nil {
		tx.vec.set(key, v)
	}
}

func (tx *txn) del(key []byte) {
	if err := tx.b.Delete(key, nil); err != nil {
		tx.fail(err)
	}
	if tx.f.heads != nil && isContextKey(key) {
		tx.heads.wrote(key, nil)
	}
	if tx.f.vectors != nil {
		tx.vec.del(key)
	}
}

func (tx *txn) delRange(start, end []byte) {
	if err := tx.b.DeleteRange(start, end, nil); err != nil {
		tx.fail(err)
	}
	if tx.f.dedup != nil {
		// Deleting ids keeps a filter a superset; a whole tenant's range
		// (a delete, an import's first chunk) resets its queue positions.
		if tenant, kind, ok := tenantKind(start); !ok {
			tx.f.dedup.clear()
		} else if kind == 0 {
			tx.f.dedup.drop(tenant)
		}
	}
	if tx.f.heads != nil && rangeMayHoldContexts(start, end) {
		tx.heads.deletedRange(start, end)
	}
	if tx.f.vectors != nil {
		tx.vec.delRange(start, end)
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
	tx.ownerEpoch = 0
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
			tx.ownerEpoch = st.rec.GetEpoch()
		}
		if spec.mutation && c.GetRequestId() != "" && st.rec != nil {
			var d cellv1.DedupRecord
			if tx.f.dedup.mayContain(tx.b, c.GetTenant(), st.rec.GetDedupFirst(), st.rec.GetDedupNext(), c.GetRequestId()) &&
				tx.get(dedupKey(c.GetTenant(), c.GetRequestId()), &d) && !tx.dedupExpired(&d, st.rec, c.GetTimeUnixNano()) {
				res := proto.Clone(d.GetResult()).(*cellv1.CommandResult)
				res.Deduplicated = true
				return res
			}
			if spec.owner {
				if err := tx.dedupRoom(c, st.rec); err != nil {
					return reject(err)
				}
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

	resBytes, err := marshalOpts.Marshal(res) // once, for the event and the dedup record
	if err != nil {
		tx.fail(err)
		return
	}
	var event []byte
	if raw := tx.raw; raw != nil && !replicated && !tx.f.reencode && spliceable(c) {
		event = eventBytes(rec.Tseq, c.GetTimeUnixNano(), raw, resBytes)
	} else if event, err = marshalOpts.Marshal(&cellv1.ChangeEvent{Tseq: rec.Tseq, TimeUnixNano: c.GetTimeUnixNano(), Command: c, Result: res}); err != nil {
		tx.fail(err)
		return
	}
	tx.setRaw(changeKey(tenant, rec.Tseq), event)
	n := len(event)
	if rec.ChangelogCount == 0 {
		rec.ChangelogFirstTseq = rec.Tseq
		rec.ChangelogFirstTimeUnixNano = c.GetTimeUnixNano()
	}
	rec.ChangelogCount++
	rec.ChangelogBytes += uint64(n)
	tx.trimChanges(tenant, rec, c.GetTimeUnixNano())
	tx.writeAudit(tenant, rec, auditRecordOf(c, rec.Tseq, res))

	if id := c.GetRequestId(); id != "" && tx.settings.GetDedupWindow() > 0 {
		now := c.GetTimeUnixNano()
		if err := tx.b.Set(dedupKey(tenant, id), dedupBytes(rec.Tseq, resBytes, now), nil); err != nil {
			tx.fail(err)
		}
		if err := tx.b.Set(dedupQueueKey(tenant, rec.DedupNext), []byte(id), nil); err != nil {
			tx.fail(err)
		}
		tx.f.dedup.add(tenant, rec.DedupNext, id)
		if rec.DedupNext == rec.DedupFirst {
			rec.DedupFirstTimeUnixNano = now
		}
		rec.DedupNext++
	}
	tx.trimDedup(tenant, rec, c.GetTimeUnixNano())
}

// The dedup window (finding M3). A request id is remembered for at least
// the time window (CellSettings.dedup_window_nanos), measured with command
// timestamps, so every replica, and a standby applying its source's
// events, remembers and forgets alike; the count (dedup_window) only
// bounds space. Client writes are refused (QUOTA_EXCEEDED, dedupRoom)
// rather than make the tenant forget an id younger than the window.
// Control commands (set_tenant) and a standby's replicated events are
// never refused: they may use a slack of dedupEvictChunk ids above the
// count, past which the oldest ids are forgotten whatever their age (the
// hard space bound; it cannot happen on an owner whose clients alone fill
// its window).
//
// With dedup_window_nanos 0 (settings written before it existed) the
// count alone is the window, as before: at least dedup_window ids are
// remembered, the oldest forgotten in chunks of dedupEvictChunk.

// dedupEvictChunk is how far past the count bound the dedup queue may
// grow before the oldest ids are forgotten together (one queue scan and
// one range delete per chunk instead of a read and two deletes per write).
func dedupEvictChunk(maxIDs uint64) uint64 { return max(1, maxIDs/16) }

// dedupEvictBatch bounds the ids one command forgets by age, so that a
// tenant's first write after a quiet spell does not pay for the whole
// window at once; the following writes forget the rest.
const dedupEvictBatch = 4096

// dedupTime is when a remembered id was recorded. A record written before
// records had a time (time 0) is dated by the tenant's dedup_first_time,
// which the first write under a time window sets (trimDedup): such ids are
// remembered a full window from then, never taken for expired at once.
// 0: unknown (the tenant had no write under a time window yet).
func dedupTime(d *cellv1.DedupRecord, rec *cellv1.TenantRecord) int64 {
	if t := d.GetTimeUnixNano(); t != 0 {
		return t
	}
	return rec.GetDedupFirstTimeUnixNano()
}

// dedupExpired reports whether a remembered id is past the time window at
// command time now (and so is treated as forgotten, evicted or not yet).
func (tx *txn) dedupExpired(d *cellv1.DedupRecord, rec *cellv1.TenantRecord, now int64) bool {
	w := tx.settings.GetDedupWindowNanos()
	t := dedupTime(d, rec)
	return w > 0 && t != 0 && now-t > w
}

// dedupRoom refuses a client write with a new request id while the tenant
// remembers the most ids it may, the oldest younger than the time window:
// remembering one more would mean forgetting an id a retry may still
// carry. The message says when the oldest ages out (a rejection carries
// no retry delay through the log).
func (tx *txn) dedupRoom(c *cellv1.Command, rec *cellv1.TenantRecord) *cperr.Error {
	maxIDs, w := tx.settings.GetDedupWindow(), tx.settings.GetDedupWindowNanos()
	if maxIDs == 0 || w <= 0 || rec.GetDedupNext()-rec.GetDedupFirst() < maxIDs {
		return nil
	}
	age := c.GetTimeUnixNano() - rec.GetDedupFirstTimeUnixNano()
	if age > w {
		return nil // the oldest goes now (trimDedup)
	}
	return cperr.New(cperr.QuotaExceeded, "tenant %s remembers %d request ids, all younger than the dedup window %v: a write with a new request id is accepted again in %v, when the oldest ages out",
		c.GetTenant(), maxIDs, time.Duration(w), time.Duration(w-age+1).Round(time.Millisecond)).
		With(cperr.MetaTenant, c.GetTenant())
}

// trimDedup forgets remembered request ids: those past the count bound
// plus the slack, the oldest whatever their age, and those older than the time
// window, oldest first, once the oldest is dedupEvictChunk of the window
// past it (at most dedupEvictBatch per command).
func (tx *txn) trimDedup(tenant string, rec *cellv1.TenantRecord, now int64) {
	maxIDs, w := tx.settings.GetDedupWindow(), tx.settings.GetDedupWindowNanos()
	count := rec.DedupNext - rec.DedupFirst
	if count == 0 {
		return
	}
	if w <= 0 {
		if over := count - min(maxIDs, count); over >= dedupEvictChunk(maxIDs) {
			tx.evictDedup(tenant, rec, over, 0, 0)
		}
		return
	}
	if rec.DedupFirstTimeUnixNano == 0 {
		rec.DedupFirstTimeUnixNano = now // ids recorded without a time: dated now (dedupTime)
	}
	var force uint64
	if limit := maxIDs + dedupEvictChunk(maxIDs); maxIDs == 0 {
		force = count
	} else if count > limit {
		force = count - limit // only ever the expired oldest on an owner (dedupRoom)
	}
	aged := now-rec.DedupFirstTimeUnixNano > w+w/16
	if force == 0 && !aged {
		return
	}
	tx.evictDedup(tenant, rec, force, now-w, dedupEvictBatch)
}

// evictDedup forgets the force oldest remembered request ids, then (with
// a positive batch) up to batch more, oldest first, while their command
// time is before cutoff (now - window: an id exactly a window old is still
// answered, see dedupExpired). It keeps dedup_first_time current.
func (tx *txn) evictDedup(tenant string, rec *cellv1.TenantRecord, force uint64, cutoff int64, batch uint64) {
	lo := dedupQueueKey(tenant, rec.DedupFirst)
	it, err := tx.b.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: dedupQueueKey(tenant, rec.DedupNext)})
	if err != nil {
		tx.fail(err)
		return
	}
	n, first := uint64(0), int64(0)
	for ok := it.First(); ok; ok = it.Next() {
		key := dedupKey(tenant, string(it.Value()))
		var d cellv1.DedupRecord
		found := tx.get(key, &d)
		if n >= force {
			// A record younger than its queue entry (the id came back
			// after it expired) stops the scan: it is forgotten when the
			// newer record ages out, never early.
			if t := dedupTime(&d, rec); batch == 0 || n >= force+batch || (found && t >= cutoff) {
				first = t
				break
			}
		}
		if found {
			tx.del(key)
		}
		n++
	}
	if err := it.Close(); err != nil {
		tx.fail(err)
		return
	}
	if n == 0 {
		return
	}
	tx.delRange(lo, dedupQueueKey(tenant, rec.DedupFirst+n))
	rec.DedupFirst += n
	tx.f.dedup.forgot(tenant, rec.DedupFirst)
	if rec.DedupFirst == rec.DedupNext {
		first = 0
	}
	rec.DedupFirstTimeUnixNano = first
}

// trimChanges drops the oldest change-log events while the log is over a
// bound; the newest event always stays. The state machine trims (not each
// node on its own) so that replicas hold the same log.
//
// Trimming is done in chunks (changeTrimSlack): a soft bound (events, age)
// is acted on once the log is a sixteenth past it, and a byte bound trims
// a sixteenth below it. The oldest events are then dropped together with
// one sequential scan (their sizes) and one range delete, instead of two
// point reads of cold data and a delete on every write: at the steady
// state of a full log those reads were over a quarter of the apply cost
// (docs/benchmarks.md, "round three"). Small bounds (under 16) have no
// slack and are kept exactly.
//
// While a standby follows the tenant (replica floor set), events it has not
// applied yet are kept past the age and count bounds; only the byte bound
// (the hard one) trims them, and each such trim is counted: the standby
// will find its position gone and bootstrap again.
func (tx *txn) trimChanges(tenant string, rec *cellv1.TenantRecord, now int64) {
	cfg := tx.settings
	maxEvents, maxBytes, age := cfg.GetChangelogMaxEvents(), cfg.GetChangelogMaxBytes(), cfg.GetChangelogRetentionNanos()
	if rec.ChangelogCount <= 1 {
		return
	}
	hard := maxBytes > 0 && rec.ChangelogBytes > maxBytes
	soft := (maxEvents > 0 && rec.ChangelogCount > maxEvents+changeTrimSlack(maxEvents)) ||
		(age > 0 && now-rec.ChangelogFirstTimeUnixNano > age+int64(changeTrimSlack(uint64(age))))
	if !hard && !soft {
		return
	}
	bytesTarget := maxBytes
	if hard {
		bytesTarget = maxBytes - changeTrimSlack(maxBytes)
	}
	floor := rec.GetReplicaFloorTseq()
	lo := changeKey(tenant, rec.ChangelogFirstTseq)
	it, err := tx.b.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: changeKey(tenant, rec.Tseq+1)})
	if err != nil {
		tx.fail(err)
		return
	}
	first, next := rec.ChangelogFirstTseq, int64(0)
	for ok := it.First(); ok; ok = it.Next() {
		overBytes := maxBytes > 0 && rec.ChangelogBytes > bytesTarget
		over := overBytes || (maxEvents > 0 && rec.ChangelogCount > maxEvents) ||
			(age > 0 && now-eventTime(it.Value()) > age)
		if rec.ChangelogCount <= 1 || !over || (!overBytes && (rec.ChangelogFirstTseq-first >= changeTrimBatch ||
			floor > 0 && rec.ChangelogFirstTseq > floor)) {
			next = eventTime(it.Value())
			break
		}
		if floor > 0 && rec.ChangelogFirstTseq > floor {
			rec.ReplicaForcedTrims++
		}
		rec.ChangelogCount--
		rec.ChangelogBytes -= min(uint64(len(it.Value())), rec.ChangelogBytes)
		rec.ChangelogFirstTseq++
	}
	if err := it.Close(); err != nil {
		tx.fail(err)
		return
	}
	if rec.ChangelogFirstTseq == first {
		return
	}
	if rec.ChangelogFirstTseq == first+1 {
		tx.del(lo) // a bound under 16: no range tombstone for one key
	} else {
		tx.delRange(lo, changeKey(tenant, rec.ChangelogFirstTseq))
	}
	// Always kept current, so that enabling age retention later measures
	// from the real oldest event.
	rec.ChangelogFirstTimeUnixNano = next
}

// changeTrimSlack is how far past a change-log bound the log may go before
// it is trimmed in one chunk (and, for the byte bound, how far below it the
// trim goes): a sixteenth, 0 for bounds under 16.
func changeTrimSlack(bound uint64) uint64 { return bound / 16 }

// changeTrimBatch bounds the events one command trims for the soft bounds
// (the byte bound is always restored at once), so that no single write
// pays for a long backlog: the following writes trim the rest.
const changeTrimBatch = 4096

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

// spliceable reports whether a command's bytes in the Raft entry are what
// encoding the decoded command again (deterministically) gives: a command
// of this version with no fields this node does not know, which is every
// command a leader of this version proposed (Propose encodes it with the
// same options). Others are encoded again, as before.
func spliceable(c *cellv1.Command) bool {
	return c.GetVersion() == commandVersion && len(c.ProtoReflect().GetUnknown()) == 0
}

// eventBytes is the deterministic encoding of ChangeEvent{tseq, time,
// command, result} from the command's and the result's encodings: the same
// bytes marshalOpts.Marshal gives (TestEventBytesMatchMarshal), without
// encoding the command (and its payload) a second time.
func eventBytes(tseq uint64, timeNanos int64, cmd, res []byte) []byte {
	b := make([]byte, 0, len(cmd)+len(res)+32)
	if tseq != 0 {
		b = protowire.AppendTag(b, 1, protowire.VarintType)
		b = protowire.AppendVarint(b, tseq)
	}
	if timeNanos != 0 {
		b = protowire.AppendTag(b, 2, protowire.VarintType)
		b = protowire.AppendVarint(b, uint64(timeNanos))
	}
	b = protowire.AppendTag(b, 3, protowire.BytesType)
	b = protowire.AppendBytes(b, cmd)
	b = protowire.AppendTag(b, 4, protowire.BytesType)
	return protowire.AppendBytes(b, res)
}

// dedupBytes is the deterministic encoding of DedupRecord{tseq, result,
// time} from the result's encoding (TestEventBytesMatchMarshal).
func dedupBytes(tseq uint64, res []byte, timeNanos int64) []byte {
	b := make([]byte, 0, len(res)+24)
	if tseq != 0 {
		b = protowire.AppendTag(b, 1, protowire.VarintType)
		b = protowire.AppendVarint(b, tseq)
	}
	b = protowire.AppendTag(b, 2, protowire.BytesType)
	b = protowire.AppendBytes(b, res)
	if timeNanos != 0 {
		b = protowire.AppendTag(b, 3, protowire.VarintType)
		b = protowire.AppendVarint(b, uint64(timeNanos))
	}
	return b
}
