package mcpproxy

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	"go.uber.org/goleak"

	"github.com/cellplane/cellplane/internal/cperr"
	"github.com/cellplane/cellplane/internal/testutil"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// serve runs h on a loopback listener until the test ends.
func listenAndServe(t *testing.T, h http.Handler) string {
	t.Helper()
	l := testutil.Listen(t)
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	})
	return l.Addr().String()
}

type echoIn struct {
	Text string `json:"text" jsonschema:"what to echo"`
}
type echoOut struct {
	Echo   string `json:"echo"`
	Tenant string `json:"tenant"`
}

// mcpWorker is a small real Streamable-HTTP MCP server (the go-sdk) at
// /t/<tenant>/mcp, standing in for the MCP workers of a later issue.
func mcpWorker(t *testing.T, name string, hits *atomic.Int64) string {
	t.Helper()
	server := mcp.NewServer(&mcp.Implementation{Name: name, Version: "v0"}, nil)
	mcp.AddTool(server, &mcp.Tool{Name: "echo", Description: "echo text"},
		func(ctx context.Context, req *mcp.CallToolRequest, in echoIn) (*mcp.CallToolResult, echoOut, error) {
			return nil, echoOut{Echo: in.Text, Tenant: name}, nil
		})
	h := mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return server }, nil)
	mux := http.NewServeMux()
	mux.HandleFunc("/t/{tenant}/mcp", func(w http.ResponseWriter, r *http.Request) {
		if hits != nil {
			hits.Add(1)
		}
		h.ServeHTTP(w, r)
	})
	return listenAndServe(t, mux)
}

func newProxy(t *testing.T, workers map[string][]string, check Check) string {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Logger = testutil.Logger(t)
	cfg.MaxBodyBytes = 64 << 10
	if check == nil {
		check = func(*http.Request, string) error { return nil }
	}
	return newProxyResolver(t, func(tenant string) (Route, bool) {
		w, ok := workers[tenant]
		return Route{Cell: "c1", Epoch: 1, Workers: w}, ok
	}, check)
}

func newProxyResolver(t *testing.T, resolve Resolver, check Check) string {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Logger = testutil.Logger(t)
	cfg.MaxBodyBytes = 64 << 10
	p, err := New(cfg, resolve, check)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/t/", p)
	return listenAndServe(t, mux)
}

// An MCP client (go-sdk) talks to a worker through the proxy: initialize,
// list and call tools, with a session (GET for the event stream, DELETE at
// the end) — every method of the transport crosses the proxy.
func TestMCPClientThroughProxy(t *testing.T) {
	var hits atomic.Int64
	worker := mcpWorker(t, "acme-worker", &hits)
	proxy := newProxy(t, map[string][]string{"acme": {worker}}, nil)
	ctx := testutil.Context(t, 20*time.Second)

	client := mcp.NewClient(&mcp.Implementation{Name: "test-client", Version: "v0"}, nil)
	cs, err := client.Connect(ctx, &mcp.StreamableClientTransport{Endpoint: "http://" + proxy + "/t/acme/mcp", MaxRetries: -1}, nil)
	if err != nil {
		t.Fatal(err)
	}
	tools, err := cs.ListTools(ctx, nil)
	if err != nil || len(tools.Tools) != 1 || tools.Tools[0].Name != "echo" {
		t.Fatalf("tools: %v %v", tools, err)
	}
	res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"text": "hello"}})
	if err != nil || res.IsError {
		t.Fatalf("call: %v %v", res, err)
	}
	if got := fmt.Sprint(res.StructuredContent); !strings.Contains(got, "hello") {
		t.Fatalf("structured content %s", got)
	}
	if err := cs.Close(); err != nil {
		t.Fatal(err)
	}
	if hits.Load() < 3 {
		t.Fatalf("worker saw %d requests", hits.Load())
	}
}

// SSE passes through event by event: the client reads the first event
// while the worker still holds the second back.
func TestSSEIsNotBuffered(t *testing.T) {
	release := make(chan struct{})
	worker := listenAndServe(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(http.StatusOK)
		fmt.Fprint(w, "id: 1\ndata: {\"n\":1}\n\n")
		w.(http.Flusher).Flush()
		select {
		case <-release:
		case <-r.Context().Done():
			return
		}
		fmt.Fprint(w, "id: 2\ndata: {\"n\":2}\n\n")
		w.(http.Flusher).Flush()
	}))
	proxy := newProxy(t, map[string][]string{"acme": {worker}}, nil)
	ctx := testutil.Context(t, 10*time.Second)
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+proxy+"/t/acme/mcp", nil)
	req.Header.Set("Accept", "text/event-stream")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.Header.Get("X-Accel-Buffering") != "no" {
		t.Fatalf("X-Accel-Buffering = %q", resp.Header.Get("X-Accel-Buffering"))
	}
	rd := bufio.NewReader(resp.Body)
	event := func() string {
		var b strings.Builder
		for {
			line, err := rd.ReadString('\n')
			if err != nil {
				t.Fatalf("reading the stream: %v (so far %q)", err, b.String())
			}
			if line == "\n" {
				return b.String()
			}
			b.WriteString(line)
		}
	}
	if got := event(); got != "id: 1\ndata: {\"n\":1}\n" {
		t.Fatalf("first event %q", got)
	}
	close(release) // the second event exists only now
	if got := event(); got != "id: 2\ndata: {\"n\":2}\n" {
		t.Fatalf("second event %q", got)
	}
}

