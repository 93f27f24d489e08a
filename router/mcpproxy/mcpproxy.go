// Package mcpproxy is the router's HTTP front for MCP: it serves
// /t/<tenant>/mcp (POST, GET, DELETE) by proxying each request to a worker
// of the tenant's cell, chosen by least connections among the healthy
// ones — except a 2025-era session's requests, which go to the worker
// holding the session: the proxy hands the client Mcp-Session-Id
// "<base64url worker address>.<worker's id>" and forwards a request
// carrying one to that address only if it is one of the tenant's current
// workers (else 404: the client initializes again). Server-sent events
// stream through unbuffered (every write is
// flushed, X-Accel-Buffering: no), the request body is bounded, hop-by-hop
// headers are dropped, and the caller's check (auth, rate limit) runs
// before anything is forwarded. With Config.TLS it reaches workers over
// https with mutual TLS (the router's identity; only a node or worker may
// answer).
//
//	p, _ := mcpproxy.New(cfg, resolve, check)
//	mux.Handle("/t/", p)
//
// While the tenant is being cut over to another cell (Route.CuttingOver),
// a request waits for the route to change before a worker is picked, for
// at most Config.CutoverHold (then 503 TENANT_MOVING + Retry-After), so
// that a move is a pause for MCP clients rather than an error.
//
// Errors are JSON {"error":{"reason":…,"message":…}} with the status the
// reason maps to (401 + WWW-Authenticate, 403, 404, 413, 429 + Retry-After,
// 503 + Retry-After).
package mcpproxy

import (
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cellplane/cellplane/internal/auth"
	"github.com/cellplane/cellplane/internal/cperr"
	"github.com/cellplane/cellplane/internal/rpcerr"
	"github.com/cellplane/cellplane/internal/serve"
)

// Route is where a tenant's MCP requests go.
type Route struct {
	Cell  string
	Epoch uint64
	// Workers are the HTTP addresses serving MCP for the cell (shared,
	// read-only).
	Workers []string
	// CuttingOver: a move or failover is cutting the tenant over to
	// another cell; requests wait for the route to change.
	CuttingOver bool
}

// Resolver finds a tenant's route. It must not block (the router answers
// it from memory).
type Resolver func(tenant string) (Route, bool)

// Waiter waits until the tenant's route differs from seen (another cell,
// epoch or CuttingOver) and returns it (ok false: no longer routable), or
// returns ctx's error when ctx ends first.
type Waiter func(ctx context.Context, tenant string, seen Route) (Route, bool, error)

// Check authorises a request for tenant (authentication, rate limits). It
// returns a *cperr.Error to refuse.
type Check func(r *http.Request, tenant string) error

// Config configures the proxy.
type Config struct {
	// MaxBodyBytes bounds a request body (413 above it).
	MaxBodyBytes int64
	// Path is the worker's MCP path for tenant t; default "/t/<t>/mcp".
	Path func(tenant string) string
	// FailureCooldown is how long a worker that refused a connection is
	// skipped.
	FailureCooldown time.Duration
	// DialTimeout bounds connecting to a worker.
	DialTimeout time.Duration
	// WWWAuthenticate gives the header of a 401 (nil: `Bearer realm="cellplane"`).
	WWWAuthenticate func(err error) string
	// WaitChange, when set, holds the requests of a tenant that is cutting
	// over until its route changes (nil: they go to the current cell).
	WaitChange Waiter
	// CutoverHold bounds such a hold: then 503 TENANT_MOVING with
	// Retry-After. Default 2 s (the gRPC forwarder's MovingHold).
	CutoverHold time.Duration
	// CutoverRetryAfter is the Retry-After of that 503. Default 1 s.
	CutoverRetryAfter time.Duration
	// PublicURL, when set, is the base URL clients reach the router's MCP
	// at ("https://mcp.example.com"): tenant t's MCP URL is
	// PublicURL+"/t/<t>/mcp" (Resource), the audience the caller's Check
	// requires of a JWT, named in a 401's resource_metadata, and the proxy
	// serves the RFC 9728 metadata of it at
	// /.well-known/oauth-protected-resource/t/<t>/mcp. Never derived from
	// the Host header. Empty: no metadata, and Resource is "".
	PublicURL string
	// AuthorizationServers are named in that metadata (the JWT issuer).
	AuthorizationServers []string
	// TLS, when set, is the client side of mutual TLS to the workers
	// (https): the router's identity and the check that a worker is one of
	// the cluster's (router.Config.InternalTLS gives
	// pki.Source.ClientTLSConfig(pki.ExpectKinds(node, worker))). Workers
	// serving mutual TLS accept MCP from routers only. nil: plain http,
	// which such a worker refuses at the handshake.
	TLS    *tls.Config
	Logger *slog.Logger
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	return Config{MaxBodyBytes: 4 << 20, FailureCooldown: 2 * time.Second, DialTimeout: 2 * time.Second,
		CutoverHold: 2 * time.Second, CutoverRetryAfter: time.Second}
}

