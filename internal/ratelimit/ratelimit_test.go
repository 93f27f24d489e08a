package ratelimit

import (
	"errors"
	"fmt"
	"math"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cellplane/cellplane/internal/cperr"
	"github.com/prometheus/client_golang/prometheus"
)

// clock is a fake time source.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func newTest(cfg Config) (*Limiter, *clock) {
	c := &clock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	l := New(cfg)
	l.now = c.now
	return l, c
}

// drain calls Allow until it refuses and returns how many calls passed.
func drain(t *testing.T, l *Limiter, tenant string, rps float64, burst uint32) int {
	t.Helper()
	for n := 0; n < 1_000_000; n++ {
		if ok, _ := l.Allow(tenant, rps, burst); !ok {
			return n
		}
	}
	t.Fatal("never refused")
	return 0
}

func TestBurstThenRefusal(t *testing.T) {
	tests := []struct {
		name      string
		cfg       Config
		rps       float64
		burst     uint32
		wantN     int
		wantRetry time.Duration
	}{
		{name: "explicit limits", cfg: DefaultConfig(), rps: 10, burst: 5, wantN: 5, wantRetry: 100 * time.Millisecond},
		{name: "defaults", cfg: Config{DefaultRate: 4, DefaultBurst: 3, MaxTenants: 10, IdleTTL: time.Minute}, wantN: 3, wantRetry: 250 * time.Millisecond},
		{name: "slow rate", cfg: DefaultConfig(), rps: 0.5, burst: 1, wantN: 1, wantRetry: 2 * time.Second},
		{name: "rounded up to the millisecond", cfg: DefaultConfig(), rps: 3, burst: 2, wantN: 2, wantRetry: 334 * time.Millisecond},
		{name: "absurdly slow rate is capped", cfg: DefaultConfig(), rps: 1e-12, burst: 1, wantN: 1, wantRetry: maxRetryAfter},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			l, c := newTest(tc.cfg)
			if n := drain(t, l, "t1", tc.rps, tc.burst); n != tc.wantN {
				t.Fatalf("%d requests passed, want %d", n, tc.wantN)
			}
			ok, retry := l.Allow("t1", tc.rps, tc.burst)
			if ok || retry != tc.wantRetry {
				t.Fatalf("Allow = %v, %v; want false, %v", ok, retry, tc.wantRetry)
			}
			if retry >= maxRetryAfter {
				return
			}
			c.advance(retry)
			if ok, _ := l.Allow("t1", tc.rps, tc.burst); !ok {
				t.Fatal("refused after waiting retryAfter")
			}
			if ok, _ := l.Allow("t1", tc.rps, tc.burst); ok {
				t.Fatal("more than one token after waiting retryAfter")
			}
		})
	}
}

func TestLimitChange(t *testing.T) {
	tests := []struct {
		name    string
		before  [2]float64 // rps, burst
		drain   bool       // empty the bucket before the change
		after   [2]float64
		advance time.Duration // between the change and counting
		want    int           // requests passed from the change on
	}{
		// A lower burst caps the tokens already in the bucket.
		{name: "burst lowered", before: [2]float64{1, 100}, after: [2]float64{1, 3}, want: 3},
		// A higher burst lets the bucket fill further.
		{name: "burst raised", before: [2]float64{10, 2}, drain: true, after: [2]float64{10, 50}, advance: 10 * time.Second, want: 50},
		// A higher rate refills faster from the change on.
		{name: "rate raised", before: [2]float64{1, 100}, drain: true, after: [2]float64{1000, 100}, advance: 10 * time.Millisecond, want: 10},
		// A lower rate refills slower from the change on.
		{name: "rate lowered", before: [2]float64{1000, 100}, drain: true, after: [2]float64{1, 100}, advance: 2 * time.Second, want: 2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			l, c := newTest(DefaultConfig())
			b0, b1 := uint32(tc.before[1]), uint32(tc.after[1])
			if tc.drain {
				drain(t, l, "t1", tc.before[0], b0)
			} else if ok, _ := l.Allow("t1", tc.before[0], b0); !ok {
				t.Fatal("first request refused")
			}
			n := 0
			if ok, _ := l.Allow("t1", tc.after[0], b1); ok { // the change
				n++
			}
			c.advance(tc.advance)
			if n += drain(t, l, "t1", tc.after[0], b1); n != tc.want {
				t.Fatalf("%d requests passed after the change, want %d", n, tc.want)
			}
		})
	}
}

