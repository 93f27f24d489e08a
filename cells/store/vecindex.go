package store

import (
	"bytes"
	"container/list"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// VectorConfig tunes vector search on a member. The approximate index is
// derived state: built on this member from the stored vectors, kept
// current by the apply path, never replicated, snapshotted or exported.
type VectorConfig struct {
	// ExactMax is the largest namespace searched exactly (a scan of its
	// vectors): above it a search uses (and, on first use, builds in the
	// background) the namespace's HNSW index. docs/benchmarks.md "Vector
	// search" has the crossover this default comes from.
	ExactMax int
	// IndexBudgetBytes bounds the estimated memory of the loaded indexes
	// of this member; past it, whole indexes are evicted least recently
	// used first (0: no approximate index, every search is exact).
	IndexBudgetBytes int64
	// M and EfSearch are the HNSW parameters (neighbours per node,
	// candidate list of a search; a search asks for at least as many
	// candidates as it over-fetches).
	M              int
	EfSearch       int
	EfConstruction int
	// OverFetch multiplies k for an approximate search, so that filters
	// and entries removed since still leave k hits; fewer than k accepted
	// hits fall back to an exact search.
	OverFetch int
}

// DefaultVectorConfig returns the defaults.
func DefaultVectorConfig() VectorConfig {
	return VectorConfig{ExactMax: 10000, IndexBudgetBytes: 1 << 30, M: 16, EfSearch: 200, EfConstruction: 100, OverFetch: 4}
}

// Validate reports a configuration error.
func (c VectorConfig) Validate() error {
	switch {
	case c.ExactMax < 0:
		return errConfig("Vector.ExactMax", "must not be negative")
	case c.IndexBudgetBytes < 0:
		return errConfig("Vector.IndexBudgetBytes", "must not be negative")
	case c.M != 0 && (c.M < 2 || c.M > 256):
		return errConfig("Vector.M", "must be in [2, 256] (0: default)")
	case c.EfSearch < 0 || c.EfSearch > 4096:
		return errConfig("Vector.EfSearch", "must be in [1, 4096] (0: default)")
	case c.EfConstruction < 0 || c.EfConstruction > 4096:
		return errConfig("Vector.EfConstruction", "must be in [1, 4096] (0: default)")
	case c.OverFetch < 0 || c.OverFetch > 64:
		return errConfig("Vector.OverFetch", "must be in [1, 64] (0: default)")
	}
	return nil
}

// vecNS names one loaded index: a tenant's namespace.
type vecNS struct {
	tenant string
	ns     byte
}

// vecIndex is one namespace's HNSW graph. Keys are the vector keys
// without the tenant's 'v' prefix (namespace byte first).
type vecIndex struct {
	id vecNS
	mu sync.Mutex
	g  *hnswGraph
	// ready: built; until then the apply path queues its changes in
	// pending, replayed after the build (idempotent: puts and deletes of
	// keys in commit order).
	ready   bool
	pending []vecOp
	// byContext groups a context namespace's keys by context id, so that
	// a context's range delete removes its keys without a scan.
	byContext map[string][]string
	dims      int
	bytes     int64
	elem      *list.Element
}

// vecOp is one committed change of a vector key.
type vecOp struct {
	key string // without the tenant prefix, namespace byte first
	vec []float32
	del bool
	// dropContext: every key of this context id (a range delete).
	dropContext string
}

// vectorIndexes are a member's loaded indexes, bounded by the budget.
type vectorIndexes struct {
	cfg     VectorConfig
	log     *slog.Logger
	mu      sync.Mutex
	m       map[vecNS]*vecIndex
	lru     *list.List // of *vecIndex, most recent first
	used    int64
	closing <-chan struct{}
	wg      *sync.WaitGroup
	// build starts a build (the store's: snapshot, scan); nil: none.
	build func(ix *vecIndex)

	builds    prometheus.Counter
	buildTime prometheus.Histogram
	evictions prometheus.Counter
}

func newVectorIndexes(cfg VectorConfig, log *slog.Logger) *vectorIndexes {
	def := DefaultVectorConfig()
	if cfg.M == 0 {
		cfg.M = def.M
	}
	if cfg.EfSearch == 0 {
		cfg.EfSearch = def.EfSearch
	}
	if cfg.EfConstruction == 0 {
		cfg.EfConstruction = def.EfConstruction
	}
	if cfg.OverFetch == 0 {
		cfg.OverFetch = def.OverFetch
	}
	return &vectorIndexes{
		cfg: cfg, log: log, m: map[vecNS]*vecIndex{}, lru: list.New(),
		builds: prometheus.NewCounter(prometheus.CounterOpts{Name: "cellplane_store_vector_index_builds_total",
			Help: "HNSW indexes built on this member from the stored vectors (on first approximate search, after an eviction or a restart)."}),
		buildTime: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "cellplane_store_vector_index_build_seconds",
			Help: "Time to build one tenant namespace's HNSW index.", Buckets: prometheus.ExponentialBuckets(0.01, 2, 14)}),
		evictions: prometheus.NewCounter(prometheus.CounterOpts{Name: "cellplane_store_vector_index_evictions_total",
			Help: "Whole indexes evicted to stay within Vector.IndexBudgetBytes."}),
	}
}

