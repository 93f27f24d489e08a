package main

import (
	"context"
	"log/slog"

	"github.com/spf13/cobra"

	"github.com/cellplane/cellplane/cmd/cellplane/internal/bench"
)

func newBenchVectorCmd(std streams) *cobra.Command {
	opts := bench.DefaultVectorOptions()
	var (
		asJSON   bool
		logLevel = "error"
	)
	cmd := &cobra.Command{
		Use:   "vector",
		Short: "Benchmark vector search: exact scan vs the HNSW index (latency, recall@k, build)",
		Long: `Start a one-node cell store in this process (real disk), write --vectors
memory items with random unit embeddings of --dims dimensions to one
tenant (memory puts through Raft, 32 in flight), build the tenant's HNSW
index, then search --queries random unit vectors for their --k nearest,
each exactly (a scan of the stored vectors: the baseline) and with the
index, in the same run. Latencies are the store's search inside one read
view (no RPC).

By default the vectors are uniform random unit vectors, the hard case for
a graph index (no cluster structure); --clusters N draws them around N
centres instead, closer to real embeddings.

Results: load and build time, index memory, exact and HNSW p50/p99,
recall@k, and the crossover size at which an exact scan costs what an
index search does (exact cost grows linearly with the vectors). Ratios:
exact_p50_vs_hnsw_p50 and recall_at_k (target ≥ 0.9). The default run
(10,000 vectors of dimension 384) takes about a minute; the issue's
figure is --vectors 100000.`,
		Example: `  cellplane bench vector
  cellplane bench vector --json > vector.json
  cellplane bench vector --vectors 100000 --dims 384 --json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			check := func() error {
				return firstBroken(atLeastOne("--vectors", opts.Vectors), atLeastOne("--dims", opts.Dims),
					atLeastOne("--queries", opts.Queries), atLeastOne("--k", opts.K))
			}
			return runScenario(cmd, std, "vector", logLevel, asJSON, check, func(ctx context.Context, log *slog.Logger) (*bench.Report, error) {
				opts.Logger, opts.Progress = log, std.Err
				return bench.RunVector(ctx, opts)
			})
		},
	}
	f := cmd.Flags()
	f.BoolVar(&asJSON, "json", false, "print only the JSON document on stdout")
	f.IntVar(&opts.Vectors, "vectors", opts.Vectors, "vectors written to the tenant")
	f.IntVar(&opts.Dims, "dims", opts.Dims, "dimension of every vector")
	f.IntVar(&opts.Queries, "queries", opts.Queries, "query vectors searched (each exactly and with the index)")
	f.IntVar(&opts.K, "k", opts.K, "nearest vectors asked for per query (recall@k)")
	f.IntVar(&opts.Clusters, "clusters", opts.Clusters, "draw vectors and queries around this many random centres (0: uniform random unit vectors, the hard case)")
	f.StringVar(&opts.DataDir, "data-dir", opts.DataDir, "directory for the store's data (default: a new temporary directory, removed afterwards)")
	f.StringVar(&logLevel, "log-level", logLevel, "level of component logs on stderr: trace, debug, info, warn or error")
	return cmd
}
