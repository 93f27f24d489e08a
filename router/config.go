package router

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"time"

	"github.com/cellplane/cellplane/controlplane/topo"
	"github.com/cellplane/cellplane/internal/auth"
	"github.com/cellplane/cellplane/internal/pki"
	"github.com/cellplane/cellplane/internal/ratelimit"
	"github.com/cellplane/cellplane/internal/serve"
	"github.com/cellplane/cellplane/internal/tenanttoken"
	"github.com/cellplane/cellplane/router/forward"
	"github.com/cellplane/cellplane/router/mcpproxy"
	"github.com/cellplane/cellplane/router/routing"
)

// Default listen addresses.
const (
	DefaultGRPCAddr = "127.0.0.1:7100"
	DefaultHTTPAddr = "127.0.0.1:7180"
)

// Config configures a router.
type Config struct {
	// EtcdEndpoints of the control plane's etcd (required unless Store).
	EtcdEndpoints []string
	// EtcdPrefix is the keyspace root (default topo.Prefix).
	EtcdPrefix string
	// EtcdCertFile, EtcdKeyFile, EtcdCAFile: TLS to etcd. Unset, https
	// endpoints are reached with InternalTLS (the router's identity: its
	// certificate's common name is its etcd user).
	EtcdCertFile, EtcdKeyFile, EtcdCAFile string
	// Store, when set, is used instead of dialing etcd (tests; not closed).
	Store topo.Store

	// GRPCAddr and HTTPAddr are the listen addresses; the listeners, when
	// set, are used instead (tests).
	GRPCAddr, HTTPAddr         string
	GRPCListener, HTTPListener net.Listener

	// TLS, with CertFile and KeyFile set, makes the front door (the gRPC
	// port and the HTTP port: MCP, the RFC 9728 metadata, /metrics,
	// /healthz, /readyz) serve TLS 1.2+ with that certificate, reloaded
	// from disk when the files change (every TLS.ReloadInterval at most).
	// Server-side TLS only: tenants authenticate with API keys or JWTs,
	// not client certificates. Without files the front door is plaintext
	// (and Start says so at Warn).
	TLS pki.ServerCertConfig

	// InternalTLS is the router's identity inside the cluster (a router
	// certificate of the cluster CA, spiffe://<cluster>/router/<id>, and
	// the CA bundle, reloaded from disk: pki.NewSource), separate from
	// the front door's TLS. With it, the forwarder's connections to cells
	// use mutual TLS, present it and accept only cell nodes (unless
	// Forward.Dial.Credentials is set): cells serving mutual TLS
	// (cells.Config.TLS) accept ContextService calls from routers only.
	// The MCP proxy's requests to workers (nodes' and stand-alone workers'
	// HTTP ports) then use https with mutual TLS too, accepting only a
	// node or worker identity (unless MCP.TLS is set).
	// nil: plaintext to cells and workers, which those with TLS refuse.
	InternalTLS *pki.Source

	// Tokens bounds the tenant tokens Lookup mints (internal/tenanttoken;
	// TTL is their lifetime). A router mints them only with InternalTLS
	// (the token's audience is its cluster), with the newest signing key
	// in etcd (controlplane/tokenkeys); cells must agree on MaxTTL and
	// ClockSkew.
	Tokens tenanttoken.Config

	// MaxRecvMsgBytes bounds a request message (RESOURCE_EXHAUSTED above).
	MaxRecvMsgBytes int
	// GRPCLimits and HTTPLimits bound the gRPC and HTTP servers (streams,
	// pings, idle connections, connections, HTTP timeouts; finding M6).
	// The zero values mean serve.DefaultLimits and serve.DefaultHTTPLimits.
	GRPCLimits serve.Limits
	HTTPLimits serve.HTTPLimits

	Routing   routing.Config
	Forward   forward.Config
	Auth      auth.Config
	RateLimit ratelimit.Config
	MCP       mcpproxy.Config

	// JWKSReloadInterval: how often the JWKS file is re-read (key
	// rotation) in jwt mode; 0 never.
	JWKSReloadInterval time.Duration

	// ShutdownTimeout bounds a graceful stop.
	ShutdownTimeout time.Duration
	// Logger; nil means slog.Default().
	Logger *slog.Logger
}

