package controller

import (
	"context"
	"errors"
	"fmt"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/cellplane/cellplane/controlplane/catalog"
	"github.com/cellplane/cellplane/controlplane/intent"
	"github.com/cellplane/cellplane/controlplane/placement"
	"github.com/cellplane/cellplane/controlplane/topo"
	"github.com/cellplane/cellplane/internal/cperr"
	cellv1 "github.com/cellplane/cellplane/proto/cellplane/cell/v1"
	cpv1 "github.com/cellplane/cellplane/proto/cellplane/controlplane/v1"
)

// The epoch a new tenant's first owner gets.
const firstEpoch = 1

// maxOpsPerTxn stays under etcd's default of 128 operations.
const maxOpsPerTxn = 100

// step acts on wf's recorded step and records the next one.
func (r *runner) step(ctx context.Context, wf *cpv1.Workflow, v topo.Version) error {
	switch wf.GetKind() {
	case cpv1.WorkflowKind_WORKFLOW_KIND_TENANT_CREATE:
		return r.stepCreate(ctx, wf, v)
	case cpv1.WorkflowKind_WORKFLOW_KIND_TENANT_DELETE:
		return r.stepDelete(ctx, wf, v)
	}
	return r.fail(ctx, wf, v, nil, cperr.New(cperr.Internal, "unknown workflow kind %s", wf.GetKind()))
}

// cellQuota is the tenant's own storage quota at its cell (H4): the
// control plane's max_bytes (0: the cell's default). It moves with the
// tenant (exports and change events carry it).
func cellQuota(l *cpv1.TenantLimits) *cellv1.TenantQuota {
	if l.GetMaxBytes() == 0 && l.GetDefaultRetention().AsDuration() <= 0 {
		return nil
	}
	return &cellv1.TenantQuota{MaxBytes: l.GetMaxBytes(), DefaultRetentionNanos: int64(l.GetDefaultRetention().AsDuration())}
}

