package forward

import (
	"context"
	"time"

	"github.com/cellplane/cellplane/internal/cperr"
)

// Hold triggers (the trigger label of cellplane_router_forward_held_total).
const (
	// holdRoute: the routing table said the tenant is cutting over before
	// the call was sent.
	holdRoute = "cutting_over"
	// holdRefused: a cell refused the call (WRONG_CELL, STALE_EPOCH,
	// TENANT_MOVING) and the tenant's placement says it is cutting over.
	holdRefused = "refused"
)

// Hold outcomes (the outcome label of
// cellplane_router_forward_hold_duration_seconds).
const (
	holdReleased = "released" // the placement changed: the call goes on
	holdExpired  = "expired"  // MovingHold ran out: UNAVAILABLE TENANT_MOVING
	holdCanceled = "canceled" // the caller's deadline or cancellation came first
	holdGone     = "gone"     // the tenant stopped being routable
)

// holdWhileCuttingOver holds the call while its target is cutting over:
// until the placement changes to one that is not, the call's hold budget
// (MovingHold from its first hold) runs out, or the call's context ends.
// On success c.target is the new placement.
func (c *call) holdWhileCuttingOver(trigger string) error {
	for c.target.CuttingOver {
		if err := c.hold(trigger); err != nil {
			return err
		}
	}
	return nil
}

// hold waits once for the tenant's placement to differ from c.target.
func (c *call) hold(trigger string) error {
	f := c.f
	start := time.Now()
	if c.holdStart.IsZero() {
		c.holdStart = start
	}
	left := f.cfg.MovingHold - start.Sub(c.holdStart)
	from := c.target
	f.m.held.WithLabelValues(trigger).Inc()
	f.log.Debug("holding call: tenant is cutting over", "tenant", c.tenant, "cell", from.Cell, "epoch", from.Epoch,
		"method", c.method, "trigger", trigger, "budget", left)
	outcome, err := c.waitChange(left)
	held := time.Since(start)
	f.m.holdDuration.WithLabelValues(outcome).Observe(held.Seconds())
	f.log.Debug("hold ended", "tenant", c.tenant, "cell", c.target.Cell, "epoch", c.target.Epoch,
		"from_cell", from.Cell, "from_epoch", from.Epoch, "outcome", outcome, "held", held, "err", err)
	return err
}

func (c *call) waitChange(left time.Duration) (outcome string, err error) {
	if left <= 0 {
		return holdExpired, c.movingErr(0)
	}
	ctx, cancel := context.WithTimeout(c.ctx, left)
	defer cancel()
	t, ok, err := c.f.res.WaitChange(ctx, c.tenant, c.target)
	switch {
	case err == nil && !ok:
		return holdGone, c.notFound()
	case err == nil:
		c.setTarget(t)
		return holdReleased, nil
	case c.ctx.Err() != nil:
		return holdCanceled, c.ctx.Err()
	default:
		return holdExpired, c.movingErr(0)
	}
}

// movingErr is the answer to a call whose hold ran out: UNAVAILABLE
// TENANT_MOVING with RetryInfo (at least the cell's own, if it sent one).
func (c *call) movingErr(cellRetryAfter time.Duration) error {
	return cperr.New(cperr.TenantMoving, "tenant %q is moving to another cell; retry later", c.tenant).
		With(cperr.MetaTenant, c.tenant).WithRetryAfter(max(c.f.cfg.UnavailableRetryAfter, cellRetryAfter))
}

func (c *call) notFound() error {
	return cperr.New(cperr.TenantNotFound, "tenant %q not found", c.tenant).With(cperr.MetaTenant, c.tenant)
}
