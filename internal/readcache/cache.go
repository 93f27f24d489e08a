package readcache

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/cellplane/cellplane/internal/cperr"
	"github.com/cellplane/cellplane/internal/retry"
	contextv1 "github.com/cellplane/cellplane/proto/cellplane/context/v1"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"
)

// Stream is one WatchChanges stream (the generated client's stream
// satisfies it).
type Stream interface {
	Recv() (*contextv1.WatchChangesResponse, error)
}

// Watch opens a tenant's change stream (ContextService.WatchChanges) as
// the worker or router itself, without a principal, so that it sees every
// principal's memory changes. ctx ends the stream.
type Watch func(ctx context.Context, tenant string, req *contextv1.WatchChangesRequest) (Stream, error)

// Config bounds a Cache. Every bound is explicit.
type Config struct {
	// MaxBytes is the byte budget of the cached answers (their encoded
	// size plus their keys). 0 turns the cache off: New returns nil, and a
	// nil *Cache misses every Get and stores nothing.
	MaxBytes int64
	// MaxEntries caps the number of cached answers.
	MaxEntries int
	// MaxTenants caps the tenants followed (one WatchChanges stream each);
	// filling a further tenant evicts the least recently used one.
	MaxTenants int
	// MaxEntryBytes: a larger answer is not cached.
	MaxEntryBytes int64
	// DefaultMaxStaleness is a STALE read's bound when the read gives none
	// (ReadOptions.max_staleness zero).
	DefaultMaxStaleness time.Duration
	// Retry is the follower's reconnect backoff (MaxAttempts is ignored:
	// a follower retries until its tenant is evicted).
	Retry retry.Policy
	// Logger nil: discard.
	Logger *slog.Logger
}

// Defaults of DefaultConfig.
const (
	DefaultMaxEntries          = 100_000
	DefaultMaxTenants          = 1000
	DefaultMaxEntryBytes       = 1 << 20
	DefaultMaxStalenessDefault = 5 * time.Second
)

// DefaultConfig returns a Config that is off (MaxBytes 0) with the other
// bounds at their defaults: set MaxBytes to turn it on.
func DefaultConfig() Config {
	return Config{
		MaxEntries:          DefaultMaxEntries,
		MaxTenants:          DefaultMaxTenants,
		MaxEntryBytes:       DefaultMaxEntryBytes,
		DefaultMaxStaleness: DefaultMaxStalenessDefault,
		Retry:               retry.DefaultPolicy(),
	}
}

// Validate reports a Config that cannot work.
func (c Config) Validate() error {
	var errs []error
	if c.MaxBytes < 0 {
		errs = append(errs, errors.New("readcache: MaxBytes must be ≥ 0 (0: off)"))
	}
	if c.MaxBytes > 0 {
		if c.MaxEntries <= 0 {
			errs = append(errs, errors.New("readcache: MaxEntries must be > 0"))
		}
		if c.MaxTenants <= 0 {
			errs = append(errs, errors.New("readcache: MaxTenants must be > 0"))
		}
		if c.MaxEntryBytes <= 0 {
			errs = append(errs, errors.New("readcache: MaxEntryBytes must be > 0"))
		}
		if c.DefaultMaxStaleness <= 0 {
			errs = append(errs, errors.New("readcache: DefaultMaxStaleness must be > 0"))
		}
		if err := c.Retry.Validate(); err != nil {
			errs = append(errs, fmt.Errorf("readcache: Retry: %w", err))
		}
	}
	return errors.Join(errs...)
}

// Cursor is a position in a tenant's change log (a ChangeCursor): the
// tseq of a change and its command time; for a read's cursor, also when
// its answer expires (the item's expire_time; zero: never).
type Cursor struct {
	Tseq         uint64
	TimeUnixNano int64
	Expires      time.Time
}

// Cache is a bounded cache of a worker's or router's recent reads, kept
// coherent by one change follower per tenant. Safe for concurrent use; a
// nil *Cache is an off cache.
type Cache struct {
	cfg   Config
	watch Watch
	log   *slog.Logger
	now   func() time.Time
	m     *metrics

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu      sync.Mutex
	lru     *list.List // of *entry, most recent first
	entries map[Key]*list.Element
	tenants map[string]*tenant
	bytes   int64
	closed  bool
}

