package forward

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/cellplane/cellplane/cells"
	"github.com/cellplane/cellplane/cells/celltest"
	"github.com/cellplane/cellplane/controlplane/catalog"
	"github.com/cellplane/cellplane/controlplane/topo"
	"github.com/cellplane/cellplane/controlplane/topo/topotest"
	"github.com/cellplane/cellplane/internal/cperr"
	"github.com/cellplane/cellplane/internal/rpcerr"
	"github.com/cellplane/cellplane/internal/tenantmd"
	"github.com/cellplane/cellplane/internal/testutil"
	cellv1 "github.com/cellplane/cellplane/proto/cellplane/cell/v1"
	contextv1 "github.com/cellplane/cellplane/proto/cellplane/context/v1"
	cpv1 "github.com/cellplane/cellplane/proto/cellplane/controlplane/v1"
	"github.com/cellplane/cellplane/router/routing"
)

// tableResolver adapts a routing table to Resolver, as the router's
// wiring does (router/server.go; that package imports this one, so the
// adapter cannot be shared with these tests).
type tableResolver struct{ t *routing.Table }

func (r tableResolver) target(route routing.Route) Target {
	tg := Target{Cell: route.Cell, Epoch: route.Epoch, CuttingOver: route.CuttingOver}
	if c, ok := r.t.Cell(route.Cell); ok {
		tg.LeaderAddr, tg.Members = c.LeaderGRPC, c.MemberGRPC()
	}
	return tg
}

func (r tableResolver) Resolve(tenant string) (Target, bool) {
	route, ok := r.t.Lookup(tenant)
	return r.target(route), ok
}

func (r tableResolver) Refresh(ctx context.Context, tenant string) (Target, bool, error) {
	route, ok, err := r.t.Refresh(ctx, tenant)
	return r.target(route), ok, err
}

func (r tableResolver) WaitChange(ctx context.Context, tenant string, seen Target) (Target, bool, error) {
	route, ok, err := r.t.WaitChange(ctx, tenant, routing.Route{Cell: seen.Cell, Epoch: seen.Epoch, CuttingOver: seen.CuttingOver})
	return r.target(route), ok, err
}

// gatedStore holds back watch responses while paused, so that a test can
// let the router's table lag behind etcd.
type gatedStore struct {
	topo.Store
	mu   sync.Mutex
	open chan struct{} // closed while watches deliver
}

func newGatedStore(st topo.Store) *gatedStore {
	g := &gatedStore{Store: st, open: make(chan struct{})}
	close(g.open)
	return g
}

func (g *gatedStore) pause() {
	g.mu.Lock()
	defer g.mu.Unlock()
	select {
	case <-g.open:
		g.open = make(chan struct{})
	default:
	}
}

func (g *gatedStore) resume() {
	g.mu.Lock()
	defer g.mu.Unlock()
	select {
	case <-g.open:
	default:
		close(g.open)
	}
}

func (g *gatedStore) gate() <-chan struct{} {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.open
}

func (g *gatedStore) Watch(ctx context.Context, prefix string, from topo.Revision) <-chan topo.WatchResponse {
	ctx, cancel := context.WithCancel(ctx)
	in := g.Store.Watch(ctx, prefix, from)
	out := make(chan topo.WatchResponse)
	go func() {
		defer close(out)
		defer func() {
			cancel()
			for range in { // until the inner watch ends
			}
		}()
		for r := range in {
			select {
			case <-g.gate():
			case <-ctx.Done():
				return
			}
			select {
			case out <- r:
			case <-ctx.Done():
				return
			}
		}
	}()
	return out
}

// cutoverEnv is a real etcd, a routing table following it, and two real
// one-node cells "a" and "b" registered there.
type cutoverEnv struct {
	st    topo.Store
	gated *gatedStore
	table *routing.Table
	res   tableResolver
	cells map[string]*cells.Node
}

