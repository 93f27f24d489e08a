package cells

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/cellplane/cellplane/cells/mcp"
	"github.com/cellplane/cellplane/cells/registry"
	"github.com/cellplane/cellplane/cells/service"
	"github.com/cellplane/cellplane/cells/store"
	"github.com/cellplane/cellplane/internal/logging"
	"github.com/cellplane/cellplane/internal/serve"
	cellv1 "github.com/cellplane/cellplane/proto/cellplane/cell/v1"
	"github.com/cellplane/cellplane/replication"
)

// Node is one running member of a cell: its store plus the gRPC and HTTP
// servers in front of it. Start makes one; Close stops it.
type Node struct {
	cfg  Config
	log  *slog.Logger
	info *cellv1.NodeInfo // what this node advertises

	st        *store.Store
	registrar *registry.Registrar // nil without a registry
	authority *registry.Authority // nil without a registry
	svc       *service.Server
	source    *replication.Source
	sink      *replication.Sink      // nil without a registry
	conns     *replication.CellConns // the sink's connections to source cells
	grpcSrv   *grpc.Server
	httpSrv   *http.Server
	mcp       *mcp.Worker      // nil when disabled
	mcpConn   *grpc.ClientConn // the worker's connection to this node's gRPC
	health    *health.Server
	reg       *prometheus.Registry

	grpcLis, httpLis net.Listener

	// bg is cancelled when shutdown starts; the background loops (health,
	// registration, store watch) end with it.
	bg       context.Context
	bgCancel context.CancelFunc
	bgWG     sync.WaitGroup
	serveWG  sync.WaitGroup // the Serve goroutines

	closing  atomic.Bool
	stopOnce sync.Once
	stopErr  error
	done     chan struct{}

	errMu sync.Mutex
	err   error // why the node stopped by itself
}

// ListenError is returned by Start when a listener ("raft", "grpc" or
// "http") cannot be opened.
type ListenError = serve.ListenError