func TestRefusals(t *testing.T) {
	worker := mcpWorker(t, "w", nil)
	check := func(r *http.Request, tenant string) error {
		switch r.Header.Get("Authorization") {
		case "":
			return cperr.New(cperr.Unauthenticated, "missing credentials")
		case "Bearer other":
			return cperr.New(cperr.PermissionDenied, "not your tenant")
		case "Bearer flood":
			return cperr.New(cperr.RateLimited, "slow down").WithRetryAfter(1500 * time.Millisecond)
		}
		return nil
	}
	proxy := newProxy(t, map[string][]string{"acme": {worker}, "down": {"127.0.0.1:1"}, "empty": nil}, check)
	tests := []struct {
		name, method, path, auth, body string
		want                           int
		header, headerValue            string
	}{
		{"no credentials", "POST", "/t/acme/mcp", "", "{}", 401, "WWW-Authenticate", `Bearer realm="cellplane"`},
		{"other tenant", "POST", "/t/acme/mcp", "Bearer other", "{}", 403, "", ""},
		{"rate limited", "POST", "/t/acme/mcp", "Bearer flood", "{}", 429, "Retry-After", "2"},
		{"unknown tenant", "POST", "/t/nope/mcp", "Bearer ok", "{}", 404, "", ""},
		{"bad path", "POST", "/t/acme/other", "Bearer ok", "{}", 400, "", ""},
		{"bad method", "PUT", "/t/acme/mcp", "Bearer ok", "{}", 405, "Allow", "GET, POST, DELETE"},
		{"body too large", "POST", "/t/acme/mcp", "Bearer ok", strings.Repeat("x", 70<<10), 413, "", ""},
		{"worker down", "POST", "/t/down/mcp", "Bearer ok", "{}", 503, "Retry-After", "1"},
		{"no worker", "POST", "/t/empty/mcp", "Bearer ok", "{}", 503, "Retry-After", "1"},
	}
	ctx := testutil.Context(t, 20*time.Second)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequestWithContext(ctx, tc.method, "http://"+proxy+tc.path, strings.NewReader(tc.body))
			if tc.auth != "" {
				req.Header.Set("Authorization", tc.auth)
			}
			req.Header.Set("Content-Type", "application/json")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.want {
				t.Fatalf("status %d (%s), want %d", resp.StatusCode, body, tc.want)
			}
			if tc.header != "" && resp.Header.Get(tc.header) != tc.headerValue {
				t.Fatalf("%s = %q, want %q", tc.header, resp.Header.Get(tc.header), tc.headerValue)
			}
			if !strings.Contains(string(body), `"reason"`) {
				t.Fatalf("error body %s has no reason", body)
			}
		})
	}
}

func TestLeastConnections(t *testing.T) {
	p := &Proxy{backend: map[string]*backend{}}
	p.get("a").active.Store(3)
	p.get("b").active.Store(1)
	p.get("c").active.Store(2)
	if got := p.pick([]string{"a", "b", "c"}); got != "b" {
		t.Fatalf("pick = %s, want b (fewest active)", got)
	}
	p.get("b").failUntil.Store(time.Now().Add(time.Hour).UnixNano())
	if got := p.pick([]string{"a", "b", "c"}); got != "c" {
		t.Fatalf("pick = %s, want c (b failed recently)", got)
	}
	for _, w := range []string{"a", "c"} {
		p.get(w).failUntil.Store(time.Now().Add(time.Hour).UnixNano())
	}
	if got := p.pick([]string{"a", "b", "c"}); got != "b" {
		t.Fatalf("pick with all failing = %s, want the least loaded (b)", got)
	}
	if got := p.pick(nil); got != "" {
		t.Fatalf("pick of none = %q", got)
	}
}

func TestTenantOf(t *testing.T) {
	for path, want := range map[string]string{"/t/acme/mcp": "acme", "/t//mcp": "", "/t/acme": "", "/t/acme/mcp/x": "", "/x/acme/mcp": ""} {
		got, ok := tenantOf(path)
		if got != want || ok != (want != "") {
			t.Errorf("tenantOf(%q) = %q, %v", path, got, ok)
		}
	}
}
