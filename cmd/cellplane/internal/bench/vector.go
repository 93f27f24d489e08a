package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"net"
	"os"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/cellplane/cellplane/cells/store"
	"github.com/cellplane/cellplane/internal/retry"
	cellv1 "github.com/cellplane/cellplane/proto/cellplane/cell/v1"
	contextv1 "github.com/cellplane/cellplane/proto/cellplane/context/v1"
)

// VectorOptions configures RunVector (`cellplane bench vector`).
type VectorOptions struct {
	// Vectors memory items with random unit embeddings of Dims
	// dimensions are written to one tenant; Queries random unit vectors
	// are then searched for their K nearest, exactly and with the HNSW
	// index, in the same run.
	Vectors, Dims, Queries, K int
	// Clusters > 0 draws vectors (and queries) around that many random
	// centres (noise of norm about 0.6), closer to real embeddings than
	// uniform random unit vectors (0), the hard case for a graph index.
	Clusters int
	// DataDir: as CellOptions.DataDir.
	DataDir  string
	Logger   *slog.Logger
	Progress io.Writer
}

// DefaultVectorOptions: 10,000 vectors of dimension 384 (under two
// minutes); the figure is --vectors 100000.
func DefaultVectorOptions() VectorOptions {
	return VectorOptions{Vectors: 10000, Dims: 384, Queries: 200, K: 10}
}

// VectorResults are RunVector's figures.
type VectorResults struct {
	Vectors  int `json:"vectors"`
	Dims     int `json:"dims"`
	Queries  int `json:"queries"`
	K        int `json:"k"`
	Clusters int `json:"clusters"`
	// LoadSeconds: writing the vectors (memory puts through Raft).
	LoadSeconds float64 `json:"load_seconds"`
	// BuildSeconds and IndexBytes: the HNSW index's build from the stored
	// vectors and its estimated memory.
	BuildSeconds float64 `json:"build_seconds"`
	IndexBytes   int64   `json:"index_bytes"`
	// Search latencies (the store's search inside one read view, without
	// the RPC), exact scan vs index.
	ExactP50Ms float64 `json:"exact_p50_ms"`
	ExactP99Ms float64 `json:"exact_p99_ms"`
	HNSWP50Ms  float64 `json:"hnsw_p50_ms"`
	HNSWP99Ms  float64 `json:"hnsw_p99_ms"`
	// RecallAt10 of the index against the exact results.
	Recall float64 `json:"recall_at_k"`
	// CrossoverVectors: the namespace size at which an exact scan costs
	// what an index search does (exact cost grows linearly with the
	// vectors; the index's barely), from this run's medians.
	CrossoverVectors int `json:"crossover_vectors"`
}

