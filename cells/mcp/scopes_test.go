package mcp_test

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/cellplane/cellplane/cells/mcp"
	"github.com/cellplane/cellplane/internal/auth"
	"github.com/cellplane/cellplane/internal/cperr"
	tu "github.com/cellplane/cellplane/internal/testutil"
)

// TestToolScopes: every tool the worker registers has a scope (a new tool
// without a row panics at construction and fails here); a caller sees
// only the tools its scopes allow, is refused the others with
// PERMISSION_DENIED and nothing is written; the protected-resource
// metadata lists every scope. The fast path answers alike.
func TestToolScopes(t *testing.T) {
	cell := startCell(t, "acme")
	for _, fast := range []bool{false, true} {
		cfg := mcp.DefaultConfig()
		cfg.FastToolCalls = fast
		var logs syncBuffer
		cfg.Logger = slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
		w := startWorker(t, cfg, cell, fakeAuth{})
		ctx := tu.Context(t, 20*time.Second)

		all := connect(t, ctx, w.url("acme"), "2026-07-28", bearer("root;"+strings.Join(auth.AllScopeStrings(), ",")))
		lt, err := all.ListTools(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, tool := range lt.Tools {
			names = append(names, tool.Name)
			if _, ok := mcp.ToolScopes[tool.Name]; !ok {
				t.Errorf("tool %s has no scope", tool.Name)
			}
		}
		if len(names) != len(mcp.ToolScopes)-1 { // resources/read is not a tool
			t.Errorf("tools %v; ToolScopes has %d rows", names, len(mcp.ToolScopes))
		}

		mem := connect(t, ctx, w.url("acme"), "2026-07-28", bearer("m;memory:read,memory:write"))
		lt, err = mem.ListTools(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		names = names[:0]
		for _, tool := range lt.Tools {
			names = append(names, tool.Name)
		}
		slices.Sort(names)
		if want := []string{"memory_delete", "memory_get", "memory_list", "memory_put", "memory_search"}; !slices.Equal(names, want) {
			t.Errorf("memory-only tools/list = %v", names)
		}
		fails(t, ctx, mem, "context_create", obj{"context_id": "nope"}, cperr.PermissionDenied)
		fails(t, ctx, mem, "context_list", obj{}, cperr.PermissionDenied)
		if _, err := mem.ReadResource(ctx, &sdk.ReadResourceParams{URI: "cellplane://contexts/nope"}); err == nil {
			t.Error("resources/read without contexts:read succeeded")
		}
		// Nothing was written: the full-scope caller does not find it.
		fails(t, ctx, all, "context_read", obj{"context_id": "nope"}, cperr.ContextNotFound)

		ro := connect(t, ctx, w.url("acme"), "2026-07-28", bearer("m;memory:read"))
		fails(t, ctx, ro, "memory_put", obj{"key": "k", "value": "v"}, cperr.PermissionDenied)
		fails(t, ctx, mem, "memory_get", obj{"key": "k"}, cperr.KeyNotFound)

		// A client cannot grant itself scopes through the worker's header.
		h := bearer("m;memory:read")
		h.Set(mcp.ScopesHeader, "contexts:write")
		sneaky := connect(t, ctx, w.url("acme"), "2026-07-28", h)
		fails(t, ctx, sneaky, "context_create", obj{"context_id": "nope"}, cperr.PermissionDenied)

		// Every tool call's log line names its principal, at Info.
		for _, line := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
			var rec map[string]any
			if json.Unmarshal([]byte(line), &rec) != nil || rec["msg"] != "MCP tool call" {
				continue
			}
			if p, _ := rec["principal"].(string); p != "m" && p != "root" {
				t.Errorf("tool-call log line without the principal: %s", line)
			}
		}
		if !strings.Contains(logs.String(), `"principal":"m"`) {
			t.Errorf("no tool-call log line with the principal: %s", logs.String())
		}

		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, w.base+"/.well-known/oauth-protected-resource/t/acme/mcp", nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var doc mcp.ProtectedResourceMetadata
		err = json.NewDecoder(resp.Body).Decode(&doc)
		resp.Body.Close()
		if err != nil || !slices.Equal(doc.ScopesSupported, auth.AllScopeStrings()) {
			t.Errorf("scopes_supported = %v (%v)", doc.ScopesSupported, err)
		}
	}
}

// syncBuffer is a bytes.Buffer safe for the worker's concurrent logs.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}
func (s *syncBuffer) String() string { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }
