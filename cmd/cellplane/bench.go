package main

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/cellplane/cellplane/cmd/cellplane/internal/bench"
	"github.com/cellplane/cellplane/internal/logging"
)

func newBenchCmd(std streams) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "bench SCENARIO",
		Short: "Measure a scenario against its baseline on this machine",
		Long: `Run a benchmark scenario together with its baseline, on this machine, in one
run, and print a table (or, with --json, only the JSON document on stdout:
{"scenario":…, "machine":…, "results":…, "ratios":{…}}). Progress goes to
stderr. Results are recorded in docs/benchmarks.md.

Scenarios:
  cell        a 3-node cell vs an fsync loop, a 3-member etcd and bare Raft,
              one process per member, mutual TLS, alternating rounds
  placement   a router's full load of 1M placements from etcd and the watch
              propagation of placement changes
  router      appends and reads direct to a cell leader vs via the router vs
              via the smart client; router memory with 1M placements
  mcp         MCP tools/call (context_append, context_read) direct to a
              worker process vs via the router; worker CPU per call
  replication the lag of a standby in another region, with an injected
              one-way delay and without, at half of write saturation
  move        the write pause clients see through the router during live
              tenant moves (1 MiB and 64 MiB tenants) vs the write latency
  failover    in-cell leader kills and region promotions: the time to the
              first acknowledged write through the router; the RPO
  mtls        the cost of mutual TLS: the router and direct cell paths with
              mutual TLS on vs off, at 64 in flight
  subscribe   change notifications from commit to subscriber: gRPC
              WatchChanges direct vs MCP subscriptions/listen via a worker
  cache       the router's read cache on a skewed (Zipf) STALE read
              workload: hit ratio, CPU per read and throughput, on vs off
  vector      vector search: exact scan vs the HNSW index (p50/p99,
              recall@k, index build time and memory)
  search      keyword search: append CPU with the index on vs off, search
              p50/p99 over one tenant's entries, index rebuild time per GiB`,
		Example: `  cellplane bench cell
  cellplane bench cell --json --duration 2s > cell.json
  cellplane bench placement --json > placement.json
  cellplane bench router --json > router.json
  cellplane bench mcp --json > mcp.json
  cellplane bench replication --json > replication.json
  cellplane bench move --json > move.json
  cellplane bench failover --json > failover.json
  cellplane bench mtls --json > mtls.json
  cellplane bench subscribe --json > subscribe.json
  cellplane bench cache --json > cache.json
  cellplane bench vector --json > vector.json
  cellplane bench search --json > search.json`,
		Args: cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return cmd.Help()
			}
			var names []string
			for _, c := range cmd.Commands() {
				if c.IsAvailableCommand() {
					names = append(names, c.Name())
				}
			}
			return usageErrorf("unknown scenario %q (available: %s)", args[0], strings.Join(names, ", "))
		},
	}
	cmd.AddCommand(append([]*cobra.Command{newBenchCellCmd(std), newBenchPlacementCmd(std), newBenchRouterCmd(std), newBenchMCPCmd(std), newBenchSubscribeCmd(std), newBenchMTLSCmd(std), newBenchCacheCmd(std), newBenchVectorCmd(std), newBenchSearchCmd(std)}, append(newBenchFailoverCmds(std), newBenchMemberCmds(std)...)...)...)
	return cmd
}

