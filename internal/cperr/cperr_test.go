package cperr

import (
	"errors"
	"fmt"
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
