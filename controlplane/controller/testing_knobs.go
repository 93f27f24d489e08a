package controller

import (
	"context"

	cpv1 "github.com/cellplane/cellplane/proto/cellplane/controlplane/v1"
)

// TestingKnobs are the controller's test hooks. The zero value is
// production.
type TestingKnobs struct {
	// BeforeStep runs before the leader acts on a workflow's recorded
	// step. A non-nil error makes the leader stop acting on it, as if the
	// process had died right there (the step stays recorded, nothing of it
	// done).
	BeforeStep func(ctx context.Context, wf *cpv1.Workflow) error
	// BeforeMoveStep is BeforeStep for moves: it runs before the leader
	// acts on a move's recorded state; an error stops the leader acting on
	// that move (as if it died there).
	BeforeMoveStep func(ctx context.Context, mv *cpv1.Move) error
	// BeforeQuotaPush runs before the leader pushes a tenant's pending
	// max_bytes to its cell; an error is a failed attempt (retried with
	// backoff), as if the cell had not answered.
	BeforeQuotaPush func(ctx context.Context, t *cpv1.Tenant) error
	// BeforeFailoverStep is BeforeStep for failovers.
	BeforeFailoverStep func(ctx context.Context, fo *cpv1.Failover) error
	// AfterFailoverCall runs right after a failover step's cell call
	// succeeded and before the step records its outcome in etcd: call is
	// "fence" (the switchover's SetTenant FENCED on the old owner) or
	// "owner" (SetTenant OWNER on the standby). A non-nil error makes the
	// leader stop acting on the failover there, as if the process had died
	// after the cell acted but before etcd knew (the mid-step crash of
	// scenario S19); the successor repeats the call with the same request
	// id.
	AfterFailoverCall func(ctx context.Context, fo *cpv1.Failover, call string) error
	// AfterMoveCall is AfterFailoverCall for moves: call is "standby"
	// (PREPARING: SetTenant STANDBY on the target), "fence" (SetTenant
	// FENCED on the source), "owner" (SetTenant OWNER on the target) or
	// "cleanup" (the guarded DeleteTenant on the source).
	AfterMoveCall func(ctx context.Context, mv *cpv1.Move, call string) error
	// Abandon makes Run exit like a killed process: no resignation and no
	// lease revocation, so successors wait for the lease to expire.
	Abandon bool
}
