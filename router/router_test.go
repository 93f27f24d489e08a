package router_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/cellplane/cellplane/cells"
	"github.com/cellplane/cellplane/client"
	"github.com/cellplane/cellplane/controlplane/catalog"
	"github.com/cellplane/cellplane/controlplane/cptest"
	"github.com/cellplane/cellplane/controlplane/etcdserver"
	"github.com/cellplane/cellplane/controlplane/topo"
	"github.com/cellplane/cellplane/controlplane/topo/topotest"
	"github.com/cellplane/cellplane/internal/auth"
	"github.com/cellplane/cellplane/internal/cperr"
	"github.com/cellplane/cellplane/internal/logging"
	"github.com/cellplane/cellplane/internal/rpcerr"
	"github.com/cellplane/cellplane/internal/testutil"
	cellv1 "github.com/cellplane/cellplane/proto/cellplane/cell/v1"
	contextv1 "github.com/cellplane/cellplane/proto/cellplane/context/v1"
	cpv1 "github.com/cellplane/cellplane/proto/cellplane/controlplane/v1"
	routerv1 "github.com/cellplane/cellplane/proto/cellplane/router/v1"
	"github.com/cellplane/cellplane/router"
	"github.com/cellplane/cellplane/router/forward"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// platform is a real etcd, control plane, one 3-node cell, tenants with API
// keys, and a router in front.
type platform struct {
	etcd     *etcdserver.Server
	env      *cptest.Env
	nodes    []*cells.Node
	keys     map[string]string // tenant → API key secret
	snapshot string
	router   *router.Server
}

func newPlatform(t *testing.T, tenants ...*cpv1.CreateTenantRequest) *platform {
	t.Helper()
	if testing.Short() {
		t.Skip("starts etcd, a control plane, a 3-node cell and a router")
	}
	p := &platform{etcd: topotest.StartEtcdServer(t), keys: map[string]string{}}
	p.env = &cptest.Env{Endpoints: p.etcd.Endpoints()}
	p.env.AddReplica(t, "cp1")
	p.nodes = p.env.CreateCell(t, "us-east", "c1", 3)
	cl := p.env.Client(t)
	ctx := testutil.Context(t, 60*time.Second)
	for _, req := range tenants {
		if req.HomeRegion == "" {
			req.HomeRegion = "us-east"
		}
		if _, err := cl.CreateTenant(ctx, req); err != nil {
			t.Fatalf("create tenant %s: %v", req.GetId(), err)
		}
		k, err := cl.CreateApiKey(ctx, &cpv1.CreateApiKeyRequest{Tenant: req.GetId()})
		if err != nil {
			t.Fatal(err)
		}
		p.keys[req.GetId()] = k.GetSecret()
	}
	p.snapshot = filepath.Join(t.TempDir(), "router.snap")
	p.router = p.startRouter(t)
	testutil.Eventually(t, 20*time.Second, func() error {
		for id := range p.keys {
			if _, ok := p.router.Table().Lookup(id); !ok {
				return fmt.Errorf("router does not route %s yet", id)
			}
		}
		return nil
	})
	return p
}

func (p *platform) startRouter(t *testing.T) *router.Server {
	t.Helper()
	return p.startRouterWith(t, nil)
}

// startRouterWith starts a router of the platform with mod applied to its
// configuration.
func (p *platform) startRouterWith(t *testing.T, mod func(*router.Config)) *router.Server {
	t.Helper()
	cfg := router.DefaultConfig()
	cfg.EtcdEndpoints = p.etcd.Endpoints()
	cfg.GRPCListener, cfg.HTTPListener = testutil.Listen(t), testutil.Listen(t)
	cfg.Routing.SnapshotPath = p.snapshot
	cfg.Routing.SnapshotInterval = 50 * time.Millisecond
	cfg.Auth.Mode = auth.ModeAPIKey
	cfg.ShutdownTimeout = 5 * time.Second
	// Info, not Debug: a debug line per call would dominate the CPU the
	// isolation test measures.
	cfg.Logger = slog.New(logging.NewHandler(testutil.SlogWriter(t), logging.FormatText, slog.LevelInfo, false))
	if mod != nil {
		mod(&cfg)
	}
	r, err := router.Start(testutil.Context(t, 30*time.Second), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Close() })
	return r
}

