package store

import (
	"sync"

	"github.com/hashicorp/raft"
)

// logCache keeps the newest Raft log entries in memory in front of the log
// store, so that replication (which reads every entry back by index, twice
// per follower: the entry and its predecessor) and the FSM do not go to
// raft-wal for entries the leader has just written (a 64 KiB pread and a
// decode each). Consul and Nomad put hashicorp/raft's LogCache in the same
// place; this one differs in that the inner store's errors come back
// unchanged (raft.LogCache wraps them into strings) and that it keeps the
// inner store's monotonicity.
//
// Entries are cached only once the inner store has stored them (synced), so
// a cached entry is always one the log holds; a DeleteRange (a follower
// truncating a conflicting suffix, or compaction) empties the cache first.
type logCache struct {
	raft.LogStore
	mu   sync.RWMutex
	ring []*raft.Log
}

// newLogCache wraps store with a cache of the newest n entries (n > 0).
func newLogCache(store raft.LogStore, n int) *logCache {
	return &logCache{LogStore: store, ring: make([]*raft.Log, n)}
}

// GetLog implements raft.LogStore.
func (c *logCache) GetLog(idx uint64, log *raft.Log) error {
	c.mu.RLock()
	l := c.ring[idx%uint64(len(c.ring))]
	c.mu.RUnlock()
	if l != nil && l.Index == idx {
		*log = *l
		return nil
	}
	return c.LogStore.GetLog(idx, log)
}

// StoreLog implements raft.LogStore.
func (c *logCache) StoreLog(log *raft.Log) error { return c.StoreLogs([]*raft.Log{log}) }

// StoreLogs implements raft.LogStore.
func (c *logCache) StoreLogs(logs []*raft.Log) error {
	if err := c.LogStore.StoreLogs(logs); err != nil {
		return err
	}
	c.mu.Lock()
	for _, l := range logs {
		c.ring[l.Index%uint64(len(c.ring))] = l
	}
	c.mu.Unlock()
	return nil
}

// DeleteRange implements raft.LogStore.
func (c *logCache) DeleteRange(lo, hi uint64) error {
	c.mu.Lock()
	clear(c.ring)
	c.mu.Unlock()
	return c.LogStore.DeleteRange(lo, hi)
}

// IsMonotonic implements raft.MonotonicLogStore as the inner store does.
func (c *logCache) IsMonotonic() bool {
	m, ok := c.LogStore.(raft.MonotonicLogStore)
	return ok && m.IsMonotonic()
}
