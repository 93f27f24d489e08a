package controller

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/cellplane/cellplane/controlplane/catalog"
	"github.com/cellplane/cellplane/controlplane/intent"
	"github.com/cellplane/cellplane/controlplane/topo"
	"github.com/cellplane/cellplane/internal/cperr"
	"github.com/cellplane/cellplane/internal/retry"
	cellv1 "github.com/cellplane/cellplane/proto/cellplane/cell/v1"
	cpv1 "github.com/cellplane/cellplane/proto/cellplane/controlplane/v1"
)

// A live move (moves/<id>), driven by the controller leader; see
// DESIGN.md "Moves and standbys". Every state is recorded before it is
// acted on, every act is idempotent (cell calls carry request ids derived
// from the move id), and every etcd write is one leader-guarded
// transaction conditioned on the move record's version:
//
//	PREPARING    target := STANDBY of the source at epoch E        (load counted at start)
//	COPYING      wait: the target imported an export (bootstrapped)
//	CATCHING_UP  wait: lag <= LagBound → record FENCING + placement.cutting_over
//	FENCING      source := FENCED at E+1 → record fence_tseq
//	CUTTING_OVER wait: target applied fence_tseq; target := OWNER at E+1;
//	             flip the placement (cell, epoch, cutting_over, loads) with the record
//	CLEANING_UP  after the grace period delete the source's copy → DONE
//
// Before FENCING a cancel or a failure undoes the move (the target's copy
// deleted, its load uncounted, the placement's operation released). From
// FENCING on a move only goes forward.

// errPoll: nothing to record yet; poll again after PollInterval.
var errPoll = errors.New("controller: poll again")

// moveRun is what one leader remembers while it drives one move.
type moveRun struct {
	state cpv1.MoveState
	// since is when this leader saw the move enter its state: the waits'
	// timeouts count from it (a new leader gives a wait a fresh timeout).
	since time.Time
	// undoSince is when this leader started undoing the move.
	undoSince time.Time
	// lastProgress is when progress was last recorded.
	lastProgress time.Time
	lastWarn     time.Time
}

// Request ids of a move's cell calls: one per act, derived from the move.
func moveRequestID(id, act string) string { return id + "." + act }

// drive runs one move until it ends, this replica stops leading, or a
// testing knob stops it. Each iteration re-reads the record, so it always
// acts on the recorded state.
func (m *mover) drive(ctx context.Context, id string) {
	c := m.r.c
	run := &moveRun{}
	backoff := c.backoff()
	for ctx.Err() == nil {
		mv, v, err := intent.GetMove(ctx, c.st, id)
		if errors.Is(err, cperr.ErrMoveNotFound) {
			return
		}
		if err == nil {
			if intent.MoveFinished(mv.GetState()) {
				return
			}
			if mv.GetState() != run.state {
				run.state, run.since = mv.GetState(), time.Now()
			}
			if k := c.cfg.TestingKnobs.BeforeMoveStep; k != nil {
				if kerr := k(ctx, mv); kerr != nil {
					c.log.Debug("testing knob stopped the move", "move", id, "state", intent.MoveStateName(mv.GetState()))
					return
				}
			}
			err = m.step(ctx, mv, v, run)
		}
		switch {
		case err == nil || errors.Is(err, errConflict):
			backoff.Reset()
			continue
		case errors.Is(err, errPoll):
			backoff.Reset()
			poll := m.cfg.PollInterval
			if mv.GetState() == cpv1.MoveState_MOVE_STATE_CUTTING_OVER {
				poll = m.cfg.CutoverPollInterval
			}
			if retry.Sleep(ctx, poll) != nil {
				return
			}
			continue
		case errors.Is(err, errNotLeader) || ctx.Err() != nil:
			return
		case errors.Is(err, errKnobStopped):
			c.log.Debug("testing knob stopped the move after a cell call", "move", id, "state", intent.MoveStateName(mv.GetState()))
			return
		}
		c.mm.stepError.WithLabelValues(intent.MoveStateName(mv.GetState())).Inc()
		wait := backoff.Next()
		c.log.Warn("move step failed; retrying", "move", id, "tenant", mv.GetTenant(), "state", intent.MoveStateName(mv.GetState()), "err", err, "retry_in", wait)
		if retry.Sleep(ctx, wait) != nil {
			return
		}
	}
}

