package ratelimit

import (
	"errors"
	"fmt"
	"hash/maphash"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cellplane/cellplane/internal/cperr"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"
)

// numShards is the number of independently locked parts of the bucket map.
const numShards = 64

// Config configures a Limiter.
type Config struct {
	// DefaultRate is the refill rate, in requests per second, of a tenant
	// whose placement record sets none.
	DefaultRate float64
	// DefaultBurst is the bucket size of a tenant whose record sets none.
	DefaultBurst int
	// MaxTenants bounds the number of buckets kept. Past it, buckets are
	// evicted (idle ones first); an evicted tenant starts again with a
	// full bucket.
	MaxTenants int
	// IdleTTL is how long a bucket may go unused before it is evicted.
	IdleTTL time.Duration
	// BytesRate is the refill rate, in request bytes per second, of each
	// tenant's byte bucket (H4: a tenant sending few large requests is
	// weighed by what it sends, not only by how often). 0 disables it.
	BytesRate float64
	// BytesBurst is the byte bucket's size. A request larger than it is
	// charged BytesBurst (it needs a full bucket), so it must be at least
	// the largest request the server accepts to let such requests pass at
	// the configured rate. A tenant's own limits (AllowBytes' bytesRate,
	// bytesBurst: its placement record's TenantLimits) override both.
	BytesBurst int
	// Subsystem names the component in the metrics' names:
	// cellplane_<Subsystem>_rate_limited_total and so on. Empty: "router".
	Subsystem string
}

// DefaultConfig returns 1000 requests/s with a burst of 2000 and 32 MiB/s
// of request bytes with a burst of 64 MiB per tenant, at most 1,000,000
// buckets, evicted after 10 minutes unused.
func DefaultConfig() Config {
	return Config{
		DefaultRate:  1000,
		DefaultBurst: 2000,
		MaxTenants:   1_000_000,
		IdleTTL:      10 * time.Minute,
		BytesRate:    32 << 20,
		BytesBurst:   64 << 20,
	}
}

// Validate reports every problem with c.
func (c Config) Validate() error {
	var errs []error
	if !(c.DefaultRate > 0) || math.IsInf(c.DefaultRate, 0) {
		errs = append(errs, fmt.Errorf("ratelimit: Config.DefaultRate must be a finite number > 0, got %v", c.DefaultRate))
	}
	if c.DefaultBurst < 1 {
		errs = append(errs, fmt.Errorf("ratelimit: Config.DefaultBurst must be >= 1, got %d", c.DefaultBurst))
	}
	if c.MaxTenants < 1 {
		errs = append(errs, fmt.Errorf("ratelimit: Config.MaxTenants must be >= 1, got %d", c.MaxTenants))
	}
	if c.IdleTTL <= 0 {
		errs = append(errs, fmt.Errorf("ratelimit: Config.IdleTTL must be > 0, got %v", c.IdleTTL))
	}
	if c.BytesRate < 0 || math.IsNaN(c.BytesRate) || math.IsInf(c.BytesRate, 0) {
		errs = append(errs, fmt.Errorf("ratelimit: Config.BytesRate must be a finite number >= 0, got %v", c.BytesRate))
	}
	if c.BytesRate > 0 && c.BytesBurst < 1 {
		errs = append(errs, fmt.Errorf("ratelimit: Config.BytesBurst must be >= 1 with a BytesRate, got %d", c.BytesBurst))
	}
	for _, r := range c.Subsystem {
		if (r < 'a' || r > 'z') && r != '_' {
			errs = append(errs, fmt.Errorf("ratelimit: Config.Subsystem %q must be of [a-z_] (a metric name's part)", c.Subsystem))
			break
		}
	}
	return errors.Join(errs...)
}

// Limiter holds one token bucket per tenant. It is safe for concurrent use.
type Limiter struct {
	cfg      Config
	seed     maphash.Seed
	shardCap int // buckets per shard before eviction
	shards   [numShards]shard
	now      func() time.Time

	buckets      atomic.Int64
	limited      prometheus.Counter
	bytesLimited prometheus.Counter
	gauge        prometheus.GaugeFunc
}

type shard struct {
	mu        sync.Mutex
	m         map[string]*bucket
	nextSweep time.Time // the next time an insert sweeps idle buckets
	_         [24]byte  // 64 bytes: shards on separate cache lines
}

type bucket struct {
	lim      *rate.Limiter
	rate     float64
	burst    int
	lastUsed time.Time
	// bytes is the byte bucket (nil until the tenant's first AllowBytes),
	// with its rate and burst.
	bytes      *rate.Limiter
	bytesRate  float64
	bytesBurst int
}

