package cells_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/cellplane/cellplane/cells"
	"github.com/cellplane/cellplane/cells/celltest"
	"github.com/cellplane/cellplane/cells/registry"
	"github.com/cellplane/cellplane/cells/store"
	"github.com/cellplane/cellplane/controlplane/topo"
	"github.com/cellplane/cellplane/controlplane/topo/memtopo"
	"github.com/cellplane/cellplane/internal/tenantmd"
	"github.com/cellplane/cellplane/internal/testutil"
	contextv1 "github.com/cellplane/cellplane/proto/cellplane/context/v1"
	cpv1 "github.com/cellplane/cellplane/proto/cellplane/controlplane/v1"
)

// amnesiaCell is a 3-node cell formed from a memtopo registry, whose
// nodes can be stopped and restarted on the same addresses.
type amnesiaCell struct {
	t     *testing.T
	st    topo.Store
	cfgs  map[string]cells.Config
	nodes map[string]*cells.Node
}

func newAmnesiaCell(t *testing.T) *amnesiaCell {
	st := memtopo.New()
	t.Cleanup(func() { st.Close() })
	ctx := testutil.Context(t, 60*time.Second)
	b, err := proto.Marshal(&cpv1.Cell{Id: "c1", Region: "r1", ExpectedMembers: 3, State: cpv1.CellState_CELL_STATE_ACTIVE})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Create(ctx, topo.CellKey("c1"), b); err != nil {
		t.Fatal(err)
	}
	c := &amnesiaCell{t: t, st: st, cfgs: map[string]cells.Config{}, nodes: map[string]*cells.Node{}}
	type started struct {
		n   *cells.Node
		err error
	}
	results := make(chan started, 3)
	for _, id := range []string{"n1", "n2", "n3"} {
		cfg := registryNode(t, st, id)
		c.cfgs[id] = cfg
		go func() {
			n, err := startRegistryNode(t, cfg)
			results <- started{n, err}
		}()
	}
	for range 3 {
		r := <-results
		if r.err != nil {
			t.Fatalf("start: %v", r.err)
		}
		c.nodes[r.n.Info().NodeId] = r.n
		// Restarts reuse the addresses, without the pre-opened listeners.
		cfg := c.cfgs[r.n.Info().NodeId]
		cfg.RaftAddr, cfg.GRPCAddr, cfg.HTTPAddr = r.n.RaftAddr(), r.n.GRPCAddr(), r.n.HTTPAddr()
		cfg.RaftListener, cfg.GRPCListener, cfg.HTTPListener = nil, nil, nil
		c.cfgs[r.n.Info().NodeId] = cfg
	}
	celltest.WaitLeader(t, c.running())
	return c
}

func (c *amnesiaCell) running() []*cells.Node {
	var out []*cells.Node
	for _, id := range []string{"n1", "n2", "n3"} {
		if n := c.nodes[id]; n != nil {
			out = append(out, n)
		}
	}
	return out
}

func (c *amnesiaCell) stop(id string) {
	c.t.Helper()
	if err := c.nodes[id].Close(); err != nil {
		c.t.Fatalf("close %s: %v", id, err)
	}
	delete(c.nodes, id)
}

// start restarts id on its addresses (and data dir, wiped when wipe).
func (c *amnesiaCell) start(id string, wipe bool) *cells.Node {
	c.t.Helper()
	cfg := c.cfgs[id]
	if wipe {
		if err := os.RemoveAll(cfg.DataDir); err != nil {
			c.t.Fatal(err)
		}
	}
	n, err := startRegistryNode(c.t, cfg)
	if err != nil {
		c.t.Fatalf("restart %s: %v", id, err)
	}
	c.nodes[id] = n
	return n
}

// leaderOf returns the running node that leads, or nil.
func (c *amnesiaCell) leaderOf() *cells.Node {
	for _, n := range c.running() {
		if n.Store().IsLeader() {
			return n
		}
	}
	return nil
}

func contextClient(t *testing.T, n *cells.Node) contextv1.ContextServiceClient {
	return contextv1.NewContextServiceClient(dial(t, n.GRPCAddr()))
}

// readW reads context "h1" at n (linearizable) and returns its texts.
func readW(ctx context.Context, t *testing.T, n *cells.Node) ([]string, error) {
	resp, err := contextClient(t, n).Read(tenantmd.Outgoing(ctx, tenant, 0), &contextv1.ReadRequest{ContextId: "h1",
		ReadOptions: &contextv1.ReadOptions{Consistency: contextv1.Consistency_CONSISTENCY_LINEARIZABLE}})
	if err != nil {
		return nil, err
	}
	var texts []string
	for _, e := range resp.GetEntries() {
		texts = append(texts, e.GetText())
	}
	return texts, nil
}

