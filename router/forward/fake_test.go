package forward

import (
	"context"
	"errors"
	"net"
	"sync"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/cellplane/cellplane/internal/cperr"
	"github.com/cellplane/cellplane/internal/rpcerr"
	"github.com/cellplane/cellplane/internal/tenantmd"
	"github.com/cellplane/cellplane/internal/testutil"
	contextv1 "github.com/cellplane/cellplane/proto/cellplane/context/v1"
)

// fakeCell is a ContextService that records metadata, sets headers and
// trailers, and answers scripted errors.
type fakeCell struct {
	contextv1.UnimplementedContextServiceServer
	addr string

	mu     sync.Mutex
	md     []metadata.MD
	errs   []error // returned by Append, in order, before succeeding
	always error   // returned by GetContext every time
	onErr  func()  // run by Append before it returns one of errs
}

func startFake(t *testing.T) *fakeCell {
	t.Helper()
	fc := &fakeCell{}
	lis := testutil.Listen(t)
	fc.addr = lis.Addr().String()
	srv := grpc.NewServer(grpc.ChainUnaryInterceptor(rpcerr.UnaryServerInterceptor()), grpc.ChainStreamInterceptor(rpcerr.StreamServerInterceptor()))
	contextv1.RegisterContextServiceServer(srv, fc)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(lis)
	}()
	t.Cleanup(func() {
		srv.Stop()
		<-done
	})
	return fc
}

func (fc *fakeCell) record(ctx context.Context) {
	md, _ := metadata.FromIncomingContext(ctx)
	fc.mu.Lock()
	defer fc.mu.Unlock()
	fc.md = append(fc.md, md)
}

func (fc *fakeCell) calls() []metadata.MD {
	fc.mu.Lock()
	defer fc.mu.Unlock()
	return append([]metadata.MD(nil), fc.md...)
}

func (fc *fakeCell) Append(ctx context.Context, req *contextv1.AppendRequest) (*contextv1.AppendResponse, error) {
	fc.record(ctx)
	_ = grpc.SetHeader(ctx, metadata.Pairs("x-backend-header", "h1"))
	_ = grpc.SetTrailer(ctx, metadata.Pairs("x-backend-trailer", "t1"))
	fc.mu.Lock()
	var err error
	if len(fc.errs) > 0 {
		err, fc.errs = fc.errs[0], fc.errs[1:]
	}
	hook := fc.onErr
	fc.mu.Unlock()
	if err != nil {
		if hook != nil {
			hook()
		}
		return nil, err
	}
	return &contextv1.AppendResponse{FirstSeq: 7, LastSeq: uint64(6 + len(req.GetEntries()))}, nil
}

func (fc *fakeCell) GetContext(ctx context.Context, req *contextv1.GetContextRequest) (*contextv1.GetContextResponse, error) {
	fc.record(ctx)
	_ = grpc.SetTrailer(ctx, metadata.Pairs("x-backend-trailer", "on-error"))
	fc.mu.Lock()
	err := fc.always
	fc.mu.Unlock()
	if err != nil {
		return nil, err
	}
	return &contextv1.GetContextResponse{Context: &contextv1.Context{ContextId: req.GetContextId()}}, nil
}

// Read blocks until the call ends: a call that never answers.
func (fc *fakeCell) Read(ctx context.Context, _ *contextv1.ReadRequest) (*contextv1.ReadResponse, error) {
	fc.record(ctx)
	<-ctx.Done()
	return nil, ctx.Err()
}

// deadAddr is a loopback address nothing listens on.
func deadAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

func errorInfo(t *testing.T, err error) *errdetails.ErrorInfo {
	t.Helper()
	for _, d := range status.Convert(err).Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok {
			return info
		}
	}
	t.Fatalf("%v carries no ErrorInfo", err)
	return nil
}