// afterCall runs the AfterMoveCall knob (errKnobStopped when it says
// stop).
func (m *mover) afterCall(ctx context.Context, mv *cpv1.Move, call string) error {
	if k := m.r.c.cfg.TestingKnobs.AfterMoveCall; k != nil {
		if err := k(ctx, mv, call); err != nil {
			return fmt.Errorf("%w: %v", errKnobStopped, err)
		}
	}
	return nil
}

// step acts on mv's recorded state and records what follows.
func (m *mover) step(ctx context.Context, mv *cpv1.Move, v topo.Version, run *moveRun) error {
	if intent.MoveBeforeFence(mv.GetState()) {
		if mv.GetCancelRequested() || mv.GetErrorReason() != "" {
			return m.undo(ctx, mv, v, run)
		}
		if limit := m.timeout(mv.GetState()); time.Since(run.since) > limit {
			return m.markFailing(ctx, mv, v, cperr.New(cperr.CellUnavailable, "move %s: %s did not finish %s within %v",
				mv.GetId(), mv.GetTargetCell(), intent.MoveStateName(mv.GetState()), limit))
		}
	}
	switch mv.GetState() {
	case cpv1.MoveState_MOVE_STATE_PREPARING:
		return m.prepare(ctx, mv, v)
	case cpv1.MoveState_MOVE_STATE_COPYING, cpv1.MoveState_MOVE_STATE_CATCHING_UP:
		return m.copyAndCatchUp(ctx, mv, v, run)
	case cpv1.MoveState_MOVE_STATE_FENCING:
		return m.fence(ctx, mv, v, run)
	case cpv1.MoveState_MOVE_STATE_CUTTING_OVER:
		return m.cutOver(ctx, mv, v, run)
	case cpv1.MoveState_MOVE_STATE_CLEANING_UP:
		return m.cleanUp(ctx, mv, v, run)
	}
	return m.markFailing(ctx, mv, v, cperr.New(cperr.Internal, "move %s: unexpected state %s", mv.GetId(), mv.GetState()))
}

func (m *mover) timeout(s cpv1.MoveState) time.Duration {
	switch s {
	case cpv1.MoveState_MOVE_STATE_PREPARING:
		return m.cfg.PrepareTimeout
	case cpv1.MoveState_MOVE_STATE_COPYING:
		return m.cfg.CopyTimeout
	}
	return m.cfg.CatchUpTimeout
}