// TestNoRaftAmnesia is the H1 repro: n2 acknowledges write W with n1 (n3
// is down), then loses its disk and comes back; n1 dies; n3 comes back
// without W. Before H1, n2 re-bootstrapped under its old Raft id, voted
// for n3 with an empty log, and n3 led the cell without W. Now n2 is a
// new incarnation without a vote: n3 alone cannot elect, so the cell
// refuses to serve until n1 returns; then the cell replaces n2's old
// incarnation with the new one (a non-voter, promoted once caught up),
// and W is there.
func TestNoRaftAmnesia(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a 3-node cell and restarts its nodes")
	}
	c := newAmnesiaCell(t)
	ctx := testutil.Context(t, 120*time.Second)
	leader := celltest.WaitLeader(t, c.running())
	celltest.Own(t, leader.GRPCAddr(), tenant)
	if _, err := contextClient(t, leader).CreateContext(tenantmd.Outgoing(ctx, tenant, 0), &contextv1.CreateContextRequest{ContextId: "h1", RequestId: "create-h1"}); err != nil {
		t.Fatalf("create context: %v", err)
	}

	// An acknowledged write means the cell is formed in the registry.
	if formed, err := registry.CellFormed(ctx, c.st, "c1"); err != nil || !formed {
		t.Fatalf("CellFormed after a write = %v, %v", formed, err)
	}
	if _, err := c.st.Get(ctx, topo.CellFormedKey("c1")); err != nil {
		t.Fatalf("formed record: %v", err)
	}

	c.stop("n3")
	leader = celltest.WaitLeader(t, c.running())
	// The new leader acknowledges once its authority lease is published:
	// until then the append is refused as unavailable (same request id,
	// so a retry applies it once).
	testutil.Eventually(t, 30*time.Second, func() error {
		_, err := appendText(ctx, contextClient(t, leader), "h1", "W")
		if status.Code(err) == codes.Unavailable {
			return err
		}
		if err != nil {
			t.Fatalf("append W with n1 and n2: %v", err)
		}
		return nil
	})
	oldRaftID := c.nodes["n2"].Store().RaftID()
	c.stop("n2")
	c.stop("n1")
	n2 := c.start("n2", true) // empty: the disk was lost
	c.start("n3", false)

	// n2 and n3 must not elect a leader from n2's empty state; if one is
	// elected anyway, it must have W.
	err := testutil.Poll(ctx, 8*c.cfgs["n1"].Store.Raft.ElectionTimeout, func() error {
		if c.leaderOf() != nil {
			return nil
		}
		return fmt.Errorf("no leader")
	})
	if err == nil {
		l := c.leaderOf()
		texts, rerr := readW(ctx, t, l)
		t.Fatalf("%s was elected by n2 (lost its disk) and n3: read = %v, %v; want no leader until n1 is back", l.Info().NodeId, texts, rerr)
	}
	st := n2.Store().Status()
	if st.Member || st.RaftID == oldRaftID || !store.HasIncarnation(st.RaftID) {
		t.Fatalf("n2 after losing its disk: raft id %q (was %q), member %v; want a new incarnation, not a member", st.RaftID, oldRaftID, st.Member)
	}

	// n1 comes back: the cell serves again, with W, and n2's new
	// incarnation replaces the old one as a voter.
	c.start("n1", false)
	leader = celltest.WaitLeader(t, c.running())
	testutil.Eventually(t, 30*time.Second, func() error {
		texts, err := readW(ctx, t, leader)
		if err != nil {
			return err
		}
		if strings.Join(texts, ",") != "W" {
			return fmt.Errorf("h1 = %v, want [W]", texts)
		}
		return nil
	})
	testutil.Eventually(t, 30*time.Second, func() error {
		var got []string
		for _, m := range leader.Store().Status().Members {
			got = append(got, fmt.Sprintf("%s/%v", m.RaftID, m.Voter))
		}
		want := fmt.Sprintf("n1/true n3/true %s/true", n2.Store().RaftID())
		if len(got) != 3 || !strings.Contains(" "+strings.Join(got, " ")+" ", " n1/true ") || !strings.Contains(strings.Join(got, " "), "n3/true") ||
			!strings.Contains(strings.Join(got, " "), n2.Store().RaftID()+"/true") {
			return fmt.Errorf("members %v, want %s", got, want)
		}
		return nil
	})
	if !n2.Store().Status().Voter {
		t.Fatal("n2's new incarnation does not see itself as a voter")
	}
}

