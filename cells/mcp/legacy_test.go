package mcp_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/cellplane/cellplane/cells/mcp"
	tu "github.com/cellplane/cellplane/internal/testutil"
)

// connectSession opens a 2025-era session (initialize at version) with
// the standalone SSE stream on, notifications going to n.
func connectSession(t *testing.T, ctx context.Context, endpoint, version string, header http.Header, n *notified) (*sdk.ClientSession, error) {
	t.Helper()
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	var opts *sdk.ClientOptions
	if n != nil {
		opts = &sdk.ClientOptions{ResourceUpdatedHandler: n.handler}
	}
	client := sdk.NewClient(&sdk.Implementation{Name: "test", Version: "v0"}, opts)
	cs, err := client.Connect(ctx, &sdk.StreamableClientTransport{
		Endpoint: endpoint, HTTPClient: &http.Client{Transport: headerTransport{base: tr, header: header}},
		MaxRetries: -1,
	}, &sdk.ClientSessionOptions{ProtocolVersion: version})
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() { cs.Close() })
	return cs, nil
}

func mustSession(t *testing.T, ctx context.Context, endpoint, version string, header http.Header, n *notified) *sdk.ClientSession {
	t.Helper()
	cs, err := connectSession(t, ctx, endpoint, version, header, n)
	if err != nil {
		t.Fatalf("connect %s at %s: %v", endpoint, version, err)
	}
	return cs
}

// until polls cond until it holds (10 s at most).
func until(t *testing.T, cond func() bool, what string) {
	t.Helper()
	tu.Eventually(t, 10*time.Second, func() error {
		if !cond() {
			return errors.New("not yet: " + what)
		}
		return nil
	})
}

// uris lists the notified URIs.
func (n *notified) uris() []string {
	var out []string
	for _, p := range n.list() {
		out = append(out, p.URI)
	}
	return out
}

// waitURIs waits until n has exactly want (in order), failing on more
// or others.
func waitURIs(t *testing.T, n *notified, who string, want ...string) {
	t.Helper()
	until(t, func() bool {
		got := n.uris()
		for i := range min(len(got), len(want)) {
			if got[i] != want[i] {
				t.Fatalf("%s notified of %v, want %v", who, got, want)
			}
		}
		if len(got) > len(want) {
			t.Fatalf("%s notified of %v, want %v", who, got, want)
		}
		return len(got) == len(want)
	}, who+" notified of "+strings.Join(want, ", "))
}

