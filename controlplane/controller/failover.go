package controller

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/cellplane/cellplane/controlplane/catalog"
	"github.com/cellplane/cellplane/controlplane/intent"
	"github.com/cellplane/cellplane/controlplane/topo"
	"github.com/cellplane/cellplane/internal/cperr"
	"github.com/cellplane/cellplane/internal/retry"
	cellv1 "github.com/cellplane/cellplane/proto/cellplane/cell/v1"
	cpv1 "github.com/cellplane/cellplane/proto/cellplane/controlplane/v1"
)

// Failovers (failovers/<id>) hand a tenant from its owner cell to its
// standby cell. Like every controller workflow, each is a durable state
// machine driven by the leader: every step is recorded by a transaction
// guarded by the leader's election key (runner.commit) before the next is
// acted on, every cell call is idempotent (request ids derived from the
// tenant and the new epoch, shared by a switchover and a promotion that
// supersedes it), and a new leader resumes each recorded failover.
//
// Switchover (planned, RPO 0), E the placement's epoch:
//
//	FENCING    the standby is checked (STANDBY and bootstrapped, else
//	           NO_STANDBY); the placement is marked cutting_over (routers
//	           hold the tenant's requests); the owner becomes FENCED at E+1
//	           (it refuses writes from then on); its fence tseq F is recorded
//	           (old_owner_tseq = F − 1, the last write it acknowledged)
//	PROMOTING  once the standby applied F, it becomes OWNER at E+1; one
//	           transaction flips the placement (cell = the standby,
//	           standby_cell = the old owner, epoch E+1, cutting_over off) and
//	           records DONE. The standby reconciler then makes the old owner
//	           a STANDBY of the new one.
//
// Emergency promotion (the owner is lost):
//
//	FENCING        the standby is checked; one transaction bumps the
//	               placement to E+1 (cutting_over), writes the fence
//	               cells/<old>/fence/<t> and rewrites the old cell's record
//	               (so that no authority publication that missed the fence
//	               can succeed: cells/registry/authority.go)
//	WAITING_LEASE  until the old cell reports the fence applied, or its
//	               authority key is gone (its lease expired in etcd, so its
//	               leader stopped acknowledging a drift margin earlier) and
//	               then LeaseMargin more (lease_wait_until)
//	PROMOTING      the standby becomes OWNER at E+1 with what it has
//	               (promoted_tseq = its last applied tseq); the placement
//	               flips (cell = the standby, no standby: the old owner may
//	               hold lost writes); time_to_promote recorded
//	AWAITING_OLD_OWNER  until the old cell, back, applied the fence and
//	               reported its last tseq: lost_events = old_owner_tseq −
//	               promoted_tseq; DONE, and the fence key is deleted.

// failoverer is one leadership term's driver of failovers and of the
// automatic promotion policy.
type failoverer struct {
	r     *runner
	cells Cells
	cfg   FailoverConfig
	sem   chan struct{} // steps run at once

	mu   sync.Mutex
	wake chan struct{} // closed (and replaced) when an authority or fence key changes
}

// leadFailovers runs, while this replica leads, the failover driver, the
// watch on the cells' authority and fence keys that wakes waiting
// failovers, and the automatic promotion policy.
func (r *runner) leadFailovers(ctx context.Context) {
	f := &failoverer{r: r, cells: r.c.cells, cfg: r.c.cfg.Failover, sem: make(chan struct{}, r.c.cfg.Failover.MaxConcurrent), wake: make(chan struct{})}
	var wg sync.WaitGroup
	for _, loop := range []func(context.Context){f.watchFailovers, f.watchCells, f.autoPromote, f.housekeeping} {
		wg.Add(1)
		go func() { defer wg.Done(); loop(ctx) }()
	}
	wg.Wait()
}

