package controller

import (
	"cmp"
	"context"
	"errors"
	"slices"
	"time"

	"github.com/cellplane/cellplane/controlplane/catalog"
	"github.com/cellplane/cellplane/controlplane/topo"
	"github.com/cellplane/cellplane/internal/retry"
)

// historyEntry is a finished workflow record (a move or a failover) that
// the history bounds may delete.
type historyEntry struct {
	key      string
	v        topo.Version
	finished time.Time // when it ended (its last update)
}

// follow calls fn for every key under prefix now (as puts), then for each
// change the watch shows, until ctx ends; a broken watch lists again.
func (r *runner) follow(ctx context.Context, prefix string, fn func(topo.Event)) {
	c := r.c
	backoff := c.backoff()
	for ctx.Err() == nil {
		rev, err := catalog.Each(ctx, c.st, prefix, 0, func(kv topo.KV) error {
			fn(topo.Event{Type: topo.EventPut, KV: kv})
			return nil
		})
		if err != nil {
			if ctx.Err() == nil {
				wait := backoff.Next()
				c.log.Warn("listing failed; retrying", "prefix", prefix, "err", err, "retry_in", wait)
				_ = retry.Sleep(ctx, wait)
			}
			continue
		}
		backoff.Reset()
		for resp := range c.st.Watch(ctx, prefix, rev+1) {
			if resp.Err != nil {
				if ctx.Err() == nil {
					c.log.Warn("watch ended; listing again", "prefix", prefix, "err", resp.Err)
				}
				break
			}
			for _, ev := range resp.Events {
				fn(ev)
			}
		}
	}
}

// spawn runs fn in a goroutine unless one runs already under key, holding
// a slot of sem (nil: none) while it runs; the term ends only when every
// spawned goroutine has (the runner's WaitGroup).
func (r *runner) spawn(ctx context.Context, key string, sem chan struct{}, fn func(context.Context)) {
	r.mu.Lock()
	if r.running[key] {
		r.mu.Unlock()
		return
	}
	r.running[key] = true
	r.mu.Unlock()
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		defer func() {
			r.mu.Lock()
			delete(r.running, key)
			r.mu.Unlock()
		}()
		if sem != nil {
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				return
			}
			defer func() { <-sem }()
		}
		fn(ctx)
	}()
}

// every runs pass now, then every interval and whenever wake (may be nil)
// fires, until ctx ends or this replica is found not to lead; a failed
// pass is logged and retried at the next one.
func (r *runner) every(ctx context.Context, interval time.Duration, wake <-chan struct{}, what string, pass func(context.Context) error) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		err := pass(ctx)
		switch {
		case errors.Is(err, errNotLeader):
			return
		case err != nil && ctx.Err() == nil:
			r.c.log.Warn(what+" failed; retrying at the next pass", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-wake:
		}
	}
}

// pruneHistory deletes the finished records beyond the newest keep, and
// those that ended before now − ttl, in leader-guarded transactions (a
// record that changed meanwhile is left for the next pass).
func (r *runner) pruneHistory(ctx context.Context, finished []historyEntry, keep int, ttl time.Duration) error {
	slices.SortFunc(finished, func(a, b historyEntry) int {
		return cmp.Or(b.finished.Compare(a.finished), cmp.Compare(a.key, b.key))
	})
	cutoff := time.Now().Add(-ttl)
	var conds []topo.Cond
	var ops []topo.Op
	flush := func() error {
		if len(ops) == 0 {
			return nil
		}
		err := r.commit(ctx, conds, ops)
		conds, ops = nil, nil
		if err != nil && !isConflict(err) {
			return err
		}
		return nil
	}
	for i, e := range finished {
		if i < keep && e.finished.After(cutoff) {
			continue
		}
		conds = append(conds, topo.IfVersion(e.key, e.v))
		ops = append(ops, topo.Del(e.key))
		if len(ops) == maxOpsPerTxn/2 {
			if err := flush(); err != nil {
				return err
			}
		}
	}
	return flush()
}
