package retry

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/cellplane/cellplane/internal/cperr"
	"github.com/cellplane/cellplane/internal/rpcerr"
	"go.uber.org/goleak"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestEveryReasonHasARule: a new reason must say how it is retried.
func TestEveryReasonHasARule(t *testing.T) {
	for _, r := range cperr.Reasons() {
		if _, ok := rules[r]; !ok {
			t.Errorf("reason %s has no retry class", r)
		}
	}
	if len(rules) != len(cperr.Reasons()) {
		t.Errorf("rules has %d entries, the contract %d reasons", len(rules), len(cperr.Reasons()))
	}
}

func TestClassAndAllowed(t *testing.T) {
	// want: the class, and Allowed for Immutable, Idempotent, Mutating.
	type want struct {
		class                 Class
		immut, idem, mutating bool
	}
	no := want{RetryNo, false, false, false}
	unknownOutcome := func(c Class) want { return want{c, true, true, false} }
	refused := func(c Class) want { return want{c, true, true, true} }
	byReason := map[cperr.Reason]want{
		cperr.NotLeader:               refused(RetryElsewhere),
		cperr.CellUnavailable:         unknownOutcome(RetryElsewhere),
		cperr.AuthorityLeaseExpired:   unknownOutcome(RetryElsewhere),
		cperr.WrongCell:               refused(RetryRefresh),
		cperr.StaleEpoch:              refused(RetryRefresh),
		cperr.TenantMoving:            refused(RetryLater),
		cperr.RateLimited:             refused(RetryLater),
		cperr.StalenessExceeded:       refused(RetryElsewhere),
		cperr.ControlPlaneUnavailable: unknownOutcome(RetryLater),
		cperr.TenantBusy:              refused(RetryLater),
		cperr.CredentialsStale:        refused(RetryElsewhere),
	}
	for _, r := range cperr.Reasons() {
		w, ok := byReason[r]
		if !ok {
			w = no
		}
		// The same answer for the domain error, a wrapped one, and the
		// status a cellplane server sends.
		for name, err := range map[string]error{
			"error":   cperr.New(r, "x"),
			"wrapped": fmt.Errorf("call: %w", cperr.New(r, "x")),
			"status":  rpcerr.ToStatus(cperr.New(r, "x")),
		} {
			t.Run(string(r)+"/"+name, func(t *testing.T) {
				if got := ClassOf(err); got != w.class {
					t.Errorf("ClassOf = %v, want %v", got, w.class)
				}
				for k, allowed := range map[Kind]bool{Immutable: w.immut, Idempotent: w.idem, Mutating: w.mutating} {
					if got := Allowed(k, err); got != allowed {
						t.Errorf("Allowed(%d) = %v, want %v", k, got, allowed)
					}
					if got, want := Resend(k, err), allowed && w.class != RetryRefresh; got != want {
						t.Errorf("Resend(%d) = %v, want %v", k, got, want)
					}
				}
			})
		}
	}
	others := []struct {
		name string
		err  error
		want want
	}{
		{"transport", status.Error(codes.Unavailable, "connection refused"), unknownOutcome(RetryElsewhere)},
		{"wrapped transport", fmt.Errorf("dial: %w", status.Error(codes.Unavailable, "connection refused")), unknownOutcome(RetryElsewhere)},
		{"transport, never sent", Unsent(status.Error(codes.Unavailable, "connection refused")), refused(RetryElsewhere)},
		{"CELL_UNAVAILABLE, never sent", Unsent(cperr.New(cperr.CellUnavailable, "no member")), refused(RetryElsewhere)},
		{"INVALID_ARGUMENT, never sent", Unsent(cperr.New(cperr.InvalidArgument, "bad")), no},
		{"canceled", context.Canceled, no},
		{"deadline", context.DeadlineExceeded, no},
		{"deadline status", status.Error(codes.DeadlineExceeded, "deadline"), no},
		{"foreign status", status.Error(codes.Internal, "boom"), no},
		{"plain", errors.New("boom"), no},
		{"nil", nil, no},
	}
	for _, tc := range others {
		t.Run(tc.name, func(t *testing.T) {
			if got := ClassOf(tc.err); got != tc.want.class {
				t.Errorf("ClassOf = %v, want %v", got, tc.want.class)
			}
			for k, allowed := range map[Kind]bool{Immutable: tc.want.immut, Idempotent: tc.want.idem, Mutating: tc.want.mutating} {
				if got := Allowed(k, tc.err); got != allowed {
					t.Errorf("Allowed(%d) = %v, want %v", k, got, allowed)
				}
			}
		})
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name string
		p    Policy
		ok   bool
	}{
		{"default", DefaultPolicy(), true},
		{"no limit", Policy{Min: time.Millisecond, Max: time.Millisecond}, true},
		{"zero min", Policy{Max: time.Second}, false},
		{"max below min", Policy{Min: time.Second, Max: time.Millisecond}, false},
		{"negative attempts", Policy{Min: time.Millisecond, Max: time.Second, MaxAttempts: -1}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.p.Validate(); (err == nil) != tc.ok {
				t.Fatalf("Validate() = %v, want ok=%v", err, tc.ok)
			}
		})
	}
}

