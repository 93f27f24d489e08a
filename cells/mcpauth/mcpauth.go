// Package mcpauth authenticates MCP calls at a worker (cells/mcp): tenant
// API keys checked against the hashes in the control plane's registry, and
// bearer JWTs whose audience must be the tenant's MCP URL (RFC 8707 /
// the MCP authorization spec). It implements mcp.Authenticator.
//
//	cfg := mcpauth.DefaultConfig()
//	cfg.Registry, cfg.JWT = st, &jwtCfg
//	a, err := mcpauth.New(cfg)
//	w, err := mcp.New(mcpCfg, conn, a)
//
// Every API-key check that misses the caches is an etcd read, and anyone
// can send a well-formed key id, so the reads are bounded: a bounded LRU
// of existing keys' records (fresh for KeyCacheTTL: a revocation takes
// effect within it, there is no watch), a separate bounded LRU of unknown
// ids (NegativeCacheTTL), one shared read for concurrent misses of an id,
// and a token bucket (MissRate, MissBurst) charged for each id found in
// neither cache: empty, the request is refused with RATE_LIMITED and a
// retry hint without reading etcd.
package mcpauth

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cellplane/cellplane/controlplane/catalog"
	"github.com/cellplane/cellplane/controlplane/topo"
	"github.com/cellplane/cellplane/internal/auth"
	"github.com/cellplane/cellplane/internal/cperr"
	cpv1 "github.com/cellplane/cellplane/proto/cellplane/controlplane/v1"
)

// Config configures an Authenticator. A zero field takes its
// DefaultConfig value.
type Config struct {
	// Registry holds the API key hashes (tenants/<t>/keys/<id>); nil
	// refuses API keys.
	Registry topo.Store
	// JWT, when set, accepts bearer JWTs (Mode must be jwt; the audience is
	// checked per call against the tenant's MCP URL).
	JWT *auth.Config
	// KeyCacheTTL bounds how long a key's record is reused before it is
	// read again: a revocation takes effect within it (there is no watch
	// on the keys at workers). Default 5s.
	KeyCacheTTL time.Duration
	// KeyCacheSize bounds the records of existing keys kept (an LRU: the
	// least recently used one is evicted, one at a time). Default 10000.
	KeyCacheSize int
	// NegativeCacheTTL is how long an unknown key id is remembered as
	// unknown: asking again within it costs no registry read. A key created
	// within it after its id was tried is refused until then (ids are
	// random: only the key's holder knows it). Default 30s.
	NegativeCacheTTL time.Duration
	// NegativeCacheSize bounds the unknown ids remembered (LRU). Default
	// 10000.
	NegativeCacheSize int
	// MissRate and MissBurst are the token bucket of registry reads for
	// key ids found in neither cache (one bucket per Authenticator, so per
	// worker). Empty, a request with an uncached key id is refused at once
	// with RATE_LIMITED and a retry hint, without reading the registry.
	// Re-reading an expired record of a known key is not charged. Defaults
	// 50/s and 500.
	MissRate  float64
	MissBurst int
	// LookupTimeout bounds one registry read. Default 2s.
	LookupTimeout time.Duration
}

// DefaultConfig returns the defaults (Registry and JWT unset).
func DefaultConfig() Config {
	return Config{
		KeyCacheTTL:       5 * time.Second,
		KeyCacheSize:      10000,
		NegativeCacheTTL:  30 * time.Second,
		NegativeCacheSize: 10000,
		MissRate:          50,
		MissBurst:         500,
		LookupTimeout:     2 * time.Second,
	}
}

