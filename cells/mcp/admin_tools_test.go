package mcp_test

import (
	"slices"
	"testing"
	"time"

	"github.com/cellplane/cellplane/cells/mcp"
	"github.com/cellplane/cellplane/internal/auth"
	"github.com/cellplane/cellplane/internal/cperr"
	tu "github.com/cellplane/cellplane/internal/testutil"
)

// TestAdminTools: audit_read and erase_subject are a tenant admin's only.
// A caller without the admin scope does not see them in tools/list, is
// refused with PERMISSION_DENIED and erases nothing; an admin reads the
// audit log (the user's write, with its principal and tool) and erases a
// context, which the user then finds gone; the erase is audited without
// the context's id.
func TestAdminTools(t *testing.T) {
	cell := startCell(t, "acme")
	for _, fast := range []bool{false, true} {
		cfg := mcp.DefaultConfig()
		cfg.FastToolCalls = fast
		w := startWorker(t, cfg, cell, fakeAuth{})
		ctx := tu.Context(t, 30*time.Second)
		id := "secret-" + map[bool]string{false: "sdk", true: "fast"}[fast]

		user := connect(t, ctx, w.url("acme"), "2026-07-28", bearer("u"))
		lt, err := user.ListTools(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		for _, tool := range lt.Tools {
			if mcp.ToolScopes[tool.Name] == auth.ScopeAdmin {
				t.Errorf("tools/list of a caller without the admin scope shows %s", tool.Name)
			}
		}
		ok(t, ctx, user, "context_create", obj{"context_id": id}, nil)
		ok(t, ctx, user, "context_append", obj{"context_id": id, "entries": entries("my card is 4111")}, nil)
		fails(t, ctx, user, "erase_subject", obj{"context_id": id}, cperr.PermissionDenied)
		fails(t, ctx, user, "audit_read", obj{}, cperr.PermissionDenied)
		ok(t, ctx, user, "context_read", obj{"context_id": id}, nil) // nothing was erased

		admin := connect(t, ctx, w.url("acme"), "2026-07-28", bearer("root;"+string(auth.ScopeAdmin)+","+string(auth.ScopeContextsRead)))
		lt, err = admin.ListTools(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, tool := range lt.Tools {
			names = append(names, tool.Name)
		}
		if !slices.Contains(names, "erase_subject") || !slices.Contains(names, "audit_read") {
			t.Fatalf("admin tools/list = %v", names)
		}
		var audit mcp.AuditOutput
		ok(t, ctx, admin, "audit_read", obj{"principal": "u"}, &audit)
		found := false
		for _, r := range audit.Records {
			if r.ContextID == id && r.Op == "append" && r.Origin == "mcp:context_append" {
				found = true
			}
		}
		if !found {
			t.Fatalf("audit of u = %+v, want the append of %s through mcp:context_append", audit.Records, id)
		}
		var er mcp.EraseOutput
		ok(t, ctx, admin, "erase_subject", obj{"context_id": id, "request_id": "e-" + id}, &er)
		if er.Tseq == 0 || er.ContextsDeleted != 1 || er.EventsScrubbed == 0 || er.HasStandby || er.StandbyApplied {
			t.Fatalf("erase = %+v", er)
		}
		var again mcp.EraseOutput
		ok(t, ctx, admin, "erase_subject", obj{"context_id": id, "request_id": "e-" + id}, &again)
		if !again.Deduplicated || again.Tseq != er.Tseq {
			t.Fatalf("retried erase = %+v, first %+v", again, er)
		}
		fails(t, ctx, user, "context_read", obj{"context_id": id}, cperr.ContextNotFound)
		fails(t, ctx, admin, "erase_subject", obj{"context_id": id, "principal": "u"}, cperr.InvalidArgument)
	}
}
