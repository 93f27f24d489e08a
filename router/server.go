package router

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors"
	grpcauth "github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/auth"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/selector"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/reflection"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/cellplane/cellplane/controlplane/tokenkeys"
	"github.com/cellplane/cellplane/controlplane/topo"
	"github.com/cellplane/cellplane/controlplane/topo/etcdtopo"
	"github.com/cellplane/cellplane/internal/auth"
	"github.com/cellplane/cellplane/internal/cperr"
	"github.com/cellplane/cellplane/internal/logging"
	"github.com/cellplane/cellplane/internal/pki"
	"github.com/cellplane/cellplane/internal/ratelimit"
	"github.com/cellplane/cellplane/internal/serve"
	"github.com/cellplane/cellplane/internal/tenantmd"
	"github.com/cellplane/cellplane/internal/tenanttoken"
	contextv1 "github.com/cellplane/cellplane/proto/cellplane/context/v1"
	routerv1 "github.com/cellplane/cellplane/proto/cellplane/router/v1"
	"github.com/cellplane/cellplane/router/forward"
	"github.com/cellplane/cellplane/router/mcpproxy"
	"github.com/cellplane/cellplane/router/routing"
)

// ListenError is returned by Start when a listen address cannot be bound.
type ListenError = serve.ListenError

// Server is a running router.
type Server struct {
	cfg     Config
	log     *slog.Logger
	st      topo.Store
	ownsSt  bool
	table   *routing.Table
	authn   *auth.Authenticator
	limiter *ratelimit.Limiter
	fwd     *forward.Forwarder
	mcp     *mcpproxy.Proxy
	keys    *tokenkeys.Ring // the tenant-token keys (with InternalTLS); nil without
	grpc    *grpc.Server
	http    *http.Server
	hlth    *health.Server

	grpcLis, httpLis net.Listener
	stop             chan struct{}
	wg               sync.WaitGroup
	closeOnce        sync.Once
	closeErr         error
}