func dial(t *testing.T, addr string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

// as returns ctx carrying the tenant's API key.
func (p *platform) as(ctx context.Context, tenant string) context.Context {
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+p.keys[tenant])
}

func wantCode(t *testing.T, what string, err error, code codes.Code, reason cperr.Reason) {
	t.Helper()
	if status.Code(err) != code || cperr.ReasonOf(rpcerr.FromStatus(err)) != reason {
		t.Fatalf("%s: %v, want %v %s", what, err, code, reason)
	}
}

func TestRouterEndToEnd(t *testing.T) {
	p := newPlatform(t, &cpv1.CreateTenantRequest{Id: "acme"}, &cpv1.CreateTenantRequest{Id: "globex"})
	conn := dial(t, p.router.GRPCAddr())
	cs := contextv1.NewContextServiceClient(conn)
	ctx := testutil.Context(t, 60*time.Second)

	actx := p.as(ctx, "acme")
	if _, err := cs.CreateContext(actx, &contextv1.CreateContextRequest{ContextId: "chat-1"}); err != nil {
		t.Fatal(err)
	}
	app, err := cs.Append(actx, &contextv1.AppendRequest{ContextId: "chat-1", RequestId: "r1",
		Entries: []*contextv1.Entry{{Role: "user", Content: &contextv1.Entry_Text{Text: "hello"}}, {Role: "assistant", Content: &contextv1.Entry_Text{Text: "hi"}}}})
	if err != nil || app.GetLastSeq() != 2 {
		t.Fatalf("append: %v %v", app, err)
	}
	again, err := cs.Append(actx, &contextv1.AppendRequest{ContextId: "chat-1", RequestId: "r1",
		Entries: []*contextv1.Entry{{Role: "user", Content: &contextv1.Entry_Text{Text: "hello"}}, {Role: "assistant", Content: &contextv1.Entry_Text{Text: "hi"}}}})
	if err != nil || again.GetLastSeq() != 2 {
		t.Fatalf("retried append (same request id): %v %v", again, err)
	}
	rd, err := cs.Read(actx, &contextv1.ReadRequest{ContextId: "chat-1", Start: &contextv1.ReadRequest_Tail{Tail: 10}})
	if err != nil || len(rd.GetEntries()) != 2 || rd.GetEntries()[0].GetText() != "hello" {
		t.Fatalf("read: %v %v", rd, err)
	}

	// The tenant comes from the key: globex cannot see acme's context.
	gctx := p.as(ctx, "globex")
	_, err = cs.Read(gctx, &contextv1.ReadRequest{ContextId: "chat-1", Start: &contextv1.ReadRequest_Tail{Tail: 10}})
	wantCode(t, "globex reading acme's context id", err, codes.NotFound, cperr.ContextNotFound)
	_, err = cs.Read(metadata.AppendToOutgoingContext(gctx, "x-cellplane-tenant", "acme"), &contextv1.ReadRequest{ContextId: "chat-1"})
	wantCode(t, "globex key naming acme", err, codes.PermissionDenied, cperr.PermissionDenied)
	_, err = cs.Read(ctx, &contextv1.ReadRequest{ContextId: "chat-1"})
	wantCode(t, "no credentials", err, codes.Unauthenticated, cperr.Unauthenticated)
	_, err = cs.Read(metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer cpk_0123456789abcdef_nope"), &contextv1.ReadRequest{ContextId: "chat-1"})
	wantCode(t, "bad key", err, codes.Unauthenticated, cperr.Unauthenticated)

	// RouterService.Lookup for smart clients.
	lk, err := routerv1.NewRouterServiceClient(conn).Lookup(actx, &routerv1.LookupRequest{})
	if err != nil || lk.GetCell() != "c1" || lk.GetEpoch() != 1 || len(lk.GetMembers()) != 3 || !lk.GetMembers()[0].GetLeader() {
		t.Fatalf("lookup: %v %v", lk, err)
	}

	// The smart client: resolves once, calls the leader directly.
	cfg := client.DefaultConfig()
	cfg.Router, cfg.Tenant, cfg.APIKey = p.router.GRPCAddr(), "acme", p.keys["acme"]
	c, err := client.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	sc := c.Context()
	for i := range 5 {
		if _, err := sc.Append(ctx, &contextv1.AppendRequest{ContextId: "chat-1", Entries: []*contextv1.Entry{{Role: "user", Content: &contextv1.Entry_Text{Text: fmt.Sprint("direct ", i)}}}}); err != nil {
			t.Fatal(err)
		}
	}
	rd, err = sc.Read(ctx, &contextv1.ReadRequest{ContextId: "chat-1", Start: &contextv1.ReadRequest_Tail{Tail: 100}})
	if err != nil || len(rd.GetEntries()) != 7 {
		t.Fatalf("smart client read: %d entries, %v", len(rd.GetEntries()), err)
	}
	stale, err := sc.Read(ctx, &contextv1.ReadRequest{ContextId: "chat-1", Start: &contextv1.ReadRequest_Tail{Tail: 100},
		ReadOptions: &contextv1.ReadOptions{Consistency: contextv1.Consistency_CONSISTENCY_STALE}})
	if err != nil || len(stale.GetEntries()) == 0 {
		t.Fatalf("smart client stale read: %v", err)
	}

	// A revoked key stops working once the table has seen the revocation.
	keys, _ := p.env.Client(t).ListApiKeys(ctx, &cpv1.ListApiKeysRequest{Tenant: "globex"})
	if _, err := p.env.Client(t).RevokeApiKey(ctx, &cpv1.RevokeApiKeyRequest{Tenant: "globex", Id: keys.GetKeys()[0].GetId()}); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, func() error {
		_, err := cs.ListContexts(gctx, &contextv1.ListContextsRequest{})
		if status.Code(err) != codes.Unauthenticated {
			return fmt.Errorf("revoked key: %v", err)
		}
		return nil
	})
}

