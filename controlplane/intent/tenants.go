package intent

import (
	"context"
	"errors"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/cellplane/cellplane/controlplane/catalog"
	"github.com/cellplane/cellplane/controlplane/topo"
	"github.com/cellplane/cellplane/internal/cperr"
	cpv1 "github.com/cellplane/cellplane/proto/cellplane/controlplane/v1"
)

// Workflow ids are derived from the tenant so that a retried request can
// never start a second workflow of the same kind.
func createID(tenant string) string { return "create-" + tenant }
func deleteID(tenant string) string { return "delete-" + tenant }

// StartCreate records the intent to create tenant t (state CREATING) and
// its workflow in one transaction. Any replica may call it; the leader
// drives the workflow. ALREADY_EXISTS if the tenant exists.
func StartCreate(ctx context.Context, st topo.Store, t *cpv1.Tenant, requestedCell string) error {
	now := timestamppb.Now()
	t = proto.Clone(t).(*cpv1.Tenant)
	t.State = cpv1.TenantState_TENANT_STATE_CREATING
	t.Cell, t.Epoch = "", 0
	t.CreateTime, t.UpdateTime = now, now
	wf := &cpv1.Workflow{
		Id: createID(t.GetId()), Kind: cpv1.WorkflowKind_WORKFLOW_KIND_TENANT_CREATE, Tenant: t.GetId(),
		Step: cpv1.WorkflowStep_WORKFLOW_STEP_PENDING, RequestedCell: requestedCell, CreateTime: now, UpdateTime: now,
	}
	tkey, wkey := topo.TenantKey(t.GetId()), topo.WorkflowKey(wf.GetId())
	_, err := st.Txn(ctx,
		[]topo.Cond{topo.IfAbsent(tkey), topo.IfAbsent(wkey)},
		[]topo.Op{topo.Put(tkey, catalog.Encode(t)), topo.Put(wkey, catalog.Encode(wf))})
	var ce *topo.CondError
	if errors.As(err, &ce) {
		if ce.Index == 0 {
			return cperr.New(cperr.AlreadyExists, "tenant %s already exists", t.GetId())
		}
		// A failed create of an earlier attempt is still recorded: clear
		// it (the tenant record is gone) and try once more.
		if old, v, gerr := catalog.GetWorkflow(ctx, st, wf.GetId()); gerr == nil && old.GetStep() == cpv1.WorkflowStep_WORKFLOW_STEP_FAILED {
			if _, derr := st.Txn(ctx, []topo.Cond{topo.IfVersion(wkey, v)}, []topo.Op{topo.Del(wkey)}); derr == nil {
				return StartCreate(ctx, st, t, requestedCell)
			}
		}
		return cperr.New(cperr.TenantBusy, "tenant %s is being created or deleted; try again", t.GetId())
	}
	return err
}

