package controller

import (
	"context"
	"errors"
	"slices"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/cellplane/cellplane/controlplane/catalog"
	"github.com/cellplane/cellplane/controlplane/placement"
	"github.com/cellplane/cellplane/controlplane/topo"
	"github.com/cellplane/cellplane/internal/cperr"
	cpv1 "github.com/cellplane/cellplane/proto/cellplane/controlplane/v1"
)

// A drain empties a cell by moving its tenants to the other ACTIVE cells
// of its region, a bounded number at a time. It is durable: the cell's
// DRAINING state, a record drains/<cell> (the DrainCellRequest: the
// concurrency asked for) and the drain moves (tagged drain_cell) are all
// in etcd, so a new leader goes on where the last one stopped. The drain
// ends (its record is deleted) when the cell owns no tenant and no drain
// move runs, or when the cell is made ACTIVE or CORDONED again (running
// moves then finish on their own).

// DrainsPrefix holds one record per cell being drained.
//
// TODO(coordinator): move into topo/keys.go (and a CellDrain message)
// with the next keyspace change; the record is a DrainCellRequest today.
const DrainsPrefix = "drains/"

// DrainKey is drains/<cell>.
func DrainKey(cell string) string { return DrainsPrefix + cell }

// DrainProgress is where a drain stands.
type DrainProgress struct {
	Cell *cpv1.Cell
	// Remaining counts the tenants the cell still owns.
	Remaining uint64
	// Moves are the unfinished moves out of the cell.
	Moves []*cpv1.Move
}

// StartDrain marks cell DRAINING (no new tenants) and records the drain
// with its concurrency (0: keep the recorded one, else the controller's
// default), in one transaction. Errors: CELL_NOT_FOUND; CELL_NOT_ACTIVE
// for a DOWN cell.
func StartDrain(ctx context.Context, st topo.Store, cell string, concurrency uint32) (*DrainProgress, error) {
	for {
		ci, err := catalog.Cell(ctx, st, cell)
		if err != nil {
			return nil, err
		}
		if ci.Cell.GetState() == cpv1.CellState_CELL_STATE_DOWN {
			return nil, cperr.New(cperr.CellNotActive, "cell %s is DOWN: its tenants are failed over, not moved", cell)
		}
		rec := &cpv1.DrainCellRequest{}
		dv, err := catalog.Get(ctx, st, DrainKey(cell), rec)
		if err != nil && !errors.Is(err, topo.ErrNotFound) {
			return nil, err
		}
		if concurrency > 0 || dv == 0 {
			rec = &cpv1.DrainCellRequest{Cell: cell, Concurrency: concurrency}
		}
		next := proto.Clone(ci.Cell).(*cpv1.Cell)
		next.State = cpv1.CellState_CELL_STATE_DRAINING
		_, err = st.Txn(ctx,
			[]topo.Cond{topo.IfVersion(topo.CellKey(cell), ci.CellVersion), topo.IfVersion(DrainKey(cell), dv)},
			[]topo.Op{topo.Put(topo.CellKey(cell), catalog.Encode(next)), topo.Put(DrainKey(cell), catalog.Encode(rec))})
		if errors.Is(err, topo.ErrConditionFailed) {
			continue // changed meanwhile: decide again
		}
		if err != nil {
			return nil, err
		}
		return GetDrainProgress(ctx, st, cell)
	}
}

// GetDrainProgress reports a cell's tenants left and its moves out.
func GetDrainProgress(ctx context.Context, st topo.Store, cell string) (*DrainProgress, error) {
	ci, err := catalog.Cell(ctx, st, cell)
	if err != nil {
		return nil, err
	}
	out := &DrainProgress{Cell: ci.Cell}
	tenants, err := tenantsOf(ctx, st, cell)
	if err != nil {
		return nil, err
	}
	out.Remaining = uint64(len(tenants))
	moves, err := ListMoves(ctx, st, MoveFilter{Cell: cell})
	if err != nil {
		return nil, err
	}
	for _, mv := range moves {
		if mv.GetSourceCell() == cell {
			out.Moves = append(out.Moves, mv)
		}
	}
	return out, nil
}

// tenantsOf lists the placements owned by cell (a scan of tenants/).
func tenantsOf(ctx context.Context, st topo.Store, cell string) ([]*cpv1.Tenant, error) {
	var out []*cpv1.Tenant
	_, err := catalog.Each(ctx, st, topo.TenantsPrefix, 0, func(kv topo.KV) error {
		if topo.ParseKey(kv.Key).Kind != topo.KindTenant {
			return nil
		}
		t := &cpv1.Tenant{}
		if err := catalog.Decode(kv, t); err != nil {
			return err
		}
		if t.GetCell() == cell {
			out = append(out, t)
		}
		return nil
	})
	return out, err
}

// drainLoop runs a pass over the recorded drains every DrainInterval, and
// when a drain is recorded or a move ends.
func (m *mover) drainLoop(ctx context.Context) {
	m.r.wg.Add(1)
	go func() {
		defer m.r.wg.Done()
		m.r.follow(ctx, DrainsPrefix, func(topo.Event) { nudge(m.drainWake) })
	}()
	m.r.every(ctx, m.cfg.DrainInterval, m.drainWake, "drain pass", m.drainPass)
}

func (m *mover) drainPass(ctx context.Context) error {
	c := m.r.c
	var drains []*cpv1.DrainCellRequest
	var versions []topo.Version
	if _, err := catalog.Each(ctx, c.st, DrainsPrefix, 0, func(kv topo.KV) error {
		d := &cpv1.DrainCellRequest{}
		if err := catalog.Decode(kv, d); err != nil {
			return err
		}
		drains, versions = append(drains, d), append(versions, kv.Version)
		return nil
	}); err != nil {
		return err
	}
	c.mm.draining.Set(float64(len(drains)))
	var errs []error
	for i, d := range drains {
		errs = append(errs, m.drainCell(ctx, d, versions[i]))
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
		return m.r.commit(ctx, []topo.Cond{topo.IfVersion(DrainKey(cell), dv)}, []topo.Op{topo.Del(DrainKey(cell))})
	}
	if err != nil {
		return err
	}
	tenants, err := tenantsOf(ctx, c.st, cell)
	if err != nil {
		return err
	}
	moves, err := allMoves(ctx, c.st)
	if err != nil {
		return err
	}
	running := 0
	busy := map[string]bool{}
	retryCutoff := time.Now().Add(-m.cfg.DrainRetryAfter)
	for _, sm := range moves {
		mv := sm.mv
		switch {
		case !MoveFinished(mv.GetState()):
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
		return m.r.commit(ctx, []topo.Cond{topo.IfVersion(DrainKey(cell), dv)}, []topo.Op{topo.Del(DrainKey(cell))})
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
		mv, _, err := startMove(ctx, c.st, MoveRequest{Tenant: t.GetId(), Target: target, DrainCell: cell}, guard)
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
	return placement.Pick(candidates(cands), placement.Request{Region: region})
}