// Appends with request ids through the router while leadership moves:
// none fails, and each lands once.
func TestLeaderChangeNoFailedRequest(t *testing.T) {
	p := newPlatform(t, &cpv1.CreateTenantRequest{Id: "acme"})
	cs := contextv1.NewContextServiceClient(dial(t, p.router.GRPCAddr()))
	ctx := p.as(testutil.Context(t, 90*time.Second), "acme")
	if _, err := cs.CreateContext(ctx, &contextv1.CreateContextRequest{ContextId: "log"}); err != nil {
		t.Fatal(err)
	}
	const n = 60
	for i := range n {
		if i == 15 || i == 40 {
			if err := transfer(ctx, p.nodes); err != nil {
				t.Fatalf("transfer leadership: %v", err)
			}
		}
		if _, err := cs.Append(ctx, &contextv1.AppendRequest{ContextId: "log", RequestId: fmt.Sprint("req-", i),
			Entries: []*contextv1.Entry{{Role: "user", Content: &contextv1.Entry_Text{Text: fmt.Sprint(i)}}}}); err != nil {
			t.Fatalf("append %d across a leader change: %v", i, err)
		}
	}
	rd, err := cs.Read(ctx, &contextv1.ReadRequest{ContextId: "log", Start: &contextv1.ReadRequest_FromSeq{FromSeq: 1}, MaxEntries: 1000})
	if err != nil {
		t.Fatal(err)
	}
	if len(rd.GetEntries()) != n {
		t.Fatalf("%d entries after %d appends", len(rd.GetEntries()), n)
	}
	for i, e := range rd.GetEntries() {
		if e.GetText() != fmt.Sprint(i) {
			t.Fatalf("entry %d is %q", i, e.GetText())
		}
	}
}

