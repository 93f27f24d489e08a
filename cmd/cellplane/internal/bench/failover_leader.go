package bench

import (
	"context"
	"fmt"
	"time"

	"github.com/cellplane/cellplane/internal/retry"
	"github.com/cellplane/cellplane/platform"
	contextv1 "github.com/cellplane/cellplane/proto/cellplane/context/v1"
)

// writeTimeout bounds each steady write: longer than the router's holds
// (cutover 2 s, failover 5 s), so that a held write ends with the
// router's answer, not the client's deadline.
const writeTimeout = 15 * time.Second

// benchContexts creates n contexts of tenant through cs (the router).
func benchContexts(ctx context.Context, cs contextv1.ContextServiceClient, tenant, prefix string, n int) ([]string, error) {
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("%s-%02d", prefix, i)
	}
	cctx, cancel := context.WithTimeout(asTenant(ctx, tenant), 30*time.Second)
	defer cancel()
	if err := poll(cctx, func() error { return createContexts(cctx, cs, ids) }); err != nil {
		return nil, fmt.Errorf("bench: create contexts of %s: %w", tenant, err)
	}
	return ids, nil
}

// waitAck waits until a write scheduled at or after t is acknowledged and
// returns when it was (timeout: an error).
func waitAck(ctx context.Context, w *steadyWriter, t time.Time, timeout time.Duration) (time.Time, error) {
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for {
		if at, ok := firstAckAfter(w.records(), t); ok {
			return at, nil
		}
		if time.Now().After(deadline) {
			return time.Time{}, fmt.Errorf("no write acknowledged within %v (first error: %s)", timeout, w.firstError())
		}
		select {
		case <-ctx.Done():
			return time.Time{}, ctx.Err()
		case <-tick.C:
		}
	}
}

// runLeaderKills is part a of the failover scenario: the baseline window,
// the kills, and the optional soak.
func runLeaderKills(ctx context.Context, opts FailoverOptions, pf *platform.Platform, cell *platform.Cell, res *FailoverResults, p progress) error {
	if _, err := createTenant(ctx, pf, failoverTenant, failoverRegion, cell.ID(), ""); err != nil {
		return err
	}
	if err := waitRouted(ctx, pf, failoverTenant); err != nil {
		return err
	}
	cs := routerData(pf)
	ids, err := benchContexts(ctx, cs, failoverTenant, "kill", 8)
	if err != nil {
		return err
	}
	w := newSteadyWriter(cs, failoverTenant, ids, opts.Rate, opts.EntrySize, writeTimeout)
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	w.start(wctx)
	defer w.halt()

	warm := warmupFor(opts.Baseline)
	if err := retry.Sleep(ctx, warm); err != nil {
		return err
	}
	from := time.Now()
	if err := retry.Sleep(ctx, opts.Baseline); err != nil {
		return err
	}
	res.Baseline = windowStats("steady writes, no kill", w.records(), from, time.Now(), opts.Rate)
	p.result(res.Baseline)

	var samples []time.Duration
	phaseStart := time.Now()
	for round := 1; round <= opts.Kills; round++ {
		k, err := killLeader(ctx, opts, pf, cell, w, round, p)
		if err != nil {
			return err
		}
		res.Kills = append(res.Kills, k)
		samples = append(samples, time.Duration(k.FailoverMs*float64(time.Millisecond)))
	}
	if opts.Kills > 0 {
		if _, err := cell.WaitLeader(ctx, 64); err != nil {
			return err
		}
		res.KillPhase = windowStats("steady writes, leader kills", w.records(), phaseStart, time.Now(), opts.Rate)
		res.LeaderFailover = summarize(samples)
		p.result(res.KillPhase)
		p.printf("  leader failover: p50 %.0f ms, p99 %.0f ms", res.LeaderFailover.P50, res.LeaderFailover.P99)
	}
	w.halt()
	cancel()

	if opts.Soak > 0 {
		if err := runSoak(ctx, opts, cell, cs, ids, res, p); err != nil {
			return err
		}
	}
	return nil
}