// watchFailovers drives every unfinished failover: those recorded now,
// then each one the watch shows.
func (f *failoverer) watchFailovers(ctx context.Context) {
	f.r.follow(ctx, topo.FailoversPrefix, func(ev topo.Event) {
		rec, ok, err := catalog.FailoverEvent(ev)
		switch {
		case !ok:
			return
		case err != nil:
			f.r.c.log.Error("undecodable failover record; skipping it", "key", ev.KV.Key, "err", err)
			return
		}
		if !intent.FailoverFinished(rec.Value.GetState()) {
			f.spawn(ctx, rec.Value.GetId())
		}
	})
}

// watchCells wakes waiting failovers when a cell's authority key goes (a
// lease expired) or a fence changes (a report). Authority renewals (puts,
// about one a second per cell) do not wake anything.
func (f *failoverer) watchCells(ctx context.Context) {
	f.r.follow(ctx, topo.CellsPrefix, func(ev topo.Event) {
		e, _ := catalog.DecodeEvent(ev) // only the kind matters: a corrupt value wakes too
		switch k := e.Key.Kind; {
		case k == topo.KindCellAuthority && ev.Type == topo.EventDelete, k == topo.KindCellFence && ev.Type == topo.EventPut:
			f.mu.Lock()
			close(f.wake)
			f.wake = make(chan struct{})
			f.mu.Unlock()
		}
	})
}

func (f *failoverer) wakeChan() <-chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.wake
}

// spawn drives failover id in a goroutine unless one runs already.
func (f *failoverer) spawn(ctx context.Context, id string) {
	f.r.spawn(ctx, "failover:"+id, nil, func(ctx context.Context) { f.drive(ctx, id) })
}

// drive runs failover id step by step until it finishes or this replica
// stops leading. Each pass re-reads the record and acts on its recorded
// state; a step that waits (for a lease, a report, the standby catching
// up) holds no slot while it waits.
func (f *failoverer) drive(ctx context.Context, id string) {
	c := f.r.c
	backoff := c.backoff()
	for ctx.Err() == nil {
		fo, v, err := intent.GetFailover(ctx, c.st, id)
		if errors.Is(err, cperr.ErrFailoverNotFound) {
			return
		}
		var pause time.Duration
		if err == nil {
			if intent.FailoverFinished(fo.GetState()) {
				return
			}
			if k := c.cfg.TestingKnobs.BeforeFailoverStep; k != nil {
				if kerr := k(ctx, fo); kerr != nil {
					c.log.Debug("testing knob stopped the failover", "failover", id, "state", intent.FailoverStateName(fo.GetState()))
					return
				}
			}
			wake := f.wakeChan() // before the step: a change during it wakes the wait
			select {
			case f.sem <- struct{}{}:
			case <-ctx.Done():
				return
			}
			pause, err = f.step(ctx, fo, v)
			<-f.sem
			if err == nil && pause > 0 {
				t := time.NewTimer(pause)
				select {
				case <-ctx.Done():
				case <-wake:
				case <-t.C:
				}
				t.Stop()
				continue
			}
		}
		switch {
		case err == nil || errors.Is(err, errConflict):
			backoff.Reset()
			continue
		case errors.Is(err, errNotLeader) || ctx.Err() != nil:
			return
		case errors.Is(err, errKnobStopped):
			c.log.Debug("testing knob stopped the failover after a cell call", "failover", id, "state", intent.FailoverStateName(fo.GetState()))
			return
		}
		wait := backoff.Next()
		c.log.Warn("failover step failed; retrying", "failover", id, "tenant", fo.GetTenant(), "state", intent.FailoverStateName(fo.GetState()), "err", err, "retry_in", wait)
		if retry.Sleep(ctx, wait) != nil {
			return
		}
	}
}

