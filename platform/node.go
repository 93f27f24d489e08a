package platform

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"sync"
	"time"

	"google.golang.org/grpc"

	"github.com/cellplane/cellplane/cells"
	"github.com/cellplane/cellplane/cells/mcpauth"
	"github.com/cellplane/cellplane/controlplane/topo"
	"github.com/cellplane/cellplane/controlplane/topo/etcdtopo"
	"github.com/cellplane/cellplane/internal/pki"
)

// nodeStartTimeout bounds one node's start.
const nodeStartTimeout = healthTimeout

// Node is a node of a platform cell: in this process, or a child process
// (Config.MultiProcess). Its addresses are fixed at creation, so that it
// restarts as the same Raft member.
//
// An in-process node talks to etcd through a connection of its own (its
// link), so that Kill can stop it the way a process dies: the link goes
// first (its registry keys and its cell's authority key are then left to
// expire with their leases, as after kill -9, instead of being deleted),
// then the node closes without a graceful phase (no leadership hand-over).
type Node struct {
	p    *Platform
	cell *Cell
	// cfg is an in-process node's configuration; its listeners are used
	// by the first start only.
	cfg       cells.Config
	endpoints []string // the registry link's etcd (nil: the platform's)
	// With MutualTLS: an in-process node's TLS material, a child's
	// certificate name in the certs directory.
	tls      *pki.Source
	certName string

	mu   sync.Mutex
	info NodeInfo
	// In process, while it runs.
	node *cells.Node
	link topo.Store
	conn *grpc.ClientConn
	// stopAuth ends the MCP authenticator's watch on key records.
	stopAuth context.CancelFunc
	// stopped is closed when a killed in-process node has closed
	// completely.
	stopped chan struct{}
	// A child process, while it runs: done is closed when it exited.
	child *child
}

// newNode prepares the k-th node of c: its addresses and configuration.
func (p *Platform) newNode(c *Cell, k int, spec CellSpec) (*Node, error) {
	n := &Node{p: p, cell: c, endpoints: spec.EtcdEndpoints}
	n.info = NodeInfo{ID: NodeName(c.id, k), Cell: c.id, Region: c.region}
	p.mu.Lock()
	i := len(p.nodes)
	p.nodes = append(p.nodes, n)
	p.mu.Unlock()

	var lis [3]net.Listener
	switch {
	case p.cfg.NodeBasePort != 0:
		base := p.cfg.NodeBasePort + 3*i
		n.info.Raft, n.info.GRPC, n.info.HTTP = addr(base), addr(base+1), addr(base+2)
	case p.cfg.MultiProcess:
		var addrs [3]string
		for j := range addrs {
			l, err := net.Listen("tcp", net.JoinHostPort(p.nodeHost(), "0"))
			if err != nil {
				return nil, fmt.Errorf("listen: %w", err)
			}
			addrs[j] = l.Addr().String()
			defer l.Close() // distinct ports: all three held until here
		}
		n.info.Raft, n.info.GRPC, n.info.HTTP = addrs[0], addrs[1], addrs[2]
	default:
		// Listeners opened now cannot be taken before the node binds them.
		for j := range lis {
			l, err := net.Listen("tcp", net.JoinHostPort(p.nodeHost(), "0"))
			if err != nil {
				for _, l := range lis[:j] {
					_ = l.Close()
				}
				return nil, fmt.Errorf("listen: %w", err)
			}
			lis[j] = l
		}
		n.info.Raft, n.info.GRPC, n.info.HTTP = lis[0].Addr().String(), lis[1].Addr().String(), lis[2].Addr().String()
	}
	if p.certs != nil {
		id := pki.NodeIdentity(p.cfg.Name, c.region, c.id, n.info.ID)
		var err error
		if p.cfg.MultiProcess {
			n.certName, err = p.certs.ensure(id)
		} else {
			n.tls, err = p.certs.source(id)
		}
		if err != nil {
			for _, l := range lis {
				closeListener(l)
			}
			return nil, fmt.Errorf("node %s: %w", n.info.ID, err)
		}
	}
	if p.cfg.MultiProcess {
		return n, nil
	}
	cfg := p.cfg.Node
	cfg.TLS = n.tls
	cfg.MCP.PublicURL = p.MCPPublicURL()
	cfg.NodeID, cfg.CellID = n.info.ID, c.id
	cfg.DataDir = filepath.Join(p.cfg.DataDir, "nodes", n.info.ID)
	cfg.RaftAddr, cfg.GRPCAddr, cfg.HTTPAddr = n.info.Raft, n.info.GRPC, n.info.HTTP
	cfg.RaftListener, cfg.GRPCListener, cfg.HTTPListener = lis[0], lis[1], lis[2]
	cfg.Registry = nil // the link, at each start
	cfg.Logger = slog.New(muted{h: p.log.Handler(), quiet: &p.quiet}).With("node", n.info.ID)
	applyCellKnobs(&cfg, p.cfg.TestingKnobs.Cell)
	if spec.Configure != nil {
		spec.Configure(&cfg)
	}
	n.cfg = cfg
	return n, nil
}

