package main

import (
	"context"
	"log/slog"

	"github.com/spf13/cobra"

	"github.com/cellplane/cellplane/cmd/cellplane/internal/bench"
)

func newBenchSearchCmd(std streams) *cobra.Command {
	opts := bench.DefaultSearchOptions()
	var (
		asJSON   bool
		logLevel = "error"
	)
	cmd := &cobra.Command{
		Use:   "search",
		Short: "Benchmark keyword search: append CPU with the index on vs off, search latency, rebuild time",
		Long: `Open two single-node cell stores in this process on the filesystem of
--data-dir, one with the keyword index on and one with it off (the
replicated cell setting), each owning tenant "bench" with 64 contexts.
Then:

  - append cost: --appends single-entry appends (--entry-words words of
    generated text, Zipf-distributed over --vocabulary words) at
    --concurrency in flight, on each store, alternating the order over
    --rounds rounds; the process CPU per append of each mode;
  - search: the indexed store is filled to --entries entries (batches of
    100), then --queries keyword searches (half two words, half one; 10
    hits; BM25) are timed one at a time;
  - rebuild: the index is turned on for the other store and its text
    indexed by reindex_keywords batches; the time per GiB of text.

Ratios: search_append_cpu_on_vs_off (target ≤ 1.25), search_p50_ms,
search_p99_ms (two-word queries), search_rebuild_s_per_gib. The default
run takes about a minute; --entries 1000000 is the issue's size (about
half an hour on two cores). Component logs go to stderr at --log-level.`,
		Example: `  cellplane bench search
  cellplane bench search --json > search.json
  cellplane bench search --entries 1000000 --json > search-1m.json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			check := func() error {
				return firstBroken(atLeastOne("--appends", opts.Appends), atLeastOne("--rounds", opts.Rounds),
					atLeastOne("--concurrency", opts.Concurrency), atLeastOne("--entries", opts.Entries),
					atLeastOne("--queries", opts.Queries), atLeastOne("--entry-words", opts.EntryWords),
					flagRule{"--vocabulary", opts.Vocabulary > 1, "at least 2"})
			}
			return runScenario(cmd, std, "search", logLevel, asJSON, check, func(ctx context.Context, log *slog.Logger) (*bench.Report, error) {
				opts.Logger, opts.Progress = log, std.Err
				return bench.RunSearch(ctx, opts)
			})
		},
	}
	f := cmd.Flags()
	f.BoolVar(&asJSON, "json", false, "print only the JSON document on stdout")
	f.IntVar(&opts.Appends, "appends", opts.Appends, "single-entry appends per mode and round")
	f.IntVar(&opts.Rounds, "rounds", opts.Rounds, "rounds of on and off (the order alternates)")
	f.IntVar(&opts.Concurrency, "concurrency", opts.Concurrency, "appends in flight")
	f.IntVar(&opts.Entries, "entries", opts.Entries, "entries in the searched tenant")
	f.IntVar(&opts.Queries, "queries", opts.Queries, "keyword searches timed")
	f.IntVar(&opts.EntryWords, "entry-words", opts.EntryWords, "words per entry")
	f.IntVar(&opts.Vocabulary, "vocabulary", opts.Vocabulary, "distinct words of the generated text")
	f.StringVar(&opts.DataDir, "data-dir", opts.DataDir, "directory for the stores' data (default: a new temporary directory, removed afterwards)")
	f.StringVar(&logLevel, "log-level", logLevel, "level of component logs on stderr: trace, debug, info, warn or error")
	return cmd
}
