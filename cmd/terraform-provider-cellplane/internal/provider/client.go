package provider

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/terraform-plugin-framework/diag"
	"github.com/hashicorp/terraform-plugin-framework/path"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/cellplane/cellplane/internal/cperr"
	"github.com/cellplane/cellplane/internal/retry"
	"github.com/cellplane/cellplane/internal/rpcerr"
	cpv1 "github.com/cellplane/cellplane/proto/cellplane/controlplane/v1"
)

// pollInterval is how often a long operation's progress is read.
const pollInterval = 250 * time.Millisecond

// apiClient is the provider's connection to the control plane, shared by
// its resources and data sources.
type apiClient struct {
	api         cpv1.ControlPlaneServiceClient
	conn        *grpc.ClientConn // nil in tests that borrow a connection
	addr        string
	callTimeout time.Duration
	// ops bounds the long operations in flight (max_concurrent_operations).
	ops chan struct{}
}

// call runs one short RPC within call_timeout and maps its error
// (mapErr).
func call[Resp any](ctx context.Context, c *apiClient, rpc func(context.Context, cpv1.ControlPlaneServiceClient) (Resp, error)) (Resp, error) {
	ctx, cancel := context.WithTimeout(ctx, c.callTimeout)
	defer cancel()
	resp, err := rpc(ctx, c.api)
	if err != nil {
		var zero Resp
		return zero, c.mapErr(err)
	}
	return resp, nil
}

// acquire takes one of the long-operation slots until release is called,
// or fails when ctx ends first.
func (c *apiClient) acquire(ctx context.Context) (release func(), err error) {
	select {
	case c.ops <- struct{}{}:
		return func() { <-c.ops }, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("waiting for one of max_concurrent_operations: %w", ctx.Err())
	}
}

// mapErr turns an RPC error into a *cperr.Error (REASON: message) for the
// control plane's own errors, or a sentence for transport failures.
func (c *apiClient) mapErr(err error) error {
	mapped := rpcerr.FromStatus(err)
	var ce *cperr.Error
	if errors.As(mapped, &ce) {
		return ce
	}
	if errors.Is(mapped, context.DeadlineExceeded) || errors.Is(mapped, context.Canceled) {
		return mapped
	}
	if status.Code(err) == codes.Unavailable {
		return fmt.Errorf("cannot reach the control plane at %s: %w", c.addr, err)
	}
	return mapped
}

// retryable reports whether a long operation should try again after err
// (another workflow holds the tenant; the control plane's store is briefly
// unavailable; the control plane is unreachable).
func retryable(err error) bool {
	switch retry.ClassOf(err) {
	case retry.RetryLater, retry.RetryElsewhere:
		return true
	}
	return false
}

// isNotFound reports whether err says the object does not exist.
func isNotFound(err error) bool {
	return errors.Is(err, cperr.ErrTenantNotFound) || errors.Is(err, cperr.ErrRegionNotFound) ||
		errors.Is(err, cperr.ErrAPIKeyNotFound) || errors.Is(err, cperr.ErrCellNotFound)
}

// addErr adds err as a diagnostic: on the attribute of an INVALID_ARGUMENT
// field violation when fields maps it, else on the resource.
func addErr(diags *diag.Diagnostics, summary string, err error, fields map[string]path.Path) {
	if !addFieldErr(diags, summary, err, fields) {
		diags.AddError(summary, err.Error())
	}
}

// addErrAt is addErr with the diagnostic on attribute at when no field
// violation names another: for an operation that only one attribute
// asks for (a move: placement_cell).
func addErrAt(diags *diag.Diagnostics, summary string, err error, fields map[string]path.Path, at path.Path) {
	if !addFieldErr(diags, summary, err, fields) {
		diags.AddAttributeError(at, summary, err.Error())
	}
}

func addFieldErr(diags *diag.Diagnostics, summary string, err error, fields map[string]path.Path) bool {
	var ce *cperr.Error
	if errors.As(err, &ce) {
		for _, v := range ce.Violations {
			if p, ok := fields[v.Field]; ok {
				diags.AddAttributeError(p, summary, fmt.Sprintf("%s (%s: %s)", ce.Reason, v.Field, v.Description))
				return true
			}
		}
	}
	return false
}

// poll calls fn every pollInterval until it returns nil or a permanent
// error (retry.Permanent), or ctx ends.
func poll(ctx context.Context, fn func() error) error {
	return retry.Poll(ctx, pollInterval, fn)
}
