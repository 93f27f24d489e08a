package bench

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cellplane/cellplane/cells"
	"github.com/cellplane/cellplane/internal/pki"
	"github.com/cellplane/cellplane/platform"
	cellv1 "github.com/cellplane/cellplane/proto/cellplane/cell/v1"
	contextv1 "github.com/cellplane/cellplane/proto/cellplane/context/v1"
)

// Ratio names of the replication scenario (the targets).
const (
	// RatioLagP99MinusDelay and RatioLagP99NoDelay count each event's lag
	// from the owner's commit (its acknowledgement to the writer); the
	// FromProposal ones from the owner's proposal (the event's timestamp),
	// which also counts the owner's own write latency.
	RatioLagP99MinusDelay             = "lag_p99_minus_delay_ms"
	RatioLagP99NoDelay                = "lag_p99_ms_no_delay"
	RatioLagFromProposalP99MinusDelay = "lag_from_proposal_p99_minus_delay_ms"
	RatioLagFromProposalP99NoDelay    = "lag_from_proposal_p99_ms_no_delay"
	replTenant                        = "repl"
	replOwnerRegion                   = "bench-east"
	replStandbyRegion                 = "bench-west"
	replOwnerCell                     = "bench-east-a"
	replStandbyCell                   = "bench-west-a"
)

// ReplicationTargets are the goals for the replication scenario.
var ReplicationTargets = map[string]Target{
	RatioLagP99MinusDelay: {AtLeast: false, Value: 100, Unit: "ms"},
}

// ReplicationOptions configures RunReplication (`cellplane bench
// replication`).
type ReplicationOptions struct {
	// Delay is the one-way delay injected on the standby's connections to
	// the source cell (bytes from the source arrive Delay late).
	Delay time.Duration
	// Members is the number of nodes of each of the two cells.
	Members int
	// SaturationConcurrency and SaturationDuration shape the closed-loop
	// step that finds the owner's write saturation.
	SaturationConcurrency int
	SaturationDuration    time.Duration
	// Load is the fraction of the saturation rate the measured steps
	// write at (open loop).
	Load float64
	// Rate, when > 0, is the write rate of the measured steps instead of
	// Load × saturation: runs on a busy machine, whose saturation step
	// varies from run to run, then compare at the same rate.
	Rate float64
	// Duration is the measured length of each lag step (no delay, then
	// Delay); Settle runs the same load first, unmeasured.
	Duration, Settle time.Duration
	// EntrySize is the size of each appended entry.
	EntrySize int
	// Concurrency bounds the writes in flight of the open-loop steps.
	Concurrency int
	// DataDir is where etcd and the cells keep their files: a new
	// directory inside it (os.TempDir() when empty), removed at the end.
	DataDir string
	// Logger receives the components' logs (nil: discarded).
	Logger *slog.Logger
	// Progress receives one human line per step (nil: silent).
	Progress io.Writer
}

// DefaultReplicationOptions returns the options of a default run: 50 ms
// of delay, single-node cells (two 3-node cells, etcd and the load
// generator in one process do not fit a 2-core machine: the standby's
// applies queue behind the CPU; see docs/benchmarks.md), 5 s of
// saturation at 64 writers, then 15 s at half of it without and with the
// delay (under a minute).
func DefaultReplicationOptions() ReplicationOptions {
	return ReplicationOptions{
		Delay:                 50 * time.Millisecond,
		Members:               1,
		SaturationConcurrency: 64,
		SaturationDuration:    5 * time.Second,
		Load:                  0.5,
		Duration:              15 * time.Second,
		Settle:                3 * time.Second,
		EntrySize:             256,
		Concurrency:           256,
	}
}