func newBenchCellCmd(std streams) *cobra.Command {
	opts := bench.DefaultCellOptions()
	var (
		asJSON    bool
		inProcess bool
		logLevel  = "error"
	)
	cmd := &cobra.Command{
		Use:   "cell",
		Short: "Benchmark a 3-node cell: writes and reads vs an fsync loop, etcd and bare Raft",
		Long: `Benchmark the cell store on this machine, on the filesystem of --data-dir.

Each system runs as one process per member, with mutual TLS (a CA made for
the run), and this process is the only client:

  - the cell: 3 × 'cellplane cell' (standalone, --certs-dir);
  - etcd: 3 × an embedded etcd member (fsync on, TLS on peer and client
    URLs), the same version the control plane embeds;
  - the bare-Raft floor: 3 members of the same hashicorp/raft, raft-wal,
    Raft settings and transport (mutual TLS) with a no-op state machine
    behind a gRPC Append: what the store costs on top of Raft.

The cell's tenant is first filled with --prefill appends (past its change
log's 100,000-event bound, and — with the members' --dedup-window shorter
than the prefill takes — past the dedup window: steady state, every write
also trims the log and forgets old request ids). Then --rounds rounds each run a
single-thread fsync loop and every system at every --concurrency level
(1-entry Appends, etcd Puts of the same size), --round-duration each after
--warmup, the systems' order rotating from round to round. Each step
reports ops/s, p50 and p99, the members' CPU per op (/proc/<pid>/stat),
fsyncs per write (etcd's WAL fsync count, the floor's raft-wal writes;
not measurable for the cell), commands per Raft entry, and the CPU the
machine spent besides the benchmark (foreign cores, steal included). A
round with a step above --max-foreign-cores is marked noisy and left out
of the medians. Finally linearizable and stale reads of the cell.

Ratios (medians of the per-round ratios; targets in the table):
writes_vs_etcd and writes_vs_raft_floor (writes/s at 64 in flight),
write_p50_vs_fsync_p50 (concurrency 1), writes_vs_fsync, and
lin_read_p99_ms_at_half_max. --in-process runs every member and the load
generator in this process instead (--duration per step, no rounds, no
bare Raft): quick, for tests and profiles. Component logs go to stderr at
--log-level.`,
		Example: `  cellplane bench cell
  cellplane bench cell --json > cell.json
  cellplane bench cell --rounds 5 --round-duration 5s --concurrency 1,16,64,256
  cellplane bench cell --in-process --duration 1s --data-dir /mnt/nvme/tmp`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			opts.Processes = !inProcess
			check := func() error {
				return firstBroken(flagRule{"--duration", opts.Duration > 0, "> 0"},
					atLeastOne("--rounds", opts.Rounds), flagRule{"--round-duration", opts.RoundDuration > 0, "> 0"},
					flagRule{"--warmup", opts.Warmup > 0, "> 0"}, flagRule{"--prefill", opts.Prefill >= 0, "≥ 0"}, flagRule{"--dedup-window", opts.DedupWindow >= 0, "≥ 0"},
					flagRule{"--max-foreign-cores", opts.MaxForeignCores >= 0, "≥ 0"})
			}
			return runScenario(cmd, std, "cell", logLevel, asJSON, check, func(ctx context.Context, log *slog.Logger) (*bench.Report, error) {
				opts.Logger, opts.Progress = log, std.Err
				opts.MemberLogLevel = logLevel
				return bench.RunCell(ctx, opts)
			})
		},
	}
	f := cmd.Flags()
	f.BoolVar(&asJSON, "json", false, "print only the JSON document on stdout")
	f.BoolVar(&inProcess, "in-process", false, "run every member and the load generator in this process (no rounds, no bare Raft)")
	f.IntVar(&opts.Rounds, "rounds", opts.Rounds, "rounds of every system (the ratios are medians of the per-round ratios)")
	f.DurationVar(&opts.RoundDuration, "round-duration", opts.RoundDuration, "length of each measured step of a round")
	f.DurationVar(&opts.Warmup, "warmup", opts.Warmup, "unmeasured load before each step of a round")
	f.IntVar(&opts.Prefill, "prefill", opts.Prefill, "appends written to the cell's tenant before the rounds (steady state)")
	f.DurationVar(&opts.DedupWindow, "dedup-window", opts.DedupWindow, "the cell members' dedup window, shorter than the prefill so that measured appends also forget old request ids (0: the cell's default)")
	f.Float64Var(&opts.MaxForeignCores, "max-foreign-cores", opts.MaxForeignCores, "CPU used besides the benchmark (cores) above which a round is noisy and left out (0: never)")
	f.DurationVar(&opts.Duration, "duration", opts.Duration, "length of each measured step with --in-process")
	f.StringVar(&opts.DataDir, "data-dir", opts.DataDir, "directory on the filesystem to measure (default: a new temporary directory, removed afterwards)")
	f.IntSliceVar(&opts.Concurrency, "concurrency", opts.Concurrency, "write concurrency levels")
	f.IntVar(&opts.EntrySize, "entry-size", opts.EntrySize, "bytes per appended entry and etcd value")
	f.StringVar(&logLevel, "log-level", logLevel, "level of component logs on stderr: trace, debug, info, warn or error")
	f.BoolVar(&opts.LeaseReads, "raft-lease-reads", false, "run the cell with lease-based linearizable reads (the members' --raft-lease-reads)")
	return cmd
}

