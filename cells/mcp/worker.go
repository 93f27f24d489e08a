package mcp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"

	"github.com/cellplane/cellplane/internal/auth"
	"github.com/cellplane/cellplane/internal/cperr"
	"github.com/cellplane/cellplane/internal/ids"
	"github.com/cellplane/cellplane/internal/readcache"
	"github.com/cellplane/cellplane/internal/rpcerr"
	"github.com/cellplane/cellplane/internal/serve"
	contextv1 "github.com/cellplane/cellplane/proto/cellplane/context/v1"
)

// Headers the worker sets on the request it hands to the SDK, after
// authentication, so that tool handlers read them from
// sdk.RequestExtra.Header. Copies sent by the client are deleted first.
const (
	TenantHeader    = "X-Cellplane-Tenant"
	PrincipalHeader = "X-Cellplane-Principal"
	// ScopesHeader holds the caller's scopes, space-separated
	// (auth.Scopes.String).
	ScopesHeader = "X-Cellplane-Scopes"
)

// ProtocolVersions are the MCP protocol versions the endpoint serves,
// newest first: the stateless 2026-07-28 protocol and the three
// initialize-handshake versions before it (an initialize opens a
// session: legacy.go).
var ProtocolVersions = []string{"2026-07-28", "2025-11-25", "2025-06-18", "2025-03-26"}

// instructions are the servers' MCP instructions.
const instructions = "Durable conversation contexts (append-only entry logs addressed by context_id handles) " +
	"and a key-value memory with revisions, stored in cellplane. Handles are bound to the tenant and to the caller."

// onServers applies a registration to w.server and keeps it for the
// session servers.
func (w *Worker) onServers(f func(*sdk.Server)) {
	f(w.server)
	w.registrations = append(w.registrations, f)
}

// refuseStatelessSubscribe answers resources/subscribe outside a
// session (a 2025-era client that did not get one, or a 2026-07-28 one):
// there is no session stream to deliver its notifications on.
func refuseStatelessSubscribe(context.Context, *sdk.SubscribeRequest) error {
	return cperr.New(cperr.InvalidArgument, "resources/subscribe needs a session (initialize with a 2025-era protocol version and keep its Mcp-Session-Id); "+
		"otherwise use subscriptions/listen (protocol 2026-07-28) or poll the changes_read tool with a cursor")
}

// metadataPrefix is the RFC 9728 well-known path prefix.
const metadataPrefix = "/.well-known/oauth-protected-resource"

// Worker serves tenants' contexts and memory as MCP tools. It keeps no
// state between requests but 2025-era sessions (legacy.go): every tool
// call is a ContextService call.
type Worker struct {
	cfg     Config
	base    string // PublicURL, no trailing slash
	log     *slog.Logger
	cell    contextv1.ContextServiceClient
	authn   Authenticator
	origins map[string]bool
	server  *sdk.Server
	mcp     http.Handler
	handler http.Handler
	impl    *sdk.Implementation
	sdkLog  *slog.Logger
	// fast holds the tools the fast path serves (Config.FastToolCalls);
	// fastServed counts the calls it served.
	fast       map[string]fastTool
	fastServed atomic.Uint64
	// cache answers stale reads (nil: off, Config.ReadCache).
	cache *readcache.Cache
	// registrations add the tools and resources to a server: w.server's
	// and every 2025-era session's (legacy.go), which share schemas.
	registrations []func(*sdk.Server)
	schemas       *sdk.SchemaCache
	sessions      *sessions

	requests  *prometheus.CounterVec
	toolCalls *prometheus.CounterVec
	toolDur   *prometheus.HistogramVec
}