// start starts (or restarts) the node.
func (n *Node) start(ctx context.Context) error {
	if n.p.cfg.MultiProcess {
		return n.spawn()
	}
	return n.startInProcess(ctx)
}

func (n *Node) startInProcess(ctx context.Context) error {
	n.waitStopped()
	cfg := n.cfg
	var link topo.Store
	if cfg.Registry == nil {
		ec := etcdtopo.DefaultConfig()
		ec.Endpoints = n.endpoints
		if ec.Endpoints == nil {
			ec.Endpoints = n.p.cp.EtcdEndpoints()
		}
		if n.tls != nil && etcdtopo.SecureEndpoints(ec.Endpoints) {
			// The node's own identity: its etcd user, whose role writes
			// only its cell's registry keys, provisioned first.
			ec.Identity = n.tls
			if err := n.p.cp.EnsureEtcdUser(ctx, n.tls.Identity()); err != nil {
				return fmt.Errorf("node %s: etcd user: %w", cfg.NodeID, err)
			}
		}
		var err error
		if link, err = etcdtopo.Dial(ctx, ec); err != nil {
			return fmt.Errorf("node %s: dial etcd: %w", cfg.NodeID, err)
		}
		cfg.Registry = link
	}
	stopAuth := func() {}
	closeLink := func() {
		stopAuth()
		if link != nil {
			_ = link.Close()
		}
	}
	if n.p.cfg.Auth == AuthAPIKey {
		kc := mcpauth.DefaultConfig()
		kc.Registry = cfg.Registry
		a, err := mcpauth.New(kc)
		if err != nil {
			closeLink()
			return err
		}
		cfg.MCPAuth = a
		// The watch on key records lives as long as this start of the node.
		actx, cancel := context.WithCancel(context.Background())
		go a.Run(actx)
		stopAuth = cancel
	}
	sctx, cancel := context.WithTimeout(ctx, nodeStartTimeout)
	defer cancel()
	node, err := cells.Start(sctx, cfg)
	// Listeners are used once: a restart binds the addresses again.
	n.cfg.RaftListener, n.cfg.GRPCListener, n.cfg.HTTPListener = nil, nil, nil
	if err != nil {
		closeLink()
		return fmt.Errorf("node %s: %w", cfg.NodeID, err)
	}
	conn, err := n.p.dialAs(node.GRPCAddr(), pki.KindNode)
	if err != nil {
		_ = node.Close()
		closeLink()
		return fmt.Errorf("node %s: dial %s: %w", cfg.NodeID, node.GRPCAddr(), err)
	}
	n.mu.Lock()
	n.node, n.link, n.conn, n.stopAuth = node, link, conn, stopAuth
	n.mu.Unlock()
	return nil
}

// waitStopped waits until a killed in-process node has closed completely.
func (n *Node) waitStopped() {
	n.mu.Lock()
	ch := n.stopped
	n.mu.Unlock()
	if ch != nil {
		<-ch
	}
}

// Restart starts the node again (after Kill or Stop; a killed in-process
// node is first waited for). It returns once the node runs (in process:
// cells.Start returned; a child: its process started).
func (n *Node) Restart(ctx context.Context) error {
	if n.Running() {
		return fmt.Errorf("node %s runs", n.ID())
	}
	return n.start(ctx)
}

// Kill stops the node the way a crash does. In process: its etcd link
// goes first (nothing it registered is deleted: leases expire), then its
// store (Raft stops: its peers no longer hear from it, and it
// acknowledges nothing more), then the rest of the node closes in the
// background without a graceful phase (Restart waits for it). A child
// process gets SIGKILL. Kill returns when it started and when the node
// was down (Raft stopped, or the process exited).
func (n *Node) Kill() (killedAt, downAt time.Time) {
	if n.p.cfg.MultiProcess {
		return n.killChild()
	}
	n.mu.Lock()
	node, link, conn := n.node, n.link, n.conn
	if node == nil {
		n.mu.Unlock()
		now := time.Now()
		return now, now
	}
	stopped := make(chan struct{})
	stopAuth := n.stopAuth
	n.node, n.link, n.conn, n.stopped, n.stopAuth = nil, nil, nil, stopped, nil
	n.mu.Unlock()
	killedAt = time.Now()
	if stopAuth != nil {
		stopAuth()
	}
	if link != nil {
		_ = link.Close()
	}
	_ = conn.Close()
	_ = node.Store().Close()
	downAt = time.Now()
	go func() {
		defer close(stopped)
		_ = node.Close()
	}()
	return killedAt, downAt
}

// Stop stops the node: in process, cells.Node.Close (graceful within its
// ShutdownTimeout); a child gets SIGTERM, then SIGKILL after 15 s.
func (n *Node) Stop() {
	if n.p.cfg.MultiProcess {
		n.stopChild()
		return
	}
	n.waitStopped()
	n.mu.Lock()
	node, link, conn, stopAuth := n.node, n.link, n.conn, n.stopAuth
	n.node, n.link, n.conn, n.stopAuth = nil, nil, nil, nil
	if stopAuth != nil {
		stopAuth()
	}
	lis := []net.Listener{n.cfg.RaftListener, n.cfg.GRPCListener, n.cfg.HTTPListener}
	n.cfg.RaftListener, n.cfg.GRPCListener, n.cfg.HTTPListener = nil, nil, nil
	n.mu.Unlock()
	for _, l := range lis { // never started
		closeListener(l)
	}
	if node == nil {
		return
	}
	_ = conn.Close()
	_ = node.Close()
	if link != nil {
		_ = link.Close()
	}
}

