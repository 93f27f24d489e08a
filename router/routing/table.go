package routing

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cellplane/cellplane/controlplane/catalog"
	"github.com/cellplane/cellplane/controlplane/topo"
	"github.com/cellplane/cellplane/internal/auth"
	"github.com/cellplane/cellplane/internal/cperr"
	cpv1 "github.com/cellplane/cellplane/proto/cellplane/controlplane/v1"
)

// Limits are a tenant's rate limits; 0 means the router's default.
type Limits struct {
	Rate  float64
	Burst uint32
	// BytesRate and BytesBurst are the tenant's request-bytes bucket
	// (0: the router's default, --tenant-bytes-rate/--tenant-bytes-burst).
	BytesRate  float64
	BytesBurst uint32
}

// Route is where an ACTIVE tenant lives.
type Route struct {
	Tenant, Cell string
	Epoch        uint64
	Limits       Limits
	// CuttingOver: a move or failover is cutting the tenant over (from the
	// fence of the old owner to the flip of the placement). Neither Cell
	// nor the next owner takes the tenant's calls meanwhile; callers hold
	// them until the route changes (WaitChange).
	CuttingOver bool
}

// differs reports a change that matters to a held call: another cell,
// another epoch, or the cutover flag.
func (r Route) differs(o Route) bool {
	return r.Cell != o.Cell || r.Epoch != o.Epoch || r.CuttingOver != o.CuttingOver
}

// Node is a live node of a cell. Worker: NODE_ROLE_WORKER, else a Raft
// member.
type Node struct {
	ID, GRPCAddr, HTTPAddr string
	Worker                 bool
}

// CellRoute is a cell's addresses. It is immutable once published: a
// change builds a new CellRoute, so callers may keep and share it.
type CellRoute struct {
	ID, Region                       string
	LeaderID, LeaderGRPC, LeaderHTTP string
	Members                          []Node
	Workers                          []Node

	addrsOnce           sync.Once
	memberGRPC, mcpHTTP []string
}

// MemberGRPC returns the members' gRPC addresses, computed once per route
// (a route is immutable), so the request path does not rebuild them.
func (c *CellRoute) MemberGRPC() []string {
	c.addrsOnce.Do(c.addrs)
	return c.memberGRPC
}

// MCPHTTP returns the HTTP addresses serving MCP for the cell: every
// member's (a worker runs in each node) and every registered worker's.
func (c *CellRoute) MCPHTTP() []string {
	c.addrsOnce.Do(c.addrs)
	return c.mcpHTTP
}

func (c *CellRoute) addrs() {
	for _, n := range c.Members {
		if n.GRPCAddr != "" {
			c.memberGRPC = append(c.memberGRPC, n.GRPCAddr)
		}
		if n.HTTPAddr != "" {
			c.mcpHTTP = append(c.mcpHTTP, n.HTTPAddr)
		}
	}
	for _, n := range c.Workers {
		if n.HTTPAddr != "" {
			c.mcpHTTP = append(c.mcpHTTP, n.HTTPAddr)
		}
	}
}

// neverFresh is Table.keysFresh before any load or snapshot.
const neverFresh = math.MinInt64

// Table is the router's routing table. Every read method is served from
// memory and never waits on etcd; the zero value is not usable (Start).
type Table struct {
	cfg   Config
	st    topo.Store
	log   *slog.Logger
	start time.Time

	view     atomic.Pointer[view]
	loaded   atomic.Bool
	lastSync atomic.Int64 // unix nanos of the last event or successful sync
	// keysFresh is when the view was last known to hold every change of
	// etcd (a full load's start, a progress notification's probe, the
	// snapshot's freshness), as nanoseconds since start: ages are measured
	// on the monotonic clock within a run (the snapshot's wall-clock time
	// only across a restart). neverFresh: never. See KeysFresh.
	keysFresh atomic.Int64
	// changes counts modifications; the snapshot writer compares it.
	changes atomic.Uint64
	// routes wakes WaitChange callers when tenant entries may have changed.
	routes broadcast

	// nReloads and nSnapshots mirror the counters for tests.
	nReloads, nSnapshots atomic.Int64
	// nRefreshReads counts Refresh's reads of etcd and nRefreshJoins the
	// Refreshes that shared one under way (tests).
	nRefreshReads, nRefreshJoins atomic.Int64

	flightMu       sync.Mutex
	flights        map[string]*refreshFlight // Refresh reads under way, by tenant
	reloads        prometheus.Counter
	snapshotWrites prometheus.Counter
	collectors     []prometheus.Collector

	snapMu      sync.Mutex // serializes snapshot writes
	snapChanges uint64     // changes at the last write (under snapMu)
	snapFresh   int64      // keysFresh at the last write (under snapMu)

	cancel    context.CancelFunc
	wg        sync.WaitGroup
	closeOnce sync.Once
	closeErr  error
}

