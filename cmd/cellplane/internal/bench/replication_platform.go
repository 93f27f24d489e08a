package bench

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/cellplane/cellplane/cells"
	"github.com/cellplane/cellplane/controlplane"
	"github.com/cellplane/cellplane/controlplane/controller"
	"github.com/cellplane/cellplane/controlplane/etcdserver"
	"github.com/cellplane/cellplane/controlplane/topo"
	"github.com/cellplane/cellplane/controlplane/topo/etcdtopo"
	"github.com/cellplane/cellplane/internal/cperr"
	"github.com/cellplane/cellplane/internal/rpcerr"
	"github.com/cellplane/cellplane/internal/tenantmd"
	cellv1 "github.com/cellplane/cellplane/proto/cellplane/cell/v1"
	contextv1 "github.com/cellplane/cellplane/proto/cellplane/context/v1"
	cpv1 "github.com/cellplane/cellplane/proto/cellplane/controlplane/v1"
	"github.com/cellplane/cellplane/router"
	"github.com/cellplane/cellplane/router/auth"
)

// platform is the whole system in this process, as the replication, move
// and failover scenarios need it: a single-member embedded etcd (fsync
// on: the control plane's writes are on the measured paths), one
// control-plane replica on it, cells created through its API whose nodes
// form from the registry (real Raft on disk over loopback TCP), and
// optionally a router.
//
// Every node talks to etcd through a connection of its own (its "link"),
// so that a node can be killed the way a process dies: kill closes the
// link first (its registry keys and its cell's authority key are then
// left to expire with their leases, as after kill -9, instead of being
// deleted) and then closes the node without a graceful phase (no
// leadership hand-over).
type platform struct {
	root string
	log  *slog.Logger
	p    progress

	etcd  *etcdserver.Server
	st    topo.Store // the bench's own connection (router, inspection)
	cp    *controlplane.Server
	conn  *grpc.ClientConn
	admin cpv1.ControlPlaneServiceClient
	rt    *router.Server
	rconn *grpc.ClientConn

	mu    sync.Mutex
	cells map[string]*platformCell
}

// platformCell is a cell of the platform.
type platformCell struct {
	id, region string
	nodes      []*platformNode
}

// platformNode is a node of a platform cell: its configuration (fixed
// addresses after the first start, so that it restarts as the same Raft
// member) and, while it runs, the node, its link and a client connection.
type platformNode struct {
	cfg  cells.Config
	link topo.Store
	node *cells.Node
	conn *grpc.ClientConn
	// killedAt is when kill started; stopped is closed when the killed
	// node has closed completely.
	killedAt time.Time
	stopped  chan struct{}
}

// platformOptions configures startPlatform.
type platformOptions struct {
	Logger *slog.Logger
	// Controller adjusts the controller's configuration (moves, failover).
	Controller func(*controller.Config)
}

// startPlatform starts etcd under root/etcd and a control-plane replica,
// and waits until it leads. On error everything started is stopped.
func startPlatform(ctx context.Context, root string, opts platformOptions, p progress) (_ *platform, err error) {
	pf := &platform{root: root, log: opts.Logger, p: p, cells: map[string]*platformCell{}}
	defer func() {
		if err != nil {
			pf.close()
		}
	}()
	if pf.etcd, err = startSingleEtcd(ctx, filepath.Join(root, "etcd"), PlacementOptions{Logger: opts.Logger}); err != nil {
		return nil, err
	}
	if pf.st, err = pf.dial(ctx); err != nil {
		return nil, err
	}
	grpcLis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("bench: listen: %w", err)
	}
	httpLis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		grpcLis.Close()
		return nil, fmt.Errorf("bench: listen: %w", err)
	}
	cfg := controlplane.DefaultConfig()
	cfg.ID = "bench-cp"
	cfg.EtcdEndpoints = pf.etcd.Endpoints()
	cfg.GRPCListener, cfg.HTTPListener = grpcLis, httpLis
	cfg.Controller.SessionTTL = 2 * time.Second
	cfg.Controller.RetryMin = 20 * time.Millisecond
	cfg.Controller.RetryMax = time.Second
	if opts.Controller != nil {
		opts.Controller(&cfg.Controller)
	}
	cfg.ShutdownTimeout = 5 * time.Second
	cfg.Logger = opts.Logger.With("component", "controlplane")
	if pf.cp, err = controlplane.Start(ctx, cfg); err != nil {
		grpcLis.Close()
		httpLis.Close()
		return nil, fmt.Errorf("bench: start the control plane: %w", err)
	}
	if pf.conn, err = grpc.NewClient(pf.cp.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials())); err != nil {
		return nil, fmt.Errorf("bench: dial the control plane: %w", err)
	}
	pf.admin = cpv1.NewControlPlaneServiceClient(pf.conn)
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := poll(wctx, func() error {
		if !pf.cp.IsLeader() {
			return errors.New("the control plane does not lead yet")
		}
		return nil
	}); err != nil {
		return nil, fmt.Errorf("bench: control plane: %w", err)
	}
	return pf, nil
}