// step acts on fo's recorded state. A positive pause means "nothing to do
// until something changes or the pause passes".
func (f *failoverer) step(ctx context.Context, fo *cpv1.Failover, v topo.Version) (time.Duration, error) {
	promote := fo.GetKind() == cpv1.FailoverKind_FAILOVER_KIND_PROMOTE
	switch s := fo.GetState(); {
	case s == cpv1.FailoverState_FAILOVER_STATE_FENCING && fo.GetNewEpoch() == 0:
		return 0, f.begin(ctx, fo, v)
	case s == cpv1.FailoverState_FAILOVER_STATE_FENCING && !promote:
		return 0, f.fenceOwner(ctx, fo, v)
	case s == cpv1.FailoverState_FAILOVER_STATE_WAITING_LEASE && promote:
		return f.waitLease(ctx, fo, v)
	case s == cpv1.FailoverState_FAILOVER_STATE_PROMOTING:
		return f.promote(ctx, fo, v)
	case s == cpv1.FailoverState_FAILOVER_STATE_AWAITING_OLD_OWNER && promote:
		return f.awaitOldOwner(ctx, fo, v)
	}
	return 0, f.fail(ctx, fo, v, false, cperr.New(cperr.Internal, "failover %s: unexpected state %s for a %s", fo.GetId(), intent.FailoverStateName(fo.GetState()), intent.FailoverKindName(fo.GetKind())))
}

// errKnobStopped: a testing knob stopped the leader mid-step.
var errKnobStopped = errors.New("controller: stopped by a testing knob")

// afterCall runs the AfterFailoverCall knob (errKnobStopped when it says
// stop).
func (f *failoverer) afterCall(ctx context.Context, fo *cpv1.Failover, call string) error {
	if k := f.r.c.cfg.TestingKnobs.AfterFailoverCall; k != nil {
		if err := k(ctx, fo, call); err != nil {
			return fmt.Errorf("%w: %v", errKnobStopped, err)
		}
	}
	return nil
}

// failoverRequestID names a cell call of the failover to epoch of tenant;
// a switchover and the promotion that supersedes it share them.
func failoverRequestID(tenant string, epoch uint64, act string) string {
	return fmt.Sprintf("failover.%s.e%d.%s", tenant, epoch, act)
}

// claimed reads the placement and checks that the failover still holds
// it (operation_id) at the expected epoch.
func (f *failoverer) claimed(ctx context.Context, fo *cpv1.Failover, epoch uint64) (*cpv1.Tenant, topo.Version, error) {
	t, tv, err := catalog.GetTenant(ctx, f.r.c.st, fo.GetTenant())
	if errors.Is(err, topo.ErrNotFound) {
		return nil, 0, cperr.New(cperr.TenantNotFound, "tenant %s was deleted", fo.GetTenant())
	}
	if err != nil {
		return nil, 0, err
	}
	if t.GetOperationId() != fo.GetId() || t.GetEpoch() != epoch || t.GetCell() != fo.GetFromCell() {
		return nil, 0, cperr.New(cperr.TenantBusy, "tenant %s changed under failover %s (operation %q, cell %s, epoch %d)",
			fo.GetTenant(), fo.GetId(), t.GetOperationId(), t.GetCell(), t.GetEpoch())
	}
	return t, tv, nil
}

