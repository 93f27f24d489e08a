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
	"github.com/cellplane/cellplane/controlplane/tokenkeys"
	"github.com/cellplane/cellplane/internal/logging"
	"github.com/cellplane/cellplane/internal/pki"
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
	parts
	health *health.Server

	// bg is cancelled when shutdown starts; the background loops (health,
	// registration, store watch, replication sink) end with it.
	bg       context.Context
	bgCancel context.CancelFunc
	bgWG     sync.WaitGroup
	serveWG  sync.WaitGroup // the Serve goroutines

	closing  atomic.Bool
	stopOnce sync.Once
	stopErr  error
	done     chan struct{}

	// rejoin: the node lost its data dir and joins its formed cell as a
	// new incarnation, in the background (see fromRegistry).
	rejoin bool

	errMu sync.Mutex
	err   error // why the node stopped by itself
}

// parts are what Start opens, in this order, and closeParts closes. Each
// is nil until opened; a failed Start leaves the later ones nil.
type parts struct {
	raftLis, grpcLis, httpLis net.Listener
	registrar                 *registry.Registrar // nil without a registry
	st                        *store.Store
	source                    *replication.Source
	conns                     *replication.CellConns // the sink's connections to source cells; nil without a registry
	svc                       *service.Server
	mcpConn                   *grpc.ClientConn    // the MCP worker's connection to this node's gRPC; nil when disabled
	mcpWorker                 *mcp.Worker         // nil when disabled; closed before mcpConn (its read cache's followers)
	authority                 *registry.Authority // nil without a registry
	tokenKeys                 *tokenkeys.Ring     // the tenant-token keys; nil without TLS or a registry
	grpcSrv                   *grpc.Server
	httpSrv                   *http.Server
}

