package service

import (
	"context"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/cellplane/cellplane/cells/store"
	"github.com/cellplane/cellplane/cells/validate"
	"github.com/cellplane/cellplane/internal/cperr"
	"github.com/cellplane/cellplane/internal/retry"
	"github.com/cellplane/cellplane/internal/tenantmd"
	cellv1 "github.com/cellplane/cellplane/proto/cellplane/cell/v1"
	contextv1 "github.com/cellplane/cellplane/proto/cellplane/context/v1"
)

// requireAdmin is the one rule for a tenant admin's ContextService calls
// (ReadAudit): the call must come through the router from a credential
// holding the tenant's admin scope (the router checks auth.MethodScopes
// and marks such a call with tenantmd.AdminKey, which it never takes from
// a client). A tenant token (the smart client's direct path) never
// carries it: the cell's authoriser drops it, and routers mint tokens for
// no admin grant. Operators read the audit log with 'cellctl tenant
// audit' through the control plane (CellService.ListAudit) instead.
func requireAdmin(ctx context.Context) error {
	if tenantmd.IsAdmin(ctx) {
		return nil
	}
	return cperr.New(cperr.PermissionDenied,
		"reading the audit log needs the tenant's admin scope (a key or token with scope admin, through the router); operators use 'cellctl tenant audit'")
}

// ReadAudit implements ContextService.ReadAudit for a tenant admin
// (requireAdmin): the tenant's audit records on its owner.
func (s *ContextServer) ReadAudit(ctx context.Context, req *contextv1.ReadAuditRequest) (*contextv1.ReadAuditResponse, error) {
	if err := requireAdmin(ctx); err != nil {
		return nil, err
	}
	return tenantCall(ctx, s.core, req, func(lim validate.Limits, r *contextv1.ReadAuditRequest) error {
		return validate.ListAudit(lim, auditRequest("t", r))
	}, func(tenant string, epoch uint64) (*contextv1.ReadAuditResponse, error) {
		creq := auditRequest(tenant, req)
		resp := &contextv1.ReadAuditResponse{}
		err := s.st.ReadTenant(ctx, tenant, epoch, store.ReadOptions{}, func(v *store.TenantView) error {
			recs, next, err := v.Audit(store.AuditQuery{AfterTseq: creq.GetAfterTseq(), Limit: int(max(creq.GetLimit(), 1)),
				Principal: creq.GetPrincipal(), SinceUnixNano: creq.GetSinceUnixNano()})
			for _, r := range recs {
				resp.Records = append(resp.Records, auditEntry(r))
			}
			resp.NextAfterTseq = next
			return err
		})
		if err != nil {
			return nil, s.storeErr("read_audit", err)
		}
		return resp, nil
	}, func(ctx context.Context, cc *grpc.ClientConn) (*contextv1.ReadAuditResponse, error) {
		return contextv1.NewContextServiceClient(cc).ReadAudit(ctx, req)
	})
}

// auditRequest is the CellService form of a ReadAuditRequest (limit 0:
// 100, as CellService.ListAudit).
func auditRequest(tenant string, r *contextv1.ReadAuditRequest) *cellv1.ListAuditRequest {
	out := &cellv1.ListAuditRequest{Tenant: tenant, AfterTseq: r.GetAfterTseq(), Limit: r.GetLimit(), Principal: r.GetPrincipal()}
	if out.Limit == 0 {
		out.Limit = 100
	}
	if t := r.GetSince(); t != nil {
		out.SinceUnixNano = t.AsTime().UnixNano()
	}
	return out
}

func auditEntry(r *cellv1.AuditRecord) *contextv1.AuditEntry {
	return &contextv1.AuditEntry{Tseq: r.GetTseq(), Time: timestamppb.New(time.Unix(0, r.GetTimeUnixNano())), Principal: r.GetPrincipal(),
		Origin: r.GetOrigin(), RequestId: r.GetRequestId(), Op: r.GetOp(), ContextId: r.GetContextId(), MemoryKey: r.GetMemoryKey(),
		ErasedAtTseq: r.GetErasedAtTseq()}
}

// Erase implements ContextService.Erase for a tenant admin (requireAdmin):
// the erasure of a principal's data or of one context on the owner, then
// a bounded wait for the standby's acknowledgement of the erase's tseq
// (the replica floor its sink's acks move), so that the answer says
// whether the erasure reached the standby.
func (s *ContextServer) Erase(ctx context.Context, req *contextv1.EraseRequest) (*contextv1.EraseResponse, error) {
	if err := requireAdmin(ctx); err != nil {
		return nil, err
	}
	return tenantCall(ctx, s.core, req, func(lim validate.Limits, r *contextv1.EraseRequest) error {
		return validate.Erase(lim, r, s.cfg.MaxEraseWait)
	}, func(tenant string, epoch uint64) (*contextv1.EraseResponse, error) {
		res, err := s.erase(ctx, tenant, epoch, req.GetPrincipal(), req.GetContextId(), req.GetRequestId())
		if err != nil {
			return nil, err
		}
		e := res.GetErased()
		out := &contextv1.EraseResponse{Tseq: res.GetTseq(), Time: timestamppb.New(time.Unix(0, res.GetTimeUnixNano())), Cell: s.cfg.CellID,
			ContextsDeleted: e.GetContextsDeleted(), MemoryKeysDeleted: e.GetMemoryKeysDeleted(), EventsScrubbed: e.GetEventsScrubbed(),
			DedupRecordsDeleted: e.GetDedupRecordsScrubbed(), Deduplicated: res.GetDeduplicated()}
		wait := s.cfg.EraseWait
		if w := req.GetWait(); w != nil {
			wait = w.AsDuration()
		}
		deadline := time.Now().Add(wait)
		for {
			var floor uint64
			_ = s.st.ReadReplica(tenant, func(v *store.TenantView) error { floor = v.Record().GetReplicaFloorTseq(); return nil })
			out.HasStandby, out.StandbyTseq = floor > 0, floor
			if floor >= out.GetTseq() {
				out.StandbyApplied = true
				return out, nil
			}
			if floor == 0 || !time.Now().Before(deadline) {
				return out, nil
			}
			if err := retry.Sleep(ctx, 100*time.Millisecond); err != nil {
				return out, nil // the caller gave up: report what is known
			}
		}
	}, func(ctx context.Context, cc *grpc.ClientConn) (*contextv1.EraseResponse, error) {
		return contextv1.NewContextServiceClient(cc).Erase(ctx, req)
	})
}
