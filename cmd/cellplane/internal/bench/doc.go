// Package bench holds the machinery of `cellplane bench <scenario>` and
// the scenarios themselves (docs/design.md §12). A scenario runs the system under
// test together with its baselines, on one filesystem, and reports ratios
// between them: absolute figures on a shared 2-core box are noise, ratios
// measured in the same run are not.
//
// The cell scenario runs, by default, one process per member
// (docs/benchmarks.md, "Methodology"): 3 × `cellplane cell`, 3 ×
// `cellplane bench etcd-member` and 3 × `cellplane bench raft-member` (the
// bare-Raft floor: the cell's hashicorp/raft, raft-wal and transport with
// a no-op state machine, RunRaftMember), all with mutual TLS from a CA
// made for the run, the bench process being the only client. It fills
// the tenant past its change-log bound, then alternates the systems over
// rounds; each ratio is the median of the per-round ratios over the
// rounds whose machine load besides the benchmark (/proc/stat minus every
// benchmark process's CPU) stayed under a limit. Each step also reports
// the members' CPU per op (/proc/<pid>/stat), fsyncs per write and
// commands per Raft entry (from the members' /metrics). Its in-process
// mode (CellOptions.Processes false) keeps every member in the bench
// process: quick, for tests and profiles. The router and mcp scenarios
// likewise run the cell's nodes and the router (and the MCP worker) as
// processes of the same binary by default, reporting the router's, the
// worker's and the cell members' CPU per call; their in-process modes
// (RouterOptions.Processes, MCPOptions.Processes false) are what tests run.
//
// The reusable parts:
//
//   - Run drives one step of load: Concurrency workers calling an Op for a
//     duration or an op count, closed loop (best throughput) or open loop
//     at a fixed Rate (latency at a given load, charged from each op's
//     scheduled start so that queueing is not hidden). It returns a Result:
//     ops/s, a latency summary and errors counted by gRPC code.
//   - Histogram is a lock-free log-linear latency histogram (≈0.4% error,
//     exact min/max) shared by all workers of a step.
//   - DescribeMachine, ReadMemory/ResetPeakRSS and PeakSampler describe
//     the machine and the process's memory during a phase.
//   - FsyncLoop and StartEtcd/EtcdPuts are the baselines; RunEtcdMember
//     and RunRaftMember are the per-process members (hidden subcommands).
//   - Load.Window is called when a step's measured window opens and
//     closes: per-process scenarios read their members' counters there.
//   - Report renders any scenario as a table (WriteTable: one row per step
//     when the results implement StepLister, ratios next to their targets)
//     or as the JSON document {"scenario", "machine", "results", "ratios"}
//     that every scenario emits (WriteJSON).
//
// Scenarios: RunCell, RunPlacement, RunRouter, RunMCP, and for
// replication, moves and failover RunReplication (standby lag with an
// injected one-way delay), RunMove (client-visible write pause of moves
// under load) and RunFailover (in-cell leader kills and region
// promotions, seen through the router); RunMTLS (the router and direct
// cell paths on two platforms, mutual TLS on and off, alternating).
//
// A new scenario is a function like RunCell: it builds its system, calls
// Run once per step, and returns a Report whose Results implement
// StepLister.
//
// Usage:
//
//	rep, err := bench.RunCell(ctx, bench.CellOptions{Duration: 2 * time.Second, Progress: os.Stderr})
//	if err != nil {
//		return err
//	}
//	return rep.WriteTable(os.Stdout)
//
// Or, for one step of any workload:
//
//	res, err := bench.Run(ctx, bench.Load{Name: "get", Concurrency: 16, Duration: 3 * time.Second},
//		func(ctx context.Context, worker int) error {
//			_, err := client.Get(ctx, req)
//			return err
//		})
package bench
