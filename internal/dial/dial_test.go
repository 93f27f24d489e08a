package dial_test

import (
	"context"
	"errors"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"

	"github.com/cellplane/cellplane/internal/dial"
	"github.com/cellplane/cellplane/internal/testutil"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestConfigValidate(t *testing.T) {
	noopUnary := func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		return invoker(ctx, method, req, reply, cc, opts...)
	}
	tests := []struct {
		name    string
		mutate  func(*dial.Config)
		wantErr string // "" means valid
	}{
		{name: "default", mutate: func(*dial.Config) {}},
		{name: "keepalive", mutate: func(c *dial.Config) {
			c.Keepalive = keepalive.ClientParameters{Time: 5 * time.Minute, Timeout: 20 * time.Second}
		}},
		{name: "service config", mutate: func(c *dial.Config) {
			c.ServiceConfig = `{"loadBalancingConfig":[{"round_robin":{}}]}`
		}},
		{name: "interceptor", mutate: func(c *dial.Config) { c.UnaryInterceptors = append(c.UnaryInterceptors, noopUnary) }},
		{name: "negative keepalive time", mutate: func(c *dial.Config) { c.Keepalive.Time = -time.Second }, wantErr: "Keepalive.Time"},
		{name: "negative keepalive timeout", mutate: func(c *dial.Config) { c.Keepalive.Timeout = -time.Second }, wantErr: "Keepalive.Timeout"},
		{name: "bad service config", mutate: func(c *dial.Config) { c.ServiceConfig = `{"loadBalancingConfig":` }, wantErr: "ServiceConfig"},
		{name: "nil unary interceptor", mutate: func(c *dial.Config) { c.UnaryInterceptors = []grpc.UnaryClientInterceptor{nil} }, wantErr: "UnaryInterceptors"},
		{name: "nil stream interceptor", mutate: func(c *dial.Config) { c.StreamInterceptors = []grpc.StreamClientInterceptor{nil} }, wantErr: "StreamInterceptors"},
		{name: "nil extra option", mutate: func(c *dial.Config) { c.ExtraOptions = []grpc.DialOption{nil} }, wantErr: "ExtraOptions"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := dial.DefaultConfig()
			tt.mutate(&c)
			err := c.Validate()
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("Validate() = %v, want nil", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Fatalf("Validate() = %v, want an error naming %s", err, tt.wantErr)
			}
		})
	}
}

func TestNewRejectsInvalidConfig(t *testing.T) {
	cfg := dial.Config{ServiceConfig: "not json"}
	if cc, err := dial.New("127.0.0.1:1", cfg); err == nil {
		_ = cc.Close()
		t.Fatal("New with an invalid Config succeeded")
	}
}

func TestWithDoesNotAlias(t *testing.T) {
	base := dial.Config{ExtraOptions: make([]grpc.DialOption, 1, 4)}
	base.ExtraOptions[0] = grpc.WithUserAgent("a")
	a := base.With(grpc.WithUserAgent("b"))
	b := base.With(grpc.WithUserAgent("c"))
	if len(base.ExtraOptions) != 1 || len(a.ExtraOptions) != 2 || len(b.ExtraOptions) != 2 {
		t.Fatalf("lengths base=%d a=%d b=%d, want 1 2 2", len(base.ExtraOptions), len(a.ExtraOptions), len(b.ExtraOptions))
	}
	if a.ExtraOptions[1] == b.ExtraOptions[1] {
		t.Fatal("two With calls on one Config share their backing array")
	}
}

