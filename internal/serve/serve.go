// Package serve holds what every cellplane server process shares around
// its gRPC and HTTP servers: opening listeners with an error that names
// the address, the gRPC interceptor chain (one log line per finished call
// at a level that follows its code, metrics, panic recovery that never
// leaks a stack to the client, the error mapping), a JSON health answer,
// a bounded graceful stop, and the limits every server applies (finding
// M6): Limits for gRPC servers (streams per connection, keepalive
// enforcement, idle connections; NewGRPCServer applies them), HTTPLimits
// for HTTP servers (timeouts, header size; NewHTTPServer), a
// connection-capping listener for both (LimitListener), and Streaming for
// handlers whose responses stream (server-sent events) past the write
// timeout.
//
//	lim, hlim := serve.DefaultLimits(), serve.DefaultHTTPLimits()
//	l, err := serve.Listen("grpc", cfg.GRPCAddr, cfg.GRPCListener)
//	gs := serve.NewGRPCServer(serve.GRPCConfig{Log: log, Metrics: reg, Limits: lim}, func(gs *grpc.Server) {
//		myv1.RegisterMyServiceServer(gs, svc)
//	})
//	hs := serve.NewHTTPServer(mux, log, hlim)
//	serve.Start(&wg, log, gs, lim.Listener(l, log), hs, hlim.Listener(hl, log))
//	...
//	serve.Stop(gs, hs, 10*time.Second)
package serve

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"runtime/debug"
	"sync"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/cellplane/cellplane/internal/cperr"
	"github.com/cellplane/cellplane/internal/rpcerr"
)

// ListenError is returned when a listen address cannot be bound.
type ListenError struct {
	// Name is the listener ("grpc", "http", ...).
	Name string
	Addr string
	Err  error
}

func (e *ListenError) Error() string {
	return fmt.Sprintf("cannot listen on %s address %s: %s", e.Name, e.Addr, e.Reason())
}

func (e *ListenError) Unwrap() error { return e.Err }

// Reason says briefly why the address could not be bound.
func (e *ListenError) Reason() string {
	switch {
	case errors.Is(e.Err, syscall.EADDRINUSE):
		return "address already in use (another process holds the port)"
	case errors.Is(e.Err, syscall.EADDRNOTAVAIL):
		return "address not available on this machine"
	case errors.Is(e.Err, syscall.EACCES):
		return "permission denied"
	}
	return e.Err.Error()
}

// Listen returns pre when set (a test's pre-opened listener), else a TCP
// listener on addr; a failure is a *ListenError.
func Listen(name, addr string, pre net.Listener) (net.Listener, error) {
	if pre != nil {
		return pre, nil
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, &ListenError{Name: name, Addr: addr, Err: err}
	}
	return l, nil
}

// FreeLoopbackPorts returns n distinct ports on 127.0.0.1 that were free a
// moment ago, for servers that must be given an address rather than a
// listener (embedded etcd, a child process). Another process may take one
// before it is used: callers retry on ErrAddrInUse-like failures.
func FreeLoopbackPorts(n int) ([]int, error) {
	ls := make([]net.Listener, 0, n)
	defer func() {
		for _, l := range ls {
			_ = l.Close()
		}
	}()
	ports := make([]int, 0, n)
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// CallLogger logs one line per finished gRPC call: Debug when it went as
// the error contract expects, Error for INTERNAL/UNKNOWN/DATA_LOSS. It
// checks the level before building anything, so a dropped line costs
// nothing.
type CallLogger struct {
	Log *slog.Logger
	// Attrs, if set, adds attributes to a line from the call's context
	// (called only when the line is written).
	Attrs func(ctx context.Context) []any
}

// Unary is the unary interceptor.
func (c CallLogger) Unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	start := time.Now()
	resp, err := h(ctx, req)
	c.log(ctx, info.FullMethod, start, err)
	return resp, err
}

// Stream is the stream interceptor.
func (c CallLogger) Stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	start := time.Now()
	err := h(srv, ss)
	c.log(ss.Context(), info.FullMethod, start, err)
	return err
}

