package registry

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/cellplane/cellplane/controlplane/catalog"
	"github.com/cellplane/cellplane/controlplane/topo"
	"github.com/cellplane/cellplane/internal/ids"
	"github.com/cellplane/cellplane/internal/logging"
	"github.com/cellplane/cellplane/internal/retry"
	cellv1 "github.com/cellplane/cellplane/proto/cellplane/cell/v1"
	cpv1 "github.com/cellplane/cellplane/proto/cellplane/controlplane/v1"
)

// Authority lease defaults. With them a leader cut off from etcd stops
// acknowledging writes at most TTL − DriftMargin = 2 s after it last
// renewed, at least DriftMargin = 1 s before etcd deletes its authority
// key; it renews every (TTL − DriftMargin)/3 ≈ 0.67 s, so two renewals in
// a row may fail without a gap. The TTL bounds an emergency promotion
// (it waits for the key to expire, plus the controller's margin): 3 s
// keeps a region's promotion under 5 s (docs/benchmarks.md), at about
// 4.5 etcd writes per second per cell leader when renewing by grant +
// transaction + revoke, and none (1.5 keep-alives and linearizable reads
// per second) with keep-alives (etcd).
const (
	DefaultAuthorityTTL = 3 * time.Second
	DefaultDriftMargin  = time.Second
	// MinDriftMargin is the smallest DriftMargin Validate accepts: far
	// above any clock-rate error (ppm), it keeps a zero margin out.
	MinDriftMargin = 100 * time.Millisecond
	// MinAuthorityWindow is the smallest TTL − DriftMargin accepted: the
	// window must leave room for a few renewals.
	MinAuthorityWindow = 500 * time.Millisecond
	// DefaultAuthorityPoll is how often the keeper asks whether this node
	// leads: a new leader acknowledges writes about this long (plus one
	// publication) after it is elected.
	DefaultAuthorityPoll = 20 * time.Millisecond
)

// Proposer replicates a command through the cell's Raft log and returns
// the state machine's result (store.Store.Propose). The keeper proposes
// fences through it.
type Proposer interface {
	Propose(ctx context.Context, cmd *cellv1.Command) (*cellv1.CommandResult, error)
}

// AuthorityConfig configures an Authority keeper.
type AuthorityConfig struct {
	// Cell and NodeID name the cell and this node (required).
	Cell, NodeID string
	// TTL is the etcd lease TTL of cells/<Cell>/authority. etcd counts
	// leases in whole seconds and raises a TTL below its minimum
	// (⌈1.5 × election timeout⌉, 2 s with etcd's defaults): both only make
	// the key outlive the node's authority longer, which is safe. Whole
	// seconds, at least 1 s.
	TTL time.Duration
	// DriftMargin is how much earlier than TTL after a renewal was sent
	// the node stops acknowledging writes: it absorbs clock-rate
	// differences between the node and etcd's leader. MinDriftMargin ≤
	// DriftMargin and TTL − DriftMargin ≥ MinAuthorityWindow.
	DriftMargin time.Duration
	// Renew is how often the lease is renewed (0: (TTL − DriftMargin)/3).
	// Less than TTL − DriftMargin.
	Renew time.Duration
	// Poll is how often the keeper asks the LeaderSource (0:
	// DefaultAuthorityPoll).
	Poll time.Duration
	// Logger; nil: slog.Default().
	Logger *slog.Logger
	// TestingKnobs are hooks for tests only.
	TestingKnobs TestingKnobs
}

// DefaultAuthorityConfig returns the defaults; Cell and NodeID still need
// to be set.
func DefaultAuthorityConfig() AuthorityConfig {
	return AuthorityConfig{TTL: DefaultAuthorityTTL, DriftMargin: DefaultDriftMargin, Poll: DefaultAuthorityPoll}
}

// Window is TTL − DriftMargin: how long after a renewal was sent the node
// may acknowledge writes.
func (c AuthorityConfig) Window() time.Duration { return c.TTL - c.DriftMargin }

// RenewEvery is the renewal interval in effect.
func (c AuthorityConfig) RenewEvery() time.Duration {
	if c.Renew > 0 {
		return c.Renew
	}
	return c.Window() / 3
}

