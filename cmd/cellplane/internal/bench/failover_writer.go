package bench

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/codes"

	contextv1 "github.com/cellplane/cellplane/proto/cellplane/context/v1"
)

// writeRec is one write of a steady writer: when it was scheduled (open
// loop: its latency counts from here), when it ended, and how.
type writeRec struct {
	start, end time.Time
	code       codes.Code // OK when acknowledged
}

func (w writeRec) ok() bool { return w.code == codes.OK }

// steadyWriter appends to one tenant at a fixed rate through a
// ContextService client, each write in its own goroutine (open loop: a
// stalled server does not slow the schedule down), up to maxInFlight at
// once, and keeps a record of every write.
type steadyWriter struct {
	cs       contextv1.ContextServiceClient
	tenant   string
	contexts []string
	text     string
	rate     float64
	timeout  time.Duration

	mu       sync.Mutex
	recs     []writeRec
	firstErr string

	seq      atomic.Uint64
	skipped  atomic.Uint64 // slots not issued: maxInFlight writes were pending
	inFlight chan struct{}
	stop     chan struct{}
	done     chan struct{}
	wg       sync.WaitGroup
}

// newSteadyWriter returns a writer of rate writes/s of entrySize bytes to
// the tenant's contexts (round robin), each bounded by timeout.
func newSteadyWriter(cs contextv1.ContextServiceClient, tenant string, contexts []string, rate float64, entrySize int, timeout time.Duration) *steadyWriter {
	return &steadyWriter{
		cs: cs, tenant: tenant, contexts: contexts, text: string(payload(entrySize)), rate: rate, timeout: timeout,
		inFlight: make(chan struct{}, 4096), stop: make(chan struct{}), done: make(chan struct{}),
	}
}

// start runs the schedule until halt.
func (s *steadyWriter) start(ctx context.Context) {
	interval := time.Duration(float64(time.Second) / s.rate)
	go func() {
		defer close(s.done)
		begin := time.Now()
		for i := 0; ; i++ {
			at := begin.Add(time.Duration(i) * interval)
			if d := time.Until(at); d > 0 {
				t := time.NewTimer(d)
				select {
				case <-ctx.Done():
					t.Stop()
					return
				case <-s.stop:
					t.Stop()
					return
				case <-t.C:
				}
			}
			select {
			case <-ctx.Done():
				return
			case <-s.stop:
				return
			default:
			}
			select {
			case s.inFlight <- struct{}{}:
			default:
				s.skipped.Add(1)
				continue
			}
			s.wg.Go(func() {
				defer func() { <-s.inFlight }()
				s.write(ctx, at)
			})
		}
	}()
}

func (s *steadyWriter) write(ctx context.Context, at time.Time) {
	n := s.seq.Add(1)
	wctx, cancel := context.WithTimeout(asTenant(ctx, s.tenant), s.timeout)
	defer cancel()
	_, err := s.cs.Append(wctx, &contextv1.AppendRequest{
		ContextId: s.contexts[int(n)%len(s.contexts)],
		Entries:   []*contextv1.Entry{{Role: "user", Content: &contextv1.Entry_Text{Text: s.text}}},
		RequestId: fmt.Sprintf("steady-%s-%d", s.tenant, n),
	})
	rec := writeRec{start: at, end: time.Now(), code: Code(err)}
	if ctx.Err() != nil && err != nil {
		return // the run was cancelled: not the system's failure
	}
	s.mu.Lock()
	s.recs = append(s.recs, rec)
	if err != nil && s.firstErr == "" {
		s.firstErr = err.Error()
	}
	s.mu.Unlock()
}

// halt stops the schedule and waits for the writes in flight.
func (s *steadyWriter) halt() {
	select {
	case <-s.stop:
	default:
		close(s.stop)
	}
	<-s.done
	s.wg.Wait()
}

// records returns a copy of the records so far.
func (s *steadyWriter) records() []writeRec {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.recs)
}

// firstError is the message of the first failed write ("" if none).
func (s *steadyWriter) firstError() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.firstErr
}

// firstAckAfter returns the earliest acknowledgement of a write scheduled
// at or after t (writes sent before t may have been acknowledged by a
// node that was dying at t).
func firstAckAfter(recs []writeRec, t time.Time) (time.Time, bool) {
	var first time.Time
	for _, r := range recs {
		if r.ok() && !r.start.Before(t) && (first.IsZero() || r.end.Before(first)) {
			first = r.end
		}
	}
	return first, !first.IsZero()
}

// maxAckGap returns the longest time between two consecutive
// acknowledgements (by their end) where the later one falls after from
// and the earlier one before to: the longest write pause a client saw in
// [from, to]. A window with no acknowledgement after from is measured to
// to. The second value is when the longest gap ended.
func maxAckGap(recs []writeRec, from, to time.Time) (time.Duration, time.Time) {
	ends := make([]time.Time, 0, len(recs))
	for _, r := range recs {
		if r.ok() {
			ends = append(ends, r.end)
		}
	}
	slices.SortFunc(ends, func(a, b time.Time) int { return a.Compare(b) })
	var (
		gap    time.Duration
		gapEnd time.Time
		prev   = from
	)
	for _, e := range ends {
		if !e.After(from) {
			prev = e // the last acknowledgement before the window
			continue
		}
		if !prev.Before(to) {
			return gap, gapEnd
		}
		if g := e.Sub(prev); g > gap {
			gap, gapEnd = g, e
		}
		prev = e
	}
	// No acknowledgement after prev: the pause lasted at least to the
	// window's end.
	if prev.Before(to) {
		if g := to.Sub(prev); g > gap {
			gap, gapEnd = g, to
		}
	}
	return gap, gapEnd
}

// windowStats summarises the writes scheduled in [from, to): successes
// (with their latency from the scheduled start) and failures by code.
func windowStats(name string, recs []writeRec, from, to time.Time, rate float64) Result {
	h := NewHistogram()
	res := Result{Name: name, Concurrency: 0, TargetRate: rate}
	for _, r := range recs {
		if r.start.Before(from) || !r.start.Before(to) {
			continue
		}
		if r.ok() {
			h.Record(r.end.Sub(r.start))
			continue
		}
		if res.ErrorsByCode == nil {
			res.ErrorsByCode = map[string]uint64{}
		}
		res.ErrorsByCode[r.code.String()]++
		res.Errors++
	}
	res.Ops = h.Count()
	res.Latency = h.Summary()
	res.ElapsedSec = to.Sub(from).Seconds()
	if res.ElapsedSec > 0 {
		res.OpsPerSec = float64(res.Ops) / res.ElapsedSec
	}
	return res
}