// prepare checks that the placement is still the one the move started
// from, then makes the target a STANDBY of the source at the placement's
// epoch (without its data: it bootstraps from an export).
func (m *mover) prepare(ctx context.Context, mv *cpv1.Move, v topo.Version) error {
	c := m.r.c
	t, _, err := catalog.GetTenant(ctx, c.st, mv.GetTenant())
	if errors.Is(err, topo.ErrNotFound) {
		return m.markFailing(ctx, mv, v, cperr.New(cperr.TenantNotFound, "tenant %s no longer exists", mv.GetTenant()))
	}
	if err != nil {
		return err
	}
	if t.GetCell() != mv.GetSourceCell() || t.GetEpoch() != mv.GetSourceEpoch() || t.GetOperationId() != mv.GetId() {
		return m.markFailing(ctx, mv, v, cperr.New(cperr.TenantBusy, "the placement of %s changed under the move (cell %s, epoch %d, operation %q)",
			mv.GetTenant(), t.GetCell(), t.GetEpoch(), t.GetOperationId()))
	}
	target, err := catalog.Cell(ctx, c.st, mv.GetTargetCell())
	if err != nil {
		if errors.Is(err, cperr.ErrCellNotFound) {
			return m.markFailing(ctx, mv, v, err)
		}
		return err
	}
	if s := target.Cell.GetState(); s != cpv1.CellState_CELL_STATE_ACTIVE {
		return m.markFailing(ctx, mv, v, cperr.New(cperr.CellNotActive, "target cell %s became %s", mv.GetTargetCell(), strings.TrimPrefix(s.String(), "CELL_STATE_")))
	}
	cctx, cancel := context.WithTimeout(ctx, c.cfg.CellCallTimeout)
	info, err := m.cells.SetTenant(cctx, mv.GetTargetCell(), &cellv1.SetTenantRequest{
		Tenant: mv.GetTenant(), Role: cellv1.Role_ROLE_STANDBY, Epoch: mv.GetSourceEpoch(),
		SourceCell: mv.GetSourceCell(), RequestId: moveRequestID(mv.GetId(), "standby"),
	})
	cancel()
	if permanent(err) {
		return m.markFailing(ctx, mv, v, fmt.Errorf("target %s refused the standby: %w", mv.GetTargetCell(), err))
	}
	if err != nil {
		return fmt.Errorf("target %s: make %s STANDBY: %w", mv.GetTargetCell(), mv.GetTenant(), err)
	}
	if err := m.afterCall(ctx, mv, "standby"); err != nil {
		return err
	}
	next := m.next(mv, cpv1.MoveState_MOVE_STATE_COPYING)
	next.TargetTseq = info.GetTseq()
	return m.record(ctx, next, v)
}

// copyAndCatchUp polls the target: COPYING ends when it has imported the
// export (bootstrapped); CATCHING_UP ends when its lag is under the bound,
// by recording FENCING together with placement.cutting_over (routers hold
// the tenant's requests from then on). A concurrent cancel changes the
// move's version, so exactly one of the two is recorded.
func (m *mover) copyAndCatchUp(ctx context.Context, mv *cpv1.Move, v topo.Version, run *moveRun) error {
	c := m.r.c
	info, repl, err := m.readTarget(ctx, mv)
	if errors.Is(err, cperr.ErrTenantNotFound) {
		return m.markFailing(ctx, mv, v, cperr.New(cperr.CellUnavailable, "target %s lost the tenant's copy", mv.GetTargetCell()))
	}
	if err != nil {
		return err
	}
	if info.GetRole() != cellv1.Role_ROLE_STANDBY || info.GetEpoch() != mv.GetSourceEpoch() || info.GetSourceCell() != mv.GetSourceCell() {
		return m.markFailing(ctx, mv, v, cperr.New(cperr.TenantBusy, "target %s changed the tenant under the move: %s at epoch %d from %q",
			mv.GetTargetCell(), info.GetRole(), info.GetEpoch(), info.GetSourceCell()))
	}
	if mv.GetState() == cpv1.MoveState_MOVE_STATE_COPYING {
		if !info.GetBootstrapped() {
			return m.progress(ctx, mv, v, run, info, repl)
		}
		next := m.next(mv, cpv1.MoveState_MOVE_STATE_CATCHING_UP)
		setProgress(next, info, repl)
		return m.record(ctx, next, v)
	}
	if !caughtUp(info, repl, m.cfg.LagBound) {
		return m.progress(ctx, mv, v, run, info, repl)
	}
	t, tv, err := catalog.GetTenant(ctx, c.st, mv.GetTenant())
	if err != nil {
		return err
	}
	if t.GetOperationId() != mv.GetId() || t.GetCell() != mv.GetSourceCell() || t.GetEpoch() != mv.GetSourceEpoch() {
		return m.markFailing(ctx, mv, v, cperr.New(cperr.TenantBusy, "the placement of %s changed under the move", mv.GetTenant()))
	}
	next := m.next(mv, cpv1.MoveState_MOVE_STATE_FENCING)
	setProgress(next, info, repl)
	next.FenceTime = next.GetUpdateTime()
	hold := proto.Clone(t).(*cpv1.Tenant)
	hold.CuttingOver = true
	hold.UpdateTime = next.GetUpdateTime()
	tkey, mkey := topo.TenantKey(t.GetId()), topo.MoveKey(mv.GetId())
	err = m.r.commit(ctx, []topo.Cond{topo.IfVersion(mkey, v), topo.IfVersion(tkey, tv)},
		[]topo.Op{topo.Put(mkey, catalog.Encode(next)), topo.Put(tkey, catalog.Encode(hold))})
	if err == nil {
		c.log.Info("move fencing the source", "move", mv.GetId(), "tenant", mv.GetTenant(), "cell", mv.GetSourceCell(),
			"lag_events", repl.GetLagEvents())
	}
	return err
}