// dial opens a new etcd connection.
func (pf *platform) dial(ctx context.Context) (topo.Store, error) {
	ecfg := etcdtopo.DefaultConfig()
	ecfg.Endpoints = pf.etcd.Endpoints()
	st, err := etcdtopo.Dial(ctx, ecfg)
	if err != nil {
		return nil, fmt.Errorf("bench: dial etcd: %w", err)
	}
	return st, nil
}

// addCell creates region (if new) and cell through the API, starts
// members nodes that form the cell from the registry, and waits until the
// control plane reports it HEALTHY. opt adjusts each node's configuration.
func (pf *platform) addCell(ctx context.Context, region, id string, members int, opt func(*cells.Config)) (*platformCell, error) {
	if _, err := pf.admin.CreateRegion(ctx, &cpv1.CreateRegionRequest{Name: region}); err != nil && !errors.Is(rpcerr.FromStatus(err), cperr.ErrAlreadyExists) {
		return nil, fmt.Errorf("bench: create region %s: %w", region, rpcerr.FromStatus(err))
	}
	if _, err := pf.admin.CreateCell(ctx, &cpv1.CreateCellRequest{Id: id, Region: region, ExpectedMembers: uint32(members)}); err != nil {
		return nil, fmt.Errorf("bench: create cell %s: %w", id, rpcerr.FromStatus(err))
	}
	c := &platformCell{id: id, region: region}
	pf.mu.Lock()
	pf.cells[id] = c
	pf.mu.Unlock()
	for i := range members {
		cfg := cells.DefaultConfig()
		cfg.NodeID = fmt.Sprintf("%s-n%d", id, i+1)
		cfg.CellID = id
		cfg.DataDir = filepath.Join(pf.root, "nodes", cfg.NodeID)
		cfg.ShutdownTimeout = 0 // closing a node is a kill: no hand-over
		cfg.RegistryTTL = 2 * time.Second
		cfg.MCPDisabled = true
		cfg.Logger = pf.log.With("node", cfg.NodeID)
		for _, l := range []*net.Listener{&cfg.RaftListener, &cfg.GRPCListener, &cfg.HTTPListener} {
			lis, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				return c, fmt.Errorf("bench: listen: %w", err)
			}
			*l = lis
		}
		// The addresses a restart binds again (Raft knows members by them).
		cfg.RaftAddr, cfg.GRPCAddr, cfg.HTTPAddr = cfg.RaftListener.Addr().String(), cfg.GRPCListener.Addr().String(), cfg.HTTPListener.Addr().String()
		if opt != nil {
			opt(&cfg)
		}
		c.nodes = append(c.nodes, &platformNode{cfg: cfg})
	}
	errs := make([]error, members)
	var wg sync.WaitGroup
	for i, n := range c.nodes {
		wg.Go(func() { errs[i] = pf.startNode(ctx, n) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return c, err
	}
	if err := pf.waitHealthy(ctx, id); err != nil {
		return c, err
	}
	return c, nil
}

// startNode starts (or restarts) n with a new link. Nodes of a new cell
// start concurrently: they wait for each other in the registry.
func (pf *platform) startNode(ctx context.Context, n *platformNode) error {
	n.waitStopped()
	link, err := pf.dial(ctx)
	if err != nil {
		return err
	}
	cfg := n.cfg
	cfg.Registry = link
	sctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	node, err := cells.Start(sctx, cfg)
	// Listeners are used once: a restart binds the addresses again.
	n.cfg.RaftListener, n.cfg.GRPCListener, n.cfg.HTTPListener = nil, nil, nil
	if err != nil {
		_ = link.Close()
		return fmt.Errorf("bench: start node %s: %w", cfg.NodeID, err)
	}
	conn, err := grpc.NewClient(node.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		_ = node.Close()
		_ = link.Close()
		return fmt.Errorf("bench: dial %s: %w", node.GRPCAddr(), err)
	}
	n.link, n.node, n.conn, n.killedAt = link, node, conn, time.Time{}
	return nil
}

// kill stops n the way a crashed process stops: its etcd link goes first
// (nothing it registered is deleted: leases expire), then its store (Raft
// stops: its peers no longer hear from it, and it acknowledges nothing
// more), then the rest of the node closes in the background without a
// graceful phase (restarting n waits for it). It returns when Raft has
// stopped; downAt is when.
func (n *platformNode) kill() (downAt time.Time) {
	if n.node == nil {
		return time.Now()
	}
	n.killedAt = time.Now()
	_ = n.link.Close()
	_ = n.conn.Close()
	node := n.node
	_ = node.Store().Close()
	downAt = time.Now()
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		_ = node.Close()
	}()
	n.node, n.link, n.conn, n.stopped = nil, nil, nil, stopped
	return downAt
}