// TestQuorumDiskLossRefusesThenUnsafeRecover: two of three nodes come
// back without their data. They are new incarnations without a vote, so
// the survivor cannot elect a leader and the cell refuses to serve
// (rather than elect from empty logs). cellplane cell unsafe-recover
// (store.UnsafeRecover) on the stopped survivor makes it the only voter;
// it then leads with its data, the others rejoin as voters, and writes
// succeed.
func TestQuorumDiskLossRefusesThenUnsafeRecover(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a 3-node cell and restarts its nodes")
	}
	c := newAmnesiaCell(t)
	ctx := testutil.Context(t, 120*time.Second)
	leader := celltest.WaitLeader(t, c.running())
	celltest.Own(t, leader.GRPCAddr(), tenant)
	if _, err := contextClient(t, leader).CreateContext(tenantmd.Outgoing(ctx, tenant, 0), &contextv1.CreateContextRequest{ContextId: "h1", RequestId: "create-h1"}); err != nil {
		t.Fatalf("create context: %v", err)
	}
	if _, err := appendText(ctx, contextClient(t, leader), "h1", "W"); err != nil {
		t.Fatalf("append W: %v", err)
	}
	// Every node has W before the disks go.
	testutil.Eventually(t, 10*time.Second, func() error {
		for _, n := range c.running() {
			if s := n.Store().Status(); s.AppliedIndex < leader.Store().Status().CommitIndex {
				return fmt.Errorf("%s applied %d", n.Info().NodeId, s.AppliedIndex)
			}
		}
		return nil
	})
	for _, id := range []string{"n1", "n2", "n3"} {
		c.stop(id)
	}
	c.start("n2", true)
	c.start("n3", true)
	c.start("n1", false)
	err := testutil.Poll(ctx, 8*c.cfgs["n1"].Store.Raft.ElectionTimeout, func() error {
		if l := c.leaderOf(); l != nil {
			return nil
		}
		return fmt.Errorf("no leader")
	})
	if err == nil {
		t.Fatalf("%s was elected with two empty members", c.leaderOf().Info().NodeId)
	}
	for _, id := range []string{"n2", "n3"} {
		if st := c.nodes[id].Store().Status(); st.Member {
			t.Fatalf("%s (empty) is a member: %+v", id, st)
		}
	}
	for _, n := range c.running() {
		if code, _ := httpGet(t, ctx, "http://"+n.HTTPAddr()+"/readyz"); code == 200 {
			t.Fatalf("%s is ready while the cell has no leader", n.Info().NodeId)
		}
	}
	if st := c.nodes["n1"].Store().Status(); !st.Voter || st.LeaderID != "" {
		t.Fatalf("n1: voter %v, leader %q; want a voter without a leader", st.Voter, st.LeaderID)
	}

	// Unsafe recovery from n1: refused without confirmation, then done.
	c.stop("n1")
	rc := store.RecoverConfig{DataDir: c.cfgs["n1"].DataDir, NodeID: "n1", Logger: testutil.Logger(t)}
	if _, err := store.UnsafeRecover(rc); !errors.Is(err, store.ErrRecoverRefused) {
		t.Fatalf("UnsafeRecover without confirmation = %v, want ErrRecoverRefused", err)
	}
	rc.Confirm = true
	res, err := store.UnsafeRecover(rc)
	if err != nil {
		t.Fatalf("UnsafeRecover: %v", err)
	}
	if len(res.Dropped) != 2 || res.RaftAddr != c.cfgs["n1"].RaftAddr {
		t.Fatalf("UnsafeRecover = %+v, want n2 and n3 dropped, n1 at %s", res, c.cfgs["n1"].RaftAddr)
	}
	c.start("n1", false)
	leader = celltest.WaitLeader(t, c.running())
	if leader.Info().NodeId != "n1" {
		t.Fatalf("leader %s, want n1", leader.Info().NodeId)
	}
	testutil.Eventually(t, 30*time.Second, func() error {
		texts, err := readW(ctx, t, leader)
		if err != nil {
			return err
		}
		if strings.Join(texts, ",") != "W" {
			return fmt.Errorf("h1 = %v, want [W]", texts)
		}
		return nil
	})
	testutil.Eventually(t, 30*time.Second, func() error {
		voters := 0
		for _, m := range leader.Store().Status().Members {
			if m.Voter {
				voters++
			}
		}
		for _, id := range []string{"n2", "n3"} {
			if !c.nodes[id].Store().Status().Voter {
				return fmt.Errorf("%s is not a voter yet", id)
			}
		}
		if voters != 3 {
			return fmt.Errorf("%d voters, want 3", voters)
		}
		return nil
	})
	if _, err := appendText(ctx, contextClient(t, leader), "h1", "after"); err != nil {
		t.Fatalf("append after the recovery: %v", err)
	}
}

// A node told to bootstrap (no registry) whose data dir lost its Raft
// state but kept its identity refuses to bootstrap the cell again.
func TestStaticBootstrapRefusedAfterLostState(t *testing.T) {
	cfg := celltest.NodeConfig(t, "n1")
	cfg.Bootstrap = []store.Peer{{ID: "n1", Addr: cfg.RaftListener.Addr().String()}}
	n := celltest.StartNode(t, cfg)
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"raft-wal", "snapshots"} {
		if err := os.RemoveAll(filepath.Join(cfg.DataDir, d)); err != nil {
			t.Fatal(err)
		}
	}
	cfg2 := celltest.NodeConfig(t, "n1")
	cfg2.DataDir, cfg2.Bootstrap = cfg.DataDir, []store.Peer{{ID: "n1", Addr: cfg2.RaftListener.Addr().String()}}
	if n, err := cells.Start(testutil.Context(t, 10*time.Second), cfg2); !errors.Is(err, cells.ErrLostRaftState) {
		if n != nil {
			_ = n.Close()
		}
		t.Fatalf("Start on a dir that lost its Raft state = %v, want ErrLostRaftState", err)
	}
}
