package mcp_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/grpc"

	"github.com/cellplane/cellplane/cells/mcp"
	"github.com/cellplane/cellplane/internal/cperr"
	tu "github.com/cellplane/cellplane/internal/testutil"
)

type (
	createOut struct {
		ContextID string `json:"context_id"`
	}
	appendOut struct {
		FirstSeq uint64 `json:"first_seq"`
		LastSeq  uint64 `json:"last_seq"`
	}
	entryOut struct {
		Seq      uint64            `json:"seq"`
		Role     string            `json:"role"`
		Content  string            `json:"content"`
		Metadata map[string]string `json:"metadata"`
	}
	readOut struct {
		Entries []entryOut `json:"entries"`
		NextSeq uint64     `json:"next_seq"`
		LastSeq uint64     `json:"last_seq"`
	}
	listOut struct {
		Contexts []struct {
			ContextID string            `json:"context_id"`
			Labels    map[string]string `json:"labels"`
			LastSeq   uint64            `json:"last_seq"`
		} `json:"contexts"`
		NextPageToken string `json:"next_page_token"`
	}
	revOut struct {
		Value    string `json:"value"`
		Revision uint64 `json:"revision"`
	}
	memListOut struct {
		Items []struct {
			Key      string `json:"key"`
			Revision uint64 `json:"revision"`
		} `json:"items"`
	}
)

type obj = map[string]any

func entries(texts ...string) []obj {
	var out []obj
	for _, s := range texts {
		out = append(out, obj{"role": "user", "content": s})
	}
	return out
}

func contents(r readOut) []string {
	var out []string
	for _, e := range r.Entries {
		out = append(out, e.Content)
	}
	return out
}

