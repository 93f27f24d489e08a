package mcpauth

import (
	"container/list"
	"math"
	"time"
)

// lru is a bounded least-recently-used map. Putting into a full lru evicts
// the least recently used entry, one at a time: a flood of new keys never
// drops the whole cache. Not safe for concurrent use (the Authenticator's
// mutex guards it).
type lru[V any] struct {
	max int
	ll  *list.List // front: most recently used
	m   map[string]*list.Element
}

type lruEntry[V any] struct {
	key string
	val V
}

func newLRU[V any](max int) *lru[V] {
	return &lru[V]{max: max, ll: list.New(), m: make(map[string]*list.Element)}
}

// get returns key's value and marks it used.
func (c *lru[V]) get(key string) (V, bool) {
	e, ok := c.m[key]
	if !ok {
		var zero V
		return zero, false
	}
	c.ll.MoveToFront(e)
	return e.Value.(*lruEntry[V]).val, true
}

// put sets key's value and reports whether another entry was evicted to
// make room.
func (c *lru[V]) put(key string, val V) (evicted bool) {
	if e, ok := c.m[key]; ok {
		e.Value.(*lruEntry[V]).val = val
		c.ll.MoveToFront(e)
		return false
	}
	if c.ll.Len() >= c.max {
		if last := c.ll.Back(); last != nil {
			c.ll.Remove(last)
			delete(c.m, last.Value.(*lruEntry[V]).key)
			evicted = true
		}
	}
	c.m[key] = c.ll.PushFront(&lruEntry[V]{key: key, val: val})
	return evicted
}

func (c *lru[V]) remove(key string) {
	if e, ok := c.m[key]; ok {
		c.ll.Remove(e)
		delete(c.m, key)
	}
}

func (c *lru[V]) len() int { return c.ll.Len() }

// bucket is a token bucket: rate tokens per second up to burst. Not safe
// for concurrent use.
type bucket struct {
	rate   float64
	burst  float64
	tokens float64
	last   time.Time
}

func newBucket(rate float64, burst int) *bucket {
	return &bucket{rate: rate, burst: float64(burst), tokens: float64(burst)}
}

// take takes one token at now, or says how long until one is there.
func (b *bucket) take(now time.Time) (ok bool, wait time.Duration) {
	if !b.last.IsZero() {
		b.tokens = math.Min(b.burst, b.tokens+now.Sub(b.last).Seconds()*b.rate)
	}
	b.last = now
	if b.tokens >= 1 {
		b.tokens--
		return true, 0
	}
	return false, time.Duration((1 - b.tokens) / b.rate * float64(time.Second))
}
