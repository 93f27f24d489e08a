package ids

import (
	"errors"
	"strings"
	"testing"

	"github.com/cellplane/cellplane/internal/cperr"
)

func TestValid(t *testing.T) {
	tests := []struct {
		name string
		id   string
		max  int
		want bool
	}{
		{"one char", "a", MaxLen, true},
		{"every class", "Tenant_1.prod-eu", MaxLen, true},
		{"at the bound", strings.Repeat("x", MaxLen), MaxLen, true},
		{"over the bound", strings.Repeat("x", MaxLen+1), MaxLen, false},
		{"64 chars (a DNS label would refuse it)", strings.Repeat("x", 64), MaxLen, true},
		{"empty", "", MaxLen, false},
		{"space", "a b", MaxLen, false},
		{"slash", "a/b", MaxLen, false},
		{"colon", "a:b", MaxLen, false},
		{"non-ASCII", "é", MaxLen, false},
		{"NUL", "a\x00", MaxLen, false},
		{"lower bound", "abc", 2, false},
		{"zero bound", "a", 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Valid(tt.id, tt.max); got != tt.want {
				t.Errorf("Valid(%q, %d) = %v, want %v", tt.id, tt.max, got, tt.want)
			}
		})
	}
}

func TestRule(t *testing.T) {
	if got, want := Rule(MaxLen), "must be 1-128 characters of [A-Za-z0-9._-]"; got != want {
		t.Errorf("Rule(MaxLen) = %q, want %q", got, want)
	}
}

func TestCheck(t *testing.T) {
	tests := []struct {
		name string
		id   string
		max  int
		want string // the violation's description; "" means valid
	}{
		{"valid", "acme", MaxLen, ""},
		{"empty", "", MaxLen, "is required; must be 1-128 characters of [A-Za-z0-9._-]"},
		{"bad char", "a b", MaxLen, "must be 1-128 characters of [A-Za-z0-9._-]"},
		{"too long", strings.Repeat("x", 129), MaxLen, "must be 1-128 characters of [A-Za-z0-9._-]"},
		{"configured bound", "abcd", 3, "must be 1-3 characters of [A-Za-z0-9._-]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := Check("tenant", tt.id, tt.max)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("Check(%q) = %v, want nil", tt.id, err)
				}
				return
			}
			var ce *cperr.Error
			if !errors.As(err, &ce) || ce.Reason != cperr.InvalidArgument {
				t.Fatalf("Check(%q) = %v, want an INVALID_ARGUMENT *cperr.Error", tt.id, err)
			}
			want := []cperr.FieldViolation{{Field: "tenant", Description: tt.want}}
			if len(ce.Violations) != 1 || ce.Violations[0] != want[0] {
				t.Errorf("violations = %+v, want %+v", ce.Violations, want)
			}
			if tt.id != "" && strings.Contains(err.Error(), tt.id) {
				t.Errorf("error %q echoes the id", err)
			}
		})
	}
}

func TestFit(t *testing.T) {
	short := "create-acme.owner"
	if got := Fit(short); got != short {
		t.Errorf("Fit(%q) = %q, want it unchanged", short, got)
	}
	atMax := strings.Repeat("a", MaxLen)
	if got := Fit(atMax); got != atMax {
		t.Errorf("Fit of a %d-character id changed it", MaxLen)
	}
	tenant := strings.Repeat("t", MaxLen)
	a, b := Fit("create-"+tenant+".owner"), Fit("create-"+tenant+".cell")
	for _, got := range []string{a, b} {
		if len(got) != MaxLen || !Valid(got, MaxLen) {
			t.Errorf("Fit(long) = %q (%d characters), want a valid %d-character id", got, len(got), MaxLen)
		}
	}
	if a == b {
		t.Errorf("two long ids with one prefix fit to the same id %q", a)
	}
	if again := Fit("create-" + tenant + ".owner"); again != a {
		t.Errorf("Fit is not deterministic: %q then %q", a, again)
	}
}

// FuzzValid checks Valid against its definition, and Check against Valid.
func FuzzValid(f *testing.F) {
	for _, s := range []string{"", "a", "a-b_c.d", "a b", "é", "\x00", strings.Repeat("x", 9)} {
		f.Add(s)
	}
	const max = 8
	f.Fuzz(func(t *testing.T, s string) {
		want := len(s) >= 1 && len(s) <= max
		for _, c := range []byte(s) {
			if !strings.ContainsRune("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-", rune(c)) {
				want = false
			}
		}
		if got := Valid(s, max); got != want {
			t.Fatalf("Valid(%q) = %v, want %v", s, got, want)
		}
		if err := Check("id", s, max); (err == nil) != want {
			t.Fatalf("Check(%q) = %v, want valid=%v", s, err, want)
		}
		if Valid(s, len(s)) {
			if f := Fit(s); !Valid(f, MaxLen) || (len(s) <= MaxLen && f != s) {
				t.Fatalf("Fit(%q) = %q", s, f)
			}
		}
	})
}
