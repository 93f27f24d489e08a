package mcp_test

import (
	"strconv"
	"testing"
	"time"

	"github.com/cellplane/cellplane/cells/mcp"
	"github.com/cellplane/cellplane/internal/cperr"
	tu "github.com/cellplane/cellplane/internal/testutil"
)

// TestEmbeddingArguments: context_append entries and memory_put take an
// embedding (a plain array of numbers) that reaches the state machine:
// the first fixes the tenant's dimension (a later one of another
// dimension, or all zeros, is refused), and a caller without the write
// scope writes nothing. The SDK and the fast path alike.
func TestEmbeddingArguments(t *testing.T) {
	cell := startCell(t, "acme")
	for _, fast := range []bool{false, true} {
		cfg := mcp.DefaultConfig()
		cfg.FastToolCalls = fast
		w := startWorker(t, cfg, cell, fakeAuth{})
		ctx := tu.Context(t, 20*time.Second)
		sfx := strconv.FormatBool(fast)
		alice := connect(t, ctx, w.url("acme"), "2026-07-28", bearer("alice-"+sfx+";memory:read,memory:write,contexts:read,contexts:write"))

		var put struct{ Revision uint64 }
		ok(t, ctx, alice, "memory_put", obj{"key": "k", "value": "v", "embedding": []float64{0.5, 0.25, 0}}, &put)
		fails(t, ctx, alice, "memory_put", obj{"key": "k2", "value": "v", "embedding": []float64{1, 0}}, cperr.InvalidArgument)
		fails(t, ctx, alice, "memory_put", obj{"key": "k3", "value": "v", "embedding": []float64{0, 0, 0}}, cperr.InvalidArgument)

		var c createOut
		ok(t, ctx, alice, "context_create", obj{}, &c)
		var a appendOut
		ok(t, ctx, alice, "context_append", obj{"context_id": c.ContextID, "entries": []obj{
			{"role": "user", "content": "hi", "embedding": []float64{1, 2, 3, 4}}}}, &a)
		fails(t, ctx, alice, "context_append", obj{"context_id": c.ContextID, "entries": []obj{
			{"role": "user", "content": "hi", "embedding": []float64{1, 2}}}}, cperr.InvalidArgument)

		ro := connect(t, ctx, w.url("acme"), "2026-07-28", bearer("alice-"+sfx+";memory:read"))
		fails(t, ctx, ro, "memory_put", obj{"key": "k4", "value": "v", "embedding": []float64{1, 0, 0}}, cperr.PermissionDenied)
		fails(t, ctx, alice, "memory_get", obj{"key": "k4"}, cperr.KeyNotFound)
	}
}