// StartDelete tombstones the placement (state DELETING: routers stop
// routing it) and records the delete workflow, in one transaction.
// TENANT_NOT_FOUND if absent, TENANT_BUSY while another workflow runs,
// DELETION_PROTECTED while the tenant's deletion_protection is on.
func StartDelete(ctx context.Context, st topo.Store, id string) error {
	t, tv, err := catalog.GetTenant(ctx, st, id)
	if errors.Is(err, topo.ErrNotFound) {
		return cperr.New(cperr.TenantNotFound, "tenant %s does not exist", id)
	}
	if err != nil {
		return err
	}
	switch t.GetState() {
	case cpv1.TenantState_TENANT_STATE_DELETING:
		return nil // already being deleted: the caller waits for it
	case cpv1.TenantState_TENANT_STATE_CREATING:
		return cperr.New(cperr.TenantBusy, "tenant %s is still being created; try again when it is ACTIVE", id)
	}
	if t.GetDeletionProtection() {
		// Checked on the record the guarded transaction below is
		// conditioned on: protection turned on meanwhile fails it.
		return cperr.New(cperr.DeletionProtected, "tenant %s has deletion protection on: turn it off first ('cellctl tenant update %s --deletion-protection=false')", id, id).
			With(cperr.MetaTenant, id)
	}
	if op := t.GetOperationId(); op != "" { // a move, failover or standby change holds it
		return cperr.New(cperr.TenantBusy, "tenant %s is busy with operation %s; try again when it ends", id, op)
	}
	now := timestamppb.Now()
	t.State = cpv1.TenantState_TENANT_STATE_DELETING
	t.UpdateTime = now
	wf := &cpv1.Workflow{
		Id: deleteID(id), Kind: cpv1.WorkflowKind_WORKFLOW_KIND_TENANT_DELETE, Tenant: id,
		Step: cpv1.WorkflowStep_WORKFLOW_STEP_PENDING, Cell: t.GetCell(), CreateTime: now, UpdateTime: now,
	}
	tkey, wkey := topo.TenantKey(id), topo.WorkflowKey(wf.GetId())
	_, err = st.Txn(ctx,
		[]topo.Cond{topo.IfVersion(tkey, tv), topo.IfAbsent(wkey)},
		[]topo.Op{topo.Put(tkey, catalog.Encode(t)), topo.Put(wkey, catalog.Encode(wf))})
	if errors.Is(err, topo.ErrConditionFailed) {
		return cperr.New(cperr.TenantBusy, "tenant %s changed while being deleted; try again", id)
	}
	return err
}

// WaitCreate waits until tenant id's create workflow ends and returns the
// published tenant, or the workflow's error (its record is then cleared).
func WaitCreate(ctx context.Context, st topo.Store, id string) (*cpv1.Tenant, error) {
	var out *cpv1.Tenant
	err := waitFor(ctx, st, []string{topo.TenantKey(id), topo.WorkflowKey(createID(id))}, func() (bool, error) {
		t, _, err := catalog.GetTenant(ctx, st, id)
		switch {
		case err == nil && t.GetState() == cpv1.TenantState_TENANT_STATE_ACTIVE:
			out = t
			return true, nil
		case err != nil && !errors.Is(err, topo.ErrNotFound):
			return false, err
		}
		wf, v, werr := catalog.GetWorkflow(ctx, st, createID(id))
		if werr == nil && wf.GetStep() == cpv1.WorkflowStep_WORKFLOW_STEP_FAILED {
			_, _ = st.Txn(ctx, []topo.Cond{topo.IfVersion(topo.WorkflowKey(wf.GetId()), v)}, []topo.Op{topo.Del(topo.WorkflowKey(wf.GetId()))})
			return true, &cperr.Error{Reason: cperr.Reason(wf.GetErrorReason()), Message: wf.GetErrorMessage()}
		}
		if errors.Is(err, topo.ErrNotFound) && errors.Is(werr, topo.ErrNotFound) {
			return true, cperr.New(cperr.TenantNotFound, "tenant %s was deleted while being created", id)
		}
		return false, nil
	})
	return out, err
}

// WaitDelete waits until tenant id's record is gone.
func WaitDelete(ctx context.Context, st topo.Store, id string) error {
	return waitFor(ctx, st, []string{topo.TenantKey(id)}, func() (bool, error) {
		_, err := st.Get(ctx, topo.TenantKey(id))
		if errors.Is(err, topo.ErrNotFound) {
			return true, nil
		}
		return false, err
	})
}

// WaitTenant waits until done holds for tenant id's record (evaluated now
// and after each change of it); topo.ErrNotFound once the record is gone.
func WaitTenant(ctx context.Context, st topo.Store, id string, done func(*cpv1.Tenant, topo.Version) bool) error {
	return waitFor(ctx, st, []string{topo.TenantKey(id)}, func() (bool, error) {
		t, v, err := catalog.GetTenant(ctx, st, id)
		if err != nil {
			return true, err
		}
		return done(t, v), nil
	})
}
