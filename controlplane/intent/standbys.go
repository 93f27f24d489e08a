package intent

import (
	"context"
	"errors"
	"strings"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/cellplane/cellplane/controlplane/catalog"
	"github.com/cellplane/cellplane/controlplane/placement"
	"github.com/cellplane/cellplane/controlplane/topo"
	"github.com/cellplane/cellplane/internal/cperr"
	cpv1 "github.com/cellplane/cellplane/proto/cellplane/controlplane/v1"
)

// clearStandbyOp prefixes the operation_id of a standby being cleared:
// "standby-clear.<cell>".
const clearStandbyOp = "standby-clear."

// ClearingStandby returns the cell whose standby copy the tenant's
// operation is removing, if that is its operation.
func ClearingStandby(t *cpv1.Tenant) (string, bool) {
	cell, ok := strings.CutPrefix(t.GetOperationId(), clearStandbyOp)
	if !ok || cell == "" {
		return "", false
	}
	return cell, true
}

// ChooseStandby picks the standby cell for a tenant owned by cell owner:
// cell if set (it must be ACTIVE with room), else the least loaded ACTIVE
// cell of region with room. The standby is never in the owner's region.
func ChooseStandby(ctx context.Context, st topo.Store, owner, region, cell string) (string, error) {
	cells, err := catalog.Cells(ctx, st)
	if err != nil {
		return "", err
	}
	return PickStandby(cells, owner, region, cell)
}

// SetStandby gives tenant a standby cell (cell, or one picked in region)
// and counts it in that cell's load, in one transaction; the controller
// leader's reconciler then makes the cell a STANDBY of the owner at the
// placement's epoch, and its leader bootstraps the copy and streams.
// Asking again for the standby it has is a no-op. Errors: TENANT_NOT_FOUND;
// TENANT_BUSY (not ACTIVE, or an operation holds it); ALREADY_EXISTS (it
// has another standby: clear it first); INVALID_ARGUMENT (no region or
// cell, or the owner's region); CELL_NOT_FOUND, CELL_NOT_ACTIVE,
// NO_CAPACITY.
func SetStandby(ctx context.Context, st topo.Store, tenant, region, cell string) (*cpv1.Tenant, error) {
	t, tv, err := catalog.GetTenant(ctx, st, tenant)
	if errors.Is(err, topo.ErrNotFound) {
		return nil, cperr.New(cperr.TenantNotFound, "tenant %s does not exist", tenant)
	}
	if err != nil {
		return nil, err
	}
	switch {
	case t.GetState() != cpv1.TenantState_TENANT_STATE_ACTIVE:
		return nil, cperr.New(cperr.TenantBusy, "tenant %s is %s; try again when it is ACTIVE", tenant, tenantStateName(t.GetState()))
	case t.GetOperationId() != "":
		return nil, cperr.New(cperr.TenantBusy, "tenant %s is busy with operation %s; try again when it ends", tenant, t.GetOperationId())
	}
	cells, err := catalog.Cells(ctx, st)
	if err != nil {
		return nil, err
	}
	if sb := t.GetStandbyCell(); sb != "" {
		ci := catalog.FindCell(cells, sb)
		if sb == cell || (cell == "" && ci != nil && ci.Cell.GetRegion() == region) {
			return t, nil
		}
		return nil, cperr.New(cperr.AlreadyExists, "tenant %s already has standby %s; clear it first ('cellctl tenant standby clear %s')", tenant, sb, tenant)
	}
	chosen, err := PickStandby(cells, t.GetCell(), region, cell)
	if err != nil {
		return nil, err
	}
	ci := catalog.FindCell(cells, chosen)
	next := proto.Clone(t).(*cpv1.Tenant)
	next.StandbyCell = chosen
	next.UpdateTime = timestamppb.Now()
	load := proto.Clone(ci.Load).(*cpv1.CellLoad)
	load.Tenants++
	tkey, lkey := topo.TenantKey(tenant), topo.CellLoadKey(chosen)
	_, err = st.Txn(ctx, []topo.Cond{topo.IfVersion(tkey, tv), topo.IfVersion(lkey, ci.LoadVersion)},
		[]topo.Op{topo.Put(tkey, catalog.Encode(next)), topo.Put(lkey, catalog.Encode(load))})
	if errors.Is(err, topo.ErrConditionFailed) {
		return nil, cperr.New(cperr.TenantBusy, "tenant %s or cell %s changed meanwhile; try again", tenant, chosen)
	}
	if err != nil {
		return nil, err
	}
	return next, nil
}