func newCutoverEnv(t *testing.T) *cutoverEnv {
	t.Helper()
	e := &cutoverEnv{st: topotest.NewEtcdStore(t), cells: map[string]*cells.Node{}}
	for _, id := range []string{"a", "b"} {
		n := celltest.StartCell(t, 1)[0]
		e.cells[id] = n
		e.put(t, topo.CellKey(id), &cpv1.Cell{Id: id, Region: "r1", State: cpv1.CellState_CELL_STATE_ACTIVE})
		e.put(t, topo.CellLeaderKey(id), &cpv1.CellLeader{NodeId: n.Info().GetNodeId(), GrpcAddr: n.GRPCAddr(), Term: 1})
		e.put(t, topo.CellNodeKey(id, n.Info().GetNodeId()), &cpv1.Node{Id: n.Info().GetNodeId(), GrpcAddr: n.GRPCAddr(), Role: cpv1.NodeRole_NODE_ROLE_MEMBER})
	}
	e.gated = newGatedStore(e.st)
	cfg := routing.DefaultConfig()
	cfg.Logger = testutil.Logger(t).With("component", "routing")
	tb, err := routing.Start(testutil.Context(t, time.Minute), e.gated, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tb.Close() })
	e.table, e.res = tb, tableResolver{tb}
	testutil.Eventually(t, 10*time.Second, func() error {
		if _, ok := tb.Cell("b"); !ok {
			return errors.New("cells not in the table yet")
		}
		return nil
	})
	return e
}

func (e *cutoverEnv) put(t *testing.T, key string, msg proto.Message) {
	t.Helper()
	if _, err := e.st.Txn(testutil.Context(t, 10*time.Second), nil, []topo.Op{topo.Put(key, catalog.Encode(msg))}); err != nil {
		t.Fatalf("put %s: %v", key, err)
	}
}

// place writes the tenant's placement record in one etcd write, as the
// controller's transactions do.
func (e *cutoverEnv) place(t *testing.T, tenant, cell string, epoch uint64, cuttingOver bool) {
	t.Helper()
	e.put(t, topo.TenantKey(tenant), &cpv1.Tenant{Id: tenant, Cell: cell, State: cpv1.TenantState_TENANT_STATE_ACTIVE, Epoch: epoch, CuttingOver: cuttingOver})
}

// setRole sets the tenant's role in a cell (CellService.SetTenant); a
// STANDBY's source is the other cell.
func (e *cutoverEnv) setRole(t *testing.T, cell, tenant string, role cellv1.Role, epoch uint64) {
	t.Helper()
	req := &cellv1.SetTenantRequest{Tenant: tenant, Role: role, Epoch: epoch, RequestId: fmt.Sprintf("%s-%s-%s-%d", cell, tenant, role, epoch)}
	if role == cellv1.Role_ROLE_STANDBY {
		req.SourceCell = map[string]string{"a": "b", "b": "a"}[cell]
	}
	_, err := cellv1.NewCellServiceClient(mustDial(t, e.cells[cell].GRPCAddr())).SetTenant(testutil.Context(t, 10*time.Second), req)
	if err != nil {
		t.Fatalf("SetTenant(%s, %s, %s, %d): %v", cell, tenant, role, epoch, err)
	}
}

// waitRoute polls until the table routes tenant to cell at epoch with the
// given cutover flag.
func (e *cutoverEnv) waitRoute(t *testing.T, tenant, cell string, epoch uint64, cuttingOver bool) {
	t.Helper()
	testutil.Eventually(t, 10*time.Second, func() error {
		r, ok := e.table.Lookup(tenant)
		if !ok || r.Cell != cell || r.Epoch != epoch || r.CuttingOver != cuttingOver {
			return fmt.Errorf("route %+v, %v; want %s@%d cutting over %v", r, ok, cell, epoch, cuttingOver)
		}
		return nil
	})
}

// getContext reads a context directly from a cell.
func (e *cutoverEnv) getContext(t *testing.T, cell, tenant, id string) error {
	t.Helper()
	ctx := tenantmd.Outgoing(testutil.Context(t, 10*time.Second), tenant, 0)
	_, err := contextv1.NewContextServiceClient(mustDial(t, e.cells[cell].GRPCAddr())).GetContext(ctx, &contextv1.GetContextRequest{ContextId: id})
	return err
}

func histogramCount(t *testing.T, o prometheus.Observer) uint64 {
	t.Helper()
	var m dto.Metric
	if err := o.(prometheus.Metric).Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetHistogram().GetSampleCount()
}

