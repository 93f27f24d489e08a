package replication_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/cellplane/cellplane/cells"
	"github.com/cellplane/cellplane/cells/store"
	"github.com/cellplane/cellplane/controlplane/cptest"
	"github.com/cellplane/cellplane/internal/cperr"
	"github.com/cellplane/cellplane/internal/rpcerr"
	"github.com/cellplane/cellplane/internal/tenantmd"
	"github.com/cellplane/cellplane/internal/testutil"
	cellv1 "github.com/cellplane/cellplane/proto/cellplane/cell/v1"
	contextv1 "github.com/cellplane/cellplane/proto/cellplane/context/v1"
)

// pair is an owner cell and a standby cell of one control plane, one node
// each (replication goes between cells; the cells' own Raft is tested in
// cells/store).
type pair struct {
	src, dst         *cells.Node
	srcCell, dstCell cellv1.CellServiceClient
	srcData, dstData contextv1.ContextServiceClient
	env              *cptest.Env
}

func newPair(t *testing.T, srcOpts ...func(*cells.Config)) *pair {
	t.Helper()
	return newPairWith(t, srcOpts, nil)
}

// newPairWith is newPair with options for the standby cell's node too.
func newPairWith(t *testing.T, srcOpts, dstOpts []func(*cells.Config)) *pair {
	t.Helper()
	env := cptest.New(t)
	src := env.CreateCell(t, "us-east", "east-a", 1, srcOpts...)[0]
	dst := env.CreateCell(t, "eu-west", "west-a", 1, dstOpts...)[0]
	p := &pair{src: src, dst: dst, env: env}
	sc, dc := dial(t, src.GRPCAddr()), dial(t, dst.GRPCAddr())
	p.srcCell, p.dstCell = cellv1.NewCellServiceClient(sc), cellv1.NewCellServiceClient(dc)
	p.srcData, p.dstData = contextv1.NewContextServiceClient(sc), contextv1.NewContextServiceClient(dc)
	return p
}

// srcTseq is the owner's current tseq of acme.
func (p *pair) srcTseq(t *testing.T, ctx context.Context) uint64 {
	t.Helper()
	resp, err := p.srcCell.GetTenant(ctx, &cellv1.GetTenantRequest{Tenant: "acme"})
	if err != nil {
		t.Fatal(err)
	}
	return resp.GetTenant().GetTseq()
}

func dial(t *testing.T, addr string) *grpc.ClientConn {
	t.Helper()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cc.Close() })
	return cc
}

func setRole(t *testing.T, ctx context.Context, c cellv1.CellServiceClient, role cellv1.Role, epoch uint64, source string) *cellv1.TenantInfo {
	t.Helper()
	resp, err := c.SetTenant(ctx, &cellv1.SetTenantRequest{Tenant: "acme", Role: role, Epoch: epoch, SourceCell: source})
	if err != nil {
		t.Fatalf("set %s@%d: %v", role, epoch, err)
	}
	return resp.GetTenant()
}

func write(t *testing.T, ctx context.Context, c contextv1.ContextServiceClient, from, to int) {
	t.Helper()
	for i := from; i < to; i++ {
		_, err := c.Append(tenantmd.Outgoing(ctx, "acme", 0), &contextv1.AppendRequest{ContextId: "chat", RequestId: fmt.Sprintf("r%d", i),
			Entries: []*contextv1.Entry{{Role: "user", Content: &contextv1.Entry_Text{Text: fmt.Sprintf("message %d", i)}}}})
		if err != nil {
			t.Fatalf("append %d: %v", i, err)
		}
	}
}

// caughtUp waits until the standby reports having applied tseq.
func caughtUp(t *testing.T, ctx context.Context, c cellv1.CellServiceClient, tseq uint64) *cellv1.ReplicationStatus {
	t.Helper()
	var st *cellv1.ReplicationStatus
	testutil.Eventually(t, 30*time.Second, func() error {
		resp, err := c.GetTenant(ctx, &cellv1.GetTenantRequest{Tenant: "acme"})
		if err != nil {
			return err
		}
		st = resp.GetReplication()
		if !resp.GetTenant().GetBootstrapped() || st.GetAppliedTseq() < tseq || resp.GetTenant().GetTseq() < tseq {
			return fmt.Errorf("standby %v, replication %v; want tseq %d", resp.GetTenant(), st, tseq)
		}
		return nil
	})
	return st
}