// Key names one cached answer (ReadKey, ContextKey, MemoryKey). kind 'r':
// a context's read or metadata (id the context, sub the read's
// parameters); kind 'm': a memory value (id the owner: the principal, ""
// for the tenant's shared memory; sub the key).
type Key struct {
	tenant string
	kind   byte
	id     string
	sub    string
}

type entry struct {
	key     Key
	value   proto.Message
	size    int64
	tseq    uint64    // the answer reflects every change up to here
	expires time.Time // zero: never; from then on the cell reads the item as absent
}

// tenant is one followed tenant.
type tenant struct {
	name string
	// cursor: every change up to it has been applied to this tenant's
	// entries (the follower's position). Entries are only ever filled
	// with answers at or after it.
	cursor Cursor
	// fresh: when the cursor was last known to be the tenant's current
	// position (a message of the stream, or a fill at the cursor). Zero
	// while the stream is down.
	fresh    time.Time
	lastUse  time.Time
	entries  map[*entry]struct{}
	byCtx    map[string]map[*entry]struct{}
	stop     context.CancelFunc
	restarts int
}

// New returns a Cache (nil when cfg.MaxBytes is 0: off). watch opens the
// followers' streams. Close stops the followers.
func New(cfg Config, watch Watch) (*Cache, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.MaxBytes == 0 {
		return nil, nil
	}
	if watch == nil {
		return nil, errors.New("readcache: nil Watch")
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Cache{
		cfg: cfg, watch: watch, log: log, now: time.Now, m: newMetrics(),
		ctx: ctx, cancel: cancel,
		lru: list.New(), entries: make(map[Key]*list.Element), tenants: make(map[string]*tenant),
	}, nil
}

// Close stops every follower and waits for them; the cache then holds
// nothing.
func (c *Cache) Close() {
	if c == nil {
		return
	}
	c.mu.Lock()
	c.closed = true
	for _, t := range c.tenants {
		c.forgetLocked(t)
	}
	c.mu.Unlock()
	c.cancel()
	c.wg.Wait()
}

// Staleness is the bound of a STALE read: its max_staleness, or the
// default. ok is false for reads that must not be served from the cache
// (LINEARIZABLE, LEADER and unspecified consistency).
func (c *Cache) Staleness(o *contextv1.ReadOptions) (time.Duration, bool) {
	if c == nil || o.GetConsistency() != contextv1.Consistency_CONSISTENCY_STALE {
		return 0, false
	}
	ms := o.GetMaxStaleness()
	if ms == nil {
		return c.cfg.DefaultMaxStaleness, true
	}
	if ms.CheckValid() != nil || ms.AsDuration() < 0 {
		return 0, false // the cell refuses it (INVALID_ARGUMENT): so must the cache
	}
	if d := ms.AsDuration(); d > 0 {
		return d, true
	}
	return c.cfg.DefaultMaxStaleness, true
}

// ReadKey is the cache key of a context read: the tenant, the context and
// every parameter that shapes the answer (not the read options).
func ReadKey(tenant string, r *contextv1.ReadRequest) Key {
	var start string
	switch s := r.GetStart().(type) {
	case *contextv1.ReadRequest_Tail:
		start = "t" + strconv.FormatUint(uint64(s.Tail), 10)
	case *contextv1.ReadRequest_FromSeq:
		start = "f" + strconv.FormatUint(s.FromSeq, 10)
	default:
		start = "f0"
	}
	sub := fmt.Sprintf("%s/%d/%d/%d/%t/%t", start, r.GetMaxEntries(), r.GetMaxBytes(), r.GetMaxTokens(), r.GetRaw(), r.GetNewest())
	return Key{tenant: tenant, kind: 'r', id: r.GetContextId(), sub: sub}
}

// ContextKey is the cache key of a context's metadata (GetContext): the
// tenant and the context. Every change of the context drops it, like its
// reads.
func ContextKey(tenant, id string) Key {
	return Key{tenant: tenant, kind: 'r', id: id, sub: "meta"}
}

// MemoryKey is the cache key of a memory value: the tenant, the memory's
// owner (the calling principal for principal-scoped memory, "" for the
// tenant's shared memory: the cell's own rule) and the key. principal is
// the authenticated principal of the call, never a client's claim.
func MemoryKey(tenant, principal string, scope contextv1.MemoryScope, k string) Key {
	return Key{tenant: tenant, kind: 'm', id: memoryOwner(scope, principal), sub: k}
}

// memoryOwner is store.MemoryPrincipal (the cell's rule; internal/ cannot
// import the store): tenant scope is the shared memory, anything else the
// principal's own ("" without a principal: the shared memory too).
func memoryOwner(scope contextv1.MemoryScope, principal string) string {
	if scope == contextv1.MemoryScope_MEMORY_SCOPE_TENANT {
		return ""
	}
	return principal
}

// Get returns the cached answer for k when its tenant's follower is
// connected and was current within maxStaleness. The answer is shared:
// the caller must not modify it.
func (c *Cache) Get(k Key, maxStaleness time.Duration) (proto.Message, bool) {
	if c == nil {
		return nil, false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.entries[k]
	t := c.tenants[k.tenant]
	now := c.now()
	if !ok || t == nil || t.fresh.IsZero() || now.Sub(t.fresh) > maxStaleness {
		c.m.misses.Inc()
		return nil, false
	}
	e := el.Value.(*entry)
	if !e.expires.IsZero() && !now.Before(e.expires) {
		// Expired items read as absent before the sweep that names them.
		c.removeLocked(el)
		c.gaugesLocked()
		c.m.misses.Inc()
		return nil, false
	}
	c.lru.MoveToFront(el)
	t.lastUse = now
	c.m.hits.Inc()
	return e.value, true
}

// Fill caches answer (at cursor at: the read's x-cellplane-tseq) under k.
// An answer older than the tenant's follower is not cached: the changes
// between it and the follower were seen and may have changed it. The
// first fill of a tenant starts its follower at the answer's cursor.
// Fill keeps answer: the caller must not modify it afterwards.
func (c *Cache) Fill(k Key, answer proto.Message, at Cursor) {
	if c == nil {
		return
	}
	size := int64(proto.Size(answer) + len(k.tenant) + len(k.id) + len(k.sub) + entryOverhead)
	if size > c.cfg.MaxEntryBytes || size > c.cfg.MaxBytes {
		c.m.rejected.WithLabelValues("too_large").Inc()
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return
	}
	now := c.now()
	t := c.tenants[k.tenant]
	if t == nil {
		t = c.followLocked(k.tenant, at, now)
	}
	switch {
	case at.Tseq < t.cursor.Tseq:
		c.m.rejected.WithLabelValues("behind_follower").Inc()
		return
	case at.Tseq == t.cursor.Tseq && !t.fresh.IsZero():
		// The cell's answer confirms the follower is at the tenant's
		// current position.
		t.fresh = now
	}
	t.lastUse = now
	if el, ok := c.entries[k]; ok {
		if el.Value.(*entry).tseq > at.Tseq {
			return // a newer answer is already cached
		}
		c.removeLocked(el)
	}
	if !at.Expires.IsZero() && !now.Before(at.Expires) {
		return
	}
	e := &entry{key: k, value: answer, size: size, tseq: at.Tseq, expires: at.Expires}
	c.entries[k] = c.lru.PushFront(e)
	t.entries[e] = struct{}{}
	if k.kind == 'r' {
		set := t.byCtx[k.id]
		if set == nil {
			set = make(map[*entry]struct{})
			t.byCtx[k.id] = set
		}
		set[e] = struct{}{}
	}
	c.bytes += size
	for c.bytes > c.cfg.MaxBytes || c.lru.Len() > c.cfg.MaxEntries {
		c.evictLocked()
	}
	c.gaugesLocked()
}

// entryOverhead approximates an entry's bookkeeping (list element, map
// slots, pointers) so that a budget of tiny answers still bounds memory.
const entryOverhead = 160

// evictLocked drops the least recently used entry; a tenant left with no
// entries by eviction is no longer followed.
func (c *Cache) evictLocked() {
	el := c.lru.Back()
	if el == nil {
		return
	}
	e := el.Value.(*entry)
	c.removeLocked(el)
	c.m.evictions.Inc()
	if t := c.tenants[e.key.tenant]; t != nil && len(t.entries) == 0 {
		c.forgetLocked(t)
	}
}

func (c *Cache) removeLocked(el *list.Element) {
	e := el.Value.(*entry)
	c.lru.Remove(el)
	delete(c.entries, e.key)
	c.bytes -= e.size
	if t := c.tenants[e.key.tenant]; t != nil {
		delete(t.entries, e)
		if set := t.byCtx[e.key.id]; set != nil && e.key.kind == 'r' {
			delete(set, e)
			if len(set) == 0 {
				delete(t.byCtx, e.key.id)
			}
		}
	}
}

// followLocked starts following a tenant at cursor at, evicting the least
// recently used tenant when MaxTenants are followed.
func (c *Cache) followLocked(name string, at Cursor, now time.Time) *tenant {
	if len(c.tenants) >= c.cfg.MaxTenants {
		var lru *tenant
		for _, t := range c.tenants {
			if lru == nil || t.lastUse.Before(lru.lastUse) {
				lru = t
			}
		}
		c.m.tenantEvictions.Inc()
		c.forgetLocked(lru)
	}
	ctx, stop := context.WithCancel(c.ctx)
	t := &tenant{name: name, cursor: at, fresh: now, lastUse: now, stop: stop,
		entries: make(map[*entry]struct{}), byCtx: make(map[string]map[*entry]struct{})}
	c.tenants[name] = t
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		c.follow(ctx, t)
	}()
	return t
}

// forgetLocked drops a tenant's entries and stops its follower.
func (c *Cache) forgetLocked(t *tenant) {
	for e := range t.entries {
		if el, ok := c.entries[e.key]; ok {
			c.removeLocked(el)
		}
	}
	t.stop()
	delete(c.tenants, t.name)
	c.gaugesLocked()
}

func (c *Cache) gaugesLocked() {
	c.m.bytes.Set(float64(c.bytes))
	c.m.entries.Set(float64(c.lru.Len()))
	c.m.tenants.Set(float64(len(c.tenants)))
}

// Stats is a snapshot of the cache's size, for tests and the benchmark.
type Stats struct {
	Bytes    int64
	Entries  int
	Tenants  int
	Hits     uint64
	Misses   uint64
	Restarts uint64
}

// Stats returns the cache's current size and counters.
func (c *Cache) Stats() Stats {
	if c == nil {
		return Stats{}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return Stats{Bytes: c.bytes, Entries: c.lru.Len(), Tenants: len(c.tenants),
		Hits: counterValue(c.m.hits), Misses: counterValue(c.m.misses), Restarts: counterValue(c.m.restarts)}
}

// Collectors returns the cache's metrics.
func (c *Cache) Collectors() []prometheus.Collector {
	if c == nil {
		return nil
	}
	return c.m.collectors()
}

// isFatal reports a stream end after which the tenant's entries cannot be
// kept coherent: its history is gone (CURSOR_EXPIRED), or the tenant is
// no longer where the follower reads (WRONG_CELL, TENANT_NOT_FOUND,
// STALE_EPOCH), or the stream is refused for good.
func isFatal(err error) bool {
	var ce *cperr.Error
	if !errors.As(err, &ce) {
		return false
	}
	switch ce.Reason {
	case cperr.CursorExpired, cperr.WrongCell, cperr.TenantNotFound, cperr.StaleEpoch:
		return true
	}
	return retry.ClassOf(err) == retry.RetryNo
}

// Cursor returns the change-log position up to which a tenant's entries
// are coherent (its follower's cursor); ok is false when the tenant is not
// followed.
func (c *Cache) Cursor(tenant string) (Cursor, bool) {
	if c == nil {
		return Cursor{}, false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	t := c.tenants[tenant]
	if t == nil {
		return Cursor{}, false
	}
	return t.cursor, true
}
