package store

import (
	"fmt"
	"slices"
	"testing"

	"github.com/cellplane/cellplane/internal/labelsel"
	cellv1 "github.com/cellplane/cellplane/proto/cellplane/cell/v1"
	contextv1 "github.com/cellplane/cellplane/proto/cellplane/context/v1"
)

func labeledContext(tenant, id string, labels map[string]string) *cellv1.Command {
	c := createContext(tenant, id)
	c.GetCreateContext().Labels = labels
	return c
}

func labeledMemory(tenant, key, value string, labels map[string]string) *cellv1.Command {
	c := putMemory(tenant, key, value)
	c.GetPutMemory().Labels = labels
	return c
}

// filterLabels is the i-th item's labels: a mix that every operator
// splits differently (some items have no "team", some no labels at all).
func filterLabels(i int) map[string]string {
	switch i % 5 {
	case 0:
		return nil
	case 1:
		return map[string]string{"team": "red", "env": "prod"}
	case 2:
		return map[string]string{"team": "blue"}
	case 3:
		return map[string]string{"team": "green", "env": "dev"}
	default:
		return map[string]string{"env": "prod"}
	}
}

func req(key string, op contextv1.LabelOperator, values ...string) *contextv1.LabelRequirement {
	return &contextv1.LabelRequirement{Key: key, Operator: op, Values: values}
}

// filterSelectors: one selector per operator, a conjunction, and none.
var filterSelectors = map[string]*contextv1.LabelSelector{
	"none":       nil,
	"equals":     {Requirements: []*contextv1.LabelRequirement{req("team", contextv1.LabelOperator_LABEL_OPERATOR_EQUALS, "red")}},
	"not_equals": {Requirements: []*contextv1.LabelRequirement{req("team", contextv1.LabelOperator_LABEL_OPERATOR_NOT_EQUALS, "red")}},
	"in":         {Requirements: []*contextv1.LabelRequirement{req("team", contextv1.LabelOperator_LABEL_OPERATOR_IN, "blue", "green")}},
	"not_in":     {Requirements: []*contextv1.LabelRequirement{req("team", contextv1.LabelOperator_LABEL_OPERATOR_NOT_IN, "blue", "green")}},
	"exists":     {Requirements: []*contextv1.LabelRequirement{req("env", contextv1.LabelOperator_LABEL_OPERATOR_EXISTS)}},
	"not_exists": {Requirements: []*contextv1.LabelRequirement{req("env", contextv1.LabelOperator_LABEL_OPERATOR_NOT_EXISTS)}},
	"and": {Requirements: []*contextv1.LabelRequirement{req("env", contextv1.LabelOperator_LABEL_OPERATOR_EQUALS, "prod"),
		req("team", contextv1.LabelOperator_LABEL_OPERATOR_EXISTS)}},
	"nothing": {Requirements: []*contextv1.LabelRequirement{req("team", contextv1.LabelOperator_LABEL_OPERATOR_EQUALS, "purple")}},
}

// pageAll pages through a filtered listing, resuming after each call's
// Last, checks each call's bounds, and returns every item's id.
func pageAll[T any](t *testing.T, name string, limit, maxScan int, list func(after string) (ListPage[T], error), id func(T) string) []string {
	t.Helper()
	var got []string
	after := ""
	for calls := 0; ; calls++ {
		if calls > 1000 {
			t.Fatalf("%s: no end after %d calls", name, calls)
		}
		p, err := list(after)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if len(p.Items) > limit || (maxScan > 0 && p.Scanned > maxScan) {
			t.Fatalf("%s: a call returned %d items (limit %d) after examining %d (bound %d)", name, len(p.Items), limit, p.Scanned, maxScan)
		}
		for _, it := range p.Items {
			got = append(got, id(it))
		}
		if !p.More {
			return got
		}
		if p.Last == "" || p.Last <= after && after != "" {
			t.Fatalf("%s: a call with more to come did not advance (last %q after %q)", name, p.Last, after)
		}
		after = p.Last
	}
}

