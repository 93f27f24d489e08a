package provider

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"

	"google.golang.org/protobuf/proto"

	"github.com/cellplane/cellplane/internal/cperr"
	"github.com/cellplane/cellplane/internal/retry"
	cpv1 "github.com/cellplane/cellplane/proto/cellplane/controlplane/v1"
)

// Request ids of the long operations the provider starts (tenant create,
// move; it starts no failover). They are derived, not random, so that
// nothing has to be remembered between two applies: a retried call, an
// apply that timed out and one whose process was killed (which saves
// nothing, not even private state) all send the same id for the same
// intent, and the control plane answers with the operation the first call
// started instead of starting a second one (a different request under the
// same id is REQUEST_ID_REUSED).
//
//   - create: "tf-c-" + SHA-256 of the CreateTenantRequest (without its
//     id), i.e. of the tenant id and the planned values it sends,
//     deletion_protection among them (the control plane's request hash
//     covers every field, so the id must too, else a changed value would
//     be REQUEST_ID_REUSED). The same configuration resumes the same
//     create; a changed configuration after a failed apply is a different
//     request (ALREADY_EXISTS: import it). An unprotected create derives
//     the id it had before deletion_protection was sent (proto3 omits a
//     false bool); TestRequestIDs pins both.
//   - move: "tf-m-" + SHA-256 of the tenant, the target cell and the
//     placement it moves from (source cell and epoch). Every move or
//     failover bumps the epoch, so a later move to the same cell is a new
//     request, while an interrupted one (epoch unchanged until its flip)
//     keeps its id.
const (
	createRequestPrefix = "tf-c-"
	moveRequestPrefix   = "tf-m-"
	requestHashChars    = 40 // hex characters of the hash kept in an id
)

// createRequestID is the request id of a CreateTenant (req.RequestId is
// ignored).
func createRequestID(req *cpv1.CreateTenantRequest) string {
	c := proto.Clone(req).(*cpv1.CreateTenantRequest)
	c.RequestId = ""
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(c)
	if err != nil {
		panic(err) // a message built in this process always marshals
	}
	return requestID(createRequestPrefix, b)
}

// moveRequestID is the request id of a move of tenant from (cell, epoch)
// to target.
func moveRequestID(tenant, target, fromCell string, fromEpoch uint64) string {
	b := []byte(tenant + "\x00" + target + "\x00" + fromCell + "\x00" + strconv.FormatUint(fromEpoch, 10))
	return requestID(moveRequestPrefix, b)
}

func requestID(prefix string, b []byte) string {
	h := sha256.Sum256(b)
	return prefix + hex.EncodeToString(h[:])[:requestHashChars]
}

// errMoveElsewhere: the tenant has a move in flight to another cell than
// the one asked (started outside Terraform).
var errMoveElsewhere = errors.New("another move is in flight")