// Start starts a router: listeners first (a taken port fails fast), then
// the routing table (from its snapshot at once if there is one; etcd in
// the background), then the servers. It does not wait for etcd.
func Start(ctx context.Context, cfg Config) (_ *Server, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	log := logging.OrDefault(cfg.Logger).With("component", "router")
	s := &Server{cfg: cfg, log: log, stop: make(chan struct{})}
	defer func() {
		if err != nil {
			s.closeParts()
		}
	}()
	// The front door's certificate, before any port is bound: a bad
	// certificate fails the start, never a plaintext fallback.
	var front *tls.Config
	if cfg.TLSEnabled() {
		tcfg := cfg.TLS
		tcfg.Logger = log
		sc, err := pki.NewServerCert(tcfg)
		if err != nil {
			return nil, fmt.Errorf("router: TLS: %w", err)
		}
		front = sc.PublicTLSConfig()
	}
	if s.grpcLis, err = serve.Listen("grpc", cfg.GRPCAddr, cfg.GRPCListener); err != nil {
		return nil, err
	}
	if s.httpLis, err = serve.Listen("http", cfg.HTTPAddr, cfg.HTTPListener); err != nil {
		return nil, err
	}
	// The connection caps count TCP connections (below TLS).
	s.grpcLis = cfg.GRPCLimits.Listener(s.grpcLis, log)
	s.httpLis = cfg.HTTPLimits.Listener(s.httpLis, log)
	if front != nil {
		// HTTPS on the HTTP port: the same certificate and versions as
		// the gRPC port, HTTP/2 and HTTP/1.1 offered by ALPN.
		s.httpLis = tls.NewListener(s.httpLis, front.Clone())
	}

	s.st = cfg.Store
	if s.st == nil {
		tcfg := etcdtopo.DefaultConfig()
		tcfg.Endpoints, tcfg.Prefix = cfg.EtcdEndpoints, cfg.EtcdPrefix
		tcfg.CertFile, tcfg.KeyFile, tcfg.CAFile = cfg.EtcdCertFile, cfg.EtcdKeyFile, cfg.EtcdCAFile
		if cfg.InternalTLS != nil && cfg.EtcdCertFile == "" && cfg.EtcdCAFile == "" && etcdtopo.SecureEndpoints(cfg.EtcdEndpoints) {
			// The router's own identity: its etcd user (read-only).
			tcfg.Identity = cfg.InternalTLS
		}
		tcfg.Lazy = true // static stability: start (from the snapshot) even with etcd down
		tcfg.Logger = log
		st, err := etcdtopo.Dial(ctx, tcfg)
		if err != nil {
			return nil, fmt.Errorf("router: etcd: %w", err)
		}
		s.st, s.ownsSt = st, true
	}
	rcfg := cfg.Routing
	rcfg.Logger = log
	if s.table, err = routing.Start(ctx, s.st, rcfg); err != nil {
		return nil, err
	}
	if cfg.InternalTLS != nil {
		// Lookup mints tenant tokens for the direct path (the private
		// keys: etcd RBAC lets routers read them).
		s.keys = tokenkeys.StartRing(ctx, s.st, tokenkeys.RingConfig{Private: true, Logger: log})
	}
	acfg := cfg.Auth
	acfg.Logger = log
	if s.authn, err = auth.New(acfg, s.table); err != nil {
		return nil, err
	}
	s.limiter = ratelimit.New(cfg.RateLimit)
	fcfg := cfg.Forward
	fcfg.Logger = log
	if cfg.InternalTLS != nil && fcfg.Dial.Credentials == nil {
		// Calls into cells carry the router's identity (C1, C2).
		fcfg.Dial.Credentials = pki.ClientCredentials(cfg.InternalTLS, pki.ExpectKinds(pki.KindNode))
	}
	if fcfg.MaxMsgBytes < cfg.MaxRecvMsgBytes {
		fcfg.MaxMsgBytes = cfg.MaxRecvMsgBytes
	}
	if s.fwd, err = forward.New(fcfg, resolver{s.table}, s.tenantOf); err != nil {
		return nil, err
	}
	mcfg := cfg.MCP
	mcfg.Logger = log
	mcfg.WWWAuthenticate = s.authn.WWWAuthenticate
	if cfg.Auth.Mode == auth.ModeJWT && cfg.Auth.Issuer != "" {
		mcfg.AuthorizationServers = []string{cfg.Auth.Issuer}
	}
	mcfg.WaitChange = s.waitMCPRoute
	if cfg.InternalTLS != nil && mcfg.TLS == nil {
		// MCP to workers with the router's identity; the answer must come
		// from a node or a stand-alone worker of the cluster.
		mcfg.TLS = cfg.InternalTLS.ClientTLSConfig(pki.ExpectKinds(pki.KindNode, pki.KindWorker))
	}
	if s.mcp, err = mcpproxy.New(mcfg, s.workers, s.checkHTTP); err != nil {
		return nil, err
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	reg.MustRegister(s.table.Collectors()...)
	reg.MustRegister(s.fwd.Collectors()...)
	reg.MustRegister(s.limiter.Collectors()...)
	reg.MustRegister(s.mcp.Collectors()...)

	// No grpc_server_* metrics here: the forwarder exports its own.
	s.hlth = health.NewServer()
	grpcOpts := []grpc.ServerOption{
		forward.ServerOption(),
		grpc.MaxRecvMsgSize(cfg.MaxRecvMsgBytes),
		grpc.UnknownServiceHandler(s.fwd.Handler()),
	}
	if front != nil {
		// credentials.NewTLS keeps h2 in NextProtos (gRPC needs it).
		grpcOpts = append(grpcOpts, grpc.Creds(credentials.NewTLS(front.Clone())))
	}
	s.grpc = serve.NewGRPCServer(serve.GRPCConfig{
		Log:    log,
		Limits: cfg.GRPCLimits,
		Unary: []grpc.UnaryServerInterceptor{
			selector.UnaryServerInterceptor(grpcauth.UnaryServerInterceptor(s.authFunc), selector.MatchFunc(needsAuth)),
			s.limitUnary,
		},
		Stream: []grpc.StreamServerInterceptor{
			selector.StreamServerInterceptor(grpcauth.StreamServerInterceptor(s.authFunc), selector.MatchFunc(needsAuth)),
			s.limitStream,
		},
		Options: grpcOpts,
	}, func(gs *grpc.Server) {
		routerv1.RegisterRouterServiceServer(gs, &lookupServer{s: s})
		healthpb.RegisterHealthServer(gs, s.hlth)
		// Reflection lists the forwarded services too, so grpcurl works
		// against a router without .proto files.
		reflection.Register(serviceLister{gs, fcfg.Services})
	})

	mux := http.NewServeMux()
	// MCP answers may stream (server-sent events): no read or write
	// deadline for them, the header timeout and the connection cap still.
	mux.Handle("/t/", serve.Streaming(s.mcp))
	if cfg.MCP.PublicURL != "" {
		mux.Handle("/.well-known/oauth-protected-resource/", s.mcp)
	}
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	mux.HandleFunc("GET /healthz", s.serveHealthz)
	mux.HandleFunc("GET /readyz", s.serveReadyz)
	mux.HandleFunc("GET /readyz/apikeys", s.serveReadyzAPIKeys)
	s.http = serve.NewHTTPServer(mux, log, cfg.HTTPLimits)

	serve.Start(&s.wg, log, s.grpc, s.grpcLis, s.http, s.httpLis)
	if s.authn.Mode() == auth.ModeJWT && cfg.JWKSReloadInterval > 0 {
		s.wg.Add(1)
		go s.reloadJWKS(cfg.JWKSReloadInterval)
	}
	s.hlth.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	if s.authn.Mode() == auth.ModeNone {
		log.Warn("AUTHENTICATION IS OFF (--auth=none): any caller can act as any tenant; for local development only")
	}
	if front == nil {
		log.Warn("the router's front door is plaintext: API keys and tenant data cross the network in clear; serve TLS with --tls-cert and --tls-key (or terminate TLS in front of the router)")
	}
	if u, err := url.Parse(cfg.MCP.PublicURL); cfg.MCP.PublicURL != "" && err == nil && u.Scheme != "https" {
		log.Warn("the MCP public URL is not https: MCP authorization (OAuth 2.1) requires HTTPS", "mcp_public_url", cfg.MCP.PublicURL)
	}
	log.Info("router started", "grpc", s.GRPCAddr(), "http", s.HTTPAddr(), "tls", front != nil, "auth", string(s.authn.Mode()), "table_loaded", s.table.Loaded())
	return s, nil
}

// GRPCAddr is the bound gRPC address.
func (s *Server) GRPCAddr() string { return s.grpcLis.Addr().String() }

// HTTPAddr is the bound HTTP address.
func (s *Server) HTTPAddr() string { return s.httpLis.Addr().String() }

// Table is the router's routing table.
func (s *Server) Table() *routing.Table { return s.table }

// Close stops the router gracefully.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		if s.hlth != nil {
			s.hlth.Shutdown()
		}
		serve.Stop(s.grpc, s.http, s.cfg.ShutdownTimeout)
		s.closeErr = s.closeParts()
	})
	return s.closeErr
}

