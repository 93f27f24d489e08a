package api

// Updates and guarded deletes of regions, cells and tenants: what a
// declarative client (the Terraform provider) needs besides create.
//
// A delete is one transaction guarded by the versions the emptiness check
// read, so that nothing can start to use the object between the check and
// the delete:
//   - a region: its record's version. CreateCell rewrites the region
//     record in the cell's transaction (bumping that version), so a cell
//     created after the check makes the delete fail and be re-checked. A
//     tenant is only ever placed on a cell of its home region, so with no
//     cell left none can be placed there; tenants that name the region
//     but live elsewhere (moved) are found by the scan.
//   - a cell: its record's and its load record's versions. Every
//     placement, move target and standby assignment writes (or is guarded
//     by) the load record of its cell in its own transaction.
// Registered nodes are leased by the nodes themselves: a node that
// registers in the instant after the check finds its cell gone.

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/cellplane/cellplane/controlplane/catalog"
	"github.com/cellplane/cellplane/controlplane/intent"
	"github.com/cellplane/cellplane/controlplane/placement"
	"github.com/cellplane/cellplane/controlplane/topo"
	"github.com/cellplane/cellplane/internal/cperr"
	cpv1 "github.com/cellplane/cellplane/proto/cellplane/controlplane/v1"
)

// maxListed bounds the ids a *_NOT_EMPTY error's metadata names.
const maxListed = 10

// idList formats ids for error metadata: at most maxListed, then "…".
func idList(ids []string) string {
	if len(ids) > maxListed {
		return strings.Join(ids[:maxListed], ",") + ",…"
	}
	return strings.Join(ids, ",")
}

// UpdateRegion implements ControlPlaneService.
func (s *Server) UpdateRegion(ctx context.Context, req *cpv1.UpdateRegionRequest) (*cpv1.UpdateRegionResponse, error) {
	if err := errors.Join(s.checkID("name", req.GetName()), s.checkDescription(req.GetDescription())); err != nil {
		return nil, firstInvalid(err)
	}
	for {
		r, v, err := catalog.GetRegion(ctx, s.st, req.GetName())
		if errors.Is(err, topo.ErrNotFound) {
			return nil, cperr.New(cperr.RegionNotFound, "region %s does not exist", req.GetName())
		}
		if err != nil {
			return nil, err
		}
		if r.GetDescription() == req.GetDescription() {
			return &cpv1.UpdateRegionResponse{Region: r}, nil
		}
		r.Description = req.GetDescription()
		if _, err := s.st.Update(ctx, topo.RegionKey(r.GetName()), catalog.Encode(r), v); errors.Is(err, topo.ErrVersionMismatch) {
			continue
		} else if err != nil {
			return nil, err
		}
		s.log.Info("region updated", "region", r.GetName())
		return &cpv1.UpdateRegionResponse{Region: r}, nil
	}
}

// DeleteRegion implements ControlPlaneService: refused (REGION_NOT_EMPTY)
// while a cell is in the region or a tenant's home region is it.
func (s *Server) DeleteRegion(ctx context.Context, req *cpv1.DeleteRegionRequest) (*cpv1.DeleteRegionResponse, error) {
	name := req.GetName()
	if err := s.checkID("name", name); err != nil {
		return nil, err
	}
	for {
		_, v, err := catalog.GetRegion(ctx, s.st, name)
		if errors.Is(err, topo.ErrNotFound) {
			return nil, cperr.New(cperr.RegionNotFound, "region %s does not exist", name)
		}
		if err != nil {
			return nil, err
		}
		cells, err := catalog.Cells(ctx, s.st)
		if err != nil {
			return nil, err
		}
		var inCells []string
		for _, ci := range cells {
			if ci.Cell.GetRegion() == name {
				inCells = append(inCells, ci.Cell.GetId())
			}
		}
		tenants, _, err := catalog.ListTenants(ctx, s.st)
		if err != nil {
			return nil, err
		}
		var homed []string
		for _, t := range tenants {
			if t.Value.GetHomeRegion() == name {
				homed = append(homed, t.Value.GetId())
			}
		}
		if len(inCells) > 0 || len(homed) > 0 {
			e := cperr.New(cperr.RegionNotEmpty, "region %s still has %d cell(s) and %d tenant(s); delete them first", name, len(inCells), len(homed))
			if len(inCells) > 0 {
				e = e.With(cperr.MetaCells, idList(inCells))
			}
			if len(homed) > 0 {
				e = e.With(cperr.MetaTenants, idList(homed))
			}
			return nil, e
		}
		_, err = s.st.Txn(ctx, []topo.Cond{topo.IfVersion(topo.RegionKey(name), v)}, []topo.Op{topo.Del(topo.RegionKey(name))})
		if errors.Is(err, topo.ErrConditionFailed) {
			continue // a cell was created (or the region changed) meanwhile: check again
		}
		if err != nil {
			return nil, err
		}
		s.log.Info("region deleted", "region", name)
		return &cpv1.DeleteRegionResponse{}, nil
	}
}