func (c CallLogger) log(ctx context.Context, method string, start time.Time, err error) {
	code := status.Code(err)
	level := slog.LevelDebug
	switch code {
	case codes.Internal, codes.Unknown, codes.DataLoss:
		level = slog.LevelError
	case codes.Unimplemented:
		level = slog.LevelWarn
	}
	if !c.Log.Enabled(ctx, level) {
		return
	}
	attrs := []any{"grpc.method", method, "grpc.code", code.String(), "grpc.time_ms", float64(time.Since(start).Microseconds()) / 1000}
	if c.Attrs != nil {
		attrs = append(attrs, c.Attrs(ctx)...)
	}
	if err != nil {
		attrs = append(attrs, "error", status.Convert(err).Message())
	}
	c.Log.Log(ctx, level, "finished call", attrs...)
}

// Recover returns a go-grpc-middleware recovery handler: the panic and
// its stack are logged, the client gets a generic INTERNAL.
func Recover(log *slog.Logger) func(ctx context.Context, p any) error {
	return func(ctx context.Context, p any) error {
		method, _ := grpc.Method(ctx)
		log.ErrorContext(ctx, "panic in gRPC handler", "grpc.method", method, "panic", p, "stack", string(debug.Stack()))
		return rpcerr.ToStatus(cperr.New(cperr.Internal, "internal error"))
	}
}

// WriteJSON answers with v as JSON.
func WriteJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

// Stop stops gs gracefully and shuts hs down, both at once and within
// one timeout; gRPC calls and HTTP requests still running then are cut.
// Either may be nil. It reports whether anything had to be cut.
func Stop(gs *grpc.Server, hs *http.Server, timeout time.Duration) (cut bool) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var gcut, hcut bool
	var wg sync.WaitGroup
	if gs != nil {
		wg.Go(func() {
			done := make(chan struct{})
			go func() { gs.GracefulStop(); close(done) }()
			select {
			case <-done:
			case <-ctx.Done():
				gcut = true
				gs.Stop()
				<-done
			}
		})
	}
	if hs != nil {
		wg.Go(func() {
			if hs.Shutdown(ctx) != nil {
				hcut = true
				_ = hs.Close()
			}
		})
	}
	wg.Wait()
	return gcut || hcut
}

// WriteError answers an HTTP request with the error contract's JSON body:
// {"error":{"reason":…,"message":…}}.
func WriteError(w http.ResponseWriter, code int, reason, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(map[string]any{"error": map[string]string{"reason": reason, "message": msg}})
}

// StatusWriter records the status a handler answered with (for metrics)
// and passes Flush through, so server-sent events still stream.
type StatusWriter struct {
	http.ResponseWriter
	// Status is the answered status (0 until the handler writes).
	Status int
}

// WriteHeader implements http.ResponseWriter.
func (s *StatusWriter) WriteHeader(code int) {
	if s.Status == 0 {
		s.Status = code
	}
	s.ResponseWriter.WriteHeader(code)
}

// Write implements http.ResponseWriter.
func (s *StatusWriter) Write(p []byte) (int, error) {
	if s.Status == 0 {
		s.Status = http.StatusOK
	}
	return s.ResponseWriter.Write(p)
}

// Flush implements http.Flusher.
func (s *StatusWriter) Flush() {
	if f, ok := s.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (s *StatusWriter) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// Start serves gs on gl and hs on hl in the background, each tracked by
// wg; either may be nil. A server that stops for another reason than being
// stopped is logged at Error.
func Start(wg *sync.WaitGroup, log *slog.Logger, gs *grpc.Server, gl net.Listener, hs *http.Server, hl net.Listener) {
	if gs != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := gs.Serve(gl); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
				log.Error("gRPC server stopped", "err", err)
			}
		}()
	}
	if hs != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := hs.Serve(hl); err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.Error("HTTP server stopped", "err", err)
			}
		}()
	}
}
