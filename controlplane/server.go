package controlplane

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"

	"github.com/cellplane/cellplane/controlplane/api"
	"github.com/cellplane/cellplane/controlplane/catalog"
	"github.com/cellplane/cellplane/controlplane/cellclient"
	"github.com/cellplane/cellplane/controlplane/controller"
	"github.com/cellplane/cellplane/controlplane/etcdauth"
	"github.com/cellplane/cellplane/controlplane/etcdserver"
	"github.com/cellplane/cellplane/controlplane/topo"
	"github.com/cellplane/cellplane/controlplane/topo/etcdtopo"
	"github.com/cellplane/cellplane/internal/cperr"
	"github.com/cellplane/cellplane/internal/logging"
	"github.com/cellplane/cellplane/internal/pki"
	"github.com/cellplane/cellplane/internal/serve"
	cpv1 "github.com/cellplane/cellplane/proto/cellplane/controlplane/v1"
)

// ListenError is returned by Start when a listen address cannot be bound.
type ListenError = serve.ListenError

// Server is a running control-plane replica.
type Server struct {
	cfg  Config
	log  *slog.Logger
	etcd *etcdserver.Server // nil with external etcd
	// etcdUsers provisions components' etcd users; nil unless the replica
	// reaches etcd with its own identity.
	etcdUsers *etcdauth.Provisioner
	st        topo.Store
	cells     *cellclient.Client
	ctl       *controller.Controller
	grpc      *grpc.Server
	http      *http.Server
	hlth      *health.Server

	grpcLis, httpLis net.Listener
	cancel           context.CancelFunc
	wg               sync.WaitGroup
	closeOnce        sync.Once
	closeErr         error
}

