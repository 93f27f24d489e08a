package bench

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/cellplane/cellplane/cells"
	"github.com/cellplane/cellplane/cells/registry"
	"github.com/cellplane/cellplane/cells/store"
	"github.com/cellplane/cellplane/controlplane/controller"
)

// Ratio names of the failover scenario (the targets).
const (
	RatioLeaderFailoverP50  = "leader_failover_p50_ms"
	RatioLeaderFailoverP99  = "leader_failover_p99_ms"
	RatioRegionPromotionP99 = "region_promotion_p99_ms"
	RatioSoakLeaderChanges  = "soak_leader_changes"
	RatioFailoverVsWriteP99 = "leader_failover_p99_vs_write_p99"
)

// The failover scenario's places and tenant.
const (
	failoverRegion, failoverStandbyRegion = "bench-r1", "bench-r2"
	failoverCell, failoverStandbyCell     = "bench-r1-a", "bench-r2-a"
	failoverTenant                        = "bench"
)

// FailoverTargets are the goals for the failover scenario.
var FailoverTargets = map[string]Target{
	RatioLeaderFailoverP50:  {AtLeast: false, Value: 500, Unit: "ms"},
	RatioLeaderFailoverP99:  {AtLeast: false, Value: 1000, Unit: "ms"},
	RatioRegionPromotionP99: {AtLeast: false, Value: 5000, Unit: "ms"},
	RatioSoakLeaderChanges:  {AtLeast: false, Value: 0},
}

// FailoverOptions configures RunFailover (`cellplane bench failover`).
type FailoverOptions struct {
	// Kills is how many times the cell's leader is killed (part a).
	Kills int
	// Rate is the steady write rate through the router (appends/s) while
	// leaders are killed and regions lost.
	Rate float64
	// EntrySize is the size of each appended text entry.
	EntrySize int
	// Baseline is the length of the steady-write window without kills
	// (the write latency baseline).
	Baseline time.Duration
	// Settle is how long writes run on a whole cell (the killed node
	// restarted and caught up) before the next kill.
	Settle time.Duration
	// Soak, when > 0, runs closed-loop writes at SoakConcurrency through
	// the router for this long after the kills and counts leader changes.
	Soak            time.Duration
	SoakConcurrency int
	// Promotions is how many region promotions are measured (part b; 0
	// skips it).
	Promotions int
	// AutoPromote, when > 0, lets the control plane's automatic policy
	// promote (a cell unhealthy for this long); 0: the bench calls
	// ControlPlaneService.Failover(PROMOTE) right after the kill.
	AutoPromote time.Duration
	// AuthorityTTL is the cells' authority lease TTL (0: registry.DefaultAuthorityTTL).
	AuthorityTTL time.Duration
	// HeartbeatTimeout, ElectionTimeout and LeaderLeaseTimeout override
	// the cells' Raft timeouts (0: the store's defaults).
	HeartbeatTimeout, ElectionTimeout, LeaderLeaseTimeout time.Duration
	// LeaderCheckInterval and ElectionStagger set the cells' leader check
	// (store.RaftConfig; an interval of 0 turns it off: Raft's own timer
	// only). DefaultFailoverOptions has the store's defaults.
	LeaderCheckInterval, ElectionStagger time.Duration
	// DataDir is where etcd and the cells keep their files: a new
	// directory inside it (os.TempDir() when empty), removed at the end.
	DataDir string
	// Logger receives the components' logs (nil: discarded).
	Logger *slog.Logger
	// Progress receives one human line per event (nil: silent).
	Progress io.Writer
}

// DefaultFailoverOptions returns the options of a default run: 10 leader
// kills under 200 appends/s, no soak, 3 region promotions by an operator
// call (about two minutes on a 2-core machine).
func DefaultFailoverOptions() FailoverOptions {
	return FailoverOptions{
		Kills:           10,
		Rate:            200,
		EntrySize:       128,
		Baseline:        5 * time.Second,
		Settle:          time.Second,
		SoakConcurrency: 64,
		Promotions:      3,

		LeaderCheckInterval: store.DefaultConfig().Raft.LeaderCheckInterval,
		ElectionStagger:     store.DefaultConfig().Raft.ElectionStagger,
	}
}