// caughtUp: the target streams and is at most bound events behind.
func caughtUp(info *cellv1.TenantInfo, repl *cellv1.ReplicationStatus, bound uint64) bool {
	if !info.GetBootstrapped() || repl == nil {
		return false
	}
	switch repl.GetState() {
	case "BOOTSTRAPPING", "RETRYING", "REJECTED": // REJECTED: the target refuses the source's events (H3)
		return false
	}
	return repl.GetLagEvents() <= bound
}

// fence makes the source FENCED at E+1; the answer's tseq is the fence
// tseq the target must apply before it owns the tenant.
func (m *mover) fence(ctx context.Context, mv *cpv1.Move, v topo.Version, run *moveRun) error {
	c := m.r.c
	cctx, cancel := context.WithTimeout(ctx, c.cfg.CellCallTimeout)
	info, err := m.cells.SetTenant(cctx, mv.GetSourceCell(), &cellv1.SetTenantRequest{
		Tenant: mv.GetTenant(), Role: cellv1.Role_ROLE_FENCED, Epoch: mv.GetSourceEpoch() + 1,
		RequestId: moveRequestID(mv.GetId(), "fence"),
	})
	cancel()
	if err == nil && (info.GetRole() != cellv1.Role_ROLE_FENCED || info.GetEpoch() != mv.GetSourceEpoch()+1) {
		err = cperr.New(cperr.Internal, "source %s answered the fence with %s at epoch %d", mv.GetSourceCell(), info.GetRole(), info.GetEpoch())
	}
	if err != nil {
		return m.stuck(ctx, mv, v, run, fmt.Errorf("source %s: fence %s: %w", mv.GetSourceCell(), mv.GetTenant(), err))
	}
	if err := m.afterCall(ctx, mv, "fence"); err != nil {
		return err
	}
	next := m.next(mv, cpv1.MoveState_MOVE_STATE_CUTTING_OVER)
	next.FenceTseq = info.GetTseq()
	next.SourceTseq = info.GetTseq()
	return m.record(ctx, next, v)
}