// transfer asks the cell's current leader to hand leadership over.
func transfer(ctx context.Context, nodes []*cells.Node) error {
	for _, n := range nodes {
		if n.Store().IsLeader() {
			_, err := n.Store().TransferLeadership(ctx, "")
			return err
		}
	}
	return errors.New("no leader")
}

// etcd stopped → routing continues; a router restarted while etcd is
// still down routes from its snapshot. (Writes stop once the cell's
// authority lease lapses without etcd — docs/design.md §8 — so the router's static
// stability is checked with STALE reads.)
func TestStaticStability(t *testing.T) {
	p := newPlatform(t, &cpv1.CreateTenantRequest{Id: "acme"})
	ctx := p.as(testutil.Context(t, 60*time.Second), "acme")
	cs := contextv1.NewContextServiceClient(dial(t, p.router.GRPCAddr()))
	if _, err := cs.CreateContext(ctx, &contextv1.CreateContextRequest{ContextId: "chat"}); err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		if _, err := cs.Append(ctx, &contextv1.AppendRequest{ContextId: "chat", RequestId: fmt.Sprint("up-", i),
			Entries: []*contextv1.Entry{{Role: "user", Content: &contextv1.Entry_Text{Text: "before etcd went down"}}}}); err != nil {
			t.Fatalf("append %d: %v", i, err)
		}
	}
	// The snapshot is written within its interval of the last change.
	testutil.Eventually(t, 10*time.Second, func() error {
		if p.router.Table().Len() == 0 {
			return errors.New("empty table")
		}
		return nil
	})
	_ = p.etcd.Close() // the whole control plane's store is gone
	stale := metadata.AppendToOutgoingContext(ctx, forward.ConsistencyKey, forward.ConsistencyStale)
	for i := range 10 {
		rd, err := cs.Read(stale, &contextv1.ReadRequest{ContextId: "chat", Start: &contextv1.ReadRequest_Tail{Tail: 100},
			ReadOptions: &contextv1.ReadOptions{Consistency: contextv1.Consistency_CONSISTENCY_STALE}})
		// A STALE read may be served by a follower a few entries behind
		// (the last append is acknowledged by a quorum, not by every
		// member): it must answer, with a prefix of the 10.
		if err != nil || len(rd.GetEntries()) == 0 || len(rd.GetEntries()) > 10 {
			t.Fatalf("read %d with etcd down: %d entries, %v", i, len(rd.GetEntries()), err)
		}
	}
	if err := p.router.Close(); err != nil {
		t.Fatal(err)
	}
	restarted := p.startRouter(t)
	if !restarted.Table().Loaded() {
		t.Fatal("restarted router did not load its snapshot")
	}
	cs2 := contextv1.NewContextServiceClient(dial(t, restarted.GRPCAddr()))
	rd, err := cs2.Read(stale, &contextv1.ReadRequest{ContextId: "chat", Start: &contextv1.ReadRequest_Tail{Tail: 100},
		ReadOptions: &contextv1.ReadOptions{Consistency: contextv1.Consistency_CONSISTENCY_STALE}})
	if err != nil || len(rd.GetEntries()) == 0 || len(rd.GetEntries()) > 10 {
		t.Fatalf("read through a router restarted with etcd down: %d entries, %v", len(rd.GetEntries()), err)
	}
}

