package mcpproxy

import (
	"encoding/base64"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/cellplane/cellplane/internal/testutil"
)

// A 2025-era session opened through the proxy is served by the worker
// that opened it, request after request (its standalone SSE stream keeps
// that worker the busiest, so least connections alone would send the
// next POST elsewhere, which does not know the session); the client sees
// the worker's address in the session id. A session id naming an address
// that is not one of the tenant's workers is not forwarded (404), nor is
// one whose worker left the route, or does not answer: the client
// initializes again.
func TestSessionAffinity(t *testing.T) {
	var hits [3]atomic.Int64
	var workers []string
	for i := range hits {
		workers = append(workers, mcpWorker(t, "w", &hits[i]))
	}
	var evilHits atomic.Int64
	evil := mcpWorker(t, "evil", &evilHits)
	var mu sync.Mutex
	route := slices.Clone(workers)
	proxy := newProxyResolver(t, func(tenant string) (Route, bool) {
		mu.Lock()
		defer mu.Unlock()
		return Route{Cell: "c1", Epoch: 1, Workers: route}, tenant == "acme"
	}, func(*http.Request, string) error { return nil })
	ctx := testutil.Context(t, 20*time.Second)
	endpoint := "http://" + proxy + "/t/acme/mcp"

	client := mcp.NewClient(&mcp.Implementation{Name: "test-client", Version: "v0"}, nil)
	cs, err := client.Connect(ctx, &mcp.StreamableClientTransport{Endpoint: endpoint, MaxRetries: -1},
		&mcp.ClientSessionOptions{ProtocolVersion: "2025-06-18"})
	if err != nil {
		t.Fatal(err)
	}
	defer cs.Close()
	for i := range 5 {
		if _, err := cs.ListTools(ctx, nil); err != nil {
			t.Fatalf("request %d of the session: %v", i, err)
		}
		if res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"text": "x"}}); err != nil || res.IsError {
			t.Fatalf("call %d: %v %v", i, res, err)
		}
	}
	enc, inner, ok := strings.Cut(cs.ID(), ".")
	addr, _ := base64.RawURLEncoding.DecodeString(enc)
	home := slices.Index(workers, string(addr))
	if !ok || inner == "" || home < 0 {
		t.Fatalf("session id %q names %q, not a worker", cs.ID(), addr)
	}
	for i := range hits {
		if n := hits[i].Load(); (i == home) != (n > 0) {
			t.Fatalf("worker %d saw %d requests (the session's worker is %d)", i, n, home)
		}
	}

	post := func(sid string) int {
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, strings.NewReader(`{"jsonrpc":"2.0","id":9,"method":"tools/list"}`))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "application/json, text/event-stream")
		req.Header.Set("Mcp-Protocol-Version", "2025-06-18")
		req.Header.Set(SessionHeader, sid)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	// Forged: the session id names another server.
	if code := post(encodeSession(evil, inner)); code != http.StatusNotFound || evilHits.Load() != 0 {
		t.Fatalf("forged session prefix: %d, %d requests reached the named server", code, evilHits.Load())
	}
	for _, sid := range []string{inner, "!!." + inner, "." + inner, enc + "."} {
		if code := post(sid); code != http.StatusNotFound {
			t.Fatalf("session id %q: %d, want 404", sid, code)
		}
	}
	// A worker in the route that does not answer.
	mu.Lock()
	route = append(route, "127.0.0.1:1")
	mu.Unlock()
	if code := post(encodeSession("127.0.0.1:1", inner)); code != http.StatusNotFound {
		t.Fatalf("session of an unreachable worker: %d, want 404", code)
	}
	// The session's worker leaves the route.
	before := hits[home].Load()
	mu.Lock()
	route = slices.Delete(slices.Clone(route), home, home+1)
	mu.Unlock()
	if code := post(cs.ID()); code != http.StatusNotFound || hits[home].Load() != before {
		t.Fatalf("session of a worker gone from the route: %d (forwarded: %v)", code, hits[home].Load() != before)
	}
	if _, err := cs.ListTools(ctx, nil); err == nil {
		t.Fatal("the client's session survived its worker")
	}
	// End the worker's session (the client can no longer reach it).
	req, _ := http.NewRequestWithContext(ctx, http.MethodDelete, "http://"+workers[home]+"/t/acme/mcp", nil)
	req.Header.Set(SessionHeader, inner)
	if resp, err := http.DefaultClient.Do(req); err == nil {
		resp.Body.Close()
	}
}

func TestSessionEncoding(t *testing.T) {
	for _, c := range []struct{ addr, sid string }{{"127.0.0.1:8080", "ABC"}, {"[::1]:9", "x.y"}, {"h", "s"}} {
		addr, sid, ok := decodeSession(encodeSession(c.addr, c.sid))
		if !ok || addr != c.addr || sid != c.sid {
			t.Fatalf("%v: decoded %q %q %v", c, addr, sid, ok)
		}
	}
}