// A 2025-era client subscribes in its session and is notified of an
// append on its session's SSE stream, with the cursor in _meta; another
// principal of the tenant subscribed to the same URI is not (the cell
// shows it nothing of a context it cannot see, and its session has a
// server of its own); unsubscribing stops the notifications; DELETE
// ends the session and its follower.
func TestLegacySubscribe(t *testing.T) {
	ctx := tu.Context(t, 60*time.Second)
	cell := startCell(t, "acme")
	w := startWorker(t, mcp.DefaultConfig(), cell, fakeAuth{})
	for _, version := range []string{"2025-03-26", "2025-06-18", "2025-11-25"} {
		t.Run(version, func(t *testing.T) {
			var na, nb notified
			alice := mustSession(t, ctx, w.url("acme"), version, bearer("alice"), &na)
			bob := mustSession(t, ctx, w.url("acme"), version, bearer("bob"), &nb)
			if alice.ID() == "" || bob.ID() == "" || alice.ID() == bob.ID() {
				t.Fatalf("session ids %q and %q", alice.ID(), bob.ID())
			}
			var a, a2, b createOut
			ok(t, ctx, alice, "context_create", obj{}, &a)
			ok(t, ctx, alice, "context_create", obj{}, &a2)
			ok(t, ctx, bob, "context_create", obj{}, &b)
			ua, ua2, ub := mcp.ContextURI("acme", a.ContextID), mcp.ContextURI("acme", a2.ContextID), mcp.ContextURI("acme", b.ContextID)
			for _, u := range []string{ua, ua2} {
				if err := alice.Subscribe(ctx, &sdk.SubscribeParams{URI: u}); err != nil {
					t.Fatalf("alice subscribes to %s: %v", u, err)
				}
			}
			for _, u := range []string{ua, ub} { // bob asks for alice's context too
				if err := bob.Subscribe(ctx, &sdk.SubscribeParams{URI: u}); err != nil {
					t.Fatalf("bob subscribes to %s: %v", u, err)
				}
			}
			ok(t, ctx, alice, "context_append", obj{"context_id": a.ContextID, "entries": entries("hi")}, nil)
			waitURIs(t, &na, "alice", ua)
			p := na.list()[0]
			if p.Meta[mcp.MetaCursor] == "" || p.Meta[mcp.MetaKind] != "context_appended" || p.Meta[mcp.MetaSeqs] != "1-1" {
				t.Fatalf("notification _meta %v", p.Meta)
			}
			// Bob's own append arrives; alice's (earlier in the change
			// log) never reached him.
			ok(t, ctx, bob, "context_append", obj{"context_id": b.ContextID, "entries": entries("yo")}, nil)
			waitURIs(t, &nb, "bob", ub)

			// Unsubscribed from a: its appends are no longer signalled
			// (a2's, made after, are).
			if err := alice.Unsubscribe(ctx, &sdk.UnsubscribeParams{URI: ua}); err != nil {
				t.Fatal(err)
			}
			ok(t, ctx, alice, "context_append", obj{"context_id": a.ContextID, "entries": entries("again")}, nil)
			ok(t, ctx, alice, "context_append", obj{"context_id": a2.ContextID, "entries": entries("there")}, nil)
			waitURIs(t, &na, "alice", ua, ua2)

			// Another caller presenting alice's session id: not found.
			if code := rawPost(t, ctx, w.url("acme"), http.Header{"Authorization": {"Bearer bob"}, mcp.SessionHeader: {alice.ID()}, "Mcp-Protocol-Version": {version}}, legacyList); code != http.StatusNotFound {
				t.Fatalf("bob with alice's session id: %d, want 404", code)
			}
			alice.Close()
			bob.Close()
			until(t, func() bool { return w.Sessions() == 0 }, "the sessions end")
		})
	}
}

// rawPost posts body and returns the status (and closes the body).
func rawPost(t *testing.T, ctx context.Context, url string, h http.Header, body string) int {
	t.Helper()
	resp := rawDo(t, ctx, url, h, body)
	resp.Body.Close()
	return resp.StatusCode
}