// Start starts a replica: listeners first (a taken port fails fast), then
// etcd (embedded or dialed), the controller and the servers. ctx bounds
// the start only; the replica runs until Close.
func Start(ctx context.Context, cfg Config) (_ *Server, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	log := logging.OrDefault(cfg.Logger).With("component", "controlplane", "replica", cfg.ID)
	s := &Server{cfg: cfg, log: log}
	defer func() {
		if err != nil {
			s.closeParts()
		}
	}()
	if s.grpcLis, err = serve.Listen("grpc", cfg.GRPCAddr, cfg.GRPCListener); err != nil {
		return nil, err
	}
	if s.httpLis, err = serve.Listen("http", cfg.HTTPAddr, cfg.HTTPListener); err != nil {
		return nil, err
	}

	endpoints := cfg.EtcdEndpoints
	if len(endpoints) == 0 {
		ecfg := etcdserver.DefaultConfig()
		ecfg.DataDir = filepath.Join(cfg.DataDir, "etcd")
		ecfg.ClientURL, ecfg.PeerURL = cfg.EmbeddedClientURL, cfg.EmbeddedPeerURL
		ecfg.UnsafeNoFsync = cfg.EtcdUnsafeNoFsync
		if h := cfg.EmbeddedEtcdHealth; h != (EtcdHealth{}) {
			ecfg.AutoCompactionMode, ecfg.AutoCompactionRetention = h.AutoCompactionMode, h.AutoCompactionRetention
			ecfg.QuotaBackendBytes, ecfg.DefragInterval = h.QuotaBackendBytes, h.DefragInterval
			ecfg.DefragMinFreeBytes, ecfg.DefragMinFreeRatio = h.DefragMinFreeBytes, h.DefragMinFreeRatio
		}
		ecfg.Logger = logging.OrDefault(cfg.Logger).With("component", "etcd")
		if cfg.TLS != nil {
			f := cfg.TLS.Files()
			ecfg.TLS = &etcdserver.TLSFiles{CertFile: f.CertFile, KeyFile: f.KeyFile, CAFile: f.CAFile}
		}
		if s.etcd, err = etcdserver.Start(ctx, ecfg); err != nil {
			return nil, fmt.Errorf("controlplane: embedded etcd: %w", err)
		}
		endpoints = s.etcd.Endpoints()
		log.Info("embedded etcd started", "endpoints", endpoints, "data_dir", ecfg.DataDir)
	}
	tcfg := etcdtopo.DefaultConfig()
	tcfg.Endpoints, tcfg.Prefix, tcfg.DialTimeout = endpoints, cfg.EtcdPrefix, cfg.EtcdDialTimeout
	tcfg.CertFile, tcfg.KeyFile, tcfg.CAFile = cfg.EtcdCertFile, cfg.EtcdKeyFile, cfg.EtcdCAFile
	ownIdentity := cfg.TLS != nil && cfg.EtcdCertFile == "" && cfg.EtcdCAFile == "" && etcdtopo.SecureEndpoints(endpoints)
	if ownIdentity {
		tcfg.Identity = cfg.TLS
	} else if cfg.TLS != nil && !etcdtopo.SecureEndpoints(endpoints) {
		log.Warn("etcd is reached in plaintext and without authorisation: whoever reaches it rewrites the placements and the registry; use https endpoints",
			"endpoints", endpoints)
	}
	tcfg.Logger = log
	st, err := etcdtopo.Dial(ctx, tcfg)
	if err != nil {
		return nil, fmt.Errorf("controlplane: etcd at %v: %w", endpoints, err)
	}
	s.st = st
	if ownIdentity {
		// As root: authentication on (first start), then each
		// component's user when it asks where etcd is (GetRegistry).
		admin := cfg.TLS.Certificate().Subject.CommonName
		bctx, cancel := context.WithTimeout(ctx, cfg.EtcdDialTimeout)
		err := etcdauth.Bootstrap(bctx, st, admin)
		cancel()
		if err != nil {
			return nil, fmt.Errorf("controlplane: etcd authentication: %w", err)
		}
		s.etcdUsers = etcdauth.NewProvisioner(st, cfg.EtcdPrefix)
		log.Info("etcd serves mutual TLS with authentication on; components' users are provisioned on GetRegistry", "etcd_user", admin)
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	reg.MustRegister(newCellCollector(st, log))
	if s.etcd != nil {
		reg.MustRegister(s.etcd.Collectors()...)
	}
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	s.cancel = cancel
	if s.etcd != nil && cfg.TLS != nil {
		// etcd reads its CA bundle only at start: restart the member
		// when the trusted CAs change (a CA rotation), checked as often
		// as the replica's own TLS material is.
		if interval := cfg.TLS.Files().ReloadInterval; interval > 0 {
			w := newEtcdCAWatch(s, interval)
			reg.MustRegister(w.restarts)
			s.wg.Go(func() { w.run(runCtx) })
		} else {
			log.Warn("TLS material is not reloaded: a CA rotation needs a restart of the control plane and its embedded etcd")
		}
	}
	dc := cfg.Dial
	if cfg.TLS != nil && dc.Credentials == nil {
		// Calls into cells (tenant placement) carry the control plane's
		// identity and accept only cell nodes (C1, C2).
		dc.Credentials = pki.ClientCredentials(cfg.TLS, pki.ExpectKinds(pki.KindNode))
	}
	s.cells = cellclient.New(st, dc, log)
	if !cfg.TestingKnobs.NoController {
		ccfg := cfg.Controller
		ccfg.ID = cfg.ID
		ccfg.Advertise = s.grpcLis.Addr().String()
		ccfg.Logger = log
		if s.ctl, err = controller.New(st, s.cells, ccfg); err != nil {
			return nil, err
		}
		reg.MustRegister(s.ctl.Collectors()...)
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			_ = s.ctl.Run(runCtx)
		}()
	}

	acfg := cfg.API
	acfg.Logger = log
	acfg.RegistryEndpoints, acfg.RegistryPrefix = endpoints, cfg.EtcdPrefix
	acfg.Cells = s.cells // GetTenant shows the standby's replication
	acfg.Subjects = s.cells
	acfg.FailoverPolicyDefaults = cfg.Controller.AutoPromote.Policy()
	if s.etcdUsers != nil {
		acfg.RegistryCaller = s.provisionCaller
	}
	svc, err := api.New(st, acfg)
	if err != nil {
		return nil, err
	}
	s.hlth = health.NewServer()
	gcfg := serve.GRPCConfig{
		Log:     log,
		Metrics: reg,
		Limits:  cfg.GRPCLimits,
		Unary:   []grpc.UnaryServerInterceptor{s.internalErrors, api.UnaryServerInterceptor()},
	}
	if cfg.TLS != nil {
		// Mutual TLS only, and every call authorised by identity before
		// anything else runs.
		authz := newAuthorizer(log)
		gcfg.Options = append(gcfg.Options, grpc.Creds(pki.ServerCredentials(cfg.TLS)))
		gcfg.Unary = append([]grpc.UnaryServerInterceptor{authz.Unary}, gcfg.Unary...)
		gcfg.Stream = append([]grpc.StreamServerInterceptor{authz.Stream}, gcfg.Stream...)
		log.Info("control plane API serves mutual TLS; calls are authorised by identity",
			"identity", cfg.TLS.Identity().String())
	}
	s.grpc = serve.NewGRPCServer(gcfg, func(gs *grpc.Server) {
		svc.Register(gs)
		healthpb.RegisterHealthServer(gs, s.hlth)
		reflection.Register(gs)
	})

	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	mux.HandleFunc("GET /healthz", s.serveHealthz)
	mux.HandleFunc("GET /readyz", s.serveReadyz)
	s.http = serve.NewHTTPServer(mux, log, cfg.HTTPLimits)

	serve.Start(&s.wg, log, s.grpc, cfg.GRPCLimits.Listener(s.grpcLis, log), s.http, cfg.HTTPLimits.Listener(s.httpLis, log))
	s.hlth.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	s.hlth.SetServingStatus(cpv1.ControlPlaneService_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_SERVING)
	log.Info("control plane started", "grpc", s.GRPCAddr(), "http", s.HTTPAddr(), "etcd", endpoints)
	return s, nil
}

