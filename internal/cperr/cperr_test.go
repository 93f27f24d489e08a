package cperr

import (
	"errors"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"slices"
	"strconv"
	"testing"
)

func TestIsMatchesReasonOnly(t *testing.T) {
	err := fmt.Errorf("forwarding: %w", New(NotLeader, "this node is not the cell leader").With(MetaLeader, "127.0.0.1:7221"))
	if !errors.Is(err, ErrNotLeader) {
		t.Fatal("a wrapped NOT_LEADER is not ErrNotLeader")
	}
	if errors.Is(err, ErrWrongCell) {
		t.Fatal("NOT_LEADER matched WRONG_CELL")
	}
	// A non-sentinel target (with a message) matches only itself.
	if errors.Is(New(NotLeader, "a"), New(NotLeader, "b")) {
		t.Fatal("two distinct errors with messages compare equal")
	}
	var e *Error
	if !errors.As(err, &e) || e.Metadata[MetaLeader] != "127.0.0.1:7221" {
		t.Fatalf("As lost the metadata: %v", e)
	}
	if ReasonOf(err) != NotLeader || ReasonOf(errors.New("x")) != "" {
		t.Fatal("ReasonOf")
	}
}

func TestErrorString(t *testing.T) {
	tests := []struct {
		err  *Error
		want string
	}{
		{ErrKeyNotFound, "KEY_NOT_FOUND"},
		{New(ContextNotFound, "context %q not found", "c1"), `CONTEXT_NOT_FOUND: context "c1" not found`},
		{Invalid(FieldViolation{Field: "key", Description: "required"}), "INVALID_ARGUMENT: invalid key; key: required"},
		{Invalid(FieldViolation{Field: "a", Description: "x"}, FieldViolation{Field: "b", Description: "y"}), "INVALID_ARGUMENT: invalid request; a: x; b: y"},
	}
	for _, tc := range tests {
		if got := tc.err.Error(); got != tc.want {
			t.Errorf("Error() = %q, want %q", got, tc.want)
		}
	}
}

// TestReasonsListsEveryConstant parses this package's source so that a new
// Reason constant missing from Reasons (and so from every table tested
// against it) fails here.
func TestReasonsListsEveryConstant(t *testing.T) {
	f, err := parser.ParseFile(token.NewFileSet(), "cperr.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	var declared []Reason
	for _, d := range f.Decls {
		g, ok := d.(*ast.GenDecl)
		if !ok || g.Tok != token.CONST {
			continue
		}
		for _, spec := range g.Specs {
			vs := spec.(*ast.ValueSpec)
			if id, ok := vs.Type.(*ast.Ident); !ok || id.Name != "Reason" {
				continue
			}
			for _, v := range vs.Values {
				lit := v.(*ast.BasicLit)
				s, err := strconv.Unquote(lit.Value)
				if err != nil {
					t.Fatal(err)
				}
				declared = append(declared, Reason(s))
			}
		}
	}
	if len(declared) < 20 {
		t.Fatalf("parsed only %d reasons: the test no longer understands cperr.go", len(declared))
	}
	if !slices.Equal(declared, Reasons()) {
		t.Fatalf("Reasons() = %v\nconstants = %v", Reasons(), declared)
	}
	for _, r := range declared {
		if !Known(r) {
			t.Errorf("Known(%s) = false", r)
		}
	}
	if Known("NO_SUCH_REASON") {
		t.Error("Known accepts an unknown reason")
	}
}