// begin is the first step of both kinds: check the standby, then mark the
// placement (switchover: cutting_over) or fence the old owner in etcd
// (promotion: epoch + 1, the fence key, the cell record rewritten).
func (f *failoverer) begin(ctx context.Context, fo *cpv1.Failover, v topo.Version) error {
	c := f.r.c
	t, tv, err := f.claimed(ctx, fo, fo.GetOldEpoch())
	if err != nil {
		if errors.Is(err, cperr.ErrTenantNotFound) || errors.Is(err, cperr.ErrTenantBusy) {
			return f.fail(ctx, fo, v, false, err)
		}
		return err
	}
	cctx, cancel := context.WithTimeout(ctx, c.cfg.CellCallTimeout)
	info, _, err := f.cells.GetTenant(cctx, fo.GetToCell(), fo.GetTenant())
	cancel()
	switch {
	case errors.Is(err, cperr.ErrTenantNotFound), errors.Is(err, cperr.ErrCellNotFound):
		return f.fail(ctx, fo, v, true, cperr.New(cperr.NoStandby, "standby cell %s does not have tenant %s", fo.GetToCell(), fo.GetTenant()))
	case err != nil:
		return fmt.Errorf("standby cell %s: %w", fo.GetToCell(), err)
	case info.GetRole() != cellv1.Role_ROLE_STANDBY || !info.GetBootstrapped():
		return f.fail(ctx, fo, v, true, cperr.New(cperr.NoStandby, "tenant %s on standby cell %s is %s, bootstrapped=%t: it needs a bootstrapped STANDBY (wait for its copy, see 'cellctl tenant get %s')",
			fo.GetTenant(), fo.GetToCell(), strings.TrimPrefix(info.GetRole().String(), "ROLE_"), info.GetBootstrapped(), fo.GetTenant()))
	case info.GetSourceCell() != "" && info.GetSourceCell() != fo.GetFromCell():
		return f.fail(ctx, fo, v, true, cperr.New(cperr.NoStandby, "tenant %s on standby cell %s replicates from cell %s, not from its owner %s (being re-pointed? try again)",
			fo.GetTenant(), fo.GetToCell(), info.GetSourceCell(), fo.GetFromCell()))
	}

	E := fo.GetOldEpoch()
	next := proto.Clone(fo).(*cpv1.Failover)
	next.NewEpoch = E + 1
	pub := proto.Clone(t).(*cpv1.Tenant)
	pub.CuttingOver = true
	pub.UpdateTime = timestamppb.Now()
	tkey := topo.TenantKey(t.GetId())
	conds := []topo.Cond{topo.IfVersion(tkey, tv)}
	if fo.GetKind() != cpv1.FailoverKind_FAILOVER_KIND_PROMOTE {
		return f.record(ctx, next, v, conds, []topo.Op{topo.Put(tkey, catalog.Encode(pub))})
	}
	// Emergency: the epoch moves in etcd now (routers and the standby
	// follow it; the old owner's writes at E are from here on the ones
	// the promotion may lose), and the old cell is fenced.
	pub.Epoch = E + 1
	next.State = cpv1.FailoverState_FAILOVER_STATE_WAITING_LEASE
	ops := []topo.Op{topo.Put(tkey, catalog.Encode(pub)),
		topo.Put(topo.CellFenceKey(fo.GetFromCell(), t.GetId()), catalog.Encode(&cpv1.CellFence{Tenant: t.GetId(), Epoch: E + 1, FailoverId: fo.GetId()}))}
	ckv, err := c.st.Get(ctx, topo.CellKey(fo.GetFromCell()))
	switch {
	case err == nil:
		// Rewriting the record bumps its version: the cell's authority
		// publications are conditioned on it, so none that read the cell
		// before the fence existed can succeed after it.
		conds = append(conds, topo.IfVersion(ckv.Key, ckv.Version))
		ops = append(ops, topo.Put(ckv.Key, ckv.Value))
	case !errors.Is(err, topo.ErrNotFound):
		return err
	}
	err = f.record(ctx, next, v, conds, ops)
	if err == nil {
		c.log.Warn("emergency promotion: old owner fenced in etcd; waiting for its authority lease",
			"failover", fo.GetId(), "tenant", fo.GetTenant(), "cell", fo.GetFromCell(), "standby", fo.GetToCell(), "epoch", E+1, "trigger", fo.GetTrigger())
	}
	return err
}