// StartClearStandby records the intent to clear tenant's standby: the
// placement's operation_id becomes "standby-clear.<cell>" (moves,
// failovers and deletes wait), and the leader's reconciler deletes the
// standby's copy, then clears standby_cell and its load in one
// transaction. It returns the cell being cleared ("" when the tenant has
// no standby: nothing to do).
func StartClearStandby(ctx context.Context, st topo.Store, tenant string) (string, error) {
	t, tv, err := catalog.GetTenant(ctx, st, tenant)
	if errors.Is(err, topo.ErrNotFound) {
		return "", cperr.New(cperr.TenantNotFound, "tenant %s does not exist", tenant)
	}
	if err != nil {
		return "", err
	}
	if cell, ok := ClearingStandby(t); ok {
		return cell, nil // already being cleared
	}
	switch {
	case t.GetStandbyCell() == "":
		return "", nil
	case t.GetState() != cpv1.TenantState_TENANT_STATE_ACTIVE:
		return "", cperr.New(cperr.TenantBusy, "tenant %s is %s; try again when it is ACTIVE", tenant, tenantStateName(t.GetState()))
	case t.GetOperationId() != "":
		return "", cperr.New(cperr.TenantBusy, "tenant %s is busy with operation %s; try again when it ends", tenant, t.GetOperationId())
	}
	next := proto.Clone(t).(*cpv1.Tenant)
	next.OperationId = clearStandbyOp + t.GetStandbyCell()
	next.UpdateTime = timestamppb.Now()
	tkey := topo.TenantKey(tenant)
	_, err = st.Txn(ctx, []topo.Cond{topo.IfVersion(tkey, tv)}, []topo.Op{topo.Put(tkey, catalog.Encode(next))})
	if errors.Is(err, topo.ErrConditionFailed) {
		return "", cperr.New(cperr.TenantBusy, "tenant %s changed meanwhile; try again", tenant)
	}
	if err != nil {
		return "", err
	}
	return t.GetStandbyCell(), nil
}

// WaitStandbyCleared waits until tenant's standby cell is no longer cell
// and the clearing operation is over, and returns the placement (at once
// when cell is "": nothing was being cleared).
func WaitStandbyCleared(ctx context.Context, st topo.Store, tenant, cell string) (*cpv1.Tenant, error) {
	var out *cpv1.Tenant
	err := waitFor(ctx, st, []string{topo.TenantKey(tenant)}, func() (bool, error) {
		t, _, err := catalog.GetTenant(ctx, st, tenant)
		if errors.Is(err, topo.ErrNotFound) {
			return true, cperr.New(cperr.TenantNotFound, "tenant %s was deleted", tenant)
		}
		if err != nil {
			return false, err
		}
		if c, ok := ClearingStandby(t); cell != "" && ((ok && c == cell) || t.GetStandbyCell() == cell) {
			return false, nil
		}
		out = t
		return true, nil
	})
	return out, err
}

// PickStandby picks the standby cell of a tenant owned by owner among
// cells: the requested cell, or the least loaded ACTIVE cell of region with
// room, never in the owner's region.
func PickStandby(cells []*catalog.CellInfo, owner, region, cell string) (string, error) {
	if cell != "" {
		ci := catalog.FindCell(cells, cell)
		if ci == nil {
			return "", cperr.New(cperr.CellNotFound, "cell %s does not exist", cell)
		}
		if region != "" && region != ci.Cell.GetRegion() {
			return "", cperr.Invalid(cperr.FieldViolation{Field: "cell", Description: "cell " + cell + " is in region " + ci.Cell.GetRegion() + ", not " + region})
		}
		region = ci.Cell.GetRegion()
	}
	if region == "" {
		return "", cperr.Invalid(cperr.FieldViolation{Field: "region", Description: "a region or a cell for the standby is required"})
	}
	if oc := catalog.FindCell(cells, owner); oc != nil && oc.Cell.GetRegion() == region {
		return "", cperr.Invalid(cperr.FieldViolation{Field: "region",
			Description: "the standby must be in another region than the owner " + owner + " (" + region + ")"})
	}
	return placement.Pick(Candidates(cells), placement.Request{Region: region, Cell: cell})
}
