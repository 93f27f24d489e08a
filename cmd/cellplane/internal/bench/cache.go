package bench

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/cellplane/cellplane/internal/auth"
	"github.com/cellplane/cellplane/internal/dial"
	"github.com/cellplane/cellplane/internal/retry"
	"github.com/cellplane/cellplane/internal/rpcerr"
	contextv1 "github.com/cellplane/cellplane/proto/cellplane/context/v1"
	"github.com/cellplane/cellplane/router"
	"github.com/cellplane/cellplane/router/forward"
)

// Ratio names of the cache scenario.
const (
	RatioCacheHit        = "cache_hit_ratio"
	RatioCacheCPUPerRead = "cache_cpu_per_read_off_vs_on"
	RatioCacheQPS        = "cache_qps_on_vs_off"
	RatioCacheP50        = "cache_p50_off_vs_on"
	cacheOn, cacheOff    = "on", "off"
	cacheRegion          = "bench"
	cacheCell            = "bench-a"
)

// CacheOptions configures RunCache (`cellplane bench cache`).
type CacheOptions struct {
	// Concurrency is the number of readers (closed loop).
	Concurrency int
	// Duration is the measured length of each step (one mode, one round).
	Duration time.Duration
	// Rounds of on and off (the order flips each round); the ratios are
	// the medians of the per-round ratios.
	Rounds int
	// Contexts and Keys are the number of contexts and memory keys read;
	// ZipfS (> 1) the skew of the choice (higher: hotter head).
	Contexts, Keys int
	ZipfS          float64
	// WriteRate is the rate of the background writer (appends and puts
	// to Zipf-chosen contexts and keys, ops/s) in every step, so that the
	// cache is invalidated as it would be in use.
	WriteRate float64
	// CacheBytes is the router's read cache budget in the "on" mode.
	CacheBytes int64
	// MaxStaleness is the STALE reads' bound.
	MaxStaleness time.Duration
	DataDir      string
	Logger       *slog.Logger
	Progress     io.Writer
}

// DefaultCacheOptions: 16 readers, 3 rounds of 4 s steps, 2000 contexts and
// 2000 keys chosen with Zipf s = 1.1, 50 writes/s, a 64 MiB cache, 5 s
// staleness (about a minute with the start-up).
func DefaultCacheOptions() CacheOptions {
	return CacheOptions{Concurrency: 16, Duration: 4 * time.Second, Rounds: 3, Contexts: 2000, Keys: 2000, ZipfS: 1.1,
		WriteRate: 50, CacheBytes: 64 << 20, MaxStaleness: 5 * time.Second}
}

// CacheResults are the figures of `cellplane bench cache`.
type CacheResults struct {
	Options struct {
		Concurrency  int     `json:"concurrency"`
		StepSec      float64 `json:"step_s"`
		Rounds       int     `json:"rounds"`
		Contexts     int     `json:"contexts"`
		Keys         int     `json:"keys"`
		ZipfS        float64 `json:"zipf_s"`
		WriteRate    float64 `json:"write_rate"`
		CacheBytes   int64   `json:"cache_bytes"`
		MaxStaleness float64 `json:"max_staleness_s"`
	} `json:"options"`
	Runs []Result `json:"steps"`
	// HitRatio per round of the "on" steps (answers carrying the
	// router's x-cellplane-read-cache: hit over all reads).
	HitRatios []float64 `json:"hit_ratios"`
	StartSec  float64   `json:"start_s"`
	TotalSec  float64   `json:"total_s"`
	LoadAvg   []float64 `json:"load_avg_end,omitempty"`
}

// Steps lists every step in run order.
func (r *CacheResults) Steps() []Result { return r.Runs }

