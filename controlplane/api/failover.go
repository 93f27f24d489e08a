package api

import (
	"context"
	"errors"
	"time"

	"github.com/cellplane/cellplane/controlplane/intent"
	"github.com/cellplane/cellplane/internal/cperr"
	cpv1 "github.com/cellplane/cellplane/proto/cellplane/controlplane/v1"
)

// failoverAckWait bounds how long Failover waits for the controller
// leader to take the new failovers' first step (the standby checked), so
// that NO_STANDBY comes back as the call's error. It is capped by the
// call's deadline and WorkflowWait; after it the call returns the
// recorded failovers, which the operator follows with GetFailover.
const failoverAckWait = 5 * time.Second

// Failover implements ControlPlaneService: it records a switchover or an
// emergency promotion of one tenant, or of every tenant a cell owns that
// has a standby, and returns the failovers — for one tenant once the
// leader checked its standby (or after a short bound), so that NO_STANDBY
// is the call's error. The leader drives them to the end.
func (s *Server) Failover(ctx context.Context, req *cpv1.FailoverRequest) (*cpv1.FailoverResponse, error) {
	switch {
	case req.GetTenant() != "" && req.GetCell() != "":
		return nil, cperr.Invalid(cperr.FieldViolation{Field: "cell", Description: "give a tenant or a cell, not both"})
	case req.GetTenant() != "":
		if err := s.checkID("tenant", req.GetTenant()); err != nil {
			return nil, err
		}
	case req.GetCell() != "":
		if err := s.checkID("cell", req.GetCell()); err != nil {
			return nil, err
		}
	default:
		return nil, cperr.Invalid(cperr.FieldViolation{Field: "tenant", Description: "a tenant or a cell is required"})
	}
	var (
		rhash []byte
		prev  []*cpv1.Failover
	)
	if rid := req.GetRequestId(); rid != "" {
		if err := s.checkID("request_id", rid); err != nil {
			return nil, err
		}
		rhash = requestHash(req, func(r *cpv1.FailoverRequest) { r.RequestId = "" })
		var err error
		if prev, err = s.failoverRetry(ctx, req, rhash); err != nil {
			return nil, err
		}
		if len(prev) > 0 && req.GetTenant() != "" {
			// The tenant's failover was started: answer as the first call.
			fo := prev[len(prev)-1]
			if ferr := intent.FailoverError(fo); ferr != nil {
				return nil, ferr
			}
			return &cpv1.FailoverResponse{Failovers: []*cpv1.Failover{fo}}, nil
		}
	}
	fos, err := intent.StartFailover(ctx, s.st, intent.FailoverRequest{
		Tenant: req.GetTenant(), Cell: req.GetCell(), Kind: req.GetKind(), Trigger: "operator",
		RequestID: req.GetRequestId(), RequestHash: rhash,
	})
	if err != nil && rhash != nil && (errors.Is(err, cperr.ErrTenantBusy) || errors.Is(err, cperr.ErrNoStandby)) {
		// A retry of a cell's failover: what the first call started holds
		// its tenants (or moved them). A tenant's: a concurrent call with
		// the same id may have got there first.
		if again, rerr := s.failoverRetry(ctx, req, rhash); rerr == nil && len(again) > 0 {
			prev, fos, err = nil, again, nil
		}
	}
	if err != nil {
		return nil, err
	}
	fos = append(prev, fos...)
	for _, fo := range fos {
		s.log.Warn("failover started", "failover", fo.GetId(), "kind", intent.FailoverKindName(fo.GetKind()),
			"tenant", fo.GetTenant(), "cell", fo.GetFromCell(), "standby", fo.GetToCell(), "epoch", fo.GetOldEpoch())
	}
	if req.GetTenant() == "" {
		// A cell's failovers are many: the caller follows them (a tenant's
		// NO_STANDBY is in its record).
		return &cpv1.FailoverResponse{Failovers: fos}, nil
	}
	fos, err = intent.WaitFailoverAck(ctx, s.st, fos, min(failoverAckWait, s.cfg.WorkflowWait))
	if err != nil {
		return nil, err
	}
	if ferr := intent.FailoverError(fos[0]); ferr != nil {
		return nil, ferr
	}
	return &cpv1.FailoverResponse{Failovers: fos}, nil
}

// GetFailover implements ControlPlaneService.
func (s *Server) GetFailover(ctx context.Context, req *cpv1.GetFailoverRequest) (*cpv1.GetFailoverResponse, error) {
	if err := s.checkID("id", req.GetId()); err != nil {
		return nil, err
	}
	fo, _, err := intent.GetFailover(ctx, s.st, req.GetId())
	if err != nil {
		return nil, err
	}
	return &cpv1.GetFailoverResponse{Failover: fo}, nil
}

// ListFailovers implements ControlPlaneService: every recorded failover
// (oldest first), optionally only a tenant's or those from or to a cell.
func (s *Server) ListFailovers(ctx context.Context, req *cpv1.ListFailoversRequest) (*cpv1.ListFailoversResponse, error) {
	for _, f := range []struct{ name, id string }{{"tenant", req.GetTenant()}, {"cell", req.GetCell()}} {
		if f.id != "" {
			if err := s.checkID(f.name, f.id); err != nil {
				return nil, err
			}
		}
	}
	fos, err := intent.ListFailovers(ctx, s.st, intent.FailoverFilter{Tenant: req.GetTenant(), Cell: req.GetCell()})
	if err != nil {
		return nil, err
	}
	return &cpv1.ListFailoversResponse{Failovers: fos}, nil
}
