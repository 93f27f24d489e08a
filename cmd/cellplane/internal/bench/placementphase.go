package bench

import (
	"context"
	"fmt"
	"math/rand/v2"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/cellplane/cellplane/controlplane/catalog"
	"github.com/cellplane/cellplane/controlplane/topo"
	cpv1 "github.com/cellplane/cellplane/proto/cellplane/controlplane/v1"
)

// The placements' topology: 10 cells across 2 regions.
var (
	benchRegions = []string{"us-east-1", "eu-west-1"}
	benchCells   = []string{
		"use1-c01", "use1-c02", "use1-c03", "use1-c04", "use1-c05",
		"euw1-c01", "euw1-c02", "euw1-c03", "euw1-c04", "euw1-c05",
	}
)

// benchEpoch0 is the create time of the first tenant.
var benchEpoch0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// tenantID is the id of tenant i: tenant-0000001 for i = 1.
func tenantID(i int) string { return fmt.Sprintf("tenant-%07d", i) }

// placement returns the Tenant record of tenant i (1-based) at epoch.
func placement(i int, epoch uint64) *cpv1.Tenant {
	c := (i * 7) % len(benchCells) // spread neighbours over cells
	return &cpv1.Tenant{
		Id:         tenantID(i),
		HomeRegion: benchRegions[c/(len(benchCells)/len(benchRegions))],
		Cell:       benchCells[c],
		State:      cpv1.TenantState_TENANT_STATE_ACTIVE,
		Epoch:      epoch,
		Limits:     &cpv1.TenantLimits{Rate: 100, Burst: 200, MaxBytes: 1 << 30},
		CreateTime: timestamppb.New(benchEpoch0.Add(time.Duration(i) * time.Second)),
	}
}

// loadPlacements writes tenants 1..opts.Tenants through st, in
// transactions of opts.LoadBatch Puts from opts.LoadConcurrency writers.
// The returned Result counts tenants; its latency is per transaction.
func loadPlacements(ctx context.Context, st topo.Store, opts PlacementOptions, p progress) (Result, float64, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	batches := (opts.Tenants + opts.LoadBatch - 1) / opts.LoadBatch
	hist := NewHistogram()
	var (
		next, done, valueBytes atomic.Int64
		errOnce                sync.Once
		firstErr               error
		wg                     sync.WaitGroup
	)
	step := max(batches/10, 1)
	start := time.Now()
	cpu0 := processCPU()
	for range opts.LoadConcurrency {
		wg.Go(func() {
			ops := make([]topo.Op, 0, opts.LoadBatch)
			for {
				b := int(next.Add(1)) - 1
				if b >= batches || ctx.Err() != nil {
					return
				}
				ops = ops[:0]
				for i := b*opts.LoadBatch + 1; i <= min((b+1)*opts.LoadBatch, opts.Tenants); i++ {
					v := catalog.Encode(placement(i, 1))
					valueBytes.Add(int64(len(v)))
					ops = append(ops, topo.Put(topo.TenantKey(tenantID(i)), v))
				}
				t := time.Now()
				if _, err := st.Txn(ctx, nil, ops); err != nil {
					errOnce.Do(func() { firstErr = fmt.Errorf("bench: load batch %d: %w", b, err) })
					cancel()
					return
				}
				hist.Record(time.Since(t))
				if d := done.Add(1); d%int64(step) == 0 {
					p.printf("  loaded %d/%d tenants (%.0f/s)", min(int(d)*opts.LoadBatch, opts.Tenants), opts.Tenants,
						float64(int(d)*opts.LoadBatch)/time.Since(start).Seconds())
				}
			}
		})
	}
	wg.Wait()
	if firstErr != nil {
		return Result{}, 0, firstErr
	}
	if err := ctx.Err(); err != nil {
		return Result{}, 0, err
	}
	r := stepResult(fmt.Sprintf("bulk load (txn of %d)", opts.LoadBatch), opts.LoadConcurrency,
		uint64(opts.Tenants), time.Since(start), processCPU()-cpu0, hist)
	return r, float64(valueBytes.Load()) / float64(opts.Tenants), nil
}

// stepResult builds a Result for a step timed by its own loop.
func stepResult(name string, conc int, ops uint64, elapsed, cpu time.Duration, hist *Histogram) Result {
	r := Result{
		Name:        name,
		Concurrency: conc,
		Ops:         ops,
		ElapsedSec:  elapsed.Seconds(),
		Latency:     hist.Summary(),
	}
	if elapsed > 0 {
		r.OpsPerSec = float64(ops) / elapsed.Seconds()
		r.CPUCores = round3(cpu.Seconds() / elapsed.Seconds())
	}
	if ops > 0 {
		r.CPUPerOpUs = round3(float64(cpu.Microseconds()) / float64(ops))
	}
	return r
}

