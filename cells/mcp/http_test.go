package mcp_test

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/cellplane/cellplane/cells/mcp"
	"github.com/cellplane/cellplane/internal/testutil"
)

// legacyList is a tools/list call of the initialize-handshake era (the
// stateless handler serves it without initialize).
const legacyList = `{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{}}`

// modernList is a 2026-07-28 tools/list call carrying its _meta triple.
func modernList(version string) string {
	return `{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"_meta":{` +
		`"io.modelcontextprotocol/protocolVersion":"` + version + `",` +
		`"io.modelcontextprotocol/clientInfo":{"name":"raw","version":"v0"},` +
		`"io.modelcontextprotocol/clientCapabilities":{}}}}`
}

// TestHTTP sends raw HTTP requests for the protocol-level cases. No cell
// is needed: none of these requests reaches the backend.
func TestHTTP(t *testing.T) {
	cell := dial(t, "127.0.0.1:1") // never called
	cfg := mcp.DefaultConfig()
	cfg.MaxBodyBytes = 4096
	cfg.AllowedOrigins = []string{"https://app.example"}
	open := startWorker(t, cfg, cell, nil)
	authed := startWorker(t, cfg, cell, fakeAuth{})
	openHost := strings.TrimPrefix(open.base, "http://")

	hdr := func(kv ...string) http.Header {
		h := http.Header{"Content-Type": {"application/json"}, "Accept": {"application/json, text/event-stream"}}
		for i := 0; i+1 < len(kv); i += 2 {
			h.Set(kv[i], kv[i+1])
		}
		return h
	}
	big := `{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"pad":"` + strings.Repeat("x", 5000) + `"}}`

	tests := []struct {
		name     string
		w        *worker
		method   string
		path     string
		header   http.Header
		body     string
		chunked  bool
		want     int
		contains []string          // in the body
		wantHdr  map[string]string // header → substring
	}{
		{name: "legacy tools/list", w: open, method: "POST", path: "/t/acme/mcp", header: hdr("Mcp-Protocol-Version", "2025-06-18"), body: legacyList,
			want: 200, contains: []string{`"context_read"`, `"readOnlyHint":true`}},
		{name: "legacy without version header (2025-03-26)", w: open, method: "POST", path: "/t/acme/mcp", header: hdr(), body: legacyList,
			want: 200, contains: []string{`"memory_put"`}},
		{name: "modern tools/list", w: open, method: "POST", path: "/t/acme/mcp",
			header: hdr("Mcp-Protocol-Version", "2026-07-28", "Mcp-Method", "tools/list"), body: modernList("2026-07-28"),
			want: 200, contains: []string{`"context_append"`}},
		{name: "modern: header and _meta versions differ", w: open, method: "POST", path: "/t/acme/mcp",
			header: hdr("Mcp-Protocol-Version", "2026-07-28", "Mcp-Method", "tools/list"), body: modernList("2025-11-25"),
			want: 400, contains: []string{`-32020`}},
		{name: "modern: Mcp-Method header missing", w: open, method: "POST", path: "/t/acme/mcp",
			header: hdr("Mcp-Protocol-Version", "2026-07-28"), body: modernList("2026-07-28"),
			want: 400, contains: []string{`-32020`}},
		{name: "unsupported old version", w: open, method: "POST", path: "/t/acme/mcp", header: hdr("Mcp-Protocol-Version", "2024-11-05"), body: legacyList,
			want: 400, contains: []string{"Unsupported protocol version"}},
		{name: "unknown version", w: open, method: "POST", path: "/t/acme/mcp", header: hdr("Mcp-Protocol-Version", "2025-01-01"), body: legacyList,
			want: 400},
		{name: "unknown future version", w: open, method: "POST", path: "/t/acme/mcp",
			header: hdr("Mcp-Protocol-Version", "2099-01-01", "Mcp-Method", "tools/list"), body: modernList("2099-01-01"),
			want: 400, contains: []string{`-32022`}},
		{name: "GET is 405 without sessions", w: open, method: "GET", path: "/t/acme/mcp", header: hdr("Accept", "text/event-stream"),
			want: 405, wantHdr: map[string]string{"Allow": "POST"}},
		{name: "DELETE is 405 without a session", w: open, method: "DELETE", path: "/t/acme/mcp",
			want: 405, wantHdr: map[string]string{"Allow": "POST"}},
		{name: "DELETE of an unknown session is 404", w: open, method: "DELETE", path: "/t/acme/mcp", header: hdr("Mcp-Session-Id", "s1"),
			want: 404, contains: []string{"initialize again"}},
		{name: "GET of an unknown session is 404", w: open, method: "GET", path: "/t/acme/mcp", header: hdr("Mcp-Session-Id", "s1", "Accept", "text/event-stream"),
			want: 404},
		{name: "body over the limit", w: open, method: "POST", path: "/t/acme/mcp", header: hdr(), body: big,
			want: 413, contains: []string{"exceeds 4096 bytes"}},
		{name: "chunked body over the limit", w: open, method: "POST", path: "/t/acme/mcp", header: hdr(), body: big, chunked: true,
			want: 413},
		{name: "foreign Origin", w: open, method: "POST", path: "/t/acme/mcp", header: hdr("Origin", "http://evil.example"), body: legacyList,
			want: 403, contains: []string{"PERMISSION_DENIED"}},
		{name: "null Origin", w: open, method: "POST", path: "/t/acme/mcp", header: hdr("Origin", "null"), body: legacyList,
			want: 403},
		{name: "allowed Origin", w: open, method: "POST", path: "/t/acme/mcp", header: hdr("Origin", "https://app.example"), body: legacyList,
			want: 200},
		{name: "same-host Origin", w: open, method: "POST", path: "/t/acme/mcp", header: hdr("Origin", "http://"+openHost), body: legacyList,
			want: 200},
		{name: "malformed tenant", w: open, method: "POST", path: "/t/bad%20tenant/mcp", header: hdr(), body: legacyList,
			want: 404, contains: []string{"TENANT_NOT_FOUND"}},
		{name: "unknown path", w: open, method: "GET", path: "/other", want: 404},
		{name: "no credentials", w: authed, method: "POST", path: "/t/acme/mcp", header: hdr(), body: legacyList,
			want: 401, contains: []string{"UNAUTHENTICATED"},
			wantHdr: map[string]string{"WWW-Authenticate": `Bearer realm="cellplane", error="invalid_token", resource_metadata="` + authed.base + `/.well-known/oauth-protected-resource/t/acme/mcp"`}},
		{name: "denied", w: authed, method: "POST", path: "/t/acme/mcp", header: hdr("Authorization", "Bearer denied"), body: legacyList,
			want: 403, contains: []string{"PERMISSION_DENIED"}},
		{name: "authenticated", w: authed, method: "POST", path: "/t/acme/mcp", header: hdr("Authorization", "Bearer alice"), body: legacyList,
			want: 200},
		{name: "405 before authentication", w: authed, method: "GET", path: "/t/acme/mcp", want: 405},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testutil.Context(t, 10*time.Second)
			var body io.Reader
			if tc.body != "" {
				body = strings.NewReader(tc.body)
				if tc.chunked {
					body = io.MultiReader(body) // unknown length: sent chunked
				}
			}
			req, err := http.NewRequestWithContext(ctx, tc.method, tc.w.base+tc.path, body)
			if err != nil {
				t.Fatal(err)
			}
			for k, vs := range tc.header {
				req.Header[k] = vs
			}
			status, h, got := do(t, req)
			if status != tc.want {
				t.Fatalf("status %d, want %d; body %s", status, tc.want, got)
			}
			for _, s := range tc.contains {
				if !strings.Contains(got, s) {
					t.Errorf("body %s does not contain %s", got, s)
				}
			}
			for k, v := range tc.wantHdr {
				if !strings.Contains(h.Get(k), v) {
					t.Errorf("%s: %q, want %q", k, h.Get(k), v)
				}
			}
		})
	}

	t.Run("RFC 9728 metadata", func(t *testing.T) {
		ctx := testutil.Context(t, 10*time.Second)
		for _, w := range []*worker{authed, open} {
			req, _ := http.NewRequestWithContext(ctx, "GET", w.base+"/.well-known/oauth-protected-resource/t/acme/mcp", nil)
			status, h, body := do(t, req)
			if status != 200 || !strings.HasPrefix(h.Get("Content-Type"), "application/json") {
				t.Fatalf("status %d, %s: %s", status, h.Get("Content-Type"), body)
			}
			var doc struct {
				Resource             string   `json:"resource"`
				AuthorizationServers []string `json:"authorization_servers"`
				BearerMethods        []string `json:"bearer_methods_supported"`
			}
			if err := json.Unmarshal([]byte(body), &doc); err != nil {
				t.Fatal(err)
			}
			if doc.Resource != w.base+"/t/acme/mcp" || len(doc.BearerMethods) != 1 || doc.BearerMethods[0] != "header" {
				t.Fatalf("document %s", body)
			}
			if w == authed && (len(doc.AuthorizationServers) != 1 || doc.AuthorizationServers[0] != "https://auth.example") {
				t.Fatalf("authorization servers %v", doc.AuthorizationServers)
			}
		}
		req, _ := http.NewRequestWithContext(ctx, "GET", authed.base+"/.well-known/oauth-protected-resource/t/bad%20id/mcp", nil)
		if status, _, _ := do(t, req); status != 404 {
			t.Fatalf("malformed tenant: %d", status)
		}
	})
}

