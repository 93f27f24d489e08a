// Package celltest starts real cell nodes (cells.Start, real Raft on disk
// over loopback TCP) in tests: one configuration helper, a whole cell
// formed with a bootstrap list, and the wait for an agreed, registered
// leader. Nodes are closed by t.Cleanup.
//
//	nodes := celltest.StartCell(t, 3)
//	leader := celltest.WaitLeader(t, nodes)
//	celltest.Own(t, leader.GRPCAddr(), "acme")
package celltest

import (
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/cellplane/cellplane/cells"
	"github.com/cellplane/cellplane/cells/store"
	"github.com/cellplane/cellplane/internal/dial"
	"github.com/cellplane/cellplane/internal/testutil"
	cellv1 "github.com/cellplane/cellplane/proto/cellplane/cell/v1"
)

// NodeConfig is a node's configuration on pre-opened loopback listeners
// and a fresh data dir, logging to t.
func NodeConfig(t testing.TB, id string) cells.Config {
	t.Helper()
	cfg := cells.DefaultConfig()
	cfg.NodeID = id
	cfg.DataDir = filepath.Join(t.TempDir(), id)
	cfg.RaftListener = testutil.Listen(t)
	cfg.GRPCListener = testutil.Listen(t)
	cfg.HTTPListener = testutil.Listen(t)
	cfg.ShutdownTimeout = 5 * time.Second
	cfg.Logger = testutil.Logger(t).With("node", id)
	return cfg
}

// StartNode starts a node and closes it on cleanup.
func StartNode(t testing.TB, cfg cells.Config) *cells.Node {
	t.Helper()
	n, err := cells.Start(testutil.Context(t, 30*time.Second), cfg)
	if err != nil {
		t.Fatalf("start %s: %v", cfg.NodeID, err)
	}
	t.Cleanup(func() {
		if err := n.Close(); err != nil {
			t.Errorf("close %s: %v", cfg.NodeID, err)
		}
	})
	return n
}

// StartCell starts a cell of size nodes (n1…) formed with a bootstrap list
// and waits until every node knows the leader and its address.
func StartCell(t testing.TB, size int) []*cells.Node {
	t.Helper()
	cfgs := make([]cells.Config, size)
	var peers []store.Peer
	for i := range cfgs {
		cfgs[i] = NodeConfig(t, fmt.Sprintf("n%d", i+1))
		peers = append(peers, store.Peer{ID: cfgs[i].NodeID, Addr: cfgs[i].RaftListener.Addr().String()})
	}
	nodes := make([]*cells.Node, size)
	for i := range cfgs {
		cfgs[i].Bootstrap = peers
		nodes[i] = StartNode(t, cfgs[i])
	}
	WaitLeader(t, nodes)
	return nodes
}

// WaitLeader waits until the running nodes agree on a leader whose gRPC
// address is registered, and returns it.
func WaitLeader(t testing.TB, nodes []*cells.Node) *cells.Node {
	t.Helper()
	var leader *cells.Node
	testutil.Eventually(t, 20*time.Second, func() error {
		leader = nil
		var want string
		for _, n := range nodes {
			id, info := n.Store().Leader()
			if id == "" || info.GetGrpcAddr() == "" {
				return fmt.Errorf("%s: leader %q not known or not registered", n.Info().NodeId, id)
			}
			if want != "" && id != want {
				return fmt.Errorf("nodes disagree on the leader: %s vs %s", want, id)
			}
			want = id
			if n.Info().NodeId == id {
				leader = n
			}
		}
		if leader == nil {
			return fmt.Errorf("leader %s is not among the nodes", want)
		}
		return nil
	})
	return leader
}

// Own makes the cell at addr (any member) OWNER of tenants at epoch 1.
func Own(t testing.TB, addr string, tenants ...string) {
	t.Helper()
	OwnWith(t, dial.DefaultConfig(), addr, tenants...)
}

// OwnWith is Own over connections configured by cfg (a cell serving
// mutual TLS needs the control plane's credentials).
func OwnWith(t testing.TB, cfg dial.Config, addr string, tenants ...string) {
	t.Helper()
	conn, err := dial.New(addr, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx := testutil.Context(t, 20*time.Second)
	for _, tenant := range tenants {
		if _, err := cellv1.NewCellServiceClient(conn).SetTenant(ctx, &cellv1.SetTenantRequest{
			Tenant: tenant, Role: cellv1.Role_ROLE_OWNER, Epoch: 1, RequestId: "own-" + tenant,
		}); err != nil {
			t.Fatalf("SetTenant %s: %v", tenant, err)
		}
	}
}