// New returns a Worker calling cell (a connection to any member of the
// cell). authn nil disables authentication: every caller's principal is "".
func New(cfg Config, cell grpc.ClientConnInterface, authn Authenticator) (*Worker, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cell == nil {
		return nil, errors.New("mcp: nil cell connection")
	}
	if cfg.PublicURL == "" {
		return nil, errors.New("mcp: PublicURL is required (the base URL clients reach the endpoint at)")
	}
	base, err := ParsePublicURL(cfg.PublicURL)
	if err != nil {
		return nil, fmt.Errorf("mcp: PublicURL: %w", err)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	w := &Worker{
		cfg:     cfg,
		base:    base,
		log:     log,
		cell:    contextv1.NewContextServiceClient(cell),
		authn:   authn,
		origins: make(map[string]bool, len(cfg.AllowedOrigins)),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cellplane_mcp_requests_total",
			Help: "MCP HTTP requests served by the worker, by method and HTTP status.",
		}, []string{"method", "status"}),
		toolCalls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cellplane_mcp_tool_calls_total",
			Help: "MCP tool calls, by tool and result (ok or the error-contract reason).",
		}, []string{"tool", "result"}),
		toolDur: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "cellplane_mcp_tool_duration_seconds",
			Help:    "Duration of MCP tool calls, by tool.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 14),
		}, []string{"tool"}),
	}
	rc := cfg.ReadCache
	if rc.Logger == nil {
		rc.Logger = log
	}
	if w.cache, err = readcache.New(rc, w.watchChanges); err != nil {
		return nil, fmt.Errorf("mcp: %w", err)
	}
	sdkLog := slog.New(demoteInfo{log.Handler()}).With("component", "mcp-sdk")
	w.sdkLog = sdkLog
	for _, o := range cfg.AllowedOrigins {
		n, _ := normalizeOrigin(o) // checked by Validate
		w.origins[n] = true
	}
	w.impl = &sdk.Implementation{Name: "cellplane", Title: "cellplane contexts and memory", Version: "v1"}
	w.fast = make(map[string]fastTool)
	w.schemas = sdk.NewSchemaCache()
	w.server = sdk.NewServer(w.impl, &sdk.ServerOptions{
		Instructions:              instructions,
		Logger:                    sdkLog,
		SupportedProtocolVersions: ProtocolVersions,
		SetCacheable:              cacheable,
		// Stateless: resources/subscribe has no session stream to deliver
		// on here; 2025-era sessions are served by w.sessions (each with
		// a server of its own) and subscriptions/listen requests by
		// serveListen. The handler refuses with the way out.
		SubscribeHandler:   refuseStatelessSubscribe,
		UnsubscribeHandler: func(context.Context, *sdk.UnsubscribeRequest) error { return nil },
	})
	w.server.AddReceivingMiddleware(filterTools)
	w.addTools()
	w.sessions = newSessions(w)
	w.mcp = sdk.NewStreamableHTTPHandler(func(*http.Request) *sdk.Server { return w.server }, &sdk.StreamableHTTPOptions{
		Stateless:           true,
		JSONResponse:        true,
		Logger:              sdkLog,
		MaxRequestBodyBytes: cfg.MaxBodyBytes,
	})
	mux := http.NewServeMux()
	mux.HandleFunc("/t/{tenant}/mcp", w.serveMCP)
	mux.HandleFunc(metadataPrefix+"/t/{tenant}/mcp", w.serveMetadata)
	mux.HandleFunc("/", func(rw http.ResponseWriter, _ *http.Request) {
		serve.WriteError(rw, http.StatusNotFound, "NOT_FOUND", "no MCP endpoint here; use /t/<tenant>/mcp")
	})
	w.handler = mux
	return w, nil
}

// Collectors returns the worker's metrics, for the caller to register.
// An Authenticator with metrics (a Collectors method, as mcpauth's has)
// has them included.
func (w *Worker) Collectors() []prometheus.Collector {
	cs := []prometheus.Collector{w.requests, w.toolCalls, w.toolDur, prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "cellplane_mcp_sessions",
		Help: "2025-era MCP sessions the worker holds (Config.MaxSessions caps them).",
	}, func() float64 { return float64(w.sessions.count()) })}
	cs = append(cs, w.cache.Collectors()...)
	if m, ok := w.authn.(interface{ Collectors() []prometheus.Collector }); ok {
		cs = append(cs, m.Collectors()...)
	}
	return cs
}

// Handler serves "/t/{tenant}/mcp" (MCP Streamable HTTP: POST, stateless
// but for 2025-era sessions, whose GET and DELETE are served too) and
// "/.well-known/oauth-protected-resource/t/{tenant}/mcp" (RFC 9728).
func (w *Worker) Handler() http.Handler {
	return http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		sw := &serve.StatusWriter{ResponseWriter: rw}
		defer func() {
			code := sw.Status
			if code == 0 {
				code = http.StatusOK
			}
			w.requests.WithLabelValues(methodLabel(r.Method), strconv.Itoa(code)).Inc()
		}()
		w.handler.ServeHTTP(sw, r)
	})
}

