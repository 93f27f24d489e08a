// Package readcache is the change-coherent read cache of MCP workers and
// routers (docs/cache.md): a bounded LRU of recent context reads and
// memory values, each stamped with the tenant cursor (tseq) its answer
// was read at (the cell's x-cellplane-tseq header, internal/tenantmd),
// and one follower per cached tenant that reads the tenant's change
// stream (ContextService.WatchChanges) and drops exactly the answers each
// change made stale.
//
// The invariant: a cached answer is never older than the last change the
// follower has applied. Fill refuses an answer read before the follower's
// cursor; a change drops the answers filled before it; a stream that
// cannot resume from the cursor (CURSOR_EXPIRED, WRONG_CELL) or goes
// back drops the whole tenant. Get serves an answer only to a STALE read
// (Staleness) whose max_staleness covers the time since the follower was
// last known current (a message of the stream, or a fill at its cursor).
// LINEARIZABLE and LEADER reads never reach the cache.
//
// Keys hold everything the answer depends on: the tenant, the context
// and read parameters, or the memory's owner (the authenticated
// principal, "" for the tenant's shared memory) and key. The cache never
// authorises: callers look it up only after their own authentication and
// scope checks, with the authenticated tenant and principal.
//
//	c, err := readcache.New(cfg, watch) // nil when cfg.MaxBytes is 0
//	if d, ok := c.Staleness(req.GetReadOptions()); ok {
//		if v, hit := c.Get(readcache.ReadKey(tenant, req), d); hit { ... }
//	}
//	// after a read from the cell, with its header's cursor:
//	c.Fill(readcache.ReadKey(tenant, req), resp, readcache.Cursor{Tseq: tseq, TimeUnixNano: at})
package readcache