// fenceOwner (switchover) makes the owner FENCED at E+1 and records its
// fence tseq.
func (f *failoverer) fenceOwner(ctx context.Context, fo *cpv1.Failover, v topo.Version) error {
	c := f.r.c
	if _, _, err := f.claimed(ctx, fo, fo.GetOldEpoch()); err != nil {
		return err
	}
	cctx, cancel := context.WithTimeout(ctx, c.cfg.CellCallTimeout)
	info, err := f.cells.SetTenant(cctx, fo.GetFromCell(), &cellv1.SetTenantRequest{
		Tenant: fo.GetTenant(), Role: cellv1.Role_ROLE_FENCED, Epoch: fo.GetNewEpoch(),
		RequestId: failoverRequestID(fo.GetTenant(), fo.GetNewEpoch(), "fence"),
	})
	cancel()
	if err != nil {
		// Retried until the owner answers: a planned switchover needs it.
		// If it died, an emergency promotion supersedes this one.
		return fmt.Errorf("fence the owner %s: %w", fo.GetFromCell(), err)
	}
	if info.GetTseq() == 0 {
		return fmt.Errorf("owner %s answered the fence of %s without a tseq", fo.GetFromCell(), fo.GetTenant())
	}
	if err := f.afterCall(ctx, fo, "fence"); err != nil {
		return err
	}
	next := proto.Clone(fo).(*cpv1.Failover)
	next.State = cpv1.FailoverState_FAILOVER_STATE_PROMOTING
	next.OldOwnerTseq, next.OldOwnerReported = info.GetTseq()-1, true
	return f.record(ctx, next, v, nil, nil)
}

// waitLease (emergency) waits until the old owner reported the fence, or
// its authority key is gone and LeaseMargin passed.
func (f *failoverer) waitLease(ctx context.Context, fo *cpv1.Failover, v topo.Version) (time.Duration, error) {
	c := f.r.c
	next := proto.Clone(fo).(*cpv1.Failover)
	rep, err := f.fenceReport(ctx, fo)
	if err != nil {
		return 0, err
	}
	if rep != nil {
		next.OldOwnerTseq, next.OldOwnerReported = rep.GetTseq(), true
		next.State = cpv1.FailoverState_FAILOVER_STATE_PROMOTING
		c.log.Info("old owner applied the fence: promoting", "failover", fo.GetId(), "tenant", fo.GetTenant(), "cell", fo.GetFromCell(), "tseq", rep.GetTseq())
		return 0, f.record(ctx, next, v, nil, nil)
	}
	_, err = c.st.Get(ctx, topo.CellAuthorityKey(fo.GetFromCell()))
	switch {
	case err == nil:
		// The old owner's leader still holds its authority (or a new one,
		// published after it applied the fence, holds it: its report is
		// on the way). Wait for a change.
		return f.cfg.PollInterval * 5, nil
	case !errors.Is(err, topo.ErrNotFound):
		return 0, err
	}
	if fo.GetLeaseWaitUntil() == nil {
		next.LeaseWaitUntil = timestamppb.New(time.Now().Add(f.cfg.LeaseMargin))
		c.log.Info("old owner's authority lease expired; promoting after the margin", "failover", fo.GetId(), "tenant", fo.GetTenant(),
			"cell", fo.GetFromCell(), "margin", f.cfg.LeaseMargin)
		return 0, f.record(ctx, next, v, nil, nil)
	}
	if left := time.Until(fo.GetLeaseWaitUntil().AsTime()); left > 0 {
		return left, nil
	}
	next.State = cpv1.FailoverState_FAILOVER_STATE_PROMOTING
	return 0, f.record(ctx, next, v, nil, nil)
}

// fenceReport returns the old cell's fence for fo once it is applied
// (nil while not, or when the key is not fo's).
func (f *failoverer) fenceReport(ctx context.Context, fo *cpv1.Failover) (*cpv1.CellFence, error) {
	fence, _, err := catalog.GetFence(ctx, f.r.c.st, fo.GetFromCell(), fo.GetTenant())
	switch {
	case errors.Is(err, topo.ErrNotFound):
		return nil, nil
	case err != nil:
		return nil, err
	case fence.GetFailoverId() != fo.GetId() || !fence.GetApplied():
		return nil, nil
	}
	return fence, nil
}

