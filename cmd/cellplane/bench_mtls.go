package main

import (
	"context"
	"log/slog"

	"github.com/spf13/cobra"

	"github.com/cellplane/cellplane/cmd/cellplane/internal/bench"
)

func newBenchMTLSCmd(std streams) *cobra.Command {
	opts := bench.DefaultMTLSOptions()
	var (
		asJSON   bool
		logLevel = "error"
	)
	cmd := &cobra.Command{
		Use:   "mtls",
		Short: "Benchmark the cost of mutual TLS on the router and direct cell paths (on ÷ off)",
		Long: `Start two whole platforms in this process (each: the control plane with
etcd embedded, one cell of 3 nodes on real disk, a router; auth off), one
with mutual TLS on every internal hop (a dev CA, as 'cellplane dev' runs by default)
and one without, and the tenant "bench" on each. Then measure 1 KiB text
Appends (with request ids) and linearizable Reads of the tail, closed loop
at --concurrency, each for --duration after a warm-up, by two paths on each
platform:

  - router: gRPC to the router (plaintext on both: what differs is the
    router's hop to the cell, mutual TLS with the router's identity);
  - direct: gRPC to the cell's leader (mutual TLS presenting the router's
    certificate, as the router does; plaintext on the other platform).

Every path keeps one connection for all its calls (the router's backend
pool too), so the handshake is paid once, in the warm-up; the direct
path's handshakes are counted and reported. On and off run back to back
for each path, the order flipping from round to round, over --rounds
rounds.

Ratios (targets in the table): mtls_router_p50_on_vs_off,
mtls_router_qps_off_vs_on, mtls_direct_p50_on_vs_off,
mtls_direct_qps_off_vs_on, and the p99 ratios without a target: each the
median of the per-round ratios, the worse of appends and reads (per-op
ratios are in the results). The default run (24 steps) takes under two
minutes. Component logs go to stderr at --log-level.`,
		Example: `  cellplane bench mtls
  cellplane bench mtls --json > mtls.json
  cellplane bench mtls --duration 500ms --rounds 3`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			check := func() error {
				return firstBroken(loadRules(opts.Concurrency, opts.Duration, opts.Rounds, opts.EntrySize)...)
			}
			return runScenario(cmd, std, "mtls", logLevel, asJSON, check, func(ctx context.Context, log *slog.Logger) (*bench.Report, error) {
				opts.Logger, opts.Progress = log, std.Err
				return bench.RunMTLS(ctx, opts)
			})
		},
	}
	f := cmd.Flags()
	f.BoolVar(&asJSON, "json", false, "print only the JSON document on stdout")
	f.IntVar(&opts.Concurrency, "concurrency", opts.Concurrency, "calls in flight of every step (closed loop)")
	f.DurationVar(&opts.Duration, "duration", opts.Duration, "length of each measured step (one path, one mode, one op, one round)")
	f.IntVar(&opts.Rounds, "rounds", opts.Rounds, "rounds of on and off for each path (the ratios are the medians of the per-round ratios)")
	f.IntVar(&opts.EntrySize, "entry-size", opts.EntrySize, "bytes of text per appended entry")
	f.StringVar(&opts.DataDir, "data-dir", opts.DataDir, "directory for the two platforms' data (default: a new temporary directory, removed afterwards)")
	f.StringVar(&logLevel, "log-level", logLevel, "level of component logs on stderr: trace, debug, info, warn or error")
	return cmd
}