// withDefaults fills the zero fields from DefaultConfig.
func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.KeyCacheTTL == 0 {
		c.KeyCacheTTL = d.KeyCacheTTL
	}
	if c.KeyCacheSize == 0 {
		c.KeyCacheSize = d.KeyCacheSize
	}
	if c.NegativeCacheTTL == 0 {
		c.NegativeCacheTTL = d.NegativeCacheTTL
	}
	if c.NegativeCacheSize == 0 {
		c.NegativeCacheSize = d.NegativeCacheSize
	}
	if c.MissRate == 0 {
		c.MissRate = d.MissRate
	}
	if c.MissBurst == 0 {
		c.MissBurst = d.MissBurst
	}
	if c.LookupTimeout == 0 {
		c.LookupTimeout = d.LookupTimeout
	}
	return c
}

// Validate reports every unusable setting (zero fields are taken as their
// defaults).
func (c Config) Validate() error {
	c = c.withDefaults()
	var errs []error
	if c.KeyCacheTTL < 0 || c.NegativeCacheTTL < 0 || c.LookupTimeout < 0 {
		errs = append(errs, errors.New("KeyCacheTTL, NegativeCacheTTL and LookupTimeout must be positive"))
	}
	if c.KeyCacheSize < 0 || c.NegativeCacheSize < 0 {
		errs = append(errs, errors.New("KeyCacheSize and NegativeCacheSize must be positive"))
	}
	if c.MissRate < 0 || math.IsNaN(c.MissRate) || math.IsInf(c.MissRate, 0) || c.MissBurst < 0 {
		errs = append(errs, errors.New("MissRate and MissBurst must be positive"))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("mcpauth: invalid config: %w", err)
	}
	return nil
}

// Authenticator implements mcp.Authenticator.
type Authenticator struct {
	cfg Config
	jwt *auth.Authenticator

	mu       sync.Mutex
	keys     *lru[cachedKey] // keys that exist (revoked ones included)
	unknown  *lru[time.Time] // key ids the registry does not know, and when it said so
	inflight map[string]*flight
	misses   *bucket

	lookups   *prometheus.CounterVec
	evictions *prometheus.CounterVec
}

type cachedKey struct {
	hash    []byte
	revoked bool
	found   bool
	at      time.Time
}

// flight is one registry read that concurrent misses of the same key id
// share (singleflight).
type flight struct {
	done chan struct{}
	k    cachedKey
	err  error
}

// Results of a key lookup (the result label of
// cellplane_mcp_apikey_lookups_total).
const (
	resultHit         = "hit"          // a fresh record of a known key
	resultNegativeHit = "negative_hit" // an id remembered as unknown
	resultMiss        = "miss"         // read from the registry
	resultShared      = "shared"       // waited for a concurrent read of the same id
	resultLimited     = "limited"      // refused: the miss budget is spent
)

// maxRetryAfter caps the retry hint of a RATE_LIMITED refusal.
const maxRetryAfter = time.Minute

// New returns an Authenticator; with neither a registry nor JWT it refuses
// everything (use no authenticator at all to turn auth off).
func New(cfg Config) (*Authenticator, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	a := &Authenticator{
		cfg:      cfg,
		keys:     newLRU[cachedKey](cfg.KeyCacheSize),
		unknown:  newLRU[time.Time](cfg.NegativeCacheSize),
		inflight: map[string]*flight{},
		misses:   newBucket(cfg.MissRate, cfg.MissBurst),
		lookups: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cellplane_mcp_apikey_lookups_total",
			Help: "API-key lookups at the MCP worker, by result: hit (cached key), negative_hit (cached unknown id), miss (registry read), shared (joined a concurrent read of the same id), limited (refused: registry-read budget spent).",
		}, []string{"result"}),
		evictions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cellplane_mcp_apikey_cache_evictions_total",
			Help: "Entries evicted from the MCP worker's API-key caches when full, by cache (keys, unknown).",
		}, []string{"cache"}),
	}
	for _, r := range []string{resultHit, resultNegativeHit, resultMiss, resultShared, resultLimited} {
		a.lookups.WithLabelValues(r)
	}
	a.evictions.WithLabelValues("keys")
	a.evictions.WithLabelValues("unknown")
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

