package store

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/cellplane/cellplane/internal/cperr"
	cellv1 "github.com/cellplane/cellplane/proto/cellplane/cell/v1"
	contextv1 "github.com/cellplane/cellplane/proto/cellplane/context/v1"
	"github.com/cockroachdb/pebble/v2"
	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"
)

// readIndexer confirms leadership for linearizable reads, one quorum round
// for all the readers that arrived while the previous round ran (the Raft
// "read index" protocol, batched).
type readIndexer struct {
	s       *Store
	mu      sync.Mutex
	pending *readRound
	running bool
	idle    sync.WaitGroup
}

type readRound struct {
	done  chan struct{}
	index uint64
	err   error
}

// readIndex returns an index such that a state applied up to it reflects
// every write acknowledged before the call.
func (r *readIndexer) readIndex(ctx context.Context) (uint64, error) {
	r.mu.Lock()
	if r.pending == nil {
		r.pending = &readRound{done: make(chan struct{})}
	}
	round := r.pending
	if !r.running {
		r.running = true
		r.idle.Add(1)
		go r.run()
	}
	r.mu.Unlock()
	select {
	case <-round.done:
		return round.index, round.err
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

func (r *readIndexer) run() {
	defer r.idle.Done()
	for {
		r.mu.Lock()
		round := r.pending
		r.pending = nil
		if round == nil {
			r.running = false
			r.mu.Unlock()
			return
		}
		r.mu.Unlock()
		start := time.Now()
		round.index, round.err = r.s.confirmLeadership()
		r.s.metrics.readIndexLatency.Observe(time.Since(start).Seconds())
		close(round.done)
	}
}

// wait blocks until no round runs (for Close).
func (r *readIndexer) wait() { r.idle.Wait() }

// confirmLeadership takes the commit index, then checks with a quorum that
// this node still leads. A leader only does so once it applied everything
// committed before its term (readyTerm), so its commit index is current.
func (s *Store) confirmLeadership() (uint64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.ApplyTimeout)
	defer cancel()
	if err := s.waitReady(ctx); err != nil {
		return 0, err
	}
	idx := s.raft.CommitIndex()
	if err := s.raft.VerifyLeader().Error(); err != nil {
		if errors.Is(err, raft.ErrNotLeader) || errors.Is(err, raft.ErrLeadershipLost) {
			return 0, s.notLeader()
		}
		return 0, errUnavailable("leadership could not be confirmed")
	}
	return idx, nil
}

// waitReady waits until this node leads and has finished its leader
// barrier in the current term.
func (s *Store) waitReady(ctx context.Context) error {
	poll := time.NewTimer(0)
	defer poll.Stop()
	for {
		if s.raft.State() != raft.Leader {
			return s.notLeader()
		}
		if s.readyTerm.Load() == s.raft.CurrentTerm() {
			return nil
		}
		poll.Reset(2 * time.Millisecond)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-s.closing:
			return errUnavailable("the node is shutting down")
		case <-poll.C:
		}
	}
}

// waitApplied waits until the state reflects every entry up to idx.
func (s *Store) waitApplied(ctx context.Context, idx uint64) error {
	poll := time.NewTimer(0)
	defer poll.Stop()
	for {
		wake := s.fsm.appliedWake()
		if s.stateIndex() >= idx {
			return nil
		}
		poll.Reset(time.Millisecond)
		select {
		case <-wake:
		case <-poll.C:
		case <-ctx.Done():
			return ctx.Err()
		case <-s.closing:
			return errUnavailable("the node is shutting down")
		}
	}
}

// stateIndex is the highest Raft index the state reflects. The state
// machine's own applied index is authoritative: Raft's AppliedIndex counts
// entries it merely handed to the state machine, which may not be applied
// yet. Raft's index is trusted beyond the state machine's only when every
// entry in between is one that never reaches the state machine (no-ops,
// barriers), which is what the last entries of a new term often are.
func (s *Store) stateIndex() uint64 {
	applied := s.fsm.applied.Load()
	dispatched := s.raft.AppliedIndex()
	if dispatched <= applied || dispatched-applied > 64 {
		return applied
	}
	var l raft.Log
	for i := applied + 1; i <= dispatched; i++ {
		if err := s.wal.GetLog(i, &l); err != nil || l.Type == raft.LogCommand || l.Type == raft.LogConfiguration {
			return applied
		}
	}
	return dispatched
}