// waitCounter polls until c exceeds before.
func waitCounter(t *testing.T, what string, c prometheus.Counter, before float64) {
	t.Helper()
	testutil.Eventually(t, 10*time.Second, func() error {
		if v := counterValue(t, c); v <= before {
			return fmt.Errorf("%s = %v, want > %v", what, v, before)
		}
		return nil
	})
}

type callResult struct {
	err  error
	took time.Duration
}

// goCreate creates a context through the router in the background.
func goCreate(ctx context.Context, client contextv1.ContextServiceClient, tenant, id string) <-chan callResult {
	ch := make(chan callResult, 1)
	go func() {
		start := time.Now()
		_, err := client.CreateContext(tenantmd.Outgoing(ctx, tenant, 0), &contextv1.CreateContextRequest{ContextId: id, RequestId: "create-" + id})
		ch <- callResult{err, time.Since(start)}
	}()
	return ch
}

// TestCutoverHold runs the router's cutover hold against a real etcd, a
// real routing table and two real cells: a tenant moves from cell a
// (fenced at epoch 2) to cell b (standby, then owner at epoch 2) while
// calls come in.
func TestCutoverHold(t *testing.T) {
	if testing.Short() {
		t.Skip("starts etcd and two cells; skipped with -short")
	}
	e := newCutoverEnv(t)
	ctx := testutil.Context(t, 60*time.Second)
	cfg := testConfig()
	cfg.MovingHold = 5 * time.Second
	client, fwd, _ := startRouter(t, cfg, e.res)
	short := testConfig()
	short.MovingHold = 400 * time.Millisecond
	shortClient, shortFwd, _ := startRouter(t, short, e.res)
	// flipDelay is how long after a call is held the test flips the
	// placement (a delay of the flip, not a synchronisation).
	const flipDelay = 300 * time.Millisecond

	// own makes cell a the tenant's owner at epoch 1 (placement too) and
	// cell b its standby.
	own := func(t *testing.T, tenant string) {
		e.setRole(t, "a", tenant, cellv1.Role_ROLE_OWNER, 1)
		e.setRole(t, "b", tenant, cellv1.Role_ROLE_STANDBY, 1)
		e.place(t, tenant, "a", 1, false)
		e.waitRoute(t, tenant, "a", 1, false)
		if r := <-goCreate(ctx, client, tenant, "before"); r.err != nil {
			t.Fatalf("a call before the cutover: %v", r.err)
		}
	}
	// flip makes b the owner at epoch 2 and flips the placement to it,
	// clearing cutting_over in the same write.
	flip := func(t *testing.T, tenant string) {
		e.setRole(t, "b", tenant, cellv1.Role_ROLE_OWNER, 2)
		e.place(t, tenant, "b", 2, false)
	}

	t.Run("a call during the cutover is held and succeeds after the flip", func(t *testing.T) {
		const tenant = "held"
		own(t, tenant)
		e.place(t, tenant, "a", 1, true)
		e.waitRoute(t, tenant, "a", 1, true)
		e.setRole(t, "a", tenant, cellv1.Role_ROLE_FENCED, 2)

		held := fwd.m.held.WithLabelValues(holdRoute)
		released := fwd.m.holdDuration.WithLabelValues(holdReleased)
		heldBefore, releasedBefore := counterValue(t, held), histogramCount(t, released)
		call := goCreate(ctx, client, tenant, "during")
		waitCounter(t, "held calls", held, heldBefore)
		time.Sleep(flipDelay) // the cutover takes a while: delay the flip
		flip(t, tenant)

		r := <-call
		if r.err != nil {
			t.Fatalf("a call held across the cutover failed: %v", r.err)
		}
		if r.took < flipDelay || r.took > cfg.MovingHold {
			t.Errorf("the call took %s; want about the time until the flip (≥ %s, < the %s hold)", r.took, flipDelay, cfg.MovingHold)
		}
		if err := e.getContext(t, "b", tenant, "during"); err != nil {
			t.Errorf("the held call's write is not on the new owner: %v", err)
		}
		if n := histogramCount(t, released); n != releasedBefore+1 {
			t.Errorf("released holds = %d, want %d", n, releasedBefore+1)
		}
		if n := e.table.CuttingOver(); n != 0 {
			t.Errorf("table counts %d tenants cutting over after the flip", n)
		}
	})

	t.Run("a call whose hold expires is UNAVAILABLE TENANT_MOVING with RetryInfo", func(t *testing.T) {
		const tenant = "stuck"
		own(t, tenant)
		e.place(t, tenant, "a", 1, true)
		e.waitRoute(t, tenant, "a", 1, true)
		e.setRole(t, "a", tenant, cellv1.Role_ROLE_FENCED, 2)

		expired := shortFwd.m.holdDuration.WithLabelValues(holdExpired)
		before := histogramCount(t, expired)
		start := time.Now()
		_, err := shortClient.CreateContext(tenantmd.Outgoing(ctx, tenant, 0), &contextv1.CreateContextRequest{ContextId: "never", RequestId: "create-never"})
		took := time.Since(start)
		if status.Code(err) != codes.Unavailable || !errors.Is(rpcerr.FromStatus(err), cperr.ErrTenantMoving) {
			t.Fatalf("a call held past MovingHold: %v, want UNAVAILABLE TENANT_MOVING", err)
		}
		var ce *cperr.Error
		if !errors.As(rpcerr.FromStatus(err), &ce) || ce.RetryAfter <= 0 || ce.Metadata[cperr.MetaTenant] != tenant {
			t.Errorf("TENANT_MOVING without RetryInfo or tenant: %+v", ce)
		}
		if took < short.MovingHold {
			t.Errorf("failed after %s, before the %s hold", took, short.MovingHold)
		}
		if n := histogramCount(t, expired); n != before+1 {
			t.Errorf("expired holds = %d, want %d", n, before+1)
		}

		t.Run("the caller's deadline ends a hold first", func(t *testing.T) {
			dctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
			defer cancel()
			canceled := fwd.m.holdDuration.WithLabelValues(holdCanceled)
			before := histogramCount(t, canceled)
			start := time.Now()
			_, err := client.GetContext(tenantmd.Outgoing(dctx, tenant, 0), &contextv1.GetContextRequest{ContextId: "before"})
			if status.Code(err) != codes.DeadlineExceeded {
				t.Fatalf("a held call past its deadline: %v, want DEADLINE_EXCEEDED", err)
			}
			if took := time.Since(start); took > cfg.MovingHold/2 {
				t.Errorf("the call took %s: held past its deadline", took)
			}
			testutil.Eventually(t, 5*time.Second, func() error {
				if n := histogramCount(t, canceled); n != before+1 {
					return fmt.Errorf("canceled holds = %d, want %d", n, before+1)
				}
				return nil
			})
		})
	})

	t.Run("WRONG_CELL from the fenced owner is retried on the new owner after the flip", func(t *testing.T) {
		const tenant = "fenced"
		own(t, tenant)
		// The router's table lags: it has not seen cutting_over when the
		// call reaches the fenced old owner.
		e.gated.pause()
		defer e.gated.resume()
		e.place(t, tenant, "a", 1, true)
		e.setRole(t, "a", tenant, cellv1.Role_ROLE_FENCED, 2)
		if r, _ := e.table.Lookup(tenant); r.CuttingOver {
			t.Fatalf("the table saw the cutover through a paused watch: %+v", r)
		}

		refused := fwd.m.held.WithLabelValues(holdRefused)
		staleRetries := fwd.m.retries.WithLabelValues(retryStaleRoute)
		heldBefore, retriesBefore := counterValue(t, refused), counterValue(t, staleRetries)
		call := goCreate(ctx, client, tenant, "refused")
		waitCounter(t, "calls held after a refusal", refused, heldBefore)
		time.Sleep(flipDelay) // delay the flip
		flip(t, tenant)
		e.gated.resume()

		r := <-call
		if r.err != nil {
			t.Fatalf("a call refused by the fenced owner failed: %v", r.err)
		}
		if v := counterValue(t, staleRetries); v <= retriesBefore {
			t.Errorf("no WRONG_CELL retry counted (%v → %v)", retriesBefore, v)
		}
		if err := e.getContext(t, "b", tenant, "refused"); err != nil {
			t.Errorf("the retried write is not on the new owner: %v", err)
		}
	})
}