// Tenant create: PENDING → (pick a cell, count it in the cell's load)
// PLACED → (the cell makes the tenant OWNER at epoch 1) CELL_DONE →
// (publish the placement ACTIVE, delete the workflow).
func (r *runner) stepCreate(ctx context.Context, wf *cpv1.Workflow, v topo.Version) error {
	c := r.c
	wkey := topo.WorkflowKey(wf.GetId())
	tenant, tv, err := catalog.GetTenant(ctx, c.st, wf.GetTenant())
	if errors.Is(err, topo.ErrNotFound) {
		// The intent lost its tenant record (cannot happen through the
		// API, which writes both in one transaction): nothing to create.
		return r.commit(ctx, []topo.Cond{topo.IfVersion(wkey, v)}, []topo.Op{topo.Del(wkey)})
	}
	if err != nil {
		return err
	}
	switch wf.GetStep() {
	case cpv1.WorkflowStep_WORKFLOW_STEP_PENDING:
		cells, err := catalog.Cells(ctx, c.st)
		if err != nil {
			return err
		}
		cell, perr := placement.Pick(intent.Candidates(cells), placement.Request{Region: tenant.GetHomeRegion(), Cell: wf.GetRequestedCell()})
		if perr != nil {
			// Nothing was placed: drop the tenant record so the id is free.
			return r.fail(ctx, wf, v, []topo.Op{topo.Del(topo.TenantKey(tenant.GetId()))}, perr,
				topo.IfVersion(topo.TenantKey(tenant.GetId()), tv))
		}
		ci := catalog.FindCell(cells, cell)
		load := proto.Clone(ci.Load).(*cpv1.CellLoad)
		load.Tenants++
		next := proto.Clone(wf).(*cpv1.Workflow)
		next.Step = cpv1.WorkflowStep_WORKFLOW_STEP_PLACED
		next.Cell = cell
		next.UpdateTime = timestamppb.Now()
		return r.commit(ctx,
			[]topo.Cond{topo.IfVersion(wkey, v), topo.IfVersion(topo.CellLoadKey(cell), ci.LoadVersion)},
			[]topo.Op{topo.Put(topo.CellLoadKey(cell), catalog.Encode(load)), topo.Put(wkey, catalog.Encode(next))})

	case cpv1.WorkflowStep_WORKFLOW_STEP_PLACED:
		cctx, cancel := context.WithTimeout(ctx, c.cfg.CellCallTimeout)
		_, err := c.cells.SetTenant(cctx, wf.GetCell(), &cellv1.SetTenantRequest{
			Tenant: wf.GetTenant(), Role: cellv1.Role_ROLE_OWNER, Epoch: firstEpoch, RequestId: wf.GetId() + ".owner",
			Quota: cellQuota(tenant.GetLimits()),
		})
		cancel()
		if permanent(err) {
			// The cell refuses for good (it should not: the tenant is new
			// to it). Undo the placement so the id and the load are free.
			ci, cerr := catalog.Cell(ctx, c.st, wf.GetCell())
			if cerr != nil {
				return cerr
			}
			load := proto.Clone(ci.Load).(*cpv1.CellLoad)
			if load.Tenants > 0 {
				load.Tenants--
			}
			return r.fail(ctx, wf, v,
				[]topo.Op{topo.Del(topo.TenantKey(tenant.GetId())), topo.Put(topo.CellLoadKey(wf.GetCell()), catalog.Encode(load))},
				fmt.Errorf("cell %s refused the tenant: %w", wf.GetCell(), err),
				topo.IfVersion(topo.TenantKey(tenant.GetId()), tv), topo.IfVersion(topo.CellLoadKey(wf.GetCell()), ci.LoadVersion))
		}
		if err != nil {
			return fmt.Errorf("cell %s: make %s OWNER: %w", wf.GetCell(), wf.GetTenant(), err)
		}
		return r.advance(ctx, wf, v, cpv1.WorkflowStep_WORKFLOW_STEP_CELL_DONE)

	case cpv1.WorkflowStep_WORKFLOW_STEP_CELL_DONE:
		pub := proto.Clone(tenant).(*cpv1.Tenant)
		pub.State = cpv1.TenantState_TENANT_STATE_ACTIVE
		pub.Cell = wf.GetCell()
		pub.Epoch = firstEpoch
		pub.UpdateTime = timestamppb.Now()
		conds, ops, err := r.publishStandby(ctx, pub, // standby.go: counts the standby chosen at create
			[]topo.Cond{topo.IfVersion(wkey, v), topo.IfVersion(topo.TenantKey(pub.GetId()), tv)}, []topo.Op{topo.Del(wkey)})
		if err != nil {
			return err
		}
		err = r.commit(ctx, conds, append(ops, topo.Put(topo.TenantKey(pub.GetId()), catalog.Encode(pub))))
		if err == nil {
			c.m.finished.WithLabelValues("tenant_create", "done").Inc()
			c.log.Info("tenant placed", "tenant", pub.GetId(), "cell", pub.GetCell(), "epoch", pub.GetEpoch())
		}
		return err
	}
	return r.fail(ctx, wf, v, nil, cperr.New(cperr.Internal, "tenant create: unexpected step %s", wf.GetStep()))
}