// promote makes the standby OWNER at E+1 and flips the placement. In a
// switchover it first waits for the standby to have applied the fence.
func (f *failoverer) promote(ctx context.Context, fo *cpv1.Failover, v topo.Version) (time.Duration, error) {
	c := f.r.c
	E1 := fo.GetNewEpoch()
	switchover := fo.GetKind() == cpv1.FailoverKind_FAILOVER_KIND_SWITCHOVER
	placedEpoch := E1
	if switchover {
		placedEpoch = fo.GetOldEpoch() // the placement moves to E+1 at the flip
	}
	t, tv, err := f.claimed(ctx, fo, placedEpoch)
	if err != nil {
		return 0, err
	}
	if switchover {
		fenceTseq := fo.GetOldOwnerTseq() + 1
		cctx, cancel := context.WithTimeout(ctx, c.cfg.CellCallTimeout)
		info, repl, err := f.cells.GetTenant(cctx, fo.GetToCell(), fo.GetTenant())
		cancel()
		if err != nil {
			return 0, fmt.Errorf("standby cell %s: %w", fo.GetToCell(), err)
		}
		if info.GetRole() == cellv1.Role_ROLE_STANDBY {
			applied := info.GetTseq()
			if repl != nil && repl.GetAppliedTseq() > applied {
				applied = repl.GetAppliedTseq()
			}
			if applied < fenceTseq {
				return f.cfg.CutoverPollInterval, nil // still catching up to the fence: writes are paused, look often
			}
		}
	}
	cctx, cancel := context.WithTimeout(ctx, c.cfg.CellCallTimeout)
	info, err := f.cells.SetTenant(cctx, fo.GetToCell(), &cellv1.SetTenantRequest{
		Tenant: fo.GetTenant(), Role: cellv1.Role_ROLE_OWNER, Epoch: E1,
		RequestId: failoverRequestID(fo.GetTenant(), E1, "owner"),
	})
	cancel()
	if err != nil {
		if permanent(err) {
			// Released, so that an operator can act (promote again at the
			// next epoch, or restore the old owner); the tenant has no
			// writable owner until then.
			return 0, f.fail(ctx, fo, v, true, fmt.Errorf("standby cell %s refused to own %s at epoch %d: %w", fo.GetToCell(), fo.GetTenant(), E1, err))
		}
		return 0, fmt.Errorf("make %s OWNER on %s: %w", fo.GetTenant(), fo.GetToCell(), err)
	}
	if err := f.afterCall(ctx, fo, "owner"); err != nil {
		return 0, err
	}
	now := time.Now()
	next := proto.Clone(fo).(*cpv1.Failover)
	if info.GetTseq() > 0 {
		next.PromotedTseq = info.GetTseq() - 1 // the OWNER event follows the last event it applied
	}
	next.PromoteTime = timestamppb.New(now)
	next.TimeToPromote = durationpb.New(now.Sub(fo.GetCreateTime().AsTime()))
	pub := proto.Clone(t).(*cpv1.Tenant)
	pub.Cell, pub.Epoch = fo.GetToCell(), E1
	pub.StandbyCell = ""
	if switchover {
		pub.StandbyCell = fo.GetFromCell() // the reconciler makes it follow the new owner
	} else {
		// The owner's last events may be lost, a quota change among them:
		// the leader pushes the placement's max_bytes to the new owner
		// again (quota.go).
		pub.QuotaPending = true
	}
	pub.CuttingOver, pub.OperationId = false, ""
	pub.UpdateTime = next.GetPromoteTime()
	tkey := topo.TenantKey(t.GetId())
	conds := []topo.Cond{topo.IfVersion(tkey, tv)}
	ops := []topo.Op{topo.Put(tkey, catalog.Encode(pub))}
	if switchover {
		next.State = cpv1.FailoverState_FAILOVER_STATE_DONE
		next.LostEvents = lostEvents(next)
	} else {
		next.State = cpv1.FailoverState_FAILOVER_STATE_AWAITING_OLD_OWNER
		if rep, err := f.fenceReport(ctx, fo); err != nil {
			return 0, err
		} else if rep != nil || fo.GetOldOwnerReported() {
			if rep != nil {
				next.OldOwnerTseq, next.OldOwnerReported = rep.GetTseq(), true
			}
			conds, ops = f.finishReport(ctx, next, conds, ops)
		}
	}
	kind := intent.FailoverKindName(fo.GetKind())
	if err := f.record(ctx, next, v, conds, ops); err != nil {
		return 0, err
	}
	c.fm.timeToPromote.WithLabelValues(kind).Observe(next.GetTimeToPromote().AsDuration().Seconds())
	c.log.Info("failover: standby promoted, placement flipped", "failover", fo.GetId(), "kind", kind, "tenant", fo.GetTenant(),
		"cell", fo.GetToCell(), "from", fo.GetFromCell(), "epoch", E1, "promoted_tseq", next.GetPromotedTseq(), "time_to_promote", next.GetTimeToPromote().AsDuration())
	f.finished(next)
	return 0, nil
}