func TestTenantsAreIndependent(t *testing.T) {
	l, _ := newTest(DefaultConfig())
	if n := drain(t, l, "flood", 10, 20); n != 20 {
		t.Fatalf("flood got %d", n)
	}
	for range 1000 {
		l.Allow("flood", 10, 20)
	}
	if n := drain(t, l, "quiet", 10, 20); n != 20 {
		t.Fatalf("quiet tenant got %d of its 20 tokens while another flooded", n)
	}
}

func TestConcurrent(t *testing.T) {
	l, _ := newTest(Config{DefaultRate: 1, DefaultBurst: 100, MaxTenants: 1000, IdleTTL: time.Minute})
	const tenants, workers, calls = 8, 8, 200
	var allowed [tenants]atomic.Int64
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range calls {
				tn := (w + i) % tenants
				if ok, _ := l.Allow(fmt.Sprintf("t%d", tn), 0, 0); ok {
					allowed[tn].Add(1)
				}
			}
		}()
	}
	wg.Wait()
	// The clock stands still: each tenant gets exactly its burst.
	for i := range allowed {
		if got := allowed[i].Load(); got != 100 {
			t.Errorf("tenant t%d: %d allowed, want 100", i, got)
		}
	}
	if l.Len() != tenants {
		t.Fatalf("Len = %d, want %d", l.Len(), tenants)
	}
}

func TestConcurrentRealClock(t *testing.T) {
	l := New(DefaultConfig())
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 2000 {
				l.Allow(fmt.Sprintf("t%d", (w*7+i)%50), float64(1+i%3), uint32(1+i%5))
			}
		}()
	}
	wg.Wait()
	if l.Len() != 50 {
		t.Fatalf("Len = %d, want 50", l.Len())
	}
}

func TestEvictionBound(t *testing.T) {
	tests := []struct {
		name    string
		max     int
		tenants int
		idle    bool // the clock passes IdleTTL between inserts
	}{
		{name: "many more tenants than the bound", max: 640, tenants: 20_000},
		{name: "bound smaller than the shard count", max: 10, tenants: 5_000},
		{name: "idle buckets swept", max: 1_000_000, tenants: 5_000, idle: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			l, c := newTest(Config{DefaultRate: 1, DefaultBurst: 1, MaxTenants: tc.max, IdleTTL: time.Minute})
			for i := range tc.tenants {
				l.Allow(fmt.Sprintf("tenant-%d", i), 0, 0)
				if tc.idle && i%1000 == 999 {
					c.advance(2 * time.Minute)
				}
			}
			limit := l.shardCap * numShards
			if tc.idle {
				limit = 2000 // at most two sweep periods of tenants survive
			}
			n := 0
			for i := range l.shards {
				n += len(l.shards[i].m)
			}
			if n != l.Len() {
				t.Fatalf("Len = %d, map holds %d", l.Len(), n)
			}
			if n > limit {
				t.Fatalf("%d buckets tracked, want <= %d", n, limit)
			}
			if got := gather(t, l)["cellplane_router_rate_limit_buckets"]; int(got) != n {
				t.Fatalf("buckets gauge = %v, want %d", got, n)
			}
		})
	}
}

func TestErrAndMetrics(t *testing.T) {
	// Room for both tenants in any one shard (the cap is per shard: with
	// MaxTenants 10 it is 1, and t1 and t2 shared a shard 1 time in 64).
	l, _ := newTest(Config{DefaultRate: 1, DefaultBurst: 2, MaxTenants: 1000, IdleTTL: time.Minute})
	drain(t, l, "t1", 0, 0)
	ok, retry := l.Allow("t1", 0, 0)
	if ok {
		t.Fatal("allowed")
	}
	err := l.Err("t1", retry)
	if !errors.Is(err, cperr.ErrRateLimited) {
		t.Fatalf("err = %v, want RATE_LIMITED", err)
	}
	var ce *cperr.Error
	if !errors.As(err, &ce) || ce.RetryAfter != time.Second || ce.Metadata[cperr.MetaTenant] != "t1" {
		t.Fatalf("err = %+v", ce)
	}
	l.Allow("t2", 0, 0)
	got := gather(t, l)
	want := map[string]float64{"cellplane_router_rate_limited_total": 2, "cellplane_router_bytes_rate_limited_total": 0, "cellplane_router_rate_limit_buckets": 2}
	if len(got) != len(want) {
		t.Fatalf("metrics = %v, want %v", got, want)
	}
	for name, v := range want {
		if got[name] != v {
			t.Fatalf("%s = %v, want %v", name, got[name], v)
		}
	}
}

