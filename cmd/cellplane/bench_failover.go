package main

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/spf13/cobra"

	"github.com/cellplane/cellplane/cells/registry"
	"github.com/cellplane/cellplane/cmd/cellplane/internal/bench"
)

// newBenchFailoverCmds are the scenarios of replication, moves and failover.
func newBenchFailoverCmds(std streams) []*cobra.Command {
	return []*cobra.Command{newBenchReplicationCmd(std), newBenchMoveCmd(std), newBenchFailoverCmd(std)}
}

func newBenchFailoverCmd(std streams) *cobra.Command {
	opts := bench.DefaultFailoverOptions()
	var (
		asJSON   bool
		logLevel = "error"
	)
	cmd := &cobra.Command{
		Use:   "failover",
		Short: "Benchmark failover: in-cell leader kills and region promotions, seen through the router",
		Long: `Start a single-member embedded etcd (fsync on), a control plane, a 3-node
cell (real disk, loopback TCP; every node with its own etcd connection) and
a router (auth off), then measure:

  a. in-cell leader failover: tenant "bench" on the cell, --rate appends/s
     of --entry-size bytes through the router (open loop). First the write
     latency with no kill for --baseline (the baseline); then the cell's
     leader is killed --kills times: its etcd connection is cut (its
     registry and authority keys expire with their leases, as after
     kill -9) and the node is closed without a hand-over; per kill, the
     time from the kill to the first acknowledgement of a write sent after
     it. The killed node is restarted and caught up, and writes run for
     --settle, before the next kill. With --soak, closed-loop writes at
     --soak-concurrency then run that long and the leader changes are
     counted (must be 0: the guard on the Raft timeouts).
  b. region promotion (--promotions times, 0 skips it): a standby cell in
     a second region; a new tenant on the first cell with its standby
     there, writes through the router; every node of the owner cell is
     killed (a lost region) and the standby promoted: by
     ControlPlaneService.Failover(PROMOTE) right after the kill, or with
     --auto-promote by the control plane's automatic policy. The time from
     the kill to the first acknowledged write at the new owner; the owner
     cell is restarted and the RPO the control plane reports (lost events)
     is recorded.

Ratios (targets in the table): leader_failover_p50_ms, leader_failover_p99_ms,
region_promotion_p99_ms, soak_leader_changes (with --soak), and
leader_failover_p99_vs_write_p99. The promotion waits for the old owner's
authority lease (--authority-ttl, default 3 s) plus the control plane's
margin (1 s). The default run takes about two minutes. Component logs go
to stderr at --log-level.`,
		Example: `  cellplane bench failover
  cellplane bench failover --json > failover.json
  cellplane bench failover --kills 20 --promotions 0 --soak 10m
  cellplane bench failover --authority-ttl 2s --auto-promote 2s`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			check := func() error {
				return firstBroken(
					flagRule{"--kills", opts.Kills >= 0, "≥ 0"}, flagRule{"--promotions", opts.Promotions >= 0, "≥ 0"},
					flagRule{"--kills", opts.Kills+opts.Promotions > 0, "≥ 1 when --promotions is 0"},
					flagRule{"--rate", opts.Rate > 0, "> 0"}, atLeastOne("--entry-size", opts.EntrySize),
					flagRule{"--baseline", opts.Baseline > 0, "> 0"}, flagRule{"--settle", opts.Settle >= 0, "≥ 0"},
					flagRule{"--soak", opts.Soak >= 0, "≥ 0"}, atLeastOne("--soak-concurrency", opts.SoakConcurrency),
					flagRule{"--auto-promote", opts.AutoPromote >= 0, "≥ 0"},
					flagRule{"--authority-ttl", opts.AuthorityTTL >= 0 && opts.AuthorityTTL%1e9 == 0, "whole seconds ≥ 0 (0: the default)"},
					flagRule{"--heartbeat-timeout", opts.HeartbeatTimeout >= 0, "≥ 0"},
					flagRule{"--election-timeout", opts.ElectionTimeout >= 0, "≥ 0"},
					flagRule{"--leader-lease-timeout", opts.LeaderLeaseTimeout >= 0, "≥ 0"},
					flagRule{"--leader-check-interval", opts.LeaderCheckInterval >= 0, "≥ 0"},
					flagRule{"--election-stagger", opts.ElectionStagger >= 0, "≥ 0"},
				)
			}
			return runScenario(cmd, std, "failover", logLevel, asJSON, check, func(ctx context.Context, log *slog.Logger) (*bench.Report, error) {
				opts.Logger, opts.Progress = log, std.Err
				return bench.RunFailover(ctx, opts)
			})
		},
	}
	f := cmd.Flags()
	f.BoolVar(&asJSON, "json", false, "print only the JSON document on stdout")
	f.IntVar(&opts.Kills, "kills", opts.Kills, "in-cell leader kills")
	f.Float64Var(&opts.Rate, "rate", opts.Rate, "steady appends per second through the router (open loop)")
	f.IntVar(&opts.EntrySize, "entry-size", opts.EntrySize, "bytes of text per appended entry")
	f.DurationVar(&opts.Baseline, "baseline", opts.Baseline, "length of the steady-write window without kills")
	f.DurationVar(&opts.Settle, "settle", opts.Settle, "steady writes on the whole cell before each kill")
	f.DurationVar(&opts.Soak, "soak", 0, "closed-loop writes for this long after the kills, counting leader changes (0: off)")
	f.IntVar(&opts.SoakConcurrency, "soak-concurrency", opts.SoakConcurrency, "writers of the soak (closed loop)")
	f.IntVar(&opts.Promotions, "promotions", opts.Promotions, "region promotions (0: skip part b)")
	f.DurationVar(&opts.AutoPromote, "auto-promote", 0, "let the control plane's policy promote after the cell is unhealthy this long (0: call Failover right after the kill)")
	f.DurationVar(&opts.AuthorityTTL, "authority-ttl", 0, fmt.Sprintf("the cells' authority lease TTL, whole seconds (0: the default, %v)", registry.DefaultAuthorityTTL))
	f.DurationVar(&opts.HeartbeatTimeout, "heartbeat-timeout", 0, "the cells' Raft heartbeat timeout (0: the store's default)")
	f.DurationVar(&opts.ElectionTimeout, "election-timeout", 0, "the cells' Raft election timeout (0: the store's default)")
	f.DurationVar(&opts.LeaderLeaseTimeout, "leader-lease-timeout", 0, "the cells' Raft leader lease timeout (0: the store's default)")
	f.DurationVar(&opts.LeaderCheckInterval, "leader-check-interval", opts.LeaderCheckInterval, "the cells' Raft leader check: how often a follower checks its leader's silence (0: off, Raft's own timer only)")
	f.DurationVar(&opts.ElectionStagger, "election-stagger", opts.ElectionStagger, "the cells' Raft election stagger between followers of the leader check")
	f.StringVar(&opts.DataDir, "data-dir", opts.DataDir, "directory for etcd's and the cells' data (default: a new temporary directory, removed afterwards)")
	f.StringVar(&logLevel, "log-level", logLevel, "level of component logs on stderr: trace, debug, info, warn or error")
	return cmd
}