// TestWorker runs the tool scenarios against one real cell.
func TestWorker(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a cell node")
	}
	cell := startCell(t, "acme", "beta")
	open := startWorker(t, mcp.DefaultConfig(), cell, nil)

	t.Run("eras", func(t *testing.T) {
		want := []string{"audit_read", "changes_read", "context_append", "context_compact", "context_create", "context_delete", "context_fork", "context_list", "context_read",
			"context_search", "erase_subject", "memory_delete", "memory_get", "memory_list", "memory_put", "memory_search"}
		for _, version := range []string{"2026-07-28", "2025-11-25", "2025-06-18", "2025-03-26"} {
			t.Run(version, func(t *testing.T) {
				ctx := tu.Context(t, 20*time.Second)
				cs := connect(t, ctx, open.url("acme"), version, nil)
				if got := cs.InitializeResult().ProtocolVersion; got != version {
					t.Fatalf("negotiated %s, want %s", got, version)
				}
				res, err := cs.ListTools(ctx, nil)
				if err != nil {
					t.Fatal(err)
				}
				var names []string
				for _, tool := range res.Tools {
					names = append(names, tool.Name)
					a := tool.Annotations
					if a == nil || a.OpenWorldHint == nil || *a.OpenWorldHint || a.DestructiveHint == nil && !a.ReadOnlyHint {
						t.Errorf("%s: incomplete annotations %+v", tool.Name, a)
					}
					if tool.OutputSchema == nil || tool.InputSchema == nil || tool.Description == "" {
						t.Errorf("%s: schemas or description missing", tool.Name)
					}
				}
				slices.Sort(names)
				if !slices.Equal(names, want) {
					t.Fatalf("tools %v, want %v", names, want)
				}
				var c createOut
				ok(t, ctx, cs, "context_create", obj{}, &c)
				var a appendOut
				ok(t, ctx, cs, "context_append", obj{"context_id": c.ContextID, "entries": entries("hi " + version)}, &a)
				var r readOut
				ok(t, ctx, cs, "context_read", obj{"context_id": c.ContextID}, &r)
				if got := contents(r); !slices.Equal(got, []string{"hi " + version}) {
					t.Fatalf("read %v", got)
				}
			})
		}
	})

	t.Run("annotations", func(t *testing.T) {
		ctx := tu.Context(t, 10*time.Second)
		cs := connect(t, ctx, open.url("acme"), "2026-07-28", nil)
		res, err := cs.ListTools(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		type hints struct{ ro, destructive, idempotent bool }
		want := map[string]hints{
			"context_create": {false, false, false}, "context_append": {false, false, false},
			"context_read": {true, false, true}, "context_list": {true, false, true},
			"context_delete": {false, true, true}, "memory_put": {false, true, false},
			"context_fork": {false, false, false},
			"audit_read":   {true, false, true}, "erase_subject": {false, true, true},
			"memory_get": {true, false, true}, "memory_list": {true, false, true},
			"memory_delete":  {false, true, true},
			"changes_read":   {true, false, true},
			"context_search": {true, false, true}, "memory_search": {true, false, true},
		}
		for _, tool := range res.Tools {
			a := tool.Annotations
			got := hints{a.ReadOnlyHint, a.DestructiveHint != nil && *a.DestructiveHint, a.IdempotentHint}
			if got != want[tool.Name] {
				t.Errorf("%s: hints %+v, want %+v", tool.Name, got, want[tool.Name])
			}
		}
	})

	t.Run("contexts", func(t *testing.T) {
		ctx := tu.Context(t, 20*time.Second)
		cs := connect(t, ctx, open.url("acme"), "2026-07-28", nil)

		var c createOut
		ok(t, ctx, cs, "context_create", obj{"context_id": "chat-1", "labels": obj{"topic": "x"}}, &c)
		if c.ContextID != "chat-1" {
			t.Fatalf("created %q", c.ContextID)
		}
		fails(t, ctx, cs, "context_create", obj{"context_id": "chat-1"}, cperr.AlreadyExists)
		fails(t, ctx, cs, "context_create", obj{"context_id": "bad id!"}, cperr.InvalidArgument)
		fails(t, ctx, cs, "context_create", obj{"labels": obj{"cellplane.principal": "me"}}, cperr.InvalidArgument)
		var minted createOut
		ok(t, ctx, cs, "context_create", obj{}, &minted)
		if minted.ContextID == "" || minted.ContextID == "chat-1" {
			t.Fatalf("minted %q", minted.ContextID)
		}

		var a appendOut
		ok(t, ctx, cs, "context_append", obj{"context_id": "chat-1", "entries": []obj{
			{"role": "user", "content": "one", "metadata": obj{"k": "v"}},
			{"role": "assistant", "content": "two"},
		}}, &a)
		if a.FirstSeq != 1 || a.LastSeq != 2 {
			t.Fatalf("append seqs %+v", a)
		}
		ok(t, ctx, cs, "context_append", obj{"context_id": "chat-1", "entries": entries("three", "four"), "request_id": "r-1"}, &a)
		var again appendOut
		ok(t, ctx, cs, "context_append", obj{"context_id": "chat-1", "entries": entries("three", "four"), "request_id": "r-1"}, &again)
		if a != again || a.FirstSeq != 3 || a.LastSeq != 4 {
			t.Fatalf("repeated request_id: %+v then %+v, want 3..4 twice", a, again)
		}
		txt := fails(t, ctx, cs, "context_append", obj{"context_id": "chat-9", "entries": entries("x")}, cperr.ContextNotFound)
		if txt != "CONTEXT_NOT_FOUND: context chat-9 does not exist" {
			t.Errorf("not-found text %q", txt)
		}
		fails(t, ctx, cs, "context_append", obj{"context_id": "chat-1", "entries": []obj{}}, cperr.InvalidArgument)
		fails(t, ctx, cs, "context_append", obj{"context_id": "chat-1", "entries": []obj{{"role": "", "content": "x"}}}, cperr.InvalidArgument)
		fails(t, ctx, cs, "context_append", obj{"context_id": "chat-1", "entries": entries("x"), "request_id": "no spaces"}, cperr.InvalidArgument)
		// Schema validation by the SDK: a required property is missing.
		if res := callTool(t, ctx, cs, "context_append", obj{"context_id": "chat-1", "entries": []obj{{"role": "user"}}}); !res.IsError {
			t.Fatal("an entry without content was accepted")
		}

		var r readOut
		ok(t, ctx, cs, "context_read", obj{"context_id": "chat-1"}, &r)
		if got := contents(r); !slices.Equal(got, []string{"one", "two", "three", "four"}) || r.NextSeq != 5 || r.LastSeq != 4 {
			t.Fatalf("read all: %v next %d last %d", got, r.NextSeq, r.LastSeq)
		}
		if r.Entries[0].Metadata["k"] != "v" || r.Entries[1].Role != "assistant" || r.Entries[0].Seq != 1 {
			t.Fatalf("entries %+v", r.Entries)
		}
		ok(t, ctx, cs, "context_read", obj{"context_id": "chat-1", "tail": 2}, &r)
		if got := contents(r); !slices.Equal(got, []string{"three", "four"}) {
			t.Fatalf("tail 2: %v", got)
		}
		ok(t, ctx, cs, "context_read", obj{"context_id": "chat-1", "from_seq": 2, "max_entries": 2}, &r)
		if got := contents(r); !slices.Equal(got, []string{"two", "three"}) || r.NextSeq != 4 {
			t.Fatalf("from 2 max 2: %v next %d", got, r.NextSeq)
		}
		fails(t, ctx, cs, "context_read", obj{"context_id": "chat-1", "from_seq": 1, "tail": 1}, cperr.InvalidArgument)
		fails(t, ctx, cs, "context_read", obj{"context_id": "chat-9"}, cperr.ContextNotFound)

		var l listOut
		ok(t, ctx, cs, "context_list", obj{}, &l)
		found := false
		for _, x := range l.Contexts {
			if x.ContextID == "chat-1" {
				found = x.Labels["topic"] == "x" && x.LastSeq == 4
			}
		}
		if !found {
			t.Fatalf("chat-1 not listed right: %+v", l)
		}

		rr, err := cs.ReadResource(ctx, &sdk.ReadResourceParams{URI: "cellplane://contexts/chat-1"})
		if err != nil {
			t.Fatal(err)
		}
		if got := rr.Contents[0].Text; got != "user: one\nassistant: two\nuser: three\nuser: four\n" {
			t.Fatalf("resource text %q", got)
		}
		if _, err := cs.ReadResource(ctx, &sdk.ReadResourceParams{URI: "cellplane://contexts/chat-9"}); err == nil {
			t.Fatal("reading a missing context's resource succeeded")
		}

		var d struct {
			Deleted bool `json:"deleted"`
		}
		ok(t, ctx, cs, "context_delete", obj{"context_id": "chat-1"}, &d)
		if !d.Deleted {
			t.Fatal("not deleted")
		}
		fails(t, ctx, cs, "context_delete", obj{"context_id": "chat-1"}, cperr.ContextNotFound)
		fails(t, ctx, cs, "context_read", obj{"context_id": "chat-1"}, cperr.ContextNotFound)
	})

	t.Run("compaction and token budgets", func(t *testing.T) {
		ctx := tu.Context(t, 20*time.Second)
		for _, version := range []string{"2026-07-28", "2025-06-18"} {
			cs := connect(t, ctx, open.url("acme"), version, nil)
			id := "budget-" + strings.ReplaceAll(version, "-", "")
			ok(t, ctx, cs, "context_create", obj{"context_id": id, "token_encoding": "cl100k_base"}, nil)
			fails(t, ctx, cs, "context_create", obj{"context_id": id + "x", "token_encoding": "nope"}, cperr.InvalidArgument)
			ok(t, ctx, cs, "context_append", obj{"context_id": id, "entries": entries("one two", "three four five", "six", "seven eight")}, nil)

			var k struct {
				UpToSeq       uint64 `json:"up_to_seq"`
				SummaryTokens uint32 `json:"summary_tokens"`
				TotalTokens   uint64 `json:"total_tokens"`
			}
			ok(t, ctx, cs, "context_compact", obj{"context_id": id, "up_to_seq": 2, "summary": "counted to five", "request_id": "k-1"}, &k)
			if k.UpToSeq != 2 || k.SummaryTokens == 0 || k.TotalTokens != 2+3+1+2 {
				t.Fatalf("compact: %+v", k)
			}
			// The same request_id compacts once (a second, different
			// compaction up to 2 would be refused).
			ok(t, ctx, cs, "context_compact", obj{"context_id": id, "up_to_seq": 2, "summary": "counted to five", "request_id": "k-1"}, &k)
			fails(t, ctx, cs, "context_compact", obj{"context_id": id, "up_to_seq": 2, "summary": "again"}, cperr.InvalidArgument)
			fails(t, ctx, cs, "context_compact", obj{"context_id": id, "up_to_seq": 9, "summary": "past the end"}, cperr.InvalidArgument)
			fails(t, ctx, cs, "context_compact", obj{"context_id": "chat-9", "up_to_seq": 1, "summary": "s"}, cperr.ContextNotFound)

			type budgeted struct {
				Summary *struct {
					UpToSeq    uint64 `json:"up_to_seq"`
					Text       string `json:"text"`
					TokenCount uint64 `json:"token_count"`
				} `json:"summary"`
				Entries        []entryOut `json:"entries"`
				TokensReturned uint64     `json:"tokens_returned"`
				TotalTokens    uint64     `json:"total_tokens"`
				TokenEncoding  string     `json:"token_encoding"`
			}
			var r budgeted
			res := callTool(t, ctx, cs, "context_read", obj{"context_id": id})
			if txt := text(res); strings.Contains(txt, "seven eight") || !strings.Contains(txt, "summary of entries 1-2") {
				t.Fatalf("read's text is not a short summary: %q", txt)
			}
			ok(t, ctx, cs, "context_read", obj{"context_id": id}, &r)
			if r.Summary == nil || r.Summary.Text != "counted to five" || len(r.Entries) != 2 || r.Entries[0].Seq != 3 || r.TokenEncoding != "cl100k_base" || r.TotalTokens != 8 {
				t.Fatalf("read: %+v", r)
			}
			budget := r.Summary.TokenCount + 2 // the summary and "seven eight"
			r = budgeted{}
			ok(t, ctx, cs, "context_read", obj{"context_id": id, "max_tokens": budget}, &r)
			if r.Summary == nil || len(r.Entries) != 1 || r.Entries[0].Content != "seven eight" || r.TokensReturned > budget {
				t.Fatalf("read within %d tokens: %+v", budget, r)
			}
			r = budgeted{}
			ok(t, ctx, cs, "context_read", obj{"context_id": id, "raw": true}, &r)
			if r.Summary != nil || len(r.Entries) != 4 {
				t.Fatalf("raw read: %+v", r)
			}
			rr, err := cs.ReadResource(ctx, &sdk.ReadResourceParams{URI: "cellplane://contexts/" + id})
			if err != nil {
				t.Fatal(err)
			}
			if got := rr.Contents[0].Text; got != "[summary of entries 1 to 2]: counted to five\nuser: six\nuser: seven eight\n" {
				t.Fatalf("resource text %q", got)
			}
			if rr.CacheScope != "private" {
				t.Fatalf("resource cacheScope %q, want private", rr.CacheScope)
			}
		}
	})

	t.Run("memory", func(t *testing.T) {
		ctx := tu.Context(t, 20*time.Second)
		cs := connect(t, ctx, open.url("acme"), "2025-06-18", nil)
		var p revOut
		ok(t, ctx, cs, "memory_put", obj{"key": "prefs/lang", "value": "go"}, &p)
		first := p.Revision
		if first == 0 {
			t.Fatal("revision 0")
		}
		ok(t, ctx, cs, "memory_put", obj{"key": "prefs/lang", "value": "rust", "expected_revision": first}, &p)
		second := p.Revision
		txt := fails(t, ctx, cs, "memory_put", obj{"key": "prefs/lang", "value": "c", "expected_revision": first}, cperr.RevisionMismatch)
		t.Logf("CAS failure: %s", txt)
		fails(t, ctx, cs, "memory_put", obj{"key": "", "value": "c"}, cperr.InvalidArgument)
		ok(t, ctx, cs, "memory_put", obj{"key": "prefs/theme", "value": "dark", "expected_revision": 0}, nil)
		fails(t, ctx, cs, "memory_put", obj{"key": "prefs/theme", "value": "light", "expected_revision": 0}, cperr.RevisionMismatch)

		var g revOut
		ok(t, ctx, cs, "memory_get", obj{"key": "prefs/lang"}, &g)
		if g.Value != "rust" || g.Revision != second {
			t.Fatalf("get %+v, want rust at %d", g, second)
		}
		fails(t, ctx, cs, "memory_get", obj{"key": "nope"}, cperr.KeyNotFound)

		var ml memListOut
		ok(t, ctx, cs, "memory_list", obj{"prefix": "prefs/"}, &ml)
		if len(ml.Items) != 2 || ml.Items[0].Key != "prefs/lang" || ml.Items[0].Revision != second || ml.Items[1].Key != "prefs/theme" {
			t.Fatalf("list %+v", ml)
		}
		fails(t, ctx, cs, "memory_delete", obj{"key": "prefs/lang", "expected_revision": first}, cperr.RevisionMismatch)
		ok(t, ctx, cs, "memory_delete", obj{"key": "prefs/lang", "expected_revision": second}, nil)
		fails(t, ctx, cs, "memory_get", obj{"key": "prefs/lang"}, cperr.KeyNotFound)
		ok(t, ctx, cs, "memory_list", obj{"prefix": "prefs/"}, &ml)
		if len(ml.Items) != 1 {
			t.Fatalf("after delete: %+v", ml)
		}
	})

	t.Run("tenants", func(t *testing.T) {
		ctx := tu.Context(t, 20*time.Second)
		a := connect(t, ctx, open.url("acme"), "2026-07-28", nil)
		b := connect(t, ctx, open.url("beta"), "2025-03-26", nil)
		ok(t, ctx, a, "context_create", obj{"context_id": "shared"}, nil)
		ok(t, ctx, a, "context_append", obj{"context_id": "shared", "entries": entries("secret")}, nil)
		fails(t, ctx, b, "context_read", obj{"context_id": "shared"}, cperr.ContextNotFound)
		fails(t, ctx, b, "context_append", obj{"context_id": "shared", "entries": entries("x")}, cperr.ContextNotFound)
		ok(t, ctx, b, "memory_put", obj{"key": "k", "value": "beta"}, nil)
		fails(t, ctx, a, "memory_get", obj{"key": "k"}, cperr.KeyNotFound)
		// The same id in beta is another context.
		ok(t, ctx, b, "context_create", obj{"context_id": "shared"}, nil)
		var r readOut
		ok(t, ctx, b, "context_read", obj{"context_id": "shared"}, &r)
		if len(r.Entries) != 0 {
			t.Fatalf("beta sees %v", contents(r))
		}
		// A tenant the cell does not own: a tool error, not data.
		c := connect(t, ctx, open.url("gamma"), "2026-07-28", nil)
		res := callTool(t, ctx, c, "context_list", obj{})
		if !res.IsError {
			t.Fatalf("unowned tenant listed: %s", text(res))
		}
		t.Logf("unowned tenant: %s", text(res))
	})

	t.Run("principals", func(t *testing.T) {
		ctx := tu.Context(t, 20*time.Second)
		authed := startWorker(t, mcp.DefaultConfig(), cell, fakeAuth{})
		alice := connect(t, ctx, authed.url("acme"), "2026-07-28", bearer("alice"))
		// Bob also claims to be alice through the worker's internal header.
		bobHeader := bearer("bob")
		bobHeader.Set(mcp.PrincipalHeader, "alice")
		bobHeader.Set(mcp.TenantHeader, "beta")
		bob := connect(t, ctx, authed.url("acme"), "2025-06-18", bobHeader)

		var c createOut
		ok(t, ctx, alice, "context_create", obj{"labels": obj{"app": "notes"}}, &c)
		ok(t, ctx, alice, "context_append", obj{"context_id": c.ContextID, "entries": entries("alice's")}, nil)

		want := "CONTEXT_NOT_FOUND: context " + c.ContextID + " does not exist"
		for _, call := range []struct {
			tool string
			args obj
		}{
			{"context_read", obj{"context_id": c.ContextID}},
			{"context_append", obj{"context_id": c.ContextID, "entries": entries("bob's")}},
			{"context_delete", obj{"context_id": c.ContextID}},
		} {
			if got := fails(t, ctx, bob, call.tool, call.args, cperr.ContextNotFound); got != want {
				t.Errorf("%s by bob: %q, want %q", call.tool, got, want)
			}
		}
		if _, err := bob.ReadResource(ctx, &sdk.ReadResourceParams{URI: "cellplane://contexts/" + c.ContextID}); err == nil {
			t.Error("bob read alice's context as a resource")
		}
		var l listOut
		ok(t, ctx, bob, "context_list", obj{}, &l)
		for _, x := range l.Contexts {
			if x.ContextID == c.ContextID {
				t.Fatal("bob lists alice's context")
			}
		}
		// Contexts made without authentication belong to no principal.
		open := connect(t, ctx, open.url("acme"), "2026-07-28", nil)
		var anon createOut
		ok(t, ctx, open, "context_create", obj{}, &anon)
		fails(t, ctx, alice, "context_read", obj{"context_id": anon.ContextID}, cperr.ContextNotFound)

		ok(t, ctx, alice, "context_list", obj{}, &l)
		var mine int
		for _, x := range l.Contexts {
			if x.ContextID == anon.ContextID {
				t.Fatal("alice lists an unowned context")
			}
			if x.ContextID == c.ContextID {
				mine++
				if x.Labels["app"] != "notes" || len(x.Labels) != 1 {
					t.Fatalf("labels %v: the reserved label must not show", x.Labels)
				}
			}
		}
		if mine != 1 {
			t.Fatalf("alice's list %+v", l)
		}
		var r readOut
		ok(t, ctx, alice, "context_read", obj{"context_id": c.ContextID}, &r)
		if got := contents(r); !slices.Equal(got, []string{"alice's"}) {
			t.Fatalf("alice reads %v", got)
		}
		ok(t, ctx, alice, "context_delete", obj{"context_id": c.ContextID}, nil)
	})

	t.Run("killed worker", func(t *testing.T) {
		ctx := tu.Context(t, 20*time.Second)
		gate := &gatedConn{ClientConnInterface: cell, started: make(chan struct{}), release: make(chan struct{}), done: make(chan error, 1)}
		w1 := startWorker(t, mcp.DefaultConfig(), gate, nil)
		w2 := startWorker(t, mcp.DefaultConfig(), cell, nil)
		cs1 := connect(t, ctx, w1.url("acme"), "2026-07-28", nil)
		cs2 := connect(t, ctx, w2.url("acme"), "2025-06-18", nil)
		ok(t, ctx, cs2, "context_create", obj{"context_id": "retry-1"}, nil)
		args := obj{"context_id": "retry-1", "entries": entries("a", "b"), "request_id": "turn-7"}

		errc := make(chan error, 1)
		go func() {
			_, err := cs1.CallTool(ctx, &sdk.CallToolParams{Name: "context_append", Arguments: args})
			errc <- err
		}()
		select {
		case <-gate.started:
		case <-ctx.Done():
			t.Fatal("the append never reached the backend")
		}
		w1.srv.Close() // the worker dies with the call in flight
		if err := <-errc; err == nil {
			t.Fatal("the call through the killed worker succeeded")
		}
		close(gate.release) // the cell still applies the in-flight append
		if err := <-gate.done; err != nil {
			t.Fatalf("in-flight append: %v", err)
		}
		var a appendOut
		ok(t, ctx, cs2, "context_append", args, &a) // the client's retry, elsewhere
		if a.FirstSeq != 1 || a.LastSeq != 2 {
			t.Fatalf("retry got %+v, want the original 1..2", a)
		}
		var r readOut
		ok(t, ctx, cs2, "context_read", obj{"context_id": "retry-1"}, &r)
		if got := contents(r); !slices.Equal(got, []string{"a", "b"}) {
			t.Fatalf("entries after retry: %v", got)
		}
	})

	t.Run("metrics", func(t *testing.T) {
		reg := prometheus.NewRegistry()
		reg.MustRegister(open.Collectors()...)
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		var notFound float64
		for _, mf := range mfs {
			names = append(names, mf.GetName())
			if mf.GetName() != "cellplane_mcp_tool_calls_total" {
				continue
			}
			for _, m := range mf.GetMetric() {
				if labels(m)["tool"] == "context_read" && labels(m)["result"] == "CONTEXT_NOT_FOUND" {
					notFound = m.GetCounter().GetValue()
				}
			}
		}
		for _, want := range []string{"cellplane_mcp_requests_total", "cellplane_mcp_tool_calls_total", "cellplane_mcp_tool_duration_seconds", "cellplane_mcp_sessions"} {
			if !slices.Contains(names, want) {
				t.Errorf("metric %s missing from %v", want, names)
			}
		}
		if notFound < 1 {
			t.Errorf("context_read CONTEXT_NOT_FOUND counted %v times", notFound)
		}
	})
}

func labels(m *dto.Metric) map[string]string {
	out := map[string]string{}
	for _, l := range m.GetLabel() {
		out[l.GetName()] = l.GetValue()
	}
	return out
}

// gatedConn holds the first Append until release, then lets it reach the
// cell even if the worker's request is gone: a worker that dies after
// sending the write.
type gatedConn struct {
	grpc.ClientConnInterface
	once     sync.Once
	started  chan struct{}
	release  chan struct{}
	done     chan error
	passThru bool
}

func (g *gatedConn) Invoke(ctx context.Context, method string, args, reply any, opts ...grpc.CallOption) error {
	if !strings.HasSuffix(method, "/Append") {
		return g.ClientConnInterface.Invoke(ctx, method, args, reply, opts...)
	}
	first := false
	g.once.Do(func() { first = true; close(g.started) })
	if !first {
		return errors.New("unexpected second append through the gated worker")
	}
	<-g.release
	err := g.ClientConnInterface.Invoke(context.WithoutCancel(ctx), method, args, reply, opts...)
	g.done <- err
	return err
}
