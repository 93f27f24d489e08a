package service

import (
	"slices"
	"testing"
	"time"

	"github.com/cellplane/cellplane/internal/tenantmd"
	"github.com/cellplane/cellplane/internal/testutil"
	contextv1 "github.com/cellplane/cellplane/proto/cellplane/context/v1"
)

func hitIDs(hits []*contextv1.ContextHit) []string {
	var out []string
	for _, h := range hits {
		out = append(out, h.GetContextId()+"/"+h.GetEntry().GetText())
	}
	return out
}

// TestSearchKeyword: SearchContexts and SearchMemory through the service:
// BM25 order, every filter, and scopes (a principal never sees another's
// memory, created_by_caller never another's contexts).
func TestSearchKeyword(t *testing.T) {
	n := newCell(t, nil, nil)
	ctx := testutil.Context(t, 30*time.Second)
	alice := tenantmd.WithCaller(as(ctx, "acme", 0), "alice", "")
	bob := tenantmd.WithCaller(as(ctx, "acme", 0), "bob", "")
	must(n.ctx.CreateContext(alice, &contextv1.CreateContextRequest{ContextId: "a1", Labels: map[string]string{"team": "red"}}))(t)
	must(n.ctx.CreateContext(bob, &contextv1.CreateContextRequest{ContextId: "b1", Labels: map[string]string{"team": "blue"}}))(t)
	must(n.ctx.Append(alice, &contextv1.AppendRequest{ContextId: "a1", Entries: []*contextv1.Entry{
		textEntry("user", "deploy the rocket"),
		{Role: "tool", Content: &contextv1.Entry_Text{Text: "rocket rocket telemetry"}, Metadata: map[string]string{"tool": "radar"}},
	}}))(t)
	must(n.ctx.Append(bob, &contextv1.AppendRequest{ContextId: "b1", Entries: []*contextv1.Entry{textEntry("user", "a rocket for bob")}}))(t)

	sel := func(key, v string) *contextv1.LabelSelector {
		return &contextv1.LabelSelector{Requirements: []*contextv1.LabelRequirement{{Key: key, Operator: contextv1.LabelOperator_LABEL_OPERATOR_EQUALS, Values: []string{v}}}}
	}
	for _, tc := range []struct {
		name string
		req  *contextv1.SearchContextsRequest
		want []string
	}{
		{"rank", &contextv1.SearchContextsRequest{Query: "rocket"}, []string{"a1/rocket rocket telemetry", "a1/deploy the rocket", "b1/a rocket for bob"}}, // tf, then the shorter entry
		{"context ids", &contextv1.SearchContextsRequest{Query: "rocket", ContextIds: []string{"b1"}}, []string{"b1/a rocket for bob"}},
		{"labels", &contextv1.SearchContextsRequest{Query: "rocket", ContextLabels: sel("team", "red")}, []string{"a1/rocket rocket telemetry", "a1/deploy the rocket"}},
		{"metadata", &contextv1.SearchContextsRequest{Query: "rocket", EntryMetadata: sel("tool", "radar")}, []string{"a1/rocket rocket telemetry"}},
		{"roles", &contextv1.SearchContextsRequest{Query: "rocket", Roles: []string{"user"}}, []string{"a1/deploy the rocket", "b1/a rocket for bob"}},
		{"created by caller", &contextv1.SearchContextsRequest{Query: "rocket", CreatedByCaller: true}, []string{"a1/rocket rocket telemetry", "a1/deploy the rocket"}},
		{"match all", &contextv1.SearchContextsRequest{Query: "deploy rocket", MatchAll: true}, []string{"a1/deploy the rocket"}},
		{"limit", &contextv1.SearchContextsRequest{Query: "rocket", Limit: 1}, []string{"a1/rocket rocket telemetry"}},
	} {
		resp := must(n.ctx.SearchContexts(alice, tc.req))(t)
		if got := hitIDs(resp.GetHits()); !slices.Equal(got, tc.want) {
			t.Errorf("%s: %q, want %q", tc.name, got, tc.want)
		}
		for _, h := range resp.GetHits() {
			if h.GetScore() <= 0 || h.GetEntry().GetSeq() == 0 || h.GetEntry().GetCreateTime() == nil {
				t.Errorf("%s: hit %v lacks its score or entry", tc.name, h)
			}
		}
	}
	if got := must(n.ctx.SearchContexts(bob, &contextv1.SearchContextsRequest{Query: "telemetry", CreatedByCaller: true}))(t).GetHits(); len(got) != 0 {
		t.Errorf("bob finds alice's contexts with created_by_caller: %v", got)
	}

	must(n.ctx.PutMemory(alice, &contextv1.PutMemoryRequest{Key: "pref/color", Value: []byte("favourite colour is green")}))(t)
	must(n.ctx.PutMemory(bob, &contextv1.PutMemoryRequest{Key: "pref/color", Value: []byte("favourite colour is blue")}))(t)
	must(n.ctx.PutMemory(alice, &contextv1.PutMemoryRequest{Key: "team", Value: []byte("the team colour is orange"), Scope: contextv1.MemoryScope_MEMORY_SCOPE_TENANT}))(t)
	must(n.ctx.PutMemory(alice, &contextv1.PutMemoryRequest{Key: "pref/shade", Value: []byte("a darker colour for the dashboard"), Labels: map[string]string{"kind": "ui"}}))(t)
	uiOnly := &contextv1.LabelSelector{Requirements: []*contextv1.LabelRequirement{{Key: "kind", Operator: contextv1.LabelOperator_LABEL_OPERATOR_EQUALS, Values: []string{"ui"}}}}
	notUI := &contextv1.LabelSelector{Requirements: []*contextv1.LabelRequirement{{Key: "kind", Operator: contextv1.LabelOperator_LABEL_OPERATOR_NOT_EQUALS, Values: []string{"ui"}}}}
	for _, tc := range []struct {
		name string
		ctx  bool // alice (true) or bob
		req  *contextv1.SearchMemoryRequest
		want []string
	}{
		{"alice own", true, &contextv1.SearchMemoryRequest{Query: "colour green"}, []string{"favourite colour is green", "a darker colour for the dashboard"}},
		{"labels", true, &contextv1.SearchMemoryRequest{Query: "colour", Labels: uiOnly}, []string{"a darker colour for the dashboard"}},
		{"labels excluded", true, &contextv1.SearchMemoryRequest{Query: "colour", Labels: notUI}, []string{"favourite colour is green"}},
		{"bob own", false, &contextv1.SearchMemoryRequest{Query: "colour"}, []string{"favourite colour is blue"}},
		{"tenant", false, &contextv1.SearchMemoryRequest{Query: "colour", Scope: contextv1.MemoryScope_MEMORY_SCOPE_TENANT}, []string{"the team colour is orange"}},
		{"prefix", true, &contextv1.SearchMemoryRequest{Query: "colour", Prefix: "nope/"}, nil},
		{"other's word", false, &contextv1.SearchMemoryRequest{Query: "green"}, nil},
	} {
		c := bob
		if tc.ctx {
			c = alice
		}
		var got []string
		for _, h := range must(n.ctx.SearchMemory(c, tc.req))(t).GetHits() {
			got = append(got, string(h.GetItem().GetValue()))
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("memory %s: %q, want %q", tc.name, got, tc.want)
		}
	}
}
