package client

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/cellplane/cellplane/internal/cperr"
	"github.com/cellplane/cellplane/internal/rpcerr"
	"github.com/cellplane/cellplane/internal/testutil"
	contextv1 "github.com/cellplane/cellplane/proto/cellplane/context/v1"
	routerv1 "github.com/cellplane/cellplane/proto/cellplane/router/v1"
)

// fakeCell answers Append with its error (nil: success) and counts calls.
type fakeCell struct {
	contextv1.UnimplementedContextServiceServer
	addr  string
	calls atomic.Int64

	errMu sync.Mutex
	err   error
}

func (fc *fakeCell) setErr(err error) {
	fc.errMu.Lock()
	defer fc.errMu.Unlock()
	fc.err = err
}

func (fc *fakeCell) Append(context.Context, *contextv1.AppendRequest) (*contextv1.AppendResponse, error) {
	fc.calls.Add(1)
	fc.errMu.Lock()
	defer fc.errMu.Unlock()
	if fc.err != nil {
		return nil, fc.err
	}
	return &contextv1.AppendResponse{FirstSeq: 1, LastSeq: 1}, nil
}

// fakeRouter answers Lookup with a route the test changes, and serves
// ContextService (calls through the router) with a fakeCell.
type fakeRouter struct {
	routerv1.UnimplementedRouterServiceServer
	fakeCell
	mu      sync.Mutex
	route   *routerv1.LookupResponse
	lookups atomic.Int64
}

func (fr *fakeRouter) set(cell, addr string, epoch uint64, cuttingOver bool) {
	fr.mu.Lock()
	defer fr.mu.Unlock()
	fr.route = &routerv1.LookupResponse{Tenant: "acme", Cell: cell, Epoch: epoch, CuttingOver: cuttingOver,
		Members: []*routerv1.Member{{NodeId: cell + "-n1", GrpcAddr: addr, Leader: true}}}
}

func (fr *fakeRouter) Lookup(context.Context, *routerv1.LookupRequest) (*routerv1.LookupResponse, error) {
	fr.lookups.Add(1)
	fr.mu.Lock()
	defer fr.mu.Unlock()
	return fr.route, nil
}

func serveFake(t *testing.T, register func(*grpc.Server)) string {
	t.Helper()
	lis := testutil.Listen(t)
	srv := grpc.NewServer(grpc.ChainUnaryInterceptor(rpcerr.UnaryServerInterceptor()))
	register(srv)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(lis)
	}()
	t.Cleanup(func() {
		srv.Stop()
		<-done
	})
	return lis.Addr().String()
}

// movingEnv is a fake router and two fake cells: a (the fenced old
// owner, WRONG_CELL) and b (the new owner).
type movingEnv struct {
	router *fakeRouter
	a, b   *fakeCell
	client *Client
}

func newMovingEnv(t *testing.T, cfg Config) *movingEnv {
	t.Helper()
	e := &movingEnv{
		router: &fakeRouter{},
		a:      &fakeCell{err: cperr.New(cperr.WrongCell, "tenant is not owned by this cell").With(cperr.MetaRole, "ROLE_FENCED")},
		b:      &fakeCell{},
	}
	e.a.addr = serveFake(t, func(s *grpc.Server) { contextv1.RegisterContextServiceServer(s, e.a) })
	e.b.addr = serveFake(t, func(s *grpc.Server) { contextv1.RegisterContextServiceServer(s, e.b) })
	routerAddr := serveFake(t, func(s *grpc.Server) {
		routerv1.RegisterRouterServiceServer(s, e.router)
		contextv1.RegisterContextServiceServer(s, &e.router.fakeCell)
	})
	e.router.set("a", e.a.addr, 1, false)
	cfg.Router, cfg.Tenant, cfg.Logger = routerAddr, "acme", testutil.Logger(t)
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	e.client = c
	return e
}

func (e *movingEnv) appendOne(ctx context.Context) error {
	_, err := e.client.Context().Append(ctx, &contextv1.AppendRequest{ContextId: "c"})
	return err
}

