package bench

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cellplane/cellplane/controlplane/intent"
	"github.com/cellplane/cellplane/internal/cperr"
	"github.com/cellplane/cellplane/internal/pki"
	"github.com/cellplane/cellplane/internal/retry"
	"github.com/cellplane/cellplane/internal/rpcerr"
	"github.com/cellplane/cellplane/platform"
	cellv1 "github.com/cellplane/cellplane/proto/cellplane/cell/v1"
	contextv1 "github.com/cellplane/cellplane/proto/cellplane/context/v1"
	cpv1 "github.com/cellplane/cellplane/proto/cellplane/controlplane/v1"
)

// fillEntryBytes is the size of the entries that fill a tenant.
const fillEntryBytes = 256 << 10

// fillChunks returns how many entries of at most fillEntryBytes make
// size bytes, and their size.
func fillChunks(size int64) (n int, entry int) {
	entry = int(min(size, fillEntryBytes))
	if entry <= 0 {
		return 0, 0
	}
	return int((size + int64(entry) - 1) / int64(entry)), entry
}

// fillTenant appends size bytes of entries to tenant through cs, 4 at a
// time.
func fillTenant(ctx context.Context, cs contextv1.ContextServiceClient, tenant string, size int64) error {
	n, entry := fillChunks(size)
	if n == 0 {
		return nil
	}
	const workers = 4
	ids, err := benchContexts(ctx, cs, tenant, "fill", workers)
	if err != nil {
		return err
	}
	data := payload(entry)
	var (
		next     atomic.Int64
		mu       sync.Mutex
		firstErr error
		wg       sync.WaitGroup
	)
	for w := range workers {
		wg.Go(func() {
			for {
				i := next.Add(1) - 1
				if i >= int64(n) {
					return
				}
				fctx, cancel := context.WithTimeout(asTenant(ctx, tenant), time.Minute)
				err := poll(fctx, func() error {
					_, err := cs.Append(fctx, &contextv1.AppendRequest{
						ContextId: ids[w],
						Entries:   []*contextv1.Entry{{Role: "user", Content: &contextv1.Entry_Data{Data: data}}},
						RequestId: fmt.Sprintf("fill-%s-%d", tenant, i),
					})
					return err
				})
				cancel()
				if err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = fmt.Errorf("bench: fill %s: %w", tenant, err)
					}
					mu.Unlock()
					return
				}
			}
		})
	}
	wg.Wait()
	return firstErr
}

// tenantBytes is the tenant's stored size on its owner cell's leader.
func tenantBytes(ctx context.Context, pf *platform.Platform, tenant string) (uint64, error) {
	resp, err := pf.Admin().GetTenant(ctx, &cpv1.GetTenantRequest{Id: tenant})
	if err != nil {
		return 0, rpcerr.FromStatus(err)
	}
	c := pf.Cell(resp.GetTenant().GetCell())
	if c == nil {
		return 0, fmt.Errorf("bench: tenant %s is on unknown cell %q", tenant, resp.GetTenant().GetCell())
	}
	conn, closeConn, err := leaderConnAs(ctx, pf, c, pki.KindControlPlane)
	if err != nil {
		return 0, err
	}
	defer closeConn()
	info, err := cellv1.NewCellServiceClient(conn).GetTenant(ctx, &cellv1.GetTenantRequest{Tenant: tenant})
	if err != nil {
		return 0, rpcerr.FromStatus(err)
	}
	return info.GetTenant().GetUsage().GetBytes(), nil
}

// moveWindow is one move's record and when the bench saw it start and
// end; its write figures are computed once every write has ended.
type moveWindow struct {
	mv          *cpv1.Move
	start, done time.Time
}

