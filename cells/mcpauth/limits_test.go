package mcpauth

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/cellplane/cellplane/controlplane/catalog"
	"github.com/cellplane/cellplane/controlplane/topo"
	"github.com/cellplane/cellplane/controlplane/topo/memtopo"
	"github.com/cellplane/cellplane/internal/cperr"
	"github.com/cellplane/cellplane/internal/testutil"
	cpv1 "github.com/cellplane/cellplane/proto/cellplane/controlplane/v1"
)

// countingStore counts registry reads; with gate set, each read waits for
// the gate to close.
type countingStore struct {
	topo.Store
	gets atomic.Int64
	gate chan struct{}
}

func (s *countingStore) Get(ctx context.Context, key string) (topo.KV, error) {
	s.gets.Add(1)
	if s.gate != nil {
		<-s.gate
	}
	return s.Store.Get(ctx, key)
}

func newCounting(t *testing.T) (*memtopo.Store, *countingStore) {
	t.Helper()
	st := memtopo.New()
	t.Cleanup(func() { st.Close() })
	return st, &countingStore{Store: st}
}

// bogusKey is a well-formed API key whose id is in no registry.
func bogusKey(t *testing.T) string {
	t.Helper()
	b := make([]byte, 8)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return "cpk_" + hex.EncodeToString(b) + "_xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
}

func check(a *Authenticator, secret string) error {
	_, err := a.Authenticate(request("X-Api-Key", secret), "acme", "")
	return err
}

// noRefill is a miss rate so low that no token comes back during a test.
const noRefill = 1e-9

// A flood of random key ids costs at most MissBurst registry reads, is
// then refused with RATE_LIMITED and a retry hint, and neither evicts nor
// slows the keys already cached.
func TestFloodOfUnknownKeys(t *testing.T) {
	st, cs := newCounting(t)
	const burst = 5
	a, err := New(Config{Registry: cs, KeyCacheTTL: time.Hour, NegativeCacheSize: 3, MissRate: noRefill, MissBurst: burst + 2})
	if err != nil {
		t.Fatal(err)
	}
	legit := []string{newKey(t, st, "acme", false), newKey(t, st, "acme", false)}
	for _, k := range legit {
		if err := check(a, k); err != nil {
			t.Fatalf("legitimate key: %v", err)
		}
	}
	cs.gets.Store(0)
	var limited int
	for range 1000 {
		err := check(a, bogusKey(t))
		var ce *cperr.Error
		switch {
		case errors.As(err, &ce) && ce.Reason == cperr.RateLimited:
			if ce.RetryAfter <= 0 {
				t.Fatalf("RATE_LIMITED without a retry hint: %v", err)
			}
			limited++
		case cperr.ReasonOf(err) != cperr.Unauthenticated:
			t.Fatalf("bogus key: %v", err)
		}
	}
	if got := cs.gets.Load(); got > burst {
		t.Fatalf("the flood cost %d registry reads, want at most %d", got, burst)
	}
	if limited != 1000-burst {
		t.Fatalf("%d requests limited, want %d", limited, 1000-burst)
	}
	cs.gets.Store(0)
	for _, k := range legit {
		if err := check(a, k); err != nil {
			t.Fatalf("legitimate key after the flood: %v", err)
		}
	}
	if got := cs.gets.Load(); got != 0 {
		t.Fatalf("legitimate keys were evicted by the flood: %d registry reads", got)
	}
	if got := value(a.lookups.WithLabelValues(resultLimited)); got != 1000-burst {
		t.Fatalf("limited metric %v", got)
	}
	if got := value(a.evictions.WithLabelValues("unknown")); got != burst-3 {
		t.Fatalf("unknown-cache evictions %v, want %d", got, burst-3)
	}
}

