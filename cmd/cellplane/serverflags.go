package main

import (
	"github.com/spf13/pflag"

	"github.com/cellplane/cellplane/internal/serve"
)

// serverLimitFlags is the "Server limits" flag group (finding M6): the
// caps and timeouts of a component's gRPC server (g; nil when it has
// none) and HTTP server (h).
func serverLimitFlags(g *serve.Limits, h *serve.HTTPLimits) *pflag.FlagSet {
	fs := pflag.NewFlagSet("server limits", pflag.ContinueOnError)
	if g != nil {
		fs.Uint32Var(&g.MaxConcurrentStreams, "grpc-max-streams", g.MaxConcurrentStreams, "most concurrent calls on one gRPC connection (further calls wait)")
		fs.IntVar(&g.MaxConns, "grpc-max-conns", g.MaxConns, "most open gRPC connections (one over is closed when accepted); 0 no cap")
		fs.DurationVar(&g.KeepaliveMinTime, "grpc-keepalive-min-time", g.KeepaliveMinTime, "least interval between a client's pings; a client pinging more often is disconnected (GOAWAY ENHANCE_YOUR_CALM)")
		fs.DurationVar(&g.MaxConnectionIdle, "grpc-max-connection-idle", g.MaxConnectionIdle, "close a gRPC connection without calls for this long; 0 never")
	}
	fs.IntVar(&h.MaxConns, "http-max-conns", h.MaxConns, "most open HTTP connections (one over is closed when accepted); 0 no cap")
	fs.DurationVar(&h.ReadHeaderTimeout, "http-read-header-timeout", h.ReadHeaderTimeout, "time a client has to send a request's headers")
	fs.DurationVar(&h.ReadTimeout, "http-read-timeout", h.ReadTimeout, "time a client has to send a whole request (MCP streams excepted)")
	fs.DurationVar(&h.WriteTimeout, "http-write-timeout", h.WriteTimeout, "time a response may take (MCP streams excepted)")
	fs.DurationVar(&h.IdleTimeout, "http-idle-timeout", h.IdleTimeout, "close a keep-alive HTTP connection idle for this long")
	fs.IntVar(&h.MaxHeaderBytes, "http-max-header-bytes", h.MaxHeaderBytes, "largest request headers")
	return fs
}
