// Package mcpserver runs a stand-alone MCP worker process (`cellplane
// worker`): an MCP worker (cells/mcp) for one cell, outside the cell's
// nodes. It reaches the cell through the registry (cells/cellconn follows
// the cell's live members), registers itself under cells/<c>/nodes/<id>
// with role WORKER on a lease so that routers send it MCP traffic, and
// serves /t/<tenant>/mcp, /metrics, /healthz and /readyz on one HTTP
// port — with Config.TLS over mutual TLS only, each request authorised by
// the caller's identity (mcp.HTTPPolicy: MCP from routers). It keeps no
// state: any number of workers can serve a cell, and a killed one loses
// nothing.
//
//	cfg := mcpserver.DefaultConfig()
//	cfg.ID, cfg.Cell, cfg.Registry = "w1", "use1-a", st
//	s, err := mcpserver.Start(ctx, cfg)
//	defer s.Close()
package mcpserver

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/cellplane/cellplane/cells/cellconn"
	"github.com/cellplane/cellplane/cells/mcp"
	"github.com/cellplane/cellplane/cells/registry"
	"github.com/cellplane/cellplane/controlplane/topo"
	"github.com/cellplane/cellplane/internal/dial"
	"github.com/cellplane/cellplane/internal/ids"
	"github.com/cellplane/cellplane/internal/logging"
	"github.com/cellplane/cellplane/internal/pki"
	"github.com/cellplane/cellplane/internal/serve"
	cpv1 "github.com/cellplane/cellplane/proto/cellplane/controlplane/v1"
)

// DefaultHTTPAddr is where a worker listens by default.
const DefaultHTTPAddr = "127.0.0.1:7300"

// Config configures a worker process.
type Config struct {
	// ID names the worker in its cell's registry (unique per cell).
	ID string
	// Cell is the cell the worker serves.
	Cell string
	// Registry is the control plane's store (required; not closed).
	Registry topo.Store
	// RegistryTTL is the lease of the worker's registry key.
	RegistryTTL time.Duration
	// HTTPAddr is the listen address; HTTPListener, when set, is used
	// instead. HTTPAdvertise is what routers dial (default: the bound one).
	HTTPAddr, HTTPAdvertise string
	HTTPListener            net.Listener
	// MCP configures the worker; Auth authenticates calls (nil: none).
	MCP  mcp.Config
	Auth mcp.Authenticator
	// Version is recorded in the registry.
	Version string
	// ShutdownTimeout bounds a graceful stop.
	ShutdownTimeout time.Duration
	// HTTPLimits bound the HTTP server (timeouts, header size,
	// connections; finding M6); the zero value means
	// serve.DefaultHTTPLimits. MCP answers lift the read and write
	// deadlines (serve.Streaming).
	HTTPLimits serve.HTTPLimits
	// Dial configures the connection to the cell's members; the zero
	// value is plaintext, or mutual TLS with TLS's identity when TLS is
	// set.
	Dial dial.Config
	// TLS is the worker's identity inside the cluster (a worker
	// certificate of the cluster CA, spiffe://<cluster>/worker/<id>, and
	// the CA bundle: pki.NewSource). With it, unless Dial.Credentials is
	// set, the connection to the cell's members uses mutual TLS, presents
	// it and accepts only cell nodes (cells serving mutual TLS accept
	// ContextService calls from workers); and the HTTP port serves mutual
	// TLS only, authorising every request against mcp.HTTPPolicy (MCP
	// from routers only, the monitoring pages from components and
	// operators). nil: plaintext both ways, which a cell with TLS refuses
	// (and HTTP open to anyone: `cellplane worker` requires --insecure).
	TLS    *pki.Source
	Logger *slog.Logger
}

// DefaultConfig returns the defaults (ID, Cell and Registry must be set).
func DefaultConfig() Config {
	return Config{HTTPAddr: DefaultHTTPAddr, RegistryTTL: registry.DefaultTTL, MCP: mcp.DefaultConfig(), ShutdownTimeout: 10 * time.Second, HTTPLimits: serve.DefaultHTTPLimits()}
}

// Validate reports an unusable configuration.
func (c Config) Validate() error {
	var errs []error
	if !ids.Valid(c.ID, ids.MaxLen) {
		errs = append(errs, fmt.Errorf("mcpserver: ID %q must be %s", c.ID, ids.Rule(ids.MaxLen)))
	}
	if !ids.Valid(c.Cell, ids.MaxLen) {
		errs = append(errs, fmt.Errorf("mcpserver: Cell %q must be %s", c.Cell, ids.Rule(ids.MaxLen)))
	}
	if c.Registry == nil {
		errs = append(errs, errors.New("mcpserver: a Registry (the control plane's etcd) is required"))
	}
	if c.HTTPListener == nil && c.HTTPAddr == "" {
		errs = append(errs, errors.New("mcpserver: HTTPAddr is required"))
	}
	if c.ShutdownTimeout <= 0 {
		errs = append(errs, fmt.Errorf("mcpserver: ShutdownTimeout %v <= 0", c.ShutdownTimeout))
	}
	if err := c.HTTPLimits.ValidateOrZero(); err != nil {
		errs = append(errs, fmt.Errorf("mcpserver: HTTPLimits: %w", err))
	}
	if c.TLS != nil {
		if id := c.TLS.Identity(); id.Kind != pki.KindWorker {
			errs = append(errs, fmt.Errorf("mcpserver: TLS: certificate identity %s is not a worker's", id))
		}
	}
	errs = append(errs, c.MCP.Validate(), c.Dial.Validate())
	return errors.Join(errs...)
}