// runMoveSet creates tenant on the first cell, fills it to size, writes
// to it steadily through the router and moves it moves times between the
// two cells. With baseline set, it first measures the writes with no move
// into it.
func runMoveSet(ctx context.Context, opts MoveOptions, pf *platform.Platform, tenant string, size int64, moves int, baseline *Result, p progress) (*MoveSet, error) {
	set := &MoveSet{Tenant: tenant}
	if _, err := createTenant(ctx, pf, tenant, moveRegion, moveCellA, ""); err != nil {
		return nil, err
	}
	if err := waitRouted(ctx, pf, tenant); err != nil {
		return nil, err
	}
	cs := routerData(pf)
	p.printf("filling %s with %s", tenant, mib(uint64(size)))
	t0 := time.Now()
	if err := fillTenant(ctx, cs, tenant, size); err != nil {
		return nil, err
	}
	set.FillSec = time.Since(t0).Seconds()
	var err error
	if set.Bytes, err = tenantBytes(ctx, pf, tenant); err != nil {
		return nil, err
	}
	p.printf("  %s holds %s (filled in %.1f s)", tenant, mib(set.Bytes), set.FillSec)

	ids, err := benchContexts(ctx, cs, tenant, "steady", 8)
	if err != nil {
		return nil, err
	}
	w := newSteadyWriter(cs, tenant, ids, opts.Rate, opts.EntrySize, writeTimeout)
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	w.start(wctx)
	defer w.halt()
	if err := retry.Sleep(ctx, warmupFor(opts.Baseline)); err != nil {
		return nil, err
	}
	if baseline != nil {
		from := time.Now()
		if err := retry.Sleep(ctx, opts.Baseline); err != nil {
			return nil, err
		}
		*baseline = windowStats(tenant+" writes, no move", w.records(), from, time.Now(), opts.Rate)
		p.result(*baseline)
	}

	setStart := time.Now()
	var windows []moveWindow
	for i := 1; i <= moves; i++ {
		mw, err := moveOnce(ctx, pf, tenant)
		if err != nil {
			return nil, err
		}
		windows = append(windows, mw)
		p.printf("  %s move %d %s→%s: %s, fence→flip %.0f ms, flip after %.0f ms",
			tenant, i, mw.mv.GetSourceCell(), mw.mv.GetTargetCell(), intent.MoveStateName(mw.mv.GetState()),
			fenceToFlip(mw.mv), ms(mw.mv.GetFlipTime().AsTime().Sub(mw.start)))
	}
	// Writes in flight end (or fail) before the figures are taken.
	if err := retry.Sleep(ctx, time.Second); err != nil {
		return nil, err
	}
	setEnd := time.Now()
	w.halt()
	recs := w.records()
	set.Writes = windowStats(tenant+" writes, moves", recs, setStart, setEnd, opts.Rate)
	p.result(set.Writes)
	var pauses, flips []time.Duration
	for _, mw := range windows {
		m := moveFigures(mw, recs)
		set.Moves = append(set.Moves, m)
		set.FailedWrites += m.FailedWrites
		if m.State != intent.MoveStateName(cpv1.MoveState_MOVE_STATE_DONE) {
			set.FailedMoves++
			continue
		}
		pauses = append(pauses, time.Duration(m.PauseMs*float64(time.Millisecond)))
		flips = append(flips, time.Duration(m.FenceToFlipMs*float64(time.Millisecond)))
	}
	set.Pause, set.FenceToFlip = summarize(pauses), summarize(flips)
	p.printf("  %s: pause p50 %.0f ms, p99 %.0f ms; fence→flip p99 %.0f ms; %d failed writes, %d failed moves",
		tenant, set.Pause.P50, set.Pause.P99, set.FenceToFlip.P99, set.FailedWrites, set.FailedMoves)
	return set, nil
}

