package cells

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"

	"github.com/cellplane/cellplane/cells/mcp"
	"github.com/cellplane/cellplane/controlplane/tokenkeys"
	"github.com/cellplane/cellplane/internal/dial"
	"github.com/cellplane/cellplane/internal/pki"
	"github.com/cellplane/cellplane/internal/ratelimit"
	"github.com/cellplane/cellplane/internal/serve"
	"github.com/cellplane/cellplane/internal/tenantmd"
	"github.com/cellplane/cellplane/internal/tenanttoken"
	cellv1 "github.com/cellplane/cellplane/proto/cellplane/cell/v1"
	contextv1 "github.com/cellplane/cellplane/proto/cellplane/context/v1"
	replicationv1 "github.com/cellplane/cellplane/proto/cellplane/replication/v1"
)

// recvHeadroom is added to Limits.MaxRequestBytes for gRPC's receive
// limit: a request somewhat over the limit still reaches the validator and
// gets INVALID_ARGUMENT with a field violation, while a far larger one is
// refused by gRPC (RESOURCE_EXHAUSTED) before it is decoded.
const recvHeadroom = 64 << 10

// healthServices are the names grpc.health.v1 reports: "" for the whole
// server and each served API.
func healthServices() []string {
	return []string{"", contextv1.ContextService_ServiceDesc.ServiceName, cellv1.CellService_ServiceDesc.ServiceName}
}

// newGRPCServer builds the gRPC server (with the house interceptor chain,
// see serve.NewGRPCServer; each call's log line names its tenant) and
// registers the node's services on it.
//
// With Config.TLS the server serves mutual TLS only (no plaintext
// fallback) and authorises every call by its caller's identity against
// Policy (authz.go); without it, it serves plaintext to anyone who reaches
// the port (findings C1, C2): `cellplane cell` refuses to start so unless
// --insecure is given, and then says so loudly.
func (n *Node) newGRPCServer(metrics prometheus.Registerer) *grpc.Server {
	gc := serve.GRPCConfig{
		Log:       n.log,
		CallAttrs: tenantAttr,
		Metrics:   metrics,
		Limits:    n.cfg.GRPCLimits,
		Options:   []grpc.ServerOption{grpc.MaxRecvMsgSize(n.cfg.Limits.MaxRequestBytes + recvHeadroom)},
	}
	if n.cfg.TLS != nil {
		// Tenant tokens are verified with the public keys in the
		// registry; a node without one accepts no token.
		var keys tenanttoken.KeySet
		if n.cfg.Registry != nil {
			n.tokenKeys = tokenkeys.StartRing(n.bg, n.cfg.Registry, tokenkeys.RingConfig{Logger: n.base()})
			keys = n.tokenKeys
		} else {
			n.log.Info("no registry: this node accepts no tenant tokens (the smart client's direct path goes through the router)")
		}
		az := newAuthorizer(n.cfg.TLS, keys, n.cfg.Tokens, n.log)
		az.limit = ratelimit.New(n.cfg.DirectRateLimit)
		metrics.MustRegister(az.limit.Collectors()...)
		// A client certificate is verified when given, and may be
		// missing: the authoriser then refuses everything but a
		// ContextService call with a valid tenant token.
		gc.Options = append(gc.Options, grpc.Creds(pki.ServerCredentialsCertIfGiven(n.cfg.TLS)))
		gc.Unary = append(gc.Unary, az.Unary)
		gc.Stream = append(gc.Stream, az.Stream)
	}
	return serve.NewGRPCServer(gc, func(gs *grpc.Server) {
		n.svc.Register(gs)
		replicationv1.RegisterReplicationServiceServer(gs, n.source)
		healthpb.RegisterHealthServer(gs, &healthServer{Server: n.health, closing: n.bg})
		reflection.Register(gs)
	})
}

