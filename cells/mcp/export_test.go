package mcp

// FastServed is the number of tool calls the fast path served.
func (w *Worker) FastServed() uint64 { return w.fastServed.Load() }