// serveMCP checks what the SDK does not (tenant id, method, Origin, body
// size, credentials), sets the tenant and principal headers and hands the
// request to the SDK's stateless handler.
func (w *Worker) serveMCP(rw http.ResponseWriter, r *http.Request) {
	tenant := r.PathValue("tenant")
	if !ids.Valid(tenant, ids.MaxLen) {
		serve.WriteError(rw, rpcerr.HTTPStatus(cperr.TenantNotFound), string(cperr.TenantNotFound), "the tenant id "+ids.Rule(ids.MaxLen))
		return
	}
	if r.Method != http.MethodPost && ((r.Method != http.MethodGet && r.Method != http.MethodDelete) || r.Header.Get(SessionHeader) == "") {
		// GET (a session's SSE stream) and DELETE (its end) exist only
		// for 2025-era sessions.
		rw.Header().Set("Allow", http.MethodPost)
		serve.WriteError(rw, http.StatusMethodNotAllowed, "METHOD_NOT_ALLOWED", "only POST is served (GET and DELETE only with the Mcp-Session-Id of a 2025-era session)")
		return
	}
	if !w.originAllowed(r) {
		serve.WriteError(rw, rpcerr.HTTPStatus(cperr.PermissionDenied), string(cperr.PermissionDenied), "origin not allowed")
		return
	}
	if r.ContentLength > w.cfg.MaxBodyBytes {
		serve.WriteError(rw, http.StatusRequestEntityTooLarge, string(cperr.InvalidArgument),
			fmt.Sprintf("request body exceeds %d bytes", w.cfg.MaxBodyBytes))
		return
	}
	r.Body = http.MaxBytesReader(rw, r.Body, w.cfg.MaxBodyBytes)

	id := auth.Identity{Scopes: auth.FullScopes} // authentication off
	if w.authn != nil {
		resource := w.publicURL(tenant)
		got, err := w.authn.Authenticate(r, tenant, resource)
		if err != nil {
			w.authError(rw, r, tenant, resource, err)
			return
		}
		id = got
	}
	r2 := r.Clone(r.Context())
	r2.Header.Del(TenantHeader)
	r2.Header.Del(PrincipalHeader)
	r2.Header.Del(ScopesHeader)
	r2.Header.Set(TenantHeader, tenant)
	if id.Principal != "" {
		r2.Header.Set(PrincipalHeader, id.Principal)
	}
	r2.Header.Set(ScopesHeader, id.Scopes.String())
	p := peek(r2)
	if p.method == "subscriptions/listen" {
		w.serveListen(rw, r2)
		return
	}
	if w.sessions.wants(r2, p) {
		w.sessions.serve(rw, r2)
		return
	}
	if w.cfg.FastToolCalls && w.serveFast(rw, r2) {
		return
	}
	w.mcp.ServeHTTP(rw, r2)
}

func (w *Worker) authError(rw http.ResponseWriter, r *http.Request, tenant, resource string, err error) {
	var ce *cperr.Error
	if !errors.As(err, &ce) {
		w.log.Error("MCP authentication failed unexpectedly", "tenant", tenant, "err", err)
		serve.WriteError(rw, rpcerr.HTTPStatus(cperr.Internal), string(cperr.Internal), "internal error")
		return
	}
	if ce.RetryAfter > 0 {
		rw.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(ce.RetryAfter.Seconds()))))
	}
	switch ce.Reason {
	case cperr.PermissionDenied, cperr.RateLimited:
		serve.WriteError(rw, rpcerr.HTTPStatus(ce.Reason), string(ce.Reason), ce.Message)
	case cperr.Unauthenticated:
		challenge := strings.TrimSpace(w.authn.Challenge(err))
		md := fmt.Sprintf("resource_metadata=%q", metadataURL(resource))
		switch {
		case challenge == "":
			challenge = "Bearer " + md
		case strings.Contains(challenge, "="):
			challenge += ", " + md
		default: // a bare scheme ("Bearer")
			challenge += " " + md
		}
		rw.Header().Set("WWW-Authenticate", challenge)
		serve.WriteError(rw, rpcerr.HTTPStatus(ce.Reason), string(ce.Reason), ce.Message)
	default:
		w.log.Debug("MCP authentication refused", "tenant", tenant, "err", err, "path", r.URL.Path)
		serve.WriteError(rw, rpcerr.HTTPStatus(cperr.PermissionDenied), string(cperr.PermissionDenied), "access denied")
	}
}

