package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/cellplane/cellplane/controlplane/etcdserver"
	"github.com/cellplane/cellplane/controlplane/topo"
	"github.com/cellplane/cellplane/controlplane/topo/etcdtopo"
	"github.com/cellplane/cellplane/internal/serve"
	"github.com/cellplane/cellplane/router/routing"
)

// Ratio names of the placement scenario (the targets).
const (
	RatioLoadSecondsPerMillion = "load_seconds_per_million"
	RatioPropagationP99        = "propagation_p99_ms"
	RatioPropagationVsPut      = "propagation_p50_vs_put_p50"
)

// PlacementTargets are the goals for the placement scenario.
var PlacementTargets = map[string]Target{
	RatioLoadSecondsPerMillion: {AtLeast: false, Value: 5, Unit: "s"},
	RatioPropagationP99:        {AtLeast: false, Value: 100, Unit: "ms"},
}

// PlacementOptions configures RunPlacement (`cellplane bench placement`).
type PlacementOptions struct {
	// Tenants is the number of placements loaded into etcd.
	Tenants int
	// PageSize is the page of the router's paginated List.
	PageSize int
	// Loads is how many times the full router load is repeated (the
	// median is reported).
	Loads int
	// Updates is the number of single-placement changes whose watch
	// propagation is measured (and of baseline Puts).
	Updates int
	// UpdateInterval paces the updates (one at a time, one per interval).
	UpdateInterval time.Duration
	// LoadConcurrency and LoadBatch shape the initial bulk load: that many
	// writers, each committing transactions of LoadBatch Puts (≤ 128,
	// etcd's default --max-txn-ops).
	LoadConcurrency int
	LoadBatch       int
	// UnsafeNoFsync runs etcd without fsync (faster loading; the
	// measured figures then do not describe a production member).
	UnsafeNoFsync bool
	// DataDir is where etcd keeps its files: a new directory inside it
	// (os.TempDir() when empty), removed at the end.
	DataDir string
	// Logger receives etcd's logs (nil: discarded).
	Logger *slog.Logger
	// Progress receives one human line per phase (nil: silent).
	Progress io.Writer
}

// DefaultPlacementOptions returns the options of a default run: one
// million placements, pages of 5000, three router loads, 200 updates 10 ms
// apart.
func DefaultPlacementOptions() PlacementOptions {
	return PlacementOptions{
		Tenants:         1_000_000,
		PageSize:        routing.DefaultPageSize, // what a router uses
		Loads:           3,
		Updates:         200,
		UpdateInterval:  10 * time.Millisecond,
		LoadConcurrency: 8,
		LoadBatch:       etcdtopo.DefaultMaxTxnOps,
	}
}

func (o PlacementOptions) withDefaults() PlacementOptions {
	d := DefaultPlacementOptions()
	if o.Tenants <= 0 {
		o.Tenants = d.Tenants
	}
	if o.PageSize <= 0 {
		o.PageSize = d.PageSize
	}
	if o.Loads <= 0 {
		o.Loads = d.Loads
	}
	if o.Updates <= 0 {
		o.Updates = d.Updates
	}
	o.Updates = min(o.Updates, o.Tenants) // each update changes a distinct tenant
	if o.UpdateInterval < 0 {
		o.UpdateInterval = 0
	}
	if o.LoadConcurrency <= 0 {
		o.LoadConcurrency = d.LoadConcurrency
	}
	if o.LoadBatch <= 0 {
		o.LoadBatch = d.LoadBatch
	}
	o.LoadBatch = min(o.LoadBatch, etcdtopo.DefaultMaxTxnOps)
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o
}

// PlacementResults are the figures of `cellplane bench placement`.
type PlacementResults struct {
	Tenants int `json:"tenants"`
	Cells   int `json:"cells"`
	Regions int `json:"regions"`
	// ValueBytesAvg is the mean encoded size of a Tenant record.
	ValueBytesAvg float64 `json:"value_bytes_avg"`
	PageSize      int     `json:"page_size"`
	Fsync         bool    `json:"etcd_fsync"`

	// Write is the bulk load through topo.Store.Txn: Ops are tenants,
	// OpsPerSec tenants/s, the latency is per transaction of LoadBatch
	// Puts.
	Write      Result `json:"write"`
	WriteBatch int    `json:"write_batch"`
	// EtcdDBBytes is the size of etcd's backend file (bbolt, member/snap/db)
	// after the bulk load; EtcdDirBytes the whole data directory (that
	// file, the WAL with its preallocated 64 MiB segments, snapshots).
	EtcdDBBytes  int64 `json:"etcd_db_bytes"`
	EtcdDirBytes int64 `json:"etcd_dir_bytes"`

	// RouterLoads are the full paginated loads into memory, in run order:
	// Ops are tenants, OpsPerSec tenants/s, the latency is per page (List
	// plus decoding its values into the map).
	RouterLoads []RouterLoad `json:"router_loads"`
	// RouterLoadSec and BytesPerTenant are the medians over RouterLoads.
	RouterLoadSec  float64 `json:"router_load_s"`
	BytesPerTenant float64 `json:"bytes_per_tenant"`

	// PutBaseline is single-placement Puts with no watcher, paced like
	// the updates: the latency of one etcd write alone.
	PutBaseline Result `json:"put_baseline"`
	// UpdateAck is the write latency of the watched updates (start to
	// acknowledgement); Propagation is from each update's start to the
	// moment the router's watcher applied its event to the map.
	UpdateAck   Result `json:"update_ack"`
	Propagation Result `json:"propagation"`
	// SeenBeforeAck counts updates the watcher applied before the writer
	// got its acknowledgement.
	SeenBeforeAck int `json:"seen_before_ack"`

	EtcdStartSec float64   `json:"etcd_start_s"`
	TotalSec     float64   `json:"total_s"`
	LoadAvgEnd   []float64 `json:"load_avg_end,omitempty"`
}

