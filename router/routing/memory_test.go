package routing

import (
	"fmt"
	"log/slog"
	"runtime"
	"testing"

	"github.com/cellplane/cellplane/controlplane/topo/memtopo"
	cpv1 "github.com/cellplane/cellplane/proto/cellplane/controlplane/v1"
)

// buildView fills a view with n ACTIVE tenants ("tenant-0000123", 14
// bytes, a realistic id length) over 20 cells with 3 distinct limits.
func buildView(tb testing.TB, n int) *view {
	tb.Helper()
	v := newView()
	rec := &cpv1.Tenant{State: cpv1.TenantState_TENANT_STATE_ACTIVE, Limits: &cpv1.TenantLimits{}}
	for i := range n {
		rec.Cell = fmt.Sprintf("use1-%02d", i%20)
		rec.Epoch = uint64(i)
		rec.Limits.Rate = float64(100 * (i % 3))
		e, err := v.makeEntry(rec, int64(i+1))
		if err != nil {
			tb.Fatal(err)
		}
		v.put(fmt.Sprintf("tenant-%07d", i), e, nil)
	}
	return v
}

func heapInUse() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// TestMemoryPerTenant measures the heap of 200k tenants, id strings
// included (budget: 150 bytes/tenant).
func TestMemoryPerTenant(t *testing.T) {
	if testing.Short() {
		t.Skip("allocates 200k tenants")
	}
	const n = 200_000
	before := heapInUse()
	v := buildView(t, n)
	after := heapInUse()
	per := float64(after-before) / n
	t.Logf("%d tenants: %.1f bytes/tenant (heap %d → %d)", n, per, before, after)
	if per > 150 {
		t.Errorf("%.1f bytes/tenant, budget 150", per)
	}
	runtime.KeepAlive(v)
}

func BenchmarkMemory(b *testing.B) {
	const n = 200_000
	for b.Loop() {
		before := heapInUse()
		v := buildView(b, n)
		b.ReportMetric(float64(heapInUse()-before)/n, "bytes/tenant")
		runtime.KeepAlive(v)
	}
}

func BenchmarkLookup(b *testing.B) {
	const n = 200_000
	tb := &Table{}
	tb.view.Store(buildView(b, n))
	keys := make([]string, 1024)
	for i := range keys {
		keys[i] = fmt.Sprintf("tenant-%07d", (i*7919)%n)
	}
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			if _, ok := tb.Lookup(keys[i&1023]); !ok {
				b.Fatal("miss")
			}
			i++
		}
	})
}

// BenchmarkLoad is a full load of 20k tenants from memtopo (5000/page).
func BenchmarkLoad(b *testing.B) {
	st := newFilledStore(b, 20_000)
	tb := &Table{cfg: DefaultConfig().withDefaults(), st: st, log: discardLogger()}
	for b.Loop() {
		if _, _, err := tb.load(b.Context()); err != nil {
			b.Fatal(err)
		}
	}
}

func newFilledStore(tb testing.TB, n int) *memtopo.Store {
	tb.Helper()
	st := memtopo.New()
	tb.Cleanup(func() { _ = st.Close() })
	for i := range n {
		putTenant(tb, st, fmt.Sprintf("tenant-%07d", i), fmt.Sprintf("c%d", i%10), active, 1)
	}
	for i := range 10 {
		putCell(tb, st, fmt.Sprintf("c%d", i), "n1", node("n1", false), node("n2", false), node("n3", false))
	}
	return st
}

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }
