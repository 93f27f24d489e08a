package controller

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/cellplane/cellplane/controlplane/catalog"
	"github.com/cellplane/cellplane/controlplane/intent"
	"github.com/cellplane/cellplane/controlplane/topo"
	"github.com/cellplane/cellplane/internal/cperr"
	cellv1 "github.com/cellplane/cellplane/proto/cellplane/cell/v1"
	cpv1 "github.com/cellplane/cellplane/proto/cellplane/controlplane/v1"
)

// The standby reconciler keeps, for every placement with a standby_cell,
// the standby cell's record of the tenant STANDBY at the placement's epoch
// with source_cell = the owner. The replication stream itself runs in the
// standby cell's leader (it restarts it and follows leaders on both
// sides); the controller only keeps its assignment right, e.g. after a
// move flipped the owner or after SetStandby named a new standby.
//
// It leaves a tenant alone while an operation holds it (operation_id set,
// or cutting_over): the operation owns the tenant's cells until it
// releases it, and must leave the standby's record right (or the
// standby_cell empty) when it does. One exception is the operation it
// runs itself: clearing a standby (operation_id "standby-clear.<cell>").
//
// Which history may a standby keep (resume)? A record that is STANDBY has
// only ever applied the tenant's one lineage, so it resumes from its tseq;
// so does the old owner of a planned switchover to the current owner (it
// was fenced before the new owner applied the fence). Any other record (an
// old OWNER or FENCED cell, whose history may hold writes that never
// reached the new owner: an emergency promotion's RPO) and a missing
// record are bootstrapped again from an export.

// standbyLoop runs the reconciler: a check of each tenant the tenants/
// watch shows changing, and a full pass every StandbyResyncInterval; at
// most StandbyConcurrency checks at once, one at a time per tenant.
func (m *mover) standbyLoop(ctx context.Context) {
	var wg sync.WaitGroup
	defer wg.Wait()
	var mu sync.Mutex
	failing := map[string]bool{} // tenants whose last repair failed (logged once at Warn)
	for range m.cfg.StandbyConcurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				id, ok := m.standby.take(ctx)
				if !ok {
					return
				}
				err := m.repairStandby(ctx, id)
				m.standby.done(id)
				mu.Lock()
				again := failing[id]
				if err == nil {
					delete(failing, id)
				} else {
					failing[id] = true
				}
				mu.Unlock()
				if err == nil || ctx.Err() != nil {
					continue
				}
				// Retried soon (a clear is waited for by its caller), then
				// by every full pass; a standby cell that stays down is
				// logged at Warn once per tenant.
				level := slog.LevelWarn
				if again {
					level = slog.LevelDebug
				}
				m.r.c.log.Log(ctx, level, "standby repair failed; retrying", "tenant", id, "err", err, "retry_in", m.r.c.cfg.RetryMax)
				if !again {
					m.standby.addAfter(ctx, id, m.r.c.cfg.RetryMax)
				}
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		m.r.follow(ctx, topo.TenantsPrefix, func(ev topo.Event) {
			rec, ok, err := catalog.TenantEvent(ev)
			if ok && err == nil && needsStandbyCheck(rec.Value) {
				m.standby.add(rec.Value.GetId())
			}
		})
	}()
	tick := time.NewTicker(m.cfg.StandbyResyncInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			m.standby.close()
			return
		case <-tick.C:
		}
		n := 0
		tenants, _, err := catalog.ListDecodable(ctx, m.r.c.st, topo.TenantsPrefix, topo.KindTenant, catalog.NewTenant)
		for _, rec := range tenants {
			if t := rec.Value; t.GetStandbyCell() != "" {
				n++
			}
			if needsStandbyCheck(rec.Value) {
				m.standby.add(rec.Value.GetId())
			}
		}
		if err == nil {
			m.r.c.mm.standbys.Set(float64(n))
		} else if ctx.Err() == nil {
			m.r.c.log.Warn("standby pass failed; retrying at the next one", "err", err)
		}
	}
}

