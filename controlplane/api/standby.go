package api

import (
	"context"
	"errors"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/cellplane/cellplane/controlplane/intent"
	"github.com/cellplane/cellplane/controlplane/topo"
	"github.com/cellplane/cellplane/internal/cperr"
	cellv1 "github.com/cellplane/cellplane/proto/cellplane/cell/v1"
	cpv1 "github.com/cellplane/cellplane/proto/cellplane/controlplane/v1"
)

// CellReader is what the API asks of cells: a tenant's record and
// replication stream on a cell's leader (cellclient.Client has it).
type CellReader interface {
	GetTenant(ctx context.Context, cell, tenant string) (*cellv1.TenantInfo, *cellv1.ReplicationStatus, error)
}

// SetStandby implements ControlPlaneService: it records the standby cell
// (and its load); the controller leader makes the cell a STANDBY, and its
// leader copies and streams. GetTenant shows the replication.
func (s *Server) SetStandby(ctx context.Context, req *cpv1.SetStandbyRequest) (*cpv1.SetStandbyResponse, error) {
	if err := s.checkID("tenant", req.GetTenant()); err != nil {
		return nil, err
	}
	if req.GetRegion() == "" && req.GetCell() == "" {
		return nil, cperr.Invalid(cperr.FieldViolation{Field: "region", Description: "a region or a cell for the standby is required"})
	}
	for _, f := range []struct{ name, id string }{{"region", req.GetRegion()}, {"cell", req.GetCell()}} {
		if f.id != "" {
			if err := s.checkID(f.name, f.id); err != nil {
				return nil, err
			}
		}
	}
	if r := req.GetRegion(); r != "" {
		if _, err := s.st.Get(ctx, topo.RegionKey(r)); errors.Is(err, topo.ErrNotFound) {
			return nil, cperr.New(cperr.RegionNotFound, "region %s does not exist", r)
		} else if err != nil {
			return nil, err
		}
	}
	t, err := intent.SetStandby(ctx, s.st, req.GetTenant(), req.GetRegion(), req.GetCell())
	if err != nil {
		return nil, err
	}
	s.log.Info("standby set", "tenant", t.GetId(), "cell", t.GetStandbyCell())
	return &cpv1.SetStandbyResponse{Tenant: t}, nil
}

// ClearStandby implements ControlPlaneService: the leader removes the
// standby's copy, then the placement's standby; the call waits for it.
func (s *Server) ClearStandby(ctx context.Context, req *cpv1.ClearStandbyRequest) (*cpv1.ClearStandbyResponse, error) {
	if err := s.checkID("tenant", req.GetTenant()); err != nil {
		return nil, err
	}
	cell, err := intent.StartClearStandby(ctx, s.st, req.GetTenant())
	if err != nil {
		return nil, err
	}
	wctx, cancel := s.waitContext(ctx)
	defer cancel()
	t, err := intent.WaitStandbyCleared(wctx, s.st, req.GetTenant(), cell)
	if errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
		return nil, cperr.New(cperr.ControlPlaneUnavailable,
			"the standby %s of tenant %s is being cleared but is not yet after %v (is a controller leader running? is the cell up?)", cell, req.GetTenant(), s.cfg.WorkflowWait).
			WithRetryAfter(time.Second)
	}
	if err != nil {
		return nil, err
	}
	if cell != "" {
		s.log.Info("standby cleared", "tenant", req.GetTenant(), "cell", cell)
	}
	return &cpv1.ClearStandbyResponse{Tenant: t}, nil
}

// standbyLag asks the standby's leader (within StandbyStatusTimeout) how
// far behind it is; nil when the tenant has no standby or the cell does
// not answer (GetTenant never fails because of a standby).
func (s *Server) standbyLag(ctx context.Context, t *cpv1.Tenant) *cpv1.ReplicationLag {
	if t.GetStandbyCell() == "" || s.cfg.Cells == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.StandbyStatusTimeout)
	defer cancel()
	info, repl, err := s.cfg.Cells.GetTenant(ctx, t.GetStandbyCell(), t.GetId())
	if err != nil {
		s.log.Debug("standby did not answer", "tenant", t.GetId(), "cell", t.GetStandbyCell(), "err", err)
		return nil
	}
	out := &cpv1.ReplicationLag{StandbyCell: t.GetStandbyCell(), AppliedTseq: info.GetTseq()}
	if repl != nil {
		out.AppliedTseq = max(out.AppliedTseq, repl.GetAppliedTseq())
		out.SourceTseq = repl.GetSourceTseq()
		out.LagEvents = repl.GetLagEvents()
		out.Lag = repl.GetLag()
		out.State = repl.GetState()
		out.LastError = repl.GetLastError()
	}
	if out.Lag == nil {
		out.Lag = durationpb.New(0)
	}
	return out
}

// standbyForCreate validates CreateTenantRequest.standby_region and picks
// the standby cell recorded with the create intent (the workflow checks
// it again and counts it when it publishes the placement).
func (s *Server) standbyForCreate(ctx context.Context, req *cpv1.CreateTenantRequest) (string, error) {
	region := req.GetStandbyRegion()
	if region == "" {
		return "", nil
	}
	if err := s.checkID("standby_region", region); err != nil {
		return "", err
	}
	if region == req.GetHomeRegion() {
		return "", cperr.Invalid(cperr.FieldViolation{Field: "standby_region", Description: "must differ from the home region"})
	}
	if _, err := s.st.Get(ctx, topo.RegionKey(region)); errors.Is(err, topo.ErrNotFound) {
		return "", cperr.New(cperr.RegionNotFound, "region %s does not exist", region)
	} else if err != nil {
		return "", err
	}
	return intent.ChooseStandby(ctx, s.st, "", region, "")
}
