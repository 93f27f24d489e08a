package main

import (
	"fmt"
	"log/slog"
	"strings"

	"github.com/spf13/cobra"

	"github.com/cellplane/cellplane/internal/bench"
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
  cell   a 3-node cell on real disk vs an fsync loop and a 3-member etcd`,
		Example: `  cellplane bench cell
  cellplane bench cell --json --duration 2s > cell.json`,
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
	cmd.AddCommand(newBenchCellCmd(std))
	return cmd
}

func newBenchCellCmd(std streams) *cobra.Command {
	opts := bench.DefaultCellOptions()
	var (
		asJSON   bool
		logLevel = "error"
	)
	cmd := &cobra.Command{
		Use:   "cell",
		Short: "Benchmark a 3-node cell: writes and reads vs an fsync loop and etcd",
		Long: `Benchmark the cell store on this machine, on the filesystem of --data-dir:

  - a single-thread fsync loop (the disk's floor: ops/s, p50);
  - a 3-node cell (real disk, loopback TCP) appending entries at each
    concurrency level (writes/s, p50, p99);
  - linearizable and stale reads (reads/s, p50, p99);
  - a 3-member embedded etcd (fsync on) doing Puts of the same size at the
    same concurrency levels;
  - the process's peak RSS.

Ratios (targets in the table): writes_vs_fsync (cell writes/s at 64 ÷ fsync
ops/s), writes_vs_etcd (cell ÷ etcd at 64), write_p50_vs_fsync_p50 (at
concurrency 1) and the linearizable read p99 at half of the peak read rate.

--duration is the length of EACH measured step; the default run takes under
two minutes. Component logs go to stderr at --log-level.`,
		Example: `  cellplane bench cell
  cellplane bench cell --json > cell.json
  cellplane bench cell --duration 1s --data-dir /mnt/nvme/tmp`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			level, err := logging.ParseLevel(logLevel)
			if err != nil {
				return usageError{err}
			}
			opts.Logger = slog.New(logging.NewHandler(std.Err, logging.FormatText, level, false))
			opts.Progress = std.Err
			if opts.Duration <= 0 {
				return usageErrorf("--duration must be > 0")
			}
			rep, err := bench.RunCell(cmd.Context(), opts)
			if err != nil {
				return fmt.Errorf("bench cell: %w", err)
			}
			if asJSON {
				return rep.WriteJSON(std.Out)
			}
			return rep.WriteTable(std.Out)
		},
	}
	f := cmd.Flags()
	f.BoolVar(&asJSON, "json", false, "print only the JSON document on stdout")
	f.DurationVar(&opts.Duration, "duration", opts.Duration, "length of each measured step")
	f.StringVar(&opts.DataDir, "data-dir", opts.DataDir, "directory on the filesystem to measure (default: a new temporary directory, removed afterwards)")
	f.IntSliceVar(&opts.Concurrency, "concurrency", opts.Concurrency, "write concurrency levels")
	f.IntVar(&opts.EntrySize, "entry-size", opts.EntrySize, "bytes per appended entry and etcd value")
	f.StringVar(&logLevel, "log-level", logLevel, "level of component logs on stderr: trace, debug, info, warn or error")
	return cmd
}