// serveMetadata serves the RFC 9728 protected-resource metadata.
func (w *Worker) serveMetadata(rw http.ResponseWriter, r *http.Request) {
	tenant := r.PathValue("tenant")
	if !ids.Valid(tenant, ids.MaxLen) {
		serve.WriteError(rw, rpcerr.HTTPStatus(cperr.TenantNotFound), string(cperr.TenantNotFound), "the tenant id "+ids.Rule(ids.MaxLen))
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		rw.Header().Set("Allow", "GET, HEAD")
		serve.WriteError(rw, http.StatusMethodNotAllowed, "METHOD_NOT_ALLOWED", "use GET")
		return
	}
	var servers []string
	if w.authn != nil {
		servers = w.authn.AuthorizationServers()
	}
	auth.WriteProtectedResource(rw, auth.NewProtectedResource(w.publicURL(tenant), tenant, servers))
}

// ProtectedResourceMetadata is the RFC 9728 document served for each
// tenant's endpoint (the one type, shared with the router's MCP proxy).
type ProtectedResourceMetadata = auth.ProtectedResource

// publicURL is the tenant's MCP URL: from the configured base, never from
// the request's Host header (a client could then choose the audience its
// token is checked against).
func (w *Worker) publicURL(tenant string) string {
	return w.base + "/t/" + tenant + "/mcp"
}

// metadataURL is the RFC 9728 §3.1 metadata URL of resource: the
// well-known prefix inserted between the host and the path.
func metadataURL(resource string) string {
	u, err := url.Parse(resource)
	if err != nil || u.Host == "" {
		return resource
	}
	u.Path = metadataPrefix + u.Path
	u.RawPath = ""
	u.RawQuery, u.Fragment = "", ""
	return u.String()
}

// originAllowed: no Origin (not a browser), an allowed origin, or the
// request's own host.
func (w *Worker) originAllowed(r *http.Request) bool {
	vs := r.Header.Values("Origin")
	if len(vs) == 0 {
		return true
	}
	if len(vs) > 1 {
		return false
	}
	o, err := normalizeOrigin(vs[0])
	if err != nil {
		return false // includes "null"
	}
	if w.origins[o] {
		return true
	}
	host := strings.ToLower(r.Host)
	switch {
	case strings.HasPrefix(o, "http://") && strings.HasSuffix(host, ":80"):
		host = strings.TrimSuffix(host, ":80")
	case strings.HasPrefix(o, "https://") && strings.HasSuffix(host, ":443"):
		host = strings.TrimSuffix(host, ":443")
	}
	_, oh, _ := strings.Cut(o, "://")
	return host != "" && oh == host
}

func methodLabel(m string) string {
	switch m {
	case http.MethodGet, http.MethodPost, http.MethodDelete:
		return m
	}
	return "OTHER"
}

// demoteInfo turns the SDK's Info lines (one "session connected" and
// "disconnected" per stateless request) into Debug lines: Info is for
// rare events here (CONTRIBUTING.md).
type demoteInfo struct{ h slog.Handler }

func demote(l slog.Level) slog.Level {
	if l == slog.LevelInfo {
		return slog.LevelDebug
	}
	return l
}

func (d demoteInfo) Enabled(ctx context.Context, l slog.Level) bool {
	return d.h.Enabled(ctx, demote(l))
}

func (d demoteInfo) Handle(ctx context.Context, r slog.Record) error {
	r.Level = demote(r.Level)
	return d.h.Handle(ctx, r)
}

func (d demoteInfo) WithAttrs(as []slog.Attr) slog.Handler { return demoteInfo{d.h.WithAttrs(as)} }
func (d demoteInfo) WithGroup(g string) slog.Handler       { return demoteInfo{d.h.WithGroup(g)} }

// cacheable marks every cacheable result (resources/read, the lists,
// server/discover) private and immediately stale: a context's contents
// and, per credential, the tools offered are one caller's, and the SDK's
// default ("public") would let a shared cache serve them to another.
func cacheable(_ context.Context, _ sdk.Request, c *sdk.Cacheable) {
	c.CacheScope, c.TTLMs = "private", 0
}