// Validate reports an unusable configuration.
func (c Config) Validate() error {
	if c.MaxBodyBytes <= 0 || c.FailureCooldown < 0 || c.DialTimeout <= 0 {
		return errors.New("mcpproxy: MaxBodyBytes and DialTimeout must be positive, FailureCooldown >= 0")
	}
	if c.CutoverHold <= 0 || c.CutoverRetryAfter <= 0 {
		return errors.New("mcpproxy: CutoverHold and CutoverRetryAfter must be positive")
	}
	if c.PublicURL != "" {
		u, err := url.Parse(c.PublicURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil ||
			u.RawQuery != "" || u.ForceQuery || u.Fragment != "" {
			return fmt.Errorf("mcpproxy: PublicURL %q: want an absolute http or https URL (scheme://host[:port][/prefix]) without user info, query or fragment", c.PublicURL)
		}
	}
	return nil
}

// metadataPrefix is the RFC 9728 well-known path prefix.
const metadataPrefix = "/.well-known/oauth-protected-resource"

// Resource is tenant's MCP URL under Config.PublicURL ("" without one).
func (p *Proxy) Resource(tenant string) string {
	if p.cfg.PublicURL == "" {
		return ""
	}
	return strings.TrimRight(p.cfg.PublicURL, "/") + "/t/" + tenant + "/mcp"
}

// metadataURL is the RFC 9728 §3.1 metadata URL of tenant's resource.
func (p *Proxy) metadataURL(tenant string) string {
	u, err := url.Parse(p.Resource(tenant))
	if err != nil {
		return ""
	}
	u.Path = metadataPrefix + u.Path
	u.RawPath = ""
	return u.String()
}

// serveMetadata serves the RFC 9728 protected-resource metadata of
// tenant's MCP URL (GET /.well-known/oauth-protected-resource/t/<t>/mcp).
func (p *Proxy) serveMetadata(w http.ResponseWriter, r *http.Request) {
	tenant, ok := tenantOf(strings.TrimPrefix(r.URL.Path, metadataPrefix))
	if !ok || p.cfg.PublicURL == "" {
		serve.WriteError(w, http.StatusNotFound, "NOT_FOUND", "no metadata here; use /.well-known/oauth-protected-resource/t/<tenant>/mcp")
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		serve.WriteError(w, http.StatusMethodNotAllowed, "INVALID_ARGUMENT", "use GET")
		return
	}
	auth.WriteProtectedResource(w, auth.NewProtectedResource(p.Resource(tenant), tenant, p.cfg.AuthorizationServers))
}

// Proxy is the http.Handler.
type Proxy struct {
	cfg     Config
	resolve Resolver
	check   Check
	log     *slog.Logger
	rp      *httputil.ReverseProxy

	mu      sync.Mutex
	backend map[string]*backend

	requests *prometheus.CounterVec
	held     *prometheus.HistogramVec
}

type backend struct {
	active    atomic.Int64
	failUntil atomic.Int64 // unix nanos
}

type ctxKey struct{}

type target struct {
	addr, path string
	err        error
	pinned     bool // a session's request: only its worker can serve it
}

// New returns a proxy.
func New(cfg Config, resolve Resolver, check Check) (*Proxy, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Path == nil {
		cfg.Path = func(t string) string { return "/t/" + t + "/mcp" }
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	p := &Proxy{cfg: cfg, resolve: resolve, check: check, log: log, backend: map[string]*backend{},
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cellplane_router_mcp_requests_total",
			Help: "MCP HTTP requests through the router, by method and status class.",
		}, []string{"method", "status"}),
		held: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "cellplane_router_mcp_hold_duration_seconds",
			Help:    "Time an MCP request was held while its tenant was cut over, by outcome (released, expired, canceled, gone).",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 15),
		}, []string{"outcome"}),
	}
	dialer := &net.Dialer{Timeout: cfg.DialTimeout, KeepAlive: 30 * time.Second}
	transport := &http.Transport{
		DialContext:         dialer.DialContext,
		MaxIdleConnsPerHost: 64,
		IdleConnTimeout:     90 * time.Second,
		// SSE responses must not be compressed or buffered on the way.
		DisableCompression: true,
		// HTTP/1.1 either way (workers offer only it): one worker
		// connection per request in flight, kept alive.
		TLSClientConfig: cfg.TLS,
	}
	scheme := "http"
	if cfg.TLS != nil {
		scheme = "https"
	}
	p.rp = &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			t := pr.In.Context().Value(ctxKey{}).(*target)
			pr.Out.URL.Scheme = scheme
			pr.Out.URL.Host = t.addr
			pr.Out.URL.Path = t.path
			pr.Out.URL.RawPath = ""
			// The Host stays the client's (workers compare a browser's
			// Origin with it); nothing derives a token's audience from it:
			// workers take the tenant's MCP URL from their configured
			// public URL (mcp.Config.PublicURL). Credentials pass through:
			// workers check them again.
			pr.SetXForwarded()
		},
		Transport:     transport,
		FlushInterval: -1, // flush after every write: SSE events go out as they come
		ModifyResponse: func(resp *http.Response) error {
			resp.Header.Set("X-Accel-Buffering", "no")
			if sid := resp.Header.Get(SessionHeader); sid != "" {
				t := resp.Request.Context().Value(ctxKey{}).(*target)
				resp.Header.Set(SessionHeader, encodeSession(t.addr, sid))
			}
			return nil
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			t := r.Context().Value(ctxKey{}).(*target)
			if errors.Is(err, context.Canceled) {
				return // the client went away
			}
			p.markFailed(t.addr)
			p.log.Warn("MCP worker unreachable", "worker", t.addr, "err", err)
			if t.pinned {
				sessionNotFound(w, "the MCP session's worker did not answer")
				return
			}
			p.writeError(w, r, cperr.New(cperr.CellUnavailable, "the tenant's MCP worker did not answer; retry").WithRetryAfter(time.Second))
		},
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	return p, nil
}