func newBenchReplicationCmd(std streams) *cobra.Command {
	opts := bench.DefaultReplicationOptions()
	var (
		asJSON   bool
		logLevel = "error"
	)
	cmd := &cobra.Command{
		Use:   "replication",
		Short: "Benchmark cross-region replication lag with an injected one-way delay",
		Long: `Start a single-member embedded etcd (fsync on), a control plane and two
cells of --members nodes in two regions (real disk, loopback TCP), and
create tenant "repl" on the first with its standby on the second. The
standby's connections to the owner cell read through a delay line: bytes
from the owner arrive --delay late (the other direction is not delayed).
Then measure:

  - write saturation: closed-loop appends of --entry-size bytes at
    --saturation-concurrency to the owner's leader for --saturation-duration
    (the standby follows meanwhile);
  - at --load of that rate (open loop), for --duration after --settle: the
    lag of every event written, from its proposal on the owner to its apply
    on the standby (one machine, one clock), first with no delay (the
    baseline), then with --delay.

Ratios (targets in the table): lag_p99_minus_delay_ms (the lag p99 with the
delay, minus the delay) and lag_p99_ms_no_delay. The default cells have one
node each: two 3-node cells, etcd, the control plane and the load generator
in one process do not fit a 2-core machine (the standby's applies queue
behind the CPU; --members 3 measures that). The default run takes under a
minute. Component logs go to stderr at --log-level.`,
		Example: `  cellplane bench replication
  cellplane bench replication --json > replication.json
  cellplane bench replication --delay 100ms --members 1 --duration 5s`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			check := func() error {
				return firstBroken(
					flagRule{"--delay", opts.Delay >= 0, "≥ 0"}, atLeastOne("--members", opts.Members),
					atLeastOne("--saturation-concurrency", opts.SaturationConcurrency),
					flagRule{"--saturation-duration", opts.SaturationDuration > 0, "> 0"},
					flagRule{"--load", opts.Load > 0 && opts.Load <= 1, "in (0, 1]"}, flagRule{"--rate", opts.Rate >= 0, "≥ 0"},
					flagRule{"--duration", opts.Duration > 0, "> 0"}, flagRule{"--settle", opts.Settle >= 0, "≥ 0"},
					atLeastOne("--entry-size", opts.EntrySize), atLeastOne("--concurrency", opts.Concurrency),
				)
			}
			return runScenario(cmd, std, "replication", logLevel, asJSON, check, func(ctx context.Context, log *slog.Logger) (*bench.Report, error) {
				opts.Logger, opts.Progress = log, std.Err
				return bench.RunReplication(ctx, opts)
			})
		},
	}
	f := cmd.Flags()
	f.BoolVar(&asJSON, "json", false, "print only the JSON document on stdout")
	f.DurationVar(&opts.Delay, "delay", opts.Delay, "one-way delay on the standby's connections to the owner cell")
	f.IntVar(&opts.Members, "members", opts.Members, "nodes per cell")
	f.IntVar(&opts.SaturationConcurrency, "saturation-concurrency", opts.SaturationConcurrency, "writers of the saturation step (closed loop)")
	f.DurationVar(&opts.SaturationDuration, "saturation-duration", opts.SaturationDuration, "length of the saturation step")
	f.Float64Var(&opts.Load, "load", opts.Load, "fraction of the saturation rate the lag steps write at")
	f.Float64Var(&opts.Rate, "rate", opts.Rate, "writes/s of the lag steps instead of --load of the saturation (compare runs on a busy machine at the same rate)")
	f.DurationVar(&opts.Duration, "duration", opts.Duration, "measured length of each lag step")
	f.DurationVar(&opts.Settle, "settle", opts.Settle, "unmeasured writes before each lag step (after the delay changes)")
	f.IntVar(&opts.EntrySize, "entry-size", opts.EntrySize, "bytes per appended entry")
	f.IntVar(&opts.Concurrency, "concurrency", opts.Concurrency, "writes in flight at most in the lag steps (open loop)")
	f.StringVar(&opts.DataDir, "data-dir", opts.DataDir, "directory for etcd's and the cells' data (default: a new temporary directory, removed afterwards)")
	f.StringVar(&logLevel, "log-level", logLevel, "level of component logs on stderr: trace, debug, info, warn or error")
	return cmd
}