// reloadJWKS re-reads the JWKS file every interval; a bad file keeps the
// previous keys (and says so).
func (s *Server) reloadJWKS(every time.Duration) {
	defer s.wg.Done()
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
			if err := s.authn.ReloadJWKS(); err != nil {
				s.log.Warn("reloading the JWKS file failed; keeping the previous keys", "file", s.cfg.Auth.JWKSFile, "err", err)
			}
		}
	}
}

func (s *Server) closeParts() error {
	close(s.stop)
	s.wg.Wait()
	var errs []error
	if s.fwd != nil {
		errs = append(errs, s.fwd.Close())
	}
	if s.keys != nil {
		s.keys.Close()
	}
	if s.table != nil {
		errs = append(errs, s.table.Close())
	}
	if s.ownsSt && s.st != nil {
		errs = append(errs, s.st.Close())
	}
	if s.grpc == nil {
		for _, l := range []net.Listener{s.grpcLis, s.httpLis} {
			if l != nil {
				_ = l.Close()
			}
		}
	}
	return errors.Join(errs...)
}

// authenticate checks the caller's credentials ("authorization: Bearer
// <API key or JWT>", or "x-api-key").
func (s *Server) authenticate(ctx context.Context, authorization, apiKey string) (auth.Identity, error) {
	if authorization == "" && apiKey != "" {
		return s.authn.AuthenticateAPIKey(apiKey)
	}
	return s.authn.Authenticate(ctx, authorization)
}