// gather returns the value of each of l's metrics, by name.
func gather(t *testing.T, l *Limiter) map[string]float64 {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(l.Collectors()...)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := make(map[string]float64)
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			if len(m.GetLabel()) != 0 {
				t.Fatalf("%s has labels %v", mf.GetName(), m.GetLabel())
			}
			out[mf.GetName()] += m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
	}
	return out
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name    string
		mod     func(*Config)
		wantErr bool
	}{
		{"default", func(*Config) {}, false},
		{"zero rate", func(c *Config) { c.DefaultRate = 0 }, true},
		{"NaN rate", func(c *Config) { c.DefaultRate = math.NaN() }, true},
		{"infinite rate", func(c *Config) { c.DefaultRate = math.Inf(1) }, true},
		{"zero burst", func(c *Config) { c.DefaultBurst = 0 }, true},
		{"zero max tenants", func(c *Config) { c.MaxTenants = 0 }, true},
		{"zero idle TTL", func(c *Config) { c.IdleTTL = 0 }, true},
		{"byte rate off", func(c *Config) { c.BytesRate, c.BytesBurst = 0, 0 }, false},
		{"negative byte rate", func(c *Config) { c.BytesRate = -1 }, true},
		{"NaN byte rate", func(c *Config) { c.BytesRate = math.NaN() }, true},
		{"byte rate without burst", func(c *Config) { c.BytesBurst = 0 }, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := DefaultConfig()
			tc.mod(&c)
			if err := c.Validate(); (err != nil) != tc.wantErr {
				t.Fatalf("Validate = %v, wantErr %v", err, tc.wantErr)
			}
		})
	}
	// New replaces invalid fields by the defaults (a zero byte rate is
	// valid: off).
	want := DefaultConfig()
	want.BytesRate, want.BytesBurst, want.Subsystem = 0, 0, "router"
	if l := New(Config{}); l.cfg != want {
		t.Fatalf("New(Config{}) config = %+v", l.cfg)
	}
}

func BenchmarkAllow(b *testing.B) {
	l := New(DefaultConfig())
	tenants := make([]string, 1024)
	for i := range tenants {
		tenants[i] = fmt.Sprintf("tenant-%04d", i)
		l.Allow(tenants[i], 1e9, 1<<30)
	}
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			l.Allow(tenants[i&1023], 1e9, 1<<30)
			i++
		}
	})
}

func TestAllowDoesNotAllocate(t *testing.T) {
	l := New(DefaultConfig())
	l.Allow("t1", 5, 10)
	allocs := testing.AllocsPerRun(1000, func() { l.Allow("t1", 5, 10) })
	if allocs != 0 {
		t.Fatalf("Allow allocates %v times per call for an existing tenant", allocs)
	}
}