// cutOver waits until the target applied the fence, makes it OWNER at
// E+1, then flips the placement in one transaction with the record: the
// owner cell and epoch, cutting_over and operation_id cleared, the
// source's load uncounted.
func (m *mover) cutOver(ctx context.Context, mv *cpv1.Move, v topo.Version, run *moveRun) error {
	c := m.r.c
	info, repl, err := m.readTarget(ctx, mv)
	if err != nil {
		return m.stuck(ctx, mv, v, run, fmt.Errorf("target %s: %w", mv.GetTargetCell(), err))
	}
	applied := max(info.GetTseq(), repl.GetAppliedTseq())
	if applied < mv.GetFenceTseq() {
		if time.Since(run.since) > m.cfg.CutoverWarnAfter {
			return m.stuck(ctx, mv, v, run, fmt.Errorf("target %s applied tseq %d of the fence's %d", mv.GetTargetCell(), applied, mv.GetFenceTseq()))
		}
		return m.progress(ctx, mv, v, run, info, repl)
	}
	newEpoch := mv.GetSourceEpoch() + 1
	cctx, cancel := context.WithTimeout(ctx, c.cfg.CellCallTimeout)
	_, err = m.cells.SetTenant(cctx, mv.GetTargetCell(), &cellv1.SetTenantRequest{
		Tenant: mv.GetTenant(), Role: cellv1.Role_ROLE_OWNER, Epoch: newEpoch,
		RequestId: moveRequestID(mv.GetId(), "owner"),
	})
	cancel()
	if err != nil {
		return m.stuck(ctx, mv, v, run, fmt.Errorf("target %s: make %s OWNER: %w", mv.GetTargetCell(), mv.GetTenant(), err))
	}
	if err := m.afterCall(ctx, mv, "owner"); err != nil {
		return err
	}

	t, tv, err := catalog.GetTenant(ctx, c.st, mv.GetTenant())
	if err != nil {
		return err // the tenant cannot be deleted while its operation runs
	}
	now := timestamppb.Now()
	flip := proto.Clone(t).(*cpv1.Tenant)
	flip.Cell, flip.Epoch, flip.CuttingOver, flip.OperationId, flip.UpdateTime = mv.GetTargetCell(), newEpoch, false, "", now
	next := m.next(mv, cpv1.MoveState_MOVE_STATE_CLEANING_UP)
	next.UpdateTime, next.FlipTime = now, now
	next.CleanupAfter = timestamppb.New(now.AsTime().Add(m.cfg.CleanupGrace))
	next.TargetTseq = applied
	tkey, mkey := topo.TenantKey(t.GetId()), topo.MoveKey(mv.GetId())
	conds := []topo.Cond{topo.IfVersion(mkey, v), topo.IfVersion(tkey, tv)}
	ops := []topo.Op{topo.Put(mkey, catalog.Encode(next)), topo.Put(tkey, catalog.Encode(flip))}
	conds, ops, err = m.loadDelta(ctx, mv.GetSourceCell(), -1, conds, ops)
	if err != nil {
		return err
	}
	if err := m.r.commit(ctx, conds, ops); err != nil {
		return err
	}
	pause := now.AsTime().Sub(mv.GetFenceTime().AsTime())
	c.mm.pause.Observe(pause.Seconds())
	c.log.Info("tenant moved", "move", mv.GetId(), "tenant", mv.GetTenant(), "cell", mv.GetTargetCell(), "epoch", newEpoch,
		"tseq", mv.GetFenceTseq(), "write_pause", pause)
	return nil
}

