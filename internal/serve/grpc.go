package serve

import (
	"context"
	"log/slog"

	grpcprom "github.com/grpc-ecosystem/go-grpc-middleware/providers/prometheus"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/recovery"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"

	"github.com/cellplane/cellplane/internal/rpcerr"
)

// GRPCConfig is what NewGRPCServer needs besides the services.
type GRPCConfig struct {
	// Log receives one line per finished call (CallLogger) and every
	// recovered panic.
	Log *slog.Logger
	// CallAttrs, if set, adds attributes to a call's log line
	// (CallLogger.Attrs), e.g. the tenant.
	CallAttrs func(ctx context.Context) []any
	// Metrics, when set, receives the grpc_server_* metrics (handling
	// time included); nil means none.
	Metrics prometheus.Registerer
	// Unary and Stream are the server's own interceptors (auth, rate
	// limits, ...). They run innermost, after rpcerr has been entered, so
	// the cperr errors they return are mapped like a handler's, and their
	// panics are recovered.
	Unary  []grpc.UnaryServerInterceptor
	Stream []grpc.StreamServerInterceptor
	// Limits bound streams, pings and idle connections (the zero value
	// means DefaultLimits); serve on Limits.Listener for the connection
	// cap.
	Limits Limits
	// Options are further server options (message size limits, an
	// unknown-service handler, codecs).
	Options []grpc.ServerOption
}

// NewGRPCServer returns a gRPC server with the house interceptor chain,
// on which register has registered the services. The chain, from
// outermost to innermost, is the same for every cellplane server:
//
//  1. call log: one line per finished call (Debug when it went as the
//     error contract expects, Error for INTERNAL/UNKNOWN/DATA_LOSS). It is
//     outermost so that it sees the final code;
//  2. Prometheus metrics (grpc_server_*, with cfg.Metrics only), likewise
//     on the final code;
//  3. recovery: a panicking handler becomes INTERNAL with a generic
//     message; the panic and its stack are logged, never sent. It sits
//     inside logging and metrics so that panics are counted and logged as
//     failed calls;
//  4. rpcerr: maps the handlers' cperr errors to statuses (the one table);
//  5. the server's own interceptors (cfg.Unary, cfg.Stream), in order.
//
// Metrics are initialized for every registered method once register has
// run, so that their series exist before the first call.
func NewGRPCServer(cfg GRPCConfig, register func(*grpc.Server)) *grpc.Server {
	calls := CallLogger{Log: cfg.Log, Attrs: cfg.CallAttrs}
	recoverOpt := recovery.WithRecoveryHandlerContext(Recover(cfg.Log))

	var metrics *grpcprom.ServerMetrics
	unary := []grpc.UnaryServerInterceptor{calls.Unary}
	stream := []grpc.StreamServerInterceptor{calls.Stream}
	if cfg.Metrics != nil {
		metrics = grpcprom.NewServerMetrics(grpcprom.WithServerHandlingTimeHistogram())
		cfg.Metrics.MustRegister(metrics)
		unary = append(unary, metrics.UnaryServerInterceptor())
		stream = append(stream, metrics.StreamServerInterceptor())
	}
	unary = append(unary, recovery.UnaryServerInterceptor(recoverOpt), rpcerr.UnaryServerInterceptor())
	stream = append(stream, recovery.StreamServerInterceptor(recoverOpt), rpcerr.StreamServerInterceptor())
	unary = append(unary, cfg.Unary...)
	stream = append(stream, cfg.Stream...)

	opts := cfg.Limits.orDefault().ServerOptions()
	opts = append(opts, cfg.Options...)
	opts = append(opts, grpc.ChainUnaryInterceptor(unary...), grpc.ChainStreamInterceptor(stream...))
	gs := grpc.NewServer(opts...)
	register(gs)
	if metrics != nil {
		metrics.InitializeMetrics(gs)
	}
	return gs
}
