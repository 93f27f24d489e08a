// Package retry is cellplane's one retry policy: which failures are worth
// another try for which kind of call, how long to wait between tries
// (exponential backoff with full jitter), and the limits. Callers name the
// kind of their call and hand the loop to Do; they do not list reasons or
// write their own sleep loops.
//
// The policy reads the error contract (internal/cperr): every reason has a
// Class saying how a caller may retry it, and whether the server is known
// not to have applied the request. A transport failure (internal/rpcerr's
// IsTransport: no cellplane server answered) counts as CELL_UNAVAILABLE.
//
//	err := retry.Do(ctx, retry.DefaultPolicy(), retry.Idempotent, func(ctx context.Context) error {
//		_, err := cl.SetTenant(ctx, req) // req carries a request id
//		return rpcerr.FromStatus(err)
//	})
//
// Loops that are not a single call (a stream that restarts, a controller
// step) keep their shape and take their delays from a Backoff:
//
//	bo := retry.Policy{Min: cfg.RetryMin, Max: cfg.RetryMax}.Backoff()
//	for ctx.Err() == nil {
//		if err := step(ctx); err == nil {
//			bo.Reset()
//			continue
//		}
//		if retry.Sleep(ctx, bo.Next()) != nil {
//			return
//		}
//	}
//
// Sleep is also the one context-aware sleep of the code base for polls
// that are not retries: the layering check "only internal/retry sleeps"
// keeps time.Sleep and time.After out of every other non-test file.
package retry