// cleanUp deletes the source's copy once the grace period is over (unless
// the placement uses that cell again: the tenant came back or the cell is
// its standby now), then records DONE.
func (m *mover) cleanUp(ctx context.Context, mv *cpv1.Move, v topo.Version, run *moveRun) error {
	c := m.r.c
	if d := time.Until(mv.GetCleanupAfter().AsTime()); d > 0 {
		return retry.Sleep(ctx, d)
	}
	t, _, err := catalog.GetTenant(ctx, c.st, mv.GetTenant())
	switch {
	case errors.Is(err, topo.ErrNotFound):
		t = nil
	case err != nil:
		return err
	}
	if t != nil && t.GetStandbyCell() != "" {
		// Best effort: the standby follows the new owner before the old
		// one's copy (which it may still stream from) goes.
		if err := m.repairStandby(ctx, t.GetId()); err != nil {
			c.log.Debug("standby not repaired before cleanup", "tenant", t.GetId(), "err", err)
		}
	}
	if t == nil || (t.GetCell() != mv.GetSourceCell() && t.GetStandbyCell() != mv.GetSourceCell()) {
		// Only the copy this move fenced: FENCED at the move's epoch. One
		// that came back (OWNER or STANDBY, or fenced again by a later move)
		// is refused by the cell and kept.
		cctx, cancel := context.WithTimeout(ctx, c.cfg.CellCallTimeout)
		err := m.cells.DeleteTenant(cctx, mv.GetSourceCell(),
			guardedDelete(mv.GetTenant(), moveRequestID(mv.GetId(), "cleanup"), mv.GetSourceEpoch()+1, cellv1.Role_ROLE_FENCED))
		cancel()
		if isDeleteRefused(err) {
			c.log.Warn("move cleanup refused by the source: its copy is no longer the one the move fenced; kept",
				"move", mv.GetId(), "tenant", mv.GetTenant(), "cell", mv.GetSourceCell(), "epoch", mv.GetSourceEpoch()+1, "err", err)
			err = nil
		}
		if err != nil {
			return m.stuck(ctx, mv, v, run, fmt.Errorf("source %s: delete %s's copy: %w", mv.GetSourceCell(), mv.GetTenant(), err))
		}
		if err := m.afterCall(ctx, mv, "cleanup"); err != nil {
			return err
		}
	}
	next := m.next(mv, cpv1.MoveState_MOVE_STATE_DONE)
	if err := m.record(ctx, next, v); err != nil {
		return err
	}
	c.mm.finished.WithLabelValues("done").Inc()
	c.mm.duration.Observe(next.GetUpdateTime().AsTime().Sub(mv.GetCreateTime().AsTime()).Seconds())
	c.log.Info("move done", "move", mv.GetId(), "tenant", mv.GetTenant(), "cell", mv.GetTargetCell())
	return nil
}

// markFailing records why a move before the fence fails; the next
// iteration undoes it. Recording first makes the decision durable: a new
// leader undoes the move too instead of going on with it.
func (m *mover) markFailing(ctx context.Context, mv *cpv1.Move, v topo.Version, cause error) error {
	if !intent.MoveBeforeFence(mv.GetState()) {
		return cause // never undo a fenced move: retried
	}
	next := proto.Clone(mv).(*cpv1.Move)
	next.ErrorReason, next.ErrorMessage = reasonAndMessage(cause)
	next.UpdateTime = timestamppb.Now()
	m.r.c.log.Warn("move failing; undoing it", "move", mv.GetId(), "tenant", mv.GetTenant(), "reason", next.ErrorReason, "message", next.ErrorMessage)
	return m.record(ctx, next, v)
}

