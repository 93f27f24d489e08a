package mcp_test

import (
	"testing"
	"time"

	"github.com/cellplane/cellplane/cells/mcp"
	tu "github.com/cellplane/cellplane/internal/testutil"
	cellv1 "github.com/cellplane/cellplane/proto/cellplane/cell/v1"
)

// TestToolWritesAreAudited: every write a tool makes reaches the cell's
// audit log with the authenticated principal and the origin mcp:<tool>,
// on the SDK path and the fast path alike (the real go-sdk client).
func TestToolWritesAreAudited(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a cell node")
	}
	cell := startCell(t, "acme")
	w := startWorker(t, mcp.DefaultConfig(), cell, fakeAuth{})
	ctx := tu.Context(t, 30*time.Second)
	for _, version := range []string{"2026-07-28", "2025-06-18"} {
		cs := connect(t, ctx, w.url("acme"), version, bearer("alice@example.com"))
		var c createOut
		ok(t, ctx, cs, "context_create", obj{}, &c)
		ok(t, ctx, cs, "context_append", obj{"context_id": c.ContextID, "entries": entries("hi")}, nil)
		ok(t, ctx, cs, "memory_put", obj{"key": "k-" + version, "value": "v"}, nil)
	}
	resp, err := cellv1.NewCellServiceClient(cell).ListAudit(ctx, &cellv1.ListAuditRequest{Tenant: "acme", Principal: "alice@example.com"})
	if err != nil {
		t.Fatal(err)
	}
	var origins []string
	for _, r := range resp.GetRecords() {
		origins = append(origins, r.GetOrigin())
		if r.GetOrigin() != "mcp:"+map[string]string{"create_context": "context_create", "append": "context_append", "put_memory": "memory_put"}[r.GetOp()] {
			t.Errorf("record %v: origin does not name its tool", r)
		}
	}
	if len(origins) != 6 {
		t.Fatalf("alice's records have origins %v, want 6", origins)
	}
}
