package bench

import (
	"math"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"
)

func TestBucketsCoverEveryValueOnce(t *testing.T) {
	prev := -1
	check := func(v uint64) {
		i := bucketOf(v)
		lo, hi := bucketRange(i)
		if v < lo || v > hi {
			t.Fatalf("value %d in bucket %d = [%d, %d]", v, i, lo, hi)
		}
		if i < prev {
			t.Fatalf("bucket index not monotonic at %d: %d after %d", v, i, prev)
		}
		prev = i
		// The bucket's width bounds the error of a reported quantile.
		if lo >= subCount && float64(hi-lo+1)/float64(lo) > 1.0/subCount+1e-12 {
			t.Fatalf("bucket %d [%d, %d] wider than 1/%d of its value", i, lo, hi, subCount)
		}
	}
	for v := range uint64(10_000) {
		check(v)
	}
	for v := uint64(10_000); v < 1<<42; v = v*1001/1000 + 1 {
		check(v)
	}
	if got := bucketOf(math.MaxUint64); got != numBuckets-1 {
		t.Fatalf("huge value in bucket %d, want the last (%d)", got, numBuckets-1)
	}
}

func TestQuantilesOfKnownSamples(t *testing.T) {
	tests := []struct {
		name    string
		samples []time.Duration
		q       float64
		want    time.Duration
	}{
		{"single", []time.Duration{7 * time.Millisecond}, 0.5, 7 * time.Millisecond},
		{"small exact", []time.Duration{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}, 0.5, 5},
		{"small p90", []time.Duration{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}, 0.9, 9},
		{"small p99 is the max", []time.Duration{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}, 0.99, 10},
		{"uniform p50", uniform(1000, time.Microsecond), 0.5, 500 * time.Microsecond},
		{"uniform p99", uniform(1000, time.Microsecond), 0.99, 990 * time.Microsecond},
		{"uniform p999", uniform(1000, time.Microsecond), 0.999, 999 * time.Microsecond},
		{"uniform p100", uniform(1000, time.Microsecond), 1, 1000 * time.Microsecond},
		{"bimodal p50 stays low", bimodal(), 0.5, time.Millisecond},
		{"bimodal p99 sees the tail", bimodal(), 0.99, 100 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := NewHistogram()
			for _, s := range shuffled(tt.samples) {
				h.Record(s)
			}
			got := h.Quantile(tt.q)
			if rel := math.Abs(float64(got-tt.want)) / float64(tt.want); rel > 1.0/(2*subCount) {
				t.Fatalf("q%v = %v, want %v (±%.2f%%), off by %.2f%%", tt.q, got, tt.want, 100.0/(2*subCount), rel*100)
			}
		})
	}
}

func TestQuantileMatchesSortedSamples(t *testing.T) {
	// Log-normal latencies: the histogram's quantiles must stay within one
	// half-bucket of the exact nearest-rank quantile of the sorted samples.
	r := rand.New(rand.NewPCG(1, 2))
	var samples []time.Duration
	for range 50_000 {
		samples = append(samples, time.Duration(math.Exp(r.NormFloat64()*1.2+13)))
	}
	h := NewHistogram()
	for _, s := range samples {
		h.Record(s)
	}
	slices.Sort(samples)
	for _, q := range []float64{0.5, 0.9, 0.99, 0.999} {
		want := samples[int(math.Ceil(q*float64(len(samples))))-1]
		got := h.Quantile(q)
		if rel := math.Abs(float64(got-want)) / float64(want); rel > 1.0/(2*subCount)+1e-9 {
			t.Errorf("q%v = %v, exact %v: off by %.3f%%", q, got, want, rel*100)
		}
	}
	if h.Max() != samples[len(samples)-1] || h.Min() != samples[0] {
		t.Errorf("min/max = %v/%v, want exact %v/%v", h.Min(), h.Max(), samples[0], samples[len(samples)-1])
	}
}

func TestHistogramEmptyAndSummary(t *testing.T) {
	h := NewHistogram()
	if h.Count() != 0 || h.Quantile(0.5) != 0 || h.Max() != 0 || h.Min() != 0 || h.Mean() != 0 {
		t.Fatalf("empty histogram is not all zero: %+v", h.Summary())
	}
	for _, d := range []time.Duration{time.Millisecond, 2 * time.Millisecond, 3 * time.Millisecond, -time.Second} {
		h.Record(d)
	}
	s := h.Summary()
	if s.Min != 0 || s.Max != 3 || s.Mean != 1.5 || math.Abs(s.P50-1) > 0.004 {
		t.Fatalf("summary = %+v, want min 0 (negative clamps), max 3, mean 1.5, p50 ≈1", s)
	}
}

func TestHistogramConcurrentRecord(t *testing.T) {
	h := NewHistogram()
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for i := range 10_000 {
				h.Record(time.Duration(w*10_000+i+1) * time.Microsecond)
			}
		})
	}
	wg.Wait()
	if h.Count() != 80_000 {
		t.Fatalf("count = %d, want 80000", h.Count())
	}
	if h.Max() != 80_000*time.Microsecond || h.Min() != time.Microsecond {
		t.Fatalf("min/max = %v/%v", h.Min(), h.Max())
	}
}

func uniform(n int, unit time.Duration) []time.Duration {
	s := make([]time.Duration, n)
	for i := range s {
		s[i] = time.Duration(i+1) * unit
	}
	return s
}

// bimodal is 98% at 1 ms and 2% at 100 ms.
func bimodal() []time.Duration {
	var s []time.Duration
	for i := range 1000 {
		if i%50 == 0 {
			s = append(s, 100*time.Millisecond)
		} else {
			s = append(s, time.Millisecond)
		}
	}
	return s
}

func shuffled(s []time.Duration) []time.Duration {
	s = slices.Clone(s)
	r := rand.New(rand.NewPCG(3, 4))
	r.Shuffle(len(s), func(i, j int) { s[i], s[j] = s[j], s[i] })
	return s
}