// TestListFilteredPagination: every selector, page size and scan bound
// pages through exactly the items an unfiltered listing filtered here
// holds, in order, none lost or repeated, and no call examines more than
// its bound (pages then come short or empty, with More).
func TestListFilteredPagination(t *testing.T) {
	h := newFSM(t)
	h.mustApply(ownedBy("t"))
	const n = 47
	var times []int64 // memory update times, in key order
	for i := range n {
		id := fmt.Sprintf("c%03d", i)
		p := "key:alice"
		if i%3 == 0 {
			p = "jwt:bob"
		}
		h.mustApply(as(p, labeledContext("t", id, filterLabels(i))))
		if i%7 == 6 {
			h.mustApply(deleteContext("t", id)) // invisible: examined, never returned
		}
		h.mustApply(labeledMemory("t", fmt.Sprintf("k%03d", i), "v", filterLabels(i)))
		times = append(times, h.now)
	}
	var allCtx []*contextv1.Context
	var allMem []*contextv1.MemoryItem
	var alice []*contextv1.Context
	h.tenant("t", func(v *TenantView) {
		var err error
		if allCtx, _, err = v.ListContexts("", 1000); err != nil {
			t.Fatal(err)
		}
		if alice, _, err = v.ListOwnedContexts("key:alice", "", 1000); err != nil {
			t.Fatal(err)
		}
		if allMem, _, err = v.ListMemory("", "", 1000, true); err != nil {
			t.Fatal(err)
		}
	})
	if len(allCtx) != n-n/7 || len(allMem) != n || len(alice) == 0 {
		t.Fatalf("setup: %d contexts, %d memory items, %d of alice's", len(allCtx), len(allMem), len(alice))
	}
	ctxIDs := func(cs []*contextv1.Context, sel labelsel.Selector) []string {
		var out []string
		for _, c := range cs {
			if sel.Matches(c.GetLabels()) {
				out = append(out, c.GetContextId())
			}
		}
		return out
	}
	cutoff := times[n/2]
	for name, ls := range filterSelectors {
		sel, err := labelsel.Compile(ls)
		if err != nil {
			t.Fatal(err)
		}
		wantCtx, wantOwned := ctxIDs(allCtx, sel), ctxIDs(alice, sel)
		var wantMem, wantRecent []string
		for _, m := range allMem {
			if sel.Matches(m.GetLabels()) {
				wantMem = append(wantMem, m.GetKey())
				if nanos(m.GetUpdateTime()) > cutoff {
					wantRecent = append(wantRecent, m.GetKey())
				}
			}
		}
		for _, limit := range []int{1, 3, 100} {
			for _, maxScan := range []int{0, 1, 2, 5, 13, 1000} {
				f := ListFilter{Labels: sel, MaxScan: maxScan}
				tag := fmt.Sprintf("%s/limit=%d/scan=%d", name, limit, maxScan)
				h.tenant("t", func(v *TenantView) {
					got := pageAll(t, tag+"/contexts", limit, maxScan, func(after string) (ListPage[*contextv1.Context], error) {
						return v.ListContextsWhere(after, limit, f)
					}, (*contextv1.Context).GetContextId)
					if !slices.Equal(got, wantCtx) {
						t.Errorf("%s contexts = %v, want %v", tag, got, wantCtx)
					}
					got = pageAll(t, tag+"/owned", limit, maxScan, func(after string) (ListPage[*contextv1.Context], error) {
						return v.ListOwnedContextsWhere("key:alice", after, limit, f)
					}, (*contextv1.Context).GetContextId)
					if !slices.Equal(got, wantOwned) {
						t.Errorf("%s alice's contexts = %v, want %v", tag, got, wantOwned)
					}
					got = pageAll(t, tag+"/memory", limit, maxScan, func(after string) (ListPage[*contextv1.MemoryItem], error) {
						return v.ListMemoryWhere("", "", after, limit, true, f)
					}, (*contextv1.MemoryItem).GetKey)
					if !slices.Equal(got, wantMem) {
						t.Errorf("%s memory = %v, want %v", tag, got, wantMem)
					}
					fr := f
					fr.UpdatedAfter = cutoff
					got = pageAll(t, tag+"/recent", limit, maxScan, func(after string) (ListPage[*contextv1.MemoryItem], error) {
						return v.ListMemoryWhere("", "k0", after, limit, true, fr)
					}, (*contextv1.MemoryItem).GetKey)
					if !slices.Equal(got, wantRecent) {
						t.Errorf("%s memory updated after the cutoff = %v, want %v", tag, got, wantRecent)
					}
				})
			}
		}
	}
	// A selective filter stops at the bound with nothing found yet: an
	// empty page that resumes after the last item examined.
	h.tenant("t", func(v *TenantView) {
		sel, _ := labelsel.Compile(filterSelectors["nothing"])
		p, err := v.ListContextsWhere("", 10, ListFilter{Labels: sel, MaxScan: 5})
		if err != nil || len(p.Items) != 0 || !p.More || p.Scanned != 5 || p.Last != allCtx[4].GetContextId() {
			t.Errorf("bounded empty page = %d items, more %v, scanned %d, last %q, %v", len(p.Items), p.More, p.Scanned, p.Last, err)
		}
	})
}