func newBenchPlacementCmd(std streams) *cobra.Command {
	opts := bench.DefaultPlacementOptions()
	var (
		asJSON   bool
		logLevel = "error"
	)
	cmd := &cobra.Command{
		Use:   "placement",
		Short: "Benchmark a router's view of placements: full load from etcd and watch propagation",
		Long: `Load --tenants placements (Tenant records at tenants/<id>, ~70 bytes each,
10 cells in 2 regions) into a single-member embedded etcd (fsync on unless
--unsafe-no-fsync) through the topo store, in transactions of 128 Puts,
then measure what a router does with them:

  - a full load into an in-memory map (one etcd RangeStream, all at one
    revision, no per-page count; List pages of --page-size only against a
    store without the stream; each value decoded): seconds, tenants/s, and the
    live heap it adds per tenant (HeapAlloc after a GC, before vs after;
    etcd runs in this process, so its own heap growth is included).
    Repeated --loads times; the medians are reported;
  - the latency of --updates single-placement Puts, one every
    --update-interval, with no watcher (the baseline);
  - the same number of updates while the router watches tenants/ from its
    load's revision + 1: write ack latency and propagation (from the
    write's start to the event applied to the router's map).

Ratios (targets in the table): load_seconds_per_million (median full-load
seconds × 1e6 ÷ tenants), propagation_p99_ms, and
propagation_p50_vs_put_p50. The bulk load's throughput is reported too.
The default run takes under three minutes. Component logs go to stderr at
--log-level.`,
		Example: `  cellplane bench placement
  cellplane bench placement --json > placement.json
  cellplane bench placement --tenants 100000 --page-size 1000 --unsafe-no-fsync`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			check := func() error {
				return firstBroken(
					atLeastOne("--tenants", opts.Tenants), atLeastOne("--page-size", opts.PageSize),
					atLeastOne("--updates", opts.Updates), atLeastOne("--loads", opts.Loads),
					atLeastOne("--load-concurrency", opts.LoadConcurrency),
					flagRule{"--update-interval", opts.UpdateInterval >= 0, "≥ 0"})
			}
			return runScenario(cmd, std, "placement", logLevel, asJSON, check, func(ctx context.Context, log *slog.Logger) (*bench.Report, error) {
				opts.Logger, opts.Progress = log, std.Err
				return bench.RunPlacement(ctx, opts)
			})
		},
	}
	f := cmd.Flags()
	f.BoolVar(&asJSON, "json", false, "print only the JSON document on stdout")
	f.IntVar(&opts.Tenants, "tenants", opts.Tenants, "placements to load into etcd")
	f.IntVar(&opts.PageSize, "page-size", opts.PageSize, "keys per List page of the router's full load (only where the store has no RangeStream)")
	f.IntVar(&opts.Loads, "loads", opts.Loads, "full loads to run (the median is reported)")
	f.IntVar(&opts.Updates, "updates", opts.Updates, "single-placement updates to measure (and baseline Puts)")
	f.DurationVar(&opts.UpdateInterval, "update-interval", opts.UpdateInterval, "pause between the starts of two updates")
	f.IntVar(&opts.LoadConcurrency, "load-concurrency", opts.LoadConcurrency, "concurrent writers of the bulk load")
	f.BoolVar(&opts.UnsafeNoFsync, "unsafe-no-fsync", false, "run etcd without fsync (faster bulk load; not a production member)")
	f.StringVar(&opts.DataDir, "dir", opts.DataDir, "directory for etcd's data (default: a new temporary directory, removed afterwards)")
	f.StringVar(&logLevel, "log-level", logLevel, "level of component logs on stderr: trace, debug, info, warn or error")
	return cmd
}