// Notes lists the per-round hit ratios and the set-up.
func (r *CacheResults) Notes() []Note {
	n := []Note{
		{"hit ratio per round (on)", fmt.Sprint(r.HitRatios)},
		{"workload", fmt.Sprintf("%d readers, half Read (tail 10) half GetMemory, STALE (max %.0f s), Zipf s=%.2f over %d contexts and %d keys; %g writes/s meanwhile",
			r.Options.Concurrency, r.Options.MaxStaleness, r.Options.ZipfS, r.Options.Contexts, r.Options.Keys, r.Options.WriteRate)},
		{"start", fmt.Sprintf("%.1f s", r.StartSec)},
		{"total", fmt.Sprintf("%.1f s", r.TotalSec)},
	}
	return append(n, loadAvgNote(r.LoadAvg)...)
}

// RunCache runs `cellplane bench cache`: one platform in this process (a
// cell of 3 nodes, auth and mutual TLS off) with two routers on the same
// etcd and cell, one without and one with the read cache; a skewed (Zipf)
// STALE read workload (half context tail reads, half memory gets) is run
// through each in turn while a writer appends and puts at a fixed rate.
// It reports the hit ratio, and the CPU per read (this whole process:
// routers, cell and load generator) and throughput of on against off.
func RunCache(ctx context.Context, opts CacheOptions) (*Report, error) {
	d := DefaultCacheOptions()
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.ZipfS <= 1 {
		opts.ZipfS = d.ZipfS
	}
	began := time.Now()
	root, cleanup, err := runDir(opts.DataDir)
	if err != nil {
		return nil, err
	}
	defer cleanup()
	machine := DescribeMachine(root)
	p := progress{opts.Progress}
	res := &CacheResults{}
	o := &res.Options
	o.Concurrency, o.StepSec, o.Rounds, o.Contexts, o.Keys, o.ZipfS, o.WriteRate, o.CacheBytes, o.MaxStaleness =
		opts.Concurrency, opts.Duration.Seconds(), opts.Rounds, opts.Contexts, opts.Keys, opts.ZipfS, opts.WriteRate, opts.CacheBytes, opts.MaxStaleness.Seconds()

	p.printf("bench cache: starting a platform")
	pf, err := startPlatform(ctx, filepath.Join(root, "platform"), platformOptions{Logger: opts.Logger, Insecure: true}, p)
	if err != nil {
		return nil, err
	}
	defer pf.Close()
	if _, err := addCell(ctx, pf, cacheRegion, cacheCell, 3, nil); err != nil {
		return nil, err
	}
	if _, err := createTenant(ctx, pf, benchTenant, cacheRegion, cacheCell, ""); err != nil {
		return nil, err
	}
	if err := waitRouted(ctx, pf, benchTenant); err != nil {
		return nil, err
	}
	cached, conn, err := startCacheRouter(ctx, pf.EtcdEndpoints(), filepath.Join(root, "router-cache"), opts)
	if err != nil {
		return nil, err
	}
	defer func() { _ = conn.Close(); _ = cached.Close() }()
	clients := map[string]contextv1.ContextServiceClient{cacheOff: routerData(pf), cacheOn: contextv1.NewContextServiceClient(conn)}
	tctx := asTenant(ctx, benchTenant)

	p.printf("prefill: %d contexts, %d keys", opts.Contexts, opts.Keys)
	setup := clients[cacheOff]
	// Every prefill write carries a request id and is retried (an
	// election right after the cell formed must not fail the run).
	do := func(fn func(context.Context) error) error {
		err := retry.Do(ctx, retry.Policy{Min: 20 * time.Millisecond, Max: time.Second, MaxAttempts: 30}, retry.Idempotent, func(context.Context) error {
			return rpcerr.FromStatus(fn(tctx))
		})
		if err != nil {
			return fmt.Errorf("bench: prefill: %w", err)
		}
		return nil
	}
	for i := range opts.Contexts {
		id := fmt.Sprintf("c%d", i)
		var es []*contextv1.Entry
		for j := range 10 {
			es = append(es, &contextv1.Entry{Role: "user", Content: &contextv1.Entry_Text{Text: fmt.Sprintf("entry %d of %s: %0200d", j, id, j)}})
		}
		if err := do(func(ctx context.Context) error {
			_, err := setup.CreateContext(ctx, &contextv1.CreateContextRequest{ContextId: id, RequestId: "create-" + id})
			return err
		}); err != nil {
			return nil, err
		}
		if err := do(func(ctx context.Context) error {
			_, err := setup.Append(ctx, &contextv1.AppendRequest{ContextId: id, Entries: es, RequestId: "append-" + id})
			return err
		}); err != nil {
			return nil, err
		}
	}
	for i := range opts.Keys {
		if err := do(func(ctx context.Context) error {
			_, err := setup.PutMemory(ctx, &contextv1.PutMemoryRequest{Key: fmt.Sprintf("k%d", i), Value: fmt.Appendf(nil, "%0256d", i),
				Scope: contextv1.MemoryScope_MEMORY_SCOPE_TENANT, RequestId: fmt.Sprintf("put-%d", i)})
			return err
		}); err != nil {
			return nil, err
		}
	}
	res.StartSec = time.Since(began).Seconds()

	// The writer runs throughout.
	wctx, stopWriter := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		cacheWriter(wctx, setup, tctx, opts)
	}()
	defer func() { stopWriter(); wg.Wait() }()

	stale := &contextv1.ReadOptions{Consistency: contextv1.Consistency_CONSISTENCY_STALE, MaxStaleness: durationpb.New(opts.MaxStaleness)}
	byRound := map[string][]Result{}
	for round := range opts.Rounds {
		modes := []string{cacheOff, cacheOn}
		if round%2 == 1 {
			modes = []string{cacheOn, cacheOff}
		}
		for _, mode := range modes {
			cs := clients[mode]
			var hits, reads, wHits, wReads atomic.Uint64
			zipfs := make([]*rand.Zipf, opts.Concurrency)
			var zmu sync.Mutex
			for w := range zipfs {
				zipfs[w] = rand.NewZipf(rand.New(rand.NewPCG(uint64(round), uint64(w))), opts.ZipfS, 1, uint64(max(opts.Contexts, opts.Keys)-1))
			}
			l := Load{Name: fmt.Sprintf("cache %s read #%d", mode, round+1), Concurrency: opts.Concurrency, Duration: opts.Duration, Warmup: warmupFor(opts.Duration),
				Window: func(open bool) {
					if open {
						wHits.Store(hits.Load())
						wReads.Store(reads.Load())
						return
					}
					wHits.Store(hits.Load() - wHits.Load())
					wReads.Store(reads.Load() - wReads.Load())
				}}
			r, err := Run(ctx, l, func(ctx context.Context, w int) error {
				zmu.Lock()
				n := zipfs[w].Uint64()
				zmu.Unlock()
				var h metadata.MD
				var err error
				if n%2 == 0 {
					_, err = cs.Read(tctx, &contextv1.ReadRequest{ContextId: fmt.Sprintf("c%d", n%uint64(opts.Contexts)), Start: &contextv1.ReadRequest_Tail{Tail: 10}, ReadOptions: stale}, grpc.Header(&h))
				} else {
					_, err = cs.GetMemory(tctx, &contextv1.GetMemoryRequest{Key: fmt.Sprintf("k%d", n%uint64(opts.Keys)), Scope: contextv1.MemoryScope_MEMORY_SCOPE_TENANT, ReadOptions: stale}, grpc.Header(&h))
				}
				if err == nil {
					reads.Add(1)
					if len(h.Get(forward.CacheHeader)) > 0 {
						hits.Add(1)
					}
				}
				return err
			})
			if err != nil {
				return nil, err
			}
			r.Round = round + 1
			res.Runs = append(res.Runs, r)
			byRound[mode] = append(byRound[mode], r)
			if mode == cacheOn {
				ratio := 0.0
				if n := wReads.Load(); n > 0 {
					ratio = float64(wHits.Load()) / float64(n)
				}
				res.HitRatios = append(res.HitRatios, ratio)
			}
			p.printf("%s", r)
		}
	}
	res.TotalSec = time.Since(began).Seconds()
	res.LoadAvg = loadAvg()
	ratios := map[string]float64{RatioCacheHit: medianOrZero(res.HitRatios)}
	var cpu, qps, p50 []float64
	for i := range byRound[cacheOn] {
		on, off := byRound[cacheOn][i], byRound[cacheOff][i]
		if on.CPUPerOpUs > 0 {
			cpu = append(cpu, off.CPUPerOpUs/on.CPUPerOpUs)
		}
		if off.OpsPerSec > 0 {
			qps = append(qps, on.OpsPerSec/off.OpsPerSec)
		}
		if on.Latency.P50 > 0 {
			p50 = append(p50, off.Latency.P50/on.Latency.P50)
		}
	}
	ratios[RatioCacheCPUPerRead], ratios[RatioCacheQPS], ratios[RatioCacheP50] = medianOrZero(cpu), medianOrZero(qps), medianOrZero(p50)
	return &Report{Scenario: "cache", Machine: machine, Results: res, Ratios: ratios}, nil
}