// readBarrier establishes the consistency a read asked for.
func (s *Store) readBarrier(ctx context.Context, opts ReadOptions) error {
	switch opts.Consistency {
	case contextv1.Consistency_CONSISTENCY_UNSPECIFIED, contextv1.Consistency_CONSISTENCY_LINEARIZABLE:
		if s.raft.State() != raft.Leader {
			return s.notLeader()
		}
		if !opts.IgnoreAuthority {
			if err := s.checkAuthority(); err != nil {
				return err
			}
		}
		if idx, _, ok := s.leaseRead(); ok {
			s.metrics.leaseReads.Inc()
			return s.waitApplied(ctx, idx)
		}
		idx, err := s.reads.readIndex(ctx)
		if err != nil {
			return err
		}
		return s.waitApplied(ctx, idx)
	case contextv1.Consistency_CONSISTENCY_LEADER:
		// Gated by the authority lease like LINEARIZABLE (finding M2): a
		// leader cut off from etcd stops serving LEADER reads once its
		// lease lapses, so a standby promoted after the lease cannot be
		// contradicted by this cell's diverging history beyond it.
		if s.raft.State() != raft.Leader {
			return s.notLeader()
		}
		if !opts.IgnoreAuthority {
			if err := s.checkAuthority(); err != nil {
				return err
			}
		}
		return s.waitReady(ctx)
	case contextv1.Consistency_CONSISTENCY_STALE:
		if s.raft.State() == raft.Leader {
			return nil
		}
		bound := opts.MaxStaleness
		if bound == 0 {
			bound = s.cfg.DefaultMaxStaleness
		}
		if bound < 0 {
			return nil // no bound
		}
		last := s.raft.LastContact()
		if age := time.Since(last); last.IsZero() || age > bound {
			e := cperr.New(cperr.StalenessExceeded, "this member has not heard from the leader within %v", bound).
				With(cperr.MetaMaxStaleness, bound.String()).WithRetryAfter(s.cfg.Raft.HeartbeatTimeout)
			if !last.IsZero() {
				e.With(cperr.MetaLastContact, age.Round(time.Millisecond).String())
			}
			if id, info := s.Leader(); id != "" && info != nil {
				e.With(cperr.MetaLeader, info.GetGrpcAddr())
			}
			return e
		}
		return nil
	}
	return cperr.Invalid(cperr.FieldViolation{Field: "read_options.consistency", Description: "unknown consistency level"})
}

// ReplicaBarrier establishes what a replication source may serve from this
// member (replication/DESIGN.md, "What a source member serves"). With
// current set, this node must lead, and once it returns the state reflects
// every entry committed before the call: a read-index round and a wait for
// the apply, as for a LINEARIZABLE read but not gated by the authority
// lease (replication is the cell's own traffic: a fenced or cut-off owner
// still feeds its standby). A follower gets NOT_LEADER (with the leader's
// address when known). Without current, the leader passes at once and a
// follower passes when it heard from its leader within
// DefaultMaxStaleness (STALENESS_EXCEEDED otherwise): what it applied is
// committed, and not older than that bound.
func (s *Store) ReplicaBarrier(ctx context.Context, current bool) error {
	if current {
		return s.readBarrier(ctx, ReadOptions{Consistency: contextv1.Consistency_CONSISTENCY_LINEARIZABLE, IgnoreAuthority: true})
	}
	return s.readBarrier(ctx, ReadOptions{Consistency: contextv1.Consistency_CONSISTENCY_STALE})
}

// ReadTenant runs fn on a consistent read-only view of one tenant after
// establishing the consistency asked for (LINEARIZABLE: leadership confirmed
// by a quorum, shared by concurrent readers, and applied ≥ the commit index
// seen; LEADER: leader's local state; STALE: any member within its staleness
// bound, where a negative MaxStaleness means no bound). LINEARIZABLE and
// LEADER reads are refused with AUTHORITY_LEASE_EXPIRED while the authority
// gate says no; STALE reads are not (they are bounded only by contact with
// this cell's leader, see SetAuthority). The tenant must be
// OWNER here at epoch (0: any) or the read fails with WRONG_CELL /
// STALE_EPOCH. fn must not keep the view.
func (s *Store) ReadTenant(ctx context.Context, tenant string, epoch uint64, opts ReadOptions, fn func(*TenantView) error) error {
	start := time.Now()
	defer func() {
		obs, ok := s.metrics.readObs[opts.Consistency]
		if !ok {
			obs = s.metrics.readLatency.WithLabelValues(consistencyLabel(opts.Consistency))
		}
		obs.Observe(time.Since(start).Seconds())
	}()
	if err := s.readBarrier(ctx, opts); err != nil {
		return err
	}
	// The read's time, for expiry: this node's cell clock (read without
	// moving it), which is never behind a command it applied (its floor is
	// the newest applied command's time). So after a linearizable read's barrier, whatever a command
	// applied before the read found expired (a sweep) reads as expired
	// too, and an item reads as expired exactly when expire_time <= now,
	// the rule the state machine applies with a command's time.
	now := s.clock.peek()
	return s.fsm.view(func(r pebble.Reader) error {
		rec, err := getRecord(r, tenant)
		if err != nil {
			return err
		}
		if e := checkOwner(rec, epoch); e != nil {
			return e
		}
		return fn(&TenantView{r: r, tenant: tenant, rec: rec, now: now, vec: s.fsm.vectors})
	})
}