// undo ends a cancelled or failing move before its fence: the target's
// copy is deleted (it was only ever a STANDBY), then one transaction
// records CANCELLED or FAILED, uncounts the target's load and releases the
// placement's operation. A target that stays unreachable for
// PrepareTimeout keeps its copy (reported in the move's error).
func (m *mover) undo(ctx context.Context, mv *cpv1.Move, v topo.Version, run *moveRun) error {
	c := m.r.c
	if run.undoSince.IsZero() {
		run.undoSince = time.Now()
	}
	next := proto.Clone(mv).(*cpv1.Move)
	cctx, cancel := context.WithTimeout(ctx, c.cfg.CellCallTimeout)
	// Only the copy this move made: STANDBY at the source's epoch.
	err := m.cells.DeleteTenant(cctx, mv.GetTargetCell(),
		guardedDelete(mv.GetTenant(), moveRequestID(mv.GetId(), "undo"), mv.GetSourceEpoch(), cellv1.Role_ROLE_STANDBY))
	cancel()
	if isDeleteRefused(err) {
		c.log.Warn("move undo refused by the target: its copy is not the one the move made; kept",
			"move", mv.GetId(), "tenant", mv.GetTenant(), "cell", mv.GetTargetCell(), "err", err)
		next.ErrorMessage = appendMsg(next.GetErrorMessage(), fmt.Sprintf("the copy on %s was kept: %v", mv.GetTargetCell(), err))
		err = nil
	}
	if err != nil {
		if time.Since(run.undoSince) < m.cfg.PrepareTimeout {
			return fmt.Errorf("target %s: delete the copy of %s: %w", mv.GetTargetCell(), mv.GetTenant(), err)
		}
		c.log.Warn("move undone without removing the target's copy", "move", mv.GetId(), "tenant", mv.GetTenant(), "cell", mv.GetTargetCell(), "err", err)
		next.ErrorMessage = appendMsg(next.GetErrorMessage(), fmt.Sprintf("the copy on %s could not be removed: %v", mv.GetTargetCell(), err))
	}
	result := "failed"
	next.State = cpv1.MoveState_MOVE_STATE_FAILED
	if mv.GetCancelRequested() {
		result = "cancelled"
		next.State = cpv1.MoveState_MOVE_STATE_CANCELLED
	}
	next.UpdateTime = timestamppb.Now()
	mkey := topo.MoveKey(mv.GetId())
	conds := []topo.Cond{topo.IfVersion(mkey, v)}
	ops := []topo.Op{topo.Put(mkey, catalog.Encode(next))}
	conds, ops, err = m.loadDelta(ctx, mv.GetTargetCell(), -1, conds, ops)
	if err != nil {
		return err
	}
	t, tv, err := catalog.GetTenant(ctx, c.st, mv.GetTenant())
	switch {
	case err == nil && t.GetOperationId() == mv.GetId():
		rel := proto.Clone(t).(*cpv1.Tenant)
		rel.OperationId, rel.CuttingOver, rel.UpdateTime = "", false, next.GetUpdateTime()
		conds = append(conds, topo.IfVersion(topo.TenantKey(t.GetId()), tv))
		ops = append(ops, topo.Put(topo.TenantKey(t.GetId()), catalog.Encode(rel)))
	case err != nil && !errors.Is(err, topo.ErrNotFound):
		return err
	}
	if err := m.r.commit(ctx, conds, ops); err != nil {
		return err
	}
	c.mm.finished.WithLabelValues(result).Inc()
	c.log.Info("move undone", "move", mv.GetId(), "tenant", mv.GetTenant(), "state", intent.MoveStateName(next.GetState()), "reason", next.GetErrorReason())
	return nil
}

// stuck reports a wait or a call after the fence that keeps failing: the
// move cannot be undone any more, so the error goes into the record (at
// most every CutoverWarnAfter, logged at Warn) and the step is retried.
func (m *mover) stuck(ctx context.Context, mv *cpv1.Move, v topo.Version, run *moveRun, cause error) error {
	if time.Since(run.since) < m.cfg.CutoverWarnAfter || time.Since(run.lastWarn) < m.cfg.CutoverWarnAfter {
		return cause
	}
	run.lastWarn = time.Now()
	next := proto.Clone(mv).(*cpv1.Move)
	next.ErrorReason, next.ErrorMessage = reasonAndMessage(cause)
	next.ErrorMessage = fmt.Sprintf("%s for %v: %s", intent.MoveStateName(mv.GetState()), time.Since(run.since).Round(time.Second), next.ErrorMessage)
	next.UpdateTime = timestamppb.Now()
	m.r.c.log.Warn("move stuck after the fence; it only goes forward, retrying", "move", mv.GetId(), "tenant", mv.GetTenant(),
		"state", intent.MoveStateName(mv.GetState()), "err", cause)
	if err := m.record(ctx, next, v); err != nil {
		return err
	}
	return cause
}

// progress records the target's progress (at most once a second, and only
// when it changed), then asks to poll again.
func (m *mover) progress(ctx context.Context, mv *cpv1.Move, v topo.Version, run *moveRun, info *cellv1.TenantInfo, repl *cellv1.ReplicationStatus) error {
	next := proto.Clone(mv).(*cpv1.Move)
	setProgress(next, info, repl)
	if proto.Equal(next, mv) || time.Since(run.lastProgress) < time.Second {
		return errPoll
	}
	run.lastProgress = time.Now()
	next.UpdateTime = timestamppb.Now()
	if err := m.record(ctx, next, v); err != nil {
		return err
	}
	return errPoll
}

