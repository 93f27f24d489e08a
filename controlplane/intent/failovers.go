package intent

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/cellplane/cellplane/controlplane/catalog"
	"github.com/cellplane/cellplane/controlplane/topo"
	"github.com/cellplane/cellplane/internal/cperr"
	"github.com/cellplane/cellplane/internal/ids"
	cpv1 "github.com/cellplane/cellplane/proto/cellplane/controlplane/v1"
)

// FailoverRequest asks for a failover of one tenant, or of every tenant a
// cell owns that has a standby.
type FailoverRequest struct {
	// Tenant or Cell (exactly one).
	Tenant, Cell string
	Kind         cpv1.FailoverKind
	// Trigger says why, for the record ("operator", "policy: ...").
	Trigger string
	// RequestID and RequestHash are recorded with each failover (the
	// API's idempotency key and its request's fingerprint).
	RequestID   string
	RequestHash []byte
}

// FailoverFinished reports a state a failover never leaves. A promotion
// AWAITING_OLD_OWNER is not finished (its RPO report is pending), though
// the standby already serves and the tenant is free for other operations.
func FailoverFinished(s cpv1.FailoverState) bool {
	return s == cpv1.FailoverState_FAILOVER_STATE_DONE || s == cpv1.FailoverState_FAILOVER_STATE_FAILED
}

// FailoverStateName is the short name of a state (FENCING, DONE, ...).
func FailoverStateName(s cpv1.FailoverState) string {
	return strings.TrimPrefix(s.String(), "FAILOVER_STATE_")
}

// FailoverKindName is "switchover" or "promote".
func FailoverKindName(k cpv1.FailoverKind) string {
	switch k {
	case cpv1.FailoverKind_FAILOVER_KIND_SWITCHOVER:
		return "switchover"
	case cpv1.FailoverKind_FAILOVER_KIND_PROMOTE:
		return "promote"
	}
	return "unknown"
}

// StartFailover records failovers (state FENCING) and returns them; the
// controller leader drives them. For a tenant: one failover, in one
// transaction with the placement's operation_id (one operation per tenant
// at a time). For a cell: one per ACTIVE tenant the cell owns that has a
// standby; tenants busy with another operation are skipped (TENANT_BUSY
// only when every one of them was busy).
//
// Errors: TENANT_NOT_FOUND; NO_STANDBY (no standby cell; whether the
// standby is bootstrapped is checked by the leader's first step);
// TENANT_BUSY (another operation, or a concurrent change). An emergency
// promotion supersedes an unfinished switchover of the tenant (whose owner
// may have died while being fenced): the switchover is marked FAILED in
// the same transaction.
func StartFailover(ctx context.Context, st topo.Store, req FailoverRequest) ([]*cpv1.Failover, error) {
	return StartFailoverGuarded(ctx, st, req, nil)
}

// StartFailoverGuarded is StartFailover with extra transaction conditions
// (the controller leader's guard when the promotion policy starts a
// promotion); a failed guard is ErrNotLeader.
func StartFailoverGuarded(ctx context.Context, st topo.Store, req FailoverRequest, guard []topo.Cond) ([]*cpv1.Failover, error) {
	if req.Kind != cpv1.FailoverKind_FAILOVER_KIND_SWITCHOVER && req.Kind != cpv1.FailoverKind_FAILOVER_KIND_PROMOTE {
		return nil, cperr.Invalid(cperr.FieldViolation{Field: "kind", Description: "SWITCHOVER or PROMOTE"})
	}
	if req.Trigger == "" {
		req.Trigger = "operator"
	}
	if req.Tenant != "" {
		t, tv, err := catalog.GetTenant(ctx, st, req.Tenant)
		if errors.Is(err, topo.ErrNotFound) {
			return nil, cperr.New(cperr.TenantNotFound, "tenant %s does not exist", req.Tenant)
		}
		if err != nil {
			return nil, err
		}
		fo, err := startOneFailover(ctx, st, t, tv, req, guard)
		if err != nil {
			return nil, err
		}
		return []*cpv1.Failover{fo}, nil
	}

	var out []*cpv1.Failover
	busy, candidates := 0, 0
	var lastBusy error
	tenants, _, err := catalog.ListTenants(ctx, st)
	if err != nil {
		return nil, err
	}
	for _, r := range tenants {
		t := r.Value
		if t.GetCell() != req.Cell || t.GetStandbyCell() == "" || t.GetState() != cpv1.TenantState_TENANT_STATE_ACTIVE {
			continue
		}
		candidates++
		fo, err := startOneFailover(ctx, st, t, r.Version, req, guard)
		switch {
		case err == nil:
			out = append(out, fo)
		case errors.Is(err, cperr.ErrTenantBusy):
			busy++
			lastBusy = err
		default:
			return out, err
		}
	}
	switch {
	case len(out) > 0:
		return out, nil
	case candidates == 0:
		return nil, cperr.New(cperr.NoStandby, "cell %s owns no ACTIVE tenant with a standby", req.Cell)
	default:
		return nil, cperr.New(cperr.TenantBusy, "every tenant of cell %s with a standby is busy (%d; last: %v)", req.Cell, busy, lastBusy)
	}
}