func consistencyLabel(c contextv1.Consistency) string {
	switch c {
	case contextv1.Consistency_CONSISTENCY_LEADER:
		return "leader"
	case contextv1.Consistency_CONSISTENCY_STALE:
		return "stale"
	}
	return "linearizable"
}

// ReadCell runs fn on a consistent read-only view of the whole cell.
func (s *Store) ReadCell(ctx context.Context, opts ReadOptions, fn func(*CellView) error) error {
	if err := s.readBarrier(ctx, opts); err != nil {
		return err
	}
	return s.fsm.view(func(r pebble.Reader) error { return fn(&CellView{r: r}) })
}

// WaitTenant blocks until the tenant's tseq on this node is above
// afterTseq (or the tenant is gone from this node), or ctx ends.
func (s *Store) WaitTenant(ctx context.Context, tenant string, afterTseq uint64) error {
	for {
		ch := s.fsm.notify.wait(tenant)
		var tseq uint64
		gone := false
		err := s.fsm.view(func(r pebble.Reader) error {
			rec, err := getRecord(r, tenant)
			gone = rec == nil
			tseq = rec.GetTseq()
			return err
		})
		if err != nil {
			return err
		}
		if gone || tseq > afterTseq {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		case <-s.closing:
			return errUnavailable("the node is shutting down")
		}
	}
}

// view runs fn on a Pebble snapshot of the state.
func (f *fsm) view(fn func(pebble.Reader) error) error {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if f.db == nil {
		return errUnavailable("the node's state is closed")
	}
	snap := f.db.NewSnapshot()
	defer snap.Close()
	return fn(snap)
}

// node returns a registered node's info, or nil.
func (f *fsm) node(id string) (*cellv1.NodeInfo, error) {
	var n *cellv1.NodeInfo
	err := f.view(func(r pebble.Reader) error {
		var info cellv1.NodeInfo
		ok, err := getProto(r, nodeKey(id), &info)
		if ok {
			n = &info
		}
		return err
	})
	return n, err
}

func (f *fsm) tenantCount() uint64 {
	var n uint64
	_ = f.view(func(r pebble.Reader) error {
		v, closer, err := r.Get(keyTenantCount)
		if err != nil {
			return nil
		}
		defer closer.Close()
		n, _ = strconv.ParseUint(string(v), 10, 64)
		return nil
	})
	return n
}

func getProto(r pebble.Reader, key []byte, m proto.Message) (bool, error) {
	v, closer, err := r.Get(key)
	if errors.Is(err, pebble.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("read state: %w", err)
	}
	defer closer.Close()
	if err := proto.Unmarshal(v, m); err != nil {
		return false, fmt.Errorf("decode state: %w", err)
	}
	return true, nil
}

func getRecord(r pebble.Reader, tenant string) (*cellv1.TenantRecord, error) {
	var rec cellv1.TenantRecord
	ok, err := getProto(r, recordKey(tenant), &rec)
	if !ok || err != nil {
		return nil, err
	}
	return &rec, nil
}

// scan calls fn for each key in [lower, upper) in order until fn returns
// false or an error.
func scan(r pebble.Reader, lower, upper []byte, fn func(k, v []byte) (bool, error)) error {
	it, err := r.NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: upper})
	if err != nil {
		return err
	}
	for ok := it.First(); ok; ok = it.Next() {
		more, err := fn(it.Key(), it.Value())
		if err != nil {
			it.Close()
			return err
		}
		if !more {
			break
		}
	}
	return it.Close()
}

// after returns the smallest key greater than prefix+last (for pagination).
func after(prefix []byte, last string) []byte {
	k := append(append([]byte(nil), prefix...), last...)
	return append(k, 0)
}

