package main

import (
	"context"
	"log/slog"
	"time"

	"github.com/spf13/pflag"

	"github.com/cellplane/cellplane/cells/mcp"
	"github.com/cellplane/cellplane/cells/mcpauth"
	"github.com/cellplane/cellplane/controlplane/topo"
	"github.com/cellplane/cellplane/internal/auth"
	"github.com/cellplane/cellplane/internal/readcache"
)

// mcpFlags are the MCP worker's flags, shared by 'cell' (prefixed mcp-)
// and 'worker' (no prefix).
type mcpFlags struct {
	auth        string
	jwks        string
	issuer      string
	tenantClaim string
	origins     string
	maxBody     int64
	publicURL   string
	fastCalls   bool
	readCache   readcache.Config
	sessions    int
	subsPerSess int
	sessionIdle time.Duration
	keys        mcpauth.Config // the key caches and the miss budget
}

func (f *mcpFlags) register(fs *pflag.FlagSet, prefix string) {
	d := mcp.DefaultConfig()
	f.auth, f.tenantClaim, f.maxBody = "auto", auth.DefaultConfig().TenantClaim, d.MaxBodyBytes
	fs.StringVar(&f.auth, prefix+"auth", f.auth, "MCP authentication: apikey (tenant API keys from the registry), jwt (bearer JWTs whose audience is the tenant's MCP URL; API keys too), none, or auto (apikey with a registry, else none)")
	fs.StringVar(&f.jwks, prefix+"jwks-file", "", "jwt: JSON Web Key Set file with the RS256/ES256 verification keys")
	fs.StringVar(&f.issuer, prefix+"jwt-issuer", "", "jwt: required issuer (iss), also published as the authorization server")
	fs.StringVar(&f.tenantClaim, prefix+"jwt-tenant-claim", f.tenantClaim, "jwt: claim holding the tenant id")
	fs.StringVar(&f.origins, prefix+"allowed-origins", "", "comma-separated browser origins allowed to call (scheme://host[:port]); requests with another Origin get 403 (default: same host only)")
	fs.Int64Var(&f.maxBody, prefix+"max-body-bytes", f.maxBody, "largest MCP request body (413 above it)")
	fs.BoolVar(&f.fastCalls, prefix+"fast-tool-calls", d.FastToolCalls, "serve a single tools/call POST without the MCP SDK's per-request session (same checks, response and errors; everything else goes to the SDK); false sends every request through the SDK")
	fs.StringVar(&f.publicURL, prefix+"public-url", "", "base URL clients reach MCP at (https://mcp.example.com): a JWT's audience must be <it>/t/<tenant>/mcp, and the RFC 9728 metadata names it; never taken from the Host header (default: http://<the advertised HTTP address>)")
	fs.IntVar(&f.sessions, prefix+"max-sessions", d.MaxSessions, "most 2025-era MCP sessions (an initialize at a protocol version before 2026-07-28 opens one, for resources/subscribe) held at once; an initialize beyond it gets 429 QUOTA_EXCEEDED")
	fs.IntVar(&f.subsPerSess, prefix+"max-subscriptions-per-session", d.MaxSubscriptionsPerSession, "most resources/subscribe URIs of one 2025-era session (QUOTA_EXCEEDED beyond)")
	fs.DurationVar(&f.sessionIdle, prefix+"session-idle-timeout", d.SessionIdleTimeout, "a 2025-era session that receives no request for this long ends (its client initializes again); 0: never")
	f.readCache = d.ReadCache
	fs.Int64Var(&f.readCache.MaxBytes, prefix+"read-cache-bytes", f.readCache.MaxBytes, "byte budget of the read cache that serves context_read/memory_get calls asking for stale answers (max_staleness_ms), kept coherent by the tenants' change streams (docs/cache.md); 0 (default) turns it off")
	fs.IntVar(&f.readCache.MaxEntries, prefix+"read-cache-entries", f.readCache.MaxEntries, "most answers the read cache holds")
	fs.IntVar(&f.readCache.MaxTenants, prefix+"read-cache-tenants", f.readCache.MaxTenants, "most tenants the read cache follows (one change stream each; the least recently used is dropped)")
	k := mcpauth.DefaultConfig()
	f.keys = k
	fs.DurationVar(&f.keys.KeyCacheTTL, prefix+"key-cache-ttl", k.KeyCacheTTL, "how long an API key's record is reused before it is read again (a revocation takes effect at once through the watch on key records, or within this TTL while the watch is down)")
	fs.DurationVar(&f.keys.APIKeyMaxStaleness, prefix+"api-key-max-staleness", k.APIKeyMaxStaleness, "with etcd unreachable, a cached API key record older than this no longer authenticates: the key is refused (503 CREDENTIALS_STALE) rather than honoured though it may have been revoked; 0 unbounded (the last answer stands while etcd is down)")
	fs.DurationVar(&f.keys.JWTRevocationMaxStaleness, prefix+"jwt-revocation-max-staleness", k.JWTRevocationMaxStaleness, "jwt: JWTs are checked against the tenant's revocation list (cellctl tenant token revoke); with etcd unreachable, a cached list older than this no longer vouches for a JWT (503 CREDENTIALS_STALE); 0 (default) the last list stands")
	fs.IntVar(&f.keys.KeyCacheSize, prefix+"key-cache-size", k.KeyCacheSize, "API keys whose records are cached (least recently used evicted first)")
	fs.DurationVar(&f.keys.NegativeCacheTTL, prefix+"unknown-key-ttl", k.NegativeCacheTTL, "how long an unknown API key id is remembered as unknown (no registry read for it meanwhile)")
	fs.IntVar(&f.keys.NegativeCacheSize, prefix+"unknown-key-cache-size", k.NegativeCacheSize, "unknown API key ids remembered (least recently used evicted first)")
	fs.Float64Var(&f.keys.MissRate, prefix+"key-miss-rate", k.MissRate, "registry reads per second for API key ids in neither cache; beyond it (and the burst) such requests get 429 RATE_LIMITED")
	fs.IntVar(&f.keys.MissBurst, prefix+"key-miss-burst", k.MissBurst, "burst of those registry reads")
}

