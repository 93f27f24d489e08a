package readcache

import (
	"context"
	"errors"
	"io"
	"time"

	"github.com/cellplane/cellplane/internal/retry"
	"github.com/cellplane/cellplane/internal/rpcerr"
	contextv1 "github.com/cellplane/cellplane/proto/cellplane/context/v1"
)

// follow keeps one tenant's entries coherent: it reads the tenant's change
// stream from the tenant's cursor and drops what each change made stale.
// A broken stream is resumed from the cursor after the retry policy's
// backoff (no change is skipped, so the entries stay); a stream that
// cannot resume (CURSOR_EXPIRED, the tenant gone from the cell) or that
// breaks its own contract (a change at or before the cursor) makes the
// cache forget the tenant. It returns when ctx ends (the tenant was
// evicted or the cache closed).
func (c *Cache) follow(ctx context.Context, t *tenant) {
	b := c.cfg.Retry.Backoff()
	for {
		c.mu.Lock()
		after := t.cursor
		c.mu.Unlock()
		stream, err := c.watch(ctx, t.name, &contextv1.WatchChangesRequest{
			After: &contextv1.ChangeCursor{Tseq: after.Tseq, TimeUnixNano: after.TimeUnixNano},
		})
		if err == nil {
			err = c.receive(t, stream, b)
		}
		if ctx.Err() != nil {
			return
		}
		err = rpcerr.FromStatus(err)
		if isFatal(err) || errors.Is(err, errGap) {
			c.log.Warn("read cache: dropping the tenant's entries", "tenant", t.name, "tseq", after.Tseq, "err", err)
			c.m.dropped.WithLabelValues(dropReason(err)).Inc()
			c.mu.Lock()
			if c.tenants[t.name] == t {
				c.forgetLocked(t)
			}
			c.mu.Unlock()
			return
		}
		c.m.restarts.Inc()
		c.log.Debug("read cache: change stream broke; resuming", "tenant", t.name, "tseq", after.Tseq, "err", err)
		if retry.Sleep(ctx, b.Next()) != nil {
			return
		}
	}
}

// errGap: the stream delivered a change at or before the follower's
// cursor, or moved its cursor back: its history is not the one the
// entries were filled from.
var errGap = errors.New("readcache: the change stream went back")

func dropReason(err error) string {
	if errors.Is(err, errGap) {
		return "gap"
	}
	if isFatal(err) {
		return "stream_refused"
	}
	return "other"
}

// receive applies the stream's responses until it ends; it resets the
// backoff once the stream delivers.
func (c *Cache) receive(t *tenant, stream Stream, b *retry.Backoff) error {
	for {
		resp, err := stream.Recv()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return errors.New("readcache: the change stream ended")
			}
			return err
		}
		b.Reset()
		if err := c.apply(t, resp); err != nil {
			return err
		}
	}
}

// apply invalidates what one response's changes made stale and advances
// the tenant's cursor.
func (c *Cache) apply(t *tenant, resp *contextv1.WatchChangesResponse) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.tenants[t.name] != t {
		return nil // forgotten meanwhile; the follower is being stopped
	}
	now := c.now()
	for _, ch := range resp.GetChanges() {
		at := ch.GetCursor()
		if at.GetTseq() <= t.cursor.Tseq {
			return errGap
		}
		n := c.invalidateLocked(t, ch)
		if n < 0 {
			return nil // the tenant was forgotten (ERASED)
		}
		c.m.invalidations.WithLabelValues(kindLabel(ch.GetKind())).Add(float64(n))
		if ts := at.GetTimeUnixNano(); ts > 0 {
			c.m.lag.Observe(max(0, now.Sub(time.Unix(0, ts)).Seconds()))
		}
		t.cursor = Cursor{Tseq: at.GetTseq(), TimeUnixNano: at.GetTimeUnixNano()}
	}
	if cur := resp.GetCursor(); cur != nil {
		if cur.GetTseq() < t.cursor.Tseq {
			return errGap
		}
		t.cursor = Cursor{Tseq: cur.GetTseq(), TimeUnixNano: cur.GetTimeUnixNano()}
	}
	t.fresh = now
	c.gaugesLocked()
	return nil
}