// tenantAttr adds the call's tenant to its log line.
func tenantAttr(ctx context.Context) []any {
	md, _ := metadata.FromIncomingContext(ctx)
	if t := md.Get(tenantmd.TenantKey); len(t) == 1 {
		return []any{"tenant", t[0]}
	}
	return nil
}

// newHTTPServer builds the HTTP server: metrics, health, readiness and,
// unless disabled, the MCP worker (w).
//
// With Config.TLS the port serves mutual TLS only (httpListener) and every
// handler is authorised by the caller's identity against mcp.HTTPPolicy:
// MCP from routers only, the monitoring pages from components and
// operators. Without it, it serves plaintext to anyone.
func (n *Node) newHTTPServer(metrics *prometheus.Registry, w *mcp.Worker) *http.Server {
	mux := http.NewServeMux()
	handle := mcp.Guard(mux, n.cfg.TLS != nil, n.log)
	handle(mcp.PatternMetrics, promhttp.HandlerFor(metrics, promhttp.HandlerOpts{Registry: metrics}))
	handle(mcp.PatternHealthz, http.HandlerFunc(n.serveHealthz))
	handle(mcp.PatternReadyz, http.HandlerFunc(n.serveReadyz))
	if w != nil {
		h := serve.Streaming(w.Handler()) // MCP answers may stream (SSE)
		handle(mcp.PatternMCP, h)
		handle(mcp.PatternMetadata, h)
	}
	srv := serve.NewHTTPServer(mux, n.log, n.cfg.HTTPLimits)
	if w != nil {
		srv.RegisterOnShutdown(w.CloseSessions) // their SSE streams would hold the drain
	}
	return srv
}

// httpListener is the listener the HTTP server serves: n.httpLis, wrapped
// in mutual TLS (mcp.ServerTLSConfig) with Config.TLS.
func (n *Node) httpListener() net.Listener {
	lis := n.cfg.HTTPLimits.Listener(n.httpLis, n.log)
	if n.cfg.TLS == nil {
		return lis
	}
	return tls.NewListener(lis, mcp.ServerTLSConfig(n.cfg.TLS))
}

// serveHealthz answers 200 while the node runs and its store is alive.
func (n *Node) serveHealthz(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	select {
	case <-n.st.Done():
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = w.Write([]byte("store stopped\n"))
		return
	default:
	}
	if n.closing.Load() {
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = w.Write([]byte("shutting down\n"))
		return
	}
	_, _ = w.Write([]byte("ok\n"))
}

// readiness is the JSON body of /readyz.
type readiness struct {
	Ready        bool   `json:"ready"`
	NodeID       string `json:"node_id"`
	State        string `json:"state"`
	LeaderID     string `json:"leader_id"`
	Leader       string `json:"leader,omitempty"` // the leader's gRPC address, once registered
	Term         uint64 `json:"term"`
	CommitIndex  uint64 `json:"commit_index"`
	AppliedIndex uint64 `json:"applied_index"`
	Reason       string `json:"reason,omitempty"`
	// StorageFull: this node is below its free-space watermark (H4). It
	// stays ready (reads, deletes and moves out work; as leader it refuses
	// new writes with STORAGE_FULL): alert on it, do not take it out of
	// rotation.
	StorageFull bool   `json:"storage_full"`
	FreeBytes   uint64 `json:"free_bytes"`
}

// serveReadyz answers 200 when the store knows a leader and has applied
// entries, i.e. when the node can serve reads and forward writes.
func (n *Node) serveReadyz(w http.ResponseWriter, _ *http.Request) {
	s := n.st.Status()
	r := readiness{
		NodeID:       n.cfg.NodeID,
		State:        s.State,
		LeaderID:     s.LeaderID,
		Term:         s.Term,
		CommitIndex:  s.CommitIndex,
		AppliedIndex: s.AppliedIndex,
	}
	if d := n.st.DiskStatus(); !d.Unsupported {
		r.StorageFull, r.FreeBytes = d.Full, d.FreeBytes
	}
	if _, info := n.st.Leader(); info != nil {
		r.Leader = info.GetGrpcAddr()
	}
	switch {
	case n.closing.Load():
		r.Reason = "shutting down"
	case s.LeaderID == "":
		r.Reason = "no known leader"
	case s.AppliedIndex == 0:
		r.Reason = "nothing applied yet"
	default:
		r.Ready = true
	}
	code := http.StatusOK
	if !r.Ready {
		code = http.StatusServiceUnavailable
	}
	serve.WriteJSON(w, code, r)
}

