package controller

import (
	"context"
	"sync"

	"github.com/cellplane/cellplane/controlplane/catalog"
	"github.com/cellplane/cellplane/controlplane/topo"
	cellv1 "github.com/cellplane/cellplane/proto/cellplane/cell/v1"
	cpv1 "github.com/cellplane/cellplane/proto/cellplane/controlplane/v1"
)

// ReplicaCells is what moves and standbys ask of cells beyond Cells
// (implemented by cellclient.Client). Without it (a Cells that lacks these
// methods) the leader drives no moves, drains or standbys.
type ReplicaCells interface {
	Cells
	// SetTenant sets a tenant's role and epoch on a cell (STANDBY: with
	// the cell it replicates from, and whether it keeps its data) and
	// returns the tenant's record there; for OWNER and FENCED the record's
	// tseq is that transition's.
	SetTenant(ctx context.Context, cell, tenant string, role cellv1.Role, epoch uint64, sourceCell string, resume bool, requestID string) (*cellv1.TenantInfo, error)
	// GetTenant reads a tenant's record on a cell's leader, with its
	// replication stream when it is a STANDBY there (nil when none runs).
	GetTenant(ctx context.Context, cell, tenant string) (*cellv1.TenantInfo, *cellv1.ReplicationStatus, error)
}

// mover is one leadership term's driver of moves, drains and standbys. It
// shares the runner's leadership guard (runner.commit), its goroutine
// accounting and its set of running items.
type mover struct {
	r     *runner
	cells ReplicaCells
	cfg   MoveConfig
	sem   chan struct{} // moves driven at once
	// drainWake is nudged when a move ends or a drain is recorded.
	drainWake chan struct{}
	standby   *keyQueue
}

// leadMoves runs, while this replica leads, the move driver (every
// recorded move, then each new one the watch shows), the housekeeping of
// finished moves, the drain loop and the standby reconciler.
func (r *runner) leadMoves(ctx context.Context) {
	rc, ok := r.c.cells.(ReplicaCells)
	if !ok {
		r.c.log.Warn("the cell client cannot set standbys: moves, drains and standbys are not driven")
		return
	}
	cfg := r.c.cfg.Moves
	m := &mover{r: r, cells: rc, cfg: cfg, sem: make(chan struct{}, cfg.MaxConcurrent),
		drainWake: make(chan struct{}, 1), standby: newKeyQueue()}
	defer r.c.mm.reset()
	var wg sync.WaitGroup
	for _, loop := range []func(context.Context){m.watchMoves, m.housekeeping, m.drainLoop, m.standbyLoop} {
		wg.Add(1)
		go func() { defer wg.Done(); loop(ctx) }()
	}
	wg.Wait()
}

// watchMoves drives every unfinished move: those recorded now, then each
// one the watch shows.
func (m *mover) watchMoves(ctx context.Context) {
	m.r.follow(ctx, topo.MovesPrefix, func(ev topo.Event) {
		kv, put := ev.KV, ev.Type == topo.EventPut
		if !put || topo.ParseKey(kv.Key).Kind != topo.KindMove {
			return
		}
		mv := &cpv1.Move{}
		if err := catalog.Decode(kv, mv); err != nil {
			m.r.c.log.Error("undecodable move record; skipping it", "key", kv.Key, "err", err)
			return
		}
		if MoveFinished(mv.GetState()) {
			nudge(m.drainWake)
			return
		}
		m.r.spawn(ctx, "move:"+mv.GetId(), m.sem, func(ctx context.Context) { m.drive(ctx, mv.GetId()) })
	})
}

// housekeeping keeps the move history bounded and the move gauges set.
func (m *mover) housekeeping(ctx context.Context) {
	m.r.every(ctx, m.cfg.HousekeepingInterval, nil, "move housekeeping", m.pruneMoves)
}

// pruneMoves deletes finished moves beyond the history bounds (older than
// HistoryTTL, or beyond the HistoryMax newest) and sets the gauges.
func (m *mover) pruneMoves(ctx context.Context) error {
	all, err := allMoves(ctx, m.r.c.st)
	if err != nil {
		return err
	}
	byState := map[cpv1.MoveState]int{}
	var finished []storedMove
	for _, sm := range all {
		byState[sm.mv.GetState()]++
		if MoveFinished(sm.mv.GetState()) {
			finished = append(finished, sm)
		}
	}
	for s := cpv1.MoveState_MOVE_STATE_PREPARING; s <= cpv1.MoveState_MOVE_STATE_FAILED; s++ {
		m.r.c.mm.byState.WithLabelValues(MoveStateName(s)).Set(float64(byState[s]))
	}
	entries := make([]historyEntry, len(finished))
	for i, sm := range finished {
		entries[i] = historyEntry{key: topo.MoveKey(sm.mv.GetId()), v: sm.v, finished: sm.mv.GetUpdateTime().AsTime()}
	}
	return m.r.pruneHistory(ctx, entries, m.cfg.HistoryMax, m.cfg.HistoryTTL)
}

// nudge wakes a loop waiting on ch without blocking.
func nudge(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}
