// Package ctxtime holds the context-aware sleeps every retry loop and poll
// needs, so that each package does not carry its own copy.
package ctxtime

import (
	"context"
	"time"
)

// Sleep waits d, or until ctx ends (then it returns ctx's error). A d of
// zero or less returns at once (ctx's error if it has ended).
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