// TenantView is a read-only view of one tenant at one point in time.
type TenantView struct {
	r      pebble.Reader
	tenant string
	rec    *cellv1.TenantRecord
	// now is the read's time (unix nanos) against which expiry is
	// checked; 0 (replication's raw views) hides nothing.
	now int64
	// vec are the member's vector indexes (nil: exact search only).
	vec *vectorIndexes
}

// visible reports whether clients see context c at the view's time.
func (v *TenantView) visible(c *contextv1.Context) bool {
	return !c.GetDeleted() && !expired(c.GetExpireTime(), v.now)
}

// Info returns the tenant's role, epoch, tseq and usage.
func (v *TenantView) Info() *cellv1.TenantInfo { return tenantInfo(v.tenant, v.rec) }

// Cursor is the view's position in the tenant's change log: the tseq of
// the last change it reflects and that change's command time (a
// ChangeCursor). A read served from this view reflects every change up to
// it and none after it.
func (v *TenantView) Cursor() (tseq uint64, timeUnixNano int64) {
	return v.rec.GetTseq(), v.rec.GetUpdateTimeUnixNano()
}

// Context returns a context's metadata or CONTEXT_NOT_FOUND.
func (v *TenantView) Context(id string) (*contextv1.Context, error) {
	var c contextv1.Context
	ok, err := getProto(v.r, contextKey(v.tenant, id), &c)
	if err != nil {
		return nil, err
	}
	if !ok || !v.visible(&c) {
		return nil, cperr.New(cperr.ContextNotFound, "context %q not found", id)
	}
	return &c, nil
}

// ListContexts returns up to limit contexts with ids after `after` (""
// from the start), in id order, and whether more exist.
func (v *TenantView) ListContexts(afterID string, limit int) ([]*contextv1.Context, bool, error) {
	p, err := v.ListContextsWhere(afterID, limit, ListFilter{})
	return p.Items, p.More, err
}

// ListOwnedContexts is ListContexts over the contexts principal created
// (PrincipalLabel), read through the index: a page costs the contexts it
// returns, however many other principals' contexts the tenant holds.
func (v *TenantView) ListOwnedContexts(principal, afterID string, limit int) ([]*contextv1.Context, bool, error) {
	p, err := v.ListOwnedContextsWhere(principal, afterID, limit, ListFilter{})
	return p.Items, p.More, err
}

// Entries returns entries of a context from fromSeq on (0 and 1 = first),
// at most maxEntries and about maxBytes (at least one when any exists).
// CONTEXT_NOT_FOUND when the context does not exist.
func (v *TenantView) Entries(id string, fromSeq uint64, maxEntries int, maxBytes uint64) ([]*contextv1.Entry, error) {
	c, err := v.Context(id)
	if err != nil {
		return nil, err
	}
	return v.entries(id, c, fromSeq, maxEntries, maxBytes)
}

// EntriesFound is Entries for a context this view has already found
// (v.Context(id) succeeded): it does not look the context up again.
// A fork's entries are stitched (EachEntry).
func (v *TenantView) EntriesFound(id string, fromSeq uint64, maxEntries int, maxBytes uint64) ([]*contextv1.Entry, error) {
	var c contextv1.Context
	if _, err := getProto(v.r, contextKey(v.tenant, id), &c); err != nil {
		return nil, err
	}
	return v.entries(id, &c, fromSeq, maxEntries, maxBytes)
}

func (v *TenantView) entries(id string, c *contextv1.Context, fromSeq uint64, maxEntries int, maxBytes uint64) ([]*contextv1.Entry, error) {
	spans, err := v.spans(id, c)
	if err != nil {
		return nil, err
	}
	var out []*contextv1.Entry
	var bytes uint64
	err = eachEntry(v.r, v.tenant, spans, max(fromSeq, 1), true, func(val []byte) (bool, error) {
		if len(out) >= maxEntries || (len(out) > 0 && bytes+uint64(len(val)) > maxBytes) {
			return false, nil
		}
		var e contextv1.Entry
		if err := proto.Unmarshal(val, &e); err != nil {
			return false, err
		}
		out = append(out, &e)
		bytes += uint64(len(val))
		return true, nil
	})
	return out, err
}

// Memory returns a memory item of the tenant's shared memory or
// KEY_NOT_FOUND.
func (v *TenantView) Memory(key string) (*contextv1.MemoryItem, error) {
	return v.MemoryOf("", key)
}

