package mcp_test

import (
	"slices"
	"testing"
	"time"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/cellplane/cellplane/cells/mcp"
	"github.com/cellplane/cellplane/internal/cperr"
	tu "github.com/cellplane/cellplane/internal/testutil"
)

// TestListFilterTools: with the real go-sdk client, context_list and
// memory_list filter by labels (an object of exact values) and by a
// label_selector; a principal never sees another principal's contexts or
// memory through a filter; the worker's reserved labels cannot be
// filtered on or set; a caller without memory:write is refused a labelled
// put and nothing is written.
func TestListFilterTools(t *testing.T) {
	cell := startCell(t, "acme")
	w := startWorker(t, mcp.DefaultConfig(), cell, fakeAuth{})
	ctx := tu.Context(t, 20*time.Second)
	alice := connect(t, ctx, w.url("acme"), "2026-07-28", bearer("alice"))
	bob := connect(t, ctx, w.url("acme"), "2025-11-25", bearer("bob"))

	for _, c := range []struct {
		cs       *sdk.ClientSession
		id, team string
	}{{alice, "a-red", "red"}, {alice, "a-blue", "blue"}, {alice, "a-none", ""}, {bob, "b-red", "red"}} {
		labels := obj{}
		if c.team != "" {
			labels["team"] = c.team
		}
		ok(t, ctx, c.cs, "context_create", obj{"context_id": c.id, "labels": labels}, nil)
	}
	type listOut struct {
		Contexts []struct {
			ContextID string            `json:"context_id"`
			Labels    map[string]string `json:"labels"`
		} `json:"contexts"`
		NextPageToken string `json:"next_page_token"`
	}
	ids := func(args obj) []string {
		t.Helper()
		var out listOut
		ok(t, ctx, alice, "context_list", args, &out)
		var got []string
		for _, c := range out.Contexts {
			got = append(got, c.ContextID)
		}
		return got
	}
	if got := ids(obj{"labels": obj{"team": "red"}}); !slices.Equal(got, []string{"a-red"}) {
		t.Errorf("alice's team=red contexts = %v (bob's b-red must not show)", got)
	}
	sel := func(key, op string, values ...string) obj {
		r := obj{"key": key, "operator": op}
		if len(values) > 0 {
			r["values"] = values
		}
		return r
	}
	for _, tc := range []struct {
		args obj
		want []string
	}{
		{obj{"label_selector": []obj{sel("team", "in", "red", "blue")}}, []string{"a-blue", "a-red"}},
		{obj{"label_selector": []obj{sel("team", "not_exists")}}, []string{"a-none"}},
		{obj{"label_selector": []obj{sel("team", "not_equals", "red")}}, []string{"a-blue", "a-none"}},
		{obj{"labels": obj{"team": "red"}, "label_selector": []obj{sel("team", "exists")}}, []string{"a-red"}},
		{obj{}, []string{"a-blue", "a-none", "a-red"}},
	} {
		if got := ids(tc.args); !slices.Equal(got, tc.want) {
			t.Errorf("context_list(%v) = %v, want %v", tc.args, got, tc.want)
		}
	}
	fails(t, ctx, alice, "context_list", obj{"labels": obj{"cellplane.principal": "bob"}}, cperr.InvalidArgument)
	fails(t, ctx, alice, "context_list", obj{"label_selector": []obj{sel("cellplane.principal", "exists")}}, cperr.InvalidArgument)
	fails(t, ctx, alice, "context_list", obj{"label_selector": []obj{sel("team", "like", "r%")}}, cperr.InvalidArgument)
	fails(t, ctx, alice, "context_list", obj{"label_selector": []obj{sel("team", "equals")}}, cperr.InvalidArgument)

	// Memory labels: set by memory_put, returned by memory_get and
	// memory_list, filtered on by memory_list.
	ok(t, ctx, alice, "memory_put", obj{"key": "pref/lang", "value": "go", "labels": obj{"kind": "preference"}}, nil)
	ok(t, ctx, alice, "memory_put", obj{"key": "fact/sky", "value": "blue", "labels": obj{"kind": "fact"}}, nil)
	ok(t, ctx, bob, "memory_put", obj{"key": "pref/lang", "value": "rust", "labels": obj{"kind": "preference"}}, nil)
	fails(t, ctx, alice, "memory_put", obj{"key": "x", "value": "v", "labels": obj{"cellplane.owner": "me"}}, cperr.InvalidArgument)
	var got struct {
		Labels map[string]string `json:"labels"`
	}
	ok(t, ctx, alice, "memory_get", obj{"key": "pref/lang"}, &got)
	if got.Labels["kind"] != "preference" {
		t.Errorf("memory_get labels = %v", got.Labels)
	}
	type memOut struct {
		Items []struct {
			Key        string            `json:"key"`
			Labels     map[string]string `json:"labels"`
			UpdateTime string            `json:"update_time"`
		} `json:"items"`
	}
	keys := func(cs *sdk.ClientSession, args obj) []string {
		t.Helper()
		var out memOut
		ok(t, ctx, cs, "memory_list", args, &out)
		var got []string
		for _, it := range out.Items {
			got = append(got, it.Key+"="+it.Labels["kind"])
		}
		return got
	}
	if got := keys(alice, obj{"labels": obj{"kind": "preference"}}); !slices.Equal(got, []string{"pref/lang=preference"}) {
		t.Errorf("alice's preferences = %v", got)
	}
	if got := keys(bob, obj{"label_selector": []obj{sel("kind", "in", "fact", "preference")}}); !slices.Equal(got, []string{"pref/lang=preference"}) {
		t.Errorf("bob's memory = %v (alice's must not show)", got)
	}
	if got := keys(alice, obj{"updated_after": "2100-01-01T00:00:00Z"}); len(got) != 0 {
		t.Errorf("memory updated after 2100 = %v", got)
	}
	if got := keys(alice, obj{"updated_after": "2000-01-01T00:00:00Z"}); len(got) != 2 {
		t.Errorf("memory updated after 2000 = %v", got)
	}
	fails(t, ctx, alice, "memory_list", obj{"updated_after": "yesterday"}, cperr.InvalidArgument)

	// A read-only caller is refused a labelled put; nothing is written.
	ro := connect(t, ctx, w.url("acme"), "2026-07-28", bearer("carol;memory:read"))
	fails(t, ctx, ro, "memory_put", obj{"key": "k", "value": "v", "labels": obj{"kind": "fact"}}, cperr.PermissionDenied)
	carol := connect(t, ctx, w.url("acme"), "2026-07-28", bearer("carol"))
	if got := keys(carol, obj{}); len(got) != 0 {
		t.Errorf("after a refused put carol has %v", got)
	}
}