// Collectors returns the proxy's metrics.
func (p *Proxy) Collectors() []prometheus.Collector {
	return []prometheus.Collector{p.requests, p.held}
}

// ServeHTTP implements http.Handler for /t/<tenant>/mcp.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	sw := &serve.StatusWriter{ResponseWriter: w}
	defer func() { p.requests.WithLabelValues(methodLabel(r.Method), strconv.Itoa(sw.Status/100)+"xx").Inc() }()
	w = sw

	if strings.HasPrefix(r.URL.Path, metadataPrefix+"/") {
		p.serveMetadata(w, r)
		return
	}
	tenant, ok := tenantOf(r.URL.Path)
	if !ok {
		p.writeError(w, r, cperr.New(cperr.InvalidArgument, "the MCP endpoint is /t/<tenant>/mcp"))
		return
	}
	switch r.Method {
	case http.MethodPost, http.MethodGet, http.MethodDelete:
	default:
		w.Header().Set("Allow", "GET, POST, DELETE")
		serve.WriteError(w, http.StatusMethodNotAllowed, "INVALID_ARGUMENT", "method not allowed")
		return
	}
	if err := p.check(r, tenant); err != nil {
		p.writeError(w, r, err)
		return
	}
	if r.ContentLength > p.cfg.MaxBodyBytes {
		serve.WriteError(w, http.StatusRequestEntityTooLarge, string(cperr.InvalidArgument), "request body over "+strconv.FormatInt(p.cfg.MaxBodyBytes, 10)+" bytes")
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, p.cfg.MaxBodyBytes)

	route, ok := p.resolve(tenant)
	if ok && route.CuttingOver && p.cfg.WaitChange != nil {
		var err error
		if route, ok, err = p.hold(r.Context(), tenant, route); err != nil {
			if r.Context().Err() == nil {
				p.writeError(w, r, err)
			}
			return
		}
	}
	if !ok {
		p.writeError(w, r, cperr.New(cperr.TenantNotFound, "tenant %s does not exist", tenant))
		return
	}
	var addr string
	pinned := false
	if sid := r.Header.Get(SessionHeader); sid != "" && r.Header.Get("Mcp-Protocol-Version") < "2026-07-28" {
		// A 2025-era session lives on the worker that opened it: forward
		// to it, and only if it is still one of the tenant's workers
		// (the address comes from the client: it must never steer
		// traffic anywhere else).
		a, inner, ok := decodeSession(sid)
		if !ok || !slices.Contains(route.Workers, a) {
			sessionNotFound(w, "no such MCP session (its worker is gone)")
			return
		}
		r.Header.Set(SessionHeader, inner)
		addr, pinned = a, true
	} else if addr = p.pick(route.Workers); addr == "" {
		p.writeError(w, r, cperr.New(cperr.CellUnavailable, "no MCP worker of the tenant's cell is available").WithRetryAfter(time.Second))
		return
	}
	b := p.get(addr)
	b.active.Add(1)
	defer b.active.Add(-1)
	t := &target{addr: addr, path: p.cfg.Path(tenant), pinned: pinned}
	p.rp.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), ctxKey{}, t)))
}