func needsStandbyCheck(t *cpv1.Tenant) bool {
	_, clearing := intent.ClearingStandby(t)
	return clearing || (t.GetStandbyCell() != "" && t.GetState() == cpv1.TenantState_TENANT_STATE_ACTIVE)
}

// repairStandby makes tenant id's standby record right (or finishes
// clearing the standby). It reads the placement itself, so a stale event
// does no harm.
func (m *mover) repairStandby(ctx context.Context, id string) error {
	c := m.r.c
	t, tv, err := catalog.GetTenant(ctx, c.st, id)
	if errors.Is(err, topo.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	if cell, ok := intent.ClearingStandby(t); ok {
		return m.finishClear(ctx, t, tv, cell)
	}
	sb := t.GetStandbyCell()
	if sb == "" || t.GetState() != cpv1.TenantState_TENANT_STATE_ACTIVE || t.GetOperationId() != "" || t.GetCuttingOver() || t.GetCell() == "" || sb == t.GetCell() {
		return nil
	}
	cctx, cancel := context.WithTimeout(ctx, c.cfg.CellCallTimeout)
	defer cancel()
	info, _, err := m.cells.GetTenant(cctx, sb, id)
	resume := true
	switch {
	case errors.Is(err, cperr.ErrTenantNotFound):
		resume = false
	case err != nil:
		return fmt.Errorf("standby %s: %w", sb, err)
	case info.GetRole() == cellv1.Role_ROLE_STANDBY && info.GetEpoch() == t.GetEpoch() && info.GetSourceCell() == t.GetCell():
		return nil // right already
	case info.GetEpoch() > t.GetEpoch():
		return fmt.Errorf("standby %s has the tenant at epoch %d, above the placement's %d: left alone", sb, info.GetEpoch(), t.GetEpoch())
	case info.GetRole() != cellv1.Role_ROLE_STANDBY:
		// An old owner's history may have diverged (an emergency promotion
		// leaves it with writes the new owner never got): bootstrap again,
		// unless it was fenced by a planned switchover to this owner.
		resume, err = m.switchedOver(ctx, t, sb)
		if err != nil {
			return err
		}
	}
	_, err = m.cells.SetTenant(cctx, sb, &cellv1.SetTenantRequest{
		Tenant: id, Role: cellv1.Role_ROLE_STANDBY, Epoch: t.GetEpoch(), SourceCell: t.GetCell(), Resume: resume,
	})
	if err != nil {
		c.mm.repairs.WithLabelValues("error").Inc()
		return fmt.Errorf("standby %s: make %s STANDBY of %s at epoch %d: %w", sb, id, t.GetCell(), t.GetEpoch(), err)
	}
	c.mm.repairs.WithLabelValues("ok").Inc()
	c.log.Info("standby assigned", "tenant", id, "cell", sb, "source_cell", t.GetCell(), "epoch", t.GetEpoch(), "resume", resume)
	return nil
}

// switchedOver reports whether cell lost tenant t to its current owner in
// a planned switchover (a DONE failover record of kind SWITCHOVER from cell
// to t's cell at t's epoch): its history then is a prefix of the owner's
// and it may keep its data. Failover ids are "<tenant>-e<epoch>-<kind>"
// (docs/failover.md), so the candidates are found by prefix.
func (m *mover) switchedOver(ctx context.Context, t *cpv1.Tenant, cell string) (bool, error) {
	prefix := topo.FailoverKey(fmt.Sprintf("%s-e%d-switchover", t.GetId(), t.GetEpoch()))
	fos, _, err := catalog.ListDecodable(ctx, m.r.c.st, prefix, topo.KindFailover, catalog.NewFailover)
	for _, rec := range fos {
		if fo := rec.Value; fo.GetTenant() == t.GetId() && fo.GetKind() == cpv1.FailoverKind_FAILOVER_KIND_SWITCHOVER &&
			fo.GetState() == cpv1.FailoverState_FAILOVER_STATE_DONE && fo.GetFromCell() == cell &&
			fo.GetToCell() == t.GetCell() && fo.GetNewEpoch() == t.GetEpoch() {
			return true, nil
		}
	}
	return false, err
}

// finishClear removes the old standby's copy, then clears standby_cell,
// uncounts the cell's load and releases the operation in one transaction.
func (m *mover) finishClear(ctx context.Context, t *cpv1.Tenant, tv topo.Version, cell string) error {
	c := m.r.c
	cctx, cancel := context.WithTimeout(ctx, c.cfg.CellCallTimeout)
	// A standby's copy (or an old owner's, fenced), never an OWNER's.
	err := m.cells.DeleteTenant(cctx, cell, guardedDelete(t.GetId(), "", 0, cellv1.Role_ROLE_STANDBY, cellv1.Role_ROLE_FENCED))
	cancel()
	if isDeleteRefused(err) {
		c.log.Warn("old standby refused to delete its copy (it is not a standby there); kept", "tenant", t.GetId(), "cell", cell, "err", err)
		err = nil
	}
	if err != nil {
		return fmt.Errorf("standby %s: delete %s's copy: %w", cell, t.GetId(), err)
	}
	next := proto.Clone(t).(*cpv1.Tenant)
	next.OperationId = ""
	if next.GetStandbyCell() == cell {
		next.StandbyCell = ""
	}
	next.UpdateTime = timestamppb.Now()
	tkey := topo.TenantKey(t.GetId())
	conds := []topo.Cond{topo.IfVersion(tkey, tv)}
	ops := []topo.Op{topo.Put(tkey, catalog.Encode(next))}
	if t.GetStandbyCell() == cell {
		if conds, ops, err = m.loadDelta(ctx, cell, -1, conds, ops); err != nil {
			return err
		}
	}
	if err := m.r.commit(ctx, conds, ops); err != nil {
		if isConflict(err) {
			m.standby.add(t.GetId())
			return nil
		}
		return err
	}
	c.log.Info("standby cleared", "tenant", t.GetId(), "cell", cell)
	return nil
}

// publishStandby is the create workflow's hook when it publishes a
// placement: the standby cell recorded with the intent (chosen by the API)
// is checked again and counted in its load, in the publishing transaction;
// the reconciler then makes the cell a STANDBY. If that cell has no room
// any more, another of its region is chosen; if none has, the tenant is
// published without a standby (logged).
func (r *runner) publishStandby(ctx context.Context, pub *cpv1.Tenant, conds []topo.Cond, ops []topo.Op) ([]topo.Cond, []topo.Op, error) {
	want := pub.GetStandbyCell()
	if want == "" {
		return conds, ops, nil
	}
	cells, err := catalog.Cells(ctx, r.c.st)
	if err != nil {
		return nil, nil, err
	}
	region := ""
	if ci := catalog.FindCell(cells, want); ci != nil {
		region = ci.Cell.GetRegion()
	}
	cell, perr := intent.PickStandby(cells, pub.GetCell(), region, want)
	if perr != nil && region != "" {
		cell, perr = intent.PickStandby(cells, pub.GetCell(), region, "")
	}
	if perr != nil {
		r.c.log.Warn("tenant published without its standby", "tenant", pub.GetId(), "cell", want, "err", perr)
		pub.StandbyCell = ""
		return conds, ops, nil
	}
	pub.StandbyCell = cell
	ci := catalog.FindCell(cells, cell)
	load := proto.Clone(ci.Load).(*cpv1.CellLoad)
	load.Tenants++
	key := topo.CellLoadKey(cell)
	return append(conds, topo.IfVersion(key, ci.LoadVersion)), append(ops, topo.Put(key, catalog.Encode(load))), nil
}

// deleteStandbyCopy is the delete workflow's hook: the tenant's standby
// (if any) removes its copy too.
func (r *runner) deleteStandbyCopy(ctx context.Context, wf *cpv1.Workflow) error {
	t, _, err := catalog.GetTenant(ctx, r.c.st, wf.GetTenant())
	if errors.Is(err, topo.ErrNotFound) || (err == nil && t.GetStandbyCell() == "") {
		return nil
	}
	if err != nil {
		return err
	}
	cctx, cancel := context.WithTimeout(ctx, r.c.cfg.CellCallTimeout)
	defer cancel()
	err = r.c.cells.DeleteTenant(cctx, t.GetStandbyCell(),
		guardedDelete(t.GetId(), wf.GetId()+".standby", 0, cellv1.Role_ROLE_STANDBY, cellv1.Role_ROLE_FENCED))
	if isDeleteRefused(err) {
		// The standby cell owns the tenant: not the copy this delete means.
		r.c.log.Warn("standby refused to delete its copy (it is not a standby there); kept", "tenant", t.GetId(), "cell", t.GetStandbyCell(), "err", err)
		return nil
	}
	if err != nil {
		return fmt.Errorf("standby %s: delete %s: %w", t.GetStandbyCell(), t.GetId(), err)
	}
	return nil
}

// unloadStandby is the delete workflow's hook in its last transaction: the
// standby cell's load is uncounted with the record.
func (r *runner) unloadStandby(ctx context.Context, tenant string, conds []topo.Cond, ops []topo.Op) ([]topo.Cond, []topo.Op, error) {
	t, tv, err := catalog.GetTenant(ctx, r.c.st, tenant)
	if errors.Is(err, topo.ErrNotFound) || (err == nil && t.GetStandbyCell() == "") {
		return conds, ops, nil
	}
	if err != nil {
		return nil, nil, err
	}
	conds = append(conds, topo.IfVersion(topo.TenantKey(tenant), tv))
	return loadDelta(ctx, r.c.st, t.GetStandbyCell(), -1, conds, ops)
}

// keyQueue is a set of tenant ids to check, handed to workers one id at a
// time: an id added while a worker has it is checked again after.
type keyQueue struct {
	mu     sync.Mutex
	order  []string
	queued map[string]bool
	busy   map[string]bool
	again  map[string]bool
	wake   chan struct{}
	closed bool
}

func newKeyQueue() *keyQueue {
	return &keyQueue{queued: map[string]bool{}, busy: map[string]bool{}, again: map[string]bool{}, wake: make(chan struct{}, 1)}
}

func (q *keyQueue) add(id string) {
	q.mu.Lock()
	defer q.mu.Unlock()
	switch {
	case q.closed || q.queued[id]:
	case q.busy[id]:
		q.again[id] = true
	default:
		q.queued[id] = true
		q.order = append(q.order, id)
		nudge(q.wake)
	}
}

// addAfter adds id after d unless ctx ends first.
func (q *keyQueue) addAfter(ctx context.Context, id string, d time.Duration) {
	var mu sync.Mutex
	var stop func() bool
	t := time.AfterFunc(d, func() {
		mu.Lock()
		s := stop
		mu.Unlock()
		if s != nil {
			s()
		}
		if ctx.Err() == nil {
			q.add(id)
		}
	})
	mu.Lock()
	stop = context.AfterFunc(ctx, func() { t.Stop() })
	mu.Unlock()
}

// take returns the next id (marking it busy) or false when ctx ends or the
// queue is closed.
func (q *keyQueue) take(ctx context.Context) (string, bool) {
	for {
		q.mu.Lock()
		if q.closed {
			q.mu.Unlock()
			return "", false
		}
		if len(q.order) > 0 {
			id := q.order[0]
			q.order = q.order[1:]
			delete(q.queued, id)
			q.busy[id] = true
			if len(q.order) > 0 {
				nudge(q.wake) // more for another worker
			}
			q.mu.Unlock()
			return id, true
		}
		q.mu.Unlock()
		select {
		case <-q.wake:
		case <-ctx.Done():
			return "", false
		}
	}
}

func (q *keyQueue) done(id string) {
	q.mu.Lock()
	delete(q.busy, id)
	again := q.again[id]
	delete(q.again, id)
	q.mu.Unlock()
	if again {
		q.add(id)
	}
}

func (q *keyQueue) close() {
	q.mu.Lock()
	q.closed = true
	q.mu.Unlock()
}