func TestBackoffFullJitter(t *testing.T) {
	p := Policy{Min: 10 * time.Millisecond, Max: 100 * time.Millisecond}
	caps := []time.Duration{10, 20, 40, 80, 100, 100, 100}
	for n, c := range caps {
		if got := p.Cap(n); got != c*time.Millisecond {
			t.Errorf("Cap(%d) = %v, want %v", n, got, c*time.Millisecond)
		}
	}
	if got := p.Cap(1000); got != p.Max {
		t.Errorf("Cap(1000) = %v, want Max (no overflow)", got)
	}
	// The random source sees the whole range [0, cap] and its answer is
	// the delay: the lowest and the highest draw give 0 and the cap.
	for _, draw := range []string{"lowest", "highest"} {
		p := p
		p.Rand = func(n int64) int64 {
			if draw == "lowest" {
				return 0
			}
			return n - 1
		}
		bo := p.Backoff()
		for n, c := range caps {
			want := time.Duration(0)
			if draw == "highest" {
				want = c * time.Millisecond
			}
			if got := bo.Next(); got != want {
				t.Errorf("%s draw: delay %d = %v, want %v", draw, n, got, want)
			}
		}
		bo.Reset()
		if got := bo.Next(); draw == "highest" && got != p.Min {
			t.Errorf("after Reset: %v, want %v", got, p.Min)
		}
	}
	// The real source stays within the bounds.
	for n := range 8 {
		for range 100 {
			if d := p.Delay(n); d < 0 || d > p.Cap(n) {
				t.Fatalf("Delay(%d) = %v outside [0, %v]", n, d, p.Cap(n))
			}
		}
	}
}

func TestWaitForHonoursRetryAfterOfLater(t *testing.T) {
	p := Policy{Min: time.Millisecond, Max: time.Millisecond, Rand: func(n int64) int64 { return n - 1 }}
	later := cperr.New(cperr.RateLimited, "slow down").WithRetryAfter(time.Second)
	if got := WaitFor(p, 0, rpcerr.ToStatus(later)); got != time.Second {
		t.Errorf("RATE_LIMITED: %v, want the RetryAfter 1s", got)
	}
	elsewhere := cperr.New(cperr.CellUnavailable, "down").WithRetryAfter(time.Second)
	if got := WaitFor(p, 0, elsewhere); got != time.Millisecond {
		t.Errorf("CELL_UNAVAILABLE: %v, want the backoff 1ms", got)
	}
}

// fast is a policy whose waits are instant.
var fast = Policy{Min: time.Microsecond, Max: time.Microsecond, Rand: func(int64) int64 { return 0 }}

