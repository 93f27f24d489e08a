package bench

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// Ratio names of the cell scenario (the targets).
const (
	RatioWritesVsFsync     = "writes_vs_fsync"
	RatioWritesVsEtcd      = "writes_vs_etcd"
	RatioWriteP50VsFsync   = "write_p50_vs_fsync_p50"
	RatioLinReadP99AtHalf  = "lin_read_p99_ms_at_half_max"
	ratioWritesConcurrency = 64 // the level the throughput ratios compare
)

// CellTargets are the goals for the cell scenario's ratios
// (writes_vs_fsync is reported without one: the VM's fsync is
// host-cached).
var CellTargets = map[string]Target{
	RatioWritesVsEtcd:      {AtLeast: true, Value: 2},
	RatioWritesVsRaftFloor: {AtLeast: true, Value: 0.8},
	RatioWriteP50VsFsync:   {AtLeast: false, Value: 3.5},
	RatioLinReadP99AtHalf:  {AtLeast: false, Value: 2, Unit: "ms"},
}

// cellInProcessTargets are CellTargets less the bare-Raft floor, which
// only the per-process mode measures.
func cellInProcessTargets() map[string]Target {
	t := maps.Clone(CellTargets)
	delete(t, RatioWritesVsRaftFloor)
	return t
}

// CellResults are the figures of `cellplane bench cell`.
type CellResults struct {
	// LeaseReads: the cell served linearizable reads under a leader lease.
	LeaseReads bool `json:"lease_reads,omitempty"`
	// Fsync is the single-thread write+fsync loop on the data dir.
	Fsync Result `json:"fsync"`
	// Writes are cell Appends (one entry each) to the leader, one per
	// concurrency level.
	Writes []Result `json:"cell_writes"`
	// Reads are Read(tail 1) steps: linearizable at the leader (closed
	// loop, the maximum), stale at the leader and at a follower, and
	// linearizable at the leader, open loop at half the maximum.
	Reads []Result `json:"cell_reads"`
	// Etcd are Puts to the leader of a 3-member embedded etcd, fsync on.
	Etcd []Result `json:"etcd_puts"`

	// Per-process mode: Raft are the bare-Raft floor's appends; Fsyncs the
	// fsync loop of every round (Fsync is the first); Rounds the rounds
	// with their ratios, load and verdict (noisy rounds are left out of
	// the medians; NoisyRatios says every round was noisy, so the medians
	// are over all of them); RoundsUsed how many rounds the medians
	// cover; Members the member processes.
	Mode            string      `json:"mode"`
	Raft            []Result    `json:"raft_floor_appends,omitempty"`
	Fsyncs          []Result    `json:"fsync_rounds,omitempty"`
	Rounds          []CellRound `json:"rounds,omitempty"`
	RoundsUsed      int         `json:"rounds_used,omitempty"`
	NoisyRatios     bool        `json:"noisy_ratios,omitempty"`
	MaxForeignCores float64     `json:"max_foreign_cores,omitempty"`
	PrefillAppends  uint64      `json:"prefill_appends,omitempty"`
	PrefillSec      float64     `json:"prefill_s,omitempty"`
	Members         []string    `json:"members,omitempty"`
	// LeaderChanges counts, per system, the steps before which its
	// leader had moved (the bench then sends to the new one).
	LeaderChanges map[string]int `json:"leader_changes,omitempty"`
	pending       func(*Result)

	// CellPeakRSSBytes is the largest VmRSS sampled during the cell phase
	// (start, writes, reads); the process holds the three nodes and the
	// load generator. CellVmHWMBytes is the kernel's high-water mark for
	// the same phase (reset at its start when the kernel allows it).
	CellPeakRSSBytes uint64 `json:"cell_peak_rss_bytes"`
	CellVmHWMBytes   uint64 `json:"cell_vmhwm_bytes,omitempty"`
	VmHWMReset       bool   `json:"vmhwm_reset"`

	// CellElections counts Raft elections during the cell phase after
	// the first leader (term changes); CellLeaderMoved is true when the
	// node that led at the start no longer led at the end. Steps keep
	// talking to the first leader, which forwards to a new one, so
	// elections show as errors (no leader yet) and slower steps.
	CellElections   uint64 `json:"cell_elections"`
	CellLeaderMoved bool   `json:"cell_leader_moved"`

	CellStartSec float64 `json:"cell_start_s"`
	EtcdStartSec float64 `json:"etcd_start_s"`
	StepSec      float64 `json:"step_s"`
	WarmupSec    float64 `json:"warmup_s"`
	TotalSec     float64 `json:"total_s"`
	// LoadAvgEnd is the load average at the end (Machine.LoadAvg has the
	// one at the start).
	LoadAvgEnd []float64 `json:"load_avg_end,omitempty"`
}

// Steps lists every step in run order, for the table.
func (r *CellResults) Steps() []Result {
	var s []Result
	if len(r.Fsyncs) > 0 {
		s = append(s, r.Fsyncs...)
	} else {
		s = append(s, r.Fsync)
	}
	s = append(s, r.Writes...)
	s = append(s, r.Reads...)
	s = append(s, r.Etcd...)
	s = append(s, r.Raft...)
	return s
}

