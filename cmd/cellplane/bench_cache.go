package main

import (
	"context"
	"log/slog"

	"github.com/spf13/cobra"

	"github.com/cellplane/cellplane/cmd/cellplane/internal/bench"
)

func newBenchCacheCmd(std streams) *cobra.Command {
	opts := bench.DefaultCacheOptions()
	var (
		asJSON   bool
		logLevel = "error"
	)
	cmd := &cobra.Command{
		Use:   "cache",
		Short: "Benchmark the router's read cache on a skewed read workload (on vs off)",
		Long: `Start a whole platform in this process (the control plane with etcd
embedded, one cell of 3 nodes, a router; auth and mutual TLS off) and a
second router with the read cache on (--cache-bytes), both in front of the
same cell. Prefill --contexts contexts of 10 entries and --keys memory
keys, then run STALE reads (half Read of the last 10 entries, half
GetMemory), closed loop at --concurrency, choosing contexts and keys with a
Zipf distribution (--zipf-s), through each router in turn for --duration
per step, over --rounds rounds (the order flips each round), while a writer
appends and puts at --write-rate so that the cache is invalidated as in use.

Ratios: cache_hit_ratio (answers the cache served ÷ reads, router "on"),
cache_cpu_per_read_off_vs_on (this process's CPU per read: routers, cell
and load generator together), cache_qps_on_vs_off and cache_p50_off_vs_on,
each the median over the rounds. The default run takes about a minute.`,
		Example: `  cellplane bench cache
  cellplane bench cache --json > cache.json
  cellplane bench cache --contexts 100000 --keys 100000 --duration 10s --rounds 5`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			check := func() error {
				return firstBroken(append(loadRules(opts.Concurrency, opts.Duration, opts.Rounds, 1),
					atLeastOne("--contexts", opts.Contexts), atLeastOne("--keys", opts.Keys),
					flagRule{"--zipf-s", opts.ZipfS > 1, "> 1"}, flagRule{"--cache-bytes", opts.CacheBytes > 0, "> 0"},
					flagRule{"--max-staleness", opts.MaxStaleness > 0, "> 0"}, flagRule{"--write-rate", opts.WriteRate >= 0, ">= 0"})...)
			}
			return runScenario(cmd, std, "cache", logLevel, asJSON, check, func(ctx context.Context, log *slog.Logger) (*bench.Report, error) {
				opts.Logger, opts.Progress = log, std.Err
				return bench.RunCache(ctx, opts)
			})
		},
	}
	f := cmd.Flags()
	f.BoolVar(&asJSON, "json", false, "print only the JSON document on stdout")
	f.IntVar(&opts.Concurrency, "concurrency", opts.Concurrency, "readers (closed loop)")
	f.DurationVar(&opts.Duration, "duration", opts.Duration, "length of each measured step (one mode, one round)")
	f.IntVar(&opts.Rounds, "rounds", opts.Rounds, "rounds of on and off (the ratios are the medians over the rounds)")
	f.IntVar(&opts.Contexts, "contexts", opts.Contexts, "contexts read (10 entries each)")
	f.IntVar(&opts.Keys, "keys", opts.Keys, "memory keys read")
	f.Float64Var(&opts.ZipfS, "zipf-s", opts.ZipfS, "skew of the Zipf choice of contexts and keys (> 1; higher: a hotter head)")
	f.Float64Var(&opts.WriteRate, "write-rate", opts.WriteRate, "appends and puts per second during the steps (0: none)")
	f.Int64Var(&opts.CacheBytes, "cache-bytes", opts.CacheBytes, "the read cache's byte budget on the \"on\" router")
	f.DurationVar(&opts.MaxStaleness, "max-staleness", opts.MaxStaleness, "max_staleness of the STALE reads")
	f.StringVar(&opts.DataDir, "data-dir", opts.DataDir, "directory for the platform's data (default: a new temporary directory, removed afterwards)")
	f.StringVar(&logLevel, "log-level", logLevel, "level of component logs on stderr: trace, debug, info, warn or error")
	return cmd
}