// awaitOldOwner (emergency, after the flip) waits for the old cell's
// report and computes the lost events.
func (f *failoverer) awaitOldOwner(ctx context.Context, fo *cpv1.Failover, v topo.Version) (time.Duration, error) {
	c := f.r.c
	fence, _, err := catalog.GetFence(ctx, c.st, fo.GetFromCell(), fo.GetTenant())
	next := proto.Clone(fo).(*cpv1.Failover)
	switch {
	case errors.Is(err, topo.ErrNotFound) || (err == nil && fence.GetFailoverId() != fo.GetId()):
		// Removed or replaced by someone else: no report will come.
		next.State = cpv1.FailoverState_FAILOVER_STATE_DONE
		next.ErrorMessage = "the fence key was removed or replaced before the old owner reported: its lost writes are unknown"
		if err := f.record(ctx, next, v, nil, nil); err != nil {
			return 0, err
		}
		f.finished(next)
		return 0, nil
	case err != nil:
		return 0, err
	case !fence.GetApplied():
		return time.Minute, nil // woken by the report (the cells/ watch)
	}
	next.OldOwnerTseq, next.OldOwnerReported = fence.GetTseq(), true
	conds, ops := f.finishReport(ctx, next, nil, nil)
	if err := f.record(ctx, next, v, conds, ops); err != nil {
		return 0, err
	}
	f.finished(next)
	return 0, nil
}

// finishReport completes a promotion whose old owner reported: the lost
// events, DONE, and the fence key deleted (in the caller's transaction).
func (f *failoverer) finishReport(ctx context.Context, next *cpv1.Failover, conds []topo.Cond, ops []topo.Op) ([]topo.Cond, []topo.Op) {
	next.LostEvents = lostEvents(next)
	next.State = cpv1.FailoverState_FAILOVER_STATE_DONE
	fkey := topo.CellFenceKey(next.GetFromCell(), next.GetTenant())
	if kv, err := f.r.c.st.Get(ctx, fkey); err == nil {
		conds = append(conds, topo.IfVersion(fkey, kv.Version))
		ops = append(ops, topo.Del(fkey))
	}
	return conds, ops
}

// lostEvents is old_owner_tseq − promoted_tseq when positive: the writes
// the old owner acknowledged that the standby never received.
func lostEvents(fo *cpv1.Failover) uint64 {
	if !fo.GetOldOwnerReported() || fo.GetOldOwnerTseq() <= fo.GetPromotedTseq() {
		return 0
	}
	return fo.GetOldOwnerTseq() - fo.GetPromotedTseq()
}

