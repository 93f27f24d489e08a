package bench

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/cellplane/cellplane/controlplane/topo/etcdtopo"
)

// Ratio names of the router scenario (the targets).
const (
	RatioRouterP50VsDirect    = "router_p50_vs_direct"
	RatioRouterP99VsDirect    = "router_p99_vs_direct"
	RatioRouterQPSVsDirect    = "router_qps_vs_direct"
	RatioClientP50VsDirect    = "client_p50_vs_direct"
	RatioRouterBytesPerTenant = "router_bytes_per_tenant"
)

// RouterTargets are the goals for the router scenario.
var RouterTargets = map[string]Target{
	RatioRouterP50VsDirect:    {AtLeast: false, Value: 1.6},
	RatioRouterP99VsDirect:    {AtLeast: false, Value: 2.0},
	RatioRouterQPSVsDirect:    {AtLeast: true, Value: 0.65},
	RatioClientP50VsDirect:    {AtLeast: false, Value: 1.05},
	RatioRouterBytesPerTenant: {AtLeast: false, Value: 150, Unit: "B"},
}

// The three paths of the router scenario, and its two operations.
const (
	pathDirect = "direct"
	pathRouter = "router"
	pathClient = "client"
	opAppend   = "append"
	opRead     = "read"
)

var (
	routerPaths = []string{pathDirect, pathRouter, pathClient}
	routerOps   = []string{opAppend, opRead}
)

// RouterOptions configures RunRouter (`cellplane bench router`).
type RouterOptions struct {
	// Concurrency is the number of workers of every step (closed loop).
	Concurrency int
	// Duration is the measured length of EACH step (one path, one op, one
	// round); a short warm-up precedes each step.
	Duration time.Duration
	// Rounds is how many times the steps of the three paths are repeated,
	// interleaved (the medians over rounds are reported).
	Rounds int
	// EntrySize is the size in bytes of each appended text entry.
	EntrySize int
	// Tenants is the number of placements loaded into etcd before the
	// router starts (its memory is measured with them loaded).
	Tenants int
	// PageSize is the router's full-load page (routing.Config.PageSize).
	PageSize int
	// LoadConcurrency is the number of writers of the bulk load.
	LoadConcurrency int
	// DataDir is where the cell and etcd keep their files: a new
	// directory inside it (os.TempDir() when empty), removed at the end.
	DataDir string
	// Logger receives the components' logs (nil: discarded).
	Logger *slog.Logger
	// Progress receives one human line per step (nil: silent).
	Progress io.Writer
	// Processes runs the cell (3 × `cellplane cell --insecure`) and the
	// router (`cellplane router --insecure --auth none`) as processes of
	// Binary (empty: this executable), this process being the load
	// generator; each step then reports the router's and the cell
	// members' CPU per call. False runs them in this process (tests).
	Processes bool
	Binary    string
}

// DefaultRouterOptions returns the options of a default run: 16 workers,
// 3 rounds of 2 s steps, 1 KiB entries, 1M placements loaded with pages of
// 50 000 (the whole run stays under 2 minutes).
func DefaultRouterOptions() RouterOptions {
	return RouterOptions{
		Concurrency:     16,
		Duration:        2 * time.Second,
		Rounds:          3,
		EntrySize:       1024,
		Tenants:         1_000_000,
		PageSize:        50_000,
		LoadConcurrency: 8,
		Processes:       true,
	}
}