// UpdateCell implements ControlPlaneService.
func (s *Server) UpdateCell(ctx context.Context, req *cpv1.UpdateCellRequest) (*cpv1.UpdateCellResponse, error) {
	id, to := req.GetId(), req.GetState()
	if err := s.checkID("id", id); err != nil {
		return nil, err
	}
	switch to {
	case cpv1.CellState_CELL_STATE_UNSPECIFIED, cpv1.CellState_CELL_STATE_ACTIVE, cpv1.CellState_CELL_STATE_CORDONED:
	default:
		return nil, cperr.Invalid(cperr.FieldViolation{Field: "state",
			Description: "must be ACTIVE or CORDONED (a drain starts with DrainCell, a cell goes DOWN through failover)"})
	}
	for {
		c, v, err := catalog.GetCell(ctx, s.st, id)
		if errors.Is(err, topo.ErrNotFound) {
			return nil, cperr.New(cperr.CellNotFound, "cell %s does not exist", id)
		}
		if err != nil {
			return nil, err
		}
		next := proto.Clone(c).(*cpv1.Cell)
		if req.GetCapacity() != nil {
			next.Capacity = req.GetCapacity()
		}
		if to != cpv1.CellState_CELL_STATE_UNSPECIFIED && to != c.GetState() {
			switch c.GetState() {
			case cpv1.CellState_CELL_STATE_DRAINING, cpv1.CellState_CELL_STATE_DOWN:
				// Never undo an operator's drain or a failover from a
				// declarative update: 'cellctl cell uncordon' does that
				// on purpose.
				return nil, cperr.New(cperr.CellNotActive, "cell %s is %s; an update does not change its state (end a drain with 'cellctl cell uncordon %s'; a DOWN cell changes through failover)",
					id, placement.StateName(c.GetState()), id).With("state", placement.StateName(c.GetState()))
			}
			next.State = to
		}
		if proto.Equal(next, c) {
			return &cpv1.UpdateCellResponse{Cell: c}, nil
		}
		if _, err := s.st.Update(ctx, topo.CellKey(id), catalog.Encode(next), v); errors.Is(err, topo.ErrVersionMismatch) {
			continue
		} else if err != nil {
			return nil, err
		}
		s.log.Info("cell updated", "cell", id, "state", placement.StateName(next.GetState()),
			"max_tenants", next.GetCapacity().GetMaxTenants(), "max_bytes", next.GetCapacity().GetMaxBytes())
		return &cpv1.UpdateCellResponse{Cell: next}, nil
	}
}

// DeleteCell implements ControlPlaneService: refused (CELL_NOT_EMPTY)
// while the cell owns or stands by for a tenant, a create, move, drain or
// failover in progress names it, or a node is registered in it.
func (s *Server) DeleteCell(ctx context.Context, req *cpv1.DeleteCellRequest) (*cpv1.DeleteCellResponse, error) {
	id := req.GetId()
	if err := s.checkID("id", id); err != nil {
		return nil, err
	}
	for {
		ci, err := catalog.Cell(ctx, s.st, id)
		if err != nil {
			return nil, err
		}
		if err := s.cellEmpty(ctx, ci); err != nil {
			return nil, err
		}
		conds := []topo.Cond{topo.IfVersion(topo.CellKey(id), ci.CellVersion), topo.IfVersion(topo.CellLoadKey(id), ci.LoadVersion)}
		ops := []topo.Op{topo.Del(topo.CellKey(id)), topo.Del(topo.CellLoadKey(id)), topo.Del(topo.CellBootstrapKey(id)), topo.Del(topo.CellFormedKey(id))}
		_, err = s.st.Txn(ctx, conds, ops)
		if errors.Is(err, topo.ErrConditionFailed) {
			continue // something was placed on it (or it changed) meanwhile: check again
		}
		if err != nil {
			return nil, err
		}
		s.log.Info("cell deleted", "cell", id, "region", ci.Cell.GetRegion())
		return &cpv1.DeleteCellResponse{}, nil
	}
}

