package bench

import (
	"context"
	"fmt"
	"time"

	"github.com/cellplane/cellplane/controlplane/intent"
	"github.com/cellplane/cellplane/internal/retry"
	"github.com/cellplane/cellplane/internal/rpcerr"
	"github.com/cellplane/cellplane/platform"
	cpv1 "github.com/cellplane/cellplane/proto/cellplane/controlplane/v1"
)

// Who promoted, as reported.
const (
	promotedByOperator = "operator call"
	promotedByPolicy   = "automatic policy"
)

// runPromotions is part b of the failover scenario: a standby cell in
// another region, then opts.Promotions lost-region promotions.
func runPromotions(ctx context.Context, opts FailoverOptions, pf *platform.Platform, owner *platform.Cell, res *FailoverResults, p progress) error {
	p.printf("starting the standby cell (region %s)", failoverStandbyRegion)
	sb, err := addCell(ctx, pf, failoverStandbyRegion, failoverStandbyCell, 3, opts.nodeConfig)
	if err != nil {
		return err
	}
	res.PromotionBy = promotedByOperator
	if opts.AutoPromote > 0 {
		res.PromotionBy = fmt.Sprintf("%s (cell unhealthy for %s)", promotedByPolicy, opts.AutoPromote)
	}
	var samples []time.Duration
	for i := 1; i <= opts.Promotions; i++ {
		pr, err := promoteOnce(ctx, opts, pf, owner, sb, i, p)
		if err != nil {
			return err
		}
		res.Promotions = append(res.Promotions, pr)
		samples = append(samples, time.Duration(pr.PromoteMs*float64(time.Millisecond)))
	}
	res.RegionPromotion = summarize(samples)
	p.printf("  region promotion: p50 %.0f ms, p99 %.0f ms", res.RegionPromotion.P50, res.RegionPromotion.P99)
	return nil
}

