package store

import "bytes"

// headCache keeps the encoded heads of recently written contexts (the
// contextv1.Context under contextKey, whose last_seq, counts and size every
// append reads and rewrites), so that an append does not look its context
// up in Pebble: that point read was the largest single cost of an apply
// (a memtable skiplist seek per append on every replica; see
// docs/benchmarks.md, "Performance round two: cell").
//
// It is a cache of the committed state and nothing else: a value is
// published only after the Pebble batch that wrote it is committed, every
// write of a context key through the txn (setRaw, del, delRange) updates or
// drops it, and a snapshot restore empties it. The state machine therefore
// reads exactly the bytes Pebble would return, and every replica, with or
// without the cache, applies identically (TestApplyShortcutsAgree).
//
// Only the FSM goroutine uses it (under fsm.mu read-locked by ApplyBatch,
// or write-locked by Restore), so it has no lock of its own.
type headCache struct {
	max  int
	vals map[string][]byte
}

func newHeadCache(n int) *headCache {
	if n <= 0 {
		return nil
	}
	return &headCache{max: n, vals: make(map[string][]byte, n)}
}

func (c *headCache) get(key []byte) ([]byte, bool) {
	if c == nil {
		return nil, false
	}
	v, ok := c.vals[string(key)]
	return v, ok
}

// set records key's committed value (nil: the key does not exist, which is
// cached too: a create_context looks its id up first).
func (c *headCache) set(key string, v []byte) {
	if c == nil {
		return
	}
	if _, ok := c.vals[key]; !ok && len(c.vals) >= c.max {
		for k := range c.vals { // drop an arbitrary entry
			delete(c.vals, k)
			break
		}
	}
	c.vals[key] = v
}

// dropRange forgets every cached key in [start, end).
func (c *headCache) dropRange(start, end []byte) {
	if c == nil || !rangeMayHoldContexts(start, end) {
		return
	}
	for k := range c.vals {
		if keyInRange([]byte(k), start, end) {
			delete(c.vals, k)
		}
	}
}

func (c *headCache) clear() {
	if c != nil {
		clear(c.vals)
	}
}

// inRange reports whether start <= k < end (a nil end is unbounded).
func keyInRange(k, start, end []byte) bool {
	return bytes.Compare(k, start) >= 0 && (end == nil || bytes.Compare(k, end) < 0)
}

// isContextKey reports whether key is a contextKey.
func isContextKey(key []byte) bool {
	if len(key) < 3 || key[0] != spaceTenant {
		return false
	}
	i := bytes.IndexByte(key[1:], 0)
	return i >= 0 && 1+i+1 < len(key) && key[1+i+1] == kindContext
}

// rangeMayHoldContexts is false only for a range inside one tenant's
// non-context kind (the dedup queue and entry ranges the hot path deletes),
// so those need no scan of the cache.
func rangeMayHoldContexts(start, end []byte) bool {
	if len(start) < 3 || start[0] != spaceTenant || end == nil {
		return true
	}
	i := bytes.IndexByte(start[1:], 0)
	if i < 0 || 1+i+1 >= len(start) {
		return true
	}
	p := start[:1+i+2] // "t" tenant "\x00" kind
	return p[len(p)-1] == kindContext || !bytes.HasPrefix(end, p)
}

// headTxn is a txn's side of the cache: the context keys it wrote or read,
// published to the cache when the txn commits.
type headTxn struct {
	// writes are the values this txn wrote (nil: deleted), newest last
	// wins; reads are values it read from Pebble before writing them.
	writes map[string][]byte
	reads  map[string][]byte
	ranges [][2][]byte
}

// lookup answers a context key from the txn's own writes, then from the
// cache; ok is false when Pebble must be asked.
func (h *headTxn) lookup(c *headCache, key []byte) (v []byte, ok bool) {
	if c == nil {
		return nil, false
	}
	if v, ok := h.writes[string(key)]; ok {
		return v, true
	}
	if len(h.ranges) > 0 {
		return nil, false // a range delete of this txn may cover it: ask the batch
	}
	return c.get(key)
}

func (h *headTxn) wrote(key, v []byte) {
	if h.writes == nil {
		h.writes = map[string][]byte{}
	}
	h.writes[string(key)] = v
}

func (h *headTxn) read(key, v []byte) {
	if h.reads == nil {
		h.reads = map[string][]byte{}
	}
	h.reads[string(key)] = v
}

func (h *headTxn) deletedRange(start, end []byte) {
	h.ranges = append(h.ranges, [2][]byte{bytes.Clone(start), bytes.Clone(end)})
	for k := range h.writes {
		if keyInRange([]byte(k), start, end) {
			h.writes[k] = nil
		}
	}
}

// publish applies the txn to the cache once its batch is committed: what
// it read, then its range deletes, then its writes (which came after).
func (h *headTxn) publish(c *headCache) {
	if c == nil {
		return
	}
	for k, v := range h.reads {
		c.set(k, v)
	}
	for _, r := range h.ranges {
		c.dropRange(r[0], r[1])
	}
	for k, v := range h.writes {
		c.set(k, v)
	}
}