// admit charges the tenant's token bucket (limits from its placement).
func (s *Server) admit(tenant string) error {
	var lim routing.Limits
	if r, ok := s.table.Lookup(tenant); ok {
		lim = r.Limits
	}
	if ok, wait := s.limiter.Allow(tenant, lim.Rate, lim.Burst); !ok {
		return s.limiter.Err(tenant, wait)
	}
	return nil
}

// authorize is the whole check for an HTTP request: authenticate, settle
// the tenant (the requested one must be the identity's), admit.
// With a JWT audience (audience non-empty: the tenant's MCP URL from the
// configured public URL), a bearer JWT must carry it.
func (s *Server) authorize(ctx context.Context, authorization, apiKey, audience, requested string) (string, error) {
	var id auth.Identity
	var err error
	if audience != "" && authorization != "" {
		id, err = s.authn.AuthenticateFor(ctx, authorization, audience)
	} else {
		id, err = s.authenticate(ctx, authorization, apiKey)
	}
	if err != nil {
		return "", err
	}
	tenant, err := auth.CheckTenant(id, requested)
	if err != nil {
		return "", err
	}
	return tenant, s.admit(tenant)
}

type tenantKey struct{}

// authFunc is the go-grpc-middleware auth hook of gRPC calls: it
// authenticates, settles the tenant from the identity and the
// x-cellplane-tenant metadata, and puts the tenant in the context.
func (s *Server) authFunc(ctx context.Context) (context.Context, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	id, err := s.authenticate(ctx, first(md, "authorization"), first(md, "x-api-key"))
	if err != nil {
		return nil, err
	}
	requested := first(md, tenantmd.TenantKey)
	if id.Method == auth.MethodNone && requested == "" {
		md = md.Copy()
		md.Delete(tenantmd.PrincipalKey)
		md.Delete(tenantmd.OriginKey)
		md.Delete(tenantmd.AdminKey)
		md.Delete(tenantmd.ScopesKey)
		ctx = context.WithValue(ctx, scopesKey{}, id.Scopes)
		return metadata.NewIncomingContext(ctx, md), nil // auth off and no tenant named: a handler decides (Lookup takes it from the request)
	}
	tenant, err := auth.CheckTenant(id, requested)
	if err != nil {
		return nil, err
	}
	if err := checkMethodScope(ctx, id); err != nil {
		return nil, err
	}
	// The principal the cell stamps on mutations (and scopes memory and
	// context ownership by) is the one authenticated here, never a value
	// the client sent.
	md = md.Copy()
	md.Delete(tenantmd.PrincipalKey)
	md.Delete(tenantmd.OriginKey)
	md.Delete(tenantmd.AdminKey)
	md.Set(tenantmd.ScopesKey, id.Scopes.String())
	if id.Principal != "" {
		md.Set(tenantmd.PrincipalKey, id.Principal)
	}
	if id.Scopes.Has(auth.ScopeAdmin) {
		md.Set(tenantmd.AdminKey, "true")
	}
	ctx = metadata.NewIncomingContext(ctx, md)
	ctx = context.WithValue(ctx, scopesKey{}, id.Scopes)
	ctx = context.WithValue(ctx, principalKey{}, id.Principal)
	return context.WithValue(ctx, tenantKey{}, tenant), nil
}

// scopesKey and principalKey hold the scopes and the principal of the
// credentials authFunc checked (a tenant token binds the principal).
type (
	scopesKey    struct{}
	principalKey struct{}
)

// checkMethodScope refuses a ContextService call whose credentials lack
// the method's scope (auth.MethodScopes), and one to a ContextService
// method the table does not name. The router's own methods (Lookup) need
// no scope; other services are the forwarder's to refuse.
func checkMethodScope(ctx context.Context, id auth.Identity) error {
	method, ok := grpc.Method(ctx)
	if !ok || !strings.HasPrefix(method, "/"+contextv1.ContextService_ServiceDesc.ServiceName+"/") {
		return nil
	}
	need, ok := auth.RequiredScope(method)
	if !ok {
		return cperr.New(cperr.PermissionDenied, "%s has no scope: no credential may call it", method)
	}
	return auth.CheckScope(id, method, need)
}

// limitUnary and limitStream charge the authenticated tenant's bucket
// before any work (the middleware's own ratelimit interceptor would drop
// the error contract's RATE_LIMITED details).
// They also charge the tenant's byte bucket with every request message
// (H4): a forwarded call's frames as they are received, so a tenant
// flooding large appends is limited by what it sends.
func (s *Server) limitUnary(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	if t, ok := ctx.Value(tenantKey{}).(string); ok {
		if err := s.admit(t); err != nil {
			return nil, err
		}
		if err := s.admitBytes(t, req); err != nil {
			return nil, err
		}
	}
	return h(ctx, req)
}