// RunVector runs the vector search scenario on a one-node store in this
// process (the search engine is what is measured: one member's).
func RunVector(ctx context.Context, o VectorOptions) (*Report, error) {
	if o.Vectors < o.K || o.Dims < 1 || o.Queries < 1 || o.K < 1 {
		return nil, errors.New("bench: vector: --vectors must be at least --k, and --dims, --queries, --k at least 1")
	}
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	progress := func(format string, args ...any) {
		if o.Progress != nil {
			fmt.Fprintf(o.Progress, format+"\n", args...)
		}
	}
	dir := o.DataDir
	if dir == "" {
		d, err := os.MkdirTemp("", "cellplane-bench-vector-*")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(d)
		dir = d
	} else {
		d, err := os.MkdirTemp(dir, "vector-*")
		if err != nil {
			return nil, err
		}
		dir = d
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	cfg := store.DefaultConfig()
	cfg.NodeID, cfg.RaftListener, cfg.DataDir, cfg.Logger = "n1", ln, dir, log
	cfg.Bootstrap = []store.Peer{{ID: "n1", Addr: ln.Addr().String()}}
	cfg.Vector.ExactMax = 0 // every search of the run may use the index; the exact baseline is asked for explicitly
	st, err := store.Open(cfg)
	if err != nil {
		return nil, err
	}
	defer st.Close()
	if err := poll(ctx, func() error {
		if !st.IsLeader() {
			return errors.New("no leader yet")
		}
		_, err := st.Propose(ctx, &cellv1.Command{Tenant: "bench", Op: &cellv1.Command_SetTenant{SetTenant: &cellv1.SetTenantOp{Role: cellv1.Role_ROLE_OWNER, Epoch: 1}}})
		return err
	}); err != nil {
		return nil, fmt.Errorf("bench: vector: store not ready: %w", err)
	}

	r := rand.New(rand.NewPCG(1, uint64(o.Dims)))
	centres := make([][]float32, o.Clusters)
	for i := range centres {
		centres[i] = unitVector(r, o.Dims)
	}
	draw := func() []float32 {
		v := unitVector(r, o.Dims)
		if len(centres) == 0 {
			return v
		}
		c := centres[r.IntN(len(centres))]
		for i := range v {
			v[i] = c[i] + 0.6*v[i]
		}
		return v
	}
	vecs := make([][]float32, o.Vectors)
	for i := range vecs {
		vecs[i] = draw()
	}
	progress("vector: writing %d vectors of dimension %d", o.Vectors, o.Dims)
	start := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, 32)
	next := make(chan int)
	for range 32 {
		wg.Go(func() {
			for i := range next {
				_, err := st.Propose(ctx, &cellv1.Command{Tenant: "bench", Op: &cellv1.Command_PutMemory{PutMemory: &contextv1.PutMemoryRequest{
					Key: "k" + strconv.Itoa(i), Value: []byte("v"), Embedding: vecs[i], Scope: contextv1.MemoryScope_MEMORY_SCOPE_TENANT}}})
				if err != nil {
					select {
					case errs <- err:
					default:
					}
				}
			}
		})
	}
	for i := range vecs {
		next <- i
	}
	close(next)
	wg.Wait()
	select {
	case err := <-errs:
		return nil, fmt.Errorf("bench: vector: load: %w", err)
	default:
	}
	res := VectorResults{Vectors: o.Vectors, Dims: o.Dims, Queries: o.Queries, K: o.K, Clusters: o.Clusters, LoadSeconds: time.Since(start).Seconds()}

	search := func(q []float32, exact bool) ([]store.VectorHit, store.VectorSearchStats, time.Duration, error) {
		var hits []store.VectorHit
		var stats store.VectorSearchStats
		var took time.Duration
		err := st.ReadTenant(ctx, "bench", 0, store.ReadOptions{Consistency: contextv1.Consistency_CONSISTENCY_STALE}, func(v *store.TenantView) error {
			if exact {
				v = v.ExactVectors()
			}
			t0 := time.Now()
			var err error
			hits, stats, err = v.SearchMemoryVectors("", "", q, o.K, func(store.VectorHit) (bool, error) { return true, nil })
			took = time.Since(t0)
			return err
		})
		return hits, stats, took, err
	}
	progress("vector: building the index")
	start = time.Now()
	q0 := draw()
	if _, _, _, err := search(q0, false); err != nil { // starts the build
		return nil, err
	}
	if err := retry.Poll(ctx, 100*time.Millisecond, func() error {
		if st.VectorIndexStats().Loaded == 0 {
			return errors.New("the index is not built yet")
		}
		return nil
	}); err != nil {
		return nil, fmt.Errorf("bench: vector: build: %w", err)
	}
	res.BuildSeconds = time.Since(start).Seconds()
	res.IndexBytes = st.VectorIndexStats().Bytes

	progress("vector: %d queries, exact and HNSW", o.Queries)
	var exactT, hnswT []time.Duration
	var found, total int
	for range o.Queries {
		q := draw()
		want, _, te, err := search(q, true)
		if err != nil {
			return nil, err
		}
		got, _, ta, err := search(q, false)
		if err != nil {
			return nil, err
		}
		exactT, hnswT = append(exactT, te), append(hnswT, ta)
		for _, h := range got {
			if slices.ContainsFunc(want, func(w store.VectorHit) bool { return w.Key == h.Key }) {
				found++
			}
		}
		total += len(want)
	}
	res.ExactP50Ms, res.ExactP99Ms = quantileMs(exactT, 0.5), quantileMs(exactT, 0.99)
	res.HNSWP50Ms, res.HNSWP99Ms = quantileMs(hnswT, 0.5), quantileMs(hnswT, 0.99)
	res.Recall = float64(found) / float64(max(total, 1))
	if res.ExactP50Ms > 0 {
		res.CrossoverVectors = int(float64(o.Vectors) * res.HNSWP50Ms / res.ExactP50Ms)
	}
	return &Report{
		Scenario: "vector",
		Machine:  DescribeMachine(dir),
		Results:  res,
		Ratios: map[string]float64{
			"exact_p50_vs_hnsw_p50": res.ExactP50Ms / res.HNSWP50Ms,
			"recall_at_k":           res.Recall,
		},
		Targets: map[string]Target{"recall_at_k": {AtLeast: true, Value: 0.9}},
	}, nil
}

func unitVector(r *rand.Rand, dims int) []float32 {
	v := make([]float32, dims)
	var n float64
	for i := range v {
		v[i] = float32(r.NormFloat64())
		n += float64(v[i]) * float64(v[i])
	}
	for i := range v {
		v[i] = float32(float64(v[i]) / math.Sqrt(n))
	}
	return v
}

func quantileMs(ds []time.Duration, q float64) float64 {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := min(len(s)-1, int(math.Ceil(q*float64(len(s))))-1)
	return float64(s[max(i, 0)].Microseconds()) / 1000
}
