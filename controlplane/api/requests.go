package api

// Request ids: an optional idempotency key on CreateTenant, StartMove and
// Failover, so that a client that retries a call whose answer it lost (a
// timeout, a broken connection, an interrupted `terraform apply`) never
// starts a second operation. The id and a SHA-256 of the request (without
// the id) are recorded with what the call started (the tenant, the move,
// the failovers); a call whose id is found there returns what the first
// call started, and one whose request differs is refused with
// REQUEST_ID_REUSED before anything is written. The records are the
// memory: a create's id lives as long as the tenant, a move's as long as
// finished moves are kept, a failover's as long as failovers are.

import (
	"context"
	"crypto/sha256"
	"errors"
	"slices"

	"google.golang.org/protobuf/proto"

	"github.com/cellplane/cellplane/controlplane/catalog"
	"github.com/cellplane/cellplane/controlplane/intent"
	"github.com/cellplane/cellplane/controlplane/topo"
	"github.com/cellplane/cellplane/internal/cperr"
	cpv1 "github.com/cellplane/cellplane/proto/cellplane/controlplane/v1"
)

// requestHash fingerprints req without its request id (clear sets it to
// "" on the clone).
func requestHash[T proto.Message](req T, clear func(T)) []byte {
	c := proto.Clone(req).(T)
	clear(c)
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(c)
	if err != nil {
		return nil // unreachable for a message that was just unmarshalled
	}
	h := sha256.Sum256(b)
	return h[:]
}

func reused(id, what string) error {
	return cperr.New(cperr.RequestIDReused, "request id %s was used by a different request (%s): use a new id for a new request", id, what)
}

// createRetry looks for the tenant a CreateTenant with req's request id
// created: found is true when the call is answered from it (the tenant,
// once placed, or the error).
func (s *Server) createRetry(ctx context.Context, req *cpv1.CreateTenantRequest, hash []byte) (resp *cpv1.CreateTenantResponse, found bool, err error) {
	t, _, err := catalog.GetTenant(ctx, s.st, req.GetId())
	switch {
	case errors.Is(err, topo.ErrNotFound):
		return nil, false, nil
	case err != nil:
		return nil, true, err
	case t.GetCreateRequestId() != req.GetRequestId():
		return nil, false, nil // another create's tenant: ALREADY_EXISTS on the normal path
	case !slices.Equal(t.GetCreateRequestHash(), hash):
		return nil, true, reused(req.GetRequestId(), "the create of tenant "+req.GetId()+" with other settings")
	}
	placed, err := s.waitCreate(ctx, req.GetId())
	if err != nil {
		return nil, true, err
	}
	return &cpv1.CreateTenantResponse{Tenant: placed}, true, nil
}

// moveRetry returns the move a StartMove with req's request id started
// (nil if none).
func (s *Server) moveRetry(ctx context.Context, req *cpv1.StartMoveRequest, hash []byte) (*cpv1.Move, error) {
	moves, err := intent.ListMoves(ctx, s.st, intent.MoveFilter{Tenant: req.GetTenant(), All: true})
	if err != nil {
		return nil, err
	}
	for _, mv := range moves {
		if mv.GetRequestId() != req.GetRequestId() {
			continue
		}
		if !slices.Equal(mv.GetRequestHash(), hash) {
			return nil, reused(req.GetRequestId(), "move "+mv.GetId())
		}
		return mv, nil
	}
	return nil, nil
}

// failoverRetry returns the failovers a Failover with req's request id
// started (none if it is new).
func (s *Server) failoverRetry(ctx context.Context, req *cpv1.FailoverRequest, hash []byte) ([]*cpv1.Failover, error) {
	all, err := intent.ListFailovers(ctx, s.st, intent.FailoverFilter{Tenant: req.GetTenant()})
	if err != nil {
		return nil, err
	}
	var out []*cpv1.Failover
	for _, fo := range all {
		if fo.GetRequestId() != req.GetRequestId() {
			continue
		}
		if !slices.Equal(fo.GetRequestHash(), hash) {
			return nil, reused(req.GetRequestId(), "failover "+fo.GetId())
		}
		out = append(out, fo)
	}
	return out, nil
}