func rawDo(t *testing.T, ctx context.Context, url string, h http.Header, body string) *http.Response {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	for k, vs := range h {
		req.Header[k] = vs
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

const initialize2025 = `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"raw","version":"v0"}}}`

// The caps: sessions per worker and subscriptions per session are
// refused with QUOTA_EXCEEDED; a 2026-07-28 client stays stateless (no
// Mcp-Session-Id, no session counted).
func TestLegacyCaps(t *testing.T) {
	ctx := tu.Context(t, 60*time.Second)
	cell := startCell(t, "acme")
	cfg := mcp.DefaultConfig()
	cfg.MaxSessions = 2
	cfg.MaxSubscriptionsPerSession = 2
	w := startWorker(t, cfg, cell, fakeAuth{})

	modern := connect(t, ctx, w.url("acme"), "2026-07-28", bearer("carol"))
	ok(t, ctx, modern, "context_list", obj{}, nil)
	resp := rawDo(t, ctx, w.url("acme"), http.Header{"Authorization": {"Bearer carol"}, "Mcp-Protocol-Version": {"2026-07-28"}, "Mcp-Method": {"tools/list"}}, modernList("2026-07-28"))
	if resp.StatusCode != http.StatusOK || resp.Header.Get(mcp.SessionHeader) != "" {
		t.Fatalf("2026-07-28 request: %d, Mcp-Session-Id %q: want 200 without a session", resp.StatusCode, resp.Header.Get(mcp.SessionHeader))
	}
	// A stray Mcp-Session-Id on a 2026-07-28 request is ignored.
	resp = rawDo(t, ctx, w.url("acme"), http.Header{"Authorization": {"Bearer carol"}, "Mcp-Protocol-Version": {"2026-07-28"}, "Mcp-Method": {"tools/list"}, mcp.SessionHeader: {"stray"}}, modernList("2026-07-28"))
	if resp.StatusCode != http.StatusOK || resp.Header.Get(mcp.SessionHeader) != "" {
		t.Fatalf("2026-07-28 request with a stray session id: %d, Mcp-Session-Id %q", resp.StatusCode, resp.Header.Get(mcp.SessionHeader))
	}
	if n := w.Sessions(); n != 0 {
		t.Fatalf("%d sessions after 2026-07-28 requests", n)
	}

	alice := mustSession(t, ctx, w.url("acme"), "2025-06-18", bearer("alice"), &notified{})
	for _, k := range []string{"a", "b", "b"} { // a repeat is no new subscription
		if err := alice.Subscribe(ctx, &sdk.SubscribeParams{URI: mcp.MemoryURI("acme", k)}); err != nil {
			t.Fatalf("subscribe %s: %v", k, err)
		}
	}
	if err := alice.Subscribe(ctx, &sdk.SubscribeParams{URI: mcp.MemoryURI("acme", "c")}); err == nil || !strings.Contains(err.Error(), "QUOTA_EXCEEDED") {
		t.Fatalf("third subscription: %v, want QUOTA_EXCEEDED", err)
	}
	// Another tenant's URI, or without the scope: refused.
	if err := alice.Subscribe(ctx, &sdk.SubscribeParams{URI: mcp.ContextURI("other", "x")}); err == nil || !strings.Contains(err.Error(), "PERMISSION_DENIED") {
		t.Fatalf("another tenant's URI: %v, want PERMISSION_DENIED", err)
	}
	_ = mustSession(t, ctx, w.url("acme"), "2025-11-25", bearer("bob"), nil)
	resp = rawDo(t, ctx, w.url("acme"), http.Header{"Authorization": {"Bearer dave"}}, initialize2025)
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusTooManyRequests || !strings.Contains(string(body), "QUOTA_EXCEEDED") || resp.Header.Get(mcp.SessionHeader) != "" {
		t.Fatalf("a third session: %d %s, want 429 QUOTA_EXCEEDED", resp.StatusCode, body)
	}
	if _, err := connectSession(t, ctx, w.url("acme"), "2025-03-26", bearer("erin"), nil); err == nil {
		t.Fatal("a third session through the SDK client succeeded")
	}
	alice.Close()
	until(t, func() bool { return w.Sessions() == 1 }, "alice's session ends")
	_ = mustSession(t, ctx, w.url("acme"), "2025-03-26", bearer("erin"), nil)
}

// The idle timeout ends a session (and its follower) that receives no
// request.
func TestLegacyIdleTimeout(t *testing.T) {
	ctx := tu.Context(t, 60*time.Second)
	cell := startCell(t, "acme")
	cfg := mcp.DefaultConfig()
	cfg.SessionIdleTimeout = 300 * time.Millisecond
	w := startWorker(t, cfg, cell, fakeAuth{})
	alice := mustSession(t, ctx, w.url("acme"), "2025-06-18", bearer("alice"), &notified{})
	if err := alice.Subscribe(ctx, &sdk.SubscribeParams{URI: mcp.MemoryURI("acme", "k")}); err != nil {
		t.Fatal(err)
	}
	until(t, func() bool { return w.Sessions() == 0 }, "the idle session ends")
	if code := rawPost(t, ctx, w.url("acme"), http.Header{"Authorization": {"Bearer alice"}, mcp.SessionHeader: {alice.ID()}, "Mcp-Protocol-Version": {"2025-06-18"}}, legacyList); code != http.StatusNotFound {
		t.Fatalf("a request of the ended session: %d, want 404", code)
	}
}
