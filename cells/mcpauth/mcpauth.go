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
// of existing keys' records (fresh for KeyCacheTTL; Run follows the key
// records with a watch and evicts a changed key at once, so a revocation
// takes effect on the watch event), a separate bounded LRU of unknown
// ids (NegativeCacheTTL), one shared read for concurrent misses of an id,
// and a token bucket (MissRate, MissBurst) charged for each id found in
// neither cache: empty, the request is refused with RATE_LIMITED and a
// retry hint without reading etcd.
//
// With the registry unreachable, a cached record is used past its TTL only
// while it is younger than APIKeyMaxStaleness; older, the key is refused
// with CREDENTIALS_STALE (UNAVAILABLE) rather than honoured though it may
// have been revoked meanwhile (M9, docs/security.md).
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
	"github.com/cellplane/cellplane/internal/retry"
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
	// read again: a revocation takes effect within it even if the watch
	// (Run) is down or not running; with the watch, at its event. Default
	// 5s.
	KeyCacheTTL time.Duration
	// APIKeyMaxStaleness bounds how old a key's record may be and still
	// authenticate: when the registry cannot be read, a cached record
	// older than this is not used, and the key is refused with
	// CREDENTIALS_STALE (UNAVAILABLE, retry hint) instead of being
	// honoured though it may have been revoked. Hits within KeyCacheTTL
	// are served only while younger than it too. 0 means unbounded (the
	// last answer stands while the registry is down). Unlike the other
	// fields, 0 is not replaced by the default: DefaultConfig sets 5m.
	APIKeyMaxStaleness time.Duration
	// JWTRevocationMaxStaleness: a verified JWT is checked against its
	// tenant's revocation list (tenants/<t>/revoked/, cached per tenant
	// like key records: KeyCacheTTL, KeyCacheSize, dropped at a watch
	// event). With the registry unreachable, a cached list older than this
	// no longer vouches for a JWT (CREDENTIALS_STALE). 0 (the default)
	// means the last list stands, and a tenant whose list was never read
	// is not checked, so JWT callers keep working through an etcd outage.
	JWTRevocationMaxStaleness time.Duration
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
		KeyCacheTTL:        5 * time.Second,
		APIKeyMaxStaleness: 5 * time.Minute,
		KeyCacheSize:       10000,
		NegativeCacheTTL:   30 * time.Second,
		NegativeCacheSize:  10000,
		MissRate:           50,
		MissBurst:          500,
		LookupTimeout:      2 * time.Second,
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
	if c.KeyCacheTTL < 0 || c.NegativeCacheTTL < 0 || c.LookupTimeout < 0 || c.APIKeyMaxStaleness < 0 || c.JWTRevocationMaxStaleness < 0 {
		errs = append(errs, errors.New("KeyCacheTTL, NegativeCacheTTL, LookupTimeout, APIKeyMaxStaleness and JWTRevocationMaxStaleness must be positive"))
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
	keys     *lru[cachedKey]  // keys that exist (revoked ones included)
	revs     *lru[cachedRevs] // tenants' JWT revocation lists
	unknown  *lru[time.Time]  // key ids the registry does not know, and when it said so
	inflight map[string]*flight
	misses   *bucket
	// gen counts watch evictions and purges: a read that began before one
	// may hold a record the watch has since changed, so its answer is not
	// cached (under mu).
	gen uint64

	lookups   *prometheus.CounterVec
	evictions *prometheus.CounterVec
	watched   prometheus.Counter // keys evicted by a watch event
	watchUp   prometheus.Gauge   // 1 while Run's watch is established
}

type cachedKey struct {
	hash      []byte
	principal string      // ApiKey.principal ("" for the key id)
	scopes    auth.Scopes // auth.KeyScopes of ApiKey.scopes
	revoked   bool
	found     bool
	at        time.Time
}