func setProgress(mv *cpv1.Move, info *cellv1.TenantInfo, repl *cellv1.ReplicationStatus) {
	mv.TargetTseq = max(info.GetTseq(), repl.GetAppliedTseq())
	if repl.GetSourceTseq() > 0 {
		mv.SourceTseq = repl.GetSourceTseq()
	}
	mv.CopiedBytes = info.GetUsage().GetBytes()
}

// readTarget reads the tenant on the target's leader.
func (m *mover) readTarget(ctx context.Context, mv *cpv1.Move) (*cellv1.TenantInfo, *cellv1.ReplicationStatus, error) {
	cctx, cancel := context.WithTimeout(ctx, m.r.c.cfg.CellCallTimeout)
	defer cancel()
	return m.cells.GetTenant(cctx, mv.GetTargetCell(), mv.GetTenant())
}

// next returns mv in state s (stamped now), without the error a stuck
// step may have reported in the state it leaves.
func (m *mover) next(mv *cpv1.Move, s cpv1.MoveState) *cpv1.Move {
	next := proto.Clone(mv).(*cpv1.Move)
	next.State = s
	next.UpdateTime = timestamppb.Now()
	next.ErrorReason, next.ErrorMessage = "", ""
	return next
}

// record writes mv, guarded by the leadership and the version read.
func (m *mover) record(ctx context.Context, mv *cpv1.Move, v topo.Version) error {
	key := topo.MoveKey(mv.GetId())
	return m.r.commit(ctx, []topo.Cond{topo.IfVersion(key, v)}, []topo.Op{topo.Put(key, catalog.Encode(mv))})
}

// loadDelta adds to conds/ops the change of cell's tenant count by delta
// (never below zero) under a version condition; a cell that no longer
// exists has no count to change.
func (m *mover) loadDelta(ctx context.Context, cell string, delta int, conds []topo.Cond, ops []topo.Op) ([]topo.Cond, []topo.Op, error) {
	return loadDelta(ctx, m.r.c.st, cell, delta, conds, ops)
}

func loadDelta(ctx context.Context, st topo.Store, cell string, delta int, conds []topo.Cond, ops []topo.Op) ([]topo.Cond, []topo.Op, error) {
	ci, err := catalog.Cell(ctx, st, cell)
	if errors.Is(err, cperr.ErrCellNotFound) {
		return conds, ops, nil
	}
	if err != nil {
		return nil, nil, err
	}
	load := proto.Clone(ci.Load).(*cpv1.CellLoad)
	switch {
	case delta > 0:
		load.Tenants += uint64(delta)
	case uint64(-delta) > load.Tenants:
		load.Tenants = 0
	default:
		load.Tenants -= uint64(-delta)
	}
	key := topo.CellLoadKey(cell)
	return append(conds, topo.IfVersion(key, ci.LoadVersion)), append(ops, topo.Put(key, catalog.Encode(load))), nil
}

// reasonAndMessage splits an error into the reason and message a record
// keeps (INTERNAL with the error text for anything else: records are read
// by operators only).
func reasonAndMessage(err error) (string, string) {
	var ce *cperr.Error
	if errors.As(err, &ce) {
		msg := ce.Message
		if s := err.Error(); s != ce.Error() {
			msg = s // wrapped: keep the context
		}
		return string(ce.Reason), msg
	}
	return string(cperr.Internal), err.Error()
}

func appendMsg(a, b string) string {
	if a == "" {
		return b
	}
	return a + "; " + b
}

func isConflict(err error) bool { return errors.Is(err, errConflict) }