// Start starts a node: it checks the data dir, opens the listeners (so a
// taken port fails fast, before any state is touched), opens the store
// (bootstrapping a new cell when asked), serves gRPC and HTTP, and, with
// cfg.Join, asks the cell to add this node as a voter.
//
// ctx bounds the start-up only (joining may wait for the cell to have a
// leader); the node runs until Close or until its store fails (Done).
func Start(ctx context.Context, cfg Config) (n *Node, err error) {
	// The node owns the pre-opened listeners from the moment Start is
	// called: on failure they are closed like the ones Start opens.
	opened := []net.Listener{cfg.RaftListener, cfg.GRPCListener, cfg.HTTPListener}
	defer func() {
		if err != nil {
			closeListeners(opened...)
		}
	}()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	base := logging.OrDefault(cfg.Logger)
	log := base.With("node", cfg.NodeID)

	if err := checkDataDir(cfg.DataDir); err != nil {
		return nil, err
	}

	// Listeners next: they are the likeliest to fail (a taken port), and
	// the bound addresses are what the store advertises.
	var raftLis, grpcLis, httpLis net.Listener
	for _, l := range []struct {
		name string
		addr string
		pre  net.Listener
		out  *net.Listener
	}{
		{"raft", cfg.RaftAddr, cfg.RaftListener, &raftLis},
		{"grpc", cfg.GRPCAddr, cfg.GRPCListener, &grpcLis},
		{"http", cfg.HTTPAddr, cfg.HTTPListener, &httpLis},
	} {
		if l.pre != nil {
			*l.out = l.pre
			continue
		}
		lis, lerr := net.Listen("tcp", l.addr)
		if lerr != nil {
			return nil, &ListenError{Name: l.name, Addr: l.addr, Err: lerr}
		}
		*l.out = lis
		opened = append(opened, lis)
	}

	info := &cellv1.NodeInfo{
		NodeId:   cfg.NodeID,
		RaftAddr: orDefault(cfg.Store.RaftAdvertise, raftLis.Addr().String()),
		GrpcAddr: orDefault(cfg.Store.GRPCAdvertise, grpcLis.Addr().String()),
		HttpAddr: orDefault(cfg.Store.HTTPAdvertise, httpLis.Addr().String()),
	}

	// With a registry: register first (so that peers see this node), then
	// learn from the registry whether to form the cell or join it.
	leader := &leaderSource{}
	var reg *registry.Registrar
	if cfg.Registry != nil {
		reg, err = startRegistrar(ctx, cfg, info, leader, base)
		if err != nil {
			return nil, err
		}
		defer func() {
			if err != nil {
				_ = reg.Close()
			}
		}()
		if err = fromRegistry(ctx, &cfg, base); err != nil {
			return nil, err
		}
	}

	sc := cfg.Store
	sc.NodeID = cfg.NodeID
	sc.RaftBind = raftLis.Addr().String()
	sc.RaftListener = raftLis
	sc.RaftAdvertise = info.RaftAddr
	sc.GRPCAdvertise = info.GrpcAddr
	sc.HTTPAdvertise = info.HttpAddr
	sc.DataDir = cfg.DataDir
	sc.Bootstrap = cfg.Bootstrap
	sc.Logger = base
	st, err := store.Open(sc)
	if err != nil {
		return nil, fmt.Errorf("cells: open store in %s: %w", cfg.DataDir, err)
	}
	leader.st.Store(st)

	srcCfg := cfg.ReplicationSource
	srcCfg.Logger = base
	source, err := replication.NewSource(st, srcCfg)
	if err != nil {
		_ = st.Close()
		return nil, fmt.Errorf("cells: replication source: %w", err)
	}
	var sink *replication.Sink
	var conns *replication.CellConns
	if cfg.Registry != nil {
		conns = replication.NewCellConns(cfg.Registry, cfg.Dial.With(cfg.ReplicationDialOptions...), base)
		sinkCfg := cfg.Replication
		sinkCfg.Connect = conns.Connect
		sinkCfg.Logger = base
		if sink, err = replication.NewSink(st, sinkCfg); err != nil {
			_ = st.Close()
			return nil, fmt.Errorf("cells: replication sink: %w", err)
		}
	}

	svcCfg := service.DefaultConfig()
	svcCfg.Limits = cfg.Limits
	svcCfg.Node = info
	svcCfg.CellID = cfg.CellID
	svcCfg.Dial = cfg.Dial
	svcCfg.Logger = base
	if sink != nil {
		svcCfg.Replication = sink
	}
	svc, err := service.New(st, svcCfg)
	if err != nil {
		_ = st.Close()
		return nil, fmt.Errorf("cells: services: %w", err)
	}

	bg, bgCancel := context.WithCancel(context.Background())
	n = &Node{
		cfg:       cfg,
		log:       log,
		info:      info,
		st:        st,
		registrar: reg,
		svc:       svc,
		source:    source,
		sink:      sink,
		conns:     conns,
		health:    health.NewServer(),
		reg:       prometheus.NewRegistry(),
		grpcLis:   grpcLis,
		httpLis:   httpLis,
		bg:        bg,
		bgCancel:  bgCancel,
		done:      make(chan struct{}),
	}
	n.reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	n.reg.MustRegister(st.Collectors()...)
	n.reg.MustRegister(source.Collectors()...)
	if sink != nil {
		n.reg.MustRegister(sink.Collectors()...)
	}
	n.grpcSrv = n.newGRPCServer()
	if !cfg.MCPDisabled {
		// The worker calls this node's own gRPC API: the node forwards to
		// the cell leader, so the worker keeps no state and needs no more.
		if err := n.startMCP(grpcLis.Addr().String()); err != nil {
			bgCancel()
			_ = st.Close()
			return nil, err
		}
	}
	n.httpSrv = n.newHTTPServer()
	if cfg.Registry != nil {
		// Installed before the node serves: a leader acknowledges no write
		// before it has published its authority (and applied its fences).
		if n.authority, err = startAuthority(cfg, st, leader, base); err != nil {
			bgCancel()
			_ = st.Close()
			return nil, err
		}
		n.reg.MustRegister(n.authority.Collectors()...)
	}

	// Not serving until the store knows a leader (healthLoop flips it).
	for _, name := range healthServices() {
		n.health.SetServingStatus(name, healthpb.HealthCheckResponse_NOT_SERVING)
	}

	n.serveWG.Add(2)
	go func() {
		defer n.serveWG.Done()
		if err := n.grpcSrv.Serve(grpcLis); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			n.log.Error("gRPC server stopped", "err", err)
		}
	}()
	go func() {
		defer n.serveWG.Done()
		if err := n.httpSrv.Serve(httpLis); err != nil && !errors.Is(err, http.ErrServerClosed) {
			n.log.Error("HTTP server stopped", "err", err)
		}
	}()

	n.bgWG.Add(3)
	go n.watchStore()
	go n.healthLoop()
	go n.registerLoop()
	if sink != nil {
		n.bgWG.Add(1)
		go func() {
			defer n.bgWG.Done()
			sink.Run(n.bg)
		}()
	}

	log.Info("node started", "raft", info.RaftAddr, "grpc", info.GrpcAddr, "http", info.HttpAddr,
		"data_dir", cfg.DataDir, "bootstrap", len(cfg.Bootstrap) > 0, "join", cfg.Join)

	if cfg.Join != "" {
		if err := n.join(ctx); err != nil {
			_ = n.Close()
			return nil, err
		}
	}
	return n, nil
}