// wiring is what Start's steps hand each other and the Node does not
// keep once it runs.
type wiring struct {
	leader  *leaderSource // whether this node leads, for the registrar and the authority
	metrics *prometheus.Registry
	sink    *replication.Sink // nil without a registry
	mcp     *mcp.Worker       // nil when disabled
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
func Start(ctx context.Context, cfg Config) (_ *Node, err error) {
	n := newNode(cfg)
	// The one cleanup of every failure: Close stops what was started and
	// closes what was opened, the pre-opened listeners included (the node
	// owns them from the moment Start is called).
	defer func() {
		if err != nil {
			_ = n.Close()
		}
	}()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := checkDataDir(cfg.DataDir); err != nil {
		return nil, err
	}
	// Listeners next: they are the likeliest to fail (a taken port), and
	// the bound addresses are what the store advertises.
	if err := n.listen(); err != nil {
		return nil, err
	}
	w := &wiring{leader: &leaderSource{}, metrics: prometheus.NewRegistry()}
	w.metrics.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	for _, step := range []func(*wiring) error{
		func(w *wiring) error { return n.register(ctx, w) },
		n.openStore,
		n.openReplication,
		n.openServices,
		n.startMCP,
		n.startAuthority,
	} {
		if err := step(w); err != nil {
			return nil, err
		}
	}
	n.startServers(w)
	n.startBackground(w.sink)
	n.log.Info("node started", "raft", n.info.RaftAddr, "grpc", n.info.GrpcAddr, "http", n.info.HttpAddr,
		"data_dir", n.cfg.DataDir, "bootstrap", len(n.cfg.Bootstrap) > 0, "join", n.cfg.Join)

	if st := n.st.Status(); n.cfg.Registry != nil && n.cfg.Join == "" && !st.Voter && store.HasIncarnation(st.RaftID) {
		// A new incarnation restarted after it was added as a non-voter
		// and before its promotion: finish the join. Whether it is a
		// member in its own view does not tell: its log may stop before
		// the entry that added it (it crashed while catching up; found by
		// test/faults TestS16CrashBetweenAddAndPromotion). Adding a member
		// again as a non-voter changes nothing (a voter stays a voter).
		n.rejoin = true // joinAddr finds the leader through the registry
	}
	switch {
	case n.rejoin:
		// A node that lost its data dir: it runs (not ready, and visible
		// in GetStatus and cellplane_raft_member) until the cell adds it,
		// which may take an operator when the cell lost its quorum too.
		n.bgWG.Go(func() {
			if err := n.join(n.bg); err != nil && n.bg.Err() == nil {
				n.log.Error("rejoining the cell as a new incarnation failed", "err", err)
			}
		})
	case n.cfg.Join != "":
		if err := n.join(ctx); err != nil {
			return nil, err
		}
	}
	return n, nil
}

// newNode returns a node that owns cfg's pre-opened listeners and has
// opened nothing yet.
func newNode(cfg Config) *Node {
	if cfg.TLS != nil && cfg.Dial.Credentials == nil {
		// Every hop from this node into a cell (join, registration,
		// forwarding, replication, its own MCP worker) presents this
		// node's identity and accepts only a cell node.
		cfg.Dial.Credentials = pki.ClientCredentials(cfg.TLS, pki.ExpectKinds(pki.KindNode))
	}
	bg, bgCancel := context.WithCancel(context.Background())
	n := &Node{
		cfg:      cfg,
		log:      logging.OrDefault(cfg.Logger).With("node", cfg.NodeID),
		health:   health.NewServer(),
		bg:       bg,
		bgCancel: bgCancel,
		done:     make(chan struct{}),
	}
	n.raftLis, n.grpcLis, n.httpLis = cfg.RaftListener, cfg.GRPCListener, cfg.HTTPListener
	return n
}

// base is the logger the node's components log to (they add their own
// attributes).
func (n *Node) base() *slog.Logger { return logging.OrDefault(n.cfg.Logger) }

// listen opens the listeners that were not pre-opened and settles the
// addresses the node advertises.
func (n *Node) listen() (err error) {
	if n.raftLis, err = serve.Listen("raft", n.cfg.RaftAddr, n.raftLis); err != nil {
		return err
	}
	if n.grpcLis, err = serve.Listen("grpc", n.cfg.GRPCAddr, n.grpcLis); err != nil {
		return err
	}
	if n.httpLis, err = serve.Listen("http", n.cfg.HTTPAddr, n.httpLis); err != nil {
		return err
	}
	n.info = &cellv1.NodeInfo{
		NodeId:   n.cfg.NodeID,
		RaftAddr: orDefault(n.cfg.Store.RaftAdvertise, n.raftLis.Addr().String()),
		GrpcAddr: orDefault(n.cfg.Store.GRPCAdvertise, n.grpcLis.Addr().String()),
		HttpAddr: orDefault(n.cfg.Store.HTTPAdvertise, n.httpLis.Addr().String()),
	}
	return nil
}

// register, with a registry, registers the node first (so that peers see
// it), then learns from the registry whether to form the cell or join it.
func (n *Node) register(ctx context.Context, w *wiring) (err error) {
	if n.cfg.Registry == nil {
		return checkStaticBootstrap(n.cfg)
	}
	if n.registrar, err = startRegistrar(ctx, n.cfg, n.info, w.leader, n.base()); err != nil {
		return err
	}
	n.rejoin, err = fromRegistry(ctx, &n.cfg, n.base())
	return err
}

// ErrLostRaftState is returned by Start for a node told to bootstrap its
// cell (Bootstrap, without a registry) whose data dir records a Raft
// identity but holds no Raft state: its state was lost, and bootstrapping
// again would bring it back with its old Raft id and none of its votes
// and log (H1). Start it with Join instead: it joins as a new member.
var ErrLostRaftState = errors.New("cells: the data dir lost its Raft state")

// checkStaticBootstrap refuses a static Bootstrap on a data dir that lost
// its Raft state (ErrLostRaftState). A dir lost whole (the identity file
// with it) cannot be told from a new one without a registry: the
// registry's formed record is what catches that (fromRegistry).
func checkStaticBootstrap(cfg Config) error {
	if len(cfg.Bootstrap) == 0 {
		return nil
	}
	has, err := store.HasState(cfg.DataDir)
	if err != nil || has {
		return err
	}
	id, ok, err := store.ReadIdentity(cfg.DataDir)
	if err != nil || !ok {
		return err
	}
	return fmt.Errorf("%w: %s was Raft server %q; refusing to bootstrap the cell again: start the node with Join (it joins as a new member)",
		ErrLostRaftState, cfg.DataDir, id.RaftID)
}

// openStore opens the store on the Raft listener, with the node's
// identity, addresses and knobs.
func (n *Node) openStore(w *wiring) (err error) {
	sc := n.cfg.Store
	sc.NodeID = n.cfg.NodeID
	sc.RaftBind = n.raftLis.Addr().String()
	sc.RaftListener = serve.LimitListener(n.raftLis, n.cfg.RaftMaxConns, n.log)
	sc.RaftAdvertise = n.info.RaftAddr
	sc.GRPCAdvertise = n.info.GrpcAddr
	sc.HTTPAdvertise = n.info.HttpAddr
	sc.DataDir = n.cfg.DataDir
	sc.Bootstrap = n.cfg.Bootstrap
	// A node that joins with no Raft state does so under a new Raft id,
	// never under one an earlier incarnation voted with (H1).
	sc.NewIncarnation = n.cfg.Join != "" && len(n.cfg.Bootstrap) == 0
	sc.TLS = n.cfg.TLS
	sc.Logger = n.base()
	sc.TestingKnobs = n.cfg.TestingKnobs.Store
	sc.ReplicatedLimits = n.cfg.Limits // a source's events meet the client limits (H3)
	if n.st, err = store.Open(sc); err != nil {
		return fmt.Errorf("cells: open store in %s: %w", n.cfg.DataDir, err)
	}
	w.leader.st.Store(n.st)
	n.info.RaftId = n.st.RaftID()
	w.metrics.MustRegister(n.st.Collectors()...)
	return nil
}

// openReplication makes the replication source every node serves and,
// with a registry (through which it finds source cells), the standby
// sink.
func (n *Node) openReplication(w *wiring) (err error) {
	srcCfg := n.cfg.ReplicationSource
	srcCfg.Logger = n.base()
	if n.source, err = replication.NewSource(n.st, srcCfg); err != nil {
		return fmt.Errorf("cells: replication source: %w", err)
	}
	w.metrics.MustRegister(n.source.Collectors()...)
	if n.cfg.Registry == nil {
		return nil
	}
	n.conns = replication.NewCellConns(n.cfg.Registry, n.cfg.Dial.With(n.cfg.ReplicationDialOptions...), n.base())
	sinkCfg := n.cfg.Replication
	sinkCfg.Connect = n.conns.Connect
	sinkCfg.Logger = n.base()
	if w.sink, err = replication.NewSink(n.st, sinkCfg); err != nil {
		return fmt.Errorf("cells: replication sink: %w", err)
	}
	w.metrics.MustRegister(w.sink.Collectors()...)
	return nil
}

// openServices makes the gRPC services (context, cell admin).
func (n *Node) openServices(w *wiring) (err error) {
	svcCfg := service.DefaultConfig()
	svcCfg.Limits = n.cfg.Limits
	svcCfg.Node = n.info
	svcCfg.CellID = n.cfg.CellID
	svcCfg.Dial = n.cfg.Dial
	svcCfg.AllowCrossHostAddrs = n.cfg.AllowCrossHostAddrs
	if n.cfg.TokenEncoding != "" {
		svcCfg.TokenEncoding = n.cfg.TokenEncoding
	}
	if n.cfg.WatchHeartbeat > 0 {
		svcCfg.WatchHeartbeat = n.cfg.WatchHeartbeat
	}
	svcCfg.Logger = n.base()
	if w.sink != nil {
		svcCfg.Replication = w.sink
	}
	if n.svc, err = service.New(n.st, svcCfg); err != nil {
		return fmt.Errorf("cells: services: %w", err)
	}
	return nil
}

// startAuthority, with a registry, starts the authority keeper and
// installs it as the store's write gate. It runs before the node serves:
// a leader acknowledges no write before it has published its authority
// (and applied its fences).
func (n *Node) startAuthority(w *wiring) (err error) {
	if n.cfg.Registry == nil {
		return nil
	}
	if n.authority, err = startAuthority(n.cfg, n.st, w.leader, n.base()); err != nil {
		return err
	}
	w.metrics.MustRegister(n.authority.Collectors()...)
	return nil
}

// startServers builds the gRPC and HTTP servers and serves them. Health
// says NOT_SERVING until the store knows a leader (healthLoop flips it).
func (n *Node) startServers(w *wiring) {
	for _, name := range healthServices() {
		n.health.SetServingStatus(name, healthpb.HealthCheckResponse_NOT_SERVING)
	}
	n.grpcSrv = n.newGRPCServer(w.metrics)
	n.httpSrv = n.newHTTPServer(w.metrics, w.mcp)
	serve.Start(&n.serveWG, n.log, n.grpcSrv, n.cfg.GRPCLimits.Listener(n.grpcLis, n.log), n.httpSrv, n.httpListener())
}

// startBackground starts the loops that run until shutdown starts.
func (n *Node) startBackground(sink *replication.Sink) {
	n.bgWG.Add(3)
	go n.watchStore()
	go n.healthLoop()
	go n.registerLoop()
	n.bgWG.Go(n.peerDiskLoop)
	if sink != nil {
		n.bgWG.Go(func() { sink.Run(n.bg) })
	}
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
	return &cellv1.NodeInfo{NodeId: n.info.NodeId, RaftAddr: n.info.RaftAddr, GrpcAddr: n.info.GrpcAddr, HttpAddr: n.info.HttpAddr, RaftId: n.info.RaftId}
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

// stop shuts the node down once: it stops what Start started and closes
// what it opened, however far Start got. cause is nil for Close and the
// store's error when the store failed.
func (n *Node) stop(cause error) {
	n.stopOnce.Do(func() {
		n.closing.Store(true)
		started := n.grpcSrv != nil // a failed Start stops quietly
		switch {
		case cause != nil:
			n.errMu.Lock()
			n.err = cause
			n.errMu.Unlock()
			n.log.Error("node stopping: store failed", "err", cause)
		case started:
			n.log.Info("node stopping")
		}
		n.health.Shutdown()
		n.bgCancel()
		svcErr := n.drain()
		if cause == nil && n.cfg.ShutdownTimeout > 0 {
			n.handOverLeadership()
		}
		n.stopErr = errors.Join(wrapErr("services", svcErr), n.closeParts())
		if started {
			n.log.Info("node stopped")
		}
		close(n.done)
	})
}

// drain stops the servers gracefully (calls still running after
// ShutdownTimeout are cut) and meanwhile closes the services: svc.Close
// ends open Watch streams, which would otherwise hold the gRPC stop until
// the deadline.
func (n *Node) drain() error {
	var cut bool
	var wg sync.WaitGroup
	wg.Go(func() { cut = serve.Stop(n.grpcSrv, n.httpSrv, n.cfg.ShutdownTimeout) })
	var err error
	if n.svc != nil {
		err = n.svc.Close()
	}
	if n.source != nil {
		n.source.Close()
	}
	wg.Wait()
	n.serveWG.Wait()
	if cut {
		n.log.Warn("graceful stop timed out; cut the remaining calls", "timeout", n.cfg.ShutdownTimeout)
	}
	return err
}

// closeParts closes whatever Start opened (any part may be missing), after
// drain. The order is the reverse of opening but for the registration,
// which goes before the store it polls for leadership (and after the
// hand-over, so that the new leader's key replaces ours with hardly a
// gap).
func (n *Node) closeParts() error {
	if n.mcpWorker != nil {
		n.mcpWorker.Close()
	}
	if n.mcpConn != nil {
		_ = n.mcpConn.Close()
	}
	if n.tokenKeys != nil {
		n.tokenKeys.Close()
	}
	if n.authority != nil {
		_ = n.authority.Close() // gives the authority up before the registration goes
	}
	var regErr, stErr error
	if n.registrar != nil {
		regErr = n.registrar.Close()
	}
	if n.conns != nil {
		_ = n.conns.Close()
	}
	if n.st != nil {
		stErr = n.st.Close()
	} else {
		closeListeners(n.raftLis)
	}
	if n.grpcSrv == nil { // never served: no server closed them
		closeListeners(n.grpcLis, n.httpLis)
	}
	return errors.Join(wrapErr("registry", regErr), wrapErr("store", stErr))
}

// handOverLeadership transfers leadership to a peer when this node leads a
// cell of several voters, so that the cell does not wait an election
// timeout for a new leader. Failure is logged, not returned: the cell
// elects a leader by itself anyway.
func (n *Node) handOverLeadership() {
	if n.st == nil || !n.st.IsLeader() {
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
