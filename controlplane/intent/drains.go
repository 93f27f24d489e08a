package intent

import (
	"context"
	"errors"

	"google.golang.org/protobuf/proto"

	"github.com/cellplane/cellplane/controlplane/catalog"
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
		rec, dv, err := catalog.GetDrain(ctx, st, cell)
		if err != nil && !errors.Is(err, topo.ErrNotFound) {
			return nil, err
		}
		if concurrency > 0 || dv == 0 {
			rec = &cpv1.DrainCellRequest{Cell: cell, Concurrency: concurrency}
		}
		next := proto.Clone(ci.Cell).(*cpv1.Cell)
		next.State = cpv1.CellState_CELL_STATE_DRAINING
		_, err = st.Txn(ctx,
			[]topo.Cond{topo.IfVersion(topo.CellKey(cell), ci.CellVersion), topo.IfVersion(topo.DrainKey(cell), dv)},
			[]topo.Op{topo.Put(topo.CellKey(cell), catalog.Encode(next)), topo.Put(topo.DrainKey(cell), catalog.Encode(rec))})
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
	tenants, err := catalog.TenantsOf(ctx, st, cell)
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
