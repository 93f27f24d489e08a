package storetest

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cellplane/cellplane/cells/store"
	"github.com/cellplane/cellplane/internal/retry"
	"github.com/cellplane/cellplane/internal/testutil"
	cellv1 "github.com/cellplane/cellplane/proto/cellplane/cell/v1"
)

// Options tune a test cluster.
type Options struct {
	// Config is applied to every node's store config before it opens
	// (NodeID, listener, DataDir and Bootstrap are set by the cluster).
	Config func(*store.Config)
	// Logs at or above this level reach t.Log (default Info).
	LogLevel slog.Level
}

// Cluster is a running in-process cell.
type Cluster struct {
	t     testing.TB
	opts  Options
	Nodes []*Node
	net   *network
}

// Node is one member of a test cluster.
type Node struct {
	Index int
	ID    string
	Addr  string // Raft address, stable across restarts
	Dir   string
	// NewIncarnation opens the node as a new incarnation when its dir
	// holds no Raft state (see RestartAsNew).
	NewIncarnation bool
	// Store is nil while the node is killed.
	Store *store.Store
	c     *Cluster
	mu    sync.Mutex
}

// TestConfig is the store config tests start from: fast but not twitchy
// Raft timings for a loaded 2-core machine.
func TestConfig() store.Config {
	cfg := store.DefaultConfig()
	cfg.Raft.HeartbeatTimeout = 200 * time.Millisecond
	cfg.Raft.ElectionTimeout = 200 * time.Millisecond
	cfg.Raft.LeaderLeaseTimeout = 100 * time.Millisecond
	cfg.Raft.CommitTimeout = 5 * time.Millisecond
	return cfg
}

// NewCluster starts an n-node cell and waits for a leader.
func NewCluster(t testing.TB, n int, opts ...Options) *Cluster {
	t.Helper()
	c := &Cluster{t: t, net: newNetwork()}
	if len(opts) > 0 {
		c.opts = opts[0]
	}
	lns := make([]net.Listener, n)
	var peers []store.Peer
	for i := range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("listen: %v", err)
		}
		lns[i] = ln
		node := &Node{Index: i, ID: fmt.Sprintf("n%d", i+1), Addr: ln.Addr().String(), Dir: t.TempDir(), c: c}
		c.Nodes = append(c.Nodes, node)
		c.net.addrs[node.Addr] = i
		peers = append(peers, store.Peer{ID: node.ID, Addr: node.Addr})
	}
	t.Cleanup(c.Close)
	for i, node := range c.Nodes {
		if err := node.open(lns[i], peers); err != nil {
			t.Fatalf("open %s: %v", node.ID, err)
		}
	}
	c.Leader()
	return c
}

func (n *Node) config(ln net.Listener, peers []store.Peer) store.Config {
	cfg := TestConfig()
	cfg.NodeID = n.ID
	if n.c.opts.Config != nil {
		n.c.opts.Config(&cfg)
	}
	cfg.RaftListener = ln
	cfg.DataDir = n.Dir
	cfg.Bootstrap = peers
	cfg.NewIncarnation = n.NewIncarnation && len(peers) == 0
	cfg.GRPCAdvertise = "grpc-" + n.ID // no gRPC here; a recognizable placeholder
	cfg.Logger = slog.New(slog.NewTextHandler(logWriter{t: n.c.t, prefix: n.ID}, &slog.HandlerOptions{Level: n.c.opts.LogLevel}))
	cfg.TestingKnobs.Network = n.c.net.filter(n.Index)
	return cfg
}

func (n *Node) open(ln net.Listener, peers []store.Peer) error {
	s, err := store.Open(n.config(ln, peers))
	if err != nil {
		return err
	}
	n.mu.Lock()
	n.Store = s
	n.mu.Unlock()
	return nil
}

