package mcp_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/cellplane/cellplane/cells/mcp"
	"github.com/cellplane/cellplane/internal/testutil"
)

// fastCase is one request of the differential test.
type fastCase struct {
	name    string
	method  string // default POST
	version string // Mcp-Protocol-Version ("" none)
	body    string
	header  []string // extra header name, value pairs ("-Name" deletes)
	chunked bool     // no Content-Length
	host    string   // the Host header ("": the listener's address)
	// served: the fast path must serve it (else the SDK must).
	served bool
}

// toolCall is a tools/call body: with _meta when version is 2026-07-28.
func toolCall(id any, version, tool, args string) string {
	idj, _ := json.Marshal(id)
	meta := ""
	if version == "2026-07-28" {
		meta = `"_meta":{"io.modelcontextprotocol/clientCapabilities":{"roots":{"listChanged":true}},` +
			`"io.modelcontextprotocol/clientInfo":{"name":"test","version":"v0"},"io.modelcontextprotocol/protocolVersion":"2026-07-28"},`
	}
	return fmt.Sprintf(`{"jsonrpc":"2.0","id":%s,"method":"tools/call","params":{%s"name":%q,"arguments":%s}}`, idj, meta, tool, args)
}

func fastCases() []fastCase {
	const (
		legacy = "2025-11-25"
		modern = "2026-07-28"
	)
	call := func(name string, served bool, version, tool, args string, header ...string) fastCase {
		h := append([]string{}, header...)
		if version == modern {
			h = append([]string{"Mcp-Method", "tools/call", "Mcp-Name", tool}, h...)
		}
		return fastCase{name: name, version: version, body: toolCall(7, version, tool, args), header: h, served: served}
	}
	big := `{"context_id":"c1","entries":[{"role":"user","content":"` + strings.Repeat("x", 5000) + `"}]}`
	cs := []fastCase{
		// Valid calls of every tool, both protocols.
		call("create legacy", true, legacy, "context_create", `{"context_id":"c1","labels":{"k":"v"}}`),
		call("create modern", true, modern, "context_create", `{"context_id":"c2"}`),
		call("create minted id", true, legacy, "context_create", `{"labels":{"a":"b<&>"}}`),
		call("create exists", true, legacy, "context_create", `{"context_id":"c1"}`),
		call("append", true, legacy, "context_append", `{"context_id":"c1","entries":[{"role":"user","content":"hi"},{"role":"assistant","content":"hello","metadata":{"m":"1"}}],"request_id":"r1"}`),
		call("append retried", true, modern, "context_append", `{"context_id":"c1","entries":[{"role":"user","content":"hi"},{"role":"assistant","content":"hello","metadata":{"m":"1"}}],"request_id":"r1"}`),
		call("append missing context", true, legacy, "context_append", `{"context_id":"nope","entries":[{"role":"user","content":"x"}]}`),
		call("append empty entries", true, legacy, "context_append", `{"context_id":"c1","entries":[]}`),
		call("append empty role", true, legacy, "context_append", `{"context_id":"c1","entries":[{"role":"","content":"x"}]}`),
		call("read", true, legacy, "context_read", `{"context_id":"c1"}`),
		call("read tail", true, modern, "context_read", `{"context_id":"c1","tail":1}`),
		call("read both", true, legacy, "context_read", `{"context_id":"c1","tail":1,"from_seq":1}`),
		call("read budget", true, legacy, "context_read", `{"context_id":"c1","max_entries":1,"max_bytes":1}`),
		call("compact", true, legacy, "context_compact", `{"context_id":"c1","up_to_seq":1,"summary":"said hi","request_id":"k1"}`),
		call("compact retried", true, modern, "context_compact", `{"context_id":"c1","up_to_seq":1,"summary":"said hi","request_id":"k1"}`),
		call("compact not further", true, legacy, "context_compact", `{"context_id":"c1","up_to_seq":1,"summary":"again"}`),
		call("read tokens", true, modern, "context_read", `{"context_id":"c1","max_tokens":5}`),
		call("read raw", true, legacy, "context_read", `{"context_id":"c1","raw":true,"from_seq":1}`),
		call("list", true, legacy, "context_list", `{}`),
		call("list modern", true, modern, "context_list", `{"page_token":""}`),
		call("put", true, legacy, "memory_put", `{"key":"k1","value":"v1"}`),
		call("put cas mismatch", true, modern, "memory_put", `{"key":"k1","value":"v2","expected_revision":7}`),
		call("get", true, legacy, "memory_get", `{"key":"k1"}`),
		call("get missing", true, legacy, "memory_get", `{"key":"nope"}`),
		call("get empty key", true, legacy, "memory_get", `{"key":""}`),
		call("mem list", true, modern, "memory_list", `{"prefix":"k"}`),
		call("mem delete", true, legacy, "memory_delete", `{"key":"k1"}`),
		call("delete", true, modern, "context_delete", `{"context_id":"c2"}`),
		call("read deleted", true, legacy, "context_read", `{"context_id":"c2"}`),
		call("bad context id", true, legacy, "context_read", `{"context_id":"a/b"}`),
		{name: "string id", version: legacy, body: toolCall("abc", legacy, "memory_get", `{"key":"k1"}`), served: true},
		{name: "negative id", version: legacy, body: toolCall(-5, legacy, "memory_get", `{"key":"k1"}`), served: true},
		{name: "big id", version: legacy, body: toolCall(int64(1)<<53, legacy, "memory_get", `{"key":"k1"}`), served: true},
		{name: "huge id", version: legacy, body: toolCall(uint64(1)<<63, legacy, "memory_get", `{"key":"k1"}`)},
		{name: "fraction id", version: legacy, body: `{"jsonrpc":"2.0","id":1.5,"method":"tools/call","params":{"name":"context_list","arguments":{}}}`},
		{name: "exponent id", version: legacy, body: `{"jsonrpc":"2.0","id":1e2,"method":"tools/call","params":{"name":"context_list","arguments":{}}}`},
		{name: "bool id", version: legacy, body: `{"jsonrpc":"2.0","id":true,"method":"tools/call","params":{"name":"context_list","arguments":{}}}`},
		{name: "object id", version: legacy, body: `{"jsonrpc":"2.0","id":{},"method":"tools/call","params":{"name":"context_list","arguments":{}}}`},
		{name: "version 1.0", version: legacy, body: `{"jsonrpc":"1.0","id":1,"method":"tools/call","params":{"name":"context_list","arguments":{}}}`},
		{name: "upper-case keys", version: legacy, body: `{"JSONRPC":"2.0","ID":1,"Method":"tools/call","Params":{"name":"context_list","arguments":{}}}`},
		{name: "duplicate method", version: legacy, body: `{"jsonrpc":"2.0","id":1,"method":"tools/list","method":"tools/call","params":{"name":"context_list","arguments":{}}}`, served: true},
		{name: "params null", version: legacy, body: `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":null}`},
		{name: "no version header", body: toolCall(3, "", "memory_list", `{}`), served: true},
		call("whitespace and accept params", true, legacy, "context_list", ` {}`, "Accept", "application/json;q=0.9, text/event-stream;q=0.8", "Content-Type", "application/json; charset=utf-8"),
		// Bad params: the SDK words these.
		call("missing required", false, legacy, "context_append", `{"context_id":"c1"}`),
		call("unknown argument", false, legacy, "context_read", `{"context_id":"c1","bogus":1}`),
		call("case-folded argument", false, legacy, "context_read", `{"Context_ID":"c1"}`),
		call("wrong type", false, modern, "context_create", `{"labels":{"a":1}}`),
		call("null argument", false, legacy, "memory_get", `{"key":null}`),
		call("negative seq", false, legacy, "context_read", `{"context_id":"c1","from_seq":-1}`),
		call("arguments array", false, legacy, "memory_get", `[1]`),
		{name: "no arguments", version: legacy, body: `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"context_list"}}`},
		{name: "null id", version: legacy, body: `{"jsonrpc":"2.0","id":null,"method":"tools/call","params":{"name":"context_list","arguments":{}}}`},
		{name: "no jsonrpc", version: legacy, body: `{"id":1,"method":"tools/call","params":{"name":"context_list","arguments":{}}}`},
		{name: "extra params key", version: legacy, body: `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"context_list","arguments":{},"x":1}}`},
		{name: "malformed json", version: legacy, body: `{"jsonrpc":"2.0","id":1,`},
		{name: "empty body", version: legacy, body: ``},
		call("unknown tool", false, legacy, "no_such_tool", `{}`),
		call("unknown tool modern", false, modern, "no_such_tool", `{}`),
		// Headers.
		{name: "unsupported version", version: "1999-01-01", body: toolCall(1, "", "context_list", `{}`)},
		{name: "meta on legacy", version: legacy, body: toolCall(1, modern, "context_list", `{}`)},
		{name: "modern without meta", version: modern, body: toolCall(1, legacy, "context_list", `{}`), header: []string{"Mcp-Method", "tools/call", "Mcp-Name", "context_list"}},
		{name: "modern without Mcp-Name", version: modern, body: toolCall(1, modern, "context_list", `{}`), header: []string{"Mcp-Method", "tools/call"}},
		{name: "modern Mcp-Name mismatch", version: modern, body: toolCall(1, modern, "context_list", `{}`), header: []string{"Mcp-Method", "tools/call", "Mcp-Name", "memory_list"}},
		{name: "modern without headers", version: modern, body: toolCall(1, modern, "context_list", `{}`)},
		call("wrong content type", false, legacy, "context_list", `{}`, "Content-Type", "text/plain"),
		call("accept json only", false, legacy, "context_list", `{}`, "Accept", "application/json"),
		call("accept sse only", false, legacy, "context_list", `{}`, "Accept", "text/event-stream"),
		call("last event id", false, legacy, "context_list", `{}`, "Last-Event-ID", "x"),
		{name: "foreign host", version: legacy, body: toolCall(1, legacy, "context_list", `{}`), host: "example.com"},
		{name: "localhost host", version: legacy, body: toolCall(1, legacy, "context_list", `{}`), host: "localhost", served: true},
		{name: "mapped loopback host", version: legacy, body: toolCall(1, legacy, "context_list", `{}`), host: "[::ffff:127.0.0.1]:80", served: true},
		{name: "other loopback host", version: legacy, body: toolCall(1, legacy, "context_list", `{}`), host: "127.0.0.2", served: true},
		call("foreign origin", false, legacy, "context_list", `{}`, "Origin", "https://evil.example"),
		// Authentication.
		call("no credentials", false, legacy, "memory_put", `{"key":"x","value":"y"}`, "-Authorization", ""),
		call("denied", false, legacy, "memory_put", `{"key":"x","value":"y"}`, "Authorization", "Bearer denied"),
		// Bodies.
		{name: "oversized", version: legacy, body: toolCall(1, legacy, "context_append", big)},
		{name: "oversized chunked", version: legacy, body: toolCall(1, legacy, "context_append", big), chunked: true},
		{name: "chunked", version: legacy, body: toolCall(1, legacy, "context_list", `{}`), chunked: true, served: true},
		// Everything else is the SDK's.
		{name: "batch", version: "2025-03-26", body: "[" + toolCall(1, "", "context_list", `{}`) + "]"},
		{name: "notification", version: legacy, body: `{"jsonrpc":"2.0","method":"notifications/initialized","params":{}}`},
		{name: "tools/list", version: legacy, body: `{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{}}`},
		{name: "initialize", body: `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"v"}}}`},
		{name: "unknown method", version: legacy, body: `{"jsonrpc":"2.0","id":1,"method":"bogus/method","params":{}}`},
		{name: "GET", method: "GET", version: legacy},
		{name: "DELETE", method: "DELETE", version: legacy},
	}
	return cs
}

