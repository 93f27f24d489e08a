package api

import (
	"context"
	"errors"
	"fmt"
	"time"
	"unicode/utf8"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/cellplane/cellplane/controlplane/catalog"
	"github.com/cellplane/cellplane/controlplane/topo"
	"github.com/cellplane/cellplane/internal/cperr"
	"github.com/cellplane/cellplane/internal/ids"
	"github.com/cellplane/cellplane/internal/pki"
	"github.com/cellplane/cellplane/internal/tenantmd"
	cellv1 "github.com/cellplane/cellplane/proto/cellplane/cell/v1"
	cpv1 "github.com/cellplane/cellplane/proto/cellplane/controlplane/v1"
)

// SubjectCells is what the audit and erasure RPCs ask of cells
// (cellclient.Client has it): the owner's audit records, and an erase.
type SubjectCells interface {
	ListAudit(ctx context.Context, cell string, req *cellv1.ListAuditRequest) (*cellv1.ListAuditResponse, error)
	EraseSubject(ctx context.Context, cell string, req *cellv1.EraseSubjectRequest) (*cellv1.EraseSubjectResponse, error)
	GetTenant(ctx context.Context, cell, tenant string) (*cellv1.TenantInfo, *cellv1.ReplicationStatus, error)
}

// maxPrincipalLen bounds a principal named in a request (the cells bound
// it like a label value, 512 bytes by default).
const maxPrincipalLen = 512

// owner returns a tenant's placement and its owner cell.
func (s *Server) owner(ctx context.Context, tenant string) (*cpv1.Tenant, error) {
	if s.cfg.Subjects == nil {
		return nil, cperr.New(cperr.ControlPlaneUnavailable, "this control plane replica reaches no cells")
	}
	t, _, err := catalog.GetTenant(ctx, s.st, tenant)
	if errors.Is(err, topo.ErrNotFound) {
		return nil, cperr.New(cperr.TenantNotFound, "tenant %s does not exist", tenant)
	}
	if err != nil {
		return nil, err
	}
	if t.GetCell() == "" {
		return nil, cperr.New(cperr.TenantBusy, "tenant %s has no owner cell yet", tenant)
	}
	return t, nil
}

func checkPrincipal(p string) error {
	if len(p) > maxPrincipalLen || !utf8.ValidString(p) {
		return cperr.Invalid(cperr.FieldViolation{Field: "principal", Description: fmt.Sprintf("UTF-8, at most %d bytes", maxPrincipalLen)})
	}
	return nil
}

// ListTenantAudit implements ControlPlaneService: the owner cell's audit
// records of the tenant (read-only operators may read them).
func (s *Server) ListTenantAudit(ctx context.Context, req *cpv1.ListTenantAuditRequest) (*cpv1.ListTenantAuditResponse, error) {
	if err := s.checkID("tenant", req.GetTenant()); err != nil {
		return nil, err
	}
	if err := checkPrincipal(req.GetPrincipal()); err != nil {
		return nil, err
	}
	if req.GetLimit() > 1000 {
		return nil, cperr.Invalid(cperr.FieldViolation{Field: "limit", Description: "at most 1000"})
	}
	t, err := s.owner(ctx, req.GetTenant())
	if err != nil {
		return nil, err
	}
	creq := &cellv1.ListAuditRequest{Tenant: req.GetTenant(), AfterTseq: req.GetAfterTseq(), Limit: req.GetLimit(), Principal: req.GetPrincipal()}
	if since := req.GetSince(); since != nil {
		creq.SinceUnixNano = max(since.AsTime().UnixNano(), 0)
	}
	resp, err := s.cfg.Subjects.ListAudit(ctx, t.GetCell(), creq)
	if err != nil {
		return nil, err
	}
	return &cpv1.ListTenantAuditResponse{Records: resp.GetRecords(), NextAfterTseq: resp.GetNextAfterTseq(), Cell: t.GetCell()}, nil
}