// Kill stops the node (its store closes; its data stays on disk).
func (c *Cluster) Kill(i int) {
	n := c.Nodes[i]
	n.mu.Lock()
	s := n.Store
	n.Store = nil
	n.mu.Unlock()
	if s != nil {
		if err := s.Close(); err != nil {
			c.t.Logf("close %s: %v", n.ID, err)
		}
	}
}

// Restart starts a killed node again on its data dir and Raft address.
func (c *Cluster) Restart(i int) {
	c.t.Helper()
	n := c.Nodes[i]
	var ln net.Listener
	var err error
	// The port was just released; binding it again can briefly fail.
	err = testutil.Poll(context.Background(), 5*time.Second, func() error {
		ln, err = net.Listen("tcp", n.Addr)
		return err
	})
	if err != nil {
		c.t.Fatalf("restart %s: listen %s: %v", n.ID, n.Addr, err)
	}
	if err := n.open(ln, nil); err != nil {
		c.t.Fatalf("restart %s: %v", n.ID, err)
	}
}

// RestartAsNew restarts a killed node whose disk was lost (Wipe) the way a
// cell node does (H1): under a new Raft id, then has the leader replace
// its old incarnation — remove it, add the new one as a non-voter, and
// promote it once it has applied what the cell had committed.
func (c *Cluster) RestartAsNew(i int) {
	c.t.Helper()
	n := c.Nodes[i]
	n.NewIncarnation = true
	c.Restart(i)
	raftID := n.S().RaftID()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := testutil.Poll(ctx, 30*time.Second, func() error {
		l := c.Leader()
		if _, err := l.S().RemoveStaleIncarnations(ctx, raftID); err != nil {
			return err
		}
		return l.S().AddNonVoter(ctx, raftID, n.Addr)
	})
	if err != nil {
		c.t.Fatalf("replace %s: add %s as a non-voter: %v", n.ID, raftID, err)
	}
	target := c.Leader().S().Status().CommitIndex
	err = testutil.Poll(ctx, 30*time.Second, func() error {
		if st := n.S().Status(); !st.Member || st.AppliedIndex < target {
			return fmt.Errorf("%s: member %v, applied %d of %d", raftID, st.Member, st.AppliedIndex, target)
		}
		return c.Leader().S().AddVoter(ctx, raftID, n.Addr)
	})
	if err != nil {
		c.t.Fatalf("replace %s: promote %s: %v", n.ID, raftID, err)
	}
}

// Wipe deletes a killed node's data dir contents, as if its disk was lost.
func (c *Cluster) Wipe(i int) {
	c.t.Helper()
	n := c.Nodes[i]
	if n.Store != nil {
		c.t.Fatalf("wipe %s: node is running", n.ID)
	}
	n.Dir = c.t.TempDir()
}

// TryRestart is Restart for a node that may refuse to start: it returns
// store.Open's error (the node stays killed).
func (c *Cluster) TryRestart(i int) error {
	c.t.Helper()
	n := c.Nodes[i]
	var ln net.Listener
	err := testutil.Poll(context.Background(), 5*time.Second, func() error {
		var err error
		ln, err = net.Listen("tcp", n.Addr)
		return err
	})
	if err != nil {
		return err
	}
	if err := n.open(ln, nil); err != nil {
		ln.Close()
		return err
	}
	return nil
}

// Close stops every node.
func (c *Cluster) Close() {
	for i := range c.Nodes {
		c.Kill(i)
	}
}

// Running returns the nodes that are not killed.
func (c *Cluster) Running() []*Node {
	var out []*Node
	for _, n := range c.Nodes {
		if n.S() != nil {
			out = append(out, n)
		}
	}
	return out
}

// S returns the node's store (nil while killed).
func (n *Node) S() *store.Store {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.Store
}

