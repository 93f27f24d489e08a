package controller

import (
	"context"
	"errors"
	"fmt"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/cellplane/cellplane/controlplane/catalog"
	"github.com/cellplane/cellplane/controlplane/topo"
	"github.com/cellplane/cellplane/internal/retry"
	cellv1 "github.com/cellplane/cellplane/proto/cellplane/cell/v1"
	cpv1 "github.com/cellplane/cellplane/proto/cellplane/controlplane/v1"
)

// Tenant quotas. A tenant's max_bytes is its storage quota at its owner
// cell (H4), given to the cell when the tenant is placed and carried by
// moves (exports) and replication (the owner's change log). UpdateTenant
// changes it by marking the placement quota_pending; the leader pushes the
// record's max_bytes to the owner cell (SetTenant at the placement's role
// and epoch, which only changes the quota and is logged, so the standby
// and a move's target follow) and clears the mark in a write guarded by
// the record's version: a placement that changed meanwhile (a move's
// flip, a failover, another update) is read and pushed again. An
// emergency promotion marks the placement too (failover.go): the events
// the old owner lost may hold a quota change the new owner never got.

// leadQuotas pushes every pending quota, now and as records change.
func (r *runner) leadQuotas(ctx context.Context) {
	r.follow(ctx, topo.TenantsPrefix, func(ev topo.Event) {
		rec, ok, err := catalog.TenantEvent(ev)
		if !ok || err != nil || !rec.Value.GetQuotaPending() {
			return
		}
		id := rec.Value.GetId()
		r.spawn(ctx, "quota:"+id, nil, func(ctx context.Context) { r.pushQuota(ctx, id) })
	})
}

// pushQuota drives tenant id's pending quota to its cell, retrying with
// backoff (a cell down, a move fencing the owner) until the mark is
// cleared, the tenant is gone, or this replica stops leading.
func (r *runner) pushQuota(ctx context.Context, id string) {
	c := r.c
	backoff := c.backoff()
	for ctx.Err() == nil {
		done, err := r.pushQuotaOnce(ctx, id)
		switch {
		case done:
			return
		case errors.Is(err, errNotLeader):
			return
		case err == nil || errors.Is(err, errConflict):
			backoff.Reset()
			continue
		}
		wait := backoff.Next()
		c.log.Warn("tenant quota push failed; retrying", "tenant", id, "err", err, "retry_in", wait)
		if retry.Sleep(ctx, wait) != nil {
			return
		}
	}
}

// pushQuotaOnce makes one attempt; done reports that nothing is pending.
func (r *runner) pushQuotaOnce(ctx context.Context, id string) (done bool, err error) {
	c := r.c
	t, tv, err := catalog.GetTenant(ctx, c.st, id)
	switch {
	case errors.Is(err, topo.ErrNotFound):
		return true, nil
	case err != nil:
		return false, err
	case !t.GetQuotaPending() || t.GetState() == cpv1.TenantState_TENANT_STATE_DELETING:
		return true, nil
	case t.GetState() != cpv1.TenantState_TENANT_STATE_ACTIVE || t.GetCell() == "" || t.GetCuttingOver():
		return false, fmt.Errorf("tenant %s is %s (cutting over: %v): waiting for its placement", id, t.GetState(), t.GetCuttingOver())
	}
	if k := c.cfg.TestingKnobs.BeforeQuotaPush; k != nil {
		if err := k(ctx, t); err != nil {
			return false, err
		}
	}
	cctx, cancel := context.WithTimeout(ctx, c.cfg.CellCallTimeout)
	_, err = c.cells.SetTenant(cctx, t.GetCell(), &cellv1.SetTenantRequest{
		Tenant: id, Role: cellv1.Role_ROLE_OWNER, Epoch: t.GetEpoch(),
		// One id per record version: pushing A, then B, then A again are
		// three requests to the cell's deduplication.
		RequestId: fmt.Sprintf("%s.quota.v%d", id, tv),
		Quota: &cellv1.TenantQuota{MaxBytes: t.GetLimits().GetMaxBytes(),
			DefaultRetentionNanos: int64(t.GetLimits().GetDefaultRetention().AsDuration())},
	})
	cancel()
	if err != nil {
		return false, fmt.Errorf("cell %s: set the quota of %s at epoch %d: %w", t.GetCell(), id, t.GetEpoch(), err)
	}
	next := proto.Clone(t).(*cpv1.Tenant)
	next.QuotaPending = false
	next.UpdateTime = timestamppb.Now()
	if err := r.commit(ctx, []topo.Cond{topo.IfVersion(topo.TenantKey(id), tv)}, []topo.Op{topo.Put(topo.TenantKey(id), catalog.Encode(next))}); err != nil {
		return false, err
	}
	c.log.Info("tenant quota set", "tenant", id, "cell", t.GetCell(), "epoch", t.GetEpoch(), "max_bytes", t.GetLimits().GetMaxBytes())
	return true, nil
}
