package intent

import (
	"context"
	"sync"
	"time"

	"github.com/cellplane/cellplane/controlplane/topo"
	"github.com/cellplane/cellplane/internal/retry"
)

// rewatchRetry spaces waitFor's watches after one broke.
var rewatchRetry = retry.Policy{Min: 100 * time.Millisecond, Max: 5 * time.Second}

// waitFor evaluates done now and after every change under the watched
// prefixes, until it reports true or ctx ends.
func waitFor(ctx context.Context, st topo.Store, prefixes []string, done func() (bool, error)) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// Watch from a revision read before the first check, so that no change
	// falls between the check and the watch.
	page, err := st.List(ctx, prefixes[0], topo.ListOptions{Limit: 1, KeysOnly: true})
	if err != nil {
		return err
	}
	wake := make(chan struct{}, 1)
	for _, p := range prefixes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			from := page.Revision + 1
			// Re-watching after a break backs off with jitter, so that
			// waiters do not hammer a troubled etcd in step (M5).
			backoff := rewatchRetry.Backoff()
			for ctx.Err() == nil {
				for resp := range st.Watch(ctx, p, from) {
					if resp.Err != nil {
						break
					}
					backoff.Reset()
					select {
					case wake <- struct{}{}:
					default:
					}
				}
				// The watch broke (compaction, store trouble): wake the
				// waiter to re-check, then follow from now.
				from = 0
				select {
				case wake <- struct{}{}:
				default:
				}
				if retry.Sleep(ctx, backoff.Next()) != nil {
					return
				}
			}
		}()
	}
	for {
		ok, err := done()
		if ok || err != nil {
			return err
		}
		select {
		case <-wake:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
