package intent

import (
	"context"
	"sync"
	"time"

	"github.com/cellplane/cellplane/controlplane/topo"
	"github.com/cellplane/cellplane/internal/retry"
)

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
			for ctx.Err() == nil {
				for resp := range st.Watch(ctx, p, from) {
					if resp.Err != nil {
						break
					}
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
				if retry.Sleep(ctx, 100*time.Millisecond) != nil {
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