func (s *Server) limitStream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	if t, ok := ss.Context().Value(tenantKey{}).(string); ok {
		if err := s.admit(t); err != nil {
			return err
		}
		ss = &bytesLimitedStream{ServerStream: ss, s: s, tenant: t}
	}
	return h(srv, ss)
}

// admitBytes charges a request message's size to the tenant's byte bucket.
func (s *Server) admitBytes(tenant string, msg any) error {
	return s.chargeBytes(tenant, messageSize(msg))
}

// chargeBytes charges n request bytes to the tenant's byte bucket (limits
// from its placement, else the configured defaults).
func (s *Server) chargeBytes(tenant string, n int) error {
	var lim routing.Limits
	if r, ok := s.table.Lookup(tenant); ok {
		lim = r.Limits
	}
	if ok, wait := s.limiter.AllowBytes(tenant, n, lim.BytesRate, lim.BytesBurst); !ok {
		return s.limiter.BytesErr(tenant, n, lim.BytesRate, lim.BytesBurst, wait)
	}
	return nil
}

// messageSize is a request message's size on the wire: a forwarded
// frame's payload, or an encoded proto message.
func messageSize(msg any) int {
	switch m := msg.(type) {
	case *forward.Frame:
		return m.Len()
	case proto.Message:
		return proto.Size(m)
	}
	return 0
}

// bytesLimitedStream charges every received request message to the
// tenant's byte bucket; a refused one fails the call with RATE_LIMITED.
type bytesLimitedStream struct {
	grpc.ServerStream
	s      *Server
	tenant string
}

func (b *bytesLimitedStream) RecvMsg(m any) error {
	if err := b.ServerStream.RecvMsg(m); err != nil {
		return err
	}
	return b.s.admitBytes(b.tenant, m)
}

// tenantOf is the forwarder's hook: the tenant settled by authFunc.
func (s *Server) tenantOf(ctx context.Context) (string, error) {
	if t, ok := ctx.Value(tenantKey{}).(string); ok {
		return t, nil
	}
	return "", cperr.Invalid(cperr.FieldViolation{Field: tenantmd.TenantKey, Description: "is required (metadata)"})
}

// checkHTTP is the MCP proxy's hook: the path names the tenant. With
// MCP.PublicURL set, a JWT's audience must be the tenant's MCP URL under
// it (never derived from the Host header); else the fixed Auth.Audience.
// A request's declared body size is charged to the tenant's byte bucket
// (a body without Content-Length is bounded by the MCP proxy's body limit).
func (s *Server) checkHTTP(r *http.Request, tenant string) error {
	t, err := s.authorize(r.Context(), r.Header.Get("Authorization"), r.Header.Get("X-Api-Key"), s.mcp.Resource(tenant), tenant)
	if err != nil {
		return err
	}
	if n := r.ContentLength; n > 0 {
		if err := s.chargeBytes(t, int(min(n, math.MaxInt32))); err != nil {
			return err
		}
	}
	return nil
}

// needsAuth selects the calls the auth and limit interceptors apply to:
// everything but health checks and reflection.
func needsAuth(_ context.Context, c interceptors.CallMeta) bool {
	switch c.Service {
	case healthpb.Health_ServiceDesc.ServiceName, "grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection":
		return false
	}
	return true
}

// mcpRoute is the MCP proxy's route of a tenant: its cell and the HTTP
// endpoints serving MCP there — every live member (a worker runs in each
// node) and any registered worker pool (computed once per cell route;
// shared, read-only).
func (s *Server) mcpRoute(r routing.Route) mcpproxy.Route {
	mr := mcpproxy.Route{Cell: r.Cell, Epoch: r.Epoch, CuttingOver: r.CuttingOver}
	if c, ok := s.table.Cell(r.Cell); ok {
		mr.Workers = c.MCPHTTP()
	}
	return mr
}

// workers is the MCP proxy's Resolver.
func (s *Server) workers(tenant string) (mcpproxy.Route, bool) {
	r, ok := s.table.Lookup(tenant)
	if !ok {
		return mcpproxy.Route{}, false
	}
	return s.mcpRoute(r), true
}