func newBenchRouterCmd(std streams) *cobra.Command {
	opts := bench.DefaultRouterOptions()
	var (
		asJSON    bool
		inProcess bool
		logLevel  = "error"
	)
	cmd := &cobra.Command{
		Use:   "router",
		Short: "Benchmark the router: direct vs via the router vs the smart client, and its memory",
		Long: `Start a single-member embedded etcd (fsync off: no etcd write is measured)
and a 3-node cell (real disk, loopback TCP), write the cell's records and
the placement of tenant "bench" on it into etcd, bulk-load --tenants more
placements, then start a router on that etcd (auth off: the tenant comes
from x-cellplane-tenant) and measure:

  - router memory: the live heap growth (after a forced GC) from the
    router's start until its table holds every placement, per tenant;
  - 1 KiB text Appends (with request ids) and linearizable Reads of the
    tail, closed loop at --concurrency, each for --duration, by three
    paths: direct to the cell's leader (gRPC with x-cellplane-tenant), the
    same calls to the router, and the smart client (package client, which
    resolves the tenant through the router and calls the leader). The
    paths are interleaved over --rounds rounds (their order rotating) and
    the medians over the rounds are reported.

Ratios (targets in the table): router_p50_vs_direct, router_p99_vs_direct,
router_qps_vs_direct (ops/s at --concurrency), client_p50_vs_direct (each
the worse of appends and reads; per-op ratios are in the results) and
router_bytes_per_tenant. The default run takes under two minutes.
Component logs go to stderr at --log-level.

By default the cell's nodes (3 × 'cellplane cell --insecure') and the router
('cellplane router --insecure --auth none', the router's default page size)
run as processes of this binary, and this process is the load generator;
each step then reports the router process's and the cell members' CPU per
call (/proc/<pid>/stat). The memory figure comes from a router started in
this process first (then stopped). --in-process runs the cell and the
router in this process.`,
		Example: `  cellplane bench router
  cellplane bench router --json > router.json
  cellplane bench router --tenants 100000 --duration 1s --rounds 1`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			check := func() error {
				return firstBroken(append(loadRules(opts.Concurrency, opts.Duration, opts.Rounds, opts.EntrySize),
					atLeastOne("--tenants", opts.Tenants), atLeastOne("--page-size", opts.PageSize),
					atLeastOne("--load-concurrency", opts.LoadConcurrency))...)
			}
			opts.Processes = !inProcess
			return runScenario(cmd, std, "router", logLevel, asJSON, check, func(ctx context.Context, log *slog.Logger) (*bench.Report, error) {
				opts.Logger, opts.Progress = log, std.Err
				return bench.RunRouter(ctx, opts)
			})
		},
	}
	f := cmd.Flags()
	f.BoolVar(&asJSON, "json", false, "print only the JSON document on stdout")
	f.IntVar(&opts.Concurrency, "concurrency", opts.Concurrency, "workers of every step (closed loop)")
	f.BoolVar(&inProcess, "in-process", false, "run the cell and the router in this process (no per-process CPU figures)")
	f.DurationVar(&opts.Duration, "duration", opts.Duration, "length of each measured step (one path, one op, one round)")
	f.IntVar(&opts.Rounds, "rounds", opts.Rounds, "rounds of the three paths (the medians are reported)")
	f.IntVar(&opts.EntrySize, "entry-size", opts.EntrySize, "bytes of text per appended entry")
	f.IntVar(&opts.Tenants, "tenants", opts.Tenants, "placements loaded into etcd before the router starts")
	f.IntVar(&opts.PageSize, "page-size", opts.PageSize, "keys per List page of the router's full load (only where the store has no RangeStream)")
	f.IntVar(&opts.LoadConcurrency, "load-concurrency", opts.LoadConcurrency, "concurrent writers of the bulk load")
	f.StringVar(&opts.DataDir, "data-dir", opts.DataDir, "directory for the cell's and etcd's data (default: a new temporary directory, removed afterwards)")
	f.StringVar(&logLevel, "log-level", logLevel, "level of component logs on stderr: trace, debug, info, warn or error")
	return cmd
}

