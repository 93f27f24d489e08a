package controller

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/cellplane/cellplane/controlplane/catalog"
	"github.com/cellplane/cellplane/controlplane/intent"
	"github.com/cellplane/cellplane/controlplane/topo"
	"github.com/cellplane/cellplane/internal/cperr"
	cpv1 "github.com/cellplane/cellplane/proto/cellplane/controlplane/v1"
)

// The automatic promotion policy (AutoPromoteConfig). Every Interval the
// leader reads every cell's health as the registry shows it (catalog.Health:
// a published leader and a quorum of live members). A cell that is
// UNAVAILABLE or has nothing registered any more (NOT_STARTED) is
// unhealthy; once it has been so for UnhealthyFor without a break, the
// leader records an emergency promotion (trigger "policy: ...") for each
// ACTIVE tenant it owns whose standby cell is healthy and that no other
// operation holds, at most MaxConcurrent of the policy's promotions in
// flight at a time. A cell seen healthy again is forgotten at once: it
// needs a whole new UnhealthyFor before anything happens. The intents are
// recorded under the leader's guard, so a deposed leader records none.
//
// The policy does not trust what it sees right after it was blind: at the
// start of its term, and when two successful reads of the health are more
// than BlindAfter apart (etcd unreachable, this process stalled), it
// forgets the cells' unhealthy streaks and starts no promotion for
// ResumeGrace. After an etcd outage the cells' registrations may all have
// lapsed, and cells come back at their own pace; promoting then would
// turn a control-plane outage into failovers (scenario S22).
//
// The policy never fences on its own: the promotion it starts waits for
// the old cell's authority lease exactly like one an operator starts.

// unhealthy reports a health the policy acts on.
func unhealthy(h cpv1.CellHealth) bool {
	return h == cpv1.CellHealth_CELL_HEALTH_UNAVAILABLE || h == cpv1.CellHealth_CELL_HEALTH_NOT_STARTED
}

// The policy followed is the one stored at policies/failover
// (SetFailoverPolicy), read at every pass, or the process's configuration
// while none is stored. A policy that was off starts blind when turned on,
// like a new term.
func (f *failoverer) autoPromote(ctx context.Context) {
	base := f.r.c.cfg.AutoPromote
	pol := &policyState{since: map[string]time.Time{}, resumed: time.Now()} // a term starts blind
	f.r.every(ctx, base.Interval, nil, "automatic promotion pass", func(ctx context.Context) error {
		cfg, err := f.policy(ctx)
		if err != nil {
			return err
		}
		if !cfg.Enabled {
			clear(pol.since)
			pol.lastRead, pol.resumed, pol.withheld = time.Time{}, time.Now(), false
			return nil
		}
		return f.policyPass(ctx, pol, cfg)
	})
}

// policy returns the policy in force: the stored one over the process's.
func (f *failoverer) policy(ctx context.Context) (AutoPromoteConfig, error) {
	base := f.r.c.cfg.AutoPromote
	p, _, err := catalog.GetFailoverPolicy(ctx, f.r.c.st)
	switch {
	case errors.Is(err, topo.ErrNotFound):
		return base, nil
	case err != nil:
		return base, err
	}
	return base.Apply(p), nil
}

// policyState is what the policy remembers between passes of one term.
type policyState struct {
	since map[string]time.Time // cell → first seen unhealthy
	// lastRead is when the cells' health was last read; resumed, when the
	// leader last regained sight of it (ResumeGrace counts from there).
	lastRead, resumed time.Time
	withheld          bool // logged that the grace holds promotions back
}