// Tenant delete: PENDING → (the cell removes the data) CELL_DONE → (API
// keys removed in batches, then the record, the load count and the
// workflow in one transaction).
func (r *runner) stepDelete(ctx context.Context, wf *cpv1.Workflow, v topo.Version) error {
	c := r.c
	wkey := topo.WorkflowKey(wf.GetId())
	switch wf.GetStep() {
	case cpv1.WorkflowStep_WORKFLOW_STEP_PENDING:
		if wf.GetCell() != "" {
			// The owner's copy at the placement's epoch (DELETING freezes
			// the placement: no move or failover starts).
			t, _, err := catalog.GetTenant(ctx, c.st, wf.GetTenant())
			if err != nil {
				return err // the record goes only with the workflow (CELL_DONE)
			}
			cctx, cancel := context.WithTimeout(ctx, c.cfg.CellCallTimeout)
			err = c.cells.DeleteTenant(cctx, wf.GetCell(),
				guardedDelete(wf.GetTenant(), wf.GetId()+".cell", t.GetEpoch(), cellv1.Role_ROLE_OWNER, cellv1.Role_ROLE_FENCED))
			cancel()
			if err != nil {
				return fmt.Errorf("cell %s: delete %s: %w", wf.GetCell(), wf.GetTenant(), err)
			}
		}
		if err := r.deleteStandbyCopy(ctx, wf); err != nil { // standby.go
			return err
		}
		return r.advance(ctx, wf, v, cpv1.WorkflowStep_WORKFLOW_STEP_CELL_DONE)

	case cpv1.WorkflowStep_WORKFLOW_STEP_CELL_DONE:
		// The tenant's sub-records first (API keys, its JWT revocation
		// list), a batch at a time (each batch guarded too).
		for {
			page, err := c.st.List(ctx, topo.TenantKey(wf.GetTenant())+"/", topo.ListOptions{Limit: maxOpsPerTxn, KeysOnly: true})
			if err != nil {
				return err
			}
			if len(page.KVs) == 0 {
				break
			}
			ops := make([]topo.Op, len(page.KVs))
			for i, kv := range page.KVs {
				ops[i] = topo.Del(kv.Key)
			}
			if err := r.commit(ctx, []topo.Cond{topo.IfVersion(wkey, v)}, ops); err != nil {
				return err
			}
		}
		tkey := topo.TenantKey(wf.GetTenant())
		conds := []topo.Cond{topo.IfVersion(wkey, v)}
		ops := []topo.Op{topo.Del(tkey), topo.Del(wkey)}
		if _, err := c.st.Get(ctx, tkey); err == nil && wf.GetCell() != "" {
			ci, err := catalog.Cell(ctx, c.st, wf.GetCell())
			switch {
			case err == nil:
				load := proto.Clone(ci.Load).(*cpv1.CellLoad)
				if load.Tenants > 0 {
					load.Tenants--
				}
				conds = append(conds, topo.IfVersion(topo.CellLoadKey(wf.GetCell()), ci.LoadVersion), topo.IfExists(tkey))
				ops = append(ops, topo.Put(topo.CellLoadKey(wf.GetCell()), catalog.Encode(load)))
			case errors.Is(err, cperr.ErrCellNotFound):
			default:
				return err
			}
		}
		conds, ops, err := r.unloadStandby(ctx, wf.GetTenant(), conds, ops) // standby.go
		if err != nil {
			return err
		}
		err = r.commit(ctx, conds, ops)
		if err == nil {
			c.m.finished.WithLabelValues("tenant_delete", "done").Inc()
			c.log.Info("tenant deleted", "tenant", wf.GetTenant(), "cell", wf.GetCell())
		}
		return err
	}
	return r.fail(ctx, wf, v, nil, cperr.New(cperr.Internal, "tenant delete: unexpected step %s", wf.GetStep()))
}

// permanent reports a cell's answer that retrying cannot change.
func permanent(err error) bool {
	switch cperr.ReasonOf(err) {
	case cperr.InvalidArgument, cperr.StaleEpoch, cperr.PermissionDenied, cperr.AlreadyExists:
		return true
	}
	return false
}

// advance records the next step.
func (r *runner) advance(ctx context.Context, wf *cpv1.Workflow, v topo.Version, step cpv1.WorkflowStep) error {
	next := proto.Clone(wf).(*cpv1.Workflow)
	next.Step = step
	next.UpdateTime = timestamppb.Now()
	key := topo.WorkflowKey(wf.GetId())
	return r.commit(ctx, []topo.Cond{topo.IfVersion(key, v)}, []topo.Op{topo.Put(key, catalog.Encode(next))})
}

// fail records the workflow as FAILED for good with the error's reason and
// message (kept for the caller waiting on it), together with extra ops.
func (r *runner) fail(ctx context.Context, wf *cpv1.Workflow, v topo.Version, ops []topo.Op, cause error, conds ...topo.Cond) error {
	next := proto.Clone(wf).(*cpv1.Workflow)
	next.Step = cpv1.WorkflowStep_WORKFLOW_STEP_FAILED
	next.UpdateTime = timestamppb.Now()
	var ce *cperr.Error
	if errors.As(cause, &ce) {
		next.ErrorReason, next.ErrorMessage = string(ce.Reason), ce.Message
	} else {
		next.ErrorReason, next.ErrorMessage = string(cperr.Internal), "internal error"
	}
	key := topo.WorkflowKey(wf.GetId())
	err := r.commit(ctx, append([]topo.Cond{topo.IfVersion(key, v)}, conds...), append(ops, topo.Put(key, catalog.Encode(next))))
	if err == nil {
		r.c.m.finished.WithLabelValues(kindLabel(wf.GetKind()), "failed").Inc()
		r.c.log.Warn("workflow failed", "workflow", wf.GetId(), "tenant", wf.GetTenant(), "reason", next.ErrorReason, "message", next.ErrorMessage)
	}
	return err
}

func kindLabel(k cpv1.WorkflowKind) string {
	switch k {
	case cpv1.WorkflowKind_WORKFLOW_KIND_TENANT_CREATE:
		return "tenant_create"
	case cpv1.WorkflowKind_WORKFLOW_KIND_TENANT_DELETE:
		return "tenant_delete"
	}
	return "unknown"
}