// A placement changed in etcd (as a move would) is followed by requests
// within the propagation bound.
func TestPlacementChangeFollowed(t *testing.T) {
	p := newPlatform(t, &cpv1.CreateTenantRequest{Id: "acme"})
	ctx := testutil.Context(t, 90*time.Second)
	nodes2 := p.env.CreateCell(t, "us-east", "c2", 1)
	// The new cell owns the tenant at epoch 2; the old one is fenced.
	cell2 := cellv1.NewCellServiceClient(dial(t, nodes2[0].GRPCAddr()))
	if _, err := cell2.SetTenant(ctx, &cellv1.SetTenantRequest{Tenant: "acme", Role: cellv1.Role_ROLE_OWNER, Epoch: 2}); err != nil {
		t.Fatal(err)
	}
	cell1 := cellv1.NewCellServiceClient(dial(t, p.nodes[0].GRPCAddr()))
	if _, err := cell1.SetTenant(ctx, &cellv1.SetTenantRequest{Tenant: "acme", Role: cellv1.Role_ROLE_FENCED, Epoch: 2}); err != nil {
		t.Fatal(err)
	}
	cs := contextv1.NewContextServiceClient(dial(t, p.router.GRPCAddr()))
	actx := p.as(ctx, "acme")

	// Traffic runs while the placement flips.
	var mu sync.Mutex
	var failures []error
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			_, err := cs.CreateContext(actx, &contextv1.CreateContextRequest{ContextId: fmt.Sprint("c-", i), RequestId: fmt.Sprint("rq-", i)})
			if err != nil {
				mu.Lock()
				failures = append(failures, err)
				mu.Unlock()
			}
		}
	}()
	st := p.env.Store(t)
	start := time.Now()
	tn, v, err := catalog.GetTenant(ctx, st, "acme")
	if err != nil {
		t.Fatal(err)
	}
	tn.Cell, tn.Epoch = "c2", 2
	if _, err := st.Update(ctx, topo.TenantKey("acme"), catalog.Encode(tn), v); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 5*time.Second, func() error {
		r, ok := p.router.Table().Lookup("acme")
		if !ok || r.Cell != "c2" {
			return fmt.Errorf("route %+v", r)
		}
		return nil
	})
	t.Logf("router followed the placement in %v", time.Since(start).Round(time.Millisecond))
	close(stop)
	wg.Wait()
	// After the flip, a write lands in c2.
	if _, err := cs.CreateContext(actx, &contextv1.CreateContextRequest{ContextId: "after"}); err != nil {
		t.Fatal(err)
	}
	if _, err := contextv1.NewContextServiceClient(dial(t, nodes2[0].GRPCAddr())).GetContext(
		metadata.AppendToOutgoingContext(ctx, "x-cellplane-tenant", "acme"), &contextv1.GetContextRequest{ContextId: "after"}); err != nil {
		t.Fatalf("the write after the flip is not in c2: %v", err)
	}
	// Calls during the flip either succeeded or got a retryable answer
	// (an epoch the router had not seen yet is refreshed and retried once).
	for _, err := range failures {
		r := cperr.ReasonOf(rpcerr.FromStatus(err))
		if !slices.Contains([]cperr.Reason{cperr.WrongCell, cperr.StaleEpoch, cperr.CellUnavailable}, r) {
			t.Errorf("call during the flip failed with %v", err)
		}
	}
}