// provisionCaller creates the etcd user of a GetRegistry caller (a node,
// router or worker identity, authenticated by mutual TLS) before it
// connects to etcd. Operators get no etcd user.
func (s *Server) provisionCaller(ctx context.Context) error {
	id, err := pki.PeerIdentity(ctx)
	if err != nil || id.Kind == pki.KindOperator {
		return nil // the authoriser admitted it; nothing to provision
	}
	return s.EnsureEtcdUser(ctx, id)
}

// EnsureEtcdUser creates id's etcd user and role (controlplane/etcdauth)
// if missing: what GetRegistry does for its caller, for a builder that
// starts components with their etcd endpoints (platform). It is a no-op
// when the replica does not reach etcd with its own identity.
func (s *Server) EnsureEtcdUser(ctx context.Context, id pki.Identity) error {
	if s.etcdUsers == nil {
		return nil
	}
	if err := s.etcdUsers.Ensure(ctx, id); err != nil {
		s.log.Warn("cannot provision an etcd user", "identity", id.String(), "err", err)
		if errors.Is(err, etcdauth.ErrNoAccess) {
			return cperr.New(cperr.PermissionDenied, "%s gets no etcd user", id)
		}
		return cperr.New(cperr.ControlPlaneUnavailable, "provisioning the etcd user of %s: %v", id, err)
	}
	return nil
}

// GRPCAddr is the bound gRPC address.
func (s *Server) GRPCAddr() string { return s.grpcLis.Addr().String() }

// HTTPAddr is the bound HTTP address.
func (s *Server) HTTPAddr() string { return s.httpLis.Addr().String() }

// EtcdEndpoints are the embedded etcd's client endpoints (nil when external).
func (s *Server) EtcdEndpoints() []string {
	if s.etcd == nil {
		return nil
	}
	return s.etcd.Endpoints()
}

// Store is the replica's topo store (for tests and tools in this process).
func (s *Server) Store() topo.Store { return s.st }

// IsLeader reports whether this replica's controller leads.
func (s *Server) IsLeader() bool { return s.ctl != nil && s.ctl.IsLeader() }

// Close stops the replica: the servers, the controller (resigning, so a
// peer takes over at once), the store, then embedded etcd.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		s.log.Info("control plane stopping")
		if s.hlth != nil {
			s.hlth.Shutdown()
		}
		serve.Stop(s.grpc, s.http, s.cfg.ShutdownTimeout)
		s.closeErr = s.closeParts()
	})
	return s.closeErr
}

func (s *Server) closeParts() error {
	if s.cancel != nil {
		s.cancel()
	}
	s.wg.Wait()
	var errs []error
	if s.cells != nil {
		errs = append(errs, s.cells.Close())
	}
	if s.st != nil {
		errs = append(errs, s.st.Close())
	}
	if s.etcd != nil {
		errs = append(errs, s.etcd.Close())
	}
	for _, l := range []net.Listener{s.grpcLis, s.httpLis} {
		if l != nil && s.grpc == nil {
			_ = l.Close()
		}
	}
	return errors.Join(errs...)
}

// internalErrors logs an error that will reach the client as INTERNAL
// (with the cause, which the client never sees).
func (s *Server) internalErrors(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	resp, err := h(ctx, req)
	if err != nil && errors.Is(err, cperr.ErrInternal) {
		s.log.ErrorContext(ctx, "internal error", "grpc.method", info.FullMethod, "err", err)
	}
	return resp, err
}

func (s *Server) serveHealthz(w http.ResponseWriter, _ *http.Request) {
	serve.WriteJSON(w, http.StatusOK, map[string]any{"ok": true, "replica": s.cfg.ID})
}

// serveReadyz is ready when etcd answers and the embedded member has no
// alarm raised (NOSPACE: etcd refuses writes; docs/reliability.md); it
// also says who leads.
func (s *Server) serveReadyz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	body := map[string]any{"replica": s.cfg.ID, "leader": s.IsLeader()}
	if s.etcd != nil {
		if alarms := s.etcd.Alarms(); len(alarms) > 0 {
			types := make([]string, len(alarms))
			for i, a := range alarms {
				types[i] = a.Type
			}
			body["ready"] = false
			body["etcd_alarms"] = types
			body["error"] = "etcd alarm raised"
			serve.WriteJSON(w, http.StatusServiceUnavailable, body)
			return
		}
	}
	l, err := catalog.ControllerLeader(ctx, s.st)
	switch {
	case err == nil:
		body["controller_leader"] = l.GetId()
	case errors.Is(err, catalog.ErrCorrupt):
	case errors.Is(err, topo.ErrNotFound):
		body["controller_leader"] = ""
	default:
		body["ready"] = false
		body["error"] = "etcd unreachable"
		serve.WriteJSON(w, http.StatusServiceUnavailable, body)
		return
	}
	body["ready"] = true
	serve.WriteJSON(w, http.StatusOK, body)
}
