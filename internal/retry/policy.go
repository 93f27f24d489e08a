package retry

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"
)

// Policy is the backoff and the limits of one retry loop.
type Policy struct {
	// Min and Max bound the backoff: before retry n (0 for the first
	// retry) the loop waits a random delay in [0, min(Max, Min·2^n)]
	// ("full jitter": callers failing together do not retry together).
	Min, Max time.Duration
	// MaxAttempts bounds the tries of one Do, the first included; 0 means
	// no limit (until ctx ends).
	MaxAttempts int
	// Rand returns a random int64 in [0, n) (n > 0); nil means
	// math/rand/v2.Int64N. Tests inject a fixed source.
	Rand func(n int64) int64
}

// Defaults of DefaultPolicy.
const (
	DefaultMin         = 20 * time.Millisecond
	DefaultMax         = time.Second
	DefaultMaxAttempts = 5
)

// DefaultPolicy returns the policy of a call with no limits of its own.
func DefaultPolicy() Policy {
	return Policy{Min: DefaultMin, Max: DefaultMax, MaxAttempts: DefaultMaxAttempts}
}

// Validate reports a policy that cannot work.
func (p Policy) Validate() error {
	var errs []error
	if p.Min <= 0 {
		errs = append(errs, fmt.Errorf("retry: Min %v must be positive", p.Min))
	}
	if p.Max < p.Min {
		errs = append(errs, fmt.Errorf("retry: Max %v is below Min %v", p.Max, p.Min))
	}
	if p.MaxAttempts < 0 {
		errs = append(errs, fmt.Errorf("retry: MaxAttempts %d must not be negative", p.MaxAttempts))
	}
	return errors.Join(errs...)
}

// Cap returns the upper bound of the delay before retry n (0-based):
// min(Max, Min·2^n). It is the delay a loop without jitter would wait.
func (p Policy) Cap(n int) time.Duration {
	if p.Min <= 0 {
		return 0
	}
	d := p.Min
	for i := 0; i < n && d < p.Max; i++ {
		d *= 2
	}
	return min(d, max(p.Max, p.Min))
}

// Delay returns the full-jitter delay before retry n: uniform in
// [0, Cap(n)].
func (p Policy) Delay(n int) time.Duration {
	c := p.Cap(n)
	if c <= 0 {
		return 0
	}
	rnd := p.Rand
	if rnd == nil {
		rnd = rand.Int64N
	}
	return time.Duration(rnd(int64(c) + 1))
}

// Backoff returns the delays of one loop, starting at retry 0.
func (p Policy) Backoff() *Backoff { return &Backoff{p: p} }

// Backoff is the state of one retry loop that has no single call to hand
// to Do (a stream that restarts, a workflow step): Next gives the delay
// before the next try, Reset starts again after a success.
type Backoff struct {
	p Policy
	n int
}

// Next returns the delay before the next retry and counts it.
func (b *Backoff) Next() time.Duration {
	d := b.p.Delay(b.n)
	b.n++
	return d
}

// Reset makes the next delay the first one again.
func (b *Backoff) Reset() { b.n = 0 }

// Do calls fn until it succeeds, fails with an error a call of kind k may
// not retry (Allowed), has been tried p.MaxAttempts times, or ctx ends (or
// its deadline would pass during the next wait). It returns nil or fn's
// last error. Between tries it waits the policy's backoff, or the error's
// RetryAfter for a RetryLater failure when that is longer.
//
// Do sends the same request again: it retries RetryElsewhere and
// RetryLater failures. A RetryRefresh failure is returned, for the caller
// that owns the route to look the tenant up again.
func Do(ctx context.Context, p Policy, k Kind, fn func(context.Context) error) error {
	for n := 0; ; n++ {
		err := fn(ctx)
		if err == nil {
			return nil
		}
		if ctx.Err() != nil || !Resend(k, err) || (p.MaxAttempts > 0 && n+1 >= p.MaxAttempts) {
			return err
		}
		if !Within(ctx, WaitFor(p, n, err)) {
			return err
		}
	}
}

// WaitFor returns how long to wait before retry n (0-based) after err:
// the policy's jittered delay, or err's RetryAfter when err is RetryLater
// and asks for longer. (RetryAfter of another class is a hint for clients
// that cannot try another member; the policy tries one at once.)
func WaitFor(p Policy, n int, err error) time.Duration {
	d := p.Delay(n)
	if ClassOf(err) == RetryLater {
		d = max(d, RetryAfter(err))
	}
	return d
}

// Sleep waits d, or until ctx ends (then it returns ctx's error). A d of
// zero or less returns at once (ctx's error if it has ended). It is the
// one context-aware sleep of the code base: retry loops and polls use it.
func Sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// Within waits d unless ctx ends first or its deadline comes before d has
// passed (a retry after the deadline is pointless); it reports whether the
// caller may go on.
func Within(ctx context.Context, d time.Duration) bool {
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) <= d {
		return false
	}
	return Sleep(ctx, d) == nil
}