// TestAllowBytes (H4): the byte bucket weighs requests by size: a tenant
// sending large requests runs out while another tenant's pass; a request
// above the burst needs a full bucket; a refusal takes nothing and says
// when enough bytes have accrued.
func TestAllowBytes(t *testing.T) {
	cfg := DefaultConfig()
	cfg.BytesRate, cfg.BytesBurst = 1000, 4000
	l, c := newTest(cfg)
	for i := range 4 {
		if ok, _ := l.AllowBytes("flood", 1000, 0, 0); !ok {
			t.Fatalf("request %d of 1000 bytes refused within the 4000-byte burst", i)
		}
	}
	ok, retry := l.AllowBytes("flood", 1000, 0, 0)
	if ok || retry != time.Second {
		t.Fatalf("AllowBytes past the burst = %v, %v; want false, 1s", ok, retry)
	}
	if ok, _ := l.AllowBytes("quiet", 1000, 0, 0); !ok {
		t.Fatal("another tenant was refused")
	}
	if ok, _ := l.Allow("flood", 0, 0); !ok {
		t.Fatal("the request bucket was charged by the byte bucket")
	}
	c.advance(500 * time.Millisecond)
	if ok, retry := l.AllowBytes("flood", 1000, 0, 0); ok || retry != 500*time.Millisecond {
		t.Fatalf("after 500ms: %v, %v; want false, 500ms (a refusal takes nothing)", ok, retry)
	}
	c.advance(500 * time.Millisecond)
	if ok, _ := l.AllowBytes("flood", 1000, 0, 0); !ok {
		t.Fatal("refused after waiting retryAfter")
	}
	// Larger than the burst: charged the burst.
	c.advance(10 * time.Second)
	if ok, _ := l.AllowBytes("flood", 1<<20, 0, 0); !ok {
		t.Fatal("a request above the burst was refused with a full bucket")
	}
	if ok, _ := l.AllowBytes("flood", 1, 0, 0); ok {
		t.Fatal("a request above the burst did not empty the bucket")
	}
	// Off.
	cfg.BytesRate = 0
	l, _ = newTest(cfg)
	for range 100 {
		if ok, _ := l.AllowBytes("flood", 1<<30, 0, 0); !ok {
			t.Fatal("refused with BytesRate 0")
		}
	}
	err := l.BytesErr("flood", 5000, 0, 0, time.Second)
	var ce *cperr.Error
	if !errors.As(err, &ce) || ce.Reason != cperr.RateLimited || ce.Metadata[cperr.MetaQuota] != "bytes_per_second" || ce.Metadata[cperr.MetaTenant] != "flood" || ce.RetryAfter != time.Second {
		t.Fatalf("BytesErr = %#v", err)
	}
}

// TestAllowBytesTenantLimits (H4): a tenant's own byte rate and burst
// (its placement record's TenantLimits) override the defaults, also where
// the default is off, and a change of them updates the bucket in place.
func TestAllowBytesTenantLimits(t *testing.T) {
	cfg := DefaultConfig()
	cfg.BytesRate, cfg.BytesBurst = 1000, 4000
	l, c := newTest(cfg)
	// Its own limits: 100 B/s, burst 200.
	if ok, _ := l.AllowBytes("small", 200, 100, 200); !ok {
		t.Fatal("first request within the tenant's burst refused")
	}
	ok, retry := l.AllowBytes("small", 200, 100, 200)
	if ok || retry != 2*time.Second {
		t.Fatalf("past the tenant's burst = %v, %v; want false, 2s at 100 B/s", ok, retry)
	}
	if ok, _ := l.AllowBytes("other", 1000, 0, 0); !ok {
		t.Fatal("a tenant on the defaults was refused")
	}
	// Raised: the bucket changes in place (tokens earned are kept) and
	// refills at the new rate up to the new burst.
	if ok, _ := l.AllowBytes("small", 1000, 1000, 3000); ok {
		t.Fatal("1000 bytes passed with 0 tokens earned")
	}
	c.advance(3 * time.Second)
	for i := range 3 {
		if ok, _ := l.AllowBytes("small", 1000, 1000, 3000); !ok {
			t.Fatalf("request %d refused after raising the tenant's limits", i)
		}
	}
	err := l.BytesErr("small", 5000, 100, 200, time.Second)
	if !strings.Contains(err.Error(), "100 bytes/s (burst 200)") {
		t.Fatalf("BytesErr = %v, want the tenant's own limits", err)
	}
	// The default off: only a tenant with its own rate is limited.
	cfg.BytesRate = 0
	l, _ = newTest(cfg)
	if ok, _ := l.AllowBytes("free", 1<<30, 0, 0); !ok {
		t.Fatal("refused with BytesRate 0 and no tenant rate")
	}
	if ok, _ := l.AllowBytes("capped", 10, 1, 10); !ok {
		t.Fatal("the first request of a capped tenant refused")
	}
	if ok, _ := l.AllowBytes("capped", 10, 1, 10); ok {
		t.Fatal("a tenant's own rate was not applied with the default off")
	}
}