func entries(t *testing.T, ctx context.Context, c contextv1.ContextServiceClient) []*contextv1.Entry {
	t.Helper()
	resp, err := c.Read(tenantmd.Outgoing(ctx, "acme", 0), &contextv1.ReadRequest{ContextId: "chat", Start: &contextv1.ReadRequest_FromSeq{FromSeq: 1}, MaxEntries: 1000})
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	return resp.GetEntries()
}

// TestStandbyFollowsOwnerThroughAFence: a standby in another region is
// bootstrapped from an export, follows the stream with its lag reported,
// applies everything up to the owner's fence, and once promoted serves
// the same entries and the same dedup answers. The standby refuses client
// writes meanwhile.
func TestStandbyFollowsOwnerThroughAFence(t *testing.T) {
	p := newPair(t)
	ctx := testutil.Context(t, 90*time.Second)
	setRole(t, ctx, p.srcCell, cellv1.Role_ROLE_OWNER, 1, "")
	if _, err := p.srcData.CreateContext(tenantmd.Outgoing(ctx, "acme", 0), &contextv1.CreateContextRequest{ContextId: "chat"}); err != nil {
		t.Fatal(err)
	}
	write(t, ctx, p.srcData, 0, 40)
	setRole(t, ctx, p.dstCell, cellv1.Role_ROLE_STANDBY, 1, "east-a")
	st := caughtUp(t, ctx, p.dstCell, p.srcTseq(t, ctx))
	if st.GetBootstraps() != 1 || st.GetSourceCell() != "east-a" {
		t.Errorf("status after bootstrap: %v", st)
	}

	write(t, ctx, p.srcData, 40, 80)
	st = caughtUp(t, ctx, p.dstCell, p.srcTseq(t, ctx))
	if st.GetState() != "STREAMING" {
		t.Errorf("status while following: %v", st)
	}
	if st.GetLagEvents() != 0 || st.GetLag().AsDuration() != 0 {
		t.Errorf("caught up but lag reported: %v", st)
	}
	_, err := p.dstData.Append(tenantmd.Outgoing(ctx, "acme", 0), &contextv1.AppendRequest{ContextId: "chat",
		Entries: []*contextv1.Entry{{Role: "user", Content: &contextv1.Entry_Text{Text: "to the standby"}}}})
	if !errors.Is(rpcerr.FromStatus(err), cperr.ErrWrongCell) {
		t.Fatalf("write to the standby: %v, want WRONG_CELL", err)
	}

	// The owner's floor follows the standby's acks.
	testutil.Eventually(t, 20*time.Second, func() error {
		resp, err := p.srcCell.GetTenant(ctx, &cellv1.GetTenantRequest{Tenant: "acme"})
		if err != nil {
			return err
		}
		if resp.GetTenant().GetReplicaFloorTseq() < resp.GetTenant().GetTseq() {
			return fmt.Errorf("floor %d", resp.GetTenant().GetReplicaFloorTseq())
		}
		return nil
	})

	fence := setRole(t, ctx, p.srcCell, cellv1.Role_ROLE_FENCED, 2, "")
	st = caughtUp(t, ctx, p.dstCell, fence.GetTseq())
	if st.GetSourceRole() != cellv1.Role_ROLE_FENCED || st.GetSourceEpoch() != 2 {
		t.Errorf("the stream did not report the fence: %v", st)
	}
	setRole(t, ctx, p.dstCell, cellv1.Role_ROLE_OWNER, 2, "")
	got := entries(t, ctx, p.dstData)
	if len(got) != 80 || got[79].GetText() != "message 79" {
		t.Fatalf("promoted standby has %d entries", len(got))
	}
	// A retry of an append acknowledged by the old owner is answered, not
	// applied again.
	resp, err := p.dstData.Append(tenantmd.Outgoing(ctx, "acme", 0), &contextv1.AppendRequest{ContextId: "chat", RequestId: "r5",
		Entries: []*contextv1.Entry{{Role: "user", Content: &contextv1.Entry_Text{Text: "message 5"}}}})
	if err != nil || resp.GetFirstSeq() != 6 {
		t.Fatalf("retried r5 on the new owner = %v, %v; want the first answer (seq 6)", resp, err)
	}
	if n := len(entries(t, ctx, p.dstData)); n != 80 {
		t.Fatalf("after the retry: %d entries, want 80", n)
	}
}

