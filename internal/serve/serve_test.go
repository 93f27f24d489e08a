package serve

import (
	"context"
	"errors"
	"log/slog"
	"net/http/httptest"
	"strings"
	"syscall"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/cellplane/cellplane/internal/cperr"
	"github.com/cellplane/cellplane/internal/rpcerr"
	"github.com/cellplane/cellplane/internal/testutil"
)

func TestListenErrorNamesAddressAndReason(t *testing.T) {
	taken := testutil.Listen(t)
	_, err := Listen("grpc", taken.Addr().String(), nil)
	var le *ListenError
	if !errors.As(err, &le) || le.Name != "grpc" || !errors.Is(err, syscall.EADDRINUSE) {
		t.Fatalf("Listen on a taken port: %v", err)
	}
	if !strings.Contains(err.Error(), taken.Addr().String()) || !strings.Contains(err.Error(), "already in use") {
		t.Fatalf("message %q", err)
	}
	pre := testutil.Listen(t)
	if l, err := Listen("http", "ignored:1", pre); err != nil || l != pre {
		t.Fatalf("a pre-opened listener is used as is: %v", err)
	}
}

func TestRecoverHidesThePanic(t *testing.T) {
	err := Recover(testutil.Logger(t))(context.Background(), "secret detail")
	if cperr.ReasonOf(rpcerr.FromStatus(err)) != cperr.Internal || strings.Contains(err.Error(), "secret") {
		t.Fatalf("recovered error %v", err)
	}
}

func TestWriteJSON(t *testing.T) {
	w := httptest.NewRecorder()
	WriteJSON(w, 503, map[string]any{"ready": false})
	if w.Code != 503 || w.Header().Get("Content-Type") != "application/json" || strings.TrimSpace(w.Body.String()) != `{"ready":false}` {
		t.Fatalf("%d %q %q", w.Code, w.Header().Get("Content-Type"), w.Body.String())
	}
}

func TestCallLoggerLevelsAndAttrs(t *testing.T) {
	var buf strings.Builder
	log := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelWarn}))
	c := CallLogger{Log: log, Attrs: func(context.Context) []any { return []any{"tenant", "acme"} }}
	info := &grpc.UnaryServerInfo{FullMethod: "/s/M"}
	for _, err := range []error{nil, status.Error(codes.NotFound, "x"), status.Error(codes.Internal, "boom")} {
		_, _ = c.Unary(context.Background(), nil, info, func(context.Context, any) (any, error) { return nil, err })
	}
	out := buf.String()
	if strings.Count(out, "finished call") != 1 || !strings.Contains(out, "grpc.code=Internal") || !strings.Contains(out, "tenant=acme") {
		t.Fatalf("at Warn only the INTERNAL call is logged, with its attrs: %q", out)
	}
}
