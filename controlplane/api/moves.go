package api

import (
	"context"
	"errors"

	"github.com/cellplane/cellplane/controlplane/intent"
	"github.com/cellplane/cellplane/internal/cperr"
	"github.com/cellplane/cellplane/internal/ids"
	cpv1 "github.com/cellplane/cellplane/proto/cellplane/controlplane/v1"
)

// maxMoveIDLen bounds move ids: "<tenant>-<8 hex digits>".
const maxMoveIDLen = ids.MaxLen

// StartMove implements ControlPlaneService: it records the move (or, with
// dry_run, only validates it) and returns it with its plan; the
// controller leader drives it (GetMove shows its progress).
func (s *Server) StartMove(ctx context.Context, req *cpv1.StartMoveRequest) (*cpv1.StartMoveResponse, error) {
	if err := s.checkID("tenant", req.GetTenant()); err != nil {
		return nil, err
	}
	if err := s.checkID("target_cell", req.GetTargetCell()); err != nil {
		return nil, err
	}
	var rhash []byte
	if rid := req.GetRequestId(); rid != "" && !req.GetDryRun() {
		if err := s.checkID("request_id", rid); err != nil {
			return nil, err
		}
		rhash = requestHash(req, func(r *cpv1.StartMoveRequest) { r.RequestId = "" })
		if mv, err := s.moveRetry(ctx, req, rhash); err != nil || mv != nil {
			return &cpv1.StartMoveResponse{Move: mv}, err
		}
	}
	mv, plan, err := intent.StartMove(ctx, s.st, intent.MoveRequest{Tenant: req.GetTenant(), Target: req.GetTargetCell(), DryRun: req.GetDryRun(),
		RequestID: req.GetRequestId(), RequestHash: rhash})
	if err != nil {
		if rhash != nil && errors.Is(err, cperr.ErrTenantBusy) {
			// A concurrent call with the same request id got there first?
			if mv, rerr := s.moveRetry(ctx, req, rhash); rerr != nil || mv != nil {
				return &cpv1.StartMoveResponse{Move: mv}, rerr
			}
		}
		return nil, err
	}
	if !req.GetDryRun() {
		s.log.Info("move started", "move", mv.GetId(), "tenant", mv.GetTenant(), "cell", mv.GetTargetCell(), "source_cell", mv.GetSourceCell())
	}
	return &cpv1.StartMoveResponse{Move: mv, Plan: plan}, nil
}

// GetMove implements ControlPlaneService.
func (s *Server) GetMove(ctx context.Context, req *cpv1.GetMoveRequest) (*cpv1.GetMoveResponse, error) {
	if err := checkMoveID(req.GetId()); err != nil {
		return nil, err
	}
	mv, _, err := intent.GetMove(ctx, s.st, req.GetId())
	if err != nil {
		return nil, err
	}
	return &cpv1.GetMoveResponse{Move: mv}, nil
}

// ListMoves implements ControlPlaneService: the unfinished moves (with
// all, also the finished ones still kept), oldest first.
func (s *Server) ListMoves(ctx context.Context, req *cpv1.ListMovesRequest) (*cpv1.ListMovesResponse, error) {
	for _, f := range []struct{ name, id string }{{"tenant", req.GetTenant()}, {"cell", req.GetCell()}} {
		if f.id != "" {
			if err := s.checkID(f.name, f.id); err != nil {
				return nil, err
			}
		}
	}
	moves, err := intent.ListMoves(ctx, s.st, intent.MoveFilter{Tenant: req.GetTenant(), Cell: req.GetCell(), All: req.GetAll()})
	if err != nil {
		return nil, err
	}
	return &cpv1.ListMovesResponse{Moves: moves}, nil
}

// CancelMove implements ControlPlaneService: it records the cancel
// request, which the leader honours until the fence (the target's copy is
// deleted); MOVE_NOT_CANCELLABLE after it.
func (s *Server) CancelMove(ctx context.Context, req *cpv1.CancelMoveRequest) (*cpv1.CancelMoveResponse, error) {
	if err := checkMoveID(req.GetId()); err != nil {
		return nil, err
	}
	mv, err := intent.CancelMove(ctx, s.st, req.GetId())
	if err != nil {
		return nil, err
	}
	s.log.Info("move cancel requested", "move", mv.GetId(), "tenant", mv.GetTenant())
	return &cpv1.CancelMoveResponse{Move: mv}, nil
}

// DrainCell implements ControlPlaneService: it marks the cell DRAINING and
// records the drain; the leader moves its tenants out, concurrency at a
// time (0: the recorded or the default concurrency). The answer is the
// progress right after (moves start within a drain pass).
func (s *Server) DrainCell(ctx context.Context, req *cpv1.DrainCellRequest) (*cpv1.DrainCellResponse, error) {
	if err := s.checkID("cell", req.GetCell()); err != nil {
		return nil, err
	}
	if req.GetConcurrency() > maxDrainConcurrency {
		return nil, cperr.Invalid(cperr.FieldViolation{Field: "concurrency", Description: "at most 1000"})
	}
	p, err := intent.StartDrain(ctx, s.st, req.GetCell(), req.GetConcurrency())
	if err != nil {
		return nil, err
	}
	s.log.Info("cell draining", "cell", req.GetCell(), "remaining", p.Remaining)
	return &cpv1.DrainCellResponse{Cell: p.Cell, Remaining: p.Remaining, Moves: p.Moves}, nil
}

const maxDrainConcurrency = 1000

func checkMoveID(id string) error {
	return ids.Check("id", id, maxMoveIDLen)
}
