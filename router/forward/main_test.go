package forward

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	"github.com/cellplane/cellplane/internal/dial"
	"github.com/cellplane/cellplane/internal/tenantmd"
	"github.com/cellplane/cellplane/internal/testutil"
	contextv1 "github.com/cellplane/cellplane/proto/cellplane/context/v1"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// testResolver is a Resolver over fixed targets; Refresh returns the
// refresh target (when set) and counts calls; set wakes WaitChange.
type testResolver struct {
	mu        sync.Mutex
	targets   map[string]Target
	refreshTo map[string]Target
	refreshes int
	changed   chan struct{} // closed and replaced by set
}

func newResolver() *testResolver {
	return &testResolver{targets: map[string]Target{}, refreshTo: map[string]Target{}, changed: make(chan struct{})}
}

func (r *testResolver) set(tenant string, t Target) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.targets[tenant] = t
	close(r.changed)
	r.changed = make(chan struct{})
}

func (r *testResolver) remove(tenant string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.targets, tenant)
	close(r.changed)
	r.changed = make(chan struct{})
}

func (r *testResolver) WaitChange(ctx context.Context, tenant string, seen Target) (Target, bool, error) {
	for {
		r.mu.Lock()
		t, ok := r.targets[tenant]
		ch := r.changed
		r.mu.Unlock()
		if !ok || t.differs(seen) {
			return t, ok, nil
		}
		select {
		case <-ctx.Done():
			return t, ok, ctx.Err()
		case <-ch:
		}
	}
}

func (r *testResolver) Resolve(tenant string) (Target, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	t, ok := r.targets[tenant]
	return t, ok
}

func (r *testResolver) Refresh(_ context.Context, tenant string) (Target, bool, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.refreshes++
	if t, ok := r.refreshTo[tenant]; ok {
		r.targets[tenant] = t
	}
	t, ok := r.targets[tenant]
	return t, ok, nil
}

func (r *testResolver) refreshCount() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.refreshes
}

// tenantFromMD is the tenantOf of the tests: the tenant metadata, as with
// --auth=none.
func tenantFromMD(ctx context.Context) (string, error) {
	tenant, _, err := tenantmd.FromIncoming(ctx)
	return tenant, err
}

// startRouter serves a forwarder on a loopback listener and returns a
// client of it.
func startRouter(t testing.TB, cfg Config, r Resolver) (contextv1.ContextServiceClient, *Forwarder, string) {
	t.Helper()
	cfg.Logger = testutil.Logger(t).With("component", "router")
	f, err := New(cfg, r, tenantFromMD)
	if err != nil {
		t.Fatal(err)
	}
	lis := testutil.Listen(t)
	srv := grpc.NewServer(ServerOption(), grpc.UnknownServiceHandler(f.Handler()))
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(lis)
	}()
	t.Cleanup(func() {
		srv.Stop()
		<-done
		if err := f.Close(); err != nil {
			t.Errorf("forwarder close: %v", err)
		}
	})
	return contextv1.NewContextServiceClient(mustDial(t, lis.Addr().String())), f, lis.Addr().String()
}

func mustDial(t testing.TB, addr string) *grpc.ClientConn {
	t.Helper()
	conn, err := dial.New(addr, dial.DefaultConfig())
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

func counterValue(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

// testConfig is DefaultConfig with holds short enough for tests.
func testConfig() Config {
	cfg := DefaultConfig()
	cfg.MovingHold = 300 * time.Millisecond
	cfg.FailoverHold = time.Second
	return cfg
}

// contextWithStale adds the STALE routing hint.
func contextWithStale(ctx context.Context) context.Context {
	return metadata.AppendToOutgoingContext(ctx, ConsistencyKey, ConsistencyStale)
}