// moveTenant moves tenant id to cell target and waits until the move is
// DONE (or ctx ends). It resumes what an earlier apply started: a move in
// flight to target is waited on, never started again; a tenant already on
// target is done. A move in flight to another cell (an operator's) is
// not fought: it is an error that names it.
func moveTenant(ctx context.Context, c *apiClient, id, target string) error {
	// again waits a poll interval before the next round (a transient
	// error, or a busy tenant whose placement may change meanwhile).
	again := func(err error) error {
		if rerr := retry.Sleep(ctx, pollInterval); rerr != nil {
			return fmt.Errorf("%w (last: %w)", rerr, err)
		}
		return nil
	}
	for {
		v, err := readTenant(ctx, c, id)
		var active *cpv1.Move
		if err == nil {
			active, err = activeMove(ctx, c, id)
		}
		if err != nil {
			if !retryable(err) {
				return err
			}
			if err := again(err); err != nil {
				return err
			}
			continue
		}
		switch {
		case active != nil && active.GetTargetCell() == target:
			if err := waitMove(ctx, c, active.GetId()); err != nil {
				return err
			}
			continue // re-read: DONE means the tenant is on target
		case active != nil:
			return fmt.Errorf("%w: tenant %s is being moved to %s by move %s (%s), not started by this configuration; "+
				"wait for it ('cellctl move get %s') or cancel it, then apply again",
				errMoveElsewhere, id, active.GetTargetCell(), active.GetId(), active.GetState(), active.GetId())
		case v.t.GetCell() == target:
			return nil
		}
		var mv *cpv1.Move
		err = poll(ctx, func() error {
			out, err := call(ctx, c, func(ctx context.Context, api cpv1.ControlPlaneServiceClient) (*cpv1.StartMoveResponse, error) {
				return api.StartMove(ctx, &cpv1.StartMoveRequest{Tenant: id, TargetCell: target,
					RequestId: moveRequestID(id, target, v.t.GetCell(), v.t.GetEpoch())})
			})
			switch {
			case err == nil:
				mv = out.GetMove()
				return nil
			case errors.Is(err, cperr.ErrTenantBusy):
				// A failover or another workflow holds the tenant: read
				// it again (the placement may have changed).
				return retry.Permanent(err)
			case retryable(err):
				return err
			}
			return retry.Permanent(err)
		})
		if errors.Is(err, cperr.ErrTenantBusy) {
			if err := again(err); err != nil {
				return err
			}
			continue
		}
		if err != nil {
			return err
		}
		if err := waitMove(ctx, c, mv.GetId()); err != nil {
			return err
		}
	}
}

// activeMove returns the tenant's unfinished move, if any.
func activeMove(ctx context.Context, c *apiClient, id string) (*cpv1.Move, error) {
	out, err := call(ctx, c, func(ctx context.Context, api cpv1.ControlPlaneServiceClient) (*cpv1.ListMovesResponse, error) {
		return api.ListMoves(ctx, &cpv1.ListMovesRequest{Tenant: id})
	})
	if err != nil {
		return nil, err
	}
	for _, mv := range out.GetMoves() {
		if !moveFinished(mv.GetState()) {
			return mv, nil
		}
	}
	return nil, nil
}

func moveFinished(s cpv1.MoveState) bool {
	switch s {
	case cpv1.MoveState_MOVE_STATE_DONE, cpv1.MoveState_MOVE_STATE_CANCELLED, cpv1.MoveState_MOVE_STATE_FAILED:
		return true
	}
	return false
}

// waitMove polls a move until it is DONE (nil), CANCELLED or FAILED (an
// error saying so), or ctx ends (the last state seen).
func waitMove(ctx context.Context, c *apiClient, moveID string) error {
	return poll(ctx, func() error {
		out, err := call(ctx, c, func(ctx context.Context, api cpv1.ControlPlaneServiceClient) (*cpv1.GetMoveResponse, error) {
			return api.GetMove(ctx, &cpv1.GetMoveRequest{Id: moveID})
		})
		switch {
		case err != nil && retryable(err):
			return err
		case err != nil:
			return retry.Permanent(err)
		}
		mv := out.GetMove()
		switch mv.GetState() {
		case cpv1.MoveState_MOVE_STATE_DONE:
			return nil
		case cpv1.MoveState_MOVE_STATE_CANCELLED:
			return retry.Permanent(fmt.Errorf("move %s of tenant %s to %s was cancelled (outside Terraform)", mv.GetId(), mv.GetTenant(), mv.GetTargetCell()))
		case cpv1.MoveState_MOVE_STATE_FAILED:
			return retry.Permanent(fmt.Errorf("move %s of tenant %s to %s failed: %s: %s", mv.GetId(), mv.GetTenant(), mv.GetTargetCell(), mv.GetErrorReason(), mv.GetErrorMessage()))
		}
		return fmt.Errorf("move %s of tenant %s to %s is %s (copied %d bytes, target at tseq %d of %d)", mv.GetId(), mv.GetTenant(), mv.GetTargetCell(),
			mv.GetState(), mv.GetCopiedBytes(), mv.GetTargetTseq(), mv.GetSourceTseq())
	})
}
