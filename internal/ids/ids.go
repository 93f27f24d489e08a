package ids

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"

	"github.com/cellplane/cellplane/internal/cperr"
)

// MaxLen is the longest id the platform accepts, and the default of every
// configurable id bound. It is 128 and not 63: ids contain '.' and '_', so
// they are not DNS labels anyway, and a lower bound would make stored
// context and request ids unreadable.
const MaxLen = 128

// Valid reports whether s is 1..max characters of [A-Za-z0-9._-].
func Valid(s string, max int) bool {
	if len(s) == 0 || len(s) > max {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !char(s[i]) {
			return false
		}
	}
	return true
}

// char reports whether c may appear in an id.
func char(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-'
}

// Rule describes the rule for a bound, for error messages:
// "must be 1-128 characters of [A-Za-z0-9._-]".
func Rule(max int) string {
	return fmt.Sprintf("must be 1-%d characters of [A-Za-z0-9._-]", max)
}

// Violation returns the field violation for an invalid id, and false when
// id is valid. An empty id "is required"; the description never echoes
// the id, which may be large or sensitive. Validators that collect every
// violation of a request use it; others use Check.
func Violation(field, id string, max int) (cperr.FieldViolation, bool) {
	switch {
	case Valid(id, max):
		return cperr.FieldViolation{}, false
	case id == "":
		return cperr.FieldViolation{Field: field, Description: "is required; " + Rule(max)}, true
	default:
		return cperr.FieldViolation{Field: field, Description: Rule(max)}, true
	}
}

// Check returns nil for a valid id, else an INVALID_ARGUMENT *cperr.Error
// with one field violation naming field.
func Check(field, id string, max int) error {
	if v, bad := Violation(field, id, max); bad {
		return cperr.Invalid(v)
	}
	return nil
}

// fitHashLen is how many hex digits of SHA-256 Fit keeps.
const fitHashLen = 16

// Fit returns id unchanged when it is at most MaxLen characters, else a
// MaxLen-character id: id's first MaxLen-17 characters, '.', and 16 hex
// digits of its SHA-256. It is for ids built from other ids ("<tenant>-
// <8 hex>", "create-<tenant>.owner"): a valid tenant id then never yields
// an invalid derived id, and the same input always yields the same id, so
// derived request ids still deduplicate. Fit keeps the charset of its
// input, and ids of up to MaxLen characters (every id derived from a
// tenant id of up to 100 characters) do not change.
func Fit(id string) string {
	if len(id) <= MaxLen {
		return id
	}
	sum := sha256.Sum256([]byte(id))
	return id[:MaxLen-fitHashLen-1] + "." + hex.EncodeToString(sum[:])[:fitHashLen]
}