// Validate reports every problem with c.
func (c AuthorityConfig) Validate() error {
	var errs []error
	add := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("registry: authority: "+format, args...))
	}
	if !ids.Valid(c.Cell, ids.MaxLen) {
		add("Cell %q must be %s", c.Cell, ids.Rule(ids.MaxLen))
	}
	if !ids.Valid(c.NodeID, ids.MaxLen) {
		add("NodeID %q must be %s", c.NodeID, ids.Rule(ids.MaxLen))
	}
	if c.TTL < time.Second || c.TTL%time.Second != 0 {
		add("TTL must be whole seconds ≥ 1s (etcd leases are), got %s", c.TTL)
	}
	if c.DriftMargin < MinDriftMargin {
		add("DriftMargin must be ≥ %s, got %s", MinDriftMargin, c.DriftMargin)
	}
	if c.Window() < MinAuthorityWindow {
		add("TTL − DriftMargin must be ≥ %s, got %s − %s", MinAuthorityWindow, c.TTL, c.DriftMargin)
	}
	if c.Renew < 0 || (c.Renew > 0 && c.Renew >= c.Window()) {
		add("Renew must be 0 (default) or < TTL − DriftMargin (%s), got %s", c.Window(), c.Renew)
	}
	if c.Poll < 0 {
		add("Poll must be ≥ 0, got %s", c.Poll)
	}
	return errors.Join(errs...)
}

// Authority keeps a cell leader's authority lease: the right to
// acknowledge writes. It implements store.Authority (Valid).
//
// While the node leads, the keeper publishes cells/<c>/authority under a
// lease it grants itself. With a store that hands out bare leases
// (topo.Leaser: etcd), it renews with one keep-alive of that lease: no
// etcd write, no new revision. The monotonic time at which a grant or a
// keep-alive was sent is the anchor: etcd cannot expire the lease, and so
// cannot delete the key, before sentAt + TTL, while the node stops
// acknowledging at sentAt + TTL − DriftMargin. A node cut off from etcd
// therefore stops before its key disappears, which is what an emergency
// promotion waits for. The bare lease has no background keep-alive: the
// key expires TTL after the keeper's last renewal. A keep-alive that
// finds the lease gone (it expired) ends the validity at once and the
// keeper publishes again. With a store without bare leases (topo
// sessions keep theirs alive in the background without telling when a
// keep-alive was sent), each renewal grants a fresh lease, moves the key
// onto it (one transaction) and revokes the old one: three etcd writes
// and a revision per renewal, against none with keep-alives.
//
// Every publication — the first of a term, a republication after the key
// changed or the lease was lost, and each renewal without bare leases —
// first reads the cell record, the authority key and the fences under
// cells/<c>/fence/ at one revision, applies the pending fences through
// Raft, and writes on the condition that the cell record and the
// authority key did not change since. An emergency promotion writes its
// fence and rewrites the cell record in one transaction, so no
// publication can succeed that has not seen (and applied) a fence written
// before it. A keep-alive renewal reads the same keys after its
// keep-alive was sent and extends the validity only once the fences it
// read are applied and the key is still the one it wrote: a fence written
// before the read is applied first; one written after it is one the
// renewal's anchor (sent before the read) predates, as with a conditional
// write that committed before the fence. A new leader is valid once
// it published (an etcd round trip or three after it is elected): being
// valid on its own node lease alone would let it acknowledge a fenced
// tenant's writes after the controller saw the old leader's key expire.
type Authority struct {
	st     topo.Store
	leaser topo.Leaser // nil: the store has no bare leases (renew by grant + txn + revoke)
	cfg    AuthorityConfig
	leader LeaderSource
	prop   Proposer
	log    *slog.Logger
	now    func() time.Duration
	m      authorityMetrics

	// Read by Valid on the write path; written by the loop.
	term       atomic.Uint64 // the Raft term the authority is held for; 0: none
	validUntil atomic.Int64  // monotonic ns
	renewedAt  atomic.Int64  // monotonic ns: when the last good renewal was sent; 0: never

	cancel    context.CancelFunc
	done      chan struct{}
	closeOnce sync.Once

	// Owned by the loop goroutine (and by Close after it ended).
	lease heldLease // the lease the authority key is under; nil: none
	// formedTerm is the term for which cells/<c>/formed was written.
	formedTerm uint64
	ver        topo.Version // the key's version as we wrote it
	since      *timestamppb.Timestamp
}

