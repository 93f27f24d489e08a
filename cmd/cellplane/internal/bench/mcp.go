package bench

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"time"

	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/cellplane/cellplane/controlplane/catalog"
	"github.com/cellplane/cellplane/controlplane/topo"
	"github.com/cellplane/cellplane/internal/tenantmd"
	contextv1 "github.com/cellplane/cellplane/proto/cellplane/context/v1"
	cpv1 "github.com/cellplane/cellplane/proto/cellplane/controlplane/v1"
	"github.com/cellplane/cellplane/router/routing"
)

// Ratio names of the mcp scenario (the targets).
const (
	// RatioMCPRouterP50VsDirect is the context_read p50 via the router ÷
	// direct to the worker (append's is in the results' op ratios).
	RatioMCPRouterP50VsDirect = "mcp_router_p50_vs_direct"
	// RatioMCPRPSPerCore is direct context_read calls per second of worker
	// CPU: calls/s ÷ worker cores busy during the step.
	RatioMCPRPSPerCore = "mcp_rps_per_core"
)

// MCPTargets are the goals for the mcp scenario.
var MCPTargets = map[string]Target{
	RatioMCPRouterP50VsDirect: {AtLeast: false, Value: 1.5},
	RatioMCPRPSPerCore:        {AtLeast: true, Value: 1600},
}

// The tools the mcp scenario calls.
const (
	toolAppend = "context_append"
	toolRead   = "context_read"
)

var mcpTools = []string{toolAppend, toolRead}

// MCPOptions configures RunMCP (`cellplane bench mcp`).
type MCPOptions struct {
	// Concurrency is the number of MCP client sessions of every step (one
	// go-sdk session per load worker, closed loop).
	Concurrency int
	// Duration is the measured length of EACH step (one path, one tool,
	// one round); an unmeasured warm-up precedes each step.
	Duration time.Duration
	// Rounds is how many times the steps of both paths are repeated,
	// interleaved (the medians over rounds are reported).
	Rounds int
	// EntrySize is the bytes of text per entry (pre-filled and appended).
	EntrySize int
	// Prefill is the number of entries in each session's context before
	// the steps; reads ask for the last Tail of them.
	Prefill, Tail int
	// DataDir is where the cell and etcd keep their files: a new
	// directory inside it (os.TempDir() when empty), removed at the end.
	DataDir string
	// WorkerBinary is the cellplane binary whose `worker` command is the
	// worker under test (empty: os.Executable()).
	WorkerBinary string
	// InProcessWorker runs the worker in this process instead (tests, or
	// where /proc is missing): its CPU is then the whole process's.
	InProcessWorker bool
	// Processes runs the cell (3 × `cellplane cell --insecure`) and the
	// router (`cellplane router --insecure --auth none`) as processes of
	// WorkerBinary (empty: this executable) too, the worker always as a
	// process: this process is then only the load generator (and etcd),
	// and the router's CPU per call is reported. False runs the cell and
	// the router in this process.
	Processes bool
	// Logger receives the components' logs (nil: discarded).
	Logger *slog.Logger
	// Progress receives one human line per step (nil: silent).
	Progress io.Writer
}

// DefaultMCPOptions returns the options of a default run: 16 sessions, 3
// rounds of 3 s steps, 200 B entries, 20 pre-filled, reads of the last 10
// (the whole run stays under 2 minutes).
func DefaultMCPOptions() MCPOptions {
	return MCPOptions{Concurrency: 16, Duration: 3 * time.Second, Rounds: 3, EntrySize: 200, Prefill: 20, Tail: 10, Processes: true}
}

