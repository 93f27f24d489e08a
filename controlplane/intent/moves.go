package intent

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/cellplane/cellplane/controlplane/catalog"
	"github.com/cellplane/cellplane/controlplane/placement"
	"github.com/cellplane/cellplane/controlplane/topo"
	"github.com/cellplane/cellplane/internal/cperr"
	"github.com/cellplane/cellplane/internal/ids"
	cpv1 "github.com/cellplane/cellplane/proto/cellplane/controlplane/v1"
)

// MoveRequest asks for a live move of a tenant to another cell.
type MoveRequest struct {
	Tenant string
	// Target is the cell to move to: ACTIVE, not the owner, not the
	// standby, with room.
	Target string
	// DrainCell tags the move as part of draining that cell.
	DrainCell string
	// DryRun validates and returns the plan; nothing is recorded.
	DryRun bool
	// RequestID and RequestHash are recorded with the move (the API's
	// idempotency key and its request's fingerprint).
	RequestID   string
	RequestHash []byte
}

// MoveFinished reports a state a move never leaves.
func MoveFinished(s cpv1.MoveState) bool {
	switch s {
	case cpv1.MoveState_MOVE_STATE_DONE, cpv1.MoveState_MOVE_STATE_CANCELLED, cpv1.MoveState_MOVE_STATE_FAILED:
		return true
	}
	return false
}

// MoveBeforeFence reports the states from which a move can still be
// cancelled or undone: the source has not been fenced.
func MoveBeforeFence(s cpv1.MoveState) bool {
	switch s {
	case cpv1.MoveState_MOVE_STATE_PREPARING, cpv1.MoveState_MOVE_STATE_COPYING, cpv1.MoveState_MOVE_STATE_CATCHING_UP:
		return true
	}
	return false
}

// StartMove records a move of req.Tenant to req.Target (state PREPARING)
// and returns it with its plan; the controller leader drives it. In one
// transaction it records the move, counts the tenant in the target's load
// and marks the placement's operation_id, so a tenant has at most one move
// (or other operation) at a time. Errors: TENANT_NOT_FOUND; TENANT_BUSY
// (another operation or an unfinished move, or a concurrent change);
// INVALID_ARGUMENT (the target is the owner or the standby, or in the
// standby's region); CELL_NOT_FOUND, CELL_NOT_ACTIVE, NO_CAPACITY (target).
func StartMove(ctx context.Context, st topo.Store, req MoveRequest) (*cpv1.Move, []string, error) {
	return StartMoveGuarded(ctx, st, req, nil)
}