// StartAuthority validates cfg and starts the keeper. leader says whether
// this node leads; prop applies fences. Close stops it.
func StartAuthority(st topo.Store, cfg AuthorityConfig, leader LeaderSource, prop Proposer) (*Authority, error) {
	if cfg.Poll == 0 {
		cfg.Poll = DefaultAuthorityPoll
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if st == nil || leader == nil || prop == nil {
		return nil, errors.New("registry: authority: nil store, leader source or proposer")
	}
	now := cfg.TestingKnobs.Now
	if now == nil {
		origin := time.Now()
		now = func() time.Duration { return time.Since(origin) } // monotonic
	}
	leaser, _ := st.(topo.Leaser)
	a := &Authority{
		st: st, leaser: leaser, cfg: cfg, leader: leader, prop: prop, now: now,
		log:  logging.OrDefault(cfg.Logger).With("cell", cfg.Cell, "node", cfg.NodeID, "component", "authority"),
		m:    newAuthorityMetrics(),
		done: make(chan struct{}),
	}
	a.m.register(a)
	ctx, cancel := context.WithCancel(context.Background())
	a.cancel = cancel
	go a.loop(ctx)
	return a, nil
}

// Valid reports whether this node may acknowledge a write now: it leads,
// it published the authority for its current term, and its last renewal
// was sent less than TTL − DriftMargin ago (monotonic clock). It is cheap
// (atomics and the LeaderSource) and safe for concurrent use.
func (a *Authority) Valid() bool {
	ok, _ := a.valid()
	return ok
}

func (a *Authority) valid() (ok, leading bool) {
	term, leading := a.leader.LeaderTerm()
	if !leading {
		return false, false
	}
	held := a.term.Load()
	return held != 0 && held == term && int64(a.now()) < a.validUntil.Load(), true
}

// ValidFor returns how much longer the authority lasts without another
// renewal (≤ 0: not valid).
func (a *Authority) ValidFor() time.Duration {
	if ok, _ := a.valid(); !ok {
		return 0
	}
	return time.Duration(a.validUntil.Load()) - a.now()
}

// Collectors returns the keeper's Prometheus collectors.
func (a *Authority) Collectors() []prometheus.Collector { return a.m.collectors() }

// Config returns the keeper's configuration.
func (a *Authority) Config() AuthorityConfig { return a.cfg }

// Close stops the keeper, gives the authority up (deleting the key if it
// is still ours) and revokes its lease. Idempotent.
func (a *Authority) Close() error {
	a.closeOnce.Do(func() {
		a.cancel()
		<-a.done
		ctx, cancel := context.WithTimeout(context.Background(), a.cfg.TTL)
		defer cancel()
		a.release(ctx, "stopping")
	})
	return nil
}

func (a *Authority) loop(ctx context.Context) {
	defer close(a.done)
	ticker := time.NewTicker(a.cfg.Poll)
	defer ticker.Stop()
	var (
		w           fenceWatch
		nextRenew   time.Duration
		backoff     = retry.Policy{Min: a.cfg.Poll, Max: a.cfg.RenewEvery()}.Backoff()
		fenceDirty  bool
		failedSince time.Duration = -1
	)
	defer w.stop()
	for {
		term, leading := a.leader.LeaderTerm()
		switch {
		case !leading:
			if a.lease != nil || a.term.Load() != 0 {
				a.release(ctx, "no longer the leader")
			}
			w.stop()
			nextRenew, failedSince = 0, -1
		default:
			w.start(ctx, a.st, topo.CellFencePrefix(a.cfg.Cell))
			now := a.now()
			rotate := a.term.Load() != term || now >= nextRenew
			if rotate || fenceDirty {
				err := a.sync(ctx, term, rotate)
				switch {
				case err == nil:
					fenceDirty, failedSince = false, -1
					backoff.Reset()
					if rotate {
						nextRenew = now + a.cfg.RenewEvery()
					}
				case ctx.Err() != nil:
					return
				default:
					if failedSince < 0 {
						failedSince = now
					}
					lvl := slog.LevelDebug
					if now-failedSince > a.cfg.RenewEvery() {
						lvl = slog.LevelWarn // a renewal or more missed: the authority may lapse
					}
					wait := backoff.Next()
					a.log.Log(ctx, lvl, "authority renewal failed; retrying", "term", term, "valid_for", a.ValidFor(), "retry_in", wait, "err", err)
					nextRenew = now + wait
				}
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		case resp, ok := <-w.ch:
			if !ok || resp.Err != nil {
				w.stop() // watched again on the next pass
				fenceDirty = true
				continue
			}
			for _, ev := range resp.Events {
				if ev.Type == topo.EventPut {
					fenceDirty = true
				}
			}
		}
	}
}

// fenceWatch is the leader's watch on its fence prefix (nil channel: not
// watching).
type fenceWatch struct {
	ch     <-chan topo.WatchResponse
	cancel context.CancelFunc
}

func (w *fenceWatch) start(ctx context.Context, st topo.Store, prefix string) {
	if w.ch != nil {
		return
	}
	wctx, cancel := context.WithCancel(ctx)
	w.ch, w.cancel = st.Watch(wctx, prefix, 0), cancel
}

func (w *fenceWatch) stop() {
	if w.cancel != nil {
		w.cancel()
	}
	w.ch, w.cancel = nil, nil
}

// errNotOursAuthority: the authority key names another node at a later
// term; this node's leadership is stale.
var errNotOursAuthority = errors.New("the authority key names another node at a later term")

// errAuthorityConflict: the cell record or the authority key changed
// between the read and the write (a fence, most likely): read again.
var errAuthorityConflict = errors.New("the cell record or the authority key changed concurrently")

// sync reads the cell's keys, applies pending fences and, with rotate,
// publishes the authority under a fresh lease (the renewal).
func (a *Authority) sync(ctx context.Context, term uint64, rotate bool) error {
	ctx, cancel := context.WithTimeout(ctx, a.cfg.Window())
	defer cancel()
	if a.term.Load() != term && a.term.Load() != 0 {
		// A new term (we lost leadership and won it back): what we held
		// before says nothing about now.
		a.term.Store(0)
		a.validUntil.Store(0)
	}
	// The renewal proper: one keep-alive of the lease the key is under,
	// sent before the read below, so that the read (and the fences it
	// applies) happens after the renewal's anchor — see keepAlive.
	kept, sent, err := a.keepAlive(ctx, term, rotate)
	if err != nil {
		a.m.renewals.WithLabelValues("error").Inc()
		return err
	}
	cs, err := readCell(ctx, a.st, a.cfg.Cell)
	if err != nil {
		a.m.renewals.WithLabelValues("error").Inc()
		return err
	}
	if cs.cellVersion == 0 {
		a.m.renewals.WithLabelValues("error").Inc()
		return fmt.Errorf("cell record %s does not exist", topo.CellKey(a.cfg.Cell))
	}
	if cur := cs.authority; cur != nil && cur.GetNodeId() != a.cfg.NodeID && cur.GetTerm() > term {
		a.m.renewals.WithLabelValues("error").Inc()
		return fmt.Errorf("%w (%s at term %d, ours %d)", errNotOursAuthority, cur.GetNodeId(), cur.GetTerm(), term)
	}
	for _, f := range cs.fences {
		if f.fence.GetApplied() {
			continue
		}
		if err := a.applyFence(ctx, f); err != nil {
			a.m.renewals.WithLabelValues("error").Inc()
			return err
		}
	}
	if !rotate {
		return nil
	}
	if kept {
		if cur := cs.authority; cur != nil && cs.authorityVersion == a.ver && cur.GetNodeId() == a.cfg.NodeID && cur.GetTerm() == term {
			// The key is the one we wrote (so still under the lease
			// just renewed), and every fence written before the read
			// is applied: the authority holds until sent + Window.
			a.validUntil.Store(int64(sent + a.cfg.Window()))
			a.renewedAt.Store(int64(sent))
			a.m.renewals.WithLabelValues("ok").Inc()
			return nil
		}
		// Someone rewrote or deleted the key: publish it again, under a
		// fresh lease, with the conditions below.
	}
	if k := a.cfg.TestingKnobs.AfterRead; k != nil {
		k()
	}

	if err := a.ensureFormed(ctx, term); err != nil {
		a.m.renewals.WithLabelValues("error").Inc()
		return err
	}
	sent = a.now()
	sess, err := a.grant(ctx)
	if err != nil {
		a.m.renewals.WithLabelValues("error").Inc()
		return fmt.Errorf("grant lease: %w", err)
	}
	if a.since == nil || a.term.Load() != term {
		a.since = timestamppb.Now()
	}
	val, err := proto.Marshal(&cpv1.CellAuthority{
		NodeId: a.cfg.NodeID, Term: term,
		Ttl: durationpb.New(a.cfg.TTL), DriftMargin: durationpb.New(a.cfg.DriftMargin), Since: a.since,
	})
	if err != nil {
		_ = sess.Close()
		return err
	}
	key := topo.CellAuthorityKey(a.cfg.Cell)
	rev, err := a.st.Txn(ctx,
		[]topo.Cond{topo.IfVersion(topo.CellKey(a.cfg.Cell), cs.cellVersion), topo.IfVersion(key, cs.authorityVersion)},
		[]topo.Op{topo.PutLeased(key, val, sess.Lease())})
	if err != nil {
		if errors.Is(err, topo.ErrConditionFailed) {
			// Nothing was written: the key is still where it was.
			closeSession(sess, a.cfg.TTL)
			a.m.renewals.WithLabelValues("conflict").Inc()
			return fmt.Errorf("%w: %v", errAuthorityConflict, err)
		}
		// The outcome is unknown: the key may be under the new lease,
		// which revoking deletes at once — possibly before the old
		// lease's expiry that our validity is counted against. Give the
		// validity up first.
		a.validUntil.Store(0)
		closeSession(sess, a.cfg.TTL)
		a.m.renewals.WithLabelValues("error").Inc()
		return fmt.Errorf("publish %s: %w", key, err)
	}
	first := a.term.Load() != term
	old := a.lease
	a.lease, a.ver = sess, topo.Version(rev)
	a.validUntil.Store(int64(sent + a.cfg.Window()))
	a.renewedAt.Store(int64(sent))
	a.term.Store(term)
	a.m.renewals.WithLabelValues("ok").Inc()
	if old != nil {
		// The key moved off the old lease; revoking it removes nothing.
		go closeSession(old, a.cfg.TTL)
	}
	if first {
		a.log.Info("cell authority published: acknowledging writes", "term", term, "ttl", a.cfg.TTL, "drift_margin", a.cfg.DriftMargin)
	}
	return nil
}

// keepAlive renews the lease the authority key is under with one
// keep-alive, when rotate asks for a renewal, the store has bare leases
// and the node already published for term; kept reports it did, sent is
// when the keep-alive was sent (monotonic). Like a grant, a keep-alive
// sent at sent cannot make etcd expire the lease before sent + TTL: the
// validity is anchored on it the same way. The caller reads the cell's
// keys after it and before the validity is extended, so a fence written
// before that read is seen and applied, as with the conditional write of
// a publication. A lease etcd no longer knows (it expired: the key is
// gone) ends the validity at once; the caller then publishes again under
// a fresh lease.
func (a *Authority) keepAlive(ctx context.Context, term uint64, rotate bool) (kept bool, sent time.Duration, err error) {
	rl, ok := a.lease.(rawLease)
	if !rotate || !ok || a.term.Load() != term {
		return false, 0, nil
	}
	sent = a.now()
	_, err = a.leaser.KeepAliveOnce(ctx, rl.id)
	switch {
	case err == nil:
		a.m.keepAlives.Inc()
		return true, sent, nil
	case errors.Is(err, topo.ErrNotFound):
		a.validUntil.Store(0)
		a.lease, a.ver = nil, 0
		a.m.leasesLost.Inc()
		a.log.Warn("the authority lease expired in etcd: not acknowledging writes until it is published again", "term", term, "err", err)
		return false, 0, nil
	default:
		return false, 0, fmt.Errorf("keep the authority lease alive: %w", err)
	}
}

// heldLease is the lease the authority key is under: a bare lease
// (rawLease) when the store is a topo.Leaser, else a session.
type heldLease interface {
	Lease() topo.LeaseID
	Close() error
}

// rawLease is a bare lease: no background keep-alive, renewed only by
// the keeper's keep-alives, so the key expires TTL after the last one.
type rawLease struct {
	l   topo.Leaser
	id  topo.LeaseID
	ttl time.Duration
}

func (r rawLease) Lease() topo.LeaseID { return r.id }

func (r rawLease) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), r.ttl)
	defer cancel()
	if err := r.l.Revoke(ctx, r.id); err != nil && !errors.Is(err, topo.ErrNotFound) {
		return err
	}
	return nil
}