func newBenchMCPCmd(std streams) *cobra.Command {
	opts := bench.DefaultMCPOptions()
	var (
		asJSON    bool
		inProcess bool
		logLevel  = "error"
	)
	cmd := &cobra.Command{
		Use:   "mcp",
		Short: "Benchmark the MCP worker: tools/call direct vs via the router, and its CPU per call",
		Long: `Start a single-member embedded etcd (fsync off) and a 3-node cell (real
disk, loopback TCP), write the cell's records and the placement of tenant
"bench" into etcd, start one MCP worker as a separate process (this
binary's 'worker' command, --auth none) and a router (auth off: the tenant
comes from the /t/<tenant>/mcp path). The cell's Node records carry no
HTTP address, so the router's MCP proxy sends every call to that worker.
Then measure, closed loop with --concurrency go-sdk client sessions, each
step for --duration after a warm-up:

  - tools/call context_append (one --entry-size text entry, with a
    request_id) and context_read (the last --tail of --prefill entries),
    direct to the worker and via the router, interleaved over --rounds
    rounds (the medians are reported): p50, p99, calls/s;
  - the worker's CPU over each step (utime+stime from /proc/<pid>/stat):
    cores busy and CPU time per call.

Ratios (targets in the table): mcp_router_p50_vs_direct (context_read;
append's is in the results) and mcp_rps_per_core (direct context_read
calls per second of worker CPU). The default run takes under two minutes.
Component logs go to stderr at --log-level.

By default the cell's nodes (3 × 'cellplane cell --insecure') and the router
('cellplane router --insecure --auth none') run as processes too, so that
this process is only the load generator (and etcd); each step then also
reports the router process's CPU per call. --in-process runs the cell and
the router in this process (the worker stays a process unless
--in-process-worker, which runs it in the bench process too: its CPU
figures are then the whole process's, an upper bound).`,
		Example: `  cellplane bench mcp
  cellplane bench mcp --json > mcp.json
  cellplane bench mcp --concurrency 32 --duration 2s --rounds 2`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			check := func() error {
				return firstBroken(append(loadRules(opts.Concurrency, opts.Duration, opts.Rounds, opts.EntrySize),
					atLeastOne("--prefill", opts.Prefill), atLeastOne("--tail", opts.Tail))...)
			}
			opts.Processes = !inProcess && !opts.InProcessWorker
			return runScenario(cmd, std, "mcp", logLevel, asJSON, check, func(ctx context.Context, log *slog.Logger) (*bench.Report, error) {
				opts.Logger, opts.Progress = log, std.Err
				return bench.RunMCP(ctx, opts)
			})
		},
	}
	f := cmd.Flags()
	f.BoolVar(&asJSON, "json", false, "print only the JSON document on stdout")
	f.IntVar(&opts.Concurrency, "concurrency", opts.Concurrency, "MCP client sessions of every step (closed loop)")
	f.DurationVar(&opts.Duration, "duration", opts.Duration, "length of each measured step (one path, one tool, one round)")
	f.IntVar(&opts.Rounds, "rounds", opts.Rounds, "rounds of the two paths (the medians are reported)")
	f.IntVar(&opts.EntrySize, "entry-size", opts.EntrySize, "bytes of text per entry (pre-filled and appended)")
	f.IntVar(&opts.Prefill, "prefill", opts.Prefill, "entries in each session's context before the steps")
	f.IntVar(&opts.Tail, "tail", opts.Tail, "entries each context_read asks for (the last ones)")
	f.BoolVar(&inProcess, "in-process", false, "run the cell and the router in this process (the worker stays a process)")
	f.BoolVar(&opts.InProcessWorker, "in-process-worker", false, "run the worker in the bench process too (its CPU is then the whole process's; implies --in-process)")
	f.StringVar(&opts.DataDir, "data-dir", opts.DataDir, "directory for the cell's and etcd's data (default: a new temporary directory, removed afterwards)")
	f.StringVar(&logLevel, "log-level", logLevel, "level of component logs on stderr: trace, debug, info, warn or error")
	return cmd
}

// flagRule is one "--flag must be …" check of a scenario's options.
type flagRule struct {
	flag string
	ok   bool
	rule string
}