// TestMemoryLabels: a put stores its labels (a put without labels
// clears them), they count in the usage bytes, and they survive a
// restart.
func TestMemoryLabels(t *testing.T) {
	h := newFSM(t)
	h.mustApply(ownedBy("t"))
	h.mustApply(labeledMemory("t", "k", "value", map[string]string{"kind": "fact"}))
	h.mustApply(as("key:alice", labeledMemory("t", "mine", "v", map[string]string{"kind": "pref"})))
	if got, want := h.record("t").GetUsage().GetBytes(), uint64(len("k")+len("value")+len("kind")+len("fact")+len("mine")+len("v")+len("kind")+len("pref")); got != want {
		t.Errorf("usage bytes %d, want %d (labels count)", got, want)
	}
	checkState(t, h.f)
	h.reopen()
	sel, _ := labelsel.Compile(filterSelectors["none"])
	h.tenant("t", func(v *TenantView) {
		m, err := v.Memory("k")
		if err != nil || m.GetLabels()["kind"] != "fact" {
			t.Errorf("after restart: %v, %v", m, err)
		}
		p, err := v.ListMemoryWhere("key:alice", "", "", 10, false, ListFilter{Labels: sel})
		if err != nil || len(p.Items) != 1 || p.Items[0].GetLabels()["kind"] != "pref" {
			t.Errorf("alice's memory after restart: %v, %v", p.Items, err)
		}
	})
	h.mustApply(putMemory("t", "k", "value")) // no labels: none left
	h.tenant("t", func(v *TenantView) {
		if m, err := v.Memory("k"); err != nil || len(m.GetLabels()) != 0 {
			t.Errorf("after a put without labels: %v, %v", m, err)
		}
	})
	checkState(t, h.f)
	h.mustApply(deleteMemory("t", "k"))
	h.mustApply(as("key:alice", deleteMemory("t", "mine")))
	if got := h.record("t").GetUsage().GetBytes(); got != 0 {
		t.Errorf("usage bytes %d after deleting everything, want 0", got)
	}
}

// TestMemoryLabelsMoveAndStandby: memory labels reach a standby through
// an export (a move, a bootstrap) and through the change stream, and the
// standby's filtered listings answer as the source's.
func TestMemoryLabelsMoveAndStandby(t *testing.T) {
	src, dst := openSingle(t, ""), openSingle(t, "")
	setOwner(t, src, "acme", 1)
	for i := range 8 {
		mustPropose(t, src, labeledMemory("acme", fmt.Sprintf("k%d", i), "v", filterLabels(i)))
		mustPropose(t, src, as("key:alice", labeledContext("acme", fmt.Sprintf("c%d", i), filterLabels(i))))
	}
	mustPropose(t, dst, standbyOf("acme", "src", 1, false))
	rec := bootstrap(t, src, dst, "acme")
	mustPropose(t, src, labeledMemory("acme", "k0", "v", map[string]string{"team": "red"})) // relabelled after the export
	mustPropose(t, src, labeledMemory("acme", "k9", "v", map[string]string{"team": "red"}))
	mustPropose(t, dst, applyEvents("acme", changesAfter(t, src, "acme", rec.GetTseq())))
	if d := diffDumps(dumpRange(t, src.fsm, tenantPrefix("acme"), tenantEnd("acme"), false),
		dumpRange(t, dst.fsm, tenantPrefix("acme"), tenantEnd("acme"), false)); d != "" {
		t.Fatalf("standby differs from its source: %s", d)
	}
	sel, _ := labelsel.Compile(filterSelectors["equals"]) // team=red
	for name, s := range map[string]*Store{"source": src, "standby": dst} {
		if err := s.ReadReplica("acme", func(v *TenantView) error {
			p, err := v.ListMemoryWhere("", "", "", 100, true, ListFilter{Labels: sel})
			if got := memoryKeys(p.Items); err != nil || !slices.Equal(got, []string{"k0", "k1", "k6", "k9"}) {
				t.Errorf("%s: team=red memory = %v, %v", name, got, err)
			}
			c, err := v.ListOwnedContextsWhere("key:alice", "", 100, ListFilter{Labels: sel})
			if got := contextIDs(c.Items); err != nil || !slices.Equal(got, []string{"c1", "c6"}) {
				t.Errorf("%s: alice's team=red contexts = %v, %v", name, got, err)
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
}