// finished counts and logs a failover that reached DONE (or FAILED).
func (f *failoverer) finished(fo *cpv1.Failover) {
	c := f.r.c
	if !intent.FailoverFinished(fo.GetState()) {
		return
	}
	kind := intent.FailoverKindName(fo.GetKind())
	outcome := "done"
	if fo.GetState() == cpv1.FailoverState_FAILOVER_STATE_FAILED {
		outcome = "failed"
	}
	c.fm.finished.WithLabelValues(kind, outcome).Inc()
	if outcome != "done" || fo.GetKind() != cpv1.FailoverKind_FAILOVER_KIND_PROMOTE {
		return
	}
	c.fm.lostEvents.Add(float64(fo.GetLostEvents()))
	if fo.GetOldOwnerReported() {
		c.log.Warn("emergency promotion finished: old owner reported",
			"failover", fo.GetId(), "tenant", fo.GetTenant(), "cell", fo.GetToCell(), "old_cell", fo.GetFromCell(),
			"promoted_tseq", fo.GetPromotedTseq(), "old_owner_tseq", fo.GetOldOwnerTseq(), "lost_events", fo.GetLostEvents(),
			"inspect", fmt.Sprintf("cellctl tenant changes %s --cell %s --after %d", fo.GetTenant(), fo.GetFromCell(), fo.GetPromotedTseq()))
	}
}

// record writes next (after fo at version v) with the extra conditions and
// ops, in one leader-guarded transaction.
func (f *failoverer) record(ctx context.Context, next *cpv1.Failover, v topo.Version, conds []topo.Cond, ops []topo.Op) error {
	next.UpdateTime = timestamppb.Now()
	key := topo.FailoverKey(next.GetId())
	return f.r.commit(ctx, append([]topo.Cond{topo.IfVersion(key, v)}, conds...), append(ops, topo.Put(key, catalog.Encode(next))))
}

// fail records fo FAILED for good. With release, the placement is freed
// (operation_id and cutting_over cleared) if the failover still holds it.
func (f *failoverer) fail(ctx context.Context, fo *cpv1.Failover, v topo.Version, release bool, cause error) error {
	c := f.r.c
	next := proto.Clone(fo).(*cpv1.Failover)
	next.State = cpv1.FailoverState_FAILOVER_STATE_FAILED
	var ce *cperr.Error
	if errors.As(cause, &ce) {
		next.ErrorReason, next.ErrorMessage = string(ce.Reason), ce.Message
	} else {
		next.ErrorReason, next.ErrorMessage = string(cperr.Internal), cause.Error()
	}
	var conds []topo.Cond
	var ops []topo.Op
	if release {
		t, tv, err := catalog.GetTenant(ctx, c.st, fo.GetTenant())
		if err != nil && !errors.Is(err, topo.ErrNotFound) {
			return err
		}
		if err == nil && t.GetOperationId() == fo.GetId() {
			pub := proto.Clone(t).(*cpv1.Tenant)
			pub.OperationId, pub.CuttingOver = "", false
			pub.UpdateTime = timestamppb.Now()
			conds = append(conds, topo.IfVersion(topo.TenantKey(t.GetId()), tv))
			ops = append(ops, topo.Put(topo.TenantKey(t.GetId()), catalog.Encode(pub)))
		}
	}
	if err := f.record(ctx, next, v, conds, ops); err != nil {
		return err
	}
	c.log.Warn("failover failed", "failover", fo.GetId(), "kind", intent.FailoverKindName(fo.GetKind()), "tenant", fo.GetTenant(),
		"reason", next.GetErrorReason(), "message", next.GetErrorMessage())
	f.finished(next)
	return nil
}

// housekeeping deletes finished failovers beyond the history bounds.
func (f *failoverer) housekeeping(ctx context.Context) {
	f.r.every(ctx, f.cfg.HousekeepingInterval, nil, "failover housekeeping", f.pruneFailovers)
}

func (f *failoverer) pruneFailovers(ctx context.Context) error {
	all, _, err := catalog.ListFailovers(ctx, f.r.c.st)
	if err != nil {
		return err
	}
	var finished []historyEntry
	for _, rec := range all {
		if intent.FailoverFinished(rec.Value.GetState()) {
			finished = append(finished, historyEntry{key: rec.Key, v: rec.Version, finished: rec.Value.GetUpdateTime().AsTime()})
		}
	}
	return f.r.pruneHistory(ctx, finished, f.cfg.HistoryMax, f.cfg.HistoryTTL)
}