func atLeastOne(flag string, v int) flagRule { return flagRule{flag, v >= 1, "≥ 1"} }

// loadRules are the checks of the options every load-driving scenario has.
func loadRules(concurrency int, duration time.Duration, rounds, entrySize int) []flagRule {
	return []flagRule{
		atLeastOne("--concurrency", concurrency), {"--duration", duration > 0, "> 0"},
		atLeastOne("--rounds", rounds), atLeastOne("--entry-size", entrySize),
	}
}

// firstBroken is the usage error of the first rule that does not hold.
func firstBroken(rules ...flagRule) error {
	for _, r := range rules {
		if !r.ok {
			return usageErrorf("%s must be %s", r.flag, r.rule)
		}
	}
	return nil
}

// runScenario is the body of every scenario command: it parses the log
// level, checks the options (check returns usage errors), runs the
// scenario with component logs on stderr at that level, and prints the
// report as a table or, with --json, as the JSON document alone.
func runScenario(cmd *cobra.Command, std streams, name, logLevel string, asJSON bool, check func() error,
	run func(context.Context, *slog.Logger) (*bench.Report, error)) error {
	level, err := logging.ParseLevel(logLevel)
	if err != nil {
		return usageError{err}
	}
	if err := check(); err != nil {
		return err
	}
	rep, err := run(cmd.Context(), slog.New(logging.NewHandler(std.Err, logging.FormatText, level, false)))
	if err != nil {
		return fmt.Errorf("bench %s: %w", name, err)
	}
	if asJSON {
		return rep.WriteJSON(std.Out)
	}
	return rep.WriteTable(std.Out)
}

func newBenchSubscribeCmd(std streams) *cobra.Command {
	opts := bench.DefaultSubscribeOptions()
	var (
		asJSON   bool
		logLevel = "error"
	)
	cmd := &cobra.Command{
		Use:   "subscribe",
		Short: "Benchmark subscription event latency: MCP subscriptions/listen through a worker vs gRPC WatchChanges",
		Long: `Start a 3-node cell (real disk, loopback TCP) and an MCP worker (auth
off) in this process, open --listeners gRPC WatchChanges streams on the
cell's leader (the baseline) and --listeners MCP subscriptions/listen
streams through the worker, all following one context, then append one
--entry-size entry to it --rate times a second for --duration.

Each path's event latency runs from the append's command time (the
leader's clock when it proposed the append; the same process's clock as
the subscriber's) to the notification's arrival: p50, p99. Every
subscriber must receive every seq once, or the run fails. Ratios:
subscribe_mcp_p50_vs_grpc and subscribe_mcp_p99_vs_grpc.`,
		Example: `  cellplane bench subscribe
  cellplane bench subscribe --json > subscribe.json
  cellplane bench subscribe --rate 500 --duration 60s --listeners 16`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			check := func() error {
				return firstBroken(atLeastOne("--rate", opts.Rate), atLeastOne("--listeners", opts.Listeners), atLeastOne("--entry-size", opts.EntrySize),
					flagRule{"--duration", opts.Duration > 0, "> 0"})
			}
			return runScenario(cmd, std, "subscribe", logLevel, asJSON, check, func(ctx context.Context, log *slog.Logger) (*bench.Report, error) {
				opts.Logger, opts.Progress = log, std.Err
				return bench.RunSubscribe(ctx, opts)
			})
		},
	}
	f := cmd.Flags()
	f.BoolVar(&asJSON, "json", false, "print only the JSON document on stdout")
	f.DurationVar(&opts.Duration, "duration", opts.Duration, "how long to append")
	f.IntVar(&opts.Rate, "rate", opts.Rate, "appends per second (open loop)")
	f.IntVar(&opts.Listeners, "listeners", opts.Listeners, "subscribers of each path")
	f.IntVar(&opts.EntrySize, "entry-size", opts.EntrySize, "bytes of text per entry")
	f.StringVar(&opts.DataDir, "data-dir", opts.DataDir, "where the cell keeps its files (a new directory inside it; default the system temp dir)")
	f.StringVar(&logLevel, "log-level", logLevel, "level of component logs on stderr: trace, debug, info, warn or error")
	return cmd
}
