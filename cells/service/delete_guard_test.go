package service

import (
	"testing"
	"time"

	"github.com/cellplane/cellplane/internal/cperr"
	"github.com/cellplane/cellplane/internal/testutil"
	cellv1 "github.com/cellplane/cellplane/proto/cellplane/cell/v1"
	"google.golang.org/grpc/codes"
)

// TestStoreGuardedDeleteTenant: CellService.DeleteTenant deletes only the
// copy the request expects (M1); a refusal is FAILED_PRECONDITION with the
// tenant's role and epoch and leaves the tenant; an unguarded request is
// INVALID_ARGUMENT unless forced.
func TestStoreGuardedDeleteTenant(t *testing.T) {
	n := newCell(t, nil, nil) // acme is OWNER at epoch 1
	ctx := testutil.Context(t, 30*time.Second)
	fenced := []cellv1.Role{cellv1.Role_ROLE_FENCED}
	kept := func() {
		t.Helper()
		if got := must(n.cell.GetTenant(ctx, &cellv1.GetTenantRequest{Tenant: "acme"}))(t).GetTenant(); got.GetRole() != cellv1.Role_ROLE_OWNER {
			t.Fatalf("tenant after a refused delete: %v", got)
		}
	}

	_, err := n.cell.DeleteTenant(ctx, &cellv1.DeleteTenantRequest{Tenant: "acme", RequestId: "d0"})
	wantField(t, err, "expected_epoch")
	kept()

	_, err = n.cell.DeleteTenant(ctx, &cellv1.DeleteTenantRequest{Tenant: "acme", RequestId: "d1", ExpectedEpoch: 1, AllowedRoles: fenced})
	if e := wantErr(t, err, codes.FailedPrecondition, cperr.WrongCell); e.Metadata[cperr.MetaRole] != "ROLE_OWNER" || e.Metadata[cperr.MetaEpoch] != "1" {
		t.Fatalf("WRONG_CELL metadata %v", e.Metadata)
	}
	kept()

	must(n.cell.SetTenant(ctx, &cellv1.SetTenantRequest{Tenant: "acme", Role: cellv1.Role_ROLE_FENCED, Epoch: 3, RequestId: "f3"}))(t)
	_, err = n.cell.DeleteTenant(ctx, &cellv1.DeleteTenantRequest{Tenant: "acme", RequestId: "d2", ExpectedEpoch: 2, AllowedRoles: fenced})
	if e := wantErr(t, err, codes.FailedPrecondition, cperr.StaleEpoch); e.Metadata[cperr.MetaEpoch] != "3" {
		t.Fatalf("STALE_EPOCH metadata %v", e.Metadata)
	}
	if got := must(n.cell.GetTenant(ctx, &cellv1.GetTenantRequest{Tenant: "acme"}))(t).GetTenant(); got.GetRole() != cellv1.Role_ROLE_FENCED {
		t.Fatalf("tenant after a refused delete: %v", got)
	}

	must(n.cell.DeleteTenant(ctx, &cellv1.DeleteTenantRequest{Tenant: "acme", RequestId: "d3", ExpectedEpoch: 3, AllowedRoles: fenced}))(t)
	_, err = n.cell.GetTenant(ctx, &cellv1.GetTenantRequest{Tenant: "acme"})
	wantErr(t, err, codes.NotFound, cperr.TenantNotFound)
}