func (o MCPOptions) withDefaults() MCPOptions {
	d := DefaultMCPOptions()
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
	if o.Prefill <= 0 {
		o.Prefill = d.Prefill
	}
	if o.Tail <= 0 {
		o.Tail = d.Tail
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o
}

// MCPResults are the figures of `cellplane bench mcp`.
type MCPResults struct {
	Concurrency int     `json:"concurrency"`
	EntrySize   int     `json:"entry_size"`
	Prefill     int     `json:"prefill"`
	Tail        int     `json:"tail"`
	Rounds      int     `json:"rounds"`
	StepSec     float64 `json:"step_s"`
	WarmupSec   float64 `json:"warmup_s"`
	// WorkerCPUSource says how the worker's CPU was measured.
	WorkerCPUSource string `json:"worker_cpu_source"`
	// Mode is "processes" or "in-process"; Members the processes.
	Mode    string   `json:"mode"`
	Members []string `json:"members,omitempty"`

	// Runs are every measured step in run order ("router context_read #2").
	Runs []MCPStep `json:"steps"`
	// Summary holds, per path and tool, the medians over the rounds.
	Summary []MCPSummary `json:"summary"`
	// OpRatios are the ratios per tool ("context_append/mcp_router_p50_vs_direct").
	OpRatios map[string]float64 `json:"op_ratios"`

	CellElections uint64    `json:"cell_elections"`
	EtcdStartSec  float64   `json:"etcd_start_s"`
	CellStartSec  float64   `json:"cell_start_s"`
	TotalSec      float64   `json:"total_s"`
	LoadAvgEnd    []float64 `json:"load_avg_end,omitempty"`
}

// MCPStep is one measured step with the worker's CPU over it.
type MCPStep struct {
	Result
	Path string `json:"path"`
	Tool string `json:"tool"`
	// WorkerCPUSec is the worker's CPU time over the step; WorkerCores
	// that per second of the step; WorkerCPUPerCallUs per successful call.
	WorkerCPUSec       float64 `json:"worker_cpu_s"`
	WorkerCores        float64 `json:"worker_cores"`
	WorkerCPUPerCallUs float64 `json:"worker_cpu_per_call_us"`
	// RouterCores and RouterCPUPerCallUs are the router process's CPU
	// over the step (per-process mode).
	RouterCores        float64 `json:"router_cores,omitempty"`
	RouterCPUPerCallUs float64 `json:"router_cpu_per_call_us,omitempty"`
}

// MCPSummary is one path's figures for one tool: medians over the rounds.
type MCPSummary struct {
	Path               string  `json:"path"`
	Tool               string  `json:"tool"`
	P50                float64 `json:"p50_ms"`
	P99                float64 `json:"p99_ms"`
	CallsPerSec        float64 `json:"calls_per_sec"`
	WorkerCores        float64 `json:"worker_cores"`
	WorkerCPUPerCallUs float64 `json:"worker_cpu_per_call_us"`
	// CallsPerWorkerCPUSec is calls ÷ worker CPU seconds (= calls/s per
	// worker core).
	CallsPerWorkerCPUSec float64 `json:"calls_per_worker_cpu_s"`
	Errors               uint64  `json:"errors"`
	// RouterCPUPerCallUs is the median router process CPU per call
	// (per-process mode, via the router).
	RouterCPUPerCallUs float64 `json:"router_cpu_per_call_us,omitempty"`
}

// Steps lists every step in run order, for the table.
func (r *MCPResults) Steps() []Result {
	out := make([]Result, len(r.Runs))
	for i, s := range r.Runs {
		out[i] = s.Result
	}
	return out
}

// Notes lists the medians and the set-up.
func (r *MCPResults) Notes() []Note {
	var n []Note
	for _, s := range r.Summary {
		v := fmt.Sprintf("p50 %.3f ms, p99 %.3f ms, %.0f calls/s; worker %.2f cores, %.0f µs CPU per call (%.0f calls per CPU-s); %d errors",
			s.P50, s.P99, s.CallsPerSec, s.WorkerCores, s.WorkerCPUPerCallUs, s.CallsPerWorkerCPUSec, s.Errors)
		if s.RouterCPUPerCallUs > 0 {
			v += fmt.Sprintf("; router %.0f µs CPU per call", s.RouterCPUPerCallUs)
		}
		n = append(n, Note{fmt.Sprintf("median %s %s", s.Path, s.Tool), v})
	}
	n = append(n,
		Note{"worker CPU", r.WorkerCPUSource},
		Note{"cell elections during the run", fmt.Sprint(r.CellElections)},
		Note{"etcd start / cell start", fmt.Sprintf("%.2f s / %.2f s", r.EtcdStartSec, r.CellStartSec)},
		Note{"each step", fmt.Sprintf("%.1f s after %.2f s warm-up, %d sessions, %d B entries, reads of the last %d of ≥%d, %d rounds",
			r.StepSec, r.WarmupSec, r.Concurrency, r.EntrySize, r.Tail, r.Prefill, r.Rounds)},
		Note{"total", fmt.Sprintf("%.1f s", r.TotalSec)},
	)
	n = append(n, loadAvgNote(r.LoadAvgEnd)...)
	return n
}

// RunMCP runs `cellplane bench mcp`: the router scenario's set-up (a
// single-member etcd, a 3-node cell and its records, tenant "bench"
// placed on it, a router with auth off) plus one MCP worker (by default
// a separate `cellplane worker` process, so that its CPU is its own);
// then opts.Rounds rounds of tools/call context_append and context_read
// at opts.Concurrency sessions, direct to the worker and via the
// router's MCP proxy. The cell's Node records are published without an
// HTTP address, so the router's only MCP endpoint for the cell is that
// worker: both paths measure the same worker.
func RunMCP(ctx context.Context, opts MCPOptions) (*Report, error) {
	opts = opts.withDefaults()
	began := time.Now()
	root, cleanup, err := runDir(opts.DataDir)
	if err != nil {
		return nil, err
	}
	defer cleanup()
	machine := DescribeMachine(root)
	p := progress{opts.Progress}
	res := &MCPResults{
		Concurrency: opts.Concurrency,
		EntrySize:   opts.EntrySize,
		Prefill:     opts.Prefill,
		Tail:        opts.Tail,
		Rounds:      opts.Rounds,
		StepSec:     opts.Duration.Seconds(),
		WarmupSec:   warmupFor(opts.Duration).Seconds(),
	}
	p.printf("bench mcp: %d sessions, %s per step, %d rounds, data dir %s", opts.Concurrency, opts.Duration, opts.Rounds, root)
	if opts.Processes {
		if err := runMCPProcesses(ctx, opts, root, res, p); err != nil {
			return nil, err
		}
		res.TotalSec = time.Since(began).Seconds()
		res.LoadAvgEnd = loadAvg()
		return &Report{Scenario: "mcp", Machine: machine, Results: res, Ratios: mcpRatios(res), Targets: MCPTargets}, nil
	}
	res.Mode = "in-process"

	pc, err := startPublishedCell(ctx, root, opts.Logger, p)
	if err != nil {
		return nil, err
	}
	defer pc.close(p)
	res.EtcdStartSec, res.CellStartSec = pc.etcdStartSec, pc.cellStartSec
	cell, st := pc.cell, pc.st
	termStart := cell.Term()
	if err := hideMemberHTTP(ctx, st, cell); err != nil {
		return nil, err
	}

	p.printf("starting the MCP worker")
	w, err := startMCPWorker(ctx, st, pc.etcd.Endpoints(), routerBenchCell, opts, p)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err := w.stop(); err != nil {
			p.printf("warning: stopping the worker: %v", err)
		}
	}()
	res.WorkerCPUSource = w.cpuSource
	p.printf("  worker ready at %s (CPU: %s)", w.addr, w.cpuSource)

	rt, err := startBenchRouter(ctx, st, RouterOptions{PageSize: 1000, Logger: opts.Logger}, &RouterResults{}, p)
	if err != nil {
		return nil, err
	}
	defer rt.close()
	if err := waitOnlyWorker(ctx, rt, w.addr); err != nil {
		return nil, err
	}

	// Pre-fill one context per session over gRPC (faster than MCP).
	tctx := metadata.AppendToOutgoingContext(ctx, tenantmd.TenantKey, benchTenant)
	ids := make([]string, opts.Concurrency)
	for i := range ids {
		ids[i] = fmt.Sprintf("mcp-bench-%03d", i)
	}
	if err := prefillContexts(tctx, contextv1.NewContextServiceClient(cell.Conn(cell.leader)), ids, opts.Prefill, opts.EntrySize); err != nil {
		return nil, err
	}

	endpoints := map[string]string{
		pathDirect: "http://" + w.addr + "/t/" + benchTenant + "/mcp",
		pathRouter: "http://" + rt.srv.HTTPAddr() + "/t/" + benchTenant + "/mcp",
	}
	if err := runMCPSteps(ctx, opts, endpoints, ids, w, nil, res, p); err != nil {
		return nil, err
	}
	res.CellElections = cell.Term() - termStart

	if err := w.stop(); err != nil {
		p.printf("warning: stopping the worker: %v", err)
	}
	rt.close()
	pc.close(p)
	res.TotalSec = time.Since(began).Seconds()
	res.LoadAvgEnd = loadAvg()
	return &Report{
		Scenario: "mcp",
		Machine:  machine,
		Results:  res,
		Ratios:   mcpRatios(res),
		Targets:  MCPTargets,
	}, nil
}