// ListenError is returned by Start when the HTTP address cannot be bound.
type ListenError = serve.ListenError

// Server is a running worker process.
type Server struct {
	cfg   Config
	log   *slog.Logger
	lis   net.Listener
	conn  *cellconn.Conn
	w     *mcp.Worker
	reg   *registry.Registrar
	http  *http.Server
	wg    sync.WaitGroup
	once  sync.Once
	cause error
}

// Start connects to the cell, starts serving and registers the worker.
func Start(ctx context.Context, cfg Config) (_ *Server, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	log := logging.OrDefault(cfg.Logger).With("component", "mcp-worker", "cell", cfg.Cell, "worker", cfg.ID)
	s := &Server{cfg: cfg, log: log}
	defer func() {
		if err != nil {
			s.closeParts()
		}
	}()
	if s.lis, err = serve.Listen("http", cfg.HTTPAddr, cfg.HTTPListener); err != nil {
		return nil, err
	}
	dc := cfg.Dial
	if cfg.TLS != nil && dc.Credentials == nil {
		dc.Credentials = pki.ClientCredentials(cfg.TLS, pki.ExpectKinds(pki.KindNode))
	}
	if s.conn, err = cellconn.Dial(ctx, cfg.Registry, cfg.Cell, dc, log); err != nil {
		return nil, err
	}
	if len(s.conn.Members()) == 0 {
		log.Warn("the cell has no live member registered yet; calls fail until one registers")
	}
	advertise := cfg.HTTPAdvertise
	if advertise == "" {
		advertise = s.lis.Addr().String()
	}
	mc := cfg.MCP
	mc.Logger = log
	if mc.PublicURL == "" {
		// From configuration, never from a request's Host header.
		mc.PublicURL = "http://" + advertise
		if cfg.TLS != nil {
			mc.PublicURL = "https://" + advertise
		}
	}
	if s.w, err = mcp.New(mc, s.conn, cfg.Auth); err != nil {
		return nil, err
	}
	promReg := prometheus.NewRegistry()
	promReg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	promReg.MustRegister(s.w.Collectors()...)
	mux := http.NewServeMux()
	handle := mcp.Guard(mux, cfg.TLS != nil, log)
	h := serve.Streaming(s.w.Handler()) // MCP answers may stream (SSE)
	handle(mcp.PatternMCP, h)
	handle(mcp.PatternMetadata, h)
	handle(mcp.PatternMetrics, promhttp.HandlerFor(promReg, promhttp.HandlerOpts{Registry: promReg}))
	handle(mcp.PatternHealthz, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		serve.WriteJSON(w, http.StatusOK, map[string]any{"ok": true, "worker": cfg.ID})
	}))
	handle(mcp.PatternReadyz, http.HandlerFunc(s.serveReadyz))
	s.http = serve.NewHTTPServer(mux, log, cfg.HTTPLimits)
	s.http.RegisterOnShutdown(s.w.CloseSessions) // their SSE streams would hold the drain
	lis := cfg.HTTPLimits.Listener(s.lis, log)
	if cfg.TLS != nil {
		lis = tls.NewListener(lis, mcp.ServerTLSConfig(cfg.TLS))
	}
	serve.Start(&s.wg, log, nil, nil, s.http, lis)

	rcfg := registry.DefaultConfig()
	rcfg.Cell = cfg.Cell
	rcfg.TTL = cfg.RegistryTTL
	rcfg.Logger = log
	rcfg.Node = &cpv1.Node{Id: cfg.ID, Cell: cfg.Cell, Role: cpv1.NodeRole_NODE_ROLE_WORKER, HttpAddr: advertise,
		Version: cfg.Version, StartTime: timestamppb.Now()}
	// A worker never leads anything.
	if s.reg, err = registry.Start(ctx, cfg.Registry, rcfg, registry.LeaderFunc(func() (uint64, bool) { return 0, false })); err != nil {
		return nil, err
	}
	log.Info("MCP worker started", "http", s.HTTPAddr(), "members", s.conn.Members())
	return s, nil
}

// HTTPAddr is the bound HTTP address.
func (s *Server) HTTPAddr() string { return s.lis.Addr().String() }

// serveReadyz: ready while the cell has at least one live member.
func (s *Server) serveReadyz(w http.ResponseWriter, _ *http.Request) {
	members := s.conn.Members()
	code := http.StatusOK
	if len(members) == 0 {
		code = http.StatusServiceUnavailable
	}
	serve.WriteJSON(w, code, map[string]any{"ready": len(members) > 0, "cell": s.cfg.Cell, "members": members})
}

// Close deregisters the worker (routers stop sending it traffic), drains
// HTTP requests, then closes the cell connection.
func (s *Server) Close() error {
	s.once.Do(func() { s.cause = s.closeParts() })
	return s.cause
}

func (s *Server) closeParts() error {
	var errs []error
	if s.reg != nil {
		errs = append(errs, s.reg.Close())
	}
	if s.http != nil {
		serve.Stop(nil, s.http, s.cfg.ShutdownTimeout)
	} else if s.lis != nil {
		_ = s.lis.Close()
	}
	s.wg.Wait()
	if s.w != nil {
		s.w.Close()
	}
	if s.conn != nil {
		errs = append(errs, s.conn.Close())
	}
	return errors.Join(errs...)
}