// grant grants the lease a publication puts the key under.
func (a *Authority) grant(ctx context.Context) (heldLease, error) {
	if a.leaser == nil {
		return a.st.NewSession(ctx, a.cfg.TTL)
	}
	id, err := a.leaser.Grant(ctx, a.cfg.TTL)
	if err != nil {
		return nil, err
	}
	return rawLease{l: a.leaser, id: id, ttl: a.cfg.TTL}, nil
}

// release gives the authority up: Valid turns false at once, the key is
// deleted if it is still the one we wrote, and the lease revoked.
func (a *Authority) release(ctx context.Context, why string) {
	held := a.term.Swap(0)
	a.validUntil.Store(0)
	if a.lease == nil {
		return
	}
	key := topo.CellAuthorityKey(a.cfg.Cell)
	dctx, cancel := context.WithTimeout(ctx, a.cfg.Window())
	_, err := a.st.Txn(dctx, []topo.Cond{topo.IfVersion(key, a.ver)}, []topo.Op{topo.Del(key)})
	cancel()
	if err != nil && !errors.Is(err, topo.ErrConditionFailed) {
		a.log.Warn("deleting the authority key failed; it expires with its lease", "err", err)
	}
	closeSession(a.lease, a.cfg.TTL)
	a.lease, a.ver, a.since = nil, 0, nil
	if held != 0 {
		a.log.Info("cell authority given up", "term", held, "why", why)
	}
}