// waitMCPRoute is the MCP proxy's Waiter.
func (s *Server) waitMCPRoute(ctx context.Context, tenant string, seen mcpproxy.Route) (mcpproxy.Route, bool, error) {
	r, ok, err := s.table.WaitChange(ctx, tenant, routing.Route{Cell: seen.Cell, Epoch: seen.Epoch, CuttingOver: seen.CuttingOver})
	if !ok {
		return mcpproxy.Route{}, false, err
	}
	return s.mcpRoute(r), true, err
}

func first(md metadata.MD, key string) string {
	if v := md.Get(key); len(v) > 0 {
		return v[0]
	}
	return ""
}

// resolver adapts the routing table to the forwarder.
type resolver struct{ t *routing.Table }

func (r resolver) target(route routing.Route) forward.Target {
	tg := forward.Target{Cell: route.Cell, Epoch: route.Epoch, CuttingOver: route.CuttingOver}
	if c, ok := r.t.Cell(route.Cell); ok {
		tg.LeaderAddr, tg.Members = c.LeaderGRPC, c.MemberGRPC()
	}
	return tg
}

func (r resolver) Resolve(tenant string) (forward.Target, bool) {
	route, ok := r.t.Lookup(tenant)
	if !ok {
		return forward.Target{}, false
	}
	return r.target(route), true
}

func (r resolver) Refresh(ctx context.Context, tenant string) (forward.Target, bool, error) {
	route, ok, err := r.t.Refresh(ctx, tenant)
	if !ok {
		return forward.Target{}, false, err
	}
	return r.target(route), true, err
}

func (r resolver) WaitChange(ctx context.Context, tenant string, seen forward.Target) (forward.Target, bool, error) {
	route, ok, err := r.t.WaitChange(ctx, tenant, routing.Route{Cell: seen.Cell, Epoch: seen.Epoch, CuttingOver: seen.CuttingOver})
	if !ok {
		return forward.Target{}, false, err
	}
	return r.target(route), true, err
}

// serviceLister adds the forwarded services to what reflection lists.
type serviceLister struct {
	*grpc.Server
	forwarded []string
}

func (l serviceLister) GetServiceInfo() map[string]grpc.ServiceInfo {
	m := l.Server.GetServiceInfo()
	for _, name := range l.forwarded {
		if _, ok := m[name]; !ok {
			m[name] = grpc.ServiceInfo{}
		}
	}
	return m
}

func (s *Server) serveHealthz(w http.ResponseWriter, _ *http.Request) {
	serve.WriteJSON(w, http.StatusOK, map[string]any{"ok": true})
}

// serveReadyz: ready once a table is loaded (from etcd or the snapshot);
// it shows the table's revision and age so an operator sees staleness,
// and whether API keys are accepted (api_keys_fresh: false while the key
// view is past --api-key-max-staleness). Stale keys do not make the
// router unready: it still routes JWT callers (static stability); a load
// balancer that should prefer routers accepting API keys checks
// /readyz/apikeys instead.
func (s *Server) serveReadyz(w http.ResponseWriter, _ *http.Request) {
	keysAge, _ := s.table.KeysAge()
	body := map[string]any{
		"ready":                  s.table.Loaded(),
		"table_revision":         s.table.Revision(),
		"table_age_seconds":      s.table.Age().Seconds(),
		"tenants":                s.table.Len(),
		"auth":                   string(s.authn.Mode()),
		"api_keys_fresh":         s.table.KeysFresh() == nil,
		"api_keys_age_seconds":   keysAge.Seconds(),
		"api_keys_max_staleness": s.cfg.Routing.APIKeyMaxStaleness.String(),
	}
	code := http.StatusOK
	if !s.table.Loaded() {
		code = http.StatusServiceUnavailable
	}
	serve.WriteJSON(w, code, body)
}

// serveReadyzAPIKeys: 200 while the router accepts API keys (its table is
// loaded and its key view within the staleness bound), 503 otherwise.
func (s *Server) serveReadyzAPIKeys(w http.ResponseWriter, _ *http.Request) {
	keysAge, known := s.table.KeysAge()
	err := s.table.KeysFresh()
	body := map[string]any{
		"ready":                s.table.Loaded() && err == nil,
		"api_keys_age_seconds": keysAge.Seconds(),
		"api_keys_synced":      known,
	}
	code := http.StatusOK
	if !s.table.Loaded() || err != nil {
		code = http.StatusServiceUnavailable
	}
	serve.WriteJSON(w, code, body)
}