func (x *vectorIndexes) collectors() []prometheus.Collector {
	return []prometheus.Collector{x.builds, x.buildTime, x.evictions,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "cellplane_store_vector_indexes_loaded",
			Help: "Tenant vector namespaces with an HNSW index in memory on this member."}, func() float64 {
			x.mu.Lock()
			defer x.mu.Unlock()
			return float64(len(x.m))
		}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "cellplane_store_vector_index_bytes",
			Help: "Estimated memory of the loaded HNSW indexes (bounded by Vector.IndexBudgetBytes)."}, func() float64 {
			x.mu.Lock()
			defer x.mu.Unlock()
			return float64(x.used)
		}),
	}
}

// nodeBytes estimates one node's memory: its vector, its neighbour lists
// (about 2M at layer 0 with map overhead), its key.
func (x *vectorIndexes) nodeBytes(dims, keyLen int) int64 {
	return int64(4*dims + 48*x.cfg.M + 2*keyLen + 96)
}

func (x *vectorIndexes) newGraph() *hnswGraph {
	return newHNSW(x.cfg.M, x.cfg.EfConstruction, 1)
}

// get returns the ready index of a namespace; when there is none it
// starts a build (if the budget allows any) and returns nil: the caller
// searches exactly meanwhile.
func (x *vectorIndexes) get(id vecNS) *vecIndex {
	if x == nil || x.cfg.IndexBudgetBytes == 0 {
		return nil
	}
	x.mu.Lock()
	ix, ok := x.m[id]
	if ok {
		x.lru.MoveToFront(ix.elem)
		x.mu.Unlock()
		ix.mu.Lock()
		ready := ix.ready
		ix.mu.Unlock()
		if ready {
			return ix
		}
		return nil
	}
	select {
	case <-x.closing:
		x.mu.Unlock()
		return nil
	default:
	}
	ix = &vecIndex{id: id, g: x.newGraph()}
	if id.ns == VectorContexts {
		ix.byContext = map[string][]string{}
	}
	ix.elem = x.lru.PushFront(ix)
	x.m[id] = ix
	build := x.build
	x.mu.Unlock()
	if build != nil {
		x.wg.Add(1)
		go func() {
			defer x.wg.Done()
			build(ix)
		}()
	}
	return nil
}

// finish marks a built index ready (replaying what the apply path queued
// meanwhile), or forgets it (failed, evicted or dropped meanwhile).
func (x *vectorIndexes) finish(ix *vecIndex, ok bool, took time.Duration) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.m[ix.id] != ix {
		return
	}
	if !ok {
		x.remove(ix)
		return
	}
	ix.mu.Lock()
	for _, op := range ix.pending {
		ix.apply(x, op)
	}
	ix.pending, ix.ready = nil, true
	b := ix.bytes
	ix.mu.Unlock()
	x.used += b
	x.builds.Inc()
	x.buildTime.Observe(took.Seconds())
	x.log.Info("vector index built", "tenant", ix.id.tenant, "namespace", nsName(ix.id.ns), "vectors", ix.g.Len(), "bytes", b, "took", took)
	x.evict()
}

// evict drops least recently used indexes until the budget holds; x.mu
// is held.
func (x *vectorIndexes) evict() {
	for x.used > x.cfg.IndexBudgetBytes && x.lru.Len() > 0 {
		ix := x.lru.Back().Value.(*vecIndex)
		x.remove(ix)
		x.evictions.Inc()
	}
}

// remove forgets an index; x.mu is held.
func (x *vectorIndexes) remove(ix *vecIndex) {
	ix.mu.Lock()
	if ix.ready {
		x.used -= ix.bytes
	}
	ix.mu.Unlock()
	x.lru.Remove(ix.elem)
	delete(x.m, ix.id)
}

// drop forgets a tenant's indexes (deleted, or imported afresh).
func (x *vectorIndexes) drop(tenant string) {
	x.mu.Lock()
	defer x.mu.Unlock()
	for id, ix := range x.m {
		if id.tenant == tenant {
			x.remove(ix)
		}
	}
}