func do(t *testing.T, req *http.Request) (int, http.Header, string) {
	t.Helper()
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	res, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, res.Header, string(b)
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		edit func(*mcp.Config)
		ok   bool
	}{
		{"defaults", func(*mcp.Config) {}, true},
		{"origins", func(c *mcp.Config) { c.AllowedOrigins = []string{"https://a.example", "http://localhost:3000"} }, true},
		{"origin with path", func(c *mcp.Config) { c.AllowedOrigins = []string{"https://a.example/x"} }, false},
		{"origin without scheme", func(c *mcp.Config) { c.AllowedOrigins = []string{"a.example"} }, false},
		{"zero body", func(c *mcp.Config) { c.MaxBodyBytes = 0 }, false},
		{"zero timeout", func(c *mcp.Config) { c.CallTimeout = 0 }, false},
		{"zero read caps", func(c *mcp.Config) { c.MaxReadEntries, c.MaxReadBytes = 0, 0 }, false},
		{"zero sessions", func(c *mcp.Config) { c.MaxSessions = 0 }, false},
		{"zero subscriptions per session", func(c *mcp.Config) { c.MaxSubscriptionsPerSession = 0 }, false},
		{"negative idle timeout", func(c *mcp.Config) { c.SessionIdleTimeout = -1 }, false},
		{"no idle timeout", func(c *mcp.Config) { c.SessionIdleTimeout = 0 }, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := mcp.DefaultConfig()
			tc.edit(&cfg)
			if err := cfg.Validate(); (err == nil) != tc.ok {
				t.Fatalf("Validate() = %v, want ok=%v", err, tc.ok)
			}
		})
	}
}
