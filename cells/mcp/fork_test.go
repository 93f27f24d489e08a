package mcp_test

import (
	"slices"
	"testing"
	"time"

	"github.com/cellplane/cellplane/cells/mcp"
	"github.com/cellplane/cellplane/internal/cperr"
	tu "github.com/cellplane/cellplane/internal/testutil"
)

type forkOut struct {
	ContextID string `json:"context_id"`
	ForkedSeq uint64 `json:"forked_seq"`
	Parent    string `json:"parent_context_id"`
	ExpireAt  string `json:"expire_at"`
}

// TestForkAndRetentionTools drives context_fork and the retention fields
// of context_create and memory_put with the SDK's client, through a worker
// and a real cell.
func TestForkAndRetentionTools(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a cell node")
	}
	cell := startCell(t, "acme")
	w := startWorker(t, mcp.DefaultConfig(), cell, nil)
	ctx := tu.Context(t, 30*time.Second)
	cs := connect(t, ctx, w.url("acme"), "2026-07-28", nil)

	ok(t, ctx, cs, "context_create", obj{"context_id": "src"}, nil)
	ok(t, ctx, cs, "context_append", obj{"context_id": "src", "entries": entries("a", "b", "c")}, nil)

	var f, again forkOut
	ok(t, ctx, cs, "context_fork", obj{"context_id": "src", "at_seq": 2, "request_id": "fork-1"}, &f)
	if f.ContextID == "" || f.ForkedSeq != 2 || f.Parent != "src" {
		t.Fatalf("fork = %+v", f)
	}
	ok(t, ctx, cs, "context_fork", obj{"context_id": "src", "at_seq": 2, "request_id": "fork-1"}, &again)
	if again != f {
		t.Fatalf("retried fork = %+v, want the first %+v", again, f)
	}
	ok(t, ctx, cs, "context_append", obj{"context_id": f.ContextID, "entries": entries("F")}, nil)
	var r readOut
	ok(t, ctx, cs, "context_read", obj{"context_id": f.ContextID}, &r)
	if got := contents(r); !slices.Equal(got, []string{"a", "b", "F"}) || r.LastSeq != 3 {
		t.Fatalf("fork reads %v (last %d)", got, r.LastSeq)
	}
	var named forkOut
	ok(t, ctx, cs, "context_fork", obj{"context_id": f.ContextID, "new_context_id": "grandchild", "ttl_seconds": 3600}, &named)
	if named.ContextID != "grandchild" || named.ForkedSeq != 3 || named.ExpireAt == "" {
		t.Fatalf("fork of the fork = %+v", named)
	}
	fails(t, ctx, cs, "context_fork", obj{"context_id": "src", "at_seq": 9}, cperr.SequenceMismatch)
	fails(t, ctx, cs, "context_fork", obj{"context_id": "nope"}, cperr.ContextNotFound)
	fails(t, ctx, cs, "context_fork", obj{"context_id": "src", "new_context_id": "grandchild"}, cperr.AlreadyExists)

	// Deleting the source keeps the forks whole.
	ok(t, ctx, cs, "context_delete", obj{"context_id": "src"}, nil)
	ok(t, ctx, cs, "context_read", obj{"context_id": "grandchild"}, &r)
	if got := contents(r); !slices.Equal(got, []string{"a", "b", "F"}) {
		t.Fatalf("after the source's delete the fork of the fork reads %v", got)
	}

	// Retention.
	var c struct {
		ContextID string `json:"context_id"`
		ExpireAt  string `json:"expire_at"`
	}
	ok(t, ctx, cs, "context_create", obj{"context_id": "ttl", "ttl_seconds": 60}, &c)
	if at, err := time.Parse(time.RFC3339Nano, c.ExpireAt); err != nil || time.Until(at) <= 0 || time.Until(at) > 2*time.Minute {
		t.Fatalf("expire_at %q (%v)", c.ExpireAt, err)
	}
	fails(t, ctx, cs, "context_create", obj{"ttl_seconds": 60, "expire_at": "2030-01-01T00:00:00Z"}, cperr.InvalidArgument)
	fails(t, ctx, cs, "context_create", obj{"expire_at": "tomorrow"}, cperr.InvalidArgument)
	past := time.Now().Add(-time.Minute).UTC().Format(time.RFC3339)
	ok(t, ctx, cs, "context_create", obj{"context_id": "gone", "expire_at": past}, nil)
	fails(t, ctx, cs, "context_read", obj{"context_id": "gone"}, cperr.ContextNotFound)

	var p struct {
		Revision uint64 `json:"revision"`
		ExpireAt string `json:"expire_at"`
	}
	ok(t, ctx, cs, "memory_put", obj{"key": "k", "value": "v", "ttl_seconds": 60}, &p)
	if p.ExpireAt == "" {
		t.Fatalf("memory_put with a ttl = %+v", p)
	}
	ok(t, ctx, cs, "memory_put", obj{"key": "old", "value": "v", "expire_at": past}, nil)
	fails(t, ctx, cs, "memory_get", obj{"key": "old"}, cperr.KeyNotFound)
	var got revOut
	ok(t, ctx, cs, "memory_get", obj{"key": "k"}, &got)
	if got.Value != "v" {
		t.Fatalf("memory_get = %+v", got)
	}
}