func TestForwardFake(t *testing.T) {
	ctx := testutil.Context(t, 20*time.Second)
	fc := startFake(t)
	res := newResolver()
	res.set("acme", Target{Cell: "c1", Epoch: 4, LeaderAddr: fc.addr, Members: []string{fc.addr}})
	client, fwd, raddr := startRouter(t, testConfig(), res)
	tctx := tenantmd.Outgoing(ctx, "acme", 0)

	t.Run("metadata, headers and trailers", func(t *testing.T) {
		callCtx := metadata.AppendToOutgoingContext(tctx, "authorization", "Bearer secret", "x-api-key", "k", "x-custom", "kept", tenantmd.EpochKey, "99")
		var hdr, trl metadata.MD
		resp, err := client.Append(callCtx, &contextv1.AppendRequest{ContextId: "c", RequestId: "r1",
			Entries: []*contextv1.Entry{{Role: "user", Content: &contextv1.Entry_Text{Text: "hi"}}}}, grpc.Header(&hdr), grpc.Trailer(&trl))
		if err != nil {
			t.Fatal(err)
		}
		if resp.GetFirstSeq() != 7 || resp.GetLastSeq() != 7 {
			t.Fatalf("Append = %v", resp)
		}
		if got := hdr.Get("x-backend-header"); len(got) != 1 || got[0] != "h1" {
			t.Errorf("header = %v", hdr)
		}
		if got := trl.Get("x-backend-trailer"); len(got) != 1 || got[0] != "t1" {
			t.Errorf("trailer = %v", trl)
		}
		calls := fc.calls()
		md := calls[len(calls)-1]
		for k, want := range map[string]string{"x-custom": "kept", tenantmd.TenantKey: "acme", tenantmd.EpochKey: "4", tenantmd.NoForwardKey: "true"} {
			if got := md.Get(k); len(got) != 1 || got[0] != want {
				t.Errorf("backend metadata %s = %v, want [%s]", k, got, want)
			}
		}
		for _, k := range []string{"authorization", "x-api-key"} {
			if got := md.Get(k); len(got) != 0 {
				t.Errorf("backend got %s = %v; credentials must not be forwarded", k, got)
			}
		}
	})

	t.Run("error details and trailers survive", func(t *testing.T) {
		fc.mu.Lock()
		fc.always = cperr.New(cperr.ContextNotFound, "context %q not found", "nope").With("context", "nope")
		fc.mu.Unlock()
		t.Cleanup(func() { fc.mu.Lock(); fc.always = nil; fc.mu.Unlock() })
		var trl metadata.MD
		_, err := client.GetContext(tctx, &contextv1.GetContextRequest{ContextId: "nope"}, grpc.Trailer(&trl))
		if status.Code(err) != codes.NotFound {
			t.Fatalf("GetContext = %v, want NOT_FOUND", err)
		}
		info := errorInfo(t, err)
		if info.GetReason() != string(cperr.ContextNotFound) || info.GetMetadata()["context"] != "nope" || info.GetDomain() != rpcerr.Domain {
			t.Fatalf("ErrorInfo = %v", info)
		}
		if got := trl.Get("x-backend-trailer"); len(got) != 1 || got[0] != "on-error" {
			t.Errorf("trailer on error = %v", trl)
		}
	})

	t.Run("unknown tenant", func(t *testing.T) {
		_, err := client.GetContext(tenantmd.Outgoing(ctx, "nobody", 0), &contextv1.GetContextRequest{ContextId: "c"})
		if !errors.Is(rpcerr.FromStatus(err), cperr.ErrTenantNotFound) || status.Code(err) != codes.NotFound {
			t.Fatalf("unknown tenant: %v, want NOT_FOUND TENANT_NOT_FOUND", err)
		}
	})

	t.Run("tenantOf error goes back as is", func(t *testing.T) {
		_, err := client.GetContext(ctx, &contextv1.GetContextRequest{ContextId: "c"})
		if status.Code(err) != codes.InvalidArgument || !errors.Is(rpcerr.FromStatus(err), cperr.ErrInvalidArgument) {
			t.Fatalf("no tenant: %v, want INVALID_ARGUMENT", err)
		}
	})

	t.Run("unknown service is UNIMPLEMENTED", func(t *testing.T) {
		err := mustDial(t, raddr).Invoke(tctx, "/cellplane.other.v1.Other/Do", &contextv1.GetContextRequest{}, &contextv1.GetContextResponse{})
		if status.Code(err) != codes.Unimplemented {
			t.Fatalf("unknown service: %v, want UNIMPLEMENTED", err)
		}
	})

	t.Run("deadline propagates", func(t *testing.T) {
		dctx, cancel := context.WithTimeout(tctx, 300*time.Millisecond)
		defer cancel()
		_, err := client.Read(dctx, &contextv1.ReadRequest{ContextId: "c"})
		if status.Code(err) != codes.DeadlineExceeded {
			t.Fatalf("blocked Read: %v, want DEADLINE_EXCEEDED", err)
		}
	})

	t.Run("TENANT_MOVING is held then UNAVAILABLE with RetryInfo", func(t *testing.T) {
		moving := cperr.New(cperr.TenantMoving, "moving").WithRetryAfter(100 * time.Millisecond)
		fc.mu.Lock()
		fc.errs = []error{moving, moving}
		fc.mu.Unlock()
		if _, err := client.Append(tctx, &contextv1.AppendRequest{ContextId: "c", RequestId: "r-moving-1"}); err != nil {
			t.Fatalf("Append after a short move: %v", err)
		}
		fc.mu.Lock()
		for range 1000 {
			fc.errs = append(fc.errs, moving)
		}
		fc.mu.Unlock()
		t.Cleanup(func() { fc.mu.Lock(); fc.errs = nil; fc.mu.Unlock() })
		start := time.Now()
		_, err := client.Append(tctx, &contextv1.AppendRequest{ContextId: "c", RequestId: "r-moving-2"})
		if status.Code(err) != codes.Unavailable || !errors.Is(rpcerr.FromStatus(err), cperr.ErrTenantMoving) {
			t.Fatalf("Append during a long move: %v, want UNAVAILABLE TENANT_MOVING", err)
		}
		if ce := rpcerr.FromStatus(err).(*cperr.Error); ce.RetryAfter <= 0 {
			t.Errorf("TENANT_MOVING without RetryInfo: %v", err)
		}
		if held := time.Since(start); held < 300*time.Millisecond {
			t.Errorf("held %s, want at least MovingHold", held)
		}
		if v := counterValue(t, fwd.m.retries.WithLabelValues(retryMoving)); v < 2 {
			t.Errorf("moving retries = %v", v)
		}
	})

	t.Run("dead member first, then the next", func(t *testing.T) {
		dead := deadAddr(t)
		res.set("beta", Target{Cell: "c1", Epoch: 1, LeaderAddr: dead, Members: []string{dead, fc.addr}})
		if _, err := client.Append(tenantmd.Outgoing(ctx, "beta", 0), &contextv1.AppendRequest{ContextId: "c", RequestId: "r-dead"}); err != nil {
			t.Fatalf("Append with a dead leader address first: %v", err)
		}
		if v := counterValue(t, fwd.m.retries.WithLabelValues(retryUnavailable)); v < 1 {
			t.Errorf("unavailable retries = %v", v)
		}
	})

	t.Run("every member dead is CELL_UNAVAILABLE", func(t *testing.T) {
		dead := deadAddr(t)
		res.set("gamma", Target{Cell: "c2", Epoch: 1, LeaderAddr: dead, Members: []string{dead}})
		dctx, cancel := context.WithTimeout(tenantmd.Outgoing(ctx, "gamma", 0), 10*time.Second)
		defer cancel()
		_, err := client.GetContext(dctx, &contextv1.GetContextRequest{ContextId: "c"})
		if status.Code(err) != codes.Unavailable || !errors.Is(rpcerr.FromStatus(err), cperr.ErrCellUnavailable) {
			t.Fatalf("all dead: %v, want UNAVAILABLE CELL_UNAVAILABLE", err)
		}
		if ce := rpcerr.FromStatus(err).(*cperr.Error); ce.RetryAfter <= 0 {
			t.Errorf("CELL_UNAVAILABLE without RetryInfo: %v", err)
		}
	})
}

