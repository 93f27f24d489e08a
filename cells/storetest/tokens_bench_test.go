package storetest

import (
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/cellplane/cellplane/internal/tokens"
)

// processCPU is the process's user and system CPU time so far.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkAppendTokenCounting is the CPU cost of token counting on the
// write path (docs/benchmarks.md, "Token counts"): appends of one 256 B
// English-like entry (a different one each time) to a 3-node cell in this process (real disks, 64 in
// flight), the entry counted before proposing as the cell service does
// ("on"), or proposed with a zero count in the same encoding ("off": the
// same bytes reach Raft and the three state machines, no tokenizer runs).
// It reports the process CPU (all three members) per append.
func BenchmarkAppendTokenCounting(b *testing.B) {
	// A different 256 B text per append: words drawn from a small
	// vocabulary (they repeat across appends, as prose does) and numbers
	// (which do not).
	words := strings.Fields("the agent asked tool for weather in Paris it answered sunny degrees user wants to book a train ticket " +
		"from Lisbon Madrid next Tuesday morning budget euros assistant found three options cheapest leaves at " +
		"arrives evening should I reserve seat window please confirm payment card ending with reference number " +
		"booking confirmed email sent itinerary attached anything else can help hotel near station breakfast included")
	textOf := func(i int64) string {
		var b strings.Builder
		for k := i; b.Len() < 256; k = k*6364136223846793005 + 1442695040888963407 {
			b.WriteString(words[uint64(k>>33)%uint64(len(words))])
			b.WriteByte(' ')
			if k%7 == 0 {
				fmt.Fprintf(&b, "%d ", uint64(k)%10000)
			}
		}
		return b.String()[:256]
	}
	for _, mode := range []string{"off", "on"} {
		b.Run(mode, func(b *testing.B) {
			c := NewCluster(b, 3, Options{LogLevel: 8})
			mustCreate(b, c, "bench", "c")
			leader := c.Leader().S()
			var next atomic.Int64
			var wg sync.WaitGroup
			b.ResetTimer()
			cpu := processCPU()
			for w := range 64 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					ctx := testCtx(b, time.Minute)
					for i := next.Add(1); i <= int64(b.N); i = next.Add(1) {
						cmd := appendCmd("bench", "c", fmt.Sprintf("%d-%d", w, i), textOf(i))
						op := cmd.GetAppend()
						op.TokenEncoding = tokens.Default
						if mode == "on" {
							for _, e := range op.GetEntries() {
								e.TokenCount = tokens.Entry(tokens.Default, e)
							}
						}
						if _, err := leader.Propose(ctx, cmd); err != nil {
							b.Error(err)
							return
						}
					}
				}()
			}
			wg.Wait()
			b.StopTimer()
			b.ReportMetric(float64((processCPU()-cpu).Microseconds())/float64(b.N), "cpu-µs/op")
		})
	}
}
