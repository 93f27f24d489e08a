package service

import (
	"slices"
	"testing"
	"time"

	"github.com/cellplane/cellplane/internal/cperr"
	"github.com/cellplane/cellplane/internal/testutil"
	cellv1 "github.com/cellplane/cellplane/proto/cellplane/cell/v1"
	contextv1 "github.com/cellplane/cellplane/proto/cellplane/context/v1"
	"google.golang.org/grpc/codes"
)

func TestStoreCellService(t *testing.T) {
	n := newCell(t, nil, nil)
	ctx := testutil.Context(t, 30*time.Second)

	got := must(n.cell.GetTenant(ctx, &cellv1.GetTenantRequest{Tenant: "acme"}))(t).GetTenant()
	if got.GetRole() != cellv1.Role_ROLE_OWNER || got.GetEpoch() != 1 || got.GetTseq() == 0 {
		t.Fatalf("GetTenant = %v", got)
	}
	_, err := n.cell.GetTenant(ctx, &cellv1.GetTenantRequest{Tenant: "nobody"})
	wantErr(t, err, codes.NotFound, cperr.TenantNotFound)

	set := must(n.cell.SetTenant(ctx, &cellv1.SetTenantRequest{Tenant: "acme", Role: cellv1.Role_ROLE_OWNER, Epoch: 3, RequestId: "s3"}))(t).GetTenant()
	if set.GetEpoch() != 3 || set.GetRole() != cellv1.Role_ROLE_OWNER {
		t.Fatalf("SetTenant = %v", set)
	}
	_, err = n.cell.SetTenant(ctx, &cellv1.SetTenantRequest{Tenant: "acme", Role: cellv1.Role_ROLE_OWNER, Epoch: 2})
	if e := wantErr(t, err, codes.FailedPrecondition, cperr.StaleEpoch); e.Metadata[cperr.MetaEpoch] != "3" {
		t.Fatalf("STALE_EPOCH metadata %v", e.Metadata)
	}

	for _, id := range []string{"t4", "t2", "t3", "t1"} {
		must(n.cell.SetTenant(ctx, &cellv1.SetTenantRequest{Tenant: id, Role: cellv1.Role_ROLE_STANDBY, Epoch: 1, SourceCell: "src"}))(t)
	}
	_, err = n.cell.SetTenant(ctx, &cellv1.SetTenantRequest{Tenant: "t5", Role: cellv1.Role_ROLE_STANDBY, Epoch: 1})
	wantField(t, err, "source_cell")
	_, err = n.cell.SetTenant(ctx, &cellv1.SetTenantRequest{Tenant: "t5", Role: cellv1.Role_ROLE_OWNER, Epoch: 1, SourceCell: "src"})
	wantField(t, err, "source_cell")

	// The change log of any role, and the standby floor on the owner.
	lc := must(n.cell.ListChanges(ctx, &cellv1.ListChangesRequest{Tenant: "acme"}))(t)
	if len(lc.GetEvents()) != 2 || lc.GetEvents()[1].GetCommand().GetSetTenant().GetEpoch() != 3 || lc.GetTenant().GetTseq() != 2 {
		t.Fatalf("ListChanges = %v", lc)
	}
	must(n.cell.AckReplica(ctx, &cellv1.AckReplicaRequest{Tenant: "acme", Tseq: 2}))(t)
	if got := must(n.cell.GetTenant(ctx, &cellv1.GetTenantRequest{Tenant: "acme"}))(t).GetTenant(); got.GetReplicaFloorTseq() != 2 {
		t.Fatalf("after AckReplica: %v", got)
	}
	_, err = n.cell.AckReplica(ctx, &cellv1.AckReplicaRequest{Tenant: "t4", Tseq: 1})
	wantErr(t, err, codes.FailedPrecondition, cperr.WrongCell)
	var ids []string
	for tok := ""; ; {
		resp := must(n.cell.ListTenants(ctx, &cellv1.ListTenantsRequest{PageSize: 2, PageToken: tok}))(t)
		for _, ti := range resp.GetTenants() {
			ids = append(ids, ti.GetTenant())
		}
		if tok = resp.GetNextPageToken(); tok == "" {
			break
		}
	}
	if want := []string{"acme", "t1", "t2", "t3", "t4"}; !slices.Equal(ids, want) {
		t.Fatalf("ListTenants %q, want %q", ids, want)
	}
	_, err = n.cell.ListTenants(ctx, &cellv1.ListTenantsRequest{PageToken: encodePageToken(kindContexts, "x")})
	wantField(t, err, "page_token")

	must(n.cell.DeleteTenant(ctx, &cellv1.DeleteTenantRequest{Tenant: "t1", Force: true}))(t)
	_, err = n.cell.GetTenant(ctx, &cellv1.GetTenantRequest{Tenant: "t1"})
	wantErr(t, err, codes.NotFound, cperr.TenantNotFound)
	_, err = n.cell.DeleteTenant(ctx, &cellv1.DeleteTenantRequest{Tenant: "t1", Force: true})
	wantErr(t, err, codes.NotFound, cperr.TenantNotFound)

	st := must(n.cell.GetStatus(ctx, &cellv1.GetStatusRequest{}))(t)
	if st.GetState() != "Leader" || st.GetLeaderId() != "n1" || st.GetNode().GetNodeId() != "n1" || st.GetTenants() != 4 || st.GetCommitIndex() == 0 {
		t.Fatalf("GetStatus = %v", st)
	}
	if len(st.GetMembers()) != 1 || !st.GetMembers()[0].GetLeader() || st.GetMembers()[0].GetSuffrage() != cellv1.Suffrage_SUFFRAGE_VOTER ||
		st.GetLeader().GetGrpcAddr() != n.info.GetGrpcAddr() {
		t.Fatalf("GetStatus members %v, leader %v", st.GetMembers(), st.GetLeader())
	}
	if st.GetStateDigest() != nil {
		t.Fatalf("GetStatus without state_digest returned one: %v", st.GetStateDigest())
	}
	st = must(n.cell.GetStatus(ctx, &cellv1.GetStatusRequest{StateDigest: true}))(t)
	if d := st.GetStateDigest(); len(d.GetSha256()) != 32 || d.GetKeys() == 0 || d.GetAppliedIndex() == 0 || d.GetAppliedIndex() > st.GetAppliedIndex() {
		t.Fatalf("GetStatus state digest %v (applied %d)", d, st.GetAppliedIndex())
	}

	// Membership: a non-voter that never shows up does not hurt the quorum.
	n7 := &cellv1.NodeInfo{NodeId: "n7", RaftAddr: "127.0.0.1:1", GrpcAddr: "127.0.0.1:2"}
	must(n.cell.AddNonVoter(ctx, &cellv1.AddNonVoterRequest{Node: n7}))(t)
	st = must(n.cell.GetStatus(ctx, &cellv1.GetStatusRequest{}))(t)
	i := slices.IndexFunc(st.GetMembers(), func(m *cellv1.Member) bool { return m.GetNode().GetNodeId() == "n7" })
	if i < 0 || st.GetMembers()[i].GetSuffrage() != cellv1.Suffrage_SUFFRAGE_NONVOTER || st.GetMembers()[i].GetNode().GetGrpcAddr() != "127.0.0.1:2" {
		t.Fatalf("members after AddNonVoter: %v", st.GetMembers())
	}
	must(n.cell.RemoveServer(ctx, &cellv1.RemoveServerRequest{NodeId: "n7"}))(t)
	st = must(n.cell.GetStatus(ctx, &cellv1.GetStatusRequest{}))(t)
	if len(st.GetMembers()) != 1 {
		t.Fatalf("members after RemoveServer: %v", st.GetMembers())
	}
	must(n.cell.RegisterNode(ctx, &cellv1.RegisterNodeRequest{Node: &cellv1.NodeInfo{NodeId: "n1", RaftAddr: n.info.GetRaftAddr(), GrpcAddr: n.info.GetGrpcAddr()}}))(t)

	_, err = n.cell.TransferLeadership(ctx, &cellv1.TransferLeadershipRequest{NodeId: "n9"})
	wantField(t, err, "node_id")

	// Deleting a tenant removes its data.
	acme := as(ctx, "acme", 0)
	must(n.ctx.CreateContext(acme, &contextv1.CreateContextRequest{ContextId: "c"}))(t)
	must(n.cell.DeleteTenant(ctx, &cellv1.DeleteTenantRequest{Tenant: "acme", RequestId: "d1", Force: true}))(t)
	must(n.cell.SetTenant(ctx, &cellv1.SetTenantRequest{Tenant: "acme", Role: cellv1.Role_ROLE_OWNER, Epoch: 4}))(t)
	_, err = n.ctx.GetContext(acme, &contextv1.GetContextRequest{ContextId: "c"})
	wantErr(t, err, codes.NotFound, cperr.ContextNotFound)
}
