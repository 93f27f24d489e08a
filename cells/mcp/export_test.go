package mcp

import "github.com/cellplane/cellplane/internal/readcache"

// FastServed is the number of tool calls the fast path served.
func (w *Worker) FastServed() uint64 { return w.fastServed.Load() }

// ReadCache is the worker's read cache (nil: off).
func (w *Worker) ReadCache() *readcache.Cache { return w.cache }

// Sessions is the number of open 2025-era sessions.
func (w *Worker) Sessions() int { return w.sessions.count() }