func startOneFailover(ctx context.Context, st topo.Store, t *cpv1.Tenant, tv topo.Version, req FailoverRequest, guard []topo.Cond) (*cpv1.Failover, error) {
	id := t.GetId()
	switch {
	case t.GetState() != cpv1.TenantState_TENANT_STATE_ACTIVE:
		return nil, cperr.New(cperr.TenantBusy, "tenant %s is %s; only an ACTIVE tenant fails over", id, tenantStateName(t.GetState()))
	case t.GetStandbyCell() == "":
		return nil, cperr.New(cperr.NoStandby, "tenant %s has no standby cell: give it one first (cellctl tenant standby set)", id)
	}
	conds := slices.Clone(guard)
	var ops []topo.Op
	now := timestamppb.Now()
	if op := t.GetOperationId(); op != "" {
		prev, pv, err := GetFailover(ctx, st, op)
		superseding := err == nil && req.Kind == cpv1.FailoverKind_FAILOVER_KIND_PROMOTE &&
			prev.GetKind() == cpv1.FailoverKind_FAILOVER_KIND_SWITCHOVER && !FailoverFinished(prev.GetState())
		if !superseding {
			return nil, cperr.New(cperr.TenantBusy, "tenant %s is busy with operation %s; try again when it ends", id, op)
		}
		prev.State = cpv1.FailoverState_FAILOVER_STATE_FAILED
		prev.ErrorReason = string(cperr.TenantBusy)
		prev.ErrorMessage = "superseded by an emergency promotion"
		prev.UpdateTime = now
		conds = append(conds, topo.IfVersion(topo.FailoverKey(op), pv))
		ops = append(ops, topo.Put(topo.FailoverKey(op), catalog.Encode(prev)))
	} else if t.GetCuttingOver() {
		return nil, cperr.New(cperr.TenantBusy, "tenant %s is being cut over; try again when it ends", id)
	}
	fid, err := newFailoverID(ctx, st, t, req.Kind)
	if err != nil {
		return nil, err
	}
	fo := &cpv1.Failover{
		Id: fid, Tenant: id, Kind: req.Kind, State: cpv1.FailoverState_FAILOVER_STATE_FENCING,
		FromCell: t.GetCell(), ToCell: t.GetStandbyCell(), OldEpoch: t.GetEpoch(), Trigger: req.Trigger,
		CreateTime: now, UpdateTime: now, RequestId: req.RequestID, RequestHash: req.RequestHash,
	}
	next := proto.Clone(t).(*cpv1.Tenant)
	next.OperationId = fid
	next.UpdateTime = now
	tkey, fkey := topo.TenantKey(id), topo.FailoverKey(fid)
	conds = append(conds, topo.IfVersion(tkey, tv), topo.IfAbsent(fkey))
	ops = append(ops, topo.Put(tkey, catalog.Encode(next)), topo.Put(fkey, catalog.Encode(fo)))
	_, err = st.Txn(ctx, conds, ops)
	var ce *topo.CondError
	if errors.As(err, &ce) {
		if ce.Index < len(guard) {
			return nil, ErrNotLeader
		}
		return nil, cperr.New(cperr.TenantBusy, "tenant %s changed while the failover was recorded; check it and try again", id)
	}
	if err != nil {
		return nil, err
	}
	if len(ops) > 2 {
		if prev := t.GetOperationId(); prev != "" {
			fo.ErrorMessage = "supersedes switchover " + prev
		}
	}
	return fo, nil
}

