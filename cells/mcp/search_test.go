package mcp_test

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cellplane/cellplane/cells/mcp"
	"github.com/cellplane/cellplane/internal/cperr"
	tu "github.com/cellplane/cellplane/internal/testutil"
)

type searchOut struct {
	Hits []struct {
		ContextID string  `json:"context_id"`
		Score     float64 `json:"score"`
		Entry     struct {
			Seq     uint64 `json:"seq"`
			Content string `json:"content"`
		} `json:"entry"`
	} `json:"hits"`
}

type memSearchOut struct {
	Hits []struct {
		Key   string  `json:"key"`
		Value string  `json:"value"`
		Score float64 `json:"score"`
	} `json:"hits"`
}

// TestSearchTools: context_search finds only the caller's contexts' entries,
// memory_search only the caller's memory (or the tenant's with scope
// tenant), through the real go-sdk client; a caller without the read
// scope is refused; the input schemas are plain JSON Schema.
func TestSearchTools(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a cell node")
	}
	cell := startCell(t, "acme")
	w := startWorker(t, mcp.DefaultConfig(), cell, fakeAuth{})
	ctx := tu.Context(t, 20*time.Second)
	alice := connect(t, ctx, w.url("acme"), "2026-07-28", bearer("alice"))
	bob := connect(t, ctx, w.url("acme"), "2025-06-18", bearer("bob"))

	var a, b createOut
	ok(t, ctx, alice, "context_create", obj{"labels": obj{"app": "notes"}}, &a)
	ok(t, ctx, alice, "context_append", obj{"context_id": a.ContextID, "entries": entries("the launch window opens at dawn", "launch launch launch")}, nil)
	ok(t, ctx, bob, "context_create", obj{}, &b)
	ok(t, ctx, bob, "context_append", obj{"context_id": b.ContextID, "entries": entries("bob's launch notes")}, nil)

	var s searchOut
	ok(t, ctx, alice, "context_search", obj{"query": "launch"}, &s)
	var got []string
	for _, h := range s.Hits {
		if h.ContextID != a.ContextID {
			t.Fatalf("alice finds %s's entry %q", h.ContextID, h.Entry.Content)
		}
		got = append(got, h.Entry.Content)
	}
	if !slices.Equal(got, []string{"launch launch launch", "the launch window opens at dawn"}) {
		t.Fatalf("alice's search %q", got)
	}
	ok(t, ctx, alice, "context_search", obj{"query": "launch dawn", "match_all": true, "labels": obj{"app": "notes"}, "roles": []string{"user"}, "limit": 5}, &s)
	if len(s.Hits) != 1 || s.Hits[0].Entry.Seq != 1 {
		t.Fatalf("filtered search %+v", s)
	}
	ok(t, ctx, bob, "context_search", obj{"query": "window dawn"}, &s)
	if len(s.Hits) != 0 {
		t.Fatalf("bob finds alice's entries: %+v", s)
	}

	ok(t, ctx, alice, "memory_put", obj{"key": "plan", "value": "alice plans a picnic"}, nil)
	ok(t, ctx, bob, "memory_put", obj{"key": "plan", "value": "bob plans a picnic too"}, nil)
	ok(t, ctx, bob, "memory_put", obj{"key": "shared", "value": "team picnic friday", "scope": "tenant"}, nil)
	var m memSearchOut
	ok(t, ctx, alice, "memory_search", obj{"query": "picnic"}, &m)
	if len(m.Hits) != 1 || m.Hits[0].Value != "alice plans a picnic" {
		t.Fatalf("alice's memory search %+v", m)
	}
	ok(t, ctx, alice, "memory_search", obj{"query": "picnic", "scope": "tenant"}, &m)
	if len(m.Hits) != 1 || m.Hits[0].Key != "shared" {
		t.Fatalf("tenant memory search %+v", m)
	}
	fails(t, ctx, alice, "memory_search", obj{"query": "picnic", "scope": "galaxy"}, cperr.InvalidArgument)
	// Labels filter memory hits; reserved keys are refused.
	ok(t, ctx, alice, "memory_put", obj{"key": "plan2", "value": "a picnic by the lake", "labels": obj{"kind": "outing"}}, nil)
	ok(t, ctx, alice, "memory_search", obj{"query": "picnic", "labels": obj{"kind": "outing"}}, &m)
	if len(m.Hits) != 1 || m.Hits[0].Key != "plan2" {
		t.Fatalf("labelled memory search %+v", m)
	}
	fails(t, ctx, alice, "memory_search", obj{"query": "picnic", "labels": obj{"cellplane.principal": "bob"}}, cperr.InvalidArgument)
	fails(t, ctx, alice, "context_search", obj{"query": "launch", "labels": obj{"cellplane.principal": "bob"}}, cperr.InvalidArgument)

	// Scopes: memory:read alone cannot search contexts, and the reverse.
	mem := connect(t, ctx, w.url("acme"), "2026-07-28", bearer("alice;memory:read"))
	fails(t, ctx, mem, "context_search", obj{"query": "launch"}, cperr.PermissionDenied)
	ok(t, ctx, mem, "memory_search", obj{"query": "picnic"}, &m)
	cr := connect(t, ctx, w.url("acme"), "2026-07-28", bearer("alice;contexts:read"))
	fails(t, ctx, cr, "memory_search", obj{"query": "picnic"}, cperr.PermissionDenied)

	// Portable input schemas: a plain object, typed properties, no "null"
	// types or references a strict client would stumble on.
	lt, err := alice.ListTools(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, tool := range lt.Tools {
		if tool.Name != "context_search" && tool.Name != "memory_search" {
			continue
		}
		raw, _ := json.Marshal(tool.InputSchema)
		if strings.Contains(string(raw), "null") || strings.Contains(string(raw), "$ref") || !strings.Contains(string(raw), `"items":{"type":"number"},"type":"array"`) {
			t.Errorf("%s input schema %s", tool.Name, raw)
		}
	}
}
