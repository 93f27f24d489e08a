package mcp_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cellplane/cellplane/cells/mcp"
	"github.com/cellplane/cellplane/internal/cperr"
	tu "github.com/cellplane/cellplane/internal/testutil"
	sdk "github.com/modelcontextprotocol/go-sdk/mcp"
)

type changesOut struct {
	Changes []struct {
		Cursor    string `json:"cursor"`
		Kind      string `json:"kind"`
		URI       string `json:"uri"`
		ContextID string `json:"context_id"`
		FirstSeq  uint64 `json:"first_seq"`
		LastSeq   uint64 `json:"last_seq"`
		Key       string `json:"key"`
	} `json:"changes"`
	Cursor string `json:"cursor"`
}

// notified collects a client's resources/updated notifications.
type notified struct {
	mu  sync.Mutex
	got []*sdk.ResourceUpdatedNotificationParams
}

func (n *notified) handler(_ context.Context, req *sdk.ResourceUpdatedNotificationRequest) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.got = append(n.got, req.Params)
}

func (n *notified) list() []*sdk.ResourceUpdatedNotificationParams {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]*sdk.ResourceUpdatedNotificationParams(nil), n.got...)
}

func connectWith(t *testing.T, ctx context.Context, endpoint string, header http.Header, opts *sdk.ClientOptions) *sdk.ClientSession {
	t.Helper()
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	client := sdk.NewClient(&sdk.Implementation{Name: "test", Version: "v0"}, opts)
	cs, err := client.Connect(ctx, &sdk.StreamableClientTransport{
		Endpoint: endpoint, HTTPClient: &http.Client{Transport: headerTransport{base: tr, header: header}},
		DisableStandaloneSSE: true, MaxRetries: -1,
	}, &sdk.ClientSessionOptions{ProtocolVersion: "2026-07-28"})
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(func() { cs.Close() })
	return cs
}

// A client subscribes to a context with subscriptions/listen through one
// worker, the worker is killed, and the client resumes from the cursor of
// its last notification with changes_read through another worker: every
// append's seqs arrive exactly once (checked against the appends made).
func TestSubscribeResumeAfterWorkerKill(t *testing.T) {
	ctx := tu.Context(t, 60*time.Second)
	cell := startCell(t, "acme")
	w1 := startWorker(t, mcp.DefaultConfig(), cell, fakeAuth{})
	w2 := startWorker(t, mcp.DefaultConfig(), cell, fakeAuth{})
	var n notified
	cs1 := connectWith(t, ctx, w1.url("acme"), bearer("alice"), &sdk.ClientOptions{ResourceUpdatedHandler: n.handler})
	cs2 := connectWith(t, ctx, w2.url("acme"), bearer("alice"), nil)
	var c createOut
	ok(t, ctx, cs2, "context_create", obj{}, &c)
	uri := mcp.ContextURI("acme", c.ContextID)

	listenDone := make(chan error, 1)
	go func() { listenDone <- cs1.Subscribe(ctx, &sdk.SubscribeParams{URI: uri}) }()
	appends := 0
	appendOne := func() {
		t.Helper()
		appends++
		ok(t, ctx, cs2, "context_append", obj{"context_id": c.ContextID, "entries": entries(fmt.Sprint("m", appends))}, nil)
	}
	// The listen is open once an append made after it is notified.
	tu.Eventually(t, 20*time.Second, func() error {
		appendOne()
		if len(n.list()) == 0 {
			return fmt.Errorf("no notification yet")
		}
		return nil
	})
	seen := map[uint64]int{}
	var lastCursor string
	record := func(kind, seqs, cursor string) {
		if kind != "context_appended" {
			return
		}
		var a, b uint64
		if _, err := fmt.Sscanf(seqs, "%d-%d", &a, &b); err != nil {
			t.Fatalf("seqs %q: %v", seqs, err)
		}
		for s := a; s <= b; s++ {
			seen[s]++
		}
		lastCursor = cursor
	}
	for range 3 {
		appendOne()
	}
	tu.Eventually(t, 10*time.Second, func() error {
		if got := len(n.list()); got < 4 {
			return fmt.Errorf("%d notifications", got)
		}
		return nil
	})
	for _, p := range n.list() {
		if p.URI != uri {
			t.Fatalf("notification for %s, subscribed to %s", p.URI, uri)
		}
		record(p.Meta[mcp.MetaKind].(string), p.Meta[mcp.MetaSeqs].(string), p.Meta[mcp.MetaCursor].(string))
	}
	// The worker dies: its listen ends.
	w1.srv.Close()
	select {
	case <-listenDone:
	case <-ctx.Done():
		t.Fatal("the listen did not end with its worker")
	}
	for range 3 {
		appendOne()
	}
	// Resume through the other worker from the last cursor.
	var out changesOut
	ok(t, ctx, cs2, "changes_read", obj{"after": lastCursor, "contexts": true}, &out)
	for _, ch := range out.Changes {
		if ch.ContextID == c.ContextID {
			record(ch.Kind, fmt.Sprintf("%d-%d", ch.FirstSeq, ch.LastSeq), ch.Cursor)
		}
	}
	// From the first append notified (those before the listen opened are
	// not), every seq exactly once, the last one included.
	first := uint64(appends)
	for s := range seen {
		first = min(first, s)
	}
	if uint64(appends)-first < 6 {
		t.Fatalf("only seqs from %d of %d delivered", first, appends)
	}
	for s := first; s <= uint64(appends); s++ {
		if seen[s] != 1 {
			t.Errorf("seq %d delivered %d times", s, seen[s])
		}
	}
}