func medianOrZero(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	return medianOf(v)
}

// startCacheRouter starts a second router on the platform's etcd with the
// read cache on, and a connection to it.
func startCacheRouter(ctx context.Context, etcd []string, dir string, opts CacheOptions) (*router.Server, *grpc.ClientConn, error) {
	rc := router.DefaultConfig()
	rc.EtcdEndpoints = etcd
	rc.GRPCAddr, rc.HTTPAddr = "127.0.0.1:0", "127.0.0.1:0"
	rc.Routing.SnapshotPath = filepath.Join(dir, "table.snap")
	rc.Auth.Mode = auth.ModeNone
	rc.Logger = opts.Logger.With("component", "router-cache")
	rc.Forward.ReadCache.MaxBytes = opts.CacheBytes
	rc.ShutdownTimeout = 5 * time.Second
	r, err := router.Start(ctx, rc)
	if err != nil {
		return nil, nil, fmt.Errorf("bench: cache router: %w", err)
	}
	conn, err := dial.New(r.GRPCAddr(), dial.DefaultConfig())
	if err != nil {
		_ = r.Close()
		return nil, nil, err
	}
	if err := waitTableRouted(ctx, r); err != nil {
		_ = conn.Close()
		_ = r.Close()
		return nil, nil, err
	}
	return r, conn, nil
}