// flight is one registry read that concurrent misses of the same key id
// share (singleflight).
type flight struct {
	gen  uint64 // Authenticator.gen when the read began
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
	resultStale       = "stale"        // refused: the registry is down and the record is older than APIKeyMaxStaleness
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
		revs:     newLRU[cachedRevs](cfg.KeyCacheSize),
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
	a.watched = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "cellplane_mcp_apikey_watch_evictions_total",
		Help: "API keys dropped from the MCP worker's caches because the watch saw their record change (a revocation, a deletion, a new key).",
	})
	a.watchUp = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "cellplane_mcp_apikey_watch_up",
		Help: "1 while the MCP worker's watch on API key records is established (revocations then take effect at once), else 0 (they take effect within the key cache TTL).",
	})
	for _, r := range []string{resultHit, resultNegativeHit, resultMiss, resultShared, resultLimited, resultStale} {
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
	return []prometheus.Collector{a.lookups, a.evictions, a.watched, a.watchUp}
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
func (a *Authenticator) Authenticate(r *http.Request, tenant, resource string) (auth.Identity, error) {
	authz := strings.TrimSpace(r.Header.Get("Authorization"))
	secret := strings.TrimSpace(r.Header.Get("X-Api-Key"))
	if scheme, tok, ok := strings.Cut(authz, " "); ok && strings.EqualFold(scheme, "Bearer") && strings.HasPrefix(strings.TrimSpace(tok), "cpk_") {
		secret = strings.TrimSpace(tok)
	}
	switch {
	case secret != "":
		return a.apiKey(r.Context(), tenant, secret)
	case authz == "":
		return auth.Identity{}, cperr.New(cperr.Unauthenticated, "missing credentials")
	case a.jwt == nil:
		return auth.Identity{}, cperr.New(cperr.Unauthenticated, "bearer tokens are not accepted here; use an API key")
	}
	id, err := a.jwt.AuthenticateFor(r.Context(), authz, resource)
	if err != nil {
		return auth.Identity{}, err
	}
	if id.Tenant != tenant {
		return auth.Identity{}, cperr.New(cperr.PermissionDenied, "the token is not for tenant %s", tenant).With(cperr.MetaTenant, tenant)
	}
	if err := a.tokenRevoked(r.Context(), id); err != nil {
		return auth.Identity{}, err
	}
	return id, nil
}

// apiKey checks an API key of tenant: its identity has the key's
// principal ("key:" + ApiKey.principal, or the key id) and scopes.
func (a *Authenticator) apiKey(ctx context.Context, tenant, secret string) (auth.Identity, error) {
	invalid := cperr.New(cperr.Unauthenticated, "invalid API key")
	id, ok := auth.KeyID(secret)
	if !ok || a.cfg.Registry == nil {
		return auth.Identity{}, invalid
	}
	k, err := a.key(ctx, tenant, id)
	if err != nil {
		return auth.Identity{}, err
	}
	if !k.found || k.revoked || !auth.VerifyKey(secret, k.hash) {
		return auth.Identity{}, invalid
	}
	return auth.Identity{Tenant: tenant, Subject: id, KeyID: id, Method: auth.MethodAPIKey,
		Principal: auth.KeyPrincipal(id, k.principal), Scopes: k.scopes}, nil
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
	if known && now.Sub(stale.at) < a.cfg.KeyCacheTTL && a.withinBound(now, stale) {
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
	f := &flight{gen: a.gen, done: make(chan struct{})}
	a.inflight[ck] = f
	a.mu.Unlock()
	a.lookups.WithLabelValues(resultMiss).Inc()

	// The read is shared: one caller going away must not fail the others.
	f.k, f.err = a.read(context.WithoutCancel(ctx), tenant, id)

	a.mu.Lock()
	delete(a.inflight, ck)
	after := time.Now()
	// unchanged: no watch event since the read began, so the last answer
	// (stale) is still the newest this worker saw.
	unchanged := f.gen == a.gen
	switch {
	case f.err != nil && known && unchanged && a.withinBound(after, stale):
		f.k, f.err = stale, nil // the registry is down: the last answer stands, within the bound
	case f.err != nil && known && unchanged:
		// The registry is down and the last answer is too old to vouch for
		// the key: it may have been revoked meanwhile (M9). Fail closed.
		a.lookups.WithLabelValues(resultStale).Inc()
		f.err = cperr.New(cperr.CredentialsStale, "API keys cannot be checked right now (the registry is unreachable and this worker's record of the key is older than %s)", a.cfg.APIKeyMaxStaleness).
			With(cperr.MetaMaxStaleness, a.cfg.APIKeyMaxStaleness.String()).
			With(cperr.MetaCredentialsAge, after.Sub(stale.at).Round(time.Millisecond).String()).
			WithRetryAfter(time.Second)
	case f.err != nil:
	case !unchanged:
		// The watch changed a key while this read ran: answer with it,
		// but do not cache what may be the record before the change.
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

// withinBound reports whether k is young enough to authenticate
// (APIKeyMaxStaleness; 0: always).
func (a *Authenticator) withinBound(now time.Time, k cachedKey) bool {
	return a.cfg.APIKeyMaxStaleness <= 0 || now.Sub(k.at) <= a.cfg.APIKeyMaxStaleness
}

// Run follows the registry's API-key records until ctx ends and evicts a
// key from both caches as soon as its record changes or is deleted: a
// revocation takes effect at its watch event rather than at KeyCacheTTL
// (and a key created after its id was tried is accepted at once). The
// watch is re-established from where it stopped after a failure; after a
// compaction (events lost) every cached key is dropped. It returns at once
// without a registry. The owner of the Authenticator runs it (in a
// goroutine, for the worker's lifetime): without it, revocations take
// effect within KeyCacheTTL.
func (a *Authenticator) Run(ctx context.Context) {
	st := a.cfg.Registry
	if st == nil {
		return
	}
	defer a.watchUp.Set(0)
	backoff := retry.Policy{Min: 100 * time.Millisecond, Max: 5 * time.Second}.Backoff()
	var from topo.Revision // 0: (re)start from the current revision
	lost := false          // events were lost (a compaction): drop the caches at the restart
	for ctx.Err() == nil {
		if from == 0 {
			lctx, cancel := context.WithTimeout(ctx, a.cfg.LookupTimeout)
			res, err := st.List(lctx, topo.RevisionProbePrefix, topo.ListOptions{Limit: 1})
			cancel()
			if err != nil {
				if errors.Is(err, topo.ErrClosed) || retry.Sleep(ctx, backoff.Next()) != nil {
					return
				}
				continue
			}
			if lost {
				// Events up to res.Revision were not seen: drop what they may
				// have changed. (At the first start, what was cached before
				// the watch is left to KeyCacheTTL.)
				a.purge()
				lost = false
			}
			from = res.Revision + 1
		}
		wctx, cancel := context.WithCancel(ctx)
		var err error
		a.watchUp.Set(1)
		for r := range st.Watch(wctx, topo.TenantsPrefix, from) {
			if r.Err != nil {
				err = r.Err
				break
			}
			backoff.Reset()
			for _, ev := range r.Events {
				from = max(from, topo.Revision(ev.KV.Version)+1)
				switch pk := topo.ParseKey(ev.KV.Key); pk.Kind {
				case topo.KindAPIKey:
					a.evict(pk.ID + "/" + pk.Sub)
				case topo.KindRevokedToken:
					a.evictRevocations(pk.ID)
				}
			}
		}
		cancel()
		a.watchUp.Set(0)
		switch {
		case ctx.Err() != nil || errors.Is(err, topo.ErrClosed):
			return
		case errors.Is(err, topo.ErrCompacted):
			from, lost = 0, true
		}
		if retry.Sleep(ctx, backoff.Next()) != nil {
			return
		}
	}
}

// evict drops a key (tenant/id) from both caches.
func (a *Authenticator) evict(ck string) {
	a.mu.Lock()
	a.gen++
	_, known := a.keys.get(ck)
	a.keys.remove(ck)
	a.unknown.remove(ck)
	a.mu.Unlock()
	if known {
		a.watched.Inc()
	}
}

// evictRevocations drops a tenant's cached revocation list.
func (a *Authenticator) evictRevocations(tenant string) {
	a.mu.Lock()
	a.gen++
	a.revs.remove(tenant)
	a.mu.Unlock()
	a.watched.Inc()
}

// cachedRevs is a tenant's JWT revocation list as read at at.
type cachedRevs struct {
	entries map[string]auth.RevocationEntry
	at      time.Time
}

// tokenRevoked checks a verified JWT against its tenant's revocation list
// (auth.Revoked): from the cache while younger than KeyCacheTTL, else read
// again; with the registry unreachable, the cached list stands within
// JWTRevocationMaxStaleness (0: always; no list at all: not checked).
func (a *Authenticator) tokenRevoked(ctx context.Context, id auth.Identity) error {
	if a.cfg.Registry == nil {
		return nil
	}
	now := time.Now()
	a.mu.Lock()
	cached, known := a.revs.get(id.Tenant)
	gen := a.gen
	a.mu.Unlock()
	list := cached
	if !known || now.Sub(cached.at) >= a.cfg.KeyCacheTTL {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), a.cfg.LookupTimeout)
		recs, _, err := catalog.ListRevokedTokens(rctx, a.cfg.Registry, id.Tenant)
		cancel()
		after := time.Now()
		bound := a.cfg.JWTRevocationMaxStaleness
		switch {
		case err == nil:
			list = cachedRevs{entries: make(map[string]auth.RevocationEntry, len(recs)), at: now}
			for _, r := range recs {
				list.entries[r.Parsed.Sub] = auth.RevocationEntry{RevokedAt: r.Value.GetRevokeTime().AsTime(), ExpiresAt: r.Value.GetExpireTime().AsTime()}
			}
			a.mu.Lock()
			if a.gen == gen { // else a watch event may have changed the list meanwhile
				a.revs.put(id.Tenant, list)
			}
			a.mu.Unlock()
		case bound > 0 && (!known || after.Sub(cached.at) > bound):
			a.lookups.WithLabelValues(resultStale).Inc()
			return cperr.New(cperr.CredentialsStale, "tokens cannot be checked against the revocation list right now (the registry is unreachable and this worker's copy is older than %s)", bound).
				With(cperr.MetaMaxStaleness, bound.String()).
				WithRetryAfter(time.Second)
		}
		// Else the registry is down: the last list (or none) stands.
	}
	if auth.Revoked(id, now, func(e string) (auth.RevocationEntry, bool) { r, ok := list.entries[e]; return r, ok }) {
		return auth.TokenRevokedError()
	}
	return nil
}

// purge drops every cached key and unknown id.
func (a *Authenticator) purge() {
	a.mu.Lock()
	a.gen++
	a.keys = newLRU[cachedKey](a.cfg.KeyCacheSize)
	a.revs = newLRU[cachedRevs](a.cfg.KeyCacheSize)
	a.unknown = newLRU[time.Time](a.cfg.NegativeCacheSize)
	a.mu.Unlock()
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
	return cachedKey{hash: rec.GetSecretHash(), principal: rec.GetPrincipal(), scopes: auth.KeyScopes(rec.GetScopes()),
		revoked: rec.GetRevokeTime() != nil, found: true, at: time.Now()}, nil
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