// Start returns a table at once: loaded from cfg.SnapshotPath if it holds
// a valid snapshot, else empty (Loaded false). In the background it lists
// tenants/ and cells/ at one revision, swaps the result in, and follows
// both prefixes with watches, reloading on any watch failure. Background
// work ends with ctx or Close.
func Start(ctx context.Context, st topo.Store, cfg Config) (*Table, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	t := &Table{cfg: cfg, st: st, log: cfg.Logger, start: time.Now()}
	t.keysFresh.Store(neverFresh)
	t.snapFresh = neverFresh
	t.view.Store(newView())
	t.initMetrics()
	if cfg.SnapshotPath != "" {
		v, written, err := readSnapshotFile(cfg.SnapshotPath)
		switch {
		case err == nil:
			t.view.Store(v)
			t.loaded.Store(true)
			t.lastSync.Store(written.UnixNano())
			// The snapshot records when its table was last known fresh: a
			// restart from an old file does not make its keys valid again.
			t.markFresh(written)
			t.snapFresh = t.keysFresh.Load()
			t.log.Info("routing: loaded snapshot", "path", cfg.SnapshotPath, "revision", v.rev.Load(), "tenants", v.n.Load(), "written", written)
		case errors.Is(err, errNoSnapshot):
			t.log.Info("routing: no snapshot yet", "path", cfg.SnapshotPath)
		default:
			t.log.Warn("routing: ignoring snapshot", "path", cfg.SnapshotPath, "err", err)
		}
	}
	ctx, t.cancel = context.WithCancel(ctx)
	t.wg.Add(1)
	go func() {
		defer t.wg.Done()
		t.run(ctx)
	}()
	if cfg.SnapshotPath != "" {
		t.wg.Add(1)
		go func() {
			defer t.wg.Done()
			t.snapshotLoop(ctx)
		}()
	}
	return t, nil
}

// Close stops the background work and writes a final snapshot (if a path
// is configured and the table changed, or its key freshness advanced,
// since the last write).
func (t *Table) Close() error {
	t.closeOnce.Do(func() {
		t.cancel()
		t.wg.Wait()
		// Also when only the key freshness advanced: a restart then
		// counts the keys as fresh as they were at the stop.
		t.closeErr = t.writeSnapshotIf(0)
	})
	return t.closeErr
}

// Lookup returns the route of an ACTIVE tenant. It is O(1) and allocates
// nothing.
func (t *Table) Lookup(tenant string) (Route, bool) {
	v := t.view.Load()
	e, ok := v.get(tenant)
	if !ok || !e.active() {
		return Route{}, false
	}
	return v.route(tenant, e), true
}

// Cell returns a cell's addresses (shared and immutable: do not modify).
func (t *Table) Cell(id string) (*CellRoute, bool) {
	c, ok := t.view.Load().cellMap()[id]
	return c, ok
}

// APIKey returns the tenant and the SHA-256 of the secret of an API key
// (the hash is shared: do not modify it). Revoked keys and keys of a tenant
// that is not ACTIVE are not returned.
func (t *Table) APIKey(keyID string) (tenant string, hash []byte, ok bool) {
	v := t.view.Load()
	k, ok := v.apiKey(keyID)
	if !ok || k.revoked {
		return "", nil, false
	}
	if e, ok := v.get(k.tenant); !ok || !e.active() {
		return "", nil, false
	}
	return k.tenant, k.hash, true
}

// APIKeyGrant returns an API key's principal name ("" for its id) and
// scopes. It implements auth.KeyLookup.
func (t *Table) APIKeyGrant(keyID string) (principal string, scopes auth.Scopes) {
	k, _ := t.view.Load().apiKey(keyID)
	return k.principal, k.scopes
}

