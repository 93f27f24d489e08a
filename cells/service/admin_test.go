package service

import (
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/durationpb"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/cellplane/cellplane/internal/cperr"
	"github.com/cellplane/cellplane/internal/tenantmd"
	"github.com/cellplane/cellplane/internal/testutil"
	cellv1 "github.com/cellplane/cellplane/proto/cellplane/cell/v1"
	contextv1 "github.com/cellplane/cellplane/proto/cellplane/context/v1"
)

// TestAuditAndErase: the data path's writes are audited with the caller's
// principal and the gRPC method as origin; ContextService.ReadAudit is
// refused to a data-plane caller (requireAdmin) before anything is read;
// CellService.EraseSubject erases and reports its tseq and time, a retry
// is deduplicated, and the erase is audited without the subject's name.
func TestAuditAndErase(t *testing.T) {
	n := newCell(t, nil, nil)
	ctx := testutil.Context(t, 30*time.Second)
	data := tenantmd.WithCaller(as(ctx, "acme", 0), "alice", "")
	must(n.ctx.CreateContext(data, &contextv1.CreateContextRequest{ContextId: "c1", RequestId: "r1"}))(t)
	must(n.ctx.Append(data, &contextv1.AppendRequest{ContextId: "c1", RequestId: "r2", Entries: []*contextv1.Entry{textEntry("user", "SECRET")}}))(t)

	_, err := n.ctx.ReadAudit(data, &contextv1.ReadAuditRequest{})
	wantErr(t, err, codes.PermissionDenied, cperr.PermissionDenied)
	// The router marks a call whose credential holds the admin scope.
	admin := metadata.AppendToOutgoingContext(data, tenantmd.AdminKey, "true")
	byAdmin := must(n.ctx.ReadAudit(admin, &contextv1.ReadAuditRequest{Principal: "alice"}))(t).GetRecords()
	if len(byAdmin) != 2 || byAdmin[1].GetRequestId() != "r2" {
		t.Fatalf("ReadAudit with the admin scope: %v", byAdmin)
	}

	recs := must(n.cell.ListAudit(ctx, &cellv1.ListAuditRequest{Tenant: "acme", Principal: "alice"}))(t).GetRecords()
	if len(recs) != 2 || recs[1].GetOrigin() != "grpc:/cellplane.context.v1.ContextService/Append" || recs[1].GetRequestId() != "r2" || recs[1].GetContextId() != "c1" {
		t.Fatalf("alice's records %v", recs)
	}

	_, err = n.cell.EraseSubject(ctx, &cellv1.EraseSubjectRequest{Tenant: "acme"})
	wantField(t, err, "principal")
	req := &cellv1.EraseSubjectRequest{Tenant: "acme", ContextId: "c1", RequestId: "e1"}
	res := must(n.cell.EraseSubject(tenantmd.WithCaller(ctx, "op-1", "controlplane:EraseSubject"), req))(t)
	if res.GetTseq() != 4 || res.GetTimeUnixNano() == 0 || res.GetErased().GetContextsDeleted() != 1 || res.GetErased().GetEventsScrubbed() != 2 {
		t.Fatalf("erase %v", res)
	}
	again := must(n.cell.EraseSubject(ctx, req))(t)
	if !again.GetDeduplicated() || again.GetTseq() != res.GetTseq() || again.GetTimeUnixNano() != res.GetTimeUnixNano() {
		t.Fatalf("retried erase %v, first %v", again, res)
	}
	_, err = n.ctx.GetContext(data, &contextv1.GetContextRequest{ContextId: "c1"})
	wantErr(t, err, codes.NotFound, cperr.ContextNotFound)
	all := must(n.cell.ListAudit(ctx, &cellv1.ListAuditRequest{Tenant: "acme"}))(t).GetRecords()
	last := all[len(all)-1]
	if last.GetOp() != "erase_subject" || last.GetPrincipal() != "op-1" || last.GetOrigin() != "controlplane:EraseSubject" || last.GetContextId() != "" {
		t.Fatalf("erase's record %v", last)
	}
	for _, r := range all[1:3] {
		if r.GetErasedAtTseq() != 4 || r.GetPrincipal() != "" || r.GetContextId() != "" {
			t.Errorf("erased write's record not redacted: %v", r)
		}
	}
}

// TestContextErase: ContextService.Erase is a tenant admin's: refused
// without the router's admin mark (nothing erased), invalid requests are
// refused with their field, and an admin's erase reports its tseq, its
// counts and that there is no standby to wait for.
func TestContextErase(t *testing.T) {
	n := newCell(t, nil, nil)
	ctx := testutil.Context(t, 30*time.Second)
	data := tenantmd.WithCaller(as(ctx, "acme", 0), "alice", "")
	must(n.ctx.CreateContext(data, &contextv1.CreateContextRequest{ContextId: "c1", RequestId: "r1"}))(t)

	_, err := n.ctx.Erase(data, &contextv1.EraseRequest{ContextId: "c1"})
	wantErr(t, err, codes.PermissionDenied, cperr.PermissionDenied)
	must(n.ctx.GetContext(data, &contextv1.GetContextRequest{ContextId: "c1"}))(t) // still there

	admin := metadata.AppendToOutgoingContext(data, tenantmd.AdminKey, "true")
	_, err = n.ctx.Erase(admin, &contextv1.EraseRequest{ContextId: "c1", Principal: "alice"})
	wantField(t, err, "context_id")
	_, err = n.ctx.Erase(admin, &contextv1.EraseRequest{ContextId: "c1", Wait: durationpb.New(time.Hour)})
	wantField(t, err, "wait")

	res := must(n.ctx.Erase(admin, &contextv1.EraseRequest{ContextId: "c1", RequestId: "e1"}))(t)
	if res.GetTseq() == 0 || res.GetContextsDeleted() != 1 || res.GetHasStandby() || res.GetStandbyApplied() || res.GetTime() == nil {
		t.Fatalf("erase %v", res)
	}
	_, err = n.ctx.GetContext(data, &contextv1.GetContextRequest{ContextId: "c1"})
	wantErr(t, err, codes.NotFound, cperr.ContextNotFound)
}
