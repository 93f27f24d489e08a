package cells_test

import (
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cellplane/cellplane/cells"
	"github.com/cellplane/cellplane/cells/celltest"
	"github.com/cellplane/cellplane/cells/store"
	"github.com/cellplane/cellplane/internal/cperr"
	"github.com/cellplane/cellplane/internal/rpcerr"
	"github.com/cellplane/cellplane/internal/tenantmd"
	"github.com/cellplane/cellplane/internal/testutil"
	cellv1 "github.com/cellplane/cellplane/proto/cellplane/cell/v1"
	contextv1 "github.com/cellplane/cellplane/proto/cellplane/context/v1"
	replicationv1 "github.com/cellplane/cellplane/proto/cellplane/replication/v1"
)

// fakeDisk is a store.DiskSpace whose free bytes a test sets.
type fakeDisk struct{ free atomic.Uint64 }

func (d *fakeDisk) Space(string) (uint64, uint64, error) { return d.free.Load(), 1 << 30, nil }

// TestFollowerDiskFull (H4, S13): a follower below its free-space
// watermark makes the leader refuse new writes with STORAGE_FULL naming
// the follower; reads, deletes, DeleteTenant and exports keep working;
// writes resume once the follower has room again, and a full member that
// stops answering no longer blocks writes once its report is stale.
func TestFollowerDiskFull(t *testing.T) {
	const room, low = 1 << 29, 1000
	disks := map[string]*fakeDisk{}
	cfgs := make([]cells.Config, 3)
	var peers []store.Peer
	for i := range cfgs {
		cfgs[i] = celltest.NodeConfig(t, fmt.Sprintf("n%d", i+1))
		d := &fakeDisk{}
		d.free.Store(room)
		disks[cfgs[i].NodeID] = d
		cfgs[i].Store.Disk = store.DiskConfig{MinFreeBytes: 1 << 20, CheckInterval: 20 * time.Millisecond, PeerStaleAfter: 2 * time.Second}
		cfgs[i].TestingKnobs.Store.DiskSpace = d
		peers = append(peers, store.Peer{ID: cfgs[i].NodeID, Addr: cfgs[i].RaftListener.Addr().String()})
	}
	nodes := make([]*cells.Node, len(cfgs))
	for i := range cfgs {
		cfgs[i].Bootstrap = peers
		nodes[i] = celltest.StartNode(t, cfgs[i])
	}
	leader := celltest.WaitLeader(t, nodes)
	follower := followerOf(nodes, leader)
	fid := follower.Info().NodeId
	celltest.Own(t, leader.GRPCAddr(), tenant, "gone")

	ctx := testutil.Context(t, 2*time.Minute)
	conn := dial(t, leader.GRPCAddr())
	cc := contextv1.NewContextServiceClient(conn)
	tctx := tenantmd.Outgoing(ctx, tenant, 0)
	for _, id := range []string{"c1", "c2"} {
		if _, err := cc.CreateContext(tctx, &contextv1.CreateContextRequest{ContextId: id}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := appendText(ctx, cc, "c1", "before"); err != nil {
		t.Fatal(err)
	}

	// The follower's disk crosses its watermark: the leader learns it
	// from its poll and refuses writes naming the follower.
	disks[fid].free.Store(low)
	refused := func() error {
		_, err := cc.Append(tctx, &contextv1.AppendRequest{ContextId: "c1", RequestId: "while-full",
			Entries: []*contextv1.Entry{{Role: "user", Content: &contextv1.Entry_Text{Text: "while full"}}}})
		var ce *cperr.Error
		switch err = rpcerr.FromStatus(err); {
		case err == nil:
			return errors.New("append accepted while a follower is full")
		case !errors.Is(err, cperr.ErrStorageFull) || !errors.As(err, &ce):
			return fmt.Errorf("append: %v, want STORAGE_FULL", err)
		case ce.Metadata[cperr.MetaNode] != fid || ce.Metadata[cperr.MetaFreeBytes] != fmt.Sprint(low):
			return fmt.Errorf("STORAGE_FULL names node %q with %q bytes free, want %s with %d", ce.Metadata[cperr.MetaNode], ce.Metadata[cperr.MetaFreeBytes], fid, low)
		}
		return nil
	}
	waitPeerFull := func(want bool) {
		testutil.Eventually(t, 20*time.Second, func() error {
			if got := leader.Store().PeerDisks()[fid].Full; got != want {
				return fmt.Errorf("leader sees %s full: %v, want %v", fid, got, want)
			}
			return nil
		})
	}
	waitPeerFull(true)
	if err := refused(); err != nil {
		t.Fatal(err)
	}
	if _, err := cc.CreateContext(tctx, &contextv1.CreateContextRequest{ContextId: "c3"}); !errors.Is(rpcerr.FromStatus(err), cperr.ErrStorageFull) {
		t.Fatalf("CreateContext while a follower is full: %v", err)
	}
	if _, err := cc.PutMemory(tctx, &contextv1.PutMemoryRequest{Key: "k"}); !errors.Is(rpcerr.FromStatus(err), cperr.ErrStorageFull) {
		t.Fatalf("PutMemory while a follower is full: %v", err)
	}

	// Reads, deletes, DeleteTenant and exports work.
	read, err := cc.Read(tctx, &contextv1.ReadRequest{ContextId: "c1"})
	if err != nil || len(read.GetEntries()) != 1 {
		t.Fatalf("read while full: %v %v", read, err)
	}
	if _, err := cc.DeleteContext(tctx, &contextv1.DeleteContextRequest{ContextId: "c2"}); err != nil {
		t.Fatalf("DeleteContext while full: %v", err)
	}
	if _, err := cellv1.NewCellServiceClient(conn).DeleteTenant(ctx, &cellv1.DeleteTenantRequest{Tenant: "gone", Force: true}); err != nil {
		t.Fatalf("DeleteTenant while full: %v", err)
	}
	exp, err := replicationv1.NewReplicationServiceClient(conn).ExportTenant(ctx, &replicationv1.ExportTenantRequest{Tenant: tenant})
	if err == nil {
		_, err = exp.Recv()
	}
	if err != nil {
		t.Fatalf("ExportTenant while full: %v", err)
	}

	// Room again on the follower: writes resume.
	disks[fid].free.Store(room)
	testutil.Eventually(t, 20*time.Second, func() error {
		_, err := appendText(ctx, cc, "c1", "after")
		return err
	})

	// Full again, then the follower stops answering: its report goes
	// stale and the two others take writes again.
	disks[fid].free.Store(low)
	waitPeerFull(true)
	if err := refused(); err != nil {
		t.Fatal(err)
	}
	if err := follower.Close(); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 30*time.Second, func() error {
		_, err := appendText(ctx, cc, "c1", "without the full follower")
		return err
	})
}

// TestDiskPollUnderTLS: with mutual TLS the leader's poll of its members'
// disks (GetStatus with the leader's node identity) is authorised: it
// holds a report of each follower.
func TestDiskPollUnderTLS(t *testing.T) {
	c := startTLSCell(t)
	testutil.Eventually(t, 20*time.Second, func() error {
		leader := celltest.WaitLeader(t, c.nodes)
		got := leader.Store().PeerDisks()
		for _, n := range c.nodes {
			id := n.Info().NodeId
			if n == leader {
				continue
			}
			if _, ok := got[id]; !ok {
				return fmt.Errorf("leader %s has no disk report of %s: %v", leader.Info().NodeId, id, got)
			}
		}
		return nil
	})
}