// New returns a Limiter. cfg should have passed Validate; fields that did
// not are replaced by their defaults.
func New(cfg Config) *Limiter {
	def := DefaultConfig()
	if !(cfg.DefaultRate > 0) || math.IsInf(cfg.DefaultRate, 0) {
		cfg.DefaultRate = def.DefaultRate
	}
	if cfg.DefaultBurst < 1 {
		cfg.DefaultBurst = def.DefaultBurst
	}
	if cfg.MaxTenants < 1 {
		cfg.MaxTenants = def.MaxTenants
	}
	if cfg.IdleTTL <= 0 {
		cfg.IdleTTL = def.IdleTTL
	}
	if cfg.BytesRate < 0 || math.IsNaN(cfg.BytesRate) || math.IsInf(cfg.BytesRate, 0) {
		cfg.BytesRate = def.BytesRate
	}
	if cfg.BytesRate > 0 && cfg.BytesBurst < 1 {
		cfg.BytesBurst = def.BytesBurst
	}
	if cfg.Subsystem == "" {
		cfg.Subsystem = "router"
	}
	l := &Limiter{
		cfg:      cfg,
		seed:     maphash.MakeSeed(),
		shardCap: (cfg.MaxTenants + numShards - 1) / numShards,
		now:      time.Now,
	}
	for i := range l.shards {
		l.shards[i].m = make(map[string]*bucket)
	}
	l.limited = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "cellplane_" + cfg.Subsystem + "_rate_limited_total",
		Help: "Requests refused by the per-tenant request-rate limits (all tenants).",
	})
	l.bytesLimited = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "cellplane_" + cfg.Subsystem + "_bytes_rate_limited_total",
		Help: "Requests refused by the per-tenant byte-rate limits (all tenants).",
	})
	l.gauge = prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "cellplane_" + cfg.Subsystem + "_rate_limit_buckets",
		Help: "Tenant token buckets currently tracked.",
	}, func() float64 { return float64(l.buckets.Load()) })
	return l
}

// Allow takes one token from tenant's bucket. rps (tokens per second) and
// burst are the tenant's limits from its placement record; 0 (or a
// negative, NaN or infinite rate) means the configured default. When they
// differ from the bucket's, the bucket is updated in place: tokens already
// earned are kept, up to the new burst.
//
// When the bucket is empty, ok is false and retryAfter is how long until a
// token is available (at least 1ms). Allow does not allocate for a tenant
// that already has a bucket.
func (l *Limiter) Allow(tenant string, rps float64, burst uint32) (ok bool, retryAfter time.Duration) {
	if !(rps > 0) || math.IsInf(rps, 0) {
		rps = l.cfg.DefaultRate
	}
	b := int(burst)
	if b == 0 {
		b = l.cfg.DefaultBurst
	}
	now := l.now()
	s := &l.shards[maphash.String(l.seed, tenant)%numShards]
	s.mu.Lock()
	bk := s.m[tenant]
	if bk == nil {
		bk = l.insert(s, tenant, rps, b, now)
	} else if bk.rate != rps || bk.burst != b {
		bk.lim.SetLimitAt(now, rate.Limit(rps))
		bk.lim.SetBurstAt(now, b)
		bk.rate, bk.burst = rps, b
	}
	bk.lastUsed = now
	if bk.lim.AllowN(now, 1) {
		s.mu.Unlock()
		return true, 0
	}
	tokens := bk.lim.TokensAt(now)
	s.mu.Unlock()
	l.limited.Inc()
	return false, waitFor(tokens, rps)
}

// BytesLimits returns the byte rate and burst that apply to a tenant
// whose own limits are bytesRate and bytesBurst (0, or a negative, NaN or
// infinite rate: Config.BytesRate, BytesBurst). A rate of 0 means no byte
// limit.
func (l *Limiter) BytesLimits(bytesRate float64, bytesBurst uint32) (float64, int) {
	if !(bytesRate > 0) || math.IsInf(bytesRate, 0) {
		bytesRate = l.cfg.BytesRate
	}
	b := int(bytesBurst)
	if b == 0 {
		b = l.cfg.BytesBurst
	}
	if bytesRate > 0 && b < 1 {
		b = DefaultConfig().BytesBurst
	}
	return bytesRate, b
}

