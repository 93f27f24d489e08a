package retry

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestPoll(t *testing.T) {
	errNotYet := errors.New("not yet")
	errBroken := errors.New("broken")
	t.Run("until success", func(t *testing.T) {
		calls := 0
		err := Poll(context.Background(), time.Millisecond, func() error {
			if calls++; calls < 3 {
				return errNotYet
			}
			return nil
		})
		if err != nil || calls != 3 {
			t.Fatalf("Poll = %v after %d calls, want nil after 3", err, calls)
		}
	})
	t.Run("permanent stops at once", func(t *testing.T) {
		calls := 0
		err := Poll(context.Background(), time.Millisecond, func() error {
			calls++
			return Permanent(errBroken)
		})
		if err != errBroken || calls != 1 {
			t.Fatalf("Poll = %v after %d calls, want the unmarked error after 1", err, calls)
		}
	})
	t.Run("context ends", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
		defer cancel()
		err := Poll(ctx, time.Millisecond, func() error { return errNotYet })
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Poll = %v, want the context's error", err)
		}
	})
}