// cellEmpty returns CELL_NOT_EMPTY naming what still uses ci.
func (s *Server) cellEmpty(ctx context.Context, ci *catalog.CellInfo) error {
	id := ci.Cell.GetId()
	var tenants, nodes, ops []string
	for _, n := range ci.Nodes {
		nodes = append(nodes, n.GetId())
	}
	recs, _, err := catalog.ListTenants(ctx, s.st)
	if err != nil {
		return err
	}
	for _, t := range recs {
		if t.Value.GetCell() == id || t.Value.GetStandbyCell() == id {
			tenants = append(tenants, t.Value.GetId())
		}
	}
	wfs, _, err := catalog.ListWorkflows(ctx, s.st)
	if err != nil {
		return err
	}
	for _, w := range wfs {
		if w.Value.GetCell() == id || w.Value.GetRequestedCell() == id {
			ops = append(ops, w.Value.GetId())
		}
	}
	moves, _, err := catalog.ListMoves(ctx, s.st)
	if err != nil {
		return err
	}
	for _, m := range moves {
		switch m.Value.GetState() {
		case cpv1.MoveState_MOVE_STATE_DONE, cpv1.MoveState_MOVE_STATE_CANCELLED, cpv1.MoveState_MOVE_STATE_FAILED:
			continue
		}
		if m.Value.GetSourceCell() == id || m.Value.GetTargetCell() == id {
			ops = append(ops, m.Value.GetId())
		}
	}
	fos, _, err := catalog.ListFailovers(ctx, s.st)
	if err != nil {
		return err
	}
	for _, f := range fos {
		switch f.Value.GetState() {
		case cpv1.FailoverState_FAILOVER_STATE_DONE, cpv1.FailoverState_FAILOVER_STATE_FAILED:
			continue
		}
		if f.Value.GetFromCell() == id || f.Value.GetToCell() == id {
			ops = append(ops, f.Value.GetId())
		}
	}
	if _, _, err := catalog.GetDrain(ctx, s.st, id); err == nil {
		ops = append(ops, "drain-"+id)
	} else if !errors.Is(err, topo.ErrNotFound) {
		return err
	}
	if len(tenants) == 0 && len(nodes) == 0 && len(ops) == 0 && ci.Load.GetTenants() == 0 {
		return nil
	}
	e := cperr.New(cperr.CellNotEmpty, "cell %s still has %d tenant(s) (owned or standby), %d registered node(s) and %d operation(s) in progress; drain it ('cellctl cell drain %s'), stop its nodes, then delete it",
		id, max(uint64(len(tenants)), ci.Load.GetTenants()), len(nodes), len(ops), id)
	for k, v := range map[string][]string{cperr.MetaTenants: tenants, cperr.MetaNodes: nodes, cperr.MetaOperations: ops} {
		if len(v) > 0 {
			e = e.With(k, idList(v))
		}
	}
	return e
}

// checkLimits validates tenant limits (of a create or an update).
func checkLimits(l *cpv1.TenantLimits) error {
	var vs []cperr.FieldViolation
	if l.GetRate() < 0 || math.IsNaN(l.GetRate()) || math.IsInf(l.GetRate(), 0) {
		vs = append(vs, cperr.FieldViolation{Field: "limits.rate", Description: "must be a finite number >= 0"})
	}
	if l.GetBytesRate() < 0 || math.IsNaN(l.GetBytesRate()) || math.IsInf(l.GetBytesRate(), 0) {
		vs = append(vs, cperr.FieldViolation{Field: "limits.bytes_rate", Description: "must be a finite number >= 0"})
	}
	if r := l.GetDefaultRetention(); r != nil && (r.CheckValid() != nil || r.AsDuration() < 0) {
		vs = append(vs, cperr.FieldViolation{Field: "limits.default_retention", Description: "must be a valid duration >= 0"})
	}
	if len(vs) > 0 {
		return cperr.Invalid(vs...)
	}
	return nil
}