// EraseSubject implements ControlPlaneService (admin operators only): the
// owner cell erases the subject; the report then waits (bounded by the
// request's wait, else EraseWait, at most MaxEraseWait) for the standby to
// have applied the erase's tseq, or says it is pending.
func (s *Server) EraseSubject(ctx context.Context, req *cpv1.EraseSubjectRequest) (*cpv1.EraseSubjectResponse, error) {
	if err := s.checkID("tenant", req.GetTenant()); err != nil {
		return nil, err
	}
	switch p, c := req.GetPrincipal(), req.GetContextId(); {
	case (p == "") == (c == ""):
		return nil, cperr.Invalid(cperr.FieldViolation{Field: "principal", Description: "exactly one of principal and context_id is required"})
	case c != "":
		if err := s.checkID("context_id", c); err != nil {
			return nil, err
		}
	default:
		if err := checkPrincipal(p); err != nil {
			return nil, err
		}
	}
	if rid := req.GetRequestId(); rid != "" && !ids.Valid(rid, s.cfg.MaxIDLen) {
		return nil, cperr.Invalid(cperr.FieldViolation{Field: "request_id", Description: "an id ([A-Za-z0-9._-])"})
	}
	wait := s.cfg.EraseWait
	if w := req.GetWait(); w != nil {
		wait = w.AsDuration()
	}
	if wait < 0 {
		return nil, cperr.Invalid(cperr.FieldViolation{Field: "wait", Description: "must not be negative"})
	}
	wait = min(wait, s.cfg.MaxEraseWait)
	t, err := s.owner(ctx, req.GetTenant())
	if err != nil {
		return nil, err
	}
	// The erase's audit record names the operator who asked for it.
	who := "controlplane"
	if id, err := pki.PeerIdentity(ctx); err == nil {
		who = id.String()
	}
	cctx := tenantmd.WithCaller(ctx, who, "controlplane:EraseSubject")
	res, err := s.cfg.Subjects.EraseSubject(cctx, t.GetCell(), &cellv1.EraseSubjectRequest{
		Tenant: req.GetTenant(), Principal: req.GetPrincipal(), ContextId: req.GetContextId(), RequestId: req.GetRequestId()})
	if err != nil {
		return nil, err
	}
	out := &cpv1.EraseSubjectResponse{Tenant: req.GetTenant(), Cell: t.GetCell(), Tseq: res.GetTseq(),
		Time: timestamppb.New(time.Unix(0, res.GetTimeUnixNano())), Erased: res.GetErased(), Deduplicated: res.GetDeduplicated(),
		StandbyCell: t.GetStandbyCell()}
	s.log.Info("subject erased", "tenant", req.GetTenant(), "cell", t.GetCell(), "tseq", res.GetTseq(), "by", who)
	if t.GetStandbyCell() != "" {
		s.awaitStandby(ctx, out, wait)
	}
	return out, nil
}

// eraseAckPoll is how often the report asks the standby how far it is.
const eraseAckPoll = 100 * time.Millisecond

// awaitStandby polls the standby's applied tseq until it covers the
// erase, or wait ends (the report then says pending).
func (s *Server) awaitStandby(ctx context.Context, out *cpv1.EraseSubjectResponse, wait time.Duration) {
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	for {
		qctx, qcancel := context.WithTimeout(ctx, s.cfg.StandbyStatusTimeout)
		info, repl, err := s.cfg.Subjects.GetTenant(qctx, out.GetStandbyCell(), out.GetTenant())
		qcancel()
		if err == nil {
			applied := max(info.GetTseq(), repl.GetAppliedTseq())
			out.StandbyAppliedTseq = applied
			if applied >= out.GetTseq() {
				out.StandbyApplied = true
				out.StandbyObservedTime = timestamppb.Now()
				return
			}
		}
		timer := time.NewTimer(eraseAckPoll)
		select {
		case <-ctx.Done():
			timer.Stop()
			return
		case <-timer.C:
		}
	}
}
