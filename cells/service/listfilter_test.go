package service

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/cellplane/cellplane/internal/tenantmd"
	"github.com/cellplane/cellplane/internal/testutil"
	contextv1 "github.com/cellplane/cellplane/proto/cellplane/context/v1"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// TestListFiltersThroughService: label selectors (and created_by_caller,
// and updated_after for memory) are evaluated in the store and paged; a
// small MaxListScan makes pages short or empty with a token, and paging
// to the end yields exactly the matching items, once each.
func TestListFiltersThroughService(t *testing.T) {
	n := newCell(t, nil, func(c *Config) { c.Limits.MaxListScan = 3 })
	ctx := testutil.Context(t, 30*time.Second)
	alice := tenantmd.WithCaller(as(ctx, "acme", 0), "alice", "")
	bob := tenantmd.WithCaller(as(ctx, "acme", 0), "bob", "")
	red := &contextv1.LabelSelector{Requirements: []*contextv1.LabelRequirement{{Key: "team", Operator: contextv1.LabelOperator_LABEL_OPERATOR_EQUALS, Values: []string{"red"}}}}
	var wantAll, wantAlice, wantMem []string
	var cutoff time.Time
	for i := range 20 {
		id := fmt.Sprintf("c%02d", i)
		team := []string{"red", "blue", "green"}[i%3]
		who := alice
		if i%2 == 1 {
			who = bob
		}
		must(n.ctx.CreateContext(who, &contextv1.CreateContextRequest{ContextId: id, Labels: map[string]string{"team": team}}))(t)
		key := fmt.Sprintf("k%02d", i)
		must(n.ctx.PutMemory(alice, &contextv1.PutMemoryRequest{Key: key, Value: []byte("v"), Labels: map[string]string{"team": team}}))(t)
		if i == 9 {
			cutoff = time.Now()
		}
		if team == "red" {
			wantAll = append(wantAll, id)
			if i%2 == 0 {
				wantAlice = append(wantAlice, id)
			}
			if i > 9 {
				wantMem = append(wantMem, key)
			}
		}
	}
	listContexts := func(req *contextv1.ListContextsRequest, who string) []string {
		t.Helper()
		c := alice
		if who == "bob" {
			c = bob
		}
		var got []string
		short := false
		for pages := 0; ; pages++ {
			if pages > 50 {
				t.Fatal("pagination does not end")
			}
			resp := must(n.ctx.ListContexts(c, req))(t)
			for _, x := range resp.GetContexts() {
				got = append(got, x.GetContextId())
			}
			if resp.GetNextPageToken() == "" {
				break
			}
			short = short || len(resp.GetContexts()) < 2
			req.PageToken = resp.GetNextPageToken()
		}
		if !short {
			t.Errorf("no page came short under MaxListScan 3")
		}
		return got
	}
	if got := listContexts(&contextv1.ListContextsRequest{PageSize: 2, LabelSelector: red}, "alice"); !slices.Equal(got, wantAll) {
		t.Errorf("team=red contexts = %v, want %v", got, wantAll)
	}
	if got := listContexts(&contextv1.ListContextsRequest{PageSize: 2, LabelSelector: red, CreatedByCaller: true}, "alice"); !slices.Equal(got, wantAlice) {
		t.Errorf("alice's team=red contexts = %v, want %v", got, wantAlice)
	}
	var got []string
	req := &contextv1.ListMemoryRequest{PageSize: 2, Prefix: "k", LabelSelector: red, UpdatedAfter: timestamppb.New(cutoff), Scope: contextv1.MemoryScope_MEMORY_SCOPE_PRINCIPAL}
	for pages := 0; ; pages++ {
		if pages > 50 {
			t.Fatal("pagination does not end")
		}
		resp := must(n.ctx.ListMemory(alice, req))(t)
		for _, it := range resp.GetItems() {
			if it.GetLabels()["team"] != "red" {
				t.Errorf("item %v does not match", it)
			}
			got = append(got, it.GetKey())
		}
		if req.PageToken = resp.GetNextPageToken(); req.PageToken == "" {
			break
		}
	}
	if !slices.Equal(got, wantMem) {
		t.Errorf("alice's team=red memory written after the cutoff = %v, want %v", got, wantMem)
	}
	// Bob's memory is his own: the same filter finds nothing of alice's.
	if resp := must(n.ctx.ListMemory(bob, &contextv1.ListMemoryRequest{LabelSelector: red}))(t); len(resp.GetItems()) != 0 {
		t.Errorf("bob sees %v", resp.GetItems())
	}
	// A selector that means nothing is INVALID_ARGUMENT.
	_, err := n.ctx.ListContexts(alice, &contextv1.ListContextsRequest{LabelSelector: &contextv1.LabelSelector{Requirements: []*contextv1.LabelRequirement{{Key: "team"}}}})
	wantField(t, err, "label_selector")
	_, err = n.ctx.PutMemory(alice, &contextv1.PutMemoryRequest{Key: "x", Labels: map[string]string{"": "v"}})
	wantField(t, err, "labels")
	if it := must(n.ctx.GetMemory(alice, &contextv1.GetMemoryRequest{Key: "k00"}))(t).GetItem(); it.GetLabels()["team"] != "red" {
		t.Errorf("GetMemory labels = %v", it.GetLabels())
	}
}