func TestMovingTenant(t *testing.T) {
	t.Run("WRONG_CELL, then the route says cutting over: the call goes through the router", func(t *testing.T) {
		cfg := DefaultConfig()
		cfg.MaxAttempts = 1 // the cutover must not need spare attempts
		e := newMovingEnv(t, cfg)
		ctx := testutil.Context(t, 10*time.Second)
		if _, err := e.client.Lookup(ctx); err != nil { // cache the route to a
			t.Fatal(err)
		}
		e.router.set("a", e.a.addr, 1, true)
		if err := e.appendOne(ctx); err != nil {
			t.Fatalf("Append during a cutover: %v", err)
		}
		if e.a.calls.Load() != 1 || e.router.calls.Load() != 1 || e.b.calls.Load() != 0 {
			t.Errorf("calls: a %d, router %d, b %d; want the refusal from a, then the router", e.a.calls.Load(), e.router.calls.Load(), e.b.calls.Load())
		}
	})

	t.Run("WRONG_CELL while the router lags: looked up again until the flip", func(t *testing.T) {
		cfg := DefaultConfig()
		cfg.MaxAttempts = 1
		e := newMovingEnv(t, cfg)
		ctx := testutil.Context(t, 10*time.Second)
		errc := make(chan error, 1)
		go func() { errc <- e.appendOne(ctx) }()
		// The client keeps looking the tenant up (the same route) ...
		testutil.Eventually(t, 5*time.Second, func() error {
			if n := e.router.lookups.Load(); n < 3 {
				return errors.New("waiting for repeated lookups")
			}
			return nil
		})
		// ... until the placement flips to b.
		e.router.set("b", e.b.addr, 2, false)
		if err := <-errc; err != nil {
			t.Fatalf("Append across the flip: %v", err)
		}
		if e.b.calls.Load() != 1 || e.router.calls.Load() != 0 {
			t.Errorf("calls: b %d, router %d; want the retry directly on b", e.b.calls.Load(), e.router.calls.Load())
		}
	})

	t.Run("the route never changes: WRONG_CELL after MovingWait", func(t *testing.T) {
		cfg := DefaultConfig()
		cfg.MovingWait = 200 * time.Millisecond
		e := newMovingEnv(t, cfg)
		ctx := testutil.Context(t, 10*time.Second)
		start := time.Now()
		err := e.appendOne(ctx)
		if !errors.Is(rpcerr.FromStatus(err), cperr.ErrWrongCell) {
			t.Fatalf("Append to a tenant that never flips: %v, want WRONG_CELL", err)
		}
		if took := time.Since(start); took > 5*cfg.MovingWait {
			t.Errorf("gave up after %s; MovingWait is %s", took, cfg.MovingWait)
		}
		if n := e.router.lookups.Load(); n < 2 {
			t.Errorf("%d lookups: the client did not look the tenant up again", n)
		}
	})

	t.Run("the caller's deadline ends the wait", func(t *testing.T) {
		e := newMovingEnv(t, DefaultConfig()) // MovingWait 5 s
		ctx, cancel := context.WithTimeout(testutil.Context(t, 10*time.Second), 150*time.Millisecond)
		defer cancel()
		start := time.Now()
		if err := e.appendOne(ctx); err == nil {
			t.Fatal("Append succeeded against a fenced owner")
		}
		if took := time.Since(start); took > time.Second {
			t.Errorf("returned after %s, past the 150ms deadline", took)
		}
	})

	t.Run("TENANT_MOVING from the router (its hold ran out): waits for the flip", func(t *testing.T) {
		cfg := DefaultConfig()
		cfg.Direct = false
		e := newMovingEnv(t, cfg)
		e.router.setErr(cperr.New(cperr.TenantMoving, "moving").WithRetryAfter(time.Second))
		e.router.set("a", e.a.addr, 1, true)
		ctx := testutil.Context(t, 10*time.Second)
		errc := make(chan error, 1)
		go func() { errc <- e.appendOne(ctx) }()
		testutil.Eventually(t, 5*time.Second, func() error {
			if n := e.router.calls.Load(); n < 2 {
				return errors.New("waiting for retries through the router")
			}
			return nil
		})
		e.router.setErr(nil)
		if err := <-errc; err != nil {
			t.Fatalf("Append through the router after a move: %v", err)
		}
	})
}

func TestConfigDefaultsFilled(t *testing.T) {
	c := Config{Router: "r", Tenant: "t", MaxAttempts: 1, RouteTTL: time.Second}
	if err := c.Validate(); err != nil {
		t.Fatalf("zero moving-wait settings must mean defaults: %v", err)
	}
	d := c.withDefaults()
	if d.MovingWait != DefaultMovingWait || d.RetryBackoff != DefaultRetryBackoff || d.MaxRetryBackoff != DefaultMaxRetryBackoff {
		t.Errorf("withDefaults = %+v", d)
	}
	for name, mut := range map[string]func(*Config){
		"negative wait":       func(c *Config) { c.MovingWait = -1 },
		"negative backoff":    func(c *Config) { c.RetryBackoff = -1 },
		"max below the first": func(c *Config) { c.RetryBackoff, c.MaxRetryBackoff = time.Second, time.Millisecond },
	} {
		bad := c
		mut(&bad)
		if bad.Validate() == nil {
			t.Errorf("%s: Validate passed", name)
		}
	}
}
