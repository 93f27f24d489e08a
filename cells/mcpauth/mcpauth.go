// Package mcpauth authenticates MCP calls at a worker (cells/mcp): tenant
// API keys checked against the hashes in the control plane's registry, and
// bearer JWTs whose audience must be the tenant's MCP URL (RFC 8707 /
// the MCP authorization spec). It implements mcp.Authenticator.
//
//	a, err := mcpauth.New(mcpauth.Config{Registry: st, JWT: &jwtCfg})
//	w, err := mcp.New(mcpCfg, conn, a)
package mcpauth

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/cellplane/cellplane/controlplane/catalog"
	"github.com/cellplane/cellplane/controlplane/topo"
	"github.com/cellplane/cellplane/internal/auth"
	"github.com/cellplane/cellplane/internal/cperr"
	cpv1 "github.com/cellplane/cellplane/proto/cellplane/controlplane/v1"
)

// Config configures an Authenticator.
type Config struct {
	// Registry holds the API key hashes (tenants/<t>/keys/<id>); nil
	// refuses API keys.
	Registry topo.Store
	// JWT, when set, accepts bearer JWTs (Mode must be jwt; the audience is
	// checked per call against the tenant's MCP URL).
	JWT *auth.Config
	// KeyCacheTTL bounds how long a key's record is reused before it is
	// read again (a revocation takes effect within it). Default 5s.
	KeyCacheTTL time.Duration
	// LookupTimeout bounds one registry read. Default 2s.
	LookupTimeout time.Duration
}

// Authenticator implements mcp.Authenticator.
type Authenticator struct {
	cfg Config
	jwt *auth.Authenticator

	mu    sync.Mutex
	cache map[string]cachedKey
}

type cachedKey struct {
	hash    []byte
	revoked bool
	found   bool
	at      time.Time
}

const maxCachedKeys = 10000

// New returns an Authenticator; with neither a registry nor JWT it refuses
// everything (use no authenticator at all to turn auth off).
func New(cfg Config) (*Authenticator, error) {
	if cfg.KeyCacheTTL <= 0 {
		cfg.KeyCacheTTL = 5 * time.Second
	}
	if cfg.LookupTimeout <= 0 {
		cfg.LookupTimeout = 2 * time.Second
	}
	a := &Authenticator{cfg: cfg, cache: map[string]cachedKey{}}
	if cfg.JWT != nil {
		jc := *cfg.JWT
		jc.Mode = auth.ModeJWT
		jc.PerRequestAudience = true
		j, err := auth.New(jc, nil)
		if err != nil {
			return nil, err
		}
		a.jwt = j
	}
	return a, nil
}

// ReloadJWKS re-reads the JWKS file (no-op without JWT).
func (a *Authenticator) ReloadJWKS() error {
	if a.jwt == nil {
		return nil
	}
	return a.jwt.ReloadJWKS()
}

// Authenticate implements mcp.Authenticator: "Authorization: Bearer
// <API key | JWT>" or "X-Api-Key: <API key>".
func (a *Authenticator) Authenticate(r *http.Request, tenant, resource string) (string, error) {
	authz := strings.TrimSpace(r.Header.Get("Authorization"))
	secret := strings.TrimSpace(r.Header.Get("X-Api-Key"))
	if scheme, tok, ok := strings.Cut(authz, " "); ok && strings.EqualFold(scheme, "Bearer") && strings.HasPrefix(strings.TrimSpace(tok), "cpk_") {
		secret = strings.TrimSpace(tok)
	}
	switch {
	case secret != "":
		return a.apiKey(r.Context(), tenant, secret)
	case authz == "":
		return "", cperr.New(cperr.Unauthenticated, "missing credentials")
	case a.jwt == nil:
		return "", cperr.New(cperr.Unauthenticated, "bearer tokens are not accepted here; use an API key")
	}
	id, err := a.jwt.AuthenticateFor(r.Context(), authz, resource)
	if err != nil {
		return "", err
	}
	if id.Tenant != tenant {
		return "", cperr.New(cperr.PermissionDenied, "the token is not for tenant %s", tenant).With(cperr.MetaTenant, tenant)
	}
	return "jwt:" + id.Subject, nil
}

func (a *Authenticator) apiKey(ctx context.Context, tenant, secret string) (string, error) {
	invalid := cperr.New(cperr.Unauthenticated, "invalid API key")
	id, ok := auth.KeyID(secret)
	if !ok || a.cfg.Registry == nil {
		return "", invalid
	}
	k, err := a.key(ctx, tenant, id)
	if err != nil {
		return "", err
	}
	if !k.found || k.revoked || !auth.VerifyKey(secret, k.hash) {
		return "", invalid
	}
	return "key:" + id, nil
}

// key returns the key record, from the cache while it is fresh.
func (a *Authenticator) key(ctx context.Context, tenant, id string) (cachedKey, error) {
	ck := tenant + "/" + id
	a.mu.Lock()
	k, ok := a.cache[ck]
	a.mu.Unlock()
	if ok && time.Since(k.at) < a.cfg.KeyCacheTTL {
		return k, nil
	}
	cctx, cancel := context.WithTimeout(ctx, a.cfg.LookupTimeout)
	defer cancel()
	rec := &cpv1.ApiKey{}
	_, err := catalog.Get(cctx, a.cfg.Registry, topo.APIKeyKey(tenant, id), rec)
	switch {
	case errors.Is(err, topo.ErrNotFound):
		k = cachedKey{at: time.Now()}
	case err != nil:
		if ok {
			return k, nil // the registry is down: the last answer stands
		}
		e := cperr.New(cperr.Unauthenticated, "API keys cannot be checked right now (the registry is unreachable)")
		e.RetryAfter = time.Second
		return cachedKey{}, e
	default:
		k = cachedKey{hash: rec.GetSecretHash(), revoked: rec.GetRevokeTime() != nil, found: true, at: time.Now()}
	}
	a.mu.Lock()
	if len(a.cache) >= maxCachedKeys {
		clear(a.cache)
	}
	a.cache[ck] = k
	a.mu.Unlock()
	return k, nil
}

// Challenge implements mcp.Authenticator.
func (a *Authenticator) Challenge(err error) string {
	if a.jwt != nil {
		return a.jwt.WWWAuthenticate(err)
	}
	return `Bearer realm="cellplane"`
}

// AuthorizationServers implements mcp.Authenticator: the JWT issuer.
func (a *Authenticator) AuthorizationServers() []string {
	if a.cfg.JWT == nil || a.cfg.JWT.Issuer == "" {
		return nil
	}
	return []string{a.cfg.JWT.Issuer}
}