// listenRaw opens a subscriptions/listen with a _meta cursor over plain
// HTTP (the go-sdk client's Subscribe sends no _meta) and returns the
// notifications' params as they arrive.
func listenRaw(t *testing.T, ctx context.Context, endpoint, principal, cursor string, uris ...string) (<-chan map[string]any, *http.Response) {
	t.Helper()
	meta := map[string]any{
		"io.modelcontextprotocol/protocolVersion":    "2026-07-28",
		"io.modelcontextprotocol/clientInfo":         map[string]any{"name": "raw", "version": "v0"},
		"io.modelcontextprotocol/clientCapabilities": map[string]any{},
	}
	if cursor != "" {
		meta[mcp.MetaCursor] = cursor
	}
	body, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": 7, "method": "subscriptions/listen",
		"params": map[string]any{"_meta": meta, "notifications": map[string]any{"resourceSubscriptions": uris}}})
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	req.Header.Set("Mcp-Protocol-Version", "2026-07-28")
	req.Header.Set("Mcp-Method", "subscriptions/listen")
	req.Header.Set("Authorization", "Bearer "+principal)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	out := make(chan map[string]any, 100)
	go func() {
		defer close(out)
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			data, ok := strings.CutPrefix(sc.Text(), "data: ")
			if !ok {
				continue
			}
			var m map[string]any
			if json.Unmarshal([]byte(data), &m) == nil {
				out <- m
			}
		}
	}()
	return out, resp
}

func next(t *testing.T, ch <-chan map[string]any) map[string]any {
	t.Helper()
	timer := time.NewTimer(10 * time.Second)
	defer timer.Stop()
	select {
	case m, ok := <-ch:
		if !ok {
			t.Fatal("the listen stream ended")
		}
		return m
	case <-timer.C:
		t.Fatal("no message on the listen stream")
	}
	return nil
}

// A listen given a cursor in its _meta replays the changes after it, then
// follows; memory URIs follow the caller's memory only; a URI of another
// tenant is refused.
func TestListenFromCursor(t *testing.T) {
	ctx := tu.Context(t, 60*time.Second)
	cell := startCell(t, "acme", "other")
	w := startWorker(t, mcp.DefaultConfig(), cell, fakeAuth{})
	cs := connectWith(t, ctx, w.url("acme"), bearer("alice"), nil)
	bob := connectWith(t, ctx, w.url("acme"), bearer("bob"), nil)
	var start changesOut
	ok(t, ctx, cs, "changes_read", obj{}, &start)
	var c createOut
	ok(t, ctx, cs, "context_create", obj{}, &c)
	ok(t, ctx, cs, "context_append", obj{"context_id": c.ContextID, "entries": entries("a", "b")}, nil)
	ok(t, ctx, cs, "memory_put", obj{"key": "k", "value": "v"}, nil)
	ok(t, ctx, bob, "memory_put", obj{"key": "k", "value": "bob's"}, nil)

	msgs, resp := listenRaw(t, ctx, w.url("acme"), "alice", start.Cursor, mcp.ContextURI("acme", c.ContextID), mcp.MemoryURI("acme", "k"))
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("listen: %s", resp.Status)
	}
	ack := next(t, msgs)
	if ack["method"] != "notifications/subscriptions/acknowledged" {
		t.Fatalf("first message %v, want the acknowledgement", ack)
	}
	var kinds []string
	for range 3 {
		m := next(t, msgs)
		p := m["params"].(map[string]any)
		meta := p["_meta"].(map[string]any)
		kinds = append(kinds, meta[mcp.MetaKind].(string)+" "+p["uri"].(string))
	}
	want := []string{
		"context_created " + mcp.ContextURI("acme", c.ContextID),
		"context_appended " + mcp.ContextURI("acme", c.ContextID),
		"memory_put " + mcp.MemoryURI("acme", "k"),
	}
	if fmt.Sprint(kinds) != fmt.Sprint(want) {
		t.Fatalf("replayed %v, want %v (bob's put of his own k is not alice's)", kinds, want)
	}

	// Another tenant's URI: refused, whatever the id.
	msgs2, _ := listenRaw(t, ctx, w.url("acme"), "alice", "", mcp.ContextURI("other", c.ContextID))
	m := next(t, msgs2)
	if m["error"] == nil {
		t.Fatalf("listen to another tenant's URI: %v, want an error", m)
	}
	// An expired cursor: CURSOR_EXPIRED, naming the cursors.
	msgs3, _ := listenRaw(t, ctx, w.url("acme"), "alice", "999999.1", mcp.ContextURI("acme", c.ContextID))
	m = next(t, msgs3)
	if e, _ := m["error"].(map[string]any); e == nil || !strings.Contains(fmt.Sprint(e["message"]), "CURSOR_EXPIRED") {
		t.Fatalf("listen from a lost cursor: %v, want CURSOR_EXPIRED", m)
	}
}

