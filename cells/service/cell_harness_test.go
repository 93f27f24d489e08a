package service

import (
	"testing"
	"time"

	"github.com/cellplane/cellplane/cells/store"
	"github.com/cellplane/cellplane/internal/testutil"
	cellv1 "github.com/cellplane/cellplane/proto/cellplane/cell/v1"
)

// newCell opens a real one-node cell (Raft over loopback TCP, Pebble in
// memory, the Raft log in t.TempDir()), serves it over gRPC and makes
// tenant "acme" OWNER at epoch 1.
func newCell(t *testing.T, tweak func(*store.Config), svcTweak func(*Config)) *node {
	t.Helper()
	raftLis := testutil.Listen(t)
	grpcLis := testutil.Listen(t)
	cfg := store.DefaultConfig()
	cfg.NodeID = "n1"
	cfg.RaftListener = raftLis
	cfg.DataDir = t.TempDir()
	cfg.Bootstrap = []store.Peer{{ID: "n1", Addr: raftLis.Addr().String()}}
	cfg.GRPCAdvertise = grpcLis.Addr().String()
	cfg.TestingKnobs.InMemoryState = true
	cfg.Raft.HeartbeatTimeout = 50 * time.Millisecond
	cfg.Raft.ElectionTimeout = 50 * time.Millisecond
	cfg.Raft.LeaderLeaseTimeout = 50 * time.Millisecond
	cfg.Logger = testutil.Logger(t).With("component", "store")
	if tweak != nil {
		tweak(&cfg)
	}
	st, err := store.Open(cfg)
	if err != nil {
		t.Fatalf("store.Open: %v", err)
	}
	t.Cleanup(func() {
		if err := st.Close(); err != nil {
			t.Errorf("store.Close: %v", err)
		}
	})
	info := &cellv1.NodeInfo{NodeId: "n1", RaftAddr: raftLis.Addr().String(), GrpcAddr: grpcLis.Addr().String()}
	n := serveNode(t, st, info, grpcLis, svcTweak)
	ctx := testutil.Context(t, 30*time.Second)
	testutil.Eventually(t, 20*time.Second, func() error {
		_, err := n.cell.SetTenant(ctx, &cellv1.SetTenantRequest{Tenant: "acme", Role: cellv1.Role_ROLE_OWNER, Epoch: 1})
		return err
	})
	return n
}