// RouterLoad is one full paginated load of every placement into memory.
type RouterLoad struct {
	Result
	Pages int `json:"pages"`
	// Revision is the revision every page was read at.
	Revision int64 `json:"revision"`
	// HeapBytes is the growth of runtime.MemStats.HeapAlloc (live heap
	// after a forced GC) from before the load to after it, with the map
	// still referenced; BytesPerTenant is HeapBytes / tenants.
	HeapBytes      uint64  `json:"heap_bytes"`
	BytesPerTenant float64 `json:"bytes_per_tenant"`
}

// Steps lists every step in run order, for the table.
func (r *PlacementResults) Steps() []Result {
	s := []Result{r.Write}
	for _, l := range r.RouterLoads {
		s = append(s, l.Result)
	}
	return append(s, r.PutBaseline, r.UpdateAck, r.Propagation)
}

// Notes lists the figures that are not steps.
func (r *PlacementResults) Notes() []Note {
	fsync := "on"
	if !r.Fsync {
		fsync = "OFF (--unsafe-no-fsync)"
	}
	n := []Note{
		{"placements", fmt.Sprintf("%d (%d cells in %d regions, %.0f B per encoded Tenant)", r.Tenants, r.Cells, r.Regions, r.ValueBytesAvg)},
		{"etcd", fmt.Sprintf("1 member, fsync %s, started in %.2f s", fsync, r.EtcdStartSec)},
		{"bulk load", fmt.Sprintf("%.0f tenants/s in %.1f s (txns of %d Puts, %d writers)",
			r.Write.OpsPerSec, r.Write.ElapsedSec, r.WriteBatch, r.Write.Concurrency)},
		{"etcd after the bulk load", fmt.Sprintf("backend db %s, data dir %s", mib(uint64(max(r.EtcdDBBytes, 0))), mib(uint64(max(r.EtcdDirBytes, 0))))},
		{"router load (median)", fmt.Sprintf("%.2f s for %d tenants, pages of %d", r.RouterLoadSec, r.Tenants, r.PageSize)},
		{"router memory (median)", fmt.Sprintf("%.0f B per tenant (live heap growth after GC / tenants)", r.BytesPerTenant)},
		{"propagation", fmt.Sprintf("%d updates, %d seen before their ack", r.Propagation.Ops, r.SeenBeforeAck)},
		{"total", fmt.Sprintf("%.1f s", r.TotalSec)},
	}
	n = append(n, loadAvgNote(r.LoadAvgEnd)...)
	return n
}

