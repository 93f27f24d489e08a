package store

import (
	"fmt"
	"slices"
	"testing"
	"time"
)

// BenchmarkBudgetedRead is a budgeted read of a 100k-entry context
// (docs/benchmarks.md, "Token counts"): the newest entries within 8000
// tokens after a compaction summary of the first 90k, read from the
// state machine's Pebble state (no Raft round). It reports p50 and p99.
func BenchmarkBudgetedRead(b *testing.B) {
	h := newFSM(b)
	h.mustApply(ownedBy("acme"))
	h.mustApply(createContext("acme", "c"))
	texts := make([]string, 100)
	for i := range texts {
		texts[i] = fmt.Sprintf("entry %d: the agent called a tool and got a short answer back, about forty tokens of text in all.", i)
	}
	for range 1000 {
		h.mustApply(appendText("acme", "c", "", texts...))
	}
	h.mustApply(compact("acme", "c", 90_000, "a summary of the first ninety thousand entries"))
	q := ReadQuery{MaxTokens: 8000, MaxEntries: 1000, MaxBytes: 1 << 20}
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for b.Loop() {
		start := time.Now()
		h.tenant("acme", func(v *TenantView) {
			c, err := v.Context("c")
			if err != nil {
				b.Fatal(err)
			}
			r, err := v.ReadContext(c, q)
			if err != nil || r.GetTokensReturned() > 8000 || len(r.GetEntries()) == 0 {
				b.Fatalf("read %d entries, %d tokens: %v", len(r.GetEntries()), r.GetTokensReturned(), err)
			}
		})
		lat = append(lat, time.Since(start))
	}
	b.StopTimer()
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
}
