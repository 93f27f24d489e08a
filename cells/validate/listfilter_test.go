package validate

import (
	"strings"
	"testing"

	"github.com/cellplane/cellplane/internal/labelsel"
	contextv1 "github.com/cellplane/cellplane/proto/cellplane/context/v1"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

func selectorOf(reqs ...*contextv1.LabelRequirement) *contextv1.LabelSelector {
	return &contextv1.LabelSelector{Requirements: reqs}
}

func TestListFilters(t *testing.T) {
	lim := DefaultLimits()
	eq := &contextv1.LabelRequirement{Key: "team", Operator: contextv1.LabelOperator_LABEL_OPERATOR_EQUALS, Values: []string{"red"}}
	tooMany := make([]*contextv1.LabelRequirement, lim.Selector.MaxRequirements+1)
	for i := range tooMany {
		tooMany[i] = eq
	}
	manyLabels := map[string]string{}
	for i := range lim.Labels.MaxPairs + 1 {
		manyLabels[strings.Repeat("k", i+1)] = "v"
	}
	tests := []struct {
		name   string
		err    error
		fields []string
	}{
		{"contexts selector ok", ListContexts(lim, &contextv1.ListContextsRequest{LabelSelector: selectorOf(eq), CreatedByCaller: true}), nil},
		{"contexts empty selector", ListContexts(lim, &contextv1.ListContextsRequest{LabelSelector: &contextv1.LabelSelector{}}), nil},
		{"contexts no operator", ListContexts(lim, &contextv1.ListContextsRequest{LabelSelector: selectorOf(&contextv1.LabelRequirement{Key: "a"})}), []string{"label_selector"}},
		{"contexts equals two values", ListContexts(lim, &contextv1.ListContextsRequest{LabelSelector: selectorOf(&contextv1.LabelRequirement{Key: "a", Operator: contextv1.LabelOperator_LABEL_OPERATOR_EQUALS, Values: []string{"x", "y"}})}), []string{"label_selector"}},
		{"contexts too many requirements", ListContexts(lim, &contextv1.ListContextsRequest{LabelSelector: selectorOf(tooMany...)}), []string{"label_selector.requirements"}},
		{"contexts long key", ListContexts(lim, &contextv1.ListContextsRequest{LabelSelector: selectorOf(&contextv1.LabelRequirement{Key: strings.Repeat("k", 300), Operator: contextv1.LabelOperator_LABEL_OPERATOR_EXISTS})}), []string{"label_selector.requirements[0].key"}},
		{"memory selector ok", ListMemory(lim, &contextv1.ListMemoryRequest{LabelSelector: selectorOf(eq), UpdatedAfter: timestamppb.Now()}), nil},
		{"memory exists with values", ListMemory(lim, &contextv1.ListMemoryRequest{LabelSelector: selectorOf(&contextv1.LabelRequirement{Key: "a", Operator: contextv1.LabelOperator_LABEL_OPERATOR_EXISTS, Values: []string{"x"}})}), []string{"label_selector"}},
		{"memory bad updated_after", ListMemory(lim, &contextv1.ListMemoryRequest{UpdatedAfter: &timestamppb.Timestamp{Nanos: -1}}), []string{"updated_after"}},
		{"put labels ok", PutMemory(lim, &contextv1.PutMemoryRequest{Key: "k", Labels: map[string]string{"kind": "fact"}}), nil},
		{"put empty label key", PutMemory(lim, &contextv1.PutMemoryRequest{Key: "k", Labels: map[string]string{"": "x"}}), []string{"labels"}},
		{"put too many labels", PutMemory(lim, &contextv1.PutMemoryRequest{Key: "k", Labels: manyLabels}), []string{"labels"}},
		{"put long label value", PutMemory(lim, &contextv1.PutMemoryRequest{Key: "k", Labels: map[string]string{"a": strings.Repeat("v", lim.Labels.MaxValueBytes+1)}}), []string{"labels"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { checkFields(t, tt.err, tt.fields...) })
	}
}

// FuzzListFilters: the list filters' validators never panic, answer with
// field violations only, and what they accept compiles and keeps the
// bounds (selectors, labels).
func FuzzListFilters(f *testing.F) {
	for _, m := range []proto.Message{
		&contextv1.ListContextsRequest{LabelSelector: selectorOf(&contextv1.LabelRequirement{Key: "a", Operator: contextv1.LabelOperator_LABEL_OPERATOR_IN, Values: []string{"x", "y"}})},
		&contextv1.ListMemoryRequest{Prefix: "p/", LabelSelector: selectorOf(&contextv1.LabelRequirement{Key: "a", Operator: contextv1.LabelOperator_LABEL_OPERATOR_NOT_EXISTS}), UpdatedAfter: timestamppb.Now()},
		&contextv1.PutMemoryRequest{Key: "k", Labels: map[string]string{"a": "b"}},
	} {
		b, err := proto.Marshal(m)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	lim := fuzzLimits()
	accepted := func(t *testing.T, err error, sel *contextv1.LabelSelector) {
		t.Helper()
		checkResult(t, err)
		if err != nil {
			return
		}
		if _, cerr := labelsel.Compile(sel); cerr != nil || len(sel.GetRequirements()) > lim.Selector.MaxRequirements {
			t.Fatalf("accepted selector %v (%v)", sel, cerr)
		}
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var lc contextv1.ListContextsRequest
		if proto.Unmarshal(b, &lc) == nil {
			accepted(t, ListContexts(lim, &lc), lc.GetLabelSelector())
		}
		var lm contextv1.ListMemoryRequest
		if proto.Unmarshal(b, &lm) == nil {
			err := ListMemory(lim, &lm)
			accepted(t, err, lm.GetLabelSelector())
			if err == nil && lm.GetUpdatedAfter() != nil && lm.GetUpdatedAfter().CheckValid() != nil {
				t.Fatalf("accepted updated_after %v", lm.GetUpdatedAfter())
			}
		}
		var put contextv1.PutMemoryRequest
		if proto.Unmarshal(b, &put) == nil {
			err := PutMemory(lim, &put)
			checkResult(t, err)
			if err == nil && len(put.GetLabels()) > lim.Labels.MaxPairs {
				t.Fatalf("accepted %d labels", len(put.GetLabels()))
			}
			for k, v := range put.GetLabels() {
				if err == nil && (k == "" || len(k) > lim.Labels.MaxKeyBytes || len(v) > lim.Labels.MaxValueBytes) {
					t.Fatalf("accepted label %q=%q", k, v)
				}
			}
		}
	})
}