func (o RouterOptions) withDefaults() RouterOptions {
	d := DefaultRouterOptions()
	if o.Concurrency <= 0 {
		o.Concurrency = d.Concurrency
	}
	if o.Duration <= 0 {
		o.Duration = d.Duration
	}
	if o.Rounds <= 0 {
		o.Rounds = d.Rounds
	}
	if o.EntrySize <= 0 {
		o.EntrySize = d.EntrySize
	}
	if o.Tenants <= 0 {
		o.Tenants = d.Tenants
	}
	if o.PageSize <= 0 {
		o.PageSize = d.PageSize
	}
	if o.LoadConcurrency <= 0 {
		o.LoadConcurrency = d.LoadConcurrency
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o
}

// RouterResults are the figures of `cellplane bench router`.
type RouterResults struct {
	Concurrency int     `json:"concurrency"`
	EntrySize   int     `json:"entry_size"`
	Rounds      int     `json:"rounds"`
	StepSec     float64 `json:"step_s"`
	WarmupSec   float64 `json:"warmup_s"`

	// Runs are every measured step in run order ("router append #2").
	Runs []Result `json:"steps"`
	// Summary holds, per path and op, the medians over the rounds.
	Summary []PathSummary `json:"summary"`
	// OpRatios are the latency and throughput ratios per op
	// ("append/router_p50_vs_direct"); the report's ratios are the worse
	// of the two ops.
	OpRatios map[string]float64 `json:"op_ratios"`

	// Tenants placements were bulk-loaded into etcd (Bulk: ops are
	// tenants) before the router started; TableTenants is what its table
	// held when measured (the placements plus the bench tenant).
	Tenants      int    `json:"tenants"`
	PageSize     int    `json:"page_size"`
	Bulk         Result `json:"bulk_load"`
	TableTenants int    `json:"table_tenants"`
	// RouterLoadSec is from router.Start to its table holding every
	// tenant; RouterHeapBytes the live heap growth (after a forced GC)
	// over the same span, router included; BytesPerTenant divides it by
	// TableTenants.
	RouterLoadSec   float64 `json:"router_load_s"`
	RouterHeapBytes uint64  `json:"router_heap_bytes"`
	BytesPerTenant  float64 `json:"router_bytes_per_tenant"`

	// Mode is "processes" or "in-process"; Members the processes.
	Mode    string   `json:"mode"`
	Members []string `json:"members,omitempty"`

	CellElections   uint64    `json:"cell_elections"`
	CellLeaderMoved bool      `json:"cell_leader_moved"`
	EtcdStartSec    float64   `json:"etcd_start_s"`
	CellStartSec    float64   `json:"cell_start_s"`
	TotalSec        float64   `json:"total_s"`
	LoadAvgEnd      []float64 `json:"load_avg_end,omitempty"`
}

// PathSummary is one path's figures for one op: the medians over the
// rounds of each step's p50, p99 and ops/s, and the errors of all rounds.
type PathSummary struct {
	Path      string  `json:"path"`
	Op        string  `json:"op"`
	P50       float64 `json:"p50_ms"`
	P99       float64 `json:"p99_ms"`
	OpsPerSec float64 `json:"ops_per_sec"`
	Errors    uint64  `json:"errors"`
	// Per-process mode: the medians of the router process's and of the
	// cell members' CPU per call (µs).
	RouterCPUPerOpUs float64 `json:"router_cpu_per_op_us,omitempty"`
	CellCPUPerOpUs   float64 `json:"cell_cpu_per_op_us,omitempty"`
}

// Steps lists every step in run order, for the table.
func (r *RouterResults) Steps() []Result { return r.Runs }

// Notes lists the medians and the figures that are not steps.
func (r *RouterResults) Notes() []Note {
	var n []Note
	for _, s := range r.Summary {
		v := fmt.Sprintf("p50 %.3f ms, p99 %.3f ms, %.0f ops/s, %d errors", s.P50, s.P99, s.OpsPerSec, s.Errors)
		if s.CellCPUPerOpUs > 0 {
			v += fmt.Sprintf(", CPU per call: router %.0f µs, cell %.0f µs", s.RouterCPUPerOpUs, s.CellCPUPerOpUs)
		}
		n = append(n, Note{fmt.Sprintf("median %s %s", s.Path, s.Op), v})
	}
	if r.Mode == "processes" {
		n = append(n, Note{"mode", "router and cell members in their own processes (plaintext), this process the load generator; the router memory figure from a router in this process"})
	}
	n = append(n,
		Note{"placements", fmt.Sprintf("%d bulk-loaded in %.1f s (%.0f/s, etcd fsync off)", r.Tenants, r.Bulk.ElapsedSec, r.Bulk.OpsPerSec)},
		Note{"router table", fmt.Sprintf("%d tenants loaded in %.2f s (pages of %d), live heap +%s = %.0f B per tenant",
			r.TableTenants, r.RouterLoadSec, r.PageSize, mib(r.RouterHeapBytes), r.BytesPerTenant)},
	)
	elections := fmt.Sprint(r.CellElections)
	if r.CellLeaderMoved {
		elections += " (the first leader lost leadership)"
	}
	n = append(n,
		Note{"cell elections after the first leader", elections},
		Note{"etcd start / cell start", fmt.Sprintf("%.2f s / %.2f s", r.EtcdStartSec, r.CellStartSec)},
		Note{"each step", fmt.Sprintf("%.1f s after %.2f s warm-up, %d workers, %d B entries, %d rounds", r.StepSec, r.WarmupSec, r.Concurrency, r.EntrySize, r.Rounds)},
		Note{"total", fmt.Sprintf("%.1f s", r.TotalSec)},
	)
	n = append(n, loadAvgNote(r.LoadAvgEnd)...)
	return n
}

// RunRouter runs `cellplane bench router`: a single-member embedded etcd
// holding opts.Tenants placements plus one 3-node cell (its Cell, node and
// leader records and the tenant "bench" placed on it, written directly);
// a router started on that etcd (its live heap growth until its table
// holds every tenant is the memory figure); then opts.Rounds rounds of
// 1 KiB Appends and linearizable Reads of the tail at opts.Concurrency,
// through each path in turn: direct to the cell's leader, via the router,
// and via the smart client (package client).
func RunRouter(ctx context.Context, opts RouterOptions) (*Report, error) {
	opts = opts.withDefaults()
	began := time.Now()
	root, cleanup, err := runDir(opts.DataDir)
	if err != nil {
		return nil, err
	}
	defer cleanup()
	machine := DescribeMachine(root)
	p := progress{opts.Progress}
	res := &RouterResults{
		Concurrency: opts.Concurrency,
		EntrySize:   opts.EntrySize,
		Rounds:      opts.Rounds,
		StepSec:     opts.Duration.Seconds(),
		WarmupSec:   warmupFor(opts.Duration).Seconds(),
		Tenants:     opts.Tenants,
		PageSize:    opts.PageSize,
	}
	p.printf("bench router: %d tenants, %d workers, %s per step, %d rounds, data dir %s",
		opts.Tenants, opts.Concurrency, opts.Duration, opts.Rounds, root)

	if opts.Processes {
		if err := runRouterProcesses(ctx, opts, root, res, p); err != nil {
			return nil, err
		}
		res.TotalSec = time.Since(began).Seconds()
		res.LoadAvgEnd = loadAvg()
		return &Report{Scenario: "router", Machine: machine, Results: res, Ratios: routerRatios(res), Targets: RouterTargets}, nil
	}
	res.Mode = "in-process"

	// etcd (without fsync: no etcd write is measured here) and the cell.
	pc, err := startPublishedCell(ctx, root, opts.Logger, p)
	if err != nil {
		return nil, err
	}
	defer pc.close(p)
	st, cell := pc.st, pc.cell
	res.EtcdStartSec, res.CellStartSec = pc.etcdStartSec, pc.cellStartSec
	termStart := cell.Term()
	popts := PlacementOptions{
		Tenants:         opts.Tenants,
		LoadConcurrency: opts.LoadConcurrency,
		LoadBatch:       etcdtopo.DefaultMaxTxnOps,
		Logger:          opts.Logger,
	}

	p.printf("loading %d placements into etcd", opts.Tenants)
	res.Bulk, _, err = loadPlacements(ctx, st, popts, p)
	if err != nil {
		return nil, err
	}
	p.result(res.Bulk)

	rt, err := startBenchRouter(ctx, st, opts, res, p)
	if err != nil {
		return nil, err
	}
	defer rt.close()

	if err := runRouterSteps(ctx, opts, cell.Conn(cell.leader), rt, res, p, nil); err != nil {
		return nil, err
	}
	res.CellElections = cell.Term() - termStart
	res.CellLeaderMoved = cell.CurrentLeader() != cell.leader

	rt.close()
	pc.close(p)
	res.TotalSec = time.Since(began).Seconds()
	res.LoadAvgEnd = loadAvg()
	return &Report{
		Scenario: "router",
		Machine:  machine,
		Results:  res,
		Ratios:   routerRatios(res),
		Targets:  RouterTargets,
	}, nil
}

// routerRatios computes the ratios from the medians. The latency and
// throughput ratios are computed per op (res.OpRatios) and the report
// keeps the worse op's: the larger latency ratio, the smaller throughput
// ratio. A ratio whose inputs are missing or zero is left out.
func routerRatios(res *RouterResults) map[string]float64 {
	ratios := map[string]float64{}
	res.OpRatios = map[string]float64{}
	get := func(path, op string) (PathSummary, bool) {
		for _, s := range res.Summary {
			if s.Path == path && s.Op == op {
				return s, true
			}
		}
		return PathSummary{}, false
	}
	worse := func(k string, v float64, atLeast bool) {
		old, ok := ratios[k]
		if !ok || (atLeast && v < old) || (!atLeast && v > old) {
			ratios[k] = v
		}
	}
	for _, op := range routerOps {
		d, ok := get(pathDirect, op)
		if !ok {
			continue
		}
		for _, r := range []struct {
			key     string
			path    string
			num     func(PathSummary) float64
			atLeast bool
		}{
			{RatioRouterP50VsDirect, pathRouter, func(s PathSummary) float64 { return s.P50 }, false},
			{RatioRouterP99VsDirect, pathRouter, func(s PathSummary) float64 { return s.P99 }, false},
			{RatioRouterQPSVsDirect, pathRouter, func(s PathSummary) float64 { return s.OpsPerSec }, true},
			{RatioClientP50VsDirect, pathClient, func(s PathSummary) float64 { return s.P50 }, false},
		} {
			s, ok := get(r.path, op)
			if !ok || r.num(s) <= 0 || r.num(d) <= 0 {
				continue
			}
			v := round3(r.num(s) / r.num(d))
			res.OpRatios[op+"/"+r.key] = v
			worse(r.key, v, r.atLeast)
		}
	}
	if res.BytesPerTenant > 0 {
		ratios[RatioRouterBytesPerTenant] = round3(res.BytesPerTenant)
	}
	return ratios
}