func (o ReplicationOptions) withDefaults() ReplicationOptions {
	d := DefaultReplicationOptions()
	if o.Delay < 0 {
		o.Delay = 0
	}
	if o.Members <= 0 {
		o.Members = d.Members
	}
	if o.SaturationConcurrency <= 0 {
		o.SaturationConcurrency = d.SaturationConcurrency
	}
	if o.SaturationDuration <= 0 {
		o.SaturationDuration = d.SaturationDuration
	}
	if o.Load <= 0 || o.Load > 1 {
		o.Load = d.Load
	}
	if o.Duration <= 0 {
		o.Duration = d.Duration
	}
	if o.Settle < 0 {
		o.Settle = 0
	}
	if o.EntrySize <= 0 {
		o.EntrySize = d.EntrySize
	}
	if o.Concurrency <= 0 {
		o.Concurrency = d.Concurrency
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o
}

// ReplicationResults are the figures of `cellplane bench replication`.
type ReplicationResults struct {
	Members   int     `json:"members"`
	EntrySize int     `json:"entry_size"`
	DelayMs   float64 `json:"delay_ms"`
	Load      float64 `json:"load"`
	// Rate is the write rate of the lag steps (writes/s).
	Rate float64 `json:"rate"`
	// Saturation is the closed-loop write step on the owner's leader
	// (with the standby following).
	Saturation Result `json:"saturation"`
	// Phases are the lag steps: no delay (the baseline), then the delay.
	Phases []LagPhase `json:"phases"`

	Bootstrap    float64   `json:"standby_bootstrap_s"`
	StartSec     float64   `json:"start_s"`
	TotalSec     float64   `json:"total_s"`
	LoadAvgEnd   []float64 `json:"load_avg_end,omitempty"`
	StandbyState string    `json:"standby_state"`
}

// LagPhase is one lag step: open-loop writes to the owner at Writes'
// rate, and the lag of each event written in the measured window: the
// standby's apply time minus the owner's commit (LagFromCommit: when the
// owner acknowledged the write to the bench's writer, an upper bound of
// the commit by the owner's apply and answer, ~1 ms unloaded) and minus
// the owner's proposal time (Lag: the event's timestamp, so it includes
// the owner's write latency). One process, one clock.
type LagPhase struct {
	DelayMs       float64 `json:"delay_ms"`
	Writes        Result  `json:"writes"`
	Lag           Latency `json:"lag"`
	LagFromCommit Latency `json:"lag_from_commit"`
	// CommitEvents is the number of events whose lag from commit was
	// measured (in the window, acknowledged and applied); BeforeAck how
	// many of them the standby applied before the writer saw the owner's
	// acknowledgement (counted as a lag of 0).
	CommitEvents uint64 `json:"commit_events"`
	BeforeAck    uint64 `json:"applied_before_ack"`
	// Events is the number of events whose lag was measured (proposed in
	// the window and applied by the standby within 30 s of the step's
	// end); Missing is the step's acknowledged writes minus Events when
	// positive (approximate: a write is in the step by its scheduled
	// time, an event in the window by its proposal time).
	Events  uint64 `json:"events"`
	Missing uint64 `json:"missing"`
	// Batches is the number of batches the standby applied those events
	// in (one Raft proposal each), EventsPerBatch their mean size.
	Batches        uint64  `json:"batches"`
	EventsPerBatch float64 `json:"events_per_batch"`
}

// Steps lists the write steps, for the table.
func (r *ReplicationResults) Steps() []Result {
	s := []Result{r.Saturation}
	for _, ph := range r.Phases {
		s = append(s, ph.Writes)
	}
	return s
}

// Notes lists the lags.
func (r *ReplicationResults) Notes() []Note {
	var n []Note
	for _, ph := range r.Phases {
		n = append(n, Note{fmt.Sprintf("lag with %.0f ms delay, from commit", ph.DelayMs),
			fmt.Sprintf("p50 %.1f ms, p90 %.1f ms, p99 %.1f ms, max %.1f ms over %d events (%d applied before the owner's ack)",
				ph.LagFromCommit.P50, ph.LagFromCommit.P90, ph.LagFromCommit.P99, ph.LagFromCommit.Max, ph.CommitEvents, ph.BeforeAck)},
			Note{fmt.Sprintf("lag with %.0f ms delay, from proposal", ph.DelayMs),
				fmt.Sprintf("p50 %.1f ms, p90 %.1f ms, p99 %.1f ms, max %.1f ms over %d events (%d not applied), applied in %d batches of %.1f events",
					ph.Lag.P50, ph.Lag.P90, ph.Lag.P99, ph.Lag.Max, ph.Events, ph.Missing, ph.Batches, ph.EventsPerBatch)})
	}
	n = append(n,
		Note{"cells", fmt.Sprintf("2 × %d nodes (owner %s, standby %s), standby bootstrapped in %.2f s", r.Members, replOwnerCell, replStandbyCell, r.Bootstrap)},
		Note{"load", fmt.Sprintf("%.0f writes/s (%.0f%% of saturation), %d B entries", r.Rate, 100*r.Rate/max(r.Saturation.OpsPerSec, 1), r.EntrySize)},
		Note{"start (etcd, control plane, cells)", fmt.Sprintf("%.1f s", r.StartSec)},
		Note{"total", fmt.Sprintf("%.1f s", r.TotalSec)},
	)
	n = append(n, loadAvgNote(r.LoadAvgEnd)...)
	return n
}

// lagRecorder is the standby sink's OnApplied hook: it records the lag of
// every event of one tenant whose proposal time falls in its window.
type lagRecorder struct {
	tenant string

	mu       sync.Mutex
	from, to int64 // unix ns; from == to: not recording
	hist     *Histogram
	batches  uint64        // applied batches with an event in the window
	inWindow uint64        // their events (in the window or not)
	applied  atomic.Uint64 // highest tseq applied
	// appliedAt is when the standby applied each event of the window, by
	// request id; acks when the owner acknowledged each write (ack).
	appliedAt map[string]int64
	acks      sync.Map // request id → unix ns
}

// ack records that the owner acknowledged the write with request id id.
func (r *lagRecorder) ack(id string, at time.Time) { r.acks.Store(id, at.UnixNano()) }

// commitLags records, into a new histogram, the lag of every event of the
// window from its write's acknowledgement; it returns the histogram and
// how many events were applied before their acknowledgement was seen
// (recorded as 0).
func (r *lagRecorder) commitLags() (*Histogram, uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	h := NewHistogram()
	var early uint64
	for id, at := range r.appliedAt {
		v, ok := r.acks.Load(id)
		if !ok {
			continue
		}
		d := time.Duration(at - v.(int64))
		if d < 0 {
			d, early = 0, early+1
		}
		h.Record(d)
	}
	return h, early
}

func newLagRecorder(tenant string) *lagRecorder {
	return &lagRecorder{tenant: tenant, hist: NewHistogram(), appliedAt: map[string]int64{}}
}

// onApplied implements replication.SinkConfig.OnApplied.
func (r *lagRecorder) onApplied(tenant string, evs []*cellv1.ChangeEvent, at time.Time) {
	if tenant != r.tenant || len(evs) == 0 {
		return
	}
	r.mu.Lock()
	from, to, h := r.from, r.to, r.hist
	r.mu.Unlock()
	var ids []string
	for _, e := range evs {
		if t := e.GetTimeUnixNano(); t >= from && t < to {
			h.Record(at.Sub(time.Unix(0, t)))
			ids = append(ids, e.GetCommand().GetRequestId())
		}
	}
	if len(ids) > 0 {
		r.mu.Lock()
		if r.hist == h {
			r.batches++
			r.inWindow += uint64(len(evs))
			for _, id := range ids {
				if id != "" {
					r.appliedAt[id] = at.UnixNano()
				}
			}
		}
		r.mu.Unlock()
	}
	last := evs[len(evs)-1].GetTseq()
	for {
		cur := r.applied.Load()
		if last <= cur || r.applied.CompareAndSwap(cur, last) {
			return
		}
	}
}

// arm starts a new window of proposal times [from, to) and returns the
// histogram its lags go to.
func (r *lagRecorder) arm(from, to time.Time) *Histogram {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.from, r.to, r.hist = from.UnixNano(), to.UnixNano(), NewHistogram()
	r.batches, r.inWindow = 0, 0
	r.appliedAt = map[string]int64{}
	r.acks.Clear()
	return r.hist
}

// batchStats returns the applied batches of the current window and their
// mean number of events.
func (r *lagRecorder) batchStats() (uint64, float64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.batches == 0 {
		return 0, 0
	}
	return r.batches, float64(r.inWindow) / float64(r.batches)
}

// RunReplication runs `cellplane bench replication`: an owner cell and a
// standby cell in another region (opts.Members nodes each, one etcd and
// control plane), tenant "repl" created on the owner with its standby
// there; the standby's connections to the owner cell read through a delay
// line. It finds the owner's write saturation (closed loop at its leader),
// then writes at opts.Load of it (open loop) for opts.Duration with no
// delay (the baseline) and with opts.Delay, measuring each event's lag.
func RunReplication(ctx context.Context, opts ReplicationOptions) (*Report, error) {
	opts = opts.withDefaults()
	began := time.Now()
	root, cleanup, err := runDir(opts.DataDir)
	if err != nil {
		return nil, err
	}
	defer cleanup()
	machine := DescribeMachine(root)
	p := progress{opts.Progress}
	res := &ReplicationResults{Members: opts.Members, EntrySize: opts.EntrySize, DelayMs: ms(opts.Delay), Load: opts.Load}
	p.printf("bench replication: 2 cells × %d nodes, delay %s, data dir %s", opts.Members, opts.Delay, root)

	pf, err := startPlatform(ctx, root, platformOptions{Logger: opts.Logger}, p)
	if err != nil {
		return nil, err
	}
	defer pf.Close()
	line := &delayLine{}
	rec := newLagRecorder(replTenant)
	owner, err := addCell(ctx, pf, replOwnerRegion, replOwnerCell, opts.Members, nil)
	if err != nil {
		return nil, err
	}
	standby, err := addCell(ctx, pf, replStandbyRegion, replStandbyCell, opts.Members, func(c *cells.Config) {
		c.ReplicationDialOptions = line.dialOptions()
		c.Replication.OnApplied = rec.onApplied
	})
	if err != nil {
		return nil, err
	}
	res.StartSec = time.Since(began).Seconds()
	p.printf("  cells ready in %.1f s", res.StartSec)

	t0 := time.Now()
	if _, err := createTenant(ctx, pf, replTenant, replOwnerRegion, owner.ID(), replStandbyRegion); err != nil {
		return nil, err
	}
	if _, err := waitStandby(ctx, pf, standby, replTenant, time.Minute); err != nil {
		return nil, err
	}
	res.Bootstrap = time.Since(t0).Seconds()
	p.printf("  standby of %s on %s streaming after %.2f s", replTenant, standby.ID(), res.Bootstrap)

	conn, closeConn, err := leaderConnAs(ctx, pf, owner, pki.KindRouter)
	if err != nil {
		return nil, err
	}
	defer closeConn()
	cs := contextv1.NewContextServiceClient(conn)
	tctx := asTenant(ctx, replTenant)
	ids, err := benchContexts(ctx, cs, replTenant, "repl", max(opts.SaturationConcurrency, opts.Concurrency))
	if err != nil {
		return nil, err
	}
	data := payload(opts.EntrySize)
	var reqs atomic.Uint64
	appendOp := func(ctx context.Context, w int) error {
		id := fmt.Sprintf("repl-%d", reqs.Add(1))
		_, err := cs.Append(ctx, &contextv1.AppendRequest{
			ContextId: ids[w],
			Entries:   []*contextv1.Entry{{Role: "user", Content: &contextv1.Entry_Data{Data: data}}},
			RequestId: id,
		})
		if err == nil {
			rec.ack(id, time.Now())
		}
		return err
	}

	// Saturation, with the standby following (no delay).
	res.Saturation, err = Run(tctx, Load{
		Name: "saturation (closed loop)", Concurrency: opts.SaturationConcurrency, Duration: opts.SaturationDuration,
		Warmup: warmupFor(opts.SaturationDuration), OpTimeout: 10 * time.Second,
	}, appendOp)
	if err != nil {
		return nil, err
	}
	p.result(res.Saturation)
	rate := res.Saturation.OpsPerSec * opts.Load
	if opts.Rate > 0 {
		rate = opts.Rate
	}
	res.Rate = rate

	for _, d := range []time.Duration{0, opts.Delay} {
		ph, err := lagPhase(ctx, opts, pf, owner, rec, line, d, rate, tctx, appendOp, p)
		if err != nil {
			return nil, err
		}
		res.Phases = append(res.Phases, ph)
	}
	if st, err := waitStandby(ctx, pf, standby, replTenant, 10*time.Second); err == nil {
		res.StandbyState = fmt.Sprintf("%s, %d bootstraps", st.GetState(), st.GetBootstraps())
	} else {
		res.StandbyState = err.Error()
	}

	pf.Close()
	res.TotalSec = time.Since(began).Seconds()
	res.LoadAvgEnd = loadAvg()
	return &Report{
		Scenario: "replication",
		Machine:  machine,
		Results:  res,
		Ratios:   replicationRatios(res),
		Targets:  ReplicationTargets,
	}, nil
}

// lagPhase runs one lag step: delay d, open-loop writes at rate for
// opts.Settle (unmeasured) then opts.Duration, and the lags of the events
// proposed in the measured window, once the standby applied them all (or
// 30 s passed).
func lagPhase(ctx context.Context, opts ReplicationOptions, pf *platform.Platform, owner *platform.Cell, rec *lagRecorder, line *delayLine, d time.Duration,
	rate float64, tctx context.Context, op Op, p progress) (LagPhase, error) {
	line.set(d)
	ph := LagPhase{DelayMs: ms(d)}
	from := time.Now().Add(opts.Settle)
	hist := rec.arm(from, from.Add(opts.Duration))
	var err error
	ph.Writes, err = Run(tctx, Load{
		Name: fmt.Sprintf("writes @%.0f%%, delay %s", opts.Load*100, d), Concurrency: opts.Concurrency, Duration: opts.Duration,
		Warmup: opts.Settle, Rate: rate, OpTimeout: 10 * time.Second,
	}, op)
	if err != nil {
		return ph, err
	}
	p.result(ph.Writes)
	// Wait until the standby applied everything the owner has.
	head, err := ownerTseq(ctx, pf, owner)
	if err != nil {
		return ph, err
	}
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	_ = poll(wctx, func() error {
		if a := rec.applied.Load(); a < head {
			return fmt.Errorf("standby applied %d of %d", a, head)
		}
		return nil
	})
	ph.Lag = hist.Summary()
	ph.Events = hist.Count()
	ch, early := rec.commitLags()
	ph.LagFromCommit, ph.CommitEvents, ph.BeforeAck = ch.Summary(), ch.Count(), early
	ph.Batches, ph.EventsPerBatch = rec.batchStats()
	ph.EventsPerBatch = round3(ph.EventsPerBatch)
	if ph.Writes.Ops > ph.Events {
		ph.Missing = ph.Writes.Ops - ph.Events
	}
	p.printf("  lag with %s delay: from commit p50 %.1f ms, p99 %.1f ms, max %.1f ms over %d events (%d applied before the ack); from proposal p50 %.1f ms, p99 %.1f ms, max %.1f ms over %d events (%d batches of %.1f)",
		d, ph.LagFromCommit.P50, ph.LagFromCommit.P99, ph.LagFromCommit.Max, ph.CommitEvents, ph.BeforeAck,
		ph.Lag.P50, ph.Lag.P99, ph.Lag.Max, ph.Events, ph.Batches, ph.EventsPerBatch)
	return ph, nil
}

// ownerTseq is the tenant's newest tseq on the owner's leader.
func ownerTseq(ctx context.Context, pf *platform.Platform, owner *platform.Cell) (uint64, error) {
	conn, closeConn, err := leaderConnAs(ctx, pf, owner, pki.KindControlPlane)
	if err != nil {
		return 0, err
	}
	defer closeConn()
	resp, err := cellv1.NewCellServiceClient(conn).GetTenant(ctx, &cellv1.GetTenantRequest{Tenant: replTenant})
	if err != nil {
		return 0, fmt.Errorf("bench: owner's tseq: %w", err)
	}
	return resp.GetTenant().GetTseq(), nil
}

// replicationRatios computes the ratios; one whose inputs are missing is
// left out.
func replicationRatios(res *ReplicationResults) map[string]float64 {
	r := map[string]float64{}
	for _, ph := range res.Phases {
		if ph.Events == 0 {
			continue
		}
		if ph.DelayMs == 0 {
			r[RatioLagFromProposalP99NoDelay] = ph.Lag.P99
			if ph.CommitEvents > 0 {
				r[RatioLagP99NoDelay] = ph.LagFromCommit.P99
			}
		}
		if ph.DelayMs == res.DelayMs {
			r[RatioLagFromProposalP99MinusDelay] = round3(ph.Lag.P99 - ph.DelayMs)
			if ph.CommitEvents > 0 {
				r[RatioLagP99MinusDelay] = round3(ph.LagFromCommit.P99 - ph.DelayMs)
			}
		}
	}
	return r
}
