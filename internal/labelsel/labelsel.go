// Package labelsel is the one home of label selectors: the conditions a
// list or search call puts on a string map (a context's labels, an
// entry's metadata, a memory item's labels), as contextv1.LabelSelector
// carries them.
//
//	sel, err := labelsel.Compile(req.GetContextLabels())
//	if err != nil { ... } // cannot happen after validation
//	if sel.Matches(ctx.GetLabels()) { ... }
//
// A Selector is immutable and safe for concurrent use; the zero Selector
// (and one compiled from nil) matches every map. Validation of sizes
// (number of requirements, values, bytes) is cells/validate's, against
// its Limits; Compile only refuses selectors that mean nothing.
package labelsel

import (
	"fmt"

	contextv1 "github.com/cellplane/cellplane/proto/cellplane/context/v1"
)

// Selector is a compiled LabelSelector: a conjunction of requirements.
type Selector struct {
	reqs []requirement
}

type requirement struct {
	key    string
	op     contextv1.LabelOperator
	values map[string]struct{}
}

// Compile checks sel and compiles it. The error names the requirement
// (by index) and what is wrong with it; cells/validate turns it into a
// field violation.
func Compile(sel *contextv1.LabelSelector) (Selector, error) {
	var s Selector
	for i, r := range sel.GetRequirements() {
		req := requirement{key: r.GetKey(), op: r.GetOperator()}
		if req.key == "" {
			return Selector{}, fmt.Errorf("requirements[%d].key is required", i)
		}
		n := len(r.GetValues())
		switch req.op {
		case contextv1.LabelOperator_LABEL_OPERATOR_EQUALS, contextv1.LabelOperator_LABEL_OPERATOR_NOT_EQUALS:
			if n != 1 {
				return Selector{}, fmt.Errorf("requirements[%d] (%s) needs exactly one value, got %d", i, req.op, n)
			}
		case contextv1.LabelOperator_LABEL_OPERATOR_IN, contextv1.LabelOperator_LABEL_OPERATOR_NOT_IN:
			if n == 0 {
				return Selector{}, fmt.Errorf("requirements[%d] (%s) needs at least one value", i, req.op)
			}
		case contextv1.LabelOperator_LABEL_OPERATOR_EXISTS, contextv1.LabelOperator_LABEL_OPERATOR_NOT_EXISTS:
			if n != 0 {
				return Selector{}, fmt.Errorf("requirements[%d] (%s) takes no values, got %d", i, req.op, n)
			}
		default:
			return Selector{}, fmt.Errorf("requirements[%d].operator %d is not a known operator", i, int32(req.op))
		}
		if n > 0 {
			req.values = make(map[string]struct{}, n)
			for _, v := range r.GetValues() {
				req.values[v] = struct{}{}
			}
		}
		s.reqs = append(s.reqs, req)
	}
	return s, nil
}

// Empty reports whether s matches every map.
func (s Selector) Empty() bool { return len(s.reqs) == 0 }

// Matches reports whether m meets every requirement of s.
func (s Selector) Matches(m map[string]string) bool {
	for _, r := range s.reqs {
		v, ok := m[r.key]
		_, in := r.values[v]
		var match bool
		switch r.op {
		case contextv1.LabelOperator_LABEL_OPERATOR_EQUALS, contextv1.LabelOperator_LABEL_OPERATOR_IN:
			match = ok && in
		case contextv1.LabelOperator_LABEL_OPERATOR_NOT_EQUALS, contextv1.LabelOperator_LABEL_OPERATOR_NOT_IN:
			match = !ok || !in
		case contextv1.LabelOperator_LABEL_OPERATOR_EXISTS:
			match = ok
		case contextv1.LabelOperator_LABEL_OPERATOR_NOT_EXISTS:
			match = !ok
		}
		if !match {
			return false
		}
	}
	return true
}
