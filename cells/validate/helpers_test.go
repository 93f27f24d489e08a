package validate

import (
	"errors"
	"slices"
	"testing"

	"github.com/cellplane/cellplane/internal/cperr"
)

// checkFields asserts that err is nil when fields is empty, and otherwise
// an INVALID_ARGUMENT *cperr.Error whose violations name exactly fields
// (in order).
func checkFields(t *testing.T, err error, fields ...string) {
	t.Helper()
	if len(fields) == 0 {
		if err != nil {
			t.Fatalf("got %v, want nil", err)
		}
		return
	}
	if !errors.Is(err, cperr.ErrInvalidArgument) {
		t.Fatalf("got %v, want INVALID_ARGUMENT", err)
	}
	var ce *cperr.Error
	if !errors.As(err, &ce) {
		t.Fatalf("got %T, want *cperr.Error", err)
	}
	var got []string
	for _, v := range ce.Violations {
		if v.Description == "" {
			t.Errorf("violation of %s has no description", v.Field)
		}
		got = append(got, v.Field)
	}
	if !slices.Equal(got, fields) {
		t.Fatalf("violations %q, want %q (%v)", got, fields, err)
	}
}