// MemoryOf returns a memory item of principal's memory ("": the tenant's
// shared memory; see MemoryPrincipal) or KEY_NOT_FOUND.
func (v *TenantView) MemoryOf(principal, key string) (*contextv1.MemoryItem, error) {
	var m contextv1.MemoryItem
	ok, err := getProto(v.r, scopedMemoryKey(v.tenant, principal, key), &m)
	if err != nil {
		return nil, err
	}
	if !ok || expired(m.GetExpireTime(), v.now) {
		return nil, cperr.New(cperr.KeyNotFound, "memory key not found")
	}
	return &m, nil
}

// ListMemory returns up to limit items whose key has prefix and sorts
// after `after` ("" from the start), in key order, and whether more exist.
func (v *TenantView) ListMemory(prefix, afterKey string, limit int, keysOnly bool) ([]*contextv1.MemoryItem, bool, error) {
	return v.ListMemoryOf("", prefix, afterKey, limit, keysOnly)
}

// ListMemoryOf is ListMemory over principal's memory ("": the tenant's).
func (v *TenantView) ListMemoryOf(principal, prefix, afterKey string, limit int, keysOnly bool) ([]*contextv1.MemoryItem, bool, error) {
	p, err := v.ListMemoryWhere(principal, prefix, afterKey, limit, keysOnly, ListFilter{})
	return p.Items, p.More, err
}

// Changes returns up to limit change-log events with tseq > afterTseq. When
// events after afterTseq were already trimmed it returns ErrChangesTrimmed.
func (v *TenantView) Changes(afterTseq uint64, limit int) ([]*cellv1.ChangeEvent, error) {
	rec := v.rec
	if afterTseq >= rec.GetTseq() {
		return nil, nil
	}
	if rec.GetChangelogCount() == 0 || afterTseq+1 < rec.GetChangelogFirstTseq() {
		return nil, ErrChangesTrimmed
	}
	prefix := tenantKey(v.tenant, kindChange, 0)
	var out []*cellv1.ChangeEvent
	err := scan(v.r, changeKey(v.tenant, afterTseq+1), prefixEnd(prefix), func(_, val []byte) (bool, error) {
		if len(out) >= limit {
			return false, nil
		}
		var e cellv1.ChangeEvent
		if err := proto.Unmarshal(val, &e); err != nil {
			return false, err
		}
		out = append(out, &e)
		return true, nil
	})
	return out, err
}

// CellView is a read-only view of the whole cell at one point in time.
type CellView struct{ r pebble.Reader }

// Tenant returns a tenant's info in any role, or TENANT_NOT_FOUND.
func (v *CellView) Tenant(tenant string) (*cellv1.TenantInfo, error) {
	rec, err := getRecord(v.r, tenant)
	if err != nil {
		return nil, err
	}
	if rec == nil {
		return nil, cperr.New(cperr.TenantNotFound, "tenant not found in this cell")
	}
	return tenantInfo(tenant, rec), nil
}

// ListTenants returns up to limit tenants after `after` ("" from the
// start), in id order, and whether more exist.
func (v *CellView) ListTenants(afterID string, limit int) ([]*cellv1.TenantInfo, bool, error) {
	prefix := []byte{spaceRecord}
	lower := prefix
	if afterID != "" {
		lower = after(prefix, afterID)
	}
	var out []*cellv1.TenantInfo
	more := false
	err := scan(v.r, lower, prefixEnd(prefix), func(k, val []byte) (bool, error) {
		if len(out) == limit {
			more = true
			return false, nil
		}
		var rec cellv1.TenantRecord
		if err := proto.Unmarshal(val, &rec); err != nil {
			return false, err
		}
		out = append(out, tenantInfo(string(k[1:]), &rec))
		return true, nil
	})
	return out, more, err
}

// Nodes returns the registered node infos, in id order.
func (v *CellView) Nodes() ([]*cellv1.NodeInfo, error) {
	prefix := []byte{spaceNode}
	var out []*cellv1.NodeInfo
	err := scan(v.r, prefix, prefixEnd(prefix), func(_, val []byte) (bool, error) {
		var n cellv1.NodeInfo
		if err := proto.Unmarshal(val, &n); err != nil {
			return false, err
		}
		out = append(out, &n)
		return true, nil
	})
	return out, err
}

// Settings returns the replicated cell settings in force at this view
// (the package defaults until a leader proposed its configuration).
func (v *CellView) Settings() (*cellv1.CellSettings, error) {
	var st cellv1.CellSettings
	ok, err := getProto(v.r, keySettings, &st)
	if err != nil || !ok {
		return withAudit(settingsOf(defaultDedupWindow, defaultDedupMaxIDs, defaultChangeLog, defaultTenantQuota), defaultAudit), err
	}
	return &st, nil
}