// KeysFresh reports whether the table may authenticate API keys: nil
// while its view was known to match etcd within APIKeyMaxStaleness (or
// the bound is 0); else a CREDENTIALS_STALE error (UNAVAILABLE, with the
// view's age and a retry hint). It implements auth.KeyLookup.
func (t *Table) KeysFresh() error {
	bound := t.cfg.APIKeyMaxStaleness
	if bound <= 0 {
		return nil
	}
	age, known := t.KeysAge()
	if known && age <= bound {
		return nil
	}
	return cperr.New(cperr.CredentialsStale, "API keys cannot be checked: this router's view of them is older than %s (its etcd watch is down or not yet synced)", bound).
		With(cperr.MetaMaxStaleness, bound.String()).
		With(cperr.MetaCredentialsAge, ageString(age, known)).
		WithRetryAfter(t.cfg.FreshnessInterval)
}

// TokenRevoked checks a verified JWT against its tenant's revocation list
// (auth.Revoked): nil if it may be used, UNAUTHENTICATED if revoked, and
// CREDENTIALS_STALE if JWTRevocationMaxStaleness is set and the view is
// older than it. It implements auth.KeyLookup.
func (t *Table) TokenRevoked(id auth.Identity) error {
	if bound := t.cfg.JWTRevocationMaxStaleness; bound > 0 {
		if age, known := t.KeysAge(); !known || age > bound {
			return cperr.New(cperr.CredentialsStale, "tokens cannot be checked against the revocation list: this router's view of it is older than %s", bound).
				With(cperr.MetaMaxStaleness, bound.String()).
				With(cperr.MetaCredentialsAge, ageString(age, known)).
				WithRetryAfter(t.cfg.FreshnessInterval)
		}
	}
	v := t.view.Load()
	if auth.Revoked(id, time.Now(), func(e string) (auth.RevocationEntry, bool) { return v.revokedEntry(id.Tenant, e) }) {
		return auth.TokenRevokedError()
	}
	return nil
}

func ageString(age time.Duration, known bool) string {
	if !known {
		return "unknown"
	}
	return age.Round(time.Millisecond).String()
}

// KeysAge is the time since the view was last known to match etcd (see
// Config.APIKeyMaxStaleness); known is false if it never was (no load
// yet and no snapshot), and age is then the time since Start.
func (t *Table) KeysAge() (age time.Duration, known bool) {
	since := time.Since(t.start)
	f := t.keysFresh.Load()
	if f == neverFresh {
		return since, false
	}
	return since - time.Duration(f), true
}

// freshAt is the wall-clock time of keysFresh (ok false: never fresh).
func (t *Table) freshAt() (time.Time, bool) {
	f := t.keysFresh.Load()
	if f == neverFresh {
		return time.Time{}, false
	}
	return t.start.Add(time.Duration(f)).Round(0), true
}

// markFresh records that the view held every change of etcd as of at (a
// time.Now of this run, on the monotonic clock, or a wall-clock time
// read from the snapshot).
func (t *Table) markFresh(at time.Time) {
	n := int64(at.Sub(t.start))
	for {
		old := t.keysFresh.Load()
		if old >= n || t.keysFresh.CompareAndSwap(old, n) {
			return
		}
	}
}

// Revision is the newest etcd revision applied to the table (the
// snapshot's before the first load; 0 if nothing is loaded).
func (t *Table) Revision() int64 { return t.view.Load().rev.Load() }

// Loaded reports whether the table holds data (from a load or a snapshot).
func (t *Table) Loaded() bool { return t.loaded.Load() }

// Age is the time since the last watch event or successful load (for a
// table loaded from a snapshot only: since the snapshot was written;
// nothing loaded: since Start). A quiet but healthy watch also ages.
func (t *Table) Age() time.Duration {
	last := t.lastSync.Load()
	if last == 0 {
		return time.Since(t.start)
	}
	return time.Since(time.Unix(0, last))
}

// Len is the number of tenant records in the table (any state).
func (t *Table) Len() int { return int(t.view.Load().n.Load()) }