// invalidateLocked drops the entries one change made stale: those filled
// before it (an entry at or after the change's tseq already reflects it).
// It returns how many it dropped, or -1 when it forgot the whole tenant.
func (c *Cache) invalidateLocked(t *tenant, ch *contextv1.Change) int {
	tseq := ch.GetCursor().GetTseq()
	drop := func(e *entry) int {
		if e.tseq >= tseq {
			return 0
		}
		if el, ok := c.entries[e.key]; ok {
			c.removeLocked(el)
			return 1
		}
		return 0
	}
	switch ch.GetKind() {
	case contextv1.ChangeKind_CHANGE_KIND_CONTEXT_CREATED,
		contextv1.ChangeKind_CHANGE_KIND_CONTEXT_APPENDED,
		contextv1.ChangeKind_CHANGE_KIND_CONTEXT_DELETED,
		contextv1.ChangeKind_CHANGE_KIND_CONTEXT_COMPACTED,
		contextv1.ChangeKind_CHANGE_KIND_CONTEXT_EXPIRED,
		contextv1.ChangeKind_CHANGE_KIND_CONTEXT_FORKED:
		// A fork names the new context; its source is unchanged. An
		// expiry sweep names no context: every context read may be gone.
		n := 0
		if ch.GetContextId() == "" {
			for e := range t.entries {
				if e.key.kind == 'r' {
					n += drop(e)
				}
			}
			return n
		}
		for e := range t.byCtx[ch.GetContextId()] {
			n += drop(e)
		}
		return n
	case contextv1.ChangeKind_CHANGE_KIND_MEMORY_PUT,
		contextv1.ChangeKind_CHANGE_KIND_MEMORY_DELETED,
		contextv1.ChangeKind_CHANGE_KIND_MEMORY_EXPIRED:
		if ch.GetMemoryKey() == "" {
			// An expiry sweep names no key: every memory value may be gone.
			n := 0
			for e := range t.entries {
				if e.key.kind == 'm' {
					n += drop(e)
				}
			}
			return n
		}
		k := Key{tenant: t.name, kind: 'm', id: memoryOwner(ch.GetMemoryScope(), ch.GetPrincipal()), sub: ch.GetMemoryKey()}
		if el, ok := c.entries[k]; ok {
			return drop(el.Value.(*entry))
		}
		return 0
	}
	// ERASED, and any kind this cache does not know: everything of the
	// tenant may have changed.
	c.m.invalidations.WithLabelValues(kindLabel(ch.GetKind())).Add(float64(len(t.entries)))
	c.forgetLocked(t)
	return -1
}

func kindLabel(k contextv1.ChangeKind) string {
	switch k {
	case contextv1.ChangeKind_CHANGE_KIND_CONTEXT_CREATED:
		return "context_created"
	case contextv1.ChangeKind_CHANGE_KIND_CONTEXT_APPENDED:
		return "context_appended"
	case contextv1.ChangeKind_CHANGE_KIND_CONTEXT_DELETED:
		return "context_deleted"
	case contextv1.ChangeKind_CHANGE_KIND_CONTEXT_COMPACTED:
		return "context_compacted"
	case contextv1.ChangeKind_CHANGE_KIND_CONTEXT_FORKED:
		return "context_forked"
	case contextv1.ChangeKind_CHANGE_KIND_CONTEXT_EXPIRED:
		return "context_expired"
	case contextv1.ChangeKind_CHANGE_KIND_MEMORY_PUT:
		return "memory_put"
	case contextv1.ChangeKind_CHANGE_KIND_MEMORY_DELETED:
		return "memory_deleted"
	case contextv1.ChangeKind_CHANGE_KIND_MEMORY_EXPIRED:
		return "memory_expired"
	case contextv1.ChangeKind_CHANGE_KIND_ERASED:
		return "erased"
	}
	return "unknown"
}
