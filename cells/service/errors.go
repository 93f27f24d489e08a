package service

import (
	"context"
	"errors"
	"maps"

	"google.golang.org/grpc"

	"github.com/cellplane/cellplane/internal/cperr"
	"github.com/cellplane/cellplane/internal/tenantmd"
	cellv1 "github.com/cellplane/cellplane/proto/cellplane/cell/v1"
)

// storeErr keeps cperr and context errors and turns anything else (a
// store that did not translate an engine error) into a generic INTERNAL,
// logging the detail: internals never reach a client.
func (c *core) storeErr(op string, err error) error {
	if err == nil {
		return nil
	}
	var ce *cperr.Error
	if errors.As(err, &ce) {
		if c.cfg.CellID != "" && (ce.Reason == cperr.WrongCell || ce.Reason == cperr.StaleEpoch) {
			out := *ce
			out.Metadata = maps.Clone(ce.Metadata)
			return out.With(cperr.MetaCell, c.cfg.CellID)
		}
		return err
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	c.log.Error("store call failed", "op", op, "err", err)
	return cperr.New(cperr.Internal, "internal error")
}

// commandErr turns a state machine rejection into its cperr error.
func commandErr(e *cellv1.CommandError) error {
	out := &cperr.Error{Reason: cperr.Reason(e.GetReason()), Message: e.GetMessage()}
	if out.Reason == "" {
		out.Reason = cperr.Internal
	}
	for k, v := range e.GetMetadata() {
		out.With(k, v)
	}
	return out
}

// propose proposes cmd and returns the state machine's result, or the
// rejection as an error.
//
// It stamps the command with the caller's principal and origin
// (tenantmd.Caller) unless the command carries them already; the origin
// defaults to the gRPC method.
func (c *core) propose(ctx context.Context, cmd *cellv1.Command) (*cellv1.CommandResult, error) {
	if cmd.GetTenant() != "" {
		principal, origin := tenantmd.Caller(ctx)
		if cmd.Principal == "" {
			cmd.Principal = principal
		}
		if cmd.Origin == "" {
			cmd.Origin = origin
		}
		if cmd.Origin == "" {
			if m, ok := grpc.Method(ctx); ok {
				cmd.Origin = "grpc:" + m
			}
		}
	}
	res, err := c.st.Propose(ctx, cmd)
	if err != nil {
		return nil, c.storeErr("propose", err)
	}
	if res == nil {
		c.log.Error("store returned no result", "tenant", cmd.GetTenant())
		return nil, cperr.New(cperr.Internal, "internal error")
	}
	if res.GetError() != nil {
		return nil, commandErr(res.GetError())
	}
	return res, nil
}

// missingResult is returned when the state machine's result lacks the
// part the RPC needs: a store bug, reported without internals.
func (c *core) missingResult(op, tenant string) error {
	c.log.Error("state machine result is missing its payload", "op", op, "tenant", tenant)
	return cperr.New(cperr.Internal, "internal error")
}

// unavailable is CELL_UNAVAILABLE with the configured retry hint.
func (c *core) unavailable(msg string) error {
	return cperr.New(cperr.CellUnavailable, "%s", msg).WithRetryAfter(c.cfg.RetryAfter)
}