// UpdateTenant implements ControlPlaneService: one guarded write of the
// placement record. Routers follow the record, so rate, burst, bytes_rate
// and bytes_burst take effect as their watches see it. max_bytes is the
// owner cell's quota for the tenant: a change marks the record
// quota_pending, the controller leader pushes it to the cell and clears
// the mark, and the call waits for that (bounded like CreateTenant; a
// retry of the same update waits again).
func (s *Server) UpdateTenant(ctx context.Context, req *cpv1.UpdateTenantRequest) (*cpv1.UpdateTenantResponse, error) {
	id := req.GetId()
	if err := s.checkID("id", id); err != nil {
		return nil, err
	}
	if l := req.GetLimits(); l != nil {
		if err := checkLimits(l); err != nil {
			return nil, err
		}
	}
	for {
		t, tv, err := catalog.GetTenant(ctx, s.st, id)
		if errors.Is(err, topo.ErrNotFound) || (err == nil && t.GetState() == cpv1.TenantState_TENANT_STATE_DELETING) {
			return nil, cperr.New(cperr.TenantNotFound, "tenant %s does not exist", id)
		}
		if err != nil {
			return nil, err
		}
		if ev := req.GetExpectedVersion(); ev != 0 && topo.Version(ev) != tv {
			return nil, cperr.New(cperr.RevisionMismatch, "tenant %s is at version %d, not %d: read it again", id, tv, ev).
				With(cperr.MetaRevision, fmt.Sprint(tv))
		}
		next := proto.Clone(t).(*cpv1.Tenant)
		if l := req.GetLimits(); l != nil {
			if l.GetMaxBytes() != t.GetLimits().GetMaxBytes() ||
				l.GetDefaultRetention().AsDuration() != t.GetLimits().GetDefaultRetention().AsDuration() {
				if t.GetState() != cpv1.TenantState_TENANT_STATE_ACTIVE {
					return nil, cperr.New(cperr.TenantBusy, "tenant %s is %s: its max_bytes (the cell's quota) changes once it is ACTIVE", id, t.GetState()).
						WithRetryAfter(time.Second)
				}
				next.QuotaPending = true
			}
			next.Limits = proto.Clone(l).(*cpv1.TenantLimits)
		}
		if req.DeletionProtection != nil {
			next.DeletionProtection = req.GetDeletionProtection()
		}
		if proto.Equal(next, t) {
			if t.GetQuotaPending() {
				return s.waitQuota(ctx, id)
			}
			return &cpv1.UpdateTenantResponse{Tenant: t, Version: uint64(tv)}, nil
		}
		next.UpdateTime = timestamppb.Now()
		nv, err := s.st.Update(ctx, topo.TenantKey(id), catalog.Encode(next), tv)
		if errors.Is(err, topo.ErrVersionMismatch) {
			if req.GetExpectedVersion() != 0 {
				return nil, cperr.New(cperr.RevisionMismatch, "tenant %s changed while it was updated: read it again", id)
			}
			continue
		}
		if err != nil {
			return nil, err
		}
		s.log.Info("tenant updated", "tenant", id, "deletion_protection", next.GetDeletionProtection(), "max_bytes", next.GetLimits().GetMaxBytes(),
			"quota_pending", next.GetQuotaPending())
		if next.GetQuotaPending() {
			return s.waitQuota(ctx, id)
		}
		return &cpv1.UpdateTenantResponse{Tenant: next, Version: uint64(nv)}, nil
	}
}

// waitQuota waits (bounded like waitCreate) until the controller has
// pushed tenant id's max_bytes to its cell (quota_pending cleared).
func (s *Server) waitQuota(ctx context.Context, id string) (*cpv1.UpdateTenantResponse, error) {
	wctx, cancel := s.waitContext(ctx)
	defer cancel()
	var out *cpv1.UpdateTenantResponse
	err := intent.WaitTenant(wctx, s.st, id, func(t *cpv1.Tenant, v topo.Version) bool {
		out = &cpv1.UpdateTenantResponse{Tenant: t, Version: uint64(v)}
		return !t.GetQuotaPending()
	})
	switch {
	case errors.Is(err, topo.ErrNotFound):
		return nil, cperr.New(cperr.TenantNotFound, "tenant %s does not exist", id)
	case errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil:
		return nil, cperr.New(cperr.ControlPlaneUnavailable,
			"tenant %s's new max_bytes is recorded but its cell does not enforce it yet after %v (is a controller leader running, is the cell up?); "+
				"the controller keeps pushing it: send the same update again to wait", id, s.cfg.WorkflowWait).WithRetryAfter(time.Second)
	case err != nil:
		return nil, err
	}
	return out, nil
}
