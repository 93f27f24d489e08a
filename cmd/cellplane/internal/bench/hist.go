package bench

import (
	"math"
	"math/bits"
	"sync/atomic"
	"time"
)

// Histogram records durations in log-linear buckets, like HdrHistogram:
// values below 2^subBits ns are exact, and every power-of-two range above
// is split into 2^subBits equal buckets, so a reported quantile is within
// 1/2^(subBits+1) (≈0.4%) of the true sample. Min, max and sum are exact.
//
// Record is safe for concurrent use and does not allocate: workers share one
// histogram instead of merging per-worker copies (on a few cores the atomic
// adds cost far less than the RPCs being measured).
type Histogram struct {
	counts [numBuckets]atomic.Uint64
	n      atomic.Uint64
	sum    atomic.Uint64 // ns
	min    atomic.Uint64 // ns; math.MaxUint64 when empty
	max    atomic.Uint64 // ns
}

const (
	subBits    = 7
	subCount   = 1 << subBits // buckets per power of two
	maxExp     = 36           // 2^(36+7) ns ≈ 2.4 h: larger values land in the last bucket
	numBuckets = (maxExp + 1) * subCount
)

// NewHistogram returns an empty histogram.
func NewHistogram() *Histogram {
	h := &Histogram{}
	h.min.Store(math.MaxUint64)
	return h
}

// bucketOf returns the bucket index of v ns.
func bucketOf(v uint64) int {
	if v < subCount {
		return int(v)
	}
	exp := bits.Len64(v) - subBits - 1 // v>>exp is in [subCount, 2*subCount)
	if exp >= maxExp {
		return numBuckets - 1
	}
	return (exp+1)*subCount + int(v>>exp) - subCount
}

// bucketRange returns the smallest and largest value of bucket i.
func bucketRange(i int) (lo, hi uint64) {
	if i < subCount {
		return uint64(i), uint64(i)
	}
	exp := i/subCount - 1
	lo = uint64(subCount+i%subCount) << exp
	return lo, lo + (1 << exp) - 1
}

// Record adds one sample. Negative durations count as 0.
func (h *Histogram) Record(d time.Duration) {
	v := uint64(max(d, 0))
	h.counts[bucketOf(v)].Add(1)
	h.n.Add(1)
	h.sum.Add(v)
	for {
		m := h.min.Load()
		if v >= m || h.min.CompareAndSwap(m, v) {
			break
		}
	}
	for {
		m := h.max.Load()
		if v <= m || h.max.CompareAndSwap(m, v) {
			break
		}
	}
}

// Count returns the number of samples.
func (h *Histogram) Count() uint64 { return h.n.Load() }

// Max returns the largest sample (0 when empty).
func (h *Histogram) Max() time.Duration { return time.Duration(h.max.Load()) }

// Min returns the smallest sample (0 when empty).
func (h *Histogram) Min() time.Duration {
	if h.n.Load() == 0 {
		return 0
	}
	return time.Duration(h.min.Load())
}

// Mean returns the average sample (0 when empty).
func (h *Histogram) Mean() time.Duration {
	n := h.n.Load()
	if n == 0 {
		return 0
	}
	return time.Duration(h.sum.Load() / n)
}

// Quantile returns the q-quantile (0 < q ≤ 1) by the nearest-rank rule:
// the smallest recorded value v such that at least ⌈q·n⌉ samples are ≤ v,
// reported as the middle of its bucket and clamped to [Min, Max]. It must
// not race with Record if the caller needs an exact snapshot.
func (h *Histogram) Quantile(q float64) time.Duration {
	n := h.n.Load()
	if n == 0 {
		return 0
	}
	q = min(max(q, 0), 1)
	rank := uint64(math.Ceil(q * float64(n)))
	rank = max(rank, 1)
	var seen uint64
	for i := range h.counts {
		seen += h.counts[i].Load()
		if seen >= rank {
			lo, hi := bucketRange(i)
			v := lo + (hi-lo)/2
			v = min(max(v, h.min.Load()), h.max.Load())
			return time.Duration(v)
		}
	}
	return h.Max()
}

// Summary returns the usual latency figures in milliseconds.
func (h *Histogram) Summary() Latency {
	return Latency{
		P50:  ms(h.Quantile(0.50)),
		P90:  ms(h.Quantile(0.90)),
		P99:  ms(h.Quantile(0.99)),
		P999: ms(h.Quantile(0.999)),
		Max:  ms(h.Max()),
		Mean: ms(h.Mean()),
		Min:  ms(h.Min()),
	}
}

// Latency is a latency distribution in milliseconds (fractions kept: a
// local fsync or a loopback RPC is well under one).
type Latency struct {
	P50  float64 `json:"p50_ms"`
	P90  float64 `json:"p90_ms"`
	P99  float64 `json:"p99_ms"`
	P999 float64 `json:"p999_ms"`
	Max  float64 `json:"max_ms"`
	Mean float64 `json:"mean_ms"`
	Min  float64 `json:"min_ms"`
}

// ms converts to milliseconds rounded to the microsecond: finer digits are
// below the histogram's precision and would only lengthen the JSON.
func ms(d time.Duration) float64 {
	return math.Round(float64(d)/1e3) / 1e3
}
