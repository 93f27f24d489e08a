package service

import (
	"slices"
	"testing"
	"time"

	"github.com/cellplane/cellplane/internal/cperr"
	"github.com/cellplane/cellplane/internal/tenantmd"
	"github.com/cellplane/cellplane/internal/testutil"
	contextv1 "github.com/cellplane/cellplane/proto/cellplane/context/v1"
	"google.golang.org/grpc/codes"
)

func vecEntry(role, text string, vec ...float32) *contextv1.Entry {
	e := textEntry(role, text)
	e.Embedding = vec
	if role == "tool" {
		e.Metadata = map[string]string{"kind": "call"}
	}
	return e
}

// TestStoreVectorSearch: SearchContexts and SearchMemory with a vector,
// through the service: filters, principal scoping, the dimension rule.
func TestStoreVectorSearch(t *testing.T) {
	n := newCell(t, nil, nil)
	base := as(testutil.Context(t, 30*time.Second), "acme", 0)
	alice := tenantmd.WithCaller(base, "alice", "")
	bob := tenantmd.WithCaller(base, "bob", "")

	must(n.ctx.CreateContext(alice, &contextv1.CreateContextRequest{ContextId: "a", Labels: map[string]string{"topic": "x"}}))(t)
	must(n.ctx.CreateContext(bob, &contextv1.CreateContextRequest{ContextId: "b"}))(t)
	must(n.ctx.Append(alice, &contextv1.AppendRequest{ContextId: "a", Entries: []*contextv1.Entry{
		vecEntry("user", "east", 1, 0), vecEntry("tool", "north", 0, 1), textEntry("user", "no vector")}}))(t)
	must(n.ctx.Append(bob, &contextv1.AppendRequest{ContextId: "b", Entries: []*contextv1.Entry{vecEntry("user", "ne", 1, 1)}}))(t)

	hitsOf := func(r *contextv1.SearchContextsResponse) []string {
		var out []string
		for _, h := range r.GetHits() {
			out = append(out, h.GetContextId()+":"+h.GetEntry().GetText())
		}
		return out
	}
	for _, tc := range []struct {
		name string
		req  *contextv1.SearchContextsRequest
		want []string
	}{
		{"all", &contextv1.SearchContextsRequest{Vector: []float32{1, 0}}, []string{"a:east", "b:ne", "a:north"}},
		{"limit", &contextv1.SearchContextsRequest{Vector: []float32{1, 0}, Limit: 1}, []string{"a:east"}},
		{"context ids", &contextv1.SearchContextsRequest{Vector: []float32{1, 0}, ContextIds: []string{"b"}}, []string{"b:ne"}},
		{"roles", &contextv1.SearchContextsRequest{Vector: []float32{1, 0}, Roles: []string{"tool"}}, []string{"a:north"}},
		{"metadata", &contextv1.SearchContextsRequest{Vector: []float32{1, 0}, EntryMetadata: &contextv1.LabelSelector{Requirements: []*contextv1.LabelRequirement{
			{Key: "kind", Operator: contextv1.LabelOperator_LABEL_OPERATOR_IN, Values: []string{"call"}}}}}, []string{"a:north"}},
		{"labels", &contextv1.SearchContextsRequest{Vector: []float32{0, 1}, ContextLabels: &contextv1.LabelSelector{Requirements: []*contextv1.LabelRequirement{
			{Key: "topic", Operator: contextv1.LabelOperator_LABEL_OPERATOR_EXISTS}}}}, []string{"a:north", "a:east"}},
		{"created by caller", &contextv1.SearchContextsRequest{Vector: []float32{1, 0}, CreatedByCaller: true}, []string{"a:east", "a:north"}},
	} {
		got := hitsOf(must(n.ctx.SearchContexts(alice, tc.req))(t))
		if !slices.Equal(got, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
	// Another dimension: refused naming both, nothing written.
	_, err := n.ctx.SearchContexts(alice, &contextv1.SearchContextsRequest{Vector: []float32{1, 0, 0}})
	wantErr(t, err, codes.InvalidArgument, cperr.InvalidArgument)
	_, err = n.ctx.Append(alice, &contextv1.AppendRequest{ContextId: "a", Entries: []*contextv1.Entry{vecEntry("user", "3d", 1, 0, 0)}})
	wantErr(t, err, codes.InvalidArgument, cperr.InvalidArgument)
	if c := must(n.ctx.GetContext(alice, &contextv1.GetContextRequest{ContextId: "a"}))(t).GetContext(); c.GetLastSeq() != 3 || c.GetVectorCount() != 2 {
		t.Fatalf("after a refused append: %v", c)
	}
	_, err = n.ctx.Append(alice, &contextv1.AppendRequest{ContextId: "a", Entries: []*contextv1.Entry{vecEntry("user", "zero", 0, 0)}})
	wantField(t, err, "entries[0].embedding")

	// Memory: each principal searches its own; the tenant scope is shared.
	must(n.ctx.PutMemory(alice, &contextv1.PutMemoryRequest{Key: "k", Value: []byte("alice"), Embedding: []float32{1, 0, 0}}))(t)
	must(n.ctx.PutMemory(bob, &contextv1.PutMemoryRequest{Key: "k", Value: []byte("bob"), Embedding: []float32{1, 0, 0}}))(t)
	must(n.ctx.PutMemory(bob, &contextv1.PutMemoryRequest{Key: "t", Value: []byte("shared"), Embedding: []float32{0, 1, 0},
		Scope: contextv1.MemoryScope_MEMORY_SCOPE_TENANT}))(t)
	for who, want := range map[string][]string{"alice": {"alice"}, "bob": {"bob"}} {
		ctx := tenantmd.WithCaller(base, who, "")
		r := must(n.ctx.SearchMemory(ctx, &contextv1.SearchMemoryRequest{Vector: []float32{1, 1, 0}}))(t)
		var got []string
		for _, h := range r.GetHits() {
			got = append(got, string(h.GetItem().GetValue()))
		}
		if !slices.Equal(got, want) {
			t.Errorf("%s's memory search: %v, want %v", who, got, want)
		}
	}
	r := must(n.ctx.SearchMemory(alice, &contextv1.SearchMemoryRequest{Vector: []float32{1, 1, 0}, Scope: contextv1.MemoryScope_MEMORY_SCOPE_TENANT}))(t)
	if len(r.GetHits()) != 1 || string(r.GetHits()[0].GetItem().GetValue()) != "shared" || r.GetHits()[0].GetItem().GetEmbeddingDims() != 3 {
		t.Fatalf("tenant scope: %v", r)
	}
	// A label selector filters vector hits like keyword hits.
	must(n.ctx.PutMemory(alice, &contextv1.PutMemoryRequest{Key: "l", Value: []byte("labelled"), Embedding: []float32{0.9, 0.1, 0},
		Labels: map[string]string{"kind": "ui"}}))(t)
	ui := &contextv1.LabelSelector{Requirements: []*contextv1.LabelRequirement{{Key: "kind", Operator: contextv1.LabelOperator_LABEL_OPERATOR_EXISTS}}}
	r = must(n.ctx.SearchMemory(alice, &contextv1.SearchMemoryRequest{Vector: []float32{1, 0, 0}, Labels: ui}))(t)
	if len(r.GetHits()) != 1 || string(r.GetHits()[0].GetItem().GetValue()) != "labelled" {
		t.Fatalf("labels filter: %v", r)
	}
	_, err = n.ctx.PutMemory(alice, &contextv1.PutMemoryRequest{Key: "k2", Value: []byte("x"), Embedding: []float32{1, 0}})
	wantErr(t, err, codes.InvalidArgument, cperr.InvalidArgument)
	_, err = n.ctx.GetMemory(alice, &contextv1.GetMemoryRequest{Key: "k2"})
	wantErr(t, err, codes.NotFound, cperr.KeyNotFound)
}
