package router_test

import (
	"context"
	"encoding/base64"
	"errors"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/cellplane/cellplane/cells"
	cellmcp "github.com/cellplane/cellplane/cells/mcp"
	"github.com/cellplane/cellplane/internal/testutil"
	cpv1 "github.com/cellplane/cellplane/proto/cellplane/controlplane/v1"
)

// A 2025-era MCP client through the router, with three workers in the
// cell (one per node): its session's requests all reach the worker that
// opened it (which the session id names), its resources/subscribe is
// notified on the session's SSE stream; a session id naming an address
// that is no worker of the tenant's is not forwarded; when the session's
// worker dies its requests get 404 and the client initializes again on
// another worker.
func TestMCPSessionThroughRouter(t *testing.T) {
	p := newPlatform(t, &cpv1.CreateTenantRequest{Id: "acme"})
	ctx := testutil.Context(t, 90*time.Second)
	endpoint := "http://" + p.router.HTTPAddr() + "/t/acme/mcp"
	hc := &http.Client{Transport: bearer{token: p.keys["acme"]}}
	var mu sync.Mutex
	var updated []string
	connect := func() (*mcp.ClientSession, error) {
		client := mcp.NewClient(&mcp.Implementation{Name: "agent", Version: "v0"}, &mcp.ClientOptions{
			ResourceUpdatedHandler: func(_ context.Context, req *mcp.ResourceUpdatedNotificationRequest) {
				mu.Lock()
				defer mu.Unlock()
				updated = append(updated, req.Params.URI)
			},
		})
		return client.Connect(ctx, &mcp.StreamableClientTransport{Endpoint: endpoint, HTTPClient: hc, MaxRetries: -1},
			&mcp.ClientSessionOptions{ProtocolVersion: "2025-06-18"})
	}
	var cs *mcp.ClientSession
	testutil.Eventually(t, 20*time.Second, func() error {
		var err error
		cs, err = connect()
		return err
	})
	defer func() { cs.Close() }()

	enc, inner, _ := strings.Cut(cs.ID(), ".")
	home, _ := base64.RawURLEncoding.DecodeString(enc)
	homeNode := slices.IndexFunc(p.nodes, func(n *cells.Node) bool { return n.HTTPAddr() == string(home) })
	if homeNode < 0 || inner == "" {
		t.Fatalf("session id %q names %q, not a worker of the cell", cs.ID(), home)
	}
	res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "context_create", Arguments: map[string]any{}})
	if err != nil || res.IsError {
		t.Fatalf("context_create: %v %v", res, err)
	}
	id, _ := res.StructuredContent.(map[string]any)["context_id"].(string)
	uri := cellmcp.ContextURI("acme", id)
	// The session's worker may sit on a follower that has not applied the
	// tenant's placement yet (WRONG_CELL for a moment after the tenant is
	// created): a client retries.
	testutil.Eventually(t, 20*time.Second, func() error {
		return cs.Subscribe(ctx, &mcp.SubscribeParams{URI: uri})
	})
	for i := range 5 { // requests of the session, with the SSE stream open on its worker
		res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "context_append", Arguments: map[string]any{
			"context_id": id, "entries": []map[string]any{{"role": "user", "content": "hi"}}}})
		if err != nil || res.IsError {
			t.Fatalf("append %d through the router: %v %v", i, res, err)
		}
	}
	testutil.Eventually(t, 10*time.Second, func() error {
		mu.Lock()
		defer mu.Unlock()
		if len(updated) < 5 {
			return errors.New("not every append was notified yet")
		}
		for _, u := range updated {
			if u != uri {
				t.Fatalf("notified of %s, want %s", u, uri)
			}
		}
		return nil
	})

	post := func(sid string) int {
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, strings.NewReader(`{"jsonrpc":"2.0","id":9,"method":"tools/list"}`))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "application/json, text/event-stream")
		req.Header.Set("Mcp-Protocol-Version", "2025-06-18")
		req.Header.Set("Mcp-Session-Id", sid)
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := post(cs.ID()); code != http.StatusOK {
		t.Fatalf("the session's id, raw: %d", code)
	}
	forged := base64.RawURLEncoding.EncodeToString([]byte(p.router.HTTPAddr())) + "." + inner
	if code := post(forged); code != http.StatusNotFound {
		t.Fatalf("a session id naming the router itself: %d, want 404", code)
	}

	// The session's worker dies: the session is gone with it.
	_ = p.nodes[homeNode].Close()
	if code := post(cs.ID()); code != http.StatusNotFound {
		t.Fatalf("a request of a dead worker's session: %d, want 404", code)
	}
	cs.Close()
	testutil.Eventually(t, 30*time.Second, func() error { // initialize again: another worker
		var err error
		if cs, err = connect(); err != nil {
			return err
		}
		if _, err = cs.ListTools(ctx, nil); err != nil {
			cs.Close()
		}
		return err
	})
}