// route is what a router keeps per tenant: the owner cell (an index into
// routeTable.cells), the epoch to send with requests and whether the
// tenant is routable.
type route struct {
	Epoch  uint64
	Cell   uint16
	Active bool
}

// routeTable is a router's in-memory placement map.
type routeTable struct {
	cells   []string
	cellIdx map[string]uint16
	m       map[string]route
}

func newRouteTable() *routeTable {
	return &routeTable{cellIdx: map[string]uint16{}, m: map[string]route{}}
}

// Len is the number of tenants.
func (t *routeTable) Len() int { return len(t.m) }

// apply decodes a tenants/<id> record into the map (scratch is reused).
// Keys below a tenant (tenants/<id>/keys/…) are skipped.
func (t *routeTable) apply(kv topo.KV, scratch *cpv1.Tenant) error {
	id, ok := strings.CutPrefix(kv.Key, topo.TenantsPrefix)
	if !ok || id == "" || strings.IndexByte(id, '/') >= 0 {
		return nil
	}
	if err := catalog.Decode(kv, scratch); err != nil {
		return err
	}
	ci, ok := t.cellIdx[scratch.GetCell()]
	if !ok {
		ci = uint16(len(t.cells))
		t.cells = append(t.cells, strings.Clone(scratch.GetCell()))
		t.cellIdx[t.cells[ci]] = ci
	}
	r := route{Epoch: scratch.GetEpoch(), Cell: ci, Active: scratch.GetState() == cpv1.TenantState_TENANT_STATE_ACTIVE}
	if _, exists := t.m[id]; exists {
		t.m[id] = r // keeps the map's own key
	} else {
		// A copy: id shares the KV key's allocation (prefix included).
		t.m[strings.Clone(id)] = r
	}
	return nil
}

// liveHeap forces a GC and returns the live heap.
func liveHeap() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// routerLoad does what a router does at start: every tenants/ key, page
// by page at one revision (catalog.Each), decoded into a routeTable.
func routerLoad(ctx context.Context, st topo.Store, opts PlacementOptions, name string) (RouterLoad, *routeTable, error) {
	before := liveHeap()
	hist := NewHistogram()
	table := newRouteTable()
	scratch := &cpv1.Tenant{}
	pages := 0
	start := time.Now()
	cpu0 := processCPU()
	pageStart := start
	// topo.Scan, as the router's table loads: etcd's RangeStream (chunks
	// of ~1.5 MiB, no per-page count), List pages of opts.PageSize on a
	// store without it. Latencies are per chunk.
	rev, err := topo.Scan(ctx, st, topo.TenantsPrefix, 0, opts.PageSize, func(kvs []topo.KV) error {
		for _, kv := range kvs {
			if err := table.apply(kv, scratch); err != nil {
				return err
			}
		}
		pages++
		now := time.Now()
		hist.Record(now.Sub(pageStart))
		pageStart = now
		return nil
	})
	if err != nil {
		return RouterLoad{}, nil, fmt.Errorf("bench: %s: chunk %d: %w", name, pages+1, err)
	}
	elapsed := time.Since(start)
	cpu := processCPU() - cpu0
	after := liveHeap()
	runtime.KeepAlive(table)
	rl := RouterLoad{
		Result:   stepResult(name, 1, uint64(table.Len()), elapsed, cpu, hist),
		Pages:    pages,
		Revision: int64(rev),
	}
	if after > before {
		rl.HeapBytes = after - before
	}
	if n := table.Len(); n > 0 {
		rl.BytesPerTenant = round3(float64(rl.HeapBytes) / float64(n))
	}
	return rl, table, nil
}

// updateTenants picks n distinct tenants to update, in random order.
func updateTenants(n, tenants int, rng *rand.Rand) []int {
	if n >= tenants {
		ids := make([]int, tenants)
		for i := range ids {
			ids[i] = i + 1
		}
		rng.Shuffle(len(ids), func(i, j int) { ids[i], ids[j] = ids[j], ids[i] })
		return ids[:n]
	}
	seen := make(map[int]bool, n)
	ids := make([]int, 0, n)
	for len(ids) < n {
		i := 1 + rng.IntN(tenants)
		if !seen[i] {
			seen[i] = true
			ids = append(ids, i)
		}
	}
	return ids
}

// writePlacement writes tenant i's record at epoch with a plain Put (a
// one-op Txn without conditions, as the controller's writes are).
func writePlacement(ctx context.Context, st topo.Store, i int, epoch uint64) error {
	t := placement(i, epoch)
	t.Cell = benchCells[(i*7+1)%len(benchCells)] // a move: the router must notice
	t.UpdateTime = timestamppb.Now()
	_, err := st.Txn(ctx, nil, []topo.Op{topo.Put(topo.TenantKey(t.Id), catalog.Encode(t))})
	return err
}