// GRPCAddr returns the address the gRPC server is bound to.
func (n *Node) GRPCAddr() string { return n.grpcLis.Addr().String() }

// HTTPAddr returns the address the HTTP server is bound to.
func (n *Node) HTTPAddr() string { return n.httpLis.Addr().String() }

// RaftAddr returns the Raft address this node advertises (the bound one
// unless Store.RaftAdvertise says otherwise).
func (n *Node) RaftAddr() string { return n.info.RaftAddr }

// Info returns the addresses this node advertises to its cell.
func (n *Node) Info() *cellv1.NodeInfo {
	return &cellv1.NodeInfo{NodeId: n.info.NodeId, RaftAddr: n.info.RaftAddr, GrpcAddr: n.info.GrpcAddr, HttpAddr: n.info.HttpAddr}
}

// Store returns the node's store.
func (n *Node) Store() *store.Store { return n.st }

// Authority returns the node's authority keeper (nil without a registry).
func (n *Node) Authority() *registry.Authority { return n.authority }

// Done is closed when the node has stopped: by itself, because its store
// failed (Err says why), or after Close.
func (n *Node) Done() <-chan struct{} { return n.done }

// Err returns why the node stopped by itself, or nil (running, or stopped
// by Close).
func (n *Node) Err() error {
	n.errMu.Lock()
	defer n.errMu.Unlock()
	return n.err
}

// Close stops the node gracefully: health reports NOT_SERVING, new calls
// are refused, running calls drain for up to ShutdownTimeout (then they
// are cut), a leader hands leadership to a peer, and the store is closed.
// It does not remove the node from the cell. Close is idempotent and safe
// to call concurrently; every call returns the first one's result.
func (n *Node) Close() error {
	n.stop(nil)
	n.bgWG.Wait()
	return n.stopErr
}

// stop shuts the node down once. cause is nil for Close and the store's
// error when the store failed.
func (n *Node) stop(cause error) {
	n.stopOnce.Do(func() {
		n.closing.Store(true)
		if cause != nil {
			n.errMu.Lock()
			n.err = cause
			n.errMu.Unlock()
			n.log.Error("node stopping: store failed", "err", cause)
		} else {
			n.log.Info("node stopping")
		}
		n.health.Shutdown()
		n.bgCancel()

		graceful := n.cfg.ShutdownTimeout
		deadline := time.Now().Add(graceful)

		// Drain gRPC and HTTP together. svc.Close ends open Watch streams,
		// which would otherwise hold GracefulStop until the deadline.
		var wg sync.WaitGroup
		wg.Add(2)
		go func() {
			defer wg.Done()
			n.stopGRPC(deadline)
		}()
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithDeadline(context.Background(), deadline)
			defer cancel()
			if err := n.httpSrv.Shutdown(ctx); err != nil {
				_ = n.httpSrv.Close()
			}
		}()
		svcErr := n.svc.Close()
		n.source.Close()
		wg.Wait()
		n.serveWG.Wait()
		if n.mcpConn != nil {
			_ = n.mcpConn.Close()
		}

		if cause == nil && graceful > 0 {
			n.handOverLeadership()
		}
		// Unregister before the store closes (the registrar polls it for
		// leadership); after the hand-over, so that the new leader's key
		// replaces ours with hardly a gap.
		var regErr error
		if n.authority != nil {
			_ = n.authority.Close() // gives the authority up before the registration goes
		}
		if n.registrar != nil {
			regErr = n.registrar.Close()
		}
		if n.conns != nil {
			_ = n.conns.Close()
		}
		stErr := n.st.Close()
		n.stopErr = errors.Join(wrapErr("services", svcErr), wrapErr("registry", regErr), wrapErr("store", stErr))
		n.log.Info("node stopped")
		close(n.done)
	})
}