// killLeader kills the cell's leader once under the steady writes, waits
// for the first acknowledgement of a write sent after the kill, restarts
// the node and waits until it caught up and writes ran opts.Settle.
func killLeader(ctx context.Context, opts FailoverOptions, pf *platform.Platform, cell *platform.Cell, w *steadyWriter, round int, p progress) (LeaderKill, error) {
	wctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	if _, err := cell.WaitLeader(wctx, 64); err != nil {
		return LeaderKill{}, err
	}
	if err := retry.Sleep(ctx, opts.Settle); err != nil {
		return LeaderKill{}, err
	}
	// Leadership may have moved meanwhile (a starved machine): the kill
	// goes to whoever leads now.
	victim, err := cell.WaitLeader(wctx, 64)
	if err != nil {
		return LeaderKill{}, err
	}
	k := LeaderKill{Round: round, Killed: victim.ID()}
	term := cell.Term()
	killedAt, down := victim.Kill()
	k.CloseMs = ms(down.Sub(killedAt))
	// A write sent after the victim's Raft stopped can only be
	// acknowledged by a new leader; the time counts from the kill's start.
	// Meanwhile, when a new leader was elected and when it could
	// acknowledge writes (its authority published) are watched.
	wd := watchLeaderChange(ctx, cell)
	ack, err := waitAck(ctx, w, down, 30*time.Second)
	elected, authorized := wd()
	if err != nil {
		return k, fmt.Errorf("bench: kill %d: %w", round, err)
	}
	k.FailoverMs = ms(ack.Sub(killedAt))
	if !elected.IsZero() {
		k.ElectedMs = ms(elected.Sub(killedAt))
	}
	if !authorized.IsZero() {
		k.AuthorityMs = ms(authorized.Sub(killedAt))
	}
	if nl := cell.Leader(); nl != nil {
		k.NewLeader = nl.ID()
	}
	k.Elections = cell.Term() - term
	// Writes already in flight fail or finish within a second of the
	// first acknowledgement; then count.
	if err := retry.Sleep(ctx, time.Second); err != nil {
		return k, err
	}
	recs := w.records()
	k.MaxGapMs = ms(gapAround(recs, killedAt, ack))
	k.FailedWrites = windowStats("", recs, killedAt, ack.Add(time.Second), 0).Errors

	t0 := time.Now()
	if err := victim.Restart(ctx); err != nil {
		return k, err
	}
	k.RestartMs = ms(time.Since(t0))
	p.printf("  kill %d: %s killed, first ack %.0f ms later (new leader %s elected at %.0f ms, authority at %.0f ms; longest gap %.0f ms, %d failed writes, %d elections)",
		round, k.Killed, k.FailoverMs, k.NewLeader, k.ElectedMs, k.AuthorityMs, k.MaxGapMs, k.FailedWrites, k.Elections)
	return k, nil
}

// watchLeaderChange polls the cell every millisecond from now on for a
// leader and for a leader whose authority is valid (it may acknowledge
// writes); the returned function stops it and returns when each was
// first seen (zero: not seen).
func watchLeaderChange(ctx context.Context, cell *platform.Cell) func() (elected, authorized time.Time) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	var elected, authorized time.Time
	go func() {
		defer close(done)
		t := time.NewTicker(time.Millisecond)
		defer t.Stop()
		for authorized.IsZero() {
			if l := cell.Leader(); l != nil {
				now := time.Now()
				if elected.IsZero() {
					elected = now
				}
				if n := l.Node(); n != nil && n.Authority() != nil && n.Authority().Valid() {
					authorized = now
				}
			}
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	return func() (time.Time, time.Time) {
		cancel()
		<-done
		return elected, authorized
	}
}

// gapAround is the longest acknowledgement gap in the second before the
// kill through the first acknowledgement after it.
func gapAround(recs []writeRec, killedAt, ack time.Time) time.Duration {
	g, _ := maxAckGap(recs, killedAt.Add(-time.Second), ack)
	return g
}

// runSoak runs closed-loop writes through the router for opts.Soak and
// counts the leader changes and elections meanwhile.
func runSoak(ctx context.Context, opts FailoverOptions, cell *platform.Cell, cs contextv1.ContextServiceClient, ids []string, res *FailoverResults, p progress) error {
	if _, err := cell.WaitLeader(ctx, 64); err != nil {
		return err
	}
	p.printf("soak: closed-loop writes at %d for %s", opts.SoakConcurrency, opts.Soak)
	term := cell.Term()
	leader := cell.Leader()
	changes := 0
	sctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(50 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-sctx.Done():
				return
			case <-t.C:
			}
			if l := cell.Leader(); l != leader {
				changes++
				leader = l
			}
		}
	}()
	text := string(payload(opts.EntrySize))
	next := make([]uint64, opts.SoakConcurrency)
	r, err := Run(asTenant(ctx, failoverTenant), Load{
		Name: "soak (closed loop)", Concurrency: opts.SoakConcurrency, Duration: opts.Soak, OpTimeout: writeTimeout,
	}, func(ctx context.Context, w int) error {
		next[w]++
		_, err := cs.Append(ctx, &contextv1.AppendRequest{
			ContextId: ids[w%len(ids)],
			Entries:   []*contextv1.Entry{{Role: "user", Content: &contextv1.Entry_Text{Text: text}}},
			RequestId: fmt.Sprintf("soak-%d-%d", w, next[w]),
		})
		return err
	})
	cancel()
	<-done
	if err != nil {
		return err
	}
	res.Soak = &r
	res.SoakLeaderChanges = changes
	res.SoakElections = cell.Term() - term
	p.result(r)
	p.printf("  soak: %d leader changes, %d elections", changes, res.SoakElections)
	return nil
}