// StartMoveGuarded is StartMove with extra transaction conditions (the
// controller leader's guard when a drain starts the move); a failed guard
// is ErrNotLeader.
func StartMoveGuarded(ctx context.Context, st topo.Store, req MoveRequest, guard []topo.Cond) (*cpv1.Move, []string, error) {
	t, tv, err := catalog.GetTenant(ctx, st, req.Tenant)
	if errors.Is(err, topo.ErrNotFound) {
		return nil, nil, cperr.New(cperr.TenantNotFound, "tenant %s does not exist", req.Tenant)
	}
	if err != nil {
		return nil, nil, err
	}
	switch {
	case t.GetState() != cpv1.TenantState_TENANT_STATE_ACTIVE:
		return nil, nil, cperr.New(cperr.TenantBusy, "tenant %s is %s; only an ACTIVE tenant moves", req.Tenant, tenantStateName(t.GetState()))
	case t.GetOperationId() != "":
		return nil, nil, cperr.New(cperr.TenantBusy, "tenant %s is busy with operation %s; try again when it ends", req.Tenant, t.GetOperationId())
	case req.Target == t.GetCell():
		return nil, nil, cperr.Invalid(cperr.FieldViolation{Field: "target_cell", Description: "tenant " + req.Tenant + " already lives on cell " + req.Target})
	case req.Target == t.GetStandbyCell():
		return nil, nil, cperr.Invalid(cperr.FieldViolation{Field: "target_cell",
			Description: "cell " + req.Target + " is the tenant's standby: promote it with a failover (switchover), or clear the standby first"})
	}
	if mv, err := activeMove(ctx, st, req.Tenant); err != nil {
		return nil, nil, err
	} else if mv != nil {
		return nil, nil, cperr.New(cperr.TenantBusy, "tenant %s has move %s in state %s; one move at a time", req.Tenant, mv.GetId(), MoveStateName(mv.GetState()))
	}
	cells, err := catalog.Cells(ctx, st)
	if err != nil {
		return nil, nil, err
	}
	target := catalog.FindCell(cells, req.Target)
	if target == nil {
		return nil, nil, cperr.New(cperr.CellNotFound, "cell %s does not exist", req.Target)
	}
	if sb := catalog.FindCell(cells, t.GetStandbyCell()); sb != nil && sb.Cell.GetRegion() == target.Cell.GetRegion() {
		return nil, nil, cperr.Invalid(cperr.FieldViolation{Field: "target_cell",
			Description: "cell " + req.Target + " is in region " + target.Cell.GetRegion() + ", the region of the tenant's standby " + sb.Cell.GetId()})
	}
	if _, err := placement.Pick(Candidates(cells), placement.Request{Region: target.Cell.GetRegion(), Cell: req.Target}); err != nil {
		return nil, nil, err
	}
	now := timestamppb.Now()
	mv := &cpv1.Move{
		Tenant: req.Tenant, SourceCell: t.GetCell(), TargetCell: req.Target, State: cpv1.MoveState_MOVE_STATE_PREPARING,
		SourceEpoch: t.GetEpoch(), DrainCell: req.DrainCell, StandbyCell: t.GetStandbyCell(), CreateTime: now, UpdateTime: now,
		RequestId: req.RequestID, RequestHash: req.RequestHash,
	}
	if req.DryRun {
		return mv, MovePlan(mv), nil
	}
	mv.Id = newMoveID(req.Tenant)
	next := proto.Clone(t).(*cpv1.Tenant)
	next.OperationId = mv.GetId()
	next.UpdateTime = now
	load := proto.Clone(target.Load).(*cpv1.CellLoad)
	load.Tenants++
	tkey, mkey, lkey := topo.TenantKey(t.GetId()), topo.MoveKey(mv.GetId()), topo.CellLoadKey(req.Target)
	conds := append(slices.Clone(guard), topo.IfVersion(tkey, tv), topo.IfAbsent(mkey), topo.IfVersion(lkey, target.LoadVersion))
	_, err = st.Txn(ctx, conds,
		[]topo.Op{topo.Put(tkey, catalog.Encode(next)), topo.Put(mkey, catalog.Encode(mv)), topo.Put(lkey, catalog.Encode(load))})
	var ce *topo.CondError
	if errors.As(err, &ce) {
		if ce.Index < len(guard) {
			return nil, nil, ErrNotLeader
		}
		return nil, nil, cperr.New(cperr.TenantBusy, "tenant %s or cell %s changed while the move was recorded; try again", req.Tenant, req.Target)
	}
	if err != nil {
		return nil, nil, err
	}
	return mv, MovePlan(mv), nil
}

// MovePlan is the human-readable sequence of steps a move takes.
func MovePlan(mv *cpv1.Move) []string {
	t, src, dst, e := mv.GetTenant(), mv.GetSourceCell(), mv.GetTargetCell(), mv.GetSourceEpoch()
	record := "record the move"
	if mv.GetId() != "" {
		record += " " + mv.GetId()
	}
	plan := []string{
		fmt.Sprintf("%s of tenant %s from cell %s to cell %s; count the tenant in %s's load", record, t, src, dst, dst),
		fmt.Sprintf("PREPARING: make %s a STANDBY of %s at epoch %d, replicating from %s", dst, t, e, src),
		fmt.Sprintf("COPYING: %s imports an export of %s's data from %s", dst, t, src),
		fmt.Sprintf("CATCHING_UP: %s applies %s's change stream until its lag is under the bound (the last point to cancel)", dst, src),
		fmt.Sprintf("FENCING: routers hold %s's requests; %s becomes FENCED at epoch %d and stops taking writes", t, src, e+1),
		fmt.Sprintf("CUTTING_OVER: once %s applied the fence, it becomes OWNER at epoch %d and the placement flips to %s (epoch %d); routers release the held requests", dst, e+1, dst, e+1),
		fmt.Sprintf("CLEANING_UP: after the grace period, %s's copy on %s is deleted", t, src),
	}
	if sb := mv.GetStandbyCell(); sb != "" {
		plan = append(plan, fmt.Sprintf("the standby %s follows %s from then on (STANDBY at epoch %d)", sb, dst, e+1))
	}
	return plan
}

