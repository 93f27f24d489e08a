package dial

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"
)

// Config says how a process opens its gRPC client connections. The zero
// value is usable and equals DefaultConfig: plaintext, no keepalive pings,
// no interceptors, gRPC's own service config.
type Config struct {
	// Credentials secure every connection; nil means plaintext
	// (insecure.NewCredentials()), for loopback and a trusted network.
	Credentials credentials.TransportCredentials
	// Keepalive pings an idle connection after Keepalive.Time and drops it
	// when the ping is not answered within Keepalive.Timeout. The zero
	// value sends no pings (gRPC's default). A server's default
	// enforcement policy closes connections that ping more often than
	// every 5 min.
	Keepalive keepalive.ClientParameters
	// UnaryInterceptors and StreamInterceptors run on every call, in
	// order (the first is outermost).
	UnaryInterceptors  []grpc.UnaryClientInterceptor
	StreamInterceptors []grpc.StreamClientInterceptor
	// ServiceConfig is the default service config, as JSON (load
	// balancing, retries); "" keeps gRPC's (pick_first, no retries). A
	// name resolver that supplies its own config overrides it.
	ServiceConfig string
	// ExtraOptions are applied after everything above, so they override
	// it (message-size limits, flow-control windows, resolvers, a test
	// dialer).
	ExtraOptions []grpc.DialOption
}

// DefaultConfig returns the platform's defaults: plaintext, no keepalive
// pings, no interceptors, no service config.
func DefaultConfig() Config {
	return Config{}
}

// Validate reports every problem with c.
func (c Config) Validate() error {
	var errs []error
	if c.Keepalive.Time < 0 {
		errs = append(errs, fmt.Errorf("dial: Keepalive.Time must not be negative, got %s", c.Keepalive.Time))
	}
	if c.Keepalive.Timeout < 0 {
		errs = append(errs, fmt.Errorf("dial: Keepalive.Timeout must not be negative, got %s", c.Keepalive.Timeout))
	}
	if slices.ContainsFunc(c.UnaryInterceptors, func(i grpc.UnaryClientInterceptor) bool { return i == nil }) {
		errs = append(errs, errors.New("dial: UnaryInterceptors holds a nil interceptor"))
	}
	if slices.ContainsFunc(c.StreamInterceptors, func(i grpc.StreamClientInterceptor) bool { return i == nil }) {
		errs = append(errs, errors.New("dial: StreamInterceptors holds a nil interceptor"))
	}
	if c.ServiceConfig != "" && !json.Valid([]byte(c.ServiceConfig)) {
		errs = append(errs, fmt.Errorf("dial: ServiceConfig is not valid JSON: %q", c.ServiceConfig))
	}
	if slices.Contains(c.ExtraOptions, nil) {
		errs = append(errs, errors.New("dial: ExtraOptions holds a nil option"))
	}
	return errors.Join(errs...)
}

// With returns a copy of c with opts added to its ExtraOptions (c itself
// is not changed).
func (c Config) With(opts ...grpc.DialOption) Config {
	c.ExtraOptions = append(slices.Clip(c.ExtraOptions), opts...)
	return c
}

// Options returns c as gRPC dial options, for a caller that must hand
// them to another library; prefer New.
func (c Config) Options() []grpc.DialOption {
	creds := c.Credentials
	if creds == nil {
		creds = insecure.NewCredentials()
	}
	opts := []grpc.DialOption{grpc.WithTransportCredentials(creds)}
	if c.Keepalive != (keepalive.ClientParameters{}) {
		opts = append(opts, grpc.WithKeepaliveParams(c.Keepalive))
	}
	if len(c.UnaryInterceptors) > 0 {
		opts = append(opts, grpc.WithChainUnaryInterceptor(c.UnaryInterceptors...))
	}
	if len(c.StreamInterceptors) > 0 {
		opts = append(opts, grpc.WithChainStreamInterceptor(c.StreamInterceptors...))
	}
	if c.ServiceConfig != "" {
		opts = append(opts, grpc.WithDefaultServiceConfig(c.ServiceConfig))
	}
	return append(opts, c.ExtraOptions...)
}

// New returns a connection to target configured by cfg. Like
// grpc.NewClient it does not connect yet: the first call does. Its errors
// are grpc.NewClient's (or cfg's Validate's), for the caller to wrap.
func New(target string, cfg Config) (*grpc.ClientConn, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return grpc.NewClient(target, cfg.Options()...)
}
