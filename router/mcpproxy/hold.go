package mcpproxy

import (
	"context"
	"time"

	"github.com/cellplane/cellplane/internal/cperr"
)

// Hold outcomes (the outcome label of
// cellplane_router_mcp_hold_duration_seconds), as in the gRPC forwarder.
const (
	holdReleased = "released" // the route changed: the request goes on
	holdExpired  = "expired"  // CutoverHold ran out: 503 TENANT_MOVING
	holdCanceled = "canceled" // the client went away first
	holdGone     = "gone"     // the tenant stopped being routable
)

// hold waits while the tenant's route is cutting over, for at most
// CutoverHold, and returns the route to use (ok false: no longer
// routable). Nothing of the request has been forwarded yet.
func (p *Proxy) hold(ctx context.Context, tenant string, route Route) (Route, bool, error) {
	start := time.Now()
	hctx, cancel := context.WithTimeout(ctx, p.cfg.CutoverHold)
	defer cancel()
	p.log.Debug("holding MCP request: tenant is cutting over", "tenant", tenant, "cell", route.Cell, "epoch", route.Epoch)
	outcome, ok := holdReleased, true
	var err error
	for ok && route.CuttingOver {
		r, rok, werr := p.cfg.WaitChange(hctx, tenant, route)
		if werr != nil {
			outcome, err = holdCanceled, werr
			if ctx.Err() == nil {
				outcome = holdExpired
				err = cperr.New(cperr.TenantMoving, "tenant %s is moving to another cell; retry later", tenant).
					With(cperr.MetaTenant, tenant).WithRetryAfter(p.cfg.CutoverRetryAfter)
			}
			break
		}
		route, ok = r, rok
	}
	if !ok {
		outcome = holdGone
	}
	held := time.Since(start)
	p.held.WithLabelValues(outcome).Observe(held.Seconds())
	p.log.Debug("MCP hold ended", "tenant", tenant, "cell", route.Cell, "epoch", route.Epoch, "outcome", outcome, "held", held, "err", err)
	return route, ok, err
}