// waitStopped waits until a killed node has closed completely.
func (n *platformNode) waitStopped() {
	if n.stopped != nil {
		<-n.stopped
		n.stopped = nil
	}
}

// running reports whether the node runs.
func (n *platformNode) running() bool { return n.node != nil }

// leader returns the index of the running node that leads, -1 if none.
func (c *platformCell) leader() int {
	for i, n := range c.nodes {
		if n.running() && n.node.Store().IsLeader() {
			return i
		}
	}
	return -1
}

// term returns the highest Raft term the running nodes have seen.
func (c *platformCell) term() uint64 {
	var t uint64
	for _, n := range c.nodes {
		if n.running() {
			t = max(t, n.node.Store().Status().Term)
		}
	}
	return t
}

// waitLeader waits until every running node knows one leader and the
// leader's applied index is reached by every running node within lag
// entries; it returns the leader's index.
func (c *platformCell) waitLeader(ctx context.Context, lag uint64) (int, error) {
	leader := -1
	err := poll(ctx, func() error {
		leader = c.leader()
		if leader < 0 {
			return errors.New("no leader")
		}
		ls := c.nodes[leader].node.Store().Status()
		for _, n := range c.nodes {
			if !n.running() {
				continue
			}
			s := n.node.Store().Status()
			if s.LeaderID != ls.NodeID {
				return fmt.Errorf("node %s follows %q, not %s", s.NodeID, s.LeaderID, ls.NodeID)
			}
			if s.AppliedIndex+lag < ls.AppliedIndex {
				return fmt.Errorf("node %s applied %d of the leader's %d", s.NodeID, s.AppliedIndex, ls.AppliedIndex)
			}
		}
		return nil
	})
	if err != nil {
		return -1, fmt.Errorf("bench: cell %s: %w", c.id, err)
	}
	return leader, nil
}

// leaderConn returns a connection to the node that leads now.
func (c *platformCell) leaderConn(ctx context.Context) (*grpc.ClientConn, error) {
	i, err := c.waitLeader(ctx, 1<<62)
	if err != nil {
		return nil, err
	}
	return c.nodes[i].conn, nil
}

// killAll kills every running node of c at once (a lost region). It
// returns when the kill started and when every node's Raft had stopped.
func (c *platformCell) killAll() (start, down time.Time) {
	start = time.Now()
	var wg sync.WaitGroup
	for _, n := range c.nodes {
		if n.running() {
			wg.Go(func() { n.kill() })
		}
	}
	wg.Wait()
	return start, time.Now()
}