func (o FailoverOptions) withDefaults() FailoverOptions {
	d := DefaultFailoverOptions()
	if o.Kills < 0 {
		o.Kills = 0
	}
	if o.Rate <= 0 {
		o.Rate = d.Rate
	}
	if o.EntrySize <= 0 {
		o.EntrySize = d.EntrySize
	}
	if o.Baseline <= 0 {
		o.Baseline = d.Baseline
	}
	if o.Settle < 0 {
		o.Settle = 0
	}
	if o.SoakConcurrency <= 0 {
		o.SoakConcurrency = d.SoakConcurrency
	}
	if o.Promotions < 0 {
		o.Promotions = 0
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o
}

// nodeConfig applies the options' cell settings to a node.
func (o FailoverOptions) nodeConfig(c *cells.Config) {
	c.AuthorityTTL = o.AuthorityTTL
	if o.HeartbeatTimeout > 0 {
		c.Store.Raft.HeartbeatTimeout = o.HeartbeatTimeout
	}
	if o.ElectionTimeout > 0 {
		c.Store.Raft.ElectionTimeout = o.ElectionTimeout
	}
	if o.LeaderLeaseTimeout > 0 {
		c.Store.Raft.LeaderLeaseTimeout = o.LeaderLeaseTimeout
	}
	c.Store.Raft.LeaderCheckInterval = o.LeaderCheckInterval
	c.Store.Raft.ElectionStagger = o.ElectionStagger
}

// FailoverResults are the figures of `cellplane bench failover`.
type FailoverResults struct {
	Rate      float64 `json:"rate"`
	EntrySize int     `json:"entry_size"`
	// Raft timeouts and the authority lease TTL the cells ran with.
	HeartbeatTimeoutMs   float64 `json:"raft_heartbeat_timeout_ms"`
	ElectionTimeoutMs    float64 `json:"raft_election_timeout_ms"`
	LeaderLeaseTimeoutMs float64 `json:"raft_leader_lease_timeout_ms"`
	// LeaderCheckMs is the leader check's interval (0: off), StaggerMs
	// its election stagger.
	LeaderCheckMs   float64 `json:"raft_leader_check_interval_ms"`
	StaggerMs       float64 `json:"raft_election_stagger_ms"`
	AuthorityTTLSec float64 `json:"authority_ttl_s"`

	// Baseline is the steady writes through the router with no kill.
	Baseline Result `json:"baseline"`
	// KillPhase is every steady write of the kill phase (from the first
	// kill to the end of the last recovery), errors included.
	KillPhase Result `json:"kill_phase"`
	// Kills are the leader kills, in order; LeaderFailover summarises
	// their kill-to-first-acknowledged-write times.
	Kills          []LeaderKill `json:"kills"`
	LeaderFailover Latency      `json:"leader_failover"`

	// Soak (when run): closed-loop writes through the router, with the
	// leader changes and elections seen meanwhile.
	Soak              *Result `json:"soak,omitempty"`
	SoakLeaderChanges int     `json:"soak_leader_changes"`
	SoakElections     uint64  `json:"soak_elections"`

	// Promotions are the region promotions, in order; RegionPromotion
	// summarises their kill-to-first-acknowledged-write times.
	Promotions      []Promotion `json:"promotions"`
	RegionPromotion Latency     `json:"region_promotion"`
	// PromotionBy is "operator call" (Failover(PROMOTE) right after the
	// kill) or "automatic policy".
	PromotionBy string `json:"promotion_by,omitempty"`

	StartSec   float64   `json:"start_s"`
	TotalSec   float64   `json:"total_s"`
	LoadAvgEnd []float64 `json:"load_avg_end,omitempty"`
}

// LeaderKill is one in-cell leader kill.
type LeaderKill struct {
	Round  int    `json:"round"`
	Killed string `json:"killed"`
	// NewLeader is the node that led when the first write was
	// acknowledged after the kill.
	NewLeader string `json:"new_leader"`
	// FailoverMs is from the kill's start to the first acknowledgement,
	// through the router, of a write sent (scheduled) after the killed
	// node's Raft stopped.
	FailoverMs float64 `json:"failover_ms"`
	// ElectedMs is from the kill's start until a new leader was seen;
	// AuthorityMs until that leader's authority was valid (it could
	// acknowledge writes). The rest of FailoverMs is the router finding it.
	ElectedMs   float64 `json:"elected_ms"`
	AuthorityMs float64 `json:"authority_ms"`
	// MaxGapMs is the longest time between two acknowledgements around
	// the kill (writes sent before it included).
	MaxGapMs float64 `json:"max_gap_ms"`
	// FailedWrites counts writes scheduled from the kill to 1 s after the
	// first acknowledgement that failed.
	FailedWrites uint64 `json:"failed_writes"`
	// CloseMs is from the kill's start until the node's Raft had stopped
	// (writes sent after that count); RestartMs how
	// long it took to start it again (then it catches up).
	CloseMs   float64 `json:"close_ms"`
	RestartMs float64 `json:"restart_ms"`
	Elections uint64  `json:"elections"`
}

// Promotion is one region promotion: the owner cell lost, its standby in
// the other region promoted.
type Promotion struct {
	Tenant     string `json:"tenant"`
	FailoverID string `json:"failover_id"`
	Trigger    string `json:"trigger"`
	// PromoteMs is from the kill of the owner cell to the first
	// acknowledgement (through the router, at the new owner) of a write
	// sent after every node of the owner had stopped its Raft (KillMs
	// after the kill started).
	PromoteMs float64 `json:"promote_ms"`
	// TimeToPromoteMs is the control plane's record (failover start to
	// placement flip); LeaseWaitMs from the kill to the lease deadline
	// it waited for.
	TimeToPromoteMs float64 `json:"time_to_promote_ms"`
	KillMs          float64 `json:"kill_ms"`
	LeaseWaitMs     float64 `json:"lease_wait_ms"`
	// FailedWrites counts writes sent after the kill that failed (the
	// router's holds expired before the flip).
	FailedWrites uint64            `json:"failed_writes"`
	FailedByCode map[string]uint64 `json:"failed_by_code,omitempty"`
	// The RPO the control plane reported once the old owner was back:
	// the standby's tseq when promoted, the old owner's last tseq, and
	// the events lost between them.
	PromotedTseq     uint64 `json:"promoted_tseq"`
	OldOwnerTseq     uint64 `json:"old_owner_tseq"`
	LostEvents       uint64 `json:"lost_events"`
	OldOwnerReported bool   `json:"old_owner_reported"`
	FinalState       string `json:"final_state"`
}

// Steps lists the write steps, for the table.
func (r *FailoverResults) Steps() []Result {
	s := []Result{r.Baseline, r.KillPhase}
	if r.Soak != nil {
		s = append(s, *r.Soak)
	}
	return s
}

// Notes lists the kills and promotions.
func (r *FailoverResults) Notes() []Note {
	var n []Note
	for _, k := range r.Kills {
		n = append(n, Note{fmt.Sprintf("kill %d (%s → %s)", k.Round, k.Killed, k.NewLeader),
			fmt.Sprintf("first ack %.0f ms after the kill (leader elected at %.0f ms, authority at %.0f ms), longest gap %.0f ms, %d failed writes, %d elections (raft down in %.0f ms, restart %.0f ms)",
				k.FailoverMs, k.ElectedMs, k.AuthorityMs, k.MaxGapMs, k.FailedWrites, k.Elections, k.CloseMs, k.RestartMs)})
	}
	if len(r.Kills) > 0 {
		n = append(n, Note{"leader failover", fmt.Sprintf("p50 %.0f ms, p99 %.0f ms, max %.0f ms over %d kills (write p99 without kills %.1f ms)",
			r.LeaderFailover.P50, r.LeaderFailover.P99, r.LeaderFailover.Max, len(r.Kills), r.Baseline.Latency.P99)})
	}
	if r.Soak != nil {
		n = append(n, Note{"soak", fmt.Sprintf("%d leader changes, %d elections in %.0f s at %.0f writes/s", r.SoakLeaderChanges, r.SoakElections, r.Soak.ElapsedSec, r.Soak.OpsPerSec)})
	}
	for i, p := range r.Promotions {
		rpo := "old owner not reported"
		if p.OldOwnerReported {
			rpo = fmt.Sprintf("RPO %d events (promoted at tseq %d, old owner at %d)", p.LostEvents, p.PromotedTseq, p.OldOwnerTseq)
		}
		n = append(n, Note{fmt.Sprintf("promotion %d (%s, %s)", i+1, p.Tenant, p.Trigger),
			fmt.Sprintf("first ack at the new owner %.0f ms after the kill (lease deadline +%.0f ms, time to promote %.0f ms), %d failed writes %v; %s; %s",
				p.PromoteMs, p.LeaseWaitMs, p.TimeToPromoteMs, p.FailedWrites, p.FailedByCode, rpo, p.FinalState)})
	}
	if len(r.Promotions) > 0 {
		n = append(n, Note{"region promotion", fmt.Sprintf("p50 %.0f ms, p99 %.0f ms over %d promotions (%s; authority lease TTL %.0f s)",
			r.RegionPromotion.P50, r.RegionPromotion.P99, len(r.Promotions), r.PromotionBy, r.AuthorityTTLSec)})
	}
	n = append(n,
		Note{"raft timeouts", fmt.Sprintf("heartbeat %.0f ms, election %.0f ms, leader lease %.0f ms, leader check every %.0f ms (0: off), stagger %.0f ms", r.HeartbeatTimeoutMs, r.ElectionTimeoutMs, r.LeaderLeaseTimeoutMs, r.LeaderCheckMs, r.StaggerMs)},
		Note{"start (etcd, control plane, cell, router)", fmt.Sprintf("%.1f s", r.StartSec)},
		Note{"total", fmt.Sprintf("%.1f s", r.TotalSec)},
	)
	n = append(n, loadAvgNote(r.LoadAvgEnd)...)
	return n
}

// RunFailover runs `cellplane bench failover`:
//
//	a. a 3-node cell behind a router, steady appends through the router;
//	   the leader is killed opts.Kills times (restarted and caught up
//	   between kills); per kill, the time to the first acknowledged write
//	   sent after it. The baseline is the write latency without kills.
//	   With opts.Soak, closed-loop writes then run that long and the
//	   leader changes are counted (the guard on the Raft timeouts).
//	b. opts.Promotions times: a tenant on that cell with a standby cell
//	   in another region, steady appends through the router; the whole
//	   owner cell is killed (a lost region) and the standby promoted (an
//	   operator call right after the kill, or the automatic policy); the
//	   time to the first acknowledged write at the new owner, and the RPO
//	   the control plane reports once the old owner is back.
func RunFailover(ctx context.Context, opts FailoverOptions) (*Report, error) {
	opts = opts.withDefaults()
	began := time.Now()
	root, cleanup, err := runDir(opts.DataDir)
	if err != nil {
		return nil, err
	}
	defer cleanup()
	machine := DescribeMachine(root)
	p := progress{opts.Progress}
	res := &FailoverResults{Rate: opts.Rate, EntrySize: opts.EntrySize}
	probe := cells.DefaultConfig()
	opts.nodeConfig(&probe)
	res.HeartbeatTimeoutMs = ms(probe.Store.Raft.HeartbeatTimeout)
	res.ElectionTimeoutMs = ms(probe.Store.Raft.ElectionTimeout)
	res.LeaderLeaseTimeoutMs = ms(probe.Store.Raft.LeaderLeaseTimeout)
	res.LeaderCheckMs = ms(probe.Store.Raft.LeaderCheckInterval)
	res.StaggerMs = ms(probe.Store.Raft.ElectionStagger)
	res.AuthorityTTLSec = registry.DefaultAuthorityTTL.Seconds()
	if opts.AuthorityTTL > 0 {
		res.AuthorityTTLSec = opts.AuthorityTTL.Seconds()
	}

	p.printf("bench failover: %d leader kills, %d region promotions, %.0f writes/s, data dir %s", opts.Kills, opts.Promotions, opts.Rate, root)
	pf, err := startPlatform(ctx, root, platformOptions{Logger: opts.Logger, Controller: func(c *controller.Config) {
		if opts.AutoPromote > 0 {
			c.AutoPromote.Enabled = true
			c.AutoPromote.UnhealthyFor = opts.AutoPromote
			c.AutoPromote.Interval = min(opts.AutoPromote/4, time.Second)
			c.AutoPromote.ResumeGrace = opts.AutoPromote // the platform has just started: no 20 s wait
		}
	}}, p)
	if err != nil {
		return nil, err
	}
	defer pf.Close()
	p.printf("starting a 3-node cell and a router")
	cell, err := addCell(ctx, pf, failoverRegion, failoverCell, 3, opts.nodeConfig)
	if err != nil {
		return nil, err
	}
	res.StartSec = time.Since(began).Seconds()
	p.printf("  ready in %.1f s", res.StartSec)

	if err := runLeaderKills(ctx, opts, pf, cell, res, p); err != nil {
		return nil, err
	}
	if opts.Promotions > 0 {
		if err := runPromotions(ctx, opts, pf, cell, res, p); err != nil {
			return nil, err
		}
	}

	pf.Close()
	res.TotalSec = time.Since(began).Seconds()
	res.LoadAvgEnd = loadAvg()
	return &Report{
		Scenario: "failover",
		Machine:  machine,
		Results:  res,
		Ratios:   failoverRatios(res),
		Targets:  FailoverTargets,
	}, nil
}

// failoverRatios computes the ratios; one whose inputs are missing is left
// out.
func failoverRatios(res *FailoverResults) map[string]float64 {
	r := map[string]float64{}
	if len(res.Kills) > 0 {
		r[RatioLeaderFailoverP50] = res.LeaderFailover.P50
		r[RatioLeaderFailoverP99] = res.LeaderFailover.P99
		if res.Baseline.Latency.P99 > 0 {
			r[RatioFailoverVsWriteP99] = round3(res.LeaderFailover.P99 / res.Baseline.Latency.P99)
		}
	}
	if res.Soak != nil {
		r[RatioSoakLeaderChanges] = float64(res.SoakLeaderChanges)
	}
	if len(res.Promotions) > 0 {
		r[RatioRegionPromotionP99] = res.RegionPromotion.P99
	}
	return r
}

// summarize is the latency summary of samples in milliseconds.
func summarize(samples []time.Duration) Latency {
	h := NewHistogram()
	for _, s := range samples {
		h.Record(s)
	}
	return h.Summary()
}
