package controller

import (
	"context"
	"errors"
	"slices"
	"time"

	"github.com/cellplane/cellplane/controlplane/catalog"
	"github.com/cellplane/cellplane/controlplane/intent"
	"github.com/cellplane/cellplane/controlplane/placement"
	"github.com/cellplane/cellplane/controlplane/topo"
	"github.com/cellplane/cellplane/internal/cperr"
	cpv1 "github.com/cellplane/cellplane/proto/cellplane/controlplane/v1"
)

// A drain (recorded by intent.StartDrain) empties a cell by moving its
// tenants to the other ACTIVE cells of its region, a bounded number at a
// time. It is durable: the cell's DRAINING state, the record drains/<cell>
// and the drain moves (tagged drain_cell) are all in etcd, so a new leader
// goes on where the last one stopped. The drain ends (its record is
// deleted) when the cell owns no tenant and no drain move runs, or when the
// cell is made ACTIVE or CORDONED again (running moves then finish on
// their own).

// drainLoop runs a pass over the recorded drains every DrainInterval, and
// when a drain is recorded or a move ends.
func (m *mover) drainLoop(ctx context.Context) {
	m.r.wg.Add(1)
	go func() {
		defer m.r.wg.Done()
		m.r.follow(ctx, topo.DrainsPrefix, func(topo.Event) { nudge(m.drainWake) })
	}()
	m.r.every(ctx, m.cfg.DrainInterval, m.drainWake, "drain pass", m.drainPass)
}

func (m *mover) drainPass(ctx context.Context) error {
	c := m.r.c
	drains, _, err := catalog.ListDrains(ctx, c.st)
	if err != nil {
		return err
	}
	c.mm.draining.Set(float64(len(drains)))
	var errs []error
	for _, d := range drains {
		errs = append(errs, m.drainCell(ctx, d.Value, d.Version))
	}
	return errors.Join(errs...)
}

// drainCell starts moves out of one draining cell up to its concurrency,
// or ends the drain.
func (m *mover) drainCell(ctx context.Context, d *cpv1.DrainCellRequest, dv topo.Version) error {
	c := m.r.c
	cell := d.GetCell()
	ci, err := catalog.Cell(ctx, c.st, cell)
	if errors.Is(err, cperr.ErrCellNotFound) || (err == nil && ci.Cell.GetState() != cpv1.CellState_CELL_STATE_DRAINING) {
		c.log.Info("drain stopped: the cell is no longer DRAINING", "cell", cell)
		return m.r.commit(ctx, []topo.Cond{topo.IfVersion(topo.DrainKey(cell), dv)}, []topo.Op{topo.Del(topo.DrainKey(cell))})
	}
	if err != nil {
		return err
	}
	tenants, err := catalog.TenantsOf(ctx, c.st, cell)
	if err != nil {
		return err
	}
	moves, _, err := catalog.ListMoves(ctx, c.st)
	if err != nil {
		return err
	}
	running := 0
	busy := map[string]bool{}
	retryCutoff := time.Now().Add(-m.cfg.DrainRetryAfter)
	for _, rec := range moves {
		mv := rec.Value
		switch {
		case !intent.MoveFinished(mv.GetState()):
			busy[mv.GetTenant()] = true
			if mv.GetDrainCell() == cell {
				running++
			}
		case mv.GetDrainCell() == cell && mv.GetState() != cpv1.MoveState_MOVE_STATE_DONE && mv.GetUpdateTime().AsTime().After(retryCutoff):
			busy[mv.GetTenant()] = true // failed or cancelled lately: later
		}
	}
	if len(tenants) == 0 && running == 0 {
		c.log.Info("cell drained", "cell", cell)
		return m.r.commit(ctx, []topo.Cond{topo.IfVersion(topo.DrainKey(cell), dv)}, []topo.Op{topo.Del(topo.DrainKey(cell))})
	}
	limit := int(d.GetConcurrency())
	if limit == 0 {
		limit = m.cfg.DrainConcurrency
	}
	slices.SortFunc(tenants, func(a, b *cpv1.Tenant) int {
		switch {
		case a.GetId() < b.GetId():
			return -1
		case a.GetId() > b.GetId():
			return 1
		}
		return 0
	})
	guard := []topo.Cond{topo.IfVersion(m.r.lead.Key(), m.r.lead.Version())}
	for _, t := range tenants {
		if running >= limit {
			break
		}
		if t.GetState() != cpv1.TenantState_TENANT_STATE_ACTIVE || t.GetOperationId() != "" || busy[t.GetId()] {
			continue
		}
		target, err := m.drainTarget(ctx, ci.Cell, t)
		if err != nil {
			c.log.Warn("drain: no cell to move the tenant to", "cell", cell, "tenant", t.GetId(), "err", err)
			return nil // no room now; the next pass tries again
		}
		mv, _, err := intent.StartMoveGuarded(ctx, c.st, intent.MoveRequest{Tenant: t.GetId(), Target: target, DrainCell: cell}, guard)
		switch {
		case errors.Is(err, errNotLeader):
			return err
		case errors.Is(err, cperr.ErrTenantBusy):
			continue
		case err != nil:
			c.log.Warn("drain: move not started", "cell", cell, "tenant", t.GetId(), "err", err)
			continue
		}
		running++
		c.log.Info("drain: move started", "cell", cell, "tenant", t.GetId(), "move", mv.GetId(), "target", target)
	}
	return nil
}

// drainTarget picks the cell a draining cell's tenant goes to: the least
// loaded ACTIVE cell with room of the same region (the draining cell is
// not ACTIVE, so it is never picked).
func (m *mover) drainTarget(ctx context.Context, from *cpv1.Cell, t *cpv1.Tenant) (string, error) {
	cells, err := catalog.Cells(ctx, m.r.c.st)
	if err != nil {
		return "", err
	}
	cands := slices.DeleteFunc(cells, func(ci *catalog.CellInfo) bool {
		return ci.Cell.GetId() == t.GetStandbyCell() || ci.Cell.GetId() == from.GetId()
	})
	return chooseTarget(cands, from.GetRegion())
}

// chooseTarget is the placement policy for a moved tenant: the least
// loaded ACTIVE cell with room of region among cands.
func chooseTarget(cands []*catalog.CellInfo, region string) (string, error) {
	return placement.Pick(intent.Candidates(cands), placement.Request{Region: region})
}