// RunPlacement runs `cellplane bench placement`: it loads opts.Tenants
// Tenant records at tenants/<id> into a single-member embedded etcd
// through topo.Store, then measures what a router does with them: a full
// paginated load into an in-memory map (repeated opts.Loads times; time
// and live heap per tenant) and the watch propagation of single
// placement changes, next to the latency of the same Put with no watcher.
func RunPlacement(ctx context.Context, opts PlacementOptions) (*Report, error) {
	opts = opts.withDefaults()
	began := time.Now()
	root, cleanup, err := runDir(opts.DataDir)
	if err != nil {
		return nil, err
	}
	defer cleanup()
	machine := DescribeMachine(root)
	p := progress{opts.Progress}
	res := &PlacementResults{
		Tenants:    opts.Tenants,
		Cells:      len(benchCells),
		Regions:    len(benchRegions),
		PageSize:   opts.PageSize,
		Fsync:      !opts.UnsafeNoFsync,
		WriteBatch: opts.LoadBatch,
	}

	p.printf("bench placement: %d tenants, etcd data dir %s (fsync %v)", opts.Tenants, root, res.Fsync)
	t0 := time.Now()
	etcdDir := filepath.Join(root, "etcd")
	srv, err := startSingleEtcd(ctx, etcdDir, opts)
	if err != nil {
		return nil, err
	}
	defer srv.Close()
	cfg := etcdtopo.DefaultConfig()
	cfg.Endpoints = srv.Endpoints()
	st, err := etcdtopo.Dial(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("bench: dial etcd: %w", err)
	}
	defer st.Close()
	res.EtcdStartSec = time.Since(t0).Seconds()
	p.printf("etcd ready in %.2f s", res.EtcdStartSec)

	// 1. The bulk load.
	res.Write, res.ValueBytesAvg, err = loadPlacements(ctx, st, opts, p)
	if err != nil {
		return nil, err
	}
	p.result(res.Write)
	res.EtcdDirBytes, res.EtcdDBBytes = dirSize(etcdDir)

	// 2. The router's full load, opts.Loads times.
	var (
		last    *routeTable
		lastRev topo.Revision
	)
	for i := range opts.Loads {
		last = nil // let the previous map go before measuring the next
		rl, table, err := routerLoad(ctx, st, opts, fmt.Sprintf("router load #%d", i+1))
		if err != nil {
			return nil, err
		}
		if table.Len() != opts.Tenants {
			return nil, fmt.Errorf("bench: router load #%d found %d tenants, want %d", i+1, table.Len(), opts.Tenants)
		}
		last, lastRev = table, topo.Revision(rl.Revision)
		res.RouterLoads = append(res.RouterLoads, rl)
		p.printf("  %s: %.2f s, %d pages, %.0f B/tenant", rl.Name, rl.ElapsedSec, rl.Pages, rl.BytesPerTenant)
	}
	res.RouterLoadSec = median(res.RouterLoads, func(l RouterLoad) float64 { return l.ElapsedSec })
	res.BytesPerTenant = median(res.RouterLoads, func(l RouterLoad) float64 { return l.BytesPerTenant })

	// 3. Single-placement writes: alone, then watched by the router.
	res.PutBaseline, err = putBaseline(ctx, st, opts)
	if err != nil {
		return nil, err
	}
	p.result(res.PutBaseline)
	// The router follows changes from the revision of its last full load
	// (which predates the baseline Puts: it sees those first, unmeasured).
	res.UpdateAck, res.Propagation, res.SeenBeforeAck, err = propagation(ctx, st, last, lastRev, opts)
	if err != nil {
		return nil, err
	}
	p.result(res.UpdateAck)
	p.result(res.Propagation)

	_ = st.Close()
	_ = srv.Close()
	res.TotalSec = time.Since(began).Seconds()
	res.LoadAvgEnd = loadAvg()
	return &Report{
		Scenario: "placement",
		Machine:  machine,
		Results:  res,
		Ratios:   placementRatios(res),
		Targets:  PlacementTargets,
	}, nil
}

// startSingleEtcd starts a one-member etcd on free loopback ports, with
// new ports if another process took one in between.
func startSingleEtcd(ctx context.Context, dir string, opts PlacementOptions) (*etcdserver.Server, error) {
	var lastErr error
	for attempt := range 3 {
		ports, err := serve.FreeLoopbackPorts(2)
		if err != nil {
			return nil, err
		}
		cfg := etcdserver.DefaultConfig()
		cfg.DataDir = filepath.Join(dir, fmt.Sprint(attempt))
		cfg.ClientURL = fmt.Sprintf("http://127.0.0.1:%d", ports[0])
		cfg.PeerURL = fmt.Sprintf("http://127.0.0.1:%d", ports[1])
		cfg.UnsafeNoFsync = opts.UnsafeNoFsync
		cfg.Logger = opts.Logger
		srv, err := etcdserver.Start(ctx, cfg)
		if err == nil {
			return srv, nil
		}
		lastErr = err
		_ = os.RemoveAll(cfg.DataDir)
		if !errors.Is(err, etcdserver.ErrAddrInUse) || ctx.Err() != nil {
			break
		}
	}
	return nil, fmt.Errorf("bench: start etcd: %w", lastErr)
}

// placementRatios computes the ratios; one whose inputs are missing or
// zero is left out.
func placementRatios(res *PlacementResults) map[string]float64 {
	ratios := map[string]float64{}
	if res.RouterLoadSec > 0 && res.Tenants > 0 {
		ratios[RatioLoadSecondsPerMillion] = round3(res.RouterLoadSec * 1e6 / float64(res.Tenants))
	}
	if res.Propagation.Ops > 0 {
		ratios[RatioPropagationP99] = res.Propagation.Latency.P99
		if res.PutBaseline.Ops > 0 && res.PutBaseline.Latency.P50 > 0 {
			ratios[RatioPropagationVsPut] = round3(res.Propagation.Latency.P50 / res.PutBaseline.Latency.P50)
		}
	}
	return ratios
}

// median returns the median of f over xs (the mean of the middle two for
// an even count; 0 when empty).
func median[T any](xs []T, f func(T) float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	v := make([]float64, len(xs))
	for i, x := range xs {
		v[i] = f(x)
	}
	slices.Sort(v)
	if len(v)%2 == 1 {
		return v[len(v)/2]
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2
}

// dirSize returns the total size of the regular files under dir and the
// size of etcd's backend file in it (member/snap/db); 0 for what cannot be
// read.
func dirSize(dir string) (total, db int64) {
	_ = filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			if info, err := d.Info(); err == nil {
				total += info.Size()
				if filepath.Base(path) == "db" && filepath.Base(filepath.Dir(path)) == "snap" {
					db = info.Size()
				}
			}
		}
		return nil
	})
	return total, db
}