// Leader waits (up to 20 s) for a running node that leads and can serve
// linearizable reads, and returns it.
func (c *Cluster) Leader() *Node {
	c.t.Helper()
	var leader *Node
	testutil.Eventually(c.t, 20*time.Second, func() error {
		for _, n := range c.Running() {
			s := n.S()
			if s == nil || !s.IsLeader() {
				continue
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			err := s.ReadCell(ctx, store.ReadOptions{}, func(*store.CellView) error { return nil })
			cancel()
			if err == nil {
				leader = n
				return nil
			}
		}
		return fmt.Errorf("no ready leader among %d running nodes", len(c.Running()))
	})
	return leader
}

// Others returns the indexes of every node but the given ones.
func (c *Cluster) Others(except ...int) []int {
	var out []int
	for i := range c.Nodes {
		skip := false
		for _, e := range except {
			skip = skip || e == i
		}
		if !skip {
			out = append(out, i)
		}
	}
	return out
}

// Partition splits the nodes into groups that cannot talk to each other.
// Nodes left out of every group are isolated.
func (c *Cluster) Partition(groups ...[]int) { c.net.partition(len(c.Nodes), groups) }

// Isolate cuts node i off from every other node.
func (c *Cluster) Isolate(i int) { c.Partition([]int{i}, c.Others(i)) }

// Heal removes every partition.
func (c *Cluster) Heal() { c.net.heal() }

// WaitConverged waits until every running node applied the leader's
// commit index.
func (c *Cluster) WaitConverged() {
	c.t.Helper()
	testutil.Eventually(c.t, 20*time.Second, func() error {
		leader := c.Leader().S()
		commit := leader.Status().CommitIndex
		for _, n := range c.Running() {
			if st := n.S().Status(); st.AppliedIndex < commit {
				return fmt.Errorf("%s applied %d < leader commit %d", n.ID, st.AppliedIndex, commit)
			}
		}
		return nil
	})
}

// Propose sends cmd to the current leader, retrying with the same command
// (so the same request id) on leadership errors until ctx ends.
func (c *Cluster) Propose(ctx context.Context, cmd *cellv1.Command) (*cellv1.CommandResult, error) {
	for {
		var s *store.Store
		for _, n := range c.Running() {
			if st := n.S(); st != nil && st.IsLeader() {
				s = st
			}
		}
		if s != nil {
			res, err := s.Propose(ctx, cmd)
			if err == nil || !retry.Resend(retry.Idempotent, err) {
				return res, err
			}
		}
		if err := retry.Sleep(ctx, 5*time.Millisecond); err != nil {
			return nil, err
		}
	}
}

// logWriter sends a node's logs to t.Log.
type logWriter struct {
	t      testing.TB
	prefix string
}

func (w logWriter) Write(p []byte) (int, error) {
	w.t.Log(w.prefix + ": " + strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// network holds the partition state shared by the nodes' filters.
type network struct {
	mu     sync.RWMutex
	addrs  map[string]int // Raft address → node index
	groups map[int]int    // node index → group; nil: healed
}

func newNetwork() *network { return &network{addrs: map[string]int{}} }

func (nw *network) partition(n int, groups [][]int) {
	nw.mu.Lock()
	defer nw.mu.Unlock()
	nw.groups = map[int]int{}
	for i := range n {
		nw.groups[i] = -1 - i // alone unless listed
	}
	for g, members := range groups {
		for _, i := range members {
			nw.groups[i] = g
		}
	}
}

func (nw *network) heal() {
	nw.mu.Lock()
	nw.groups = nil
	nw.mu.Unlock()
}

type filter struct {
	nw   *network
	self int
}

func (nw *network) filter(self int) store.NetworkFilter { return filter{nw: nw, self: self} }

// Blocked implements store.NetworkFilter.
func (f filter) Blocked(peer string) bool {
	f.nw.mu.RLock()
	defer f.nw.mu.RUnlock()
	if f.nw.groups == nil {
		return false
	}
	j, ok := f.nw.addrs[peer]
	return ok && f.nw.groups[f.self] != f.nw.groups[j]
}