// TestStandbyRebootstrapsWhenTheLogWasTrimmed: while the standby's stream
// is stopped, the owner's hard byte bound trims events the standby has not
// applied (counted on the owner); when the stream resumes the owner
// answers CHANGES_TRIMMED and the standby imports a fresh export.
func TestStandbyRebootstrapsWhenTheLogWasTrimmed(t *testing.T) {
	p := newPair(t, func(c *cells.Config) { c.Store.ChangeLog = store.ChangeLogConfig{MaxBytes: 4096} })
	ctx := testutil.Context(t, 90*time.Second)
	setRole(t, ctx, p.srcCell, cellv1.Role_ROLE_OWNER, 1, "")
	if _, err := p.srcData.CreateContext(tenantmd.Outgoing(ctx, "acme", 0), &contextv1.CreateContextRequest{ContextId: "chat"}); err != nil {
		t.Fatal(err)
	}
	write(t, ctx, p.srcData, 0, 10)
	setRole(t, ctx, p.dstCell, cellv1.Role_ROLE_STANDBY, 1, "east-a")
	caughtUp(t, ctx, p.dstCell, p.srcTseq(t, ctx))
	testutil.Eventually(t, 20*time.Second, func() error {
		resp, err := p.srcCell.GetTenant(ctx, &cellv1.GetTenantRequest{Tenant: "acme"})
		if err != nil {
			return err
		}
		if resp.GetTenant().GetReplicaFloorTseq() != resp.GetTenant().GetTseq() {
			return fmt.Errorf("floor %d", resp.GetTenant().GetReplicaFloorTseq())
		}
		return nil
	})

	// Point the standby at a cell that does not exist (keeping its data):
	// its stream from east-a stops. Write past the byte bound.
	repoint := func(source string) {
		if _, err := p.dstCell.SetTenant(ctx, &cellv1.SetTenantRequest{Tenant: "acme", Role: cellv1.Role_ROLE_STANDBY, Epoch: 1, SourceCell: source, Resume: true}); err != nil {
			t.Fatal(err)
		}
	}
	repoint("nowhere")
	write(t, ctx, p.srcData, 10, 200)
	src, err := p.srcCell.GetTenant(ctx, &cellv1.GetTenantRequest{Tenant: "acme"})
	if err != nil {
		t.Fatal(err)
	}
	if src.GetTenant().GetChangelogFirstTseq() <= src.GetTenant().GetReplicaFloorTseq()+1 || src.GetTenant().GetReplicaForcedTrims() == 0 {
		t.Fatalf("the owner kept the standby's events (%v); the test needs them trimmed", src.GetTenant())
	}
	repoint("east-a")
	st := caughtUp(t, ctx, p.dstCell, p.srcTseq(t, ctx))
	if st.GetBootstraps() != 1 {
		t.Errorf("status %v, want one bootstrap after the trim", st)
	}
	if got := entries(t, ctx, p.srcData); len(got) != 200 {
		t.Fatalf("source has %d entries", len(got))
	}
	fence := setRole(t, ctx, p.srcCell, cellv1.Role_ROLE_FENCED, 2, "")
	caughtUp(t, ctx, p.dstCell, fence.GetTseq())
	setRole(t, ctx, p.dstCell, cellv1.Role_ROLE_OWNER, 2, "")
	if got := entries(t, ctx, p.dstData); len(got) != 200 {
		t.Fatalf("promoted standby has %d entries, want 200", len(got))
	}
}