// waitHealthy waits until the control plane reports cell HEALTHY.
func (pf *platform) waitHealthy(ctx context.Context, cell string) error {
	wctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	err := poll(wctx, func() error {
		resp, err := pf.admin.GetCell(wctx, &cpv1.GetCellRequest{Id: cell})
		if err != nil {
			return err
		}
		if h := resp.GetCell().GetHealth(); h != cpv1.CellHealth_CELL_HEALTH_HEALTHY {
			return fmt.Errorf("cell %s is %s", cell, h)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("bench: cell %s: %w", cell, err)
	}
	return nil
}

// createTenant creates tenant id on cell (a standby in standbyRegion when
// not empty) with limits no step reaches.
func (pf *platform) createTenant(ctx context.Context, id, region, cell, standbyRegion string) (*cpv1.Tenant, error) {
	resp, err := pf.admin.CreateTenant(ctx, &cpv1.CreateTenantRequest{
		Id: id, HomeRegion: region, Cell: cell, StandbyRegion: standbyRegion,
		Limits: &cpv1.TenantLimits{Rate: 1e6, Burst: 1 << 30},
	})
	if err != nil {
		return nil, fmt.Errorf("bench: create tenant %s: %w", id, rpcerr.FromStatus(err))
	}
	return resp.GetTenant(), nil
}

// waitStandby waits until tenant's standby on cell is bootstrapped and
// streaming, and returns its replication status.
func (pf *platform) waitStandby(ctx context.Context, cell *platformCell, tenant string, timeout time.Duration) (*cellv1.ReplicationStatus, error) {
	wctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var st *cellv1.ReplicationStatus
	err := poll(wctx, func() error {
		conn, err := cell.leaderConn(wctx)
		if err != nil {
			return err
		}
		resp, err := cellv1.NewCellServiceClient(conn).GetTenant(wctx, &cellv1.GetTenantRequest{Tenant: tenant})
		if err != nil {
			return err
		}
		st = resp.GetReplication()
		if resp.GetTenant().GetRole() != cellv1.Role_ROLE_STANDBY || !resp.GetTenant().GetBootstrapped() || st.GetState() != "STREAMING" {
			return fmt.Errorf("standby of %s on %s: %s, bootstrapped %v, replication %v", tenant, cell.id,
				resp.GetTenant().GetRole(), resp.GetTenant().GetBootstrapped(), st)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	return st, nil
}

// startRouter starts a router on the platform's etcd (auth off: the
// tenant comes from x-cellplane-tenant) and dials it.
func (pf *platform) startRouter(ctx context.Context) error {
	grpcLis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("bench: listen: %w", err)
	}
	httpLis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		grpcLis.Close()
		return fmt.Errorf("bench: listen: %w", err)
	}
	cfg := router.DefaultConfig()
	cfg.Store = pf.st
	cfg.GRPCListener, cfg.HTTPListener = grpcLis, httpLis
	cfg.Auth.Mode = auth.ModeNone
	cfg.ShutdownTimeout = 5 * time.Second
	cfg.Logger = pf.log.With("component", "router")
	if pf.rt, err = router.Start(ctx, cfg); err != nil {
		grpcLis.Close()
		httpLis.Close()
		return fmt.Errorf("bench: start the router: %w", err)
	}
	if pf.rconn, err = grpc.NewClient(pf.rt.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials())); err != nil {
		return fmt.Errorf("bench: dial the router: %w", err)
	}
	return nil
}

// waitRouted waits until the router routes tenant to a cell with a known
// leader.
func (pf *platform) waitRouted(ctx context.Context, tenant string) error {
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	return poll(wctx, func() error {
		t := pf.rt.Table()
		r, ok := t.Lookup(tenant)
		if !t.Loaded() || !ok {
			return fmt.Errorf("router: tenant %s not routable yet", tenant)
		}
		if c, ok := t.Cell(r.Cell); !ok || c.LeaderGRPC == "" {
			return fmt.Errorf("router: no leader for cell %s", r.Cell)
		}
		return nil
	})
}

// routerData is a ContextService client through the router.
func (pf *platform) routerData() contextv1.ContextServiceClient {
	return contextv1.NewContextServiceClient(pf.rconn)
}

// asTenant is ctx with the tenant's metadata.
func asTenant(ctx context.Context, tenant string) context.Context {
	return tenantmd.Outgoing(ctx, tenant, 0)
}

// close stops the router, every node, the control plane and etcd
// (idempotent).
func (pf *platform) close() {
	if pf.rconn != nil {
		_ = pf.rconn.Close()
		pf.rconn = nil
	}
	if pf.rt != nil {
		_ = pf.rt.Close()
		pf.rt = nil
	}
	pf.mu.Lock()
	var all []*platformNode
	for _, c := range pf.cells {
		all = append(all, c.nodes...)
	}
	pf.cells = map[string]*platformCell{}
	pf.mu.Unlock()
	var wg sync.WaitGroup
	for _, n := range all {
		n.waitStopped()
		if n.running() {
			wg.Go(func() {
				_ = n.conn.Close()
				_ = n.node.Close()
				_ = n.link.Close()
			})
		}
	}
	wg.Wait()
	if pf.conn != nil {
		_ = pf.conn.Close()
		pf.conn = nil
	}
	if pf.cp != nil {
		_ = pf.cp.Close()
		pf.cp = nil
	}
	if pf.st != nil {
		_ = pf.st.Close()
		pf.st = nil
	}
	if pf.etcd != nil {
		_ = pf.etcd.Close()
		pf.etcd = nil
	}
}