// promoteOnce creates a tenant on owner with a standby on sb, writes to
// it through the router, kills every node of owner, has the standby
// promoted, measures the time to the first write acknowledged after the
// kill, then restarts owner and waits for the RPO report.
func promoteOnce(ctx context.Context, opts FailoverOptions, pf *platform.Platform, owner, sb *platform.Cell, round int, p progress) (Promotion, error) {
	tenant := fmt.Sprintf("promo-%d", round)
	pr := Promotion{Tenant: tenant}
	if _, err := createTenant(ctx, pf, tenant, owner.Region(), owner.ID(), sb.Region()); err != nil {
		return pr, err
	}
	if _, err := waitStandby(ctx, pf, sb, tenant, 60*time.Second); err != nil {
		return pr, err
	}
	if err := waitRouted(ctx, pf, tenant); err != nil {
		return pr, err
	}
	cs := routerData(pf)
	ids, err := benchContexts(ctx, cs, tenant, "promo", 8)
	if err != nil {
		return pr, err
	}
	w := newSteadyWriter(cs, tenant, ids, opts.Rate, opts.EntrySize, writeTimeout)
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	w.start(wctx)
	defer w.halt()
	if _, err := waitAck(ctx, w, time.Now(), 10*time.Second); err != nil {
		return pr, fmt.Errorf("bench: promotion %d: writes before the kill: %w", round, err)
	}
	if err := retry.Sleep(ctx, time.Second); err != nil {
		return pr, err
	}

	killedAt, down := owner.KillAll()
	pr.KillMs = ms(down.Sub(killedAt))
	var fo *cpv1.Failover
	if opts.AutoPromote <= 0 {
		resp, err := pf.Admin().Failover(ctx, &cpv1.FailoverRequest{Tenant: tenant, Kind: cpv1.FailoverKind_FAILOVER_KIND_PROMOTE})
		if err != nil {
			return pr, fmt.Errorf("bench: promote %s: %w", tenant, rpcerr.FromStatus(err))
		}
		if len(resp.GetFailovers()) != 1 {
			return pr, fmt.Errorf("bench: promote %s: %d failovers started", tenant, len(resp.GetFailovers()))
		}
		fo = resp.GetFailovers()[0]
	}
	ack, err := waitAck(ctx, w, down, time.Minute)
	if err != nil {
		return pr, fmt.Errorf("bench: promotion %d: %w", round, err)
	}
	pr.PromoteMs = ms(ack.Sub(killedAt))
	if err := retry.Sleep(ctx, time.Second); err != nil {
		return pr, err
	}
	w.halt()
	failed := windowStats("", w.records(), down, ack.Add(time.Second), 0)
	pr.FailedWrites, pr.FailedByCode = failed.Errors, failed.ErrorsByCode
	if fo == nil {
		if fo, err = findFailover(ctx, pf, tenant); err != nil {
			return pr, err
		}
	}
	pr.FailoverID = fo.GetId()
	p.printf("  promotion %d: %s first ack at the new owner %.0f ms after the kill; restarting the old owner cell", round, tenant, pr.PromoteMs)

	// The old owner comes back: it applies the fence and reports its last
	// tseq (the RPO).
	if err := owner.Restart(ctx); err != nil {
		return pr, fmt.Errorf("bench: %w", err)
	}
	fo, err = waitFailoverReport(ctx, pf, pr.FailoverID, 30*time.Second)
	if err != nil {
		return pr, err
	}
	pr.Trigger = fo.GetTrigger()
	pr.TimeToPromoteMs = ms(fo.GetTimeToPromote().AsDuration())
	if lw := fo.GetLeaseWaitUntil(); lw != nil {
		pr.LeaseWaitMs = ms(lw.AsTime().Sub(killedAt))
	}
	pr.PromotedTseq, pr.OldOwnerTseq, pr.LostEvents = fo.GetPromotedTseq(), fo.GetOldOwnerTseq(), fo.GetLostEvents()
	pr.OldOwnerReported = fo.GetOldOwnerReported()
	pr.FinalState = intent.FailoverStateName(fo.GetState())
	p.printf("  promotion %d: %s, trigger %q, time to promote %.0f ms, RPO %d events (reported %v), %d failed writes %v",
		round, pr.FinalState, pr.Trigger, pr.TimeToPromoteMs, pr.LostEvents, pr.OldOwnerReported, pr.FailedWrites, pr.FailedByCode)
	return pr, nil
}

// findFailover waits for the tenant's failover to be recorded (the
// automatic policy starts it).
func findFailover(ctx context.Context, pf *platform.Platform, tenant string) (*cpv1.Failover, error) {
	wctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	var fo *cpv1.Failover
	err := poll(wctx, func() error {
		resp, err := pf.Admin().ListFailovers(wctx, &cpv1.ListFailoversRequest{Tenant: tenant})
		if err != nil {
			return err
		}
		if n := len(resp.GetFailovers()); n > 0 {
			fo = resp.GetFailovers()[n-1]
			return nil
		}
		return fmt.Errorf("no failover of %s recorded", tenant)
	})
	if err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	return fo, nil
}

// waitFailoverReport waits until failover id has the old owner's report
// (or finished), and returns it as it is then (also on timeout).
func waitFailoverReport(ctx context.Context, pf *platform.Platform, id string, timeout time.Duration) (*cpv1.Failover, error) {
	wctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var fo *cpv1.Failover
	err := poll(wctx, func() error {
		resp, err := pf.Admin().GetFailover(wctx, &cpv1.GetFailoverRequest{Id: id})
		if err != nil {
			return err
		}
		fo = resp.GetFailover()
		if fo.GetOldOwnerReported() || intent.FailoverFinished(fo.GetState()) {
			return nil
		}
		return fmt.Errorf("failover %s is %s", id, intent.FailoverStateName(fo.GetState()))
	})
	if fo == nil {
		return nil, fmt.Errorf("bench: failover %s: %w", id, err)
	}
	return fo, nil // a missing report is reported, not fatal
}