// moveOnce moves tenant to the cell that does not own it and waits for
// the move to end.
func moveOnce(ctx context.Context, pf *platform.Platform, tenant string) (moveWindow, error) {
	tr, err := pf.Admin().GetTenant(ctx, &cpv1.GetTenantRequest{Id: tenant})
	if err != nil {
		return moveWindow{}, fmt.Errorf("bench: get tenant %s: %w", tenant, rpcerr.FromStatus(err))
	}
	target := moveCellB
	if tr.GetTenant().GetCell() == moveCellB {
		target = moveCellA
	}
	mw := moveWindow{start: time.Now()}
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var id string
	err = poll(sctx, func() error {
		resp, err := pf.Admin().StartMove(sctx, &cpv1.StartMoveRequest{Tenant: tenant, TargetCell: target})
		if err != nil {
			err = rpcerr.FromStatus(err)
			if errors.Is(err, cperr.ErrTenantBusy) {
				return err // the previous operation is still being released
			}
			return retry.Permanent(err)
		}
		id = resp.GetMove().GetId()
		return nil
	})
	if err != nil {
		return mw, fmt.Errorf("bench: move %s to %s: %w", tenant, target, err)
	}
	wctx, wcancel := context.WithTimeout(ctx, 10*time.Minute)
	defer wcancel()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		resp, err := pf.Admin().GetMove(wctx, &cpv1.GetMoveRequest{Id: id})
		if err == nil && intent.MoveFinished(resp.GetMove().GetState()) {
			mw.mv, mw.done = resp.GetMove(), time.Now()
			return mw, nil
		}
		select {
		case <-wctx.Done():
			return mw, fmt.Errorf("bench: move %s did not end: %w (last: %v)", id, wctx.Err(), err)
		case <-tick.C:
		}
	}
}

// fenceToFlip is the move record's fence-to-flip time in ms (0 when it
// has none).
func fenceToFlip(mv *cpv1.Move) float64 {
	if mv.GetFenceTime() == nil || mv.GetFlipTime() == nil {
		return 0
	}
	return ms(mv.GetFlipTime().AsTime().Sub(mv.GetFenceTime().AsTime()))
}

// moveFigures computes one move's figures from the tenant's writes.
func moveFigures(mw moveWindow, recs []writeRec) Move {
	mv := mw.mv
	m := Move{
		ID: mv.GetId(), From: mv.GetSourceCell(), To: mv.GetTargetCell(),
		State: intent.MoveStateName(mv.GetState()), ErrorMsg: mv.GetErrorMessage(),
		FenceToFlipMs: fenceToFlip(mv), TotalMs: ms(mw.done.Sub(mw.start)), CopiedBytes: mv.GetCopiedBytes(),
	}
	if ft := mv.GetFlipTime(); ft != nil {
		m.ToFlipMs = ms(ft.AsTime().Sub(mw.start))
	}
	gap, _ := maxAckGap(recs, mw.start, mw.done)
	m.PauseMs = ms(gap)
	if mv.GetFenceTime() != nil && mv.GetFlipTime() != nil {
		cg, _ := maxAckGap(recs, mv.GetFenceTime().AsTime(), mv.GetFlipTime().AsTime().Add(time.Second))
		m.CutoverGapMs = ms(cg)
	}
	m.FailedWrites = windowStats("", recs, mw.start, mw.done, 0).Errors
	return m
}

// otherLoad writes to a tenant of the first cell that never moves, at
// opts.OtherRate; stop ends it and returns its writes' figures.
func otherLoad(ctx context.Context, opts MoveOptions, pf *platform.Platform) (stop func() Result, err error) {
	if _, err := createTenant(ctx, pf, moveOtherT, moveRegion, moveCellA, ""); err != nil {
		return nil, err
	}
	if err := waitRouted(ctx, pf, moveOtherT); err != nil {
		return nil, err
	}
	cs := routerData(pf)
	ids, err := benchContexts(ctx, cs, moveOtherT, "other", 8)
	if err != nil {
		return nil, err
	}
	w := newSteadyWriter(cs, moveOtherT, ids, opts.OtherRate, opts.EntrySize, writeTimeout)
	wctx, cancel := context.WithCancel(ctx)
	w.start(wctx)
	from := time.Now()
	var once sync.Once
	var r Result
	return func() Result {
		once.Do(func() {
			to := time.Now()
			w.halt()
			cancel()
			r = windowStats(moveOtherT+" writes (not moved)", w.records(), from, to, opts.OtherRate)
		})
		return r
	}, nil
}