// clear forgets every index (the state was replaced: a snapshot install).
func (x *vectorIndexes) clear() {
	if x == nil {
		return
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	for _, ix := range x.m {
		x.remove(ix)
	}
}

// apply applies one committed change to a loaded index; ix.mu is held.
func (ix *vecIndex) apply(x *vectorIndexes, op vecOp) {
	switch {
	case op.dropContext != "":
		for _, k := range ix.byContext[op.dropContext] {
			ix.g.Delete(k)
		}
		delete(ix.byContext, op.dropContext)
	case op.del:
		ix.g.Delete(op.key)
	default:
		if ix.dims != 0 && len(op.vec) != ix.dims {
			return // the namespace's dimension changed (emptied first): rebuilt on next use
		}
		ix.add(x, op.key, op.vec)
	}
}

func (ix *vecIndex) add(x *vectorIndexes, key string, vec []float32) {
	ix.bytes += x.nodeBytes(len(vec), len(key)) // a replaced node stays as a tombstone
	if !ix.g.Has(key) {
		if ix.byContext != nil {
			if id, ok := contextOfVectorKey(key); ok {
				ix.byContext[id] = append(ix.byContext[id], key)
			}
		}
	}
	ix.dims = len(vec)
	ix.g.Add(key, vec)
}

// contextOfVectorKey is the context id of a context vector key ('c' id
// "\x00" seq).
func contextOfVectorKey(key string) (string, bool) {
	if len(key) < 10 || key[0] != VectorContexts {
		return "", false
	}
	return key[1 : len(key)-9], true
}

// vecTxn is what one apply batch changed of vector keys, published to the
// loaded indexes once the batch is committed.
type vecTxn struct {
	ops     map[vecNS][]vecOp
	tenants map[string]bool // whole tenant ranges deleted (drop)
}

func (t *vecTxn) add(id vecNS, op vecOp) {
	if t.ops == nil {
		t.ops = map[vecNS][]vecOp{}
	}
	t.ops[id] = append(t.ops[id], op)
}

// set records a write of key (any key: only vector keys count).
func (t *vecTxn) set(key, v []byte) {
	tenant, kind, ok := tenantKind(key)
	if !ok || kind != kindVector {
		return
	}
	rest := key[len(tenantKey(tenant, kindVector, 0)):]
	if len(rest) == 0 {
		return
	}
	vec, err := DecodeVector(v)
	if err != nil {
		return
	}
	t.add(vecNS{tenant, rest[0]}, vecOp{key: string(rest), vec: vec})
}

func (t *vecTxn) del(key []byte) {
	tenant, kind, ok := tenantKind(key)
	if !ok || kind != kindVector {
		return
	}
	rest := key[len(tenantKey(tenant, kindVector, 0)):]
	if len(rest) == 0 {
		return
	}
	t.add(vecNS{tenant, rest[0]}, vecOp{key: string(rest), del: true})
}

// delRange records a range delete: one context's vectors, or anything
// wider (a tenant's whole range: its indexes are dropped).
func (t *vecTxn) delRange(start, end []byte) {
	tenant, kind, ok := tenantKind(start)
	if !ok {
		return
	}
	switch kind {
	case kindVector:
		rest := start[len(tenantKey(tenant, kindVector, 0)):]
		if len(rest) > 2 && rest[0] == VectorContexts && rest[len(rest)-1] == 0 && bytes.Equal(end, prefixEnd(start)) {
			t.add(vecNS{tenant, VectorContexts}, vecOp{dropContext: string(rest[1 : len(rest)-1])})
			return
		}
	case 0:
	default:
		if bytes.HasPrefix(end, tenantKey(tenant, kind, 0)) {
			return // inside another kind
		}
	}
	if t.tenants == nil {
		t.tenants = map[string]bool{}
	}
	t.tenants[tenant] = true
}

// publish applies a committed batch's changes to the loaded indexes.
func (t *vecTxn) publish(x *vectorIndexes) {
	if x == nil || (len(t.ops) == 0 && len(t.tenants) == 0) {
		return
	}
	for tenant := range t.tenants {
		x.drop(tenant)
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	for id, ops := range t.ops {
		ix, ok := x.m[id]
		if !ok {
			continue
		}
		ix.mu.Lock()
		if !ix.ready {
			ix.pending = append(ix.pending, ops...)
			ix.mu.Unlock()
			continue
		}
		before := ix.bytes
		for _, op := range ops {
			ix.apply(x, op)
		}
		x.used += ix.bytes - before
		stale := ix.g.dead > ix.g.Len() && ix.g.dead > 1024
		ix.mu.Unlock()
		if stale {
			x.remove(ix) // mostly tombstones: built afresh on next use
		}
	}
	x.evict()
}

func errConfig(field, msg string) error { return fmt.Errorf("store config %s: %s", field, msg) }