func newBenchMoveCmd(std streams) *cobra.Command {
	opts := bench.DefaultMoveOptions()
	var (
		asJSON   bool
		logLevel = "error"
	)
	cmd := &cobra.Command{
		Use:   "move",
		Short: "Benchmark live tenant moves: the write pause clients see through the router",
		Long: `Start a single-member embedded etcd (fsync on), a control plane (moves'
cleanup grace --cleanup-grace), two cells of --members nodes in one region
(real disk, loopback TCP) and a router (auth off). Then, for a tenant filled
to --size bytes (entries of up to 256 KiB):

  - --rate appends/s of --entry-size bytes through the router (open loop);
    first --baseline with no move (the baseline), then --moves moves,
    alternating between the two cells, each started with
    ControlPlaneService.StartMove and followed with GetMove until it ends
    (DONE once the cleanup grace passed). Per move: the write pause (the
    longest gap between two acknowledged writes of the tenant from
    StartMove to the end), the move record's fence→flip time, and the
    writes that failed (the target is none: the router holds the tenant's
    writes during the cutover);
  - the same for a second tenant of --big-size bytes and --big-moves moves
    (0 skips it).

With --other-rate, another tenant of the first cell that never moves takes
that many appends/s meanwhile.

Ratios (targets in the table): move_pause_p99_ms (--size tenant),
move_pause_p99_ms_64mb (--big-size tenant), move_failed_requests (both),
move_fence_to_flip_p99_ms and move_pause_p99_vs_write_p99. The default run
(20 moves of 1 MiB, and the 5 moves of 64 MiB that fit in the budget)
takes about a minute and a half on a quiet 2-core machine, up to three
minutes on a busy one. Component logs go to stderr at --log-level.`,
		Example: `  cellplane bench move
  cellplane bench move --json > move.json
  cellplane bench move --moves 40 --big-moves 0 --other-rate 100`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			check := func() error {
				return firstBroken(
					flagRule{"--moves", opts.Moves >= 0, "≥ 0"}, flagRule{"--big-moves", opts.BigMoves >= 0, "≥ 0"},
					flagRule{"--moves", opts.Moves+opts.BigMoves > 0, "≥ 1 when --big-moves is 0"},
					flagRule{"--size", opts.Size > 0, "> 0"}, flagRule{"--big-size", opts.BigSize > 0, "> 0"},
					flagRule{"--rate", opts.Rate > 0, "> 0"}, flagRule{"--other-rate", opts.OtherRate >= 0, "≥ 0"},
					atLeastOne("--entry-size", opts.EntrySize), flagRule{"--baseline", opts.Baseline > 0, "> 0"},
					flagRule{"--cleanup-grace", opts.CleanupGrace >= 0, "≥ 0"}, atLeastOne("--members", opts.Members),
				)
			}
			return runScenario(cmd, std, "move", logLevel, asJSON, check, func(ctx context.Context, log *slog.Logger) (*bench.Report, error) {
				opts.Logger, opts.Progress = log, std.Err
				return bench.RunMove(ctx, opts)
			})
		},
	}
	f := cmd.Flags()
	f.BoolVar(&asJSON, "json", false, "print only the JSON document on stdout")
	f.IntVar(&opts.Moves, "moves", opts.Moves, "moves of the --size tenant")
	f.Int64Var(&opts.Size, "size", opts.Size, "bytes the first tenant is filled with")
	f.IntVar(&opts.BigMoves, "big-moves", opts.BigMoves, "moves of the --big-size tenant (0: skip it)")
	f.Int64Var(&opts.BigSize, "big-size", opts.BigSize, "bytes the second tenant is filled with")
	f.Float64Var(&opts.Rate, "rate", opts.Rate, "appends per second to the moving tenant through the router (open loop)")
	f.Float64Var(&opts.OtherRate, "other-rate", 0, "appends per second to a tenant that does not move (0: none)")
	f.IntVar(&opts.EntrySize, "entry-size", opts.EntrySize, "bytes of text per steadily appended entry")
	f.DurationVar(&opts.Baseline, "baseline", opts.Baseline, "length of the steady-write window with no move")
	f.DurationVar(&opts.CleanupGrace, "cleanup-grace", opts.CleanupGrace, "the controller's grace before a moved tenant's old copy is removed (a move is DONE after it)")
	f.IntVar(&opts.Members, "members", opts.Members, "nodes per cell")
	f.StringVar(&opts.DataDir, "data-dir", opts.DataDir, "directory for etcd's and the cells' data (default: a new temporary directory, removed afterwards)")
	f.StringVar(&logLevel, "log-level", logLevel, "level of component logs on stderr: trace, debug, info, warn or error")
	return cmd
}