// Refresh re-reads tenants/<tenant> now (bounded by ctx), updates the
// entry and returns it (ok false: not ACTIVE or absent). On a store error
// it returns the current entry and the error. A result older than what the
// watch already applied never overwrites it.
//
// Concurrent Refreshes of one tenant share one read (finding M5): when N
// calls fail with WRONG_CELL at once, etcd sees one read, not N. A caller
// that joins a read already under way gets its answer; if that read ends
// with the first caller's own context error while the joiner's context
// is alive, the joiner reads again.
func (t *Table) Refresh(ctx context.Context, tenant string) (Route, bool, error) {
	for {
		t.flightMu.Lock()
		f, joined := t.flights[tenant]
		if !joined {
			f = &refreshFlight{done: make(chan struct{})}
			if t.flights == nil {
				t.flights = make(map[string]*refreshFlight)
			}
			t.flights[tenant] = f
		}
		t.flightMu.Unlock()
		if !joined {
			t.nRefreshReads.Add(1)
			f.r, f.ok, f.err = t.refresh(ctx, tenant)
			t.flightMu.Lock()
			delete(t.flights, tenant)
			t.flightMu.Unlock()
			close(f.done)
			return f.r, f.ok, f.err
		}
		t.nRefreshJoins.Add(1)
		select {
		case <-f.done:
		case <-ctx.Done():
			r, ok := t.Lookup(tenant)
			return r, ok, fmt.Errorf("routing: refresh %q: %w", tenant, ctx.Err())
		}
		if f.err != nil && ctx.Err() == nil && (errors.Is(f.err, context.Canceled) || errors.Is(f.err, context.DeadlineExceeded)) {
			continue // the first caller gave up, not the store: read again
		}
		return f.r, f.ok, f.err
	}
}

// refreshFlight is one read of a tenant's key that concurrent Refreshes
// share.
type refreshFlight struct {
	done chan struct{} // closed when r, ok and err are set
	r    Route
	ok   bool
	err  error
}

// refresh is one read of the tenant's key (Refresh).
func (t *Table) refresh(ctx context.Context, tenant string) (Route, bool, error) {
	v := t.view.Load()
	// A List of the tenant's key (limit 1) rather than a Get: it also says
	// at which revision the key was absent.
	key := topo.TenantKey(tenant)
	res, err := t.st.List(ctx, key, topo.ListOptions{Limit: 1})
	if err != nil {
		r, ok := t.Lookup(tenant)
		return r, ok, fmt.Errorf("routing: refresh %q: %w", tenant, err)
	}
	readRev := int64(res.Revision)
	newer := func() bool { return readRev > v.tenantsRev.Load() }
	if len(res.KVs) == 0 || res.KVs[0].Key != key {
		if v.del(tenant, readRev) {
			t.changed()
			t.routes.notify()
		}
		return Route{}, false, nil
	}
	kv := res.KVs[0]
	rec := &cpv1.Tenant{}
	if err := catalog.Decode(kv, rec); err != nil {
		r, ok := t.Lookup(tenant)
		return r, ok, fmt.Errorf("routing: refresh %q: %w", tenant, err)
	}
	e, err := v.makeEntry(rec, int64(kv.Version))
	if err != nil {
		r, ok := t.Lookup(tenant)
		return r, ok, fmt.Errorf("routing: refresh %q: %w", tenant, err)
	}
	if v.put(clone(tenant), e, newer) {
		t.changed()
		t.routes.notify()
	}
	r, ok := t.Lookup(tenant)
	return r, ok, nil
}

// WaitChange waits until the tenant's route differs from seen (another
// cell, epoch or CuttingOver; limits do not count) and returns the new
// route (ok false: the tenant is no longer routable). It returns at once
// when the route already differs, and ctx's error when ctx ends first. It
// reads memory only: a change arrives through the watch (or a Refresh);
// while nobody waits, the table pays nothing for it.
func (t *Table) WaitChange(ctx context.Context, tenant string, seen Route) (Route, bool, error) {
	for {
		ch := t.routes.wait() // before the Lookup: no change can slip between
		r, ok := t.Lookup(tenant)
		if !ok || r.differs(seen) {
			return r, ok, nil
		}
		select {
		case <-ctx.Done():
			return r, ok, ctx.Err()
		case <-ch:
		}
	}
}

// CuttingOver is the number of tenant records marked cutting_over.
func (t *Table) CuttingOver() int { return int(t.view.Load().cutting.Load()) }

func (t *Table) changed() { t.changes.Add(1) }

func (t *Table) touch() { t.lastSync.Store(time.Now().UnixNano()) }

func clone(s string) string { return string([]byte(s)) }