// closeSession revokes a session's lease, bounded by ttl (after which
// the lease expires anyway).
func closeSession(s heldLease, ttl time.Duration) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = s.Close()
	}()
	t := time.NewTimer(ttl)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
	}
}

// cellState is what a publication reads under cells/<c> at one revision.
type cellState struct {
	cellVersion      topo.Version
	authorityVersion topo.Version
	authority        *cpv1.CellAuthority // nil: absent or undecodable
	fences           []storedFence
}

type storedFence struct {
	key     string
	version topo.Version
	fence   *cpv1.CellFence
}

// readCell reads cells/<c>, cells/<c>/authority and cells/<c>/fence/* at
// one revision.
func readCell(ctx context.Context, st topo.Store, cell string) (cellState, error) {
	var cs cellState
	_, err := catalog.Each(ctx, st, topo.CellKey(cell), 0, func(kv topo.KV) error {
		e, derr := catalog.DecodeKV(kv)
		if e.Key.ID != cell {
			return nil // cells/<cell>x/...
		}
		switch e.Key.Kind {
		case topo.KindCell:
			cs.cellVersion = kv.Version // only its version matters
		case topo.KindCellAuthority:
			cs.authorityVersion = kv.Version
			if derr == nil {
				cs.authority = e.Value.(*cpv1.CellAuthority)
			}
		case topo.KindCellFence:
			if derr != nil {
				return derr
			}
			f := e.Value.(*cpv1.CellFence)
			if f.GetTenant() == "" {
				f.Tenant = e.Key.Sub
			}
			cs.fences = append(cs.fences, storedFence{key: kv.Key, version: kv.Version, fence: f})
		}
		return nil
	})
	switch {
	case errors.Is(err, catalog.ErrCorrupt):
		return cellState{}, err
	case err != nil:
		return cellState{}, fmt.Errorf("list %s: %w", topo.CellKey(cell), err)
	}
	return cs, nil
}

// ensureFormed writes cells/<c>/formed once per term, before the term's
// first authority: the record is durable before the cell can acknowledge
// a write, so a founding node that comes back without its data never
// bootstraps the cell again (H1, see CellFormed). A store that refuses the
// write (the etcd role of a control plane from before the record) is
// logged and let through: the leader key stands in for it.
func (a *Authority) ensureFormed(ctx context.Context, term uint64) error {
	if a.formedTerm == term {
		return nil
	}
	val, err := proto.Marshal(&cpv1.CellAuthority{NodeId: a.cfg.NodeID, Term: term, Since: timestamppb.Now()})
	if err != nil {
		return err
	}
	key := topo.CellFormedKey(a.cfg.Cell)
	_, err = a.st.Txn(ctx, nil, []topo.Op{topo.Put(key, val)})
	switch {
	case errors.Is(err, topo.ErrPermissionDenied):
		a.log.Warn("cannot write the cell's formed record (upgrade the control plane: its etcd role for nodes predates it); the leader key stands in for it", "key", key, "err", err)
	case err != nil:
		return fmt.Errorf("write %s: %w", key, err)
	}
	a.formedTerm = term
	return nil
}