// healthLoop keeps grpc.health.v1 in step with the store: SERVING while a
// leader is known (so calls can be served or forwarded), NOT_SERVING
// otherwise. Shutdown switches to NOT_SERVING for good (health.Shutdown).
func (n *Node) healthLoop() {
	defer n.bgWG.Done()
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	serving := false
	for {
		id, _ := n.st.Leader()
		if now := id != ""; now != serving {
			serving = now
			st := healthpb.HealthCheckResponse_NOT_SERVING
			if serving {
				st = healthpb.HealthCheckResponse_SERVING
			}
			for _, name := range healthServices() {
				n.health.SetServingStatus(name, st)
			}
			n.log.Debug("health changed", "serving", serving, "leader_id", id)
		}
		select {
		case <-n.bg.Done():
			return
		case <-t.C:
		}
	}
}

// healthServer ends grpc.health.v1 Watch streams when the node shuts down
// (with UNAVAILABLE, after the NOT_SERVING update when it could be sent).
// grpc-go's health server keeps them open forever, which would hold
// GracefulStop until the shutdown timeout: clients that use client-side
// health checking always have one open.
type healthServer struct {
	*health.Server
	closing context.Context // done when shutdown starts
}

func (h *healthServer) Watch(req *healthpb.HealthCheckRequest, stream grpc.ServerStreamingServer[healthpb.HealthCheckResponse]) error {
	ctx, cancel := context.WithCancel(stream.Context())
	defer cancel()
	defer context.AfterFunc(h.closing, cancel)()
	err := h.Server.Watch(req, ctxStream{ServerStreamingServer: stream, ctx: ctx})
	if h.closing.Err() != nil && stream.Context().Err() == nil {
		return status.Error(codes.Unavailable, "node shutting down")
	}
	return err
}

// ctxStream is a server stream with its context replaced.
type ctxStream struct {
	grpc.ServerStreamingServer[healthpb.HealthCheckResponse]
	ctx context.Context
}

func (s ctxStream) Context() context.Context { return s.ctx }

// startMCP starts the node's MCP worker (unless disabled) over a loopback
// connection to its own gRPC listener: the node forwards to the cell
// leader, so the worker keeps no state and needs no more.
func (n *Node) startMCP(w *wiring) error {
	if n.cfg.MCPDisabled {
		return nil
	}
	addr := n.grpcLis.Addr().String()
	conn, err := dial.New(addr, n.cfg.Dial)
	if err != nil {
		return fmt.Errorf("cells: MCP worker connection: %w", err)
	}
	n.mcpConn = conn
	mc := n.cfg.MCP
	if mc.Logger == nil {
		mc.Logger = n.log
	}
	if mc.PublicURL == "" {
		// From configuration (the advertised HTTP address), never from
		// a request's Host header: see mcp.Config.PublicURL.
		mc.PublicURL = "http://" + n.info.HttpAddr
		if n.cfg.TLS != nil {
			mc.PublicURL = "https://" + n.info.HttpAddr
		}
	}
	worker, err := mcp.New(mc, conn, n.cfg.MCPAuth)
	if err != nil {
		return fmt.Errorf("cells: MCP worker: %w", err)
	}
	w.mcp, n.mcpWorker = worker, worker
	w.metrics.MustRegister(worker.Collectors()...)
	return nil
}