// timestamps differ between the two runs; they are masked.
var timestampRE = regexp.MustCompile(`\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z`)
var mintedRE = regexp.MustCompile(`ctx-[A-Za-z0-9_-]+|[0-9a-f]{32}`)

type fastReply struct {
	status int
	header http.Header
	body   string
}

func sendFast(t *testing.T, w *worker, tenant string, c fastCase) fastReply {
	t.Helper()
	ctx := testutil.Context(t, 10*time.Second)
	var body io.Reader = strings.NewReader(c.body)
	if c.chunked {
		body = io.MultiReader(strings.NewReader(c.body)) // hides the length
	}
	method := c.method
	if method == "" {
		method = http.MethodPost
	}
	req, err := http.NewRequestWithContext(ctx, method, w.url(tenant), body)
	if err != nil {
		t.Fatal(err)
	}
	if c.host != "" {
		req.Host = c.host
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	req.Header.Set("Authorization", "Bearer alice")
	if c.version != "" {
		req.Header.Set("Mcp-Protocol-Version", c.version)
	}
	for i := 0; i+1 < len(c.header); i += 2 {
		if name, ok := strings.CutPrefix(c.header[i], "-"); ok {
			req.Header.Del(name)
			continue
		}
		req.Header.Set(c.header[i], c.header[i+1])
	}
	status, h, b := do(t, req)
	norm := func(s string) string {
		s = strings.ReplaceAll(s, w.base, "BASE")
		s = strings.ReplaceAll(s, tenant, "TENANT")
		s = strings.ReplaceAll(s, strings.TrimPrefix(w.base, "http://"), "HOST")
		return timestampRE.ReplaceAllString(s, "TIME")
	}
	out := http.Header{}
	for _, k := range []string{"Content-Type", "Cache-Control", "Www-Authenticate", "Allow", "Retry-After", "Mcp-Session-Id", "Connection"} {
		for _, v := range h.Values(k) {
			if k == "Mcp-Session-Id" {
				v = "SESSION" // minted per session (2025-era initialize)
			}
			out.Add(k, norm(v))
		}
	}
	return fastReply{status: status, header: out, body: norm(b)}
}

// TestFastPathMatchesSDK sends every request to a worker with the fast
// path and to one without it, each on a tenant of its own in one cell,
// and wants the same status, headers and body bytes (tenant, address,
// timestamps and minted ids masked). The cases the fast path must serve are checked to
// have been served by it, the others to have gone to the SDK.
func TestFastPathMatchesSDK(t *testing.T) {
	conn := startCell(t, "tenant-a", "tenant-b")
	cfg := mcp.DefaultConfig()
	cfg.MaxBodyBytes = 4096
	fast := startWorker(t, cfg, conn, fakeAuth{})
	cfg.FastToolCalls = false
	slow := startWorker(t, cfg, conn, fakeAuth{})
	// The Host cases run without authentication (fakeAuth checks the
	// audience against the Host header).
	cfg.FastToolCalls = true
	fastOpen := startWorker(t, cfg, conn, nil)
	cfg.FastToolCalls = false
	slowOpen := startWorker(t, cfg, conn, nil)
	for _, c := range fastCases() {
		fast, slow := fast, slow
		if c.host != "" {
			fast, slow = fastOpen, slowOpen
		}
		before := fast.FastServed()
		got := sendFast(t, fast, "tenant-a", c)
		served := fast.FastServed() - before
		want := sendFast(t, slow, "tenant-b", c)
		if slow.FastServed() != 0 {
			t.Fatalf("%s: the fast path served a call with FastToolCalls off", c.name)
		}
		if c.served != (served == 1) {
			t.Errorf("%s: fast path served %d calls, want served=%v (status %d %s)", c.name, served, c.served, got.status, got.body)
		}
		if got.status != want.status {
			t.Errorf("%s: status %d, SDK %d\nfast: %s\nSDK:  %s", c.name, got.status, want.status, got.body, want.body)
			continue
		}
		if !reflect.DeepEqual(got.header, want.header) {
			t.Errorf("%s: headers %v, SDK %v", c.name, got.header, want.header)
		}
		if !sameBody(got.body, want.body) {
			t.Errorf("%s: body differs\nfast: %s\nSDK:  %s", c.name, got.body, want.body)
		}
	}
}

// sameBody: the same bytes once minted ids are masked (stricter than
// JSON-equal: the fast path encodes in the SDK's field and key order).
func sameBody(a, b string) bool {
	return mintedRE.ReplaceAllString(a, "ID") == mintedRE.ReplaceAllString(b, "ID")
}

// TestFastPathRefusesUnauthorised: callers without credentials, refused
// ones and other principals are refused on the fast path, and nothing is
// written.
func TestFastPathRefusesUnauthorised(t *testing.T) {
	conn := startCell(t, "acme")
	w := startWorker(t, mcp.DefaultConfig(), conn, fakeAuth{})
	send := func(auth, tool, args string) fastReply {
		c := fastCase{name: tool, version: "2025-11-25", body: toolCall(1, "2025-11-25", tool, args), header: []string{"Authorization", auth}}
		if auth == "" {
			c.header = []string{"-Authorization", ""}
		}
		return sendFast(t, w, "acme", c)
	}
	if r := send("Bearer alice", "context_create", `{"context_id":"mine"}`); r.status != 200 || strings.Contains(r.body, "isError") {
		t.Fatalf("create: %d %s", r.status, r.body)
	}
	served := w.FastServed()
	for _, tc := range []struct {
		auth   string
		status int
	}{{"", 401}, {"Bearer denied", 403}} {
		for _, call := range [][2]string{
			{"memory_put", `{"key":"k","value":"v"}`},
			{"context_append", `{"context_id":"mine","entries":[{"role":"user","content":"x"}]}`},
			{"context_delete", `{"context_id":"mine"}`},
		} {
			if r := send(tc.auth, call[0], call[1]); r.status != tc.status {
				t.Fatalf("%q %s: %d %s, want %d", tc.auth, call[0], r.status, r.body, tc.status)
			}
		}
	}
	if w.FastServed() != served {
		t.Fatal("the fast path served an unauthenticated call")
	}
	// Another principal: the context looks missing and stays untouched.
	if r := send("Bearer bob", "context_append", `{"context_id":"mine","entries":[{"role":"user","content":"x"}]}`); !strings.Contains(r.body, "CONTEXT_NOT_FOUND") {
		t.Fatalf("bob's append: %d %s", r.status, r.body)
	}
	if r := send("Bearer bob", "context_delete", `{"context_id":"mine"}`); !strings.Contains(r.body, "CONTEXT_NOT_FOUND") {
		t.Fatalf("bob's delete: %d %s", r.status, r.body)
	}
	r := send("Bearer alice", "context_read", `{"context_id":"mine"}`)
	if !strings.Contains(r.body, `"entries":[]`) || !strings.Contains(r.body, `"last_seq":0`) {
		t.Fatalf("alice's context was written: %s", r.body)
	}
	if r := send("Bearer alice", "memory_get", `{"key":"k"}`); !strings.Contains(r.body, "KEY_NOT_FOUND") {
		t.Fatalf("memory was written: %s", r.body)
	}
	if w.FastServed() != served+4 {
		t.Fatalf("fast path served %d calls, want 4", w.FastServed()-served)
	}
}