// apply sets the worker configuration from the flags.
func (f *mcpFlags) apply(cfg *mcp.Config) {
	cfg.AllowedOrigins = splitList(f.origins)
	cfg.MaxBodyBytes = f.maxBody
	cfg.PublicURL = f.publicURL
	cfg.FastToolCalls = f.fastCalls
	cfg.ReadCache = f.readCache
	cfg.MaxSessions, cfg.MaxSubscriptionsPerSession, cfg.SessionIdleTimeout = f.sessions, f.subsPerSess, f.sessionIdle
}

// authenticator builds the MCP authenticator; nil means no authentication.
// An API-key authenticator follows the key records (mcpauth.Run) until
// ctx ends.
func (f *mcpFlags) authenticator(ctx context.Context, registry topo.Store, log *slog.Logger) (mcp.Authenticator, error) {
	mode := f.auth
	if mode == "auto" {
		mode = "none"
		if registry != nil {
			mode = "apikey"
		}
	}
	switch mode {
	case "none":
		return nil, nil
	case "apikey":
		if registry == nil {
			return nil, usageErrorf("MCP auth apikey needs the registry (--etcd-endpoints): API keys live there")
		}
		kc := f.keys
		kc.Registry = registry
		return startAuth(ctx, kc)
	case "jwt":
		jc := auth.DefaultConfig()
		jc.JWKSFile, jc.Issuer, jc.TenantClaim, jc.Logger = f.jwks, f.issuer, f.tenantClaim, log
		kc := f.keys
		kc.Registry, kc.JWT = registry, &jc
		return startAuth(ctx, kc)
	}
	return nil, usageErrorf("MCP auth must be auto, apikey, jwt or none, got %q", f.auth)
}

// startAuth builds an mcpauth.Authenticator and runs its watch on the key
// records (revocations take effect at once) until ctx ends.
func startAuth(ctx context.Context, kc mcpauth.Config) (mcp.Authenticator, error) {
	a, err := mcpauth.New(kc)
	if err != nil {
		return nil, err
	}
	go a.Run(ctx)
	return a, nil
}