func (n *Node) stopGRPC(deadline time.Time) {
	stopped := make(chan struct{})
	go func() {
		n.grpcSrv.GracefulStop()
		close(stopped)
	}()
	timer := time.NewTimer(time.Until(deadline))
	defer timer.Stop()
	select {
	case <-stopped:
	case <-timer.C:
		n.log.Warn("graceful gRPC stop timed out; cutting remaining calls", "timeout", n.cfg.ShutdownTimeout)
		n.grpcSrv.Stop()
		<-stopped
	}
}

// handOverLeadership transfers leadership to a peer when this node leads a
// cell of several voters, so that the cell does not wait an election
// timeout for a new leader. Failure is logged, not returned: the cell
// elects a leader by itself anyway.
func (n *Node) handOverLeadership() {
	if !n.st.IsLeader() {
		return
	}
	voters := 0
	for _, m := range n.st.Status().Members {
		if m.Voter {
			voters++
		}
	}
	if voters < 2 {
		return
	}
	// Bounded on its own, not by what the drain left: a transfer takes a
	// round trip or two plus an election, and when it cannot happen (the
	// peers are stopping too) it should not hold the shutdown for long.
	bound := min(n.cfg.ShutdownTimeout, max(2*n.cfg.Store.Raft.ElectionTimeout, time.Second))
	ctx, cancel := context.WithTimeout(context.Background(), bound)
	defer cancel()
	to, err := n.st.TransferLeadership(ctx, "")
	if err != nil {
		n.log.Warn("leadership transfer on shutdown failed; the cell will elect a leader", "err", err)
		return
	}
	n.log.Info("leadership handed over on shutdown", "to", to)
}

// watchStore stops the node when its store stops by itself.
func (n *Node) watchStore() {
	defer n.bgWG.Done()
	select {
	case <-n.st.Done():
		if n.closing.Load() {
			return
		}
		err := n.st.Err()
		if err == nil {
			err = errors.New("store stopped")
		}
		// stop waits for the background loops, this one included: run it
		// on its own goroutine.
		go n.stop(fmt.Errorf("cells: store stopped: %w", err))
	case <-n.bg.Done():
	}
}

// checkDataDir creates dir if needed and proves it is a writable directory
// by creating, syncing and removing a file in it.
func checkDataDir(dir string) error {
	fail := func(err error) error {
		return fmt.Errorf("cells: data dir %s is unusable: %w", dir, err)
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return fail(err)
	}
	f, err := os.CreateTemp(dir, ".write-check-*")
	if err != nil {
		return fail(err)
	}
	_, werr := f.Write([]byte("ok"))
	serr := f.Sync()
	cerr := f.Close()
	rerr := os.Remove(f.Name())
	if err := errors.Join(werr, serr, cerr, rerr); err != nil {
		return fail(err)
	}
	return nil
}

func closeListeners(ls ...net.Listener) {
	for _, l := range ls {
		if l != nil {
			_ = l.Close()
		}
	}
}

func orDefault(s, def string) string {
	if s != "" {
		return s
	}
	return def
}

func wrapErr(what string, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("cells: close %s: %w", what, err)
}