// hideMemberHTTP rewrites the cell's Node records (published by
// publishCell) without their HTTP address. Every node serves an MCP
// worker on its HTTP port, and the router's MCP proxy picks among the
// members' HTTP addresses and the registered workers; without the
// members' addresses, the worker under test is the only choice, and the
// via-router path measures the same worker as the direct one.
func hideMemberHTTP(ctx context.Context, st topo.Store, cell *Cell) error {
	now := timestamppb.Now()
	var ops []topo.Op
	for _, n := range cell.nodes {
		id := n.Store().Status().NodeID
		ops = append(ops, topo.Put(topo.CellNodeKey(routerBenchCell, id), catalog.Encode(&cpv1.Node{
			Id: id, Cell: routerBenchCell, Role: cpv1.NodeRole_NODE_ROLE_MEMBER,
			RaftAddr: n.RaftAddr(), GrpcAddr: n.GRPCAddr(), StartTime: now,
		})))
	}
	if _, err := st.Txn(ctx, nil, ops); err != nil {
		return fmt.Errorf("bench: rewrite the node records: %w", err)
	}
	return nil
}

// waitOnlyWorker waits until the router's table lists addr as the only
// MCP endpoint of the bench cell.
func waitOnlyWorker(ctx context.Context, rt *benchRouter, addr string) error {
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	err := poll(wctx, func() error {
		c, ok := rt.srv.Table().Cell(routerBenchCell)
		if !ok {
			return fmt.Errorf("router table has no cell %s", routerBenchCell)
		}
		var https []string
		for _, n := range append(append([]routing.Node(nil), c.Members...), c.Workers...) {
			if n.HTTPAddr != "" {
				https = append(https, n.HTTPAddr)
			}
		}
		if len(https) != 1 || https[0] != addr {
			return fmt.Errorf("router's MCP endpoints for %s are %v, want only %s", routerBenchCell, https, addr)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("bench: router: %w", err)
	}
	return nil
}

// mcpRatios computes the ratios from the medians: the router's p50 over
// direct for context_read (the key) and for both tools (OpRatios, with
// the calls/s ratio), and direct context_read calls per worker CPU
// second. A ratio whose inputs are missing or zero is left out.
func mcpRatios(res *MCPResults) map[string]float64 {
	ratios := map[string]float64{}
	res.OpRatios = map[string]float64{}
	get := func(path, tool string) (MCPSummary, bool) {
		for _, s := range res.Summary {
			if s.Path == path && s.Tool == tool {
				return s, true
			}
		}
		return MCPSummary{}, false
	}
	for _, tool := range mcpTools {
		d, ok1 := get(pathDirect, tool)
		r, ok2 := get(pathRouter, tool)
		if !ok1 || !ok2 {
			continue
		}
		if d.P50 > 0 && r.P50 > 0 {
			res.OpRatios[tool+"/"+RatioMCPRouterP50VsDirect] = round3(r.P50 / d.P50)
		}
		if d.P99 > 0 && r.P99 > 0 {
			res.OpRatios[tool+"/mcp_router_p99_vs_direct"] = round3(r.P99 / d.P99)
		}
		if d.CallsPerSec > 0 && r.CallsPerSec > 0 {
			res.OpRatios[tool+"/mcp_router_rps_vs_direct"] = round3(r.CallsPerSec / d.CallsPerSec)
		}
		if d.CallsPerWorkerCPUSec > 0 {
			res.OpRatios[tool+"/"+RatioMCPRPSPerCore] = round3(d.CallsPerWorkerCPUSec)
		}
	}
	for _, k := range []string{RatioMCPRouterP50VsDirect, RatioMCPRPSPerCore} {
		if v, ok := res.OpRatios[toolRead+"/"+k]; ok {
			ratios[k] = v
		}
	}
	return ratios
}