// An unknown id asked for twice costs one registry read (negative cache),
// until its entry expires.
func TestUnknownIDIsRemembered(t *testing.T) {
	_, cs := newCounting(t)
	a, err := New(Config{Registry: cs, NegativeCacheTTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	k := bogusKey(t)
	for range 3 {
		if err := check(a, k); cperr.ReasonOf(err) != cperr.Unauthenticated {
			t.Fatalf("bogus key: %v", err)
		}
	}
	if got := cs.gets.Load(); got != 1 {
		t.Fatalf("3 checks of one unknown id cost %d reads, want 1", got)
	}
	if got := value(a.lookups.WithLabelValues(resultNegativeHit)); got != 2 {
		t.Fatalf("negative hits %v, want 2", got)
	}
}

// Concurrent misses of one id share one registry read (singleflight).
func TestConcurrentMissesShareOneRead(t *testing.T) {
	st, cs := newCounting(t)
	cs.gate = make(chan struct{})
	a, err := New(Config{Registry: cs, MissRate: noRefill, MissBurst: 1})
	if err != nil {
		t.Fatal(err)
	}
	key := newKey(t, st, "acme", false)
	const n = 20
	errs := make(chan error, n)
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() { errs <- check(a, key) })
	}
	testutil.Eventually(t, 10*time.Second, func() error {
		if got := value(a.lookups.WithLabelValues(resultShared)); got != n-1 {
			return fmt.Errorf("%v callers joined the read, want %d", got, n-1)
		}
		return nil
	})
	close(cs.gate)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("a caller failed: %v", err)
		}
	}
	if got := cs.gets.Load(); got != 1 {
		t.Fatalf("%d concurrent misses cost %d reads, want 1", n, got)
	}
}

// The key cache is an LRU: when full, the least recently used key goes,
// and only it.
func TestKeyCacheEvictsOneAtATime(t *testing.T) {
	st, cs := newCounting(t)
	a, err := New(Config{Registry: cs, KeyCacheTTL: time.Hour, KeyCacheSize: 2})
	if err != nil {
		t.Fatal(err)
	}
	k1, k2, k3 := newKey(t, st, "acme", false), newKey(t, st, "acme", false), newKey(t, st, "acme", false)
	for _, k := range []string{k1, k2, k1, k3} { // k2 is now the least recently used
		if err := check(a, k); err != nil {
			t.Fatal(err)
		}
	}
	cs.gets.Store(0)
	for _, k := range []string{k1, k3} {
		if err := check(a, k); err != nil {
			t.Fatal(err)
		}
	}
	if got := cs.gets.Load(); got != 0 {
		t.Fatalf("recently used keys were evicted: %d reads", got)
	}
	if err := check(a, k2); err != nil {
		t.Fatal(err)
	}
	if got := cs.gets.Load(); got != 1 {
		t.Fatalf("the evicted key cost %d reads, want 1", got)
	}
	if got := value(a.evictions.WithLabelValues("keys")); got != 2 {
		t.Fatalf("key evictions %v, want 2", got)
	}
}

// A revoked key stops working within KeyCacheTTL (workers do not watch
// the keys), and re-reading a known key is not charged to the miss budget.
func TestRevocationWithinTTL(t *testing.T) {
	st, cs := newCounting(t)
	a, err := New(Config{Registry: cs, KeyCacheTTL: 20 * time.Millisecond, MissRate: noRefill, MissBurst: 1})
	if err != nil {
		t.Fatal(err)
	}
	secret := newKey(t, st, "acme", false)
	if err := check(a, secret); err != nil {
		t.Fatal(err)
	}
	// Refreshes of the known key go on with the budget spent.
	testutil.Eventually(t, 10*time.Second, func() error {
		if err := check(a, secret); err != nil {
			t.Fatalf("a known key's refresh was refused: %v", err)
		}
		if cs.gets.Load() < 2 {
			return errors.New("not re-read yet")
		}
		return nil
	})
	id := secret[len("cpk_") : len("cpk_")+16]
	ctx := testutil.Context(t, 5*time.Second)
	rec := &cpv1.ApiKey{}
	v, err := catalog.Get(ctx, st, topo.APIKeyKey("acme", id), rec)
	if err != nil {
		t.Fatal(err)
	}
	rec.RevokeTime = timestamppb.Now()
	if _, err := st.Update(ctx, topo.APIKeyKey("acme", id), catalog.Encode(rec), v); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, func() error {
		if err := check(a, secret); cperr.ReasonOf(err) != cperr.Unauthenticated {
			return fmt.Errorf("revoked key: %v", err)
		}
		return nil
	})
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		ok   bool
	}{
		{"zero is the defaults", Config{}, true},
		{"defaults", DefaultConfig(), true},
		{"negative TTL", Config{KeyCacheTTL: -1}, false},
		{"negative size", Config{NegativeCacheSize: -1}, false},
		{"negative rate", Config{MissRate: -1}, false},
		{"negative burst", Config{MissBurst: -1}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.cfg.Validate(); (err == nil) != tc.ok {
				t.Fatalf("Validate() = %v, want ok %v", err, tc.ok)
			}
		})
	}
}

// value reads a counter.
func value(c prometheus.Counter) float64 {
	m := &dto.Metric{}
	if err := c.Write(m); err != nil {
		return -1
	}
	return m.GetCounter().GetValue()
}
