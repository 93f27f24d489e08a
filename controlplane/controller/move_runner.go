package controller

import (
	"context"
	"sync"

	"github.com/cellplane/cellplane/controlplane/catalog"
	"github.com/cellplane/cellplane/controlplane/intent"
	"github.com/cellplane/cellplane/controlplane/topo"
	cpv1 "github.com/cellplane/cellplane/proto/cellplane/controlplane/v1"
)

// mover is one leadership term's driver of moves, drains and standbys. It
// shares the runner's leadership guard (runner.commit), its goroutine
// accounting and its set of running items.
type mover struct {
	r     *runner
	cells Cells
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
	cfg := r.c.cfg.Moves
	m := &mover{r: r, cells: r.c.cells, cfg: cfg, sem: make(chan struct{}, cfg.MaxConcurrent),
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
		rec, ok, err := catalog.MoveEvent(ev)
		switch {
		case !ok:
			return
		case err != nil:
			m.r.c.log.Error("undecodable move record; skipping it", "key", ev.KV.Key, "err", err)
			return
		}
		mv := rec.Value
		if intent.MoveFinished(mv.GetState()) {
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
	all, _, err := catalog.ListMoves(ctx, m.r.c.st)
	if err != nil {
		return err
	}
	byState := map[cpv1.MoveState]int{}
	var entries []historyEntry
	for _, rec := range all {
		mv := rec.Value
		byState[mv.GetState()]++
		if intent.MoveFinished(mv.GetState()) {
			entries = append(entries, historyEntry{key: topo.MoveKey(mv.GetId()), v: rec.Version, finished: mv.GetUpdateTime().AsTime()})
		}
	}
	for s := cpv1.MoveState_MOVE_STATE_PREPARING; s <= cpv1.MoveState_MOVE_STATE_FAILED; s++ {
		m.r.c.mm.byState.WithLabelValues(intent.MoveStateName(s)).Set(float64(byState[s]))
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
