package serve

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/cellplane/cellplane/internal/cperr"
	"github.com/cellplane/cellplane/internal/testutil"
)

// syncBuffer is a log sink the server's goroutines may write to.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// The chain's order shows in what a client and the log see: the server's
// own interceptor runs inside rpcerr (its cperr error becomes a status)
// and inside recovery (its panic becomes INTERNAL), and the call log and
// the metrics, outermost, see the final code.
func TestNewGRPCServerChain(t *testing.T) {
	tests := []struct {
		name  string
		extra grpc.UnaryServerInterceptor
		want  codes.Code
	}{
		{"handler answers", nil, codes.OK},
		{"own interceptor returns a cperr error", func(context.Context, any, *grpc.UnaryServerInfo, grpc.UnaryHandler) (any, error) {
			return nil, cperr.New(cperr.TenantNotFound, "no such tenant")
		}, codes.NotFound},
		{"own interceptor panics", func(context.Context, any, *grpc.UnaryServerInfo, grpc.UnaryHandler) (any, error) {
			panic("secret detail")
		}, codes.Internal},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var logs syncBuffer
			log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
			reg := prometheus.NewRegistry()
			cfg := GRPCConfig{Log: log, Metrics: reg}
			if tt.extra != nil {
				cfg.Unary = []grpc.UnaryServerInterceptor{tt.extra}
			}
			gs := NewGRPCServer(cfg, func(gs *grpc.Server) { healthpb.RegisterHealthServer(gs, health.NewServer()) })
			lis := testutil.Listen(t)
			var wg sync.WaitGroup
			Start(&wg, log, gs, lis, nil, nil)
			t.Cleanup(func() { Stop(gs, nil, time.Second); wg.Wait() })

			conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			_, err = healthpb.NewHealthClient(conn).Check(testutil.Context(t, 10*time.Second), &healthpb.HealthCheckRequest{})
			if got := status.Code(err); got != tt.want {
				t.Fatalf("code %v (%v), want %v", got, err, tt.want)
			}
			if strings.Contains(status.Convert(err).Message(), "secret") {
				t.Fatalf("the panic reached the client: %v", err)
			}
			// The call log and the metrics see the final code.
			testutil.Eventually(t, 5*time.Second, func() error {
				if !strings.Contains(logs.String(), "grpc.code="+tt.want.String()) {
					return fmt.Errorf("no log line with code %v in %q", tt.want, logs.String())
				}
				return nil
			})
			mfs, err := reg.Gather()
			if err != nil {
				t.Fatal(err)
			}
			handled := false
			for _, mf := range mfs {
				if mf.GetName() != "grpc_server_handled_total" {
					continue
				}
				for _, m := range mf.GetMetric() {
					for _, l := range m.GetLabel() {
						if l.GetName() == "grpc_code" && l.GetValue() == tt.want.String() && m.GetCounter().GetValue() == 1 {
							handled = true
						}
					}
				}
			}
			if !handled {
				t.Fatalf("grpc_server_handled_total{grpc_code=%q} is not 1", tt.want)
			}
		})
	}
}

func TestStopWithoutServers(t *testing.T) {
	if Stop(nil, nil, time.Second) {
		t.Fatal("nothing to stop, yet something was cut")
	}
}
