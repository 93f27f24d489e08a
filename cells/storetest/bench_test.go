package storetest

import (
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cellplane/cellplane/cells/store"
	"github.com/prometheus/client_golang/prometheus"
)

// meanBatch is the mean number of commands per Raft entry on s.
func meanBatch(b *testing.B, s *store.Store) float64 {
	return meanOf(b, s, "cellplane_store_proposal_batch_size")
}

// meanOf is the mean of one of s's histograms.
func meanOf(b *testing.B, s *store.Store, name string) float64 {
	reg := prometheus.NewRegistry()
	reg.MustRegister(s.Collectors()...)
	mfs, err := reg.Gather()
	if err != nil {
		b.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			h := mf.GetMetric()[0].GetHistogram()
			return h.GetSampleSum() / float64(h.GetSampleCount())
		}
	}
	return 0
}

// BenchmarkProposeParallel measures group-committed appends of 256 B
// entries on a 3-node cell at several concurrencies (store level, no gRPC).
// `go test -bench Propose ./cells/storetest/`; the system benchmark with its
// baselines is `cellplane bench cell`.
func BenchmarkProposeParallel(b *testing.B) {
	for _, conc := range []int{1, 16, 64, 256} {
		b.Run(fmt.Sprintf("c%d", conc), func(b *testing.B) {
			c := NewCluster(b, 3, Options{LogLevel: 8})
			mustCreate(b, c, "bench", "c")
			leader := c.Leader().S()
			body := strings.Repeat("x", 256)
			var next atomic.Int64
			var wg sync.WaitGroup
			b.ResetTimer()
			start := time.Now()
			for w := range conc {
				wg.Add(1)
				go func() {
					defer wg.Done()
					ctx := testCtx(b, time.Minute)
					for i := next.Add(1); i <= int64(b.N); i = next.Add(1) {
						if _, err := leader.Propose(ctx, appendCmd("bench", "c", fmt.Sprintf("%d-%d", w, i), body)); err != nil {
							b.Error(err)
							return
						}
					}
				}()
			}
			wg.Wait()
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "writes/s")
			b.ReportMetric(meanBatch(b, leader), "cmds/entry")
			b.ReportMetric(meanOf(b, leader, "cellplane_store_commit_seconds")*1000, "commit-ms")
		})
	}
}
