package memtopo

import (
	"context"
	"fmt"
	"strings"
	"sync"

	"github.com/cellplane/cellplane/controlplane/topo"
)

// watcher queues responses for one Watch; its goroutine delivers them.
type watcher struct {
	prefix  string
	minRev  int64 // events before it are not delivered (a watch from the future)
	max     int
	mu      sync.Mutex
	queue   []topo.WatchResponse
	pending int // events in queue
	err     error
	wake    chan struct{}
}

// push queues the events of rev under w's prefix; called with s.mu held,
// so pushes arrive in revision order.
func (w *watcher) push(rev int64, evs []topo.Event) {
	if rev < w.minRev {
		return
	}
	var mine []topo.Event
	for _, e := range evs {
		if strings.HasPrefix(e.KV.Key, w.prefix) {
			mine = append(mine, e)
		}
	}
	if len(mine) == 0 {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err != nil {
		return
	}
	if w.pending+len(mine) > w.max {
		w.queue, w.pending = nil, 0
		w.err = fmt.Errorf("memtopo: watcher of %q fell more than %d events behind: %w", w.prefix, w.max, topo.ErrCompacted)
	} else {
		w.queue = append(w.queue, topo.WatchResponse{Events: mine, Revision: topo.Revision(rev)})
		w.pending += len(mine)
	}
	w.signal()
}

func (w *watcher) fail(err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err == nil {
		w.err = err
	}
	w.signal()
}

func (w *watcher) signal() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// Watch implements topo.Store.
func (s *Store) Watch(ctx context.Context, prefix string, from topo.Revision) <-chan topo.WatchResponse {
	out := make(chan topo.WatchResponse, 1)
	if err := s.begin(ctx, OpWatch, prefix); err != nil {
		out <- topo.WatchResponse{Err: err}
		close(out)
		return out
	}
	w := &watcher{prefix: prefix, minRev: int64(from), max: s.opts.MaxWatchBacklog, wake: make(chan struct{}, 1)}
	s.mu.Lock()
	switch {
	case from > 0 && int64(from) < s.compactRev:
		w.err = fmt.Errorf("memtopo: watch %q from %d (compacted at %d): %w", prefix, from, s.compactRev, topo.ErrCompacted)
	case from > 0:
		for _, re := range s.events {
			if re.rev >= int64(from) {
				w.push(re.rev, re.events)
			}
		}
	}
	if w.err == nil {
		s.watchers[w] = struct{}{}
	}
	s.mu.Unlock()

	go func() {
		defer close(out)
		defer func() {
			s.mu.Lock()
			delete(s.watchers, w)
			s.mu.Unlock()
		}()
		for {
			w.mu.Lock()
			var next *topo.WatchResponse
			if len(w.queue) > 0 {
				r := w.queue[0]
				w.queue = w.queue[1:]
				w.pending -= len(r.Events)
				next = &r
			} else if w.err != nil {
				next = &topo.WatchResponse{Err: w.err}
			}
			w.mu.Unlock()
			if next == nil {
				select {
				case <-ctx.Done():
					return
				case <-w.wake:
				}
				continue
			}
			select {
			case <-ctx.Done():
				return
			case out <- *next:
			}
			if next.Err != nil {
				return
			}
		}
	}()
	return out
}

// progress queues a progress notification at rev; called with s.mu held,
// so it follows every event of rev and before.
func (w *watcher) progress(rev int64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err != nil {
		return
	}
	w.queue = append(w.queue, topo.WatchResponse{Revision: topo.Revision(rev)})
	w.signal()
}

// RequestProgress implements topo.Store: every open watch gets a progress
// notification at the current revision, after the events it still holds.
// It fails like a Watch (fault injection: OpWatch).
func (s *Store) RequestProgress(ctx context.Context) error {
	if err := s.begin(ctx, OpWatch, ""); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for w := range s.watchers {
		w.progress(s.rev)
	}
	return nil
}
