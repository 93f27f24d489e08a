package registry

import (
	"context"
	"errors"
	"fmt"

	"google.golang.org/protobuf/proto"

	"github.com/cellplane/cellplane/controlplane/topo"
	"github.com/cellplane/cellplane/internal/cperr"
	"github.com/cellplane/cellplane/internal/ids"
	cellv1 "github.com/cellplane/cellplane/proto/cellplane/cell/v1"
	cpv1 "github.com/cellplane/cellplane/proto/cellplane/controlplane/v1"
)

// Fences. An emergency promotion takes a tenant from a cell that may still
// be running but that the control plane cannot reach. It writes
// cells/<c>/fence/<t> (CellFence{tenant, epoch, failover_id}) for that
// cell. The cell's leader applies every fence that is not applied yet —
// when the fence watch shows one, and in any case before each publication
// or renewal of its authority (Authority.sync) — by proposing, through its
// own Raft log, SetTenant(t, FENCED, epoch): from then on the tenant
// refuses writes and reads (WRONG_CELL) but keeps its data, so that the
// writes it acknowledged and the standby never received can be inspected
// (CellService.ListChanges). It then writes the fence back with
// applied=true and tseq = the FENCED event's tseq − 1: the last tseq it can
// have acknowledged, from which the control plane computes the lost
// events. The control plane deletes the key once it has read the report.
//
// A cell cut off from etcd cannot see its fences, but it cannot renew its
// authority either, so it acknowledges nothing once its window ends; when
// it comes back it applies the fence before it publishes its authority
// again, and so never acknowledges another write for a fenced tenant.

// FenceRequestID is the request id under which a fence is proposed (and
// deduplicated if proposed again, by this leader or the next); ids.Fit
// keeps it within the id rule for long tenant and failover ids.
func FenceRequestID(f *cpv1.CellFence) string {
	if f.GetFailoverId() != "" {
		return ids.Fit("fence." + f.GetFailoverId())
	}
	return ids.Fit(fmt.Sprintf("fence.%s.e%d", f.GetTenant(), f.GetEpoch()))
}

// applyFence makes the fenced tenant FENCED through Raft and writes the
// report back. A fence whose key changed meanwhile (replaced or deleted by
// the control plane) is read again on the next pass.
func (a *Authority) applyFence(ctx context.Context, sf storedFence) error {
	f := sf.fence
	cmd := &cellv1.Command{
		Tenant:    f.GetTenant(),
		RequestId: FenceRequestID(f),
		Op:        &cellv1.Command_SetTenant{SetTenant: &cellv1.SetTenantOp{Role: cellv1.Role_ROLE_FENCED, Epoch: f.GetEpoch()}},
	}
	var tseq uint64
	res, err := a.prop.Propose(ctx, cmd)
	switch r := cperr.ReasonOf(err); {
	case err == nil:
		// The FENCED event's tseq; a fence the tenant already had (applied
		// again, no new event) answers with the tenant's record, whose tseq
		// is still that event's: a fenced tenant takes no more writes.
		ft := res.GetTseq()
		if ft == 0 {
			ft = res.GetTenant().GetTseq()
		}
		if ft > 0 {
			tseq = ft - 1
		}
	case r == cperr.TenantNotFound || r == cperr.StaleEpoch:
		// The cell does not have the tenant, or has it at a later epoch
		// (it became its owner again since): nothing of it to fence.
		a.log.Warn("fence not applicable; reporting it applied", "tenant", f.GetTenant(), "epoch", f.GetEpoch(), "failover", f.GetFailoverId(), "err", err)
	default:
		return fmt.Errorf("fence %s at epoch %d: %w", f.GetTenant(), f.GetEpoch(), err)
	}
	done := proto.Clone(f).(*cpv1.CellFence)
	done.Applied, done.Tseq = true, tseq
	b, err := proto.Marshal(done)
	if err != nil {
		return err
	}
	_, err = a.st.Txn(ctx, []topo.Cond{topo.IfVersion(sf.key, sf.version)}, []topo.Op{topo.Put(sf.key, b)})
	if errors.Is(err, topo.ErrConditionFailed) {
		return fmt.Errorf("%w: fence %s changed", errAuthorityConflict, sf.key)
	}
	if err != nil {
		return fmt.Errorf("report fence %s: %w", sf.key, err)
	}
	a.m.fencesApplied.Inc()
	a.log.Warn("tenant fenced by an emergency promotion: it no longer takes writes here; its data is kept for inspection",
		"tenant", f.GetTenant(), "epoch", f.GetEpoch(), "failover", f.GetFailoverId(), "tseq", tseq)
	return nil
}