// newFailoverID is "<tenant>-e<new epoch>-<kind>", with "-2", "-3"... when
// an earlier attempt at that epoch is still recorded.
func newFailoverID(ctx context.Context, st topo.Store, t *cpv1.Tenant, kind cpv1.FailoverKind) (string, error) {
	base := fmt.Sprintf("%s-e%d-%s", t.GetId(), t.GetEpoch()+1, FailoverKindName(kind))
	for i := 1; ; i++ {
		id := base
		if i > 1 {
			id = fmt.Sprintf("%s-%d", base, i)
		}
		id = ids.Fit(id) // a long tenant id must not make an invalid failover id
		_, err := st.Get(ctx, topo.FailoverKey(id))
		if errors.Is(err, topo.ErrNotFound) {
			return id, nil
		}
		if err != nil {
			return "", err
		}
	}
}

// GetFailover reads failovers/<id>; FAILOVER_NOT_FOUND if absent.
func GetFailover(ctx context.Context, st topo.Store, id string) (*cpv1.Failover, topo.Version, error) {
	fo, v, err := catalog.GetFailover(ctx, st, id)
	if errors.Is(err, topo.ErrNotFound) {
		return nil, 0, cperr.New(cperr.FailoverNotFound, "failover %s does not exist", id)
	}
	return fo, v, err
}

// FailoverFilter selects failovers for ListFailovers.
type FailoverFilter struct {
	// Tenant: only this tenant's. Cell: only from or to this cell.
	Tenant, Cell string
}

// ListFailovers lists the recorded failovers that match f, oldest first.
func ListFailovers(ctx context.Context, st topo.Store, f FailoverFilter) ([]*cpv1.Failover, error) {
	all, _, err := catalog.ListFailovers(ctx, st)
	if err != nil {
		return nil, err
	}
	var out []*cpv1.Failover
	for _, r := range all {
		if fo := r.Value; (f.Tenant == "" || fo.GetTenant() == f.Tenant) && (f.Cell == "" || fo.GetFromCell() == f.Cell || fo.GetToCell() == f.Cell) {
			out = append(out, fo)
		}
	}
	return out, nil
}

// WaitFailoverAck waits (up to d, or ctx) until the leader took the first
// step of each failover: the standby checked (new_epoch recorded) or the
// failover FAILED. It returns the records as they are then.
func WaitFailoverAck(ctx context.Context, st topo.Store, fos []*cpv1.Failover, d time.Duration) ([]*cpv1.Failover, error) {
	if len(fos) == 0 {
		return fos, nil
	}
	wctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	out := make([]*cpv1.Failover, len(fos))
	err := waitFor(wctx, st, []string{topo.FailoversPrefix}, func() (bool, error) {
		done := true
		for i, fo := range fos {
			cur, _, err := GetFailover(wctx, st, fo.GetId())
			if err != nil {
				return false, err
			}
			out[i] = cur
			if cur.GetNewEpoch() == 0 && cur.GetState() != cpv1.FailoverState_FAILOVER_STATE_FAILED {
				done = false
			}
		}
		return done, nil
	})
	if err != nil && wctx.Err() != nil && ctx.Err() == nil {
		err = nil // not acknowledged in time: the caller reports what is recorded
	}
	for i := range out {
		if out[i] == nil {
			out[i] = fos[i]
		}
	}
	return out, err
}

// FailoverError is the error a FAILED failover records, as a *cperr.Error.
func FailoverError(fo *cpv1.Failover) error {
	if fo.GetState() != cpv1.FailoverState_FAILOVER_STATE_FAILED {
		return nil
	}
	return &cperr.Error{Reason: cperr.Reason(fo.GetErrorReason()), Message: fo.GetErrorMessage()}
}