// DefaultConfig returns the defaults (EtcdEndpoints must be set). Auth
// defaults to API keys.
func DefaultConfig() Config {
	a := auth.DefaultConfig()
	a.Mode = auth.ModeAPIKey
	return Config{
		EtcdPrefix:      topo.Prefix,
		GRPCAddr:        DefaultGRPCAddr,
		HTTPAddr:        DefaultHTTPAddr,
		MaxRecvMsgBytes: 8 << 20,
		GRPCLimits:      serve.DefaultLimits(),
		HTTPLimits:      serve.DefaultHTTPLimits(),
		Routing:         routing.DefaultConfig(),
		Forward:         forward.DefaultConfig(),
		Auth:            a,
		RateLimit:       ratelimit.DefaultConfig(),
		MCP:             mcpproxy.DefaultConfig(),
		TLS:             pki.DefaultServerCertConfig(),
		Tokens:          tenanttoken.DefaultConfig(),
		ShutdownTimeout: 10 * time.Second,

		JWKSReloadInterval: time.Minute,
	}
}

// TLSEnabled reports whether the front door serves TLS (a certificate or
// key file is configured; Validate requires both).
func (c Config) TLSEnabled() bool { return c.TLS.CertFile != "" || c.TLS.KeyFile != "" }

// Validate reports an unusable configuration.
func (c Config) Validate() error {
	var errs []error
	if len(c.EtcdEndpoints) == 0 && c.Store == nil {
		errs = append(errs, errors.New("router: etcd endpoints are required"))
	}
	if (c.EtcdCertFile == "") != (c.EtcdKeyFile == "") {
		errs = append(errs, errors.New("router: etcd cert and key files go together"))
	}
	if c.GRPCListener == nil && c.GRPCAddr == "" || c.HTTPListener == nil && c.HTTPAddr == "" {
		errs = append(errs, errors.New("router: gRPC and HTTP addresses are required"))
	}
	if c.TLSEnabled() {
		if err := c.TLS.Validate(); err != nil {
			errs = append(errs, fmt.Errorf("router: TLS: %w", err))
		}
		if u, err := url.Parse(c.MCP.PublicURL); c.MCP.PublicURL != "" && err == nil && u.Scheme != "https" {
			// The RFC 9728 resource and a JWT's audience would name a
			// plaintext URL of a server that only speaks TLS.
			errs = append(errs, fmt.Errorf("router: the front door serves TLS but the MCP public URL %q is not https", c.MCP.PublicURL))
		}
	} else if c.TLS.ReloadInterval < 0 {
		errs = append(errs, fmt.Errorf("router: TLS.ReloadInterval %v < 0", c.TLS.ReloadInterval))
	}
	if c.InternalTLS != nil {
		if id := c.InternalTLS.Identity(); id.Kind != pki.KindRouter {
			errs = append(errs, fmt.Errorf("router: InternalTLS: certificate identity %s is not a router's", id))
		}
	}
	if c.MaxRecvMsgBytes < 1024 {
		errs = append(errs, fmt.Errorf("router: MaxRecvMsgBytes %d < 1024", c.MaxRecvMsgBytes))
	}
	if err := c.GRPCLimits.ValidateOrZero(); err != nil {
		errs = append(errs, fmt.Errorf("router: GRPCLimits: %w", err))
	}
	if err := c.HTTPLimits.ValidateOrZero(); err != nil {
		errs = append(errs, fmt.Errorf("router: HTTPLimits: %w", err))
	}
	if c.JWKSReloadInterval < 0 {
		errs = append(errs, fmt.Errorf("router: JWKSReloadInterval %v < 0", c.JWKSReloadInterval))
	}
	if c.ShutdownTimeout <= 0 {
		errs = append(errs, fmt.Errorf("router: ShutdownTimeout %v <= 0", c.ShutdownTimeout))
	}
	if err := c.Tokens.Validate(); err != nil {
		errs = append(errs, fmt.Errorf("router: Tokens: %w", err))
	}
	errs = append(errs, c.Routing.Validate(), c.Forward.Validate(), c.Auth.Validate(), c.RateLimit.Validate(), c.MCP.Validate())
	return errors.Join(errs...)
}