// AllowBytes takes n tokens (the request's size in bytes) from tenant's
// byte bucket. bytesRate and bytesBurst are the tenant's own limits from
// its placement record; 0 means the configured default (Config.BytesRate,
// BytesBurst), and a tenant with no rate of its own where BytesRate is 0
// is not limited (always true). A request larger than the burst is
// charged the whole burst. When the bucket holds too few, ok is false,
// nothing is taken, and retryAfter is how long until it holds enough (at
// least 1ms). When the limits differ from the bucket's, it is updated in
// place.
func (l *Limiter) AllowBytes(tenant string, n int, bytesRate float64, bytesBurst uint32) (ok bool, retryAfter time.Duration) {
	r, burst := l.BytesLimits(bytesRate, bytesBurst)
	if r <= 0 || n <= 0 {
		return true, 0
	}
	n = min(n, burst)
	now := l.now()
	s := &l.shards[maphash.String(l.seed, tenant)%numShards]
	s.mu.Lock()
	bk := s.m[tenant]
	if bk == nil {
		bk = l.insert(s, tenant, l.cfg.DefaultRate, l.cfg.DefaultBurst, now)
	}
	switch {
	case bk.bytes == nil:
		bk.bytes = rate.NewLimiter(rate.Limit(r), burst)
		bk.bytesRate, bk.bytesBurst = r, burst
	case bk.bytesRate != r || bk.bytesBurst != burst:
		bk.bytes.SetLimitAt(now, rate.Limit(r))
		bk.bytes.SetBurstAt(now, burst)
		bk.bytesRate, bk.bytesBurst = r, burst
	}
	bk.lastUsed = now
	if bk.bytes.AllowN(now, n) {
		s.mu.Unlock()
		return true, 0
	}
	tokens := bk.bytes.TokensAt(now)
	s.mu.Unlock()
	l.bytesLimited.Inc()
	return false, waitFor(tokens-float64(n)+1, r)
}

// maxRetryAfter caps the retry delay of absurdly low rates.
const maxRetryAfter = 24 * time.Hour

// waitFor is the time until tokens reach 1 at rps tokens per second,
// rounded up to the millisecond, between 1ms and maxRetryAfter.
func waitFor(tokens, rps float64) time.Duration {
	secs := (1 - tokens) / rps
	if !(secs < maxRetryAfter.Seconds()) { // also NaN
		return maxRetryAfter
	}
	ms := math.Ceil(secs * 1000)
	return max(time.Duration(ms)*time.Millisecond, time.Millisecond)
}

// insert adds a full bucket for tenant to s (locked), evicting buckets
// first when s is full: idle ones, then arbitrary ones.
func (l *Limiter) insert(s *shard, tenant string, r float64, burst int, now time.Time) *bucket {
	if len(s.m) >= l.shardCap || !now.Before(s.nextSweep) {
		l.sweep(s, now)
	}
	for k := range s.m { // map order is random: this evicts a random bucket
		if len(s.m) < l.shardCap {
			break
		}
		delete(s.m, k)
		l.buckets.Add(-1)
	}
	bk := &bucket{lim: rate.NewLimiter(rate.Limit(r), burst), rate: r, burst: burst, lastUsed: now}
	s.m[tenant] = bk
	l.buckets.Add(1)
	return bk
}

// sweep removes the buckets of s (locked) unused for IdleTTL.
func (l *Limiter) sweep(s *shard, now time.Time) {
	cutoff := now.Add(-l.cfg.IdleTTL)
	for k, bk := range s.m {
		if bk.lastUsed.Before(cutoff) {
			delete(s.m, k)
			l.buckets.Add(-1)
		}
	}
	s.nextSweep = now.Add(l.cfg.IdleTTL / 2)
}

// Len returns the number of buckets tracked.
func (l *Limiter) Len() int { return int(l.buckets.Load()) }

// Err returns the RATE_LIMITED error for a refused request of tenant, with
// its retry delay (RESOURCE_EXHAUSTED + RetryInfo in gRPC, HTTP 429 +
// Retry-After).
func (l *Limiter) Err(tenant string, retryAfter time.Duration) error {
	return cperr.New(cperr.RateLimited, "tenant request rate limit exceeded").
		With(cperr.MetaTenant, tenant).
		With(cperr.MetaQuota, "requests_per_second").
		WithRetryAfter(retryAfter)
}

// BytesErr returns the RATE_LIMITED error for a request of tenant refused
// by its byte bucket (AllowBytes): n bytes against the tenant's byte
// limits (bytesRate, bytesBurst as given to AllowBytes).
func (l *Limiter) BytesErr(tenant string, n int, bytesRate float64, bytesBurst uint32, retryAfter time.Duration) error {
	r, burst := l.BytesLimits(bytesRate, bytesBurst)
	return cperr.New(cperr.RateLimited, "tenant byte rate limit exceeded: a %d-byte request over %.0f bytes/s (burst %d)", n, r, burst).
		With(cperr.MetaTenant, tenant).
		With(cperr.MetaQuota, "bytes_per_second").
		WithRetryAfter(retryAfter)
}

// Collectors returns the limiter's metrics, for registration:
// cellplane_<Subsystem>_rate_limited_total and
// cellplane_<Subsystem>_bytes_rate_limited_total (counters over all
// tenants: a per-tenant label would be unbounded) and
// cellplane_<Subsystem>_rate_limit_buckets.
func (l *Limiter) Collectors() []prometheus.Collector {
	return []prometheus.Collector{l.limited, l.bytesLimited, l.gauge}
}