func waitTableRouted(ctx context.Context, r *router.Server) error {
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	return poll(wctx, func() error {
		if _, ok := r.Table().Lookup(benchTenant); !r.Table().Loaded() || !ok {
			return fmt.Errorf("cache router: tenant %s not routable yet", benchTenant)
		}
		return nil
	})
}

// cacheWriter appends and puts at opts.WriteRate until ctx ends.
func cacheWriter(ctx context.Context, cs contextv1.ContextServiceClient, tctx context.Context, opts CacheOptions) {
	if opts.WriteRate <= 0 {
		return
	}
	z := rand.NewZipf(rand.New(rand.NewPCG(7, 7)), opts.ZipfS, 1, uint64(max(opts.Contexts, opts.Keys)-1))
	tick := time.NewTicker(time.Duration(float64(time.Second) / opts.WriteRate))
	defer tick.Stop()
	for i := 0; ; i++ {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		n := z.Uint64()
		wctx := metadata.NewOutgoingContext(ctx, mdOf(tctx))
		if i%2 == 0 {
			_, _ = cs.Append(wctx, &contextv1.AppendRequest{ContextId: fmt.Sprintf("c%d", n%uint64(opts.Contexts)),
				Entries: []*contextv1.Entry{{Role: "assistant", Content: &contextv1.Entry_Text{Text: fmt.Sprint("write ", i)}}}})
		} else {
			_, _ = cs.PutMemory(wctx, &contextv1.PutMemoryRequest{Key: fmt.Sprintf("k%d", n%uint64(opts.Keys)), Value: fmt.Appendf(nil, "%0256d", i), Scope: contextv1.MemoryScope_MEMORY_SCOPE_TENANT})
		}
	}
}

func mdOf(ctx context.Context) metadata.MD {
	md, _ := metadata.FromOutgoingContext(ctx)
	return md
}
