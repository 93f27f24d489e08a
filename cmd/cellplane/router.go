package main

import (
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/cellplane/cellplane/internal/auth"
	"github.com/cellplane/cellplane/internal/logging"
	"github.com/cellplane/cellplane/router"
)

func newRouterCmd(std streams, stopSignals func()) *cobra.Command {
	cfg := router.DefaultConfig()
	var (
		endpoints string
		authMode  = string(cfg.Auth.Mode)

		controlplaneAddr string
		certsDir         string
		certName         string
		insecure         bool
		logLevel         = "info"
		logFormat        = "text"
	)
	cmd := &cobra.Command{
		Use:   "router --etcd-endpoints URLS [--auth apikey|jwt|none]",
		Short: "Run a global router (tenant → cell routing for gRPC and MCP, auth, rate limits)",
		Long: `Run a global router. It keeps the tenant → cell table in memory, fed by a
watch on the control plane's etcd, and forwards each tenant's calls to its
cell: cellplane.context.v1.ContextService over gRPC (raw frames, writes and
consistent reads to the cell leader, reads marked x-cellplane-consistency:
stale to any member) and MCP over HTTP at /t/<tenant>/mcp. It serves
cellplane.router.v1.RouterService.Lookup for smart clients, health,
reflection, and /metrics, /healthz, /readyz.

Requests never wait on etcd: with --snapshot the table is saved to a local
file, and a router restarted while etcd is down routes from it. Routers run
side by side with no coordination.

Authentication (--auth): apikey (tenant API keys from 'cellctl tenant key
create', sent as "authorization: Bearer <key>" or "x-api-key"), jwt (bearer
JWTs checked against --jwks-file, --jwt-issuer and --jwt-audience, tenant
from --jwt-tenant-claim), or none (development only: the tenant comes from
x-cellplane-tenant and is trusted).

TLS (--tls-cert, --tls-key): both ports serve TLS 1.2 or later with that
certificate (one from a public CA, or 'cellplane cert create-router'), gRPC
over h2 and MCP over HTTPS; /metrics, /healthz and /readyz move to HTTPS
with them. Replacing the files rotates the certificate without a restart.
Clients still authenticate with API keys or JWTs. Without them both ports are
plaintext and the router warns at start: credentials and tenant data then
cross the network in clear.

The router's identity inside the cluster (--certs-dir, --cert-name: the
files 'cellplane cert create-router' writes) is separate from the front
door: with it, the router's calls to cells use mutual TLS and present a
router certificate, as cells started with --certs-dir require, and its
MCP requests to workers use https with mutual TLS. Without --certs-dir the
router refuses to start unless --insecure is given: its calls are then
plaintext and it warns at every start.`,
		Example: `  # A router on the control plane's embedded etcd, API keys required:
  cellplane router --etcd-endpoints http://127.0.0.1:7379 --snapshot data/router/table.snap --certs-dir certs

  # Then, with a key from 'cellctl tenant key create acme':
  grpcurl -plaintext -H "authorization: Bearer $KEY" -d '{"context_id":"chat-1"}' \
      127.0.0.1:7100 cellplane.context.v1.ContextService/CreateContext

  # The front door over TLS (gRPC and HTTPS), MCP at https://mcp.example.com/t/<tenant>/mcp:
  cellplane router --etcd-endpoints http://127.0.0.1:7379 --grpc-addr :7100 --http-addr :443 --certs-dir certs \
      --tls-cert /etc/cellplane/front.crt --tls-key /etc/cellplane/front.key \
      --mcp-public-url https://mcp.example.com`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			logger, err := logging.New(std.Err, logging.Options{Level: logLevel, Format: logging.Format(logFormat)})
			if err != nil {
				return usageError{err}
			}
			cfg.Logger = logger
			if err := checkTLSChoice(certsDir, certName, insecure); err != nil {
				return err
			}
			if certsDir != "" {
				if cfg.InternalTLS, err = componentTLS(certsDir, certName, "router", logger); err != nil {
					return err
				}
			}
			eps, err := etcdEndpoints(cmd, splitList(endpoints), controlplaneAddr, &cfg.EtcdPrefix, 10*time.Second, cfg.InternalTLS)
			if err != nil {
				return err
			}
			cfg.EtcdEndpoints = eps
			if len(cfg.EtcdEndpoints) == 0 {
				return usageErrorf("--etcd-endpoints or --controlplane is required (the control plane's etcd, e.g. http://127.0.0.1:7379)")
			}
			cfg.Auth.Mode = auth.Mode(authMode)
			if err := cfg.Validate(); err != nil {
				return usageErrorf("invalid configuration: %w", err)
			}
			if insecure {
				warnInsecure(logger, "the router", "grpc_addr", cfg.GRPCAddr, "http_addr", cfg.HTTPAddr)
			}
			return runRouter(cmd, cfg, stopSignals)
		},
	}
	r := pflag.NewFlagSet("router", pflag.ContinueOnError)
	r.StringVar(&cfg.GRPCAddr, "grpc-addr", cfg.GRPCAddr, "address of the gRPC front (ContextService, RouterService)")
	r.StringVar(&cfg.HTTPAddr, "http-addr", cfg.HTTPAddr, "address of the HTTP front (/t/<tenant>/mcp, /metrics, /healthz, /readyz)")
	r.StringVar(&cfg.TLS.CertFile, "tls-cert", "", "server certificate (PEM, leaf first) of the front door: with --tls-key, the gRPC and HTTP ports serve TLS 1.2+ (HTTPS for MCP); reloaded when the file changes")
	r.StringVar(&cfg.TLS.KeyFile, "tls-key", "", "key of --tls-cert (PEM)")
	r.DurationVar(&cfg.TLS.ReloadInterval, "tls-reload-interval", cfg.TLS.ReloadInterval, "how often a handshake re-checks --tls-cert/--tls-key for a new certificate; 0 never")
	r.StringVar(&certsDir, "certs-dir", "", "directory of the router's internal certificate and key (<cert-name>.crt/.key) and the cluster CA bundle (ca.crt), as \"cellplane cert create-router\" writes them, reloaded when they change: calls to cells and MCP workers then use mutual TLS with this identity; required unless --insecure")
	addInsecureFlag(r, &insecure, "its calls to cells and MCP workers are")
	r.StringVar(&certName, "cert-name", "", "base name of the router's certificate in --certs-dir (default: the one router.<id>.crt there)")
	r.StringVar(&cfg.Routing.SnapshotPath, "snapshot", "", "file the routing table is saved to and started from when etcd is down (empty: none)")
	r.DurationVar(&cfg.Routing.SnapshotInterval, "snapshot-interval", cfg.Routing.SnapshotInterval, "how often a changed table is saved")
	r.DurationVar(&cfg.ShutdownTimeout, "shutdown-timeout", cfg.ShutdownTimeout, "how long a graceful shutdown may drain calls")

	etcd := pflag.NewFlagSet("etcd", pflag.ContinueOnError)
	etcd.StringVar(&endpoints, "etcd-endpoints", "", "comma-separated client URLs of the control plane's etcd (required)")
	etcd.StringVar(&controlplaneAddr, "controlplane", "", "the control plane's gRPC address: ask it where etcd is (instead of --etcd-endpoints)")
	etcd.StringVar(&cfg.EtcdPrefix, "etcd-prefix", cfg.EtcdPrefix, "key prefix of cellplane's keyspace")
	etcd.StringVar(&cfg.EtcdCAFile, "etcd-ca", "", "CA bundle verifying etcd's certificate (default for https endpoints: --certs-dir's ca.crt)")
	etcd.StringVar(&cfg.EtcdCertFile, "etcd-cert", "", "client certificate for etcd, with --etcd-key (default for https endpoints: the router's --certs-dir certificate)")
	etcd.StringVar(&cfg.EtcdKeyFile, "etcd-key", "", "client key for etcd (with --etcd-cert)")

	a := pflag.NewFlagSet("auth", pflag.ContinueOnError)
	a.StringVar(&authMode, "auth", authMode, "apikey, jwt or none (development only)")
	a.StringVar(&cfg.Auth.JWKSFile, "jwks-file", "", "jwt: JSON Web Key Set file with the RS256/ES256 verification keys")
	a.StringVar(&cfg.Auth.Issuer, "jwt-issuer", "", "jwt: required issuer (iss)")
	a.StringVar(&cfg.Auth.Audience, "jwt-audience", "", "jwt: required audience (aud)")
	a.StringVar(&cfg.Auth.TenantClaim, "jwt-tenant-claim", cfg.Auth.TenantClaim, "jwt: claim holding the tenant id")
	a.DurationVar(&cfg.Tokens.TTL, "token-ttl", cfg.Tokens.TTL, "lifetime of the tenant tokens Lookup mints for the smart client's direct path (with --certs-dir; at most 15m, what cells accept)")
	a.DurationVar(&cfg.JWKSReloadInterval, "jwks-reload-interval", cfg.JWKSReloadInterval, "jwt: how often the JWKS file is re-read (key rotation); 0 never")
	a.DurationVar(&cfg.Routing.APIKeyMaxStaleness, "api-key-max-staleness", cfg.Routing.APIKeyMaxStaleness, "API keys are refused (UNAVAILABLE CREDENTIALS_STALE) once the router's view of them was last confirmed against etcd longer ago than this (etcd watch down, or a restart from an old snapshot), so a key revoked meanwhile stops working; JWTs and routing are not affected; 0 unbounded (a revoked key works until the watch recovers)")
	a.DurationVar(&cfg.Routing.JWTRevocationMaxStaleness, "jwt-revocation-max-staleness", 0, "jwt: JWTs are checked against the tenants' revocation list (cellctl tenant token revoke); once the router's copy of it was last confirmed against etcd longer ago than this, JWTs are refused too (CREDENTIALS_STALE); 0 (default) checks against the last list known however old, so JWT callers keep working through an etcd outage")
	a.DurationVar(&cfg.Routing.FreshnessInterval, "api-key-freshness-interval", 0, "how often the router confirms its watch is caught up with etcd (default min(10s, --api-key-max-staleness/4))")

	lim := pflag.NewFlagSet("limits", pflag.ContinueOnError)
	lim.Float64Var(&cfg.RateLimit.DefaultRate, "default-rate", cfg.RateLimit.DefaultRate, "requests per second of a tenant whose record sets none")
	lim.IntVar(&cfg.RateLimit.DefaultBurst, "default-burst", cfg.RateLimit.DefaultBurst, "token-bucket burst of a tenant whose record sets none")
	lim.Float64Var(&cfg.RateLimit.BytesRate, "tenant-bytes-rate", cfg.RateLimit.BytesRate, "request bytes per second per tenant (a second token bucket, weighing requests by size: RESOURCE_EXHAUSTED RATE_LIMITED with RetryInfo above it); 0: off")
	lim.IntVar(&cfg.RateLimit.BytesBurst, "tenant-bytes-burst", cfg.RateLimit.BytesBurst, "byte-bucket size per tenant; a request larger than it needs a full bucket (keep it at least --max-message-bytes)")
	lim.IntVar(&cfg.MaxRecvMsgBytes, "max-message-bytes", cfg.MaxRecvMsgBytes, "largest request message")
	r.StringVar(&cfg.MCP.PublicURL, "mcp-public-url", "", "base URL clients reach MCP at (https://mcp.example.com): with it, an MCP JWT's audience must be <it>/t/<tenant>/mcp (not --jwt-audience), 401s name the RFC 9728 metadata, served at /.well-known/oauth-protected-resource/t/<tenant>/mcp; never taken from the Host header")
	lim.Int64Var(&cfg.MCP.MaxBodyBytes, "max-mcp-body-bytes", cfg.MCP.MaxBodyBytes, "largest MCP request body (413 above)")
	lim.DurationVar(&cfg.Forward.DefaultTimeout, "default-timeout", cfg.Forward.DefaultTimeout, "deadline of a call whose caller set none")
	lim.DurationVar(&cfg.Forward.MovingHold, "moving-hold", cfg.Forward.MovingHold, "how long a call (gRPC or MCP) of a tenant being cut over or moving waits before UNAVAILABLE TENANT_MOVING / 503")
	lim.Int64Var(&cfg.Forward.ReadCache.MaxBytes, "read-cache-bytes", cfg.Forward.ReadCache.MaxBytes, "byte budget of the read cache that answers STALE ContextService Read/GetMemory calls without a hop to the cell, kept coherent by the tenants' change streams (docs/cache.md); 0 (default) turns it off")
	lim.IntVar(&cfg.Forward.ReadCache.MaxEntries, "read-cache-entries", cfg.Forward.ReadCache.MaxEntries, "most answers the read cache holds")
	lim.IntVar(&cfg.Forward.ReadCache.MaxTenants, "read-cache-tenants", cfg.Forward.ReadCache.MaxTenants, "most tenants the read cache follows (one change stream each; the least recently used is dropped)")

	logf := pflag.NewFlagSet("logging", pflag.ContinueOnError)
	logf.StringVar(&logLevel, "log-level", logLevel, "trace, debug, info, warn or error")
	logf.StringVar(&logFormat, "log-format", logFormat, "text or json (logs go to stderr)")

	groups := []flagGroup{{"Router", r}, {"etcd", etcd}, {"Authentication", a}, {"Limits", lim}, {"Server limits", serverLimitFlags(&cfg.GRPCLimits, &cfg.HTTPLimits)}, {"Logging", logf}}
	for _, g := range groups {
		cmd.Flags().AddFlagSet(g.set)
	}
	cmd.SetUsageFunc(groupedUsage(groups))
	return cmd
}

func runRouter(cmd *cobra.Command, cfg router.Config, stopSignals func()) error {
	ctx := cmd.Context()
	cfg.MCP.CutoverHold = cfg.Forward.MovingHold // one flag bounds both holds
	s, err := router.Start(ctx, cfg)
	if err != nil {
		var le *router.ListenError
		if errors.As(err, &le) {
			return fmt.Errorf("--%s-addr %s: %s", le.Name, le.Addr, le.Reason())
		}
		return err
	}
	<-ctx.Done()
	if stopSignals != nil {
		stopSignals()
	}
	cfg.Logger.Info("shutting down", "timeout", cfg.ShutdownTimeout)
	start := time.Now()
	if err := s.Close(); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	cfg.Logger.Info("stopped", "took", time.Since(start).Round(time.Millisecond))
	return nil
}