// CancelMove asks the leader to cancel move id. It is honoured until the
// source is fenced: MOVE_NOT_CANCELLABLE from FENCING on (and for a move
// that finished otherwise); MOVE_NOT_FOUND if there is no such move.
// Cancelling a cancelled move (or one being cancelled) is a no-op.
func CancelMove(ctx context.Context, st topo.Store, id string) (*cpv1.Move, error) {
	for {
		mv, v, err := GetMove(ctx, st, id)
		if err != nil {
			return nil, err
		}
		switch {
		case mv.GetState() == cpv1.MoveState_MOVE_STATE_CANCELLED || (mv.GetCancelRequested() && MoveBeforeFence(mv.GetState())):
			return mv, nil
		case MoveFinished(mv.GetState()):
			return nil, cperr.New(cperr.MoveNotCancellable, "move %s already ended %s", id, MoveStateName(mv.GetState()))
		case !MoveBeforeFence(mv.GetState()):
			return nil, cperr.New(cperr.MoveNotCancellable, "move %s is %s: its source is fenced, so it only goes forward", id, MoveStateName(mv.GetState()))
		}
		mv.CancelRequested = true
		mv.UpdateTime = timestamppb.Now()
		_, err = st.Update(ctx, topo.MoveKey(id), catalog.Encode(mv), v)
		if errors.Is(err, topo.ErrVersionMismatch) {
			continue // the leader recorded progress meanwhile: decide again
		}
		if err != nil {
			return nil, err
		}
		return mv, nil
	}
}

// GetMove reads moves/<id>; MOVE_NOT_FOUND if absent.
func GetMove(ctx context.Context, st topo.Store, id string) (*cpv1.Move, topo.Version, error) {
	mv, v, err := catalog.GetMove(ctx, st, id)
	if errors.Is(err, topo.ErrNotFound) {
		return nil, 0, cperr.New(cperr.MoveNotFound, "move %s does not exist (finished moves are kept for a while, then deleted)", id)
	}
	return mv, v, err
}

// MoveFilter selects moves for ListMoves.
type MoveFilter struct {
	// Tenant, Cell: only this tenant's moves, only moves from or to this cell.
	Tenant, Cell string
	// All includes finished moves (still kept).
	All bool
}

// ListMoves lists the moves that match f, oldest first.
func ListMoves(ctx context.Context, st topo.Store, f MoveFilter) ([]*cpv1.Move, error) {
	all, _, err := catalog.ListMoves(ctx, st)
	if err != nil {
		return nil, err
	}
	var out []*cpv1.Move
	for _, r := range all {
		if mv := r.Value; (f.All || !MoveFinished(mv.GetState())) &&
			(f.Tenant == "" || mv.GetTenant() == f.Tenant) &&
			(f.Cell == "" || mv.GetSourceCell() == f.Cell || mv.GetTargetCell() == f.Cell) {
			out = append(out, mv)
		}
	}
	return out, nil
}

// activeMove returns the tenant's unfinished move, if any (CLEANING_UP
// included: its source still holds a copy that is about to be deleted).
func activeMove(ctx context.Context, st topo.Store, tenant string) (*cpv1.Move, error) {
	all, _, err := catalog.ListMoves(ctx, st)
	if err != nil {
		return nil, err
	}
	for _, r := range all {
		if r.Value.GetTenant() == tenant && !MoveFinished(r.Value.GetState()) {
			return r.Value, nil
		}
	}
	return nil, nil
}

// newMoveID is "<tenant>-<8 hex digits>": readable in listings, unique
// (ids.Fit shortens it for a tenant id of more than 119 characters).
func newMoveID(tenant string) string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return ids.Fit(tenant + "-" + hex.EncodeToString(b[:]))
}

// MoveStateName is the short name of a move state (COPYING, DONE, ...).
func MoveStateName(s cpv1.MoveState) string {
	return strings.TrimPrefix(s.String(), "MOVE_STATE_")
}

func tenantStateName(s cpv1.TenantState) string {
	return strings.TrimPrefix(s.String(), "TENANT_STATE_")
}

// Candidates turns cells into the placement policy's candidates.
func Candidates(cells []*catalog.CellInfo) []placement.Candidate {
	out := make([]placement.Candidate, len(cells))
	for i, ci := range cells {
		out[i] = placement.Candidate{Cell: ci.Cell, Load: ci.Load, Health: catalog.Health(ci)}
	}
	return out
}