// pace waits until the i-th tick of interval after start.
func pace(ctx context.Context, start time.Time, i int, interval time.Duration) error {
	if d := time.Until(start.Add(time.Duration(i) * interval)); d > 0 {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
	return ctx.Err()
}

// putBaseline writes opts.Updates single placements, one at a time, paced
// like the watched updates, with no watcher open.
func putBaseline(ctx context.Context, st topo.Store, opts PlacementOptions) (Result, error) {
	rng := rand.New(rand.NewPCG(1, 2))
	ids := updateTenants(opts.Updates, opts.Tenants, rng)
	hist := NewHistogram()
	start := time.Now()
	cpu0 := processCPU()
	for n, i := range ids {
		if err := pace(ctx, start, n, opts.UpdateInterval); err != nil {
			return Result{}, err
		}
		t := time.Now()
		if err := writePlacement(ctx, st, i, 2); err != nil {
			return Result{}, fmt.Errorf("bench: baseline put: %w", err)
		}
		hist.Record(time.Since(t))
	}
	return stepResult("etcd put alone", 1, uint64(len(ids)), time.Since(start), processCPU()-cpu0, hist), nil
}

// propagation watches tenants/ from rev + 1 (the revision of the router's
// full load; the baseline Puts after it are replayed first, unmeasured) and
// applies every event to table, while a writer updates opts.Updates
// distinct tenants one at a time. It returns the writes' ack latency and
// the propagation latency (write start to event applied).
func propagation(ctx context.Context, st topo.Store, table *routeTable, rev topo.Revision, opts PlacementOptions) (ack, prop Result, seenBeforeAck int, err error) {
	rng := rand.New(rand.NewPCG(3, 4))
	ids := updateTenants(opts.Updates, opts.Tenants, rng)
	const epoch = 3
	type pending struct {
		start, acked, seen time.Time
	}
	var mu sync.Mutex
	byKey := make(map[string]*pending, len(ids))
	all := make([]*pending, len(ids))
	for n, i := range ids {
		all[n] = &pending{}
		byKey[tenantID(i)] = all[n]
	}
	remaining := len(ids)
	allSeen := make(chan struct{})

	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	watchDone := make(chan error, 1)
	wch := st.Watch(wctx, topo.TenantsPrefix, rev+1)
	go func() {
		scratch := &cpv1.Tenant{}
		for wr := range wch {
			if wr.Err != nil {
				watchDone <- wr.Err
				return
			}
			for _, ev := range wr.Events {
				if ev.Type != topo.EventPut {
					continue
				}
				if err := table.apply(ev.KV, scratch); err != nil {
					watchDone <- err
					return
				}
				if scratch.GetEpoch() != epoch {
					continue // a baseline Put, replayed
				}
				now := time.Now()
				mu.Lock()
				if p := byKey[scratch.GetId()]; p != nil && p.seen.IsZero() {
					p.seen = now
					if remaining--; remaining == 0 {
						close(allSeen)
					}
				}
				mu.Unlock()
			}
		}
		watchDone <- nil
	}()

	ackHist := NewHistogram()
	start := time.Now()
	cpu0 := processCPU()
	for n, i := range ids {
		if err := pace(ctx, start, n, opts.UpdateInterval); err != nil {
			return Result{}, Result{}, 0, err
		}
		p := all[n]
		mu.Lock()
		p.start = time.Now()
		mu.Unlock()
		if err := writePlacement(ctx, st, i, epoch); err != nil {
			return Result{}, Result{}, 0, fmt.Errorf("bench: update: %w", err)
		}
		now := time.Now()
		mu.Lock()
		p.acked = now
		ackHist.Record(now.Sub(p.start))
		mu.Unlock()
	}
	writeEnd := time.Now()
	timer := time.NewTimer(10 * time.Second)
	defer timer.Stop()
	select {
	case <-allSeen:
	case err := <-watchDone:
		if err == nil {
			err = fmt.Errorf("watch ended")
		}
		return Result{}, Result{}, 0, fmt.Errorf("bench: watch: %w", err)
	case <-timer.C:
	case <-ctx.Done():
		return Result{}, Result{}, 0, ctx.Err()
	}
	end := time.Now()
	cpu := processCPU() - cpu0
	cancel()
	<-watchDone

	propHist := NewHistogram()
	mu.Lock()
	defer mu.Unlock()
	for _, p := range all {
		if p.seen.IsZero() {
			continue
		}
		propHist.Record(p.seen.Sub(p.start))
		if p.seen.Before(p.acked) {
			seenBeforeAck++
		}
	}
	ack = stepResult("update put (watched)", 1, ackHist.Count(), writeEnd.Sub(start), cpu, ackHist)
	prop = stepResult("watch propagation", 1, propHist.Count(), end.Sub(start), cpu, propHist)
	if missed := uint64(len(all)) - propHist.Count(); missed > 0 {
		prop.Errors = missed
		prop.ErrorsByCode = map[string]uint64{"NotSeen": missed}
		prop.FirstError = "updates not seen by the watcher within 10 s"
	}
	return ack, prop, seenBeforeAck, nil
}