// healthServer serves the standard health service on a loopback listener
// and returns its address.
func healthServer(t *testing.T) string {
	t.Helper()
	lis := testutil.Listen(t)
	srv := grpc.NewServer()
	healthpb.RegisterHealthServer(srv, health.NewServer())
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

func TestRoundTrip(t *testing.T) {
	addr := healthServer(t)
	var unary, stream int
	var mu sync.Mutex
	cfg := dial.DefaultConfig()
	cfg.Keepalive = keepalive.ClientParameters{Time: 5 * time.Minute, Timeout: 20 * time.Second}
	cfg.ServiceConfig = `{"loadBalancingConfig":[{"round_robin":{}}]}`
	cfg.UnaryInterceptors = []grpc.UnaryClientInterceptor{func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		mu.Lock()
		unary++
		mu.Unlock()
		return invoker(ctx, method, req, reply, cc, opts...)
	}}
	cfg.StreamInterceptors = []grpc.StreamClientInterceptor{func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
		mu.Lock()
		stream++
		mu.Unlock()
		return streamer(ctx, desc, cc, method, opts...)
	}}
	conn, err := dial.New(addr, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx := testutil.Context(t, 10*time.Second)
	hc := healthpb.NewHealthClient(conn)
	resp, err := hc.Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatalf("Check: %v", err)
	}
	if resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("status %v, want SERVING", resp.GetStatus())
	}
	wctx, cancel := context.WithCancel(ctx)
	w, err := hc.Watch(wctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatalf("Watch: %v", err)
	}
	if _, err := w.Recv(); err != nil {
		t.Fatalf("Watch.Recv: %v", err)
	}
	cancel()
	mu.Lock()
	defer mu.Unlock()
	if unary != 1 || stream != 1 {
		t.Fatalf("interceptors ran unary=%d stream=%d times, want 1 and 1", unary, stream)
	}
}

// An option in ExtraOptions comes last: here a context dialer that
// redirects every connection to the real server.
func TestExtraOptionsApplyLast(t *testing.T) {
	addr := healthServer(t)
	cfg := dial.DefaultConfig().With(grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "tcp", addr)
	}))
	conn, err := dial.New("passthrough:///nowhere.invalid:1", cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := healthpb.NewHealthClient(conn).Check(testutil.Context(t, 10*time.Second), &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatalf("Check through the extra dialer: %v", err)
	}
}

func TestPoolReusesAndCloses(t *testing.T) {
	addrA, addrB := healthServer(t), healthServer(t)
	p := dial.NewPool(dial.DefaultConfig())
	a1, err := p.Get(addrA)
	if err != nil {
		t.Fatal(err)
	}
	a2, err := p.Get(addrA)
	if err != nil {
		t.Fatal(err)
	}
	b, err := p.Get(addrB)
	if err != nil {
		t.Fatal(err)
	}
	if a1 != a2 {
		t.Fatal("two Gets of one target returned different connections")
	}
	if a1 == b {
		t.Fatal("two targets share a connection")
	}
	if _, err := healthpb.NewHealthClient(b).Check(testutil.Context(t, 10*time.Second), &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatalf("Check through the pool: %v", err)
	}
	if err := p.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	for _, cc := range []*grpc.ClientConn{a1, b} {
		if s := cc.GetState(); s != connectivity.Shutdown {
			t.Fatalf("after Close a connection is %v, want SHUTDOWN", s)
		}
	}
	if _, err := p.Get(addrA); !errors.Is(err, dial.ErrPoolClosed) {
		t.Fatalf("Get after Close = %v, want ErrPoolClosed", err)
	}
	if err := p.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

func TestPoolGetInvalidConfig(t *testing.T) {
	p := dial.NewPool(dial.Config{ServiceConfig: "{"})
	defer p.Close()
	if _, err := p.Get("127.0.0.1:1"); err == nil {
		t.Fatal("Get with an invalid Config succeeded")
	}
}

func TestPoolConcurrentGet(t *testing.T) {
	p := dial.NewPool(dial.DefaultConfig())
	defer p.Close()
	targets := []string{"127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"}
	const workers = 16
	got := make([][]*grpc.ClientConn, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for _, tg := range targets {
				cc, err := p.Get(tg)
				if err != nil {
					t.Error(err)
					return
				}
				got[w] = append(got[w], cc)
			}
		}()
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	for w := 1; w < workers; w++ {
		for i := range targets {
			if got[w][i] != got[0][i] {
				t.Fatalf("worker %d got another connection to %s than worker 0", w, targets[i])
			}
		}
	}
}