// Notes lists the figures that are not steps.
func (r *CellResults) Notes() []Note {
	if r.Mode == "processes" {
		n := []Note{{"mode", "one process per member (cell, etcd, bare Raft), mutual TLS; this process is the only client"}}
		for _, rd := range r.Rounds {
			verdict := "quiet"
			if rd.Noisy {
				verdict = "NOISY (left out)"
			}
			n = append(n, Note{fmt.Sprintf("round %d (%s)", rd.Round, strings.Join(rd.Order, ", ")),
				fmt.Sprintf("%s, max foreign %.2f cores, load %v, ratios %v", verdict, rd.MaxForeignCores, rd.LoadAvgStart, rd.Ratios)})
		}
		used := fmt.Sprintf("%d of %d", r.RoundsUsed, len(r.Rounds))
		if r.NoisyRatios {
			used += " (every round was noisy: medians over all)"
		}
		n = append(n, Note{"rounds in the medians", used},
			Note{"cell elections after the first leader", fmt.Sprint(r.CellElections)},
			Note{"leader moves seen between steps", fmt.Sprint(r.LeaderChanges)},
			Note{"prefill", fmt.Sprintf("%d appends in %.1f s", r.PrefillAppends, r.PrefillSec)},
			Note{"each step", fmt.Sprintf("%.1f s after %.1f s warm-up", r.StepSec, r.WarmupSec)},
			Note{"total", fmt.Sprintf("%.1f s", r.TotalSec)})
		return append(n, loadAvgNote(r.LoadAvgEnd)...)
	}
	n := []Note{{"cell peak RSS (sampled VmRSS, 3 nodes + load generator)", mib(r.CellPeakRSSBytes)}}
	if r.CellVmHWMBytes > 0 {
		what := "since process start"
		if r.VmHWMReset {
			what = "reset at cell start"
		}
		n = append(n, Note{"cell VmHWM (" + what + ")", mib(r.CellVmHWMBytes)})
	}
	elections := fmt.Sprint(r.CellElections)
	if r.CellLeaderMoved {
		elections += " (the first leader lost leadership)"
	}
	n = append(n,
		Note{"cell elections after the first leader", elections},
		Note{"cell start (3 nodes, leader, tenant)", fmt.Sprintf("%.2f s", r.CellStartSec)},
		Note{"etcd start (3 members ready)", fmt.Sprintf("%.2f s", r.EtcdStartSec)},
		Note{"each step", fmt.Sprintf("%.1f s after %.2f s warm-up", r.StepSec, r.WarmupSec)},
		Note{"total", fmt.Sprintf("%.1f s", r.TotalSec)},
	)
	n = append(n, loadAvgNote(r.LoadAvgEnd)...)
	return n
}

func mib(b uint64) string {
	if b == 0 {
		return "-"
	}
	return fmt.Sprintf("%.0f MiB", float64(b)/(1<<20))
}

// warmupFor returns the warm-up before a step of duration d.
func warmupFor(d time.Duration) time.Duration {
	return min(max(d/4, 200*time.Millisecond), time.Second)
}

// RunCell runs `cellplane bench cell`: on the filesystem of opts.DataDir, a
// single-thread fsync loop; a 3-node in-process cell on real disk taking
// 1-entry Appends at each concurrency and Reads at each consistency; and a
// 3-member embedded etcd (fsync on) taking Puts of the same size at the
// same concurrencies. The ratios compare them (docs/design.md §12).
//
// Errors inside a step are counted and reported with it; a step in which
// no op succeeds, or a component that fails to start, stops the run (no
// partial report: its ratios would compare different conditions).
func RunCell(ctx context.Context, opts CellOptions) (*Report, error) {
	opts = opts.withDefaults()
	began := time.Now()

	root, cleanup, err := runDir(opts.DataDir)
	if err != nil {
		return nil, err
	}
	defer cleanup()

	// Described first: the load average then says how busy the machine
	// was before this run added to it.
	machine := DescribeMachine(root)
	p := progress{opts.Progress}
	res := &CellResults{
		StepSec:   opts.Duration.Seconds(),
		WarmupSec: warmupFor(opts.Duration).Seconds(),
	}
	step := func(name string, conc int) Load {
		return Load{
			Name:        name,
			Concurrency: conc,
			Duration:    opts.Duration,
			Warmup:      warmupFor(opts.Duration),
			OpTimeout:   10 * time.Second,
		}
	}
	if opts.Processes {
		p.printf("bench cell: data dir %s, %d rounds of %s steps", root, opts.Rounds, opts.RoundDuration)
	} else {
		p.printf("bench cell: data dir %s, %s per step (in-process)", root, opts.Duration)
	}

	if opts.Processes {
		ratios, err := runCellProcesses(ctx, opts, root, res, p)
		if err != nil {
			return nil, err
		}
		res.TotalSec = time.Since(began).Seconds()
		res.LoadAvgEnd = loadAvg()
		return &Report{Scenario: "cell", Machine: machine, Results: res, Ratios: ratios, Targets: CellTargets}, nil
	}
	res.Mode = "in-process"

	// a. The disk's floor.
	res.Fsync, err = FsyncLoop(ctx, root, opts.EntrySize, step("fsync", 1))
	if err != nil {
		return nil, err
	}
	p.result(res.Fsync)

	// b, c, e. The cell.
	if err := runCellPhase(ctx, opts, filepath.Join(root, "cell"), step, res, p); err != nil {
		return nil, err
	}

	// d. The etcd baseline.
	p.printf("starting 3-member etcd (fsync on)")
	t0 := time.Now()
	etcd, err := StartEtcd(ctx, filepath.Join(root, "etcd"), 3)
	if err != nil {
		return nil, err
	}
	defer etcd.Close()
	leaderCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	leader, err := etcd.LeaderURL(leaderCtx)
	cancel()
	if err != nil {
		return nil, err
	}
	res.EtcdStartSec = time.Since(t0).Seconds()
	for _, c := range opts.Concurrency {
		r, err := EtcdPuts(ctx, leader, opts.EntrySize, step("etcd put", c))
		if err != nil {
			return nil, err
		}
		p.result(r)
		res.Etcd = append(res.Etcd, r)
	}
	etcd.Close()

	res.TotalSec = time.Since(began).Seconds()
	res.LoadAvgEnd = loadAvg()
	rep := &Report{
		Scenario: "cell",
		Machine:  machine,
		Results:  res,
		Ratios:   cellRatios(res),
		Targets:  cellInProcessTargets(),
	}
	return rep, nil
}