// policyPass is one pass of the policy.
func (f *failoverer) policyPass(ctx context.Context, pol *policyState, cfg AutoPromoteConfig) error {
	c := f.r.c
	since := pol.since
	cells, err := catalog.Cells(ctx, c.st)
	if err != nil {
		return err
	}
	now := time.Now()
	if cfg.ResumeGrace > 0 && !pol.lastRead.IsZero() && now.Sub(pol.lastRead) > cfg.BlindAfter {
		c.log.Warn("automatic promotion: the cells' health could not be read for a while; no promotion for the grace",
			"blind_for", now.Sub(pol.lastRead).Round(time.Millisecond), "grace", cfg.ResumeGrace)
		clear(since)
		pol.resumed, pol.withheld = now, false
	}
	pol.lastRead = now
	health := map[string]cpv1.CellHealth{}
	var due []*catalog.CellInfo
	for _, ci := range cells {
		id := ci.Cell.GetId()
		h := catalog.Health(ci)
		health[id] = h
		if !unhealthy(h) || !cfg.allows(ci.Cell.GetRegion()) {
			delete(since, id)
			continue
		}
		first, seen := since[id]
		if !seen {
			since[id] = now
			c.log.Warn("cell unhealthy; automatic promotion of its tenants if it stays so", "cell", id, "health", h.String(), "after", cfg.UnhealthyFor)
			continue
		}
		if now.Sub(first) >= cfg.UnhealthyFor {
			due = append(due, ci)
		}
	}
	for id := range since {
		if _, ok := health[id]; !ok {
			delete(since, id) // the cell was deleted
		}
	}
	if len(due) == 0 {
		return nil
	}
	if left := cfg.ResumeGrace - now.Sub(pol.resumed); left > 0 {
		if !pol.withheld {
			pol.withheld = true
			c.log.Warn("automatic promotion held back: the leader only just regained sight of the cells' health",
				"cells", len(due), "resumes_in", left.Round(time.Millisecond))
		}
		return nil
	}
	budget := cfg.MaxConcurrent
	fos, err := intent.ListFailovers(ctx, c.st, intent.FailoverFilter{})
	if err != nil {
		return err
	}
	for _, fo := range fos {
		if fo.GetKind() == cpv1.FailoverKind_FAILOVER_KIND_PROMOTE && isPolicyTrigger(fo.GetTrigger()) &&
			(fo.GetState() == cpv1.FailoverState_FAILOVER_STATE_FENCING || fo.GetState() == cpv1.FailoverState_FAILOVER_STATE_WAITING_LEASE ||
				fo.GetState() == cpv1.FailoverState_FAILOVER_STATE_PROMOTING) {
			budget--
		}
	}
	if budget <= 0 {
		return nil
	}
	guard := []topo.Cond{topo.IfVersion(f.r.lead.Key(), f.r.lead.Version())}
	for _, ci := range due {
		cell := ci.Cell.GetId()
		trigger := fmt.Sprintf("%s cell %s %s for %s", policyTrigger, cell, strings.TrimPrefix(health[cell].String(), "CELL_HEALTH_"),
			now.Sub(since[cell]).Round(time.Second))
		tenants, _, err := catalog.ListTenants(ctx, c.st)
		if err != nil {
			return err
		}
		for _, rec := range tenants {
			if budget <= 0 {
				break
			}
			t := rec.Value
			if t.GetCell() != cell || t.GetStandbyCell() == "" || t.GetState() != cpv1.TenantState_TENANT_STATE_ACTIVE ||
				t.GetOperationId() != "" || t.GetCuttingOver() {
				continue
			}
			if h, ok := health[t.GetStandbyCell()]; !ok || unhealthy(h) {
				continue // the standby cannot take it either
			}
			started, err := intent.StartFailoverGuarded(ctx, c.st, intent.FailoverRequest{Tenant: t.GetId(), Kind: cpv1.FailoverKind_FAILOVER_KIND_PROMOTE, Trigger: trigger}, guard)
			switch {
			case errors.Is(err, errNotLeader):
				return err
			case errors.Is(err, cperr.ErrTenantBusy), errors.Is(err, cperr.ErrNoStandby):
				continue // changed meanwhile: the next pass sees it
			case err != nil:
				return err
			}
			budget--
			c.fm.policyStarted.Inc()
			for _, fo := range started {
				c.log.Warn("automatic emergency promotion started", "failover", fo.GetId(), "tenant", fo.GetTenant(),
					"cell", cell, "standby", fo.GetToCell(), "trigger", trigger)
			}
		}
	}
	return nil
}

// policyTrigger prefixes the trigger of the policy's promotions.
const policyTrigger = "policy:"

func isPolicyTrigger(s string) bool {
	return len(s) >= len(policyTrigger) && s[:len(policyTrigger)] == policyTrigger
}