// lookupServer implements RouterService.
type lookupServer struct {
	routerv1.UnimplementedRouterServiceServer
	s *Server
}

// Lookup implements RouterService.
func (l *lookupServer) Lookup(ctx context.Context, req *routerv1.LookupRequest) (*routerv1.LookupResponse, error) {
	tenant, _ := ctx.Value(tenantKey{}).(string)
	switch {
	case tenant == "":
		// Auth is off and no metadata named the tenant: the request does.
		tenant = req.GetTenant()
		if tenant == "" {
			return nil, cperr.Invalid(cperr.FieldViolation{Field: "tenant", Description: "is required"})
		}
		if err := l.s.admit(tenant); err != nil {
			return nil, err
		}
	case req.GetTenant() != "" && req.GetTenant() != tenant:
		return nil, cperr.New(cperr.PermissionDenied, "the credentials are not for tenant %s", req.GetTenant()).With(cperr.MetaTenant, req.GetTenant())
	}
	route, ok := l.s.table.Lookup(tenant)
	if !ok {
		return nil, cperr.New(cperr.TenantNotFound, "tenant %s does not exist", tenant)
	}
	resp := &routerv1.LookupResponse{Tenant: tenant, Cell: route.Cell, Epoch: route.Epoch, TableRevision: l.s.table.Revision(), CuttingOver: route.CuttingOver}
	if c, ok := l.s.table.Cell(route.Cell); ok {
		for _, n := range c.Members {
			m := &routerv1.Member{NodeId: n.ID, GrpcAddr: n.GRPCAddr, HttpAddr: n.HTTPAddr, Leader: n.ID == c.LeaderID}
			if m.Leader {
				resp.Members = append([]*routerv1.Member{m}, resp.Members...)
			} else {
				resp.Members = append(resp.Members, m)
			}
		}
	}
	l.s.mint(ctx, resp)
	return resp, nil
}

// mint adds a tenant token for resp's tenant, cell and epoch to resp
// (docs/security.md, "Tenant tokens"). The tenant is the one the caller's
// credentials settled (Lookup never names another). No token without an
// internal identity or before the first signing key arrives: the client
// then calls through the router.
//
// A token binds the caller's principal (the cell makes it the direct
// calls' principal) but no scopes (docs/decisions.md, "Tenant tokens bind
// the principal, not the scopes"). So only credentials holding every
// default scope get one; a narrower credential (or one whose scopes
// authFunc did not record) calls through the router, where its scopes are
// checked per method. A principal a token cannot carry (too long, not
// printable ASCII) gets no token either: the router path.
func (s *Server) mint(ctx context.Context, resp *routerv1.LookupResponse) {
	if s.keys == nil || resp.GetEpoch() == 0 {
		return
	}
	if sc, ok := ctx.Value(scopesKey{}).(auth.Scopes); !ok || sc&auth.DefaultScopes != auth.DefaultScopes {
		return
	}
	now := time.Now()
	key, ok := s.keys.Signer(now)
	if !ok {
		s.log.WarnContext(ctx, "no tenant-token signing key yet; Lookup answers without a token", "tenant", resp.GetTenant())
		return
	}
	principal, _ := ctx.Value(principalKey{}).(string)
	if !tenanttoken.ValidPrincipal(principal) {
		s.log.DebugContext(ctx, "the caller's principal cannot travel in a tenant token; Lookup answers without one", "tenant", resp.GetTenant())
		return
	}
	claims := tenanttoken.Claims{Tenant: resp.GetTenant(), Cell: resp.GetCell(), Epoch: resp.GetEpoch(), Audience: s.cfg.InternalTLS.Identity().Cluster,
		Principal: principal}
	tok, exp, err := tenanttoken.Mint(s.cfg.Tokens, key, claims, now)
	if err != nil {
		s.log.ErrorContext(ctx, "minting a tenant token failed", "tenant", resp.GetTenant(), "err", err)
		return
	}
	resp.Token, resp.TokenExpireTime = tok, timestamppb.New(exp)
}