// A tenant flooding past its limit is refused at the router with
// RESOURCE_EXHAUSTED + RetryInfo; another tenant keeps being served.
func TestRateLimitIsolation(t *testing.T) {
	p := newPlatform(t,
		&cpv1.CreateTenantRequest{Id: "flood", Limits: &cpv1.TenantLimits{Rate: 20, Burst: 20}},
		// The quiet tenant calls back to back, which on a fast machine is
		// more than the default 1000/s: give it room, so that only the
		// flood meets a limit.
		&cpv1.CreateTenantRequest{Id: "quiet", Limits: &cpv1.TenantLimits{Rate: 1e6, Burst: 1e6}})
	conn := dial(t, p.router.GRPCAddr())
	cs := contextv1.NewContextServiceClient(conn)
	ctx := testutil.Context(t, 90*time.Second)
	fctx, qctx := p.as(ctx, "flood"), p.as(ctx, "quiet")
	if _, err := cs.CreateContext(qctx, &contextv1.CreateContextRequest{ContextId: "q"}); err != nil {
		t.Fatal(err)
	}

	// The flood: 100 calls/s (five times its limit), open loop — it does not
	// slow down when refused. It is switched on and off in alternating
	// windows of the quiet tenant's calls, so that background noise on a
	// shared machine hits both sides alike.
	p99 := func(l []time.Duration) time.Duration {
		slices.Sort(l)
		return l[len(l)*99/100]
	}
	var floodOn atomic.Bool
	var limited, served, badRefusals atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		var inner sync.WaitGroup
		defer inner.Wait()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			if !floodOn.Load() {
				continue
			}
			inner.Add(1)
			go func() {
				defer inner.Done()
				_, err := cs.GetContext(fctx, &contextv1.GetContextRequest{ContextId: "x"})
				if status.Code(err) != codes.ResourceExhausted {
					served.Add(1)
					return
				}
				limited.Add(1)
				var ce *cperr.Error
				if !errors.As(rpcerr.FromStatus(err), &ce) || ce.Reason != cperr.RateLimited || ce.RetryAfter <= 0 {
					badRefusals.Add(1)
				}
			}()
		}
	}()
	began := time.Now()
	// One measurement: the quiet tenant's p99 alone and during the flood.
	measure := func() (alone, flooded time.Duration) {
		var a, f []time.Duration
		for w := range 48 { // short windows: a burst of background noise lands on both sides
			floodOn.Store(w%2 == 1)
			for range 25 {
				start := time.Now()
				if _, err := cs.GetContext(qctx, &contextv1.GetContextRequest{ContextId: "q"}); err != nil {
					t.Fatalf("quiet tenant: %v", err)
				}
				if w%2 == 1 {
					f = append(f, time.Since(start))
				} else {
					a = append(a, time.Since(start))
				}
			}
		}
		floodOn.Store(false)
		return p99(a), p99(f)
	}
	// Three independent measurements; the medians are compared.
	var alones, floodeds []time.Duration
	for range 3 {
		a, f := measure()
		alones, floodeds = append(alones, a), append(floodeds, f)
	}
	close(stop)
	wg.Wait()
	slices.Sort(alones)
	slices.Sort(floodeds)
	elapsed := time.Since(began)
	a, f := alones[1], floodeds[1]
	t.Logf("quiet tenant p99 (median of 3 measurements): %v alone, %v during the flood (%.2fx); flood: %d served, %d refused",
		a, f, float64(f)/float64(a), served.Load(), limited.Load())
	// At most the burst plus what the bucket refilled meanwhile.
	if most := int64(20 + 20*elapsed.Seconds() + 2); limited.Load() == 0 || served.Load() > most {
		t.Fatalf("flood: %d served (at most %d allowed), %d refused: the limit (20/s, burst 20) did not hold", served.Load(), most, limited.Load())
	}
	if badRefusals.Load() > 0 {
		t.Fatalf("%d refusals lacked RATE_LIMITED + RetryInfo", badRefusals.Load())
	}
	// Isolation is functional above (the quiet tenant is never refused;
	// the flood is refused at the router). Its latency cost is measured by
	// the router benchmark, not asserted here: on a shared 2-core machine
	// the p99 of a few hundred millisecond calls swings by ±50% with the
	// neighbours. This guard only catches a gross regression (the flood's
	// refusals costing the quiet tenant as much as serving the flood would).
	if limit := 2*a + 2*time.Millisecond; f > limit && !raceEnabled {
		t.Fatalf("the flood raised the quiet tenant's p99 from %v to %v (bound %v)", a, f, limit)
	}
}