// Collectors returns the authenticator's metrics, for the caller to
// register (the MCP worker adds them to its own).
func (a *Authenticator) Collectors() []prometheus.Collector {
	return []prometheus.Collector{a.lookups, a.evictions}
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

// key returns the key record: from the key cache while fresh; "not
// found" from the unknown-id cache while fresh; else from one registry
// read shared by concurrent callers, charged to the miss budget unless
// the key is known (an expired record being refreshed).
func (a *Authenticator) key(ctx context.Context, tenant, id string) (cachedKey, error) {
	ck := tenant + "/" + id
	now := time.Now()
	a.mu.Lock()
	stale, known := a.keys.get(ck)
	if known && now.Sub(stale.at) < a.cfg.KeyCacheTTL {
		a.mu.Unlock()
		a.lookups.WithLabelValues(resultHit).Inc()
		return stale, nil
	}
	if !known {
		if at, ok := a.unknown.get(ck); ok {
			if now.Sub(at) < a.cfg.NegativeCacheTTL {
				a.mu.Unlock()
				a.lookups.WithLabelValues(resultNegativeHit).Inc()
				return cachedKey{at: at}, nil
			}
			a.unknown.remove(ck)
		}
	}
	if f, ok := a.inflight[ck]; ok {
		a.mu.Unlock()
		a.lookups.WithLabelValues(resultShared).Inc()
		select {
		case <-f.done:
			return f.k, f.err
		case <-ctx.Done(): // the caller went away (or its deadline passed)
			return cachedKey{}, cperr.New(cperr.Unauthenticated, "the API key check did not finish: %v", ctx.Err()).WithRetryAfter(time.Second)
		}
	}
	if !known {
		if ok, wait := a.misses.take(now); !ok {
			a.mu.Unlock()
			a.lookups.WithLabelValues(resultLimited).Inc()
			// The hint is when the next read is allowed, capped: a retry
			// then competes with the flood anyway.
			return cachedKey{}, cperr.New(cperr.RateLimited, "too many unknown API keys checked at this worker; retry later").WithRetryAfter(min(wait, maxRetryAfter))
		}
	}
	f := &flight{done: make(chan struct{})}
	a.inflight[ck] = f
	a.mu.Unlock()
	a.lookups.WithLabelValues(resultMiss).Inc()

	// The read is shared: one caller going away must not fail the others.
	f.k, f.err = a.read(context.WithoutCancel(ctx), tenant, id)

	a.mu.Lock()
	delete(a.inflight, ck)
	switch {
	case f.err != nil && known:
		f.k, f.err = stale, nil // the registry is down: the last answer stands
	case f.err != nil:
	case f.k.found:
		a.unknown.remove(ck)
		if a.keys.put(ck, f.k) {
			a.evictions.WithLabelValues("keys").Inc()
		}
	default:
		a.keys.remove(ck)
		if a.unknown.put(ck, f.k.at) {
			a.evictions.WithLabelValues("unknown").Inc()
		}
	}
	a.mu.Unlock()
	close(f.done)
	return f.k, f.err
}

// read reads a key record from the registry.
func (a *Authenticator) read(ctx context.Context, tenant, id string) (cachedKey, error) {
	ctx, cancel := context.WithTimeout(ctx, a.cfg.LookupTimeout)
	defer cancel()
	rec := &cpv1.ApiKey{}
	_, err := catalog.Get(ctx, a.cfg.Registry, topo.APIKeyKey(tenant, id), rec)
	switch {
	case errors.Is(err, topo.ErrNotFound):
		return cachedKey{at: time.Now()}, nil
	case err != nil:
		e := cperr.New(cperr.Unauthenticated, "API keys cannot be checked right now (the registry is unreachable)")
		e.RetryAfter = time.Second
		return cachedKey{}, e
	}
	return cachedKey{hash: rec.GetSecretHash(), revoked: rec.GetRevokeTime() != nil, found: true, at: time.Now()}, nil
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