func (o CellOptions) withDefaults() CellOptions {
	d := DefaultCellOptions()
	if o.Duration <= 0 {
		o.Duration = d.Duration
	}
	if len(o.Concurrency) == 0 {
		o.Concurrency = d.Concurrency
	}
	if o.EntrySize <= 0 {
		o.EntrySize = d.EntrySize
	}
	if o.ReadConcurrency <= 0 {
		o.ReadConcurrency = d.ReadConcurrency
	}
	if o.Rounds <= 0 {
		o.Rounds = d.Rounds
	}
	if o.RoundDuration <= 0 {
		o.RoundDuration = d.RoundDuration
	}
	if o.Warmup <= 0 {
		o.Warmup = d.Warmup
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o
}

// runDir makes the run's working directory: a new directory inside
// dataDir (or os.TempDir() when empty), removed by cleanup.
func runDir(dataDir string) (dir string, cleanup func(), err error) {
	parent := dataDir
	if parent == "" {
		parent = os.TempDir()
	}
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return "", nil, fmt.Errorf("bench: data dir: %w", err)
	}
	dir, err = os.MkdirTemp(parent, "cellplane-bench-")
	if err != nil {
		return "", nil, fmt.Errorf("bench: data dir: %w", err)
	}
	return dir, func() { _ = os.RemoveAll(dir) }, nil
}

// cellRatios computes the ratios from res. A ratio whose inputs
// are missing or zero is left out rather than reported as 0 or ±Inf.
func cellRatios(res *CellResults) map[string]float64 {
	ratios := map[string]float64{}
	put := func(k string, num, den float64) {
		if num > 0 && den > 0 {
			ratios[k] = round3(num / den)
		}
	}
	w64, ok := atConcurrency(res.Writes, ratioWritesConcurrency)
	if ok {
		put(RatioWritesVsFsync, w64.OpsPerSec, res.Fsync.OpsPerSec)
		if e64, ok := atConcurrency(res.Etcd, ratioWritesConcurrency); ok {
			put(RatioWritesVsEtcd, w64.OpsPerSec, e64.OpsPerSec)
		}
	}
	if w1, ok := atConcurrency(res.Writes, 1); ok {
		put(RatioWriteP50VsFsync, w1.Latency.P50, res.Fsync.Latency.P50)
	}
	for _, r := range res.Reads {
		if r.Name == readLinHalf && r.Ops > 0 {
			ratios[RatioLinReadP99AtHalf] = r.Latency.P99
		}
	}
	return ratios
}

func atConcurrency(rs []Result, c int) (Result, bool) {
	i := slices.IndexFunc(rs, func(r Result) bool { return r.Concurrency == c })
	if i < 0 {
		return Result{}, false
	}
	return rs[i], true
}

func round3(v float64) float64 {
	return float64(int64(v*1000+0.5)) / 1000
}

// Read step names.
const (
	readLinMax     = "read linearizable leader"
	readStaleLdr   = "read stale leader"
	readStaleFollw = "read stale follower"
	readLinHalf    = "read linearizable leader @50%"
)

// progress writes one line per event to an optional writer.
type progress struct{ w io.Writer }

func (p progress) printf(format string, args ...any) {
	if p.w != nil {
		fmt.Fprintf(p.w, format+"\n", args...)
	}
}

func (p progress) result(r Result) { p.printf("  %s", r) }