// TestHoldFake covers the hold's branches against a scripted cell.
func TestHoldFake(t *testing.T) {
	ctx := testutil.Context(t, 20*time.Second)
	fc := startFake(t)
	res := newResolver()
	cfg := testConfig()
	cfg.MovingHold = 5 * time.Second
	client, fwd, _ := startRouter(t, cfg, res)
	base := Target{Cell: "c1", Epoch: 4, LeaderAddr: fc.addr, Members: []string{fc.addr}}

	t.Run("TENANT_MOVING while the route says cutting over: held until the flip", func(t *testing.T) {
		res.set("acme", base)
		cutting := base
		cutting.CuttingOver = true
		fc.mu.Lock()
		fc.errs = []error{cperr.New(cperr.TenantMoving, "moving")}
		// The table learns of the cutover while the cell answers.
		fc.onErr = func() { res.set("acme", cutting) }
		fc.mu.Unlock()
		t.Cleanup(func() { fc.mu.Lock(); fc.onErr = nil; fc.mu.Unlock() })
		refused := fwd.m.held.WithLabelValues(holdRefused)
		before := counterValue(t, refused)
		errc := make(chan error, 1)
		go func() {
			_, err := client.Append(tenantmd.Outgoing(ctx, "acme", 0), &contextv1.AppendRequest{ContextId: "c", RequestId: "r-moving-cutover"})
			errc <- err
		}()
		waitCounter(t, "calls held after TENANT_MOVING", refused, before)
		flipped := base
		flipped.Epoch = 5
		res.set("acme", flipped)
		if err := <-errc; err != nil {
			t.Fatalf("Append held across a cutover: %v", err)
		}
		calls := fc.calls()
		if got := calls[len(calls)-1].Get(tenantmd.EpochKey); len(got) != 1 || got[0] != "5" {
			t.Errorf("retried at epoch %v, want the new placement's 5", got)
		}
	})

	t.Run("tenant deleted during the hold is NOT_FOUND", func(t *testing.T) {
		cutting := base
		cutting.CuttingOver = true
		res.set("gone", cutting)
		held := fwd.m.held.WithLabelValues(holdRoute)
		before := counterValue(t, held)
		errc := make(chan error, 1)
		go func() {
			_, err := client.GetContext(tenantmd.Outgoing(ctx, "gone", 0), &contextv1.GetContextRequest{ContextId: "c"})
			errc <- err
		}()
		waitCounter(t, "held calls", held, before)
		res.remove("gone")
		if err := <-errc; status.Code(err) != codes.NotFound || !errors.Is(rpcerr.FromStatus(err), cperr.ErrTenantNotFound) {
			t.Fatalf("held call of a deleted tenant: %v, want NOT_FOUND TENANT_NOT_FOUND", err)
		}
	})

	t.Run("a route change that still cuts over keeps holding", func(t *testing.T) {
		cutting := base
		cutting.CuttingOver = true
		res.set("beta", cutting)
		held := fwd.m.held.WithLabelValues(holdRoute)
		before := counterValue(t, held)
		errc := make(chan error, 1)
		go func() {
			_, err := client.Append(tenantmd.Outgoing(ctx, "beta", 0), &contextv1.AppendRequest{ContextId: "c", RequestId: "r-beta"})
			errc <- err
		}()
		waitCounter(t, "held calls", held, before)
		bumped := cutting
		bumped.Epoch = 5 // an emergency promotion bumps the epoch first
		res.set("beta", bumped)
		waitCounter(t, "held calls", held, before+1)
		select {
		case err := <-errc:
			t.Fatalf("call released while the tenant still cuts over: %v", err)
		default:
		}
		flipped := base
		flipped.Epoch = 6
		res.set("beta", flipped)
		if err := <-errc; err != nil {
			t.Fatalf("Append after the flip: %v", err)
		}
	})
}