// ID is the node's id.
func (n *Node) ID() string { return n.info.ID }

// Cell is the node's cell.
func (n *Node) Cell() *Cell { return n.cell }

// Info describes the node.
func (n *Node) Info() NodeInfo {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.info
}

// Running reports whether the node runs.
func (n *Node) Running() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.node != nil || n.child != nil
}

// Node returns the running in-process node; nil when it does not run or
// runs as a child process.
func (n *Node) Node() *cells.Node {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.node
}

// Conn returns a client connection to the running node (nil when it does
// not run).
func (n *Node) Conn() *grpc.ClientConn {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.conn
}

// Cell is a cell of the platform.
type Cell struct {
	p          *Platform
	id, region string
	nodes      []*Node
}

// ID is the cell's id.
func (c *Cell) ID() string { return c.id }

// Region is the cell's region.
func (c *Cell) Region() string { return c.region }

// infos describes the cell's nodes.
func (c *Cell) infos() []NodeInfo {
	out := make([]NodeInfo, len(c.nodes))
	for i, n := range c.nodes {
		out[i] = n.Info()
	}
	return out
}

// Nodes returns the cell's nodes.
func (c *Cell) Nodes() []*Node { return append([]*Node(nil), c.nodes...) }

// Leader returns the running in-process node that leads, nil if none.
func (c *Cell) Leader() *Node {
	for _, n := range c.nodes {
		if node := n.Node(); node != nil && node.Store().IsLeader() {
			return n
		}
	}
	return nil
}

// Term returns the highest Raft term the running in-process nodes have
// seen: it grows by one per election (won or not).
func (c *Cell) Term() uint64 {
	var t uint64
	for _, n := range c.nodes {
		if node := n.Node(); node != nil {
			t = max(t, node.Store().Status().Term)
		}
	}
	return t
}

// WaitLeader waits until every running in-process node knows one leader
// and reaches the leader's applied index within lag entries; it returns
// the leader.
func (c *Cell) WaitLeader(ctx context.Context, lag uint64) (*Node, error) {
	var leader *Node
	err := poll(ctx, func() error {
		leader = c.Leader()
		if leader == nil {
			return errors.New("no leader")
		}
		ln := leader.Node()
		if ln == nil {
			return errors.New("the leader stopped")
		}
		ls := ln.Store().Status()
		for _, n := range c.nodes {
			node := n.Node()
			if node == nil {
				continue
			}
			s := node.Store().Status()
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
		return nil, fmt.Errorf("cell %s: %w", c.id, err)
	}
	return leader, nil
}

// LeaderConn returns a connection to the node that leads now.
func (c *Cell) LeaderConn(ctx context.Context) (*grpc.ClientConn, error) {
	l, err := c.WaitLeader(ctx, 1<<62)
	if err != nil {
		return nil, err
	}
	if conn := l.Conn(); conn != nil {
		return conn, nil
	}
	return nil, fmt.Errorf("cell %s: the leader %s stopped", c.id, l.ID())
}

// KillAll kills every running node of the cell at once (a lost region).
// It returns when the kill started and when every node was down.
func (c *Cell) KillAll() (start, down time.Time) {
	start = time.Now()
	var wg sync.WaitGroup
	for _, n := range c.nodes {
		if n.Running() {
			wg.Go(func() { n.Kill() })
		}
	}
	wg.Wait()
	return start, time.Now()
}

// Restart starts every node of the cell that does not run, at once, and
// waits until the control plane reports the cell HEALTHY.
func (c *Cell) Restart(ctx context.Context) error {
	errs := make([]error, len(c.nodes))
	var wg sync.WaitGroup
	for i, n := range c.nodes {
		if !n.Running() {
			wg.Go(func() { errs[i] = n.start(ctx) })
		}
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	return c.p.waitHealthy(ctx, []string{c.id})
}

// muted is a slog.Handler that drops everything once quiet is set.
type muted struct {
	h     slog.Handler
	quiet interface{ Load() bool }
}

func (m muted) Enabled(ctx context.Context, l slog.Level) bool {
	return !m.quiet.Load() && m.h.Enabled(ctx, l)
}

func (m muted) Handle(ctx context.Context, r slog.Record) error {
	if m.quiet.Load() {
		return nil
	}
	return m.h.Handle(ctx, r)
}

func (m muted) WithAttrs(a []slog.Attr) slog.Handler {
	return muted{h: m.h.WithAttrs(a), quiet: m.quiet}
}

func (m muted) WithGroup(g string) slog.Handler { return muted{h: m.h.WithGroup(g), quiet: m.quiet} }

// nodeHost is the loopback address the nodes listen on.
func (p *Platform) nodeHost() string { return cmp.Or(p.cfg.NodeHost, "127.0.0.1") }