func TestDo(t *testing.T) {
	notLeader := cperr.New(cperr.NotLeader, "follower")
	unavailable := rpcerr.ToStatus(cperr.New(cperr.CellUnavailable, "timeout"))
	invalid := cperr.New(cperr.InvalidArgument, "bad")
	wrongCell := cperr.New(cperr.WrongCell, "elsewhere")
	moving := cperr.New(cperr.TenantMoving, "moving")
	tests := []struct {
		name      string
		kind      Kind
		attempts  int     // MaxAttempts
		errs      []error // fn's answers, in order (then nil)
		wantCalls int
		wantErr   error
	}{
		{"success at once", Idempotent, 5, nil, 1, nil},
		{"retries until success", Idempotent, 5, []error{notLeader, unavailable}, 3, nil},
		{"stops on a non-retryable error", Immutable, 5, []error{notLeader, invalid, notLeader}, 2, invalid},
		{"stops after MaxAttempts", Immutable, 3, []error{notLeader, notLeader, notLeader, notLeader}, 3, notLeader},
		{"mutating: retried when no server applied it", Mutating, 5, []error{notLeader}, 2, nil},
		{"mutating: not retried on an unknown outcome", Mutating, 5, []error{unavailable}, 1, unavailable},
		{"idempotent: retried on an unknown outcome", Idempotent, 5, []error{unavailable}, 2, nil},
		{"a stale route is the caller's to refresh", Immutable, 5, []error{wrongCell}, 1, wrongCell},
		{"later", Idempotent, 5, []error{moving, moving}, 3, nil},
		{"no limit", Immutable, 0, []error{notLeader, notLeader, notLeader, notLeader, notLeader, notLeader}, 7, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := fast
			p.MaxAttempts = tc.attempts
			calls := 0
			err := Do(t.Context(), p, tc.kind, func(context.Context) error {
				calls++
				if calls <= len(tc.errs) {
					return tc.errs[calls-1]
				}
				return nil
			})
			if calls != tc.wantCalls {
				t.Errorf("calls = %d, want %d", calls, tc.wantCalls)
			}
			if err != tc.wantErr {
				t.Errorf("err = %v, want %v", err, tc.wantErr)
			}
		})
	}
}

func TestDoStopsWhenCtxEnds(t *testing.T) {
	notLeader := cperr.New(cperr.NotLeader, "follower")
	t.Run("canceled during a call", func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		calls := 0
		err := Do(ctx, Policy{Min: time.Hour, Max: time.Hour}, Immutable, func(context.Context) error {
			calls++
			cancel()
			return notLeader
		})
		if calls != 1 || err != notLeader {
			t.Fatalf("calls = %d, err = %v; want 1, the last error", calls, err)
		}
	})
	t.Run("canceled during the wait", func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		calls := 0
		p := Policy{Min: time.Hour, Max: time.Hour, Rand: func(n int64) int64 { return n - 1 }}
		done := make(chan error)
		go func() {
			done <- Do(ctx, p, Immutable, func(context.Context) error {
				calls++
				return notLeader
			})
		}()
		cancel()
		if err := <-done; err != notLeader || calls != 1 {
			t.Fatalf("calls = %d, err = %v; want 1, the last error", calls, err)
		}
	})
	t.Run("deadline before the next wait ends", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
		defer cancel()
		p := Policy{Min: time.Hour, Max: time.Hour, Rand: func(n int64) int64 { return n - 1 }}
		calls := 0
		err := Do(ctx, p, Immutable, func(context.Context) error {
			calls++
			return notLeader
		})
		if calls != 1 || err != notLeader {
			t.Fatalf("calls = %d, err = %v; want 1, the last error", calls, err)
		}
	})
}

func TestSleep(t *testing.T) {
	if err := Sleep(t.Context(), 0); err != nil {
		t.Fatalf("Sleep(0) = %v", err)
	}
	if err := Sleep(t.Context(), time.Millisecond); err != nil {
		t.Fatalf("Sleep(1ms) = %v", err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := Sleep(ctx, time.Hour); !errors.Is(err, context.Canceled) {
		t.Fatalf("Sleep on a canceled ctx = %v", err)
	}
	if err := Sleep(ctx, 0); !errors.Is(err, context.Canceled) {
		t.Fatalf("Sleep(0) on a canceled ctx = %v", err)
	}
	if Within(ctx, time.Millisecond) {
		t.Fatal("Within on a canceled ctx")
	}
	dctx, dcancel := context.WithTimeout(t.Context(), time.Minute)
	defer dcancel()
	if Within(dctx, time.Hour) {
		t.Fatal("Within past the deadline")
	}
	if !Within(dctx, time.Millisecond) {
		t.Fatal("Within a short wait before the deadline")
	}
}