// SessionHeader is the Streamable HTTP session header (2025-era MCP).
const SessionHeader = "Mcp-Session-Id"

// encodeSession is the session id the client sees: the worker's address
// (base64url) and the worker's own id, so that the router (any router)
// can send the session's next requests to its worker without a table.
func encodeSession(addr, sid string) string {
	return base64.RawURLEncoding.EncodeToString([]byte(addr)) + "." + sid
}

// decodeSession reverses encodeSession.
func decodeSession(s string) (addr, sid string, ok bool) {
	enc, sid, ok := strings.Cut(s, ".")
	if !ok || enc == "" || sid == "" {
		return "", "", false
	}
	b, err := base64.RawURLEncoding.DecodeString(enc)
	if err != nil {
		return "", "", false
	}
	return string(b), sid, true
}

// sessionNotFound is the 2025 spec's answer to a session the server does
// not hold: 404, upon which the client initializes again.
func sessionNotFound(w http.ResponseWriter, msg string) {
	serve.WriteError(w, http.StatusNotFound, "NOT_FOUND", msg+": initialize again (and catch up with changes_read from your last cursor)")
}

// tenantOf parses /t/<tenant>/mcp.
func tenantOf(path string) (string, bool) {
	rest, ok := strings.CutPrefix(path, "/t/")
	if !ok {
		return "", false
	}
	tenant, tail, ok := strings.Cut(rest, "/")
	if !ok || tenant == "" || tail != "mcp" {
		return "", false
	}
	return tenant, true
}

// pick returns the worker with the fewest active requests, skipping the
// ones that failed recently (all of them failing: the least loaded anyway).
func (p *Proxy) pick(workers []string) string {
	now := time.Now().UnixNano()
	best, bestAny := "", ""
	var bestN, bestAnyN int64 = math.MaxInt64, math.MaxInt64
	for _, w := range workers {
		b := p.get(w)
		n := b.active.Load()
		if n < bestAnyN {
			bestAny, bestAnyN = w, n
		}
		if b.failUntil.Load() > now {
			continue
		}
		if n < bestN {
			best, bestN = w, n
		}
	}
	if best == "" {
		return bestAny
	}
	return best
}

func (p *Proxy) get(addr string) *backend {
	p.mu.Lock()
	defer p.mu.Unlock()
	b := p.backend[addr]
	if b == nil {
		b = &backend{}
		p.backend[addr] = b
	}
	return b
}

func (p *Proxy) markFailed(addr string) {
	p.get(addr).failUntil.Store(time.Now().Add(p.cfg.FailureCooldown).UnixNano())
}

func (p *Proxy) writeError(w http.ResponseWriter, r *http.Request, err error) {
	var ce *cperr.Error
	if !errors.As(err, &ce) {
		p.log.Error("MCP proxy: unexpected error", "err", err, "path", r.URL.Path)
		serve.WriteError(w, http.StatusInternalServerError, string(cperr.Internal), "internal error")
		return
	}
	code := rpcerr.HTTPStatus(ce.Reason)
	if code == http.StatusUnauthorized {
		h := `Bearer realm="cellplane"`
		if p.cfg.WWWAuthenticate != nil {
			h = p.cfg.WWWAuthenticate(err)
		}
		if tenant, ok := tenantOf(r.URL.Path); ok && p.cfg.PublicURL != "" {
			h += fmt.Sprintf(", resource_metadata=%q", p.metadataURL(tenant))
		}
		w.Header().Set("WWW-Authenticate", h)
	}
	if ce.RetryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(ce.RetryAfter.Seconds()))))
	}
	serve.WriteError(w, code, string(ce.Reason), ce.Message)
}

func methodLabel(m string) string {
	switch m {
	case http.MethodGet, http.MethodPost, http.MethodDelete:
		return m
	}
	return "other"
}