// changes_read: principal scoping, scopes, and CURSOR_EXPIRED.
func TestChangesRead(t *testing.T) {
	ctx := tu.Context(t, 60*time.Second)
	cell := startCell(t, "acme")
	w := startWorker(t, mcp.DefaultConfig(), cell, fakeAuth{})
	alice := connectWith(t, ctx, w.url("acme"), bearer("alice"), nil)
	bob := connectWith(t, ctx, w.url("acme"), bearer("bob"), nil)
	ctxOnly := connectWith(t, ctx, w.url("acme"), bearer("carol;contexts:read"), nil)
	memOnly := connectWith(t, ctx, w.url("acme"), bearer("dave;memory:read"), nil)
	var start changesOut
	ok(t, ctx, alice, "changes_read", obj{}, &start)
	var a, b createOut
	ok(t, ctx, alice, "context_create", obj{}, &a)
	ok(t, ctx, bob, "context_create", obj{}, &b)
	ok(t, ctx, bob, "memory_put", obj{"key": "x", "value": "1"}, nil)
	ok(t, ctx, alice, "memory_put", obj{"key": "shared", "value": "1", "scope": "tenant"}, nil)

	var got changesOut
	ok(t, ctx, alice, "changes_read", obj{"after": start.Cursor, "wait_ms": 200}, &got)
	var names []string
	for _, ch := range got.Changes {
		names = append(names, ch.Kind+" "+ch.URI)
	}
	want := []string{"context_created " + mcp.ContextURI("acme", a.ContextID), "memory_put " + mcp.MemoryURI("acme", "shared")}
	if fmt.Sprint(names) != fmt.Sprint(want) {
		t.Fatalf("alice sees %v, want %v", names, want)
	}
	// Waiting: a change made while the read waits is returned.
	done := make(chan changesOut, 1)
	go func() {
		var out changesOut
		ok(t, ctx, alice, "changes_read", obj{"after": got.Cursor, "wait_ms": 10000}, &out)
		done <- out
	}()
	ok(t, ctx, alice, "memory_put", obj{"key": "later", "value": "1"}, nil)
	select {
	case out := <-done:
		if len(out.Changes) != 1 || out.Changes[0].Key != "later" {
			t.Fatalf("waiting read got %+v", out.Changes)
		}
	case <-ctx.Done():
		t.Fatal("the waiting read did not return")
	}
	// Without memory:read, no memory changes (and asking for them fails).
	var c changesOut
	ok(t, ctx, ctxOnly, "changes_read", obj{"after": start.Cursor}, &c)
	for _, ch := range c.Changes {
		if ch.Key != "" {
			t.Fatalf("a caller without memory:read got %+v", ch)
		}
	}
	fails(t, ctx, ctxOnly, "changes_read", obj{"after": start.Cursor, "memory": true}, cperr.PermissionDenied)
	// Without contexts:read, refused outright.
	fails(t, ctx, memOnly, "changes_read", obj{}, cperr.PermissionDenied)
	// 2025-era clients subscribe in a session: legacy_test.go.
	// A cursor this cell's history does not hold.
	txt := fails(t, ctx, alice, "changes_read", obj{"after": "999999.5"}, cperr.CursorExpired)
	if !strings.Contains(txt, "current_cursor") {
		t.Fatalf("CURSOR_EXPIRED text %q names no cursor", txt)
	}
}
