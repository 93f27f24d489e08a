package auth

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/golang-jwt/jwt/v5"

	"github.com/cellplane/cellplane/internal/cperr"
	contextv1 "github.com/cellplane/cellplane/proto/cellplane/context/v1"
)

func TestParseScopes(t *testing.T) {
	rw := Scopes(0).With(ScopeContextsRead).With(ScopeMemoryWrite)
	tests := []struct {
		claim   string
		want    Scopes
		wantErr bool
	}{
		{"", DefaultScopes, false},
		{"openid profile", DefaultScopes, false}, // none of ours
		{"contexts:read memory:write", rw, false},
		{"  contexts:read\tmemory:write openid ", rw, false},
		{"admin", Scopes(0).With(ScopeAdmin), false},
		{"contexts:read contexts:read", Scopes(0).With(ScopeContextsRead), false},
		{strings.Repeat("a", MaxScopeLen+1), 0, true},
		{strings.Repeat("x ", MaxScopeTokens+1), 0, true},
	}
	for _, tc := range tests {
		got, err := ParseScopes(tc.claim)
		if (err != nil) != tc.wantErr || got != tc.want {
			t.Errorf("ParseScopes(%q) = %v, %v; want %v, error %v", tc.claim, got, err, tc.want, tc.wantErr)
		}
	}
	if got := DefaultScopes.List(); slices.Contains(got, string(ScopeAdmin)) || len(got) != 4 {
		t.Errorf("DefaultScopes = %v: every scope but admin", got)
	}
	if got := FullScopes.String(); got != strings.Join(AllScopeStrings(), " ") {
		t.Errorf("FullScopes = %q", got)
	}
}

func TestCheckScopeList(t *testing.T) {
	if s, err := CheckScopeList(nil); err != nil || s != DefaultScopes {
		t.Errorf("empty: %v, %v", s, err)
	}
	if s, err := CheckScopeList([]string{"memory:read", "admin"}); err != nil || !s.Has(ScopeAdmin) || s.Has(ScopeMemoryWrite) {
		t.Errorf("memory:read admin: %v, %v", s, err)
	}
	for _, bad := range [][]string{{"memory:read", "memory:read"}, {"root"}, {""}} {
		if _, err := CheckScopeList(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	if KeyScopes(nil) != DefaultScopes || KeyScopes([]string{"future:scope"}) != 0 {
		t.Error("KeyScopes: empty is the default, unknown names grant nothing")
	}
}

func TestCheckPrincipalName(t *testing.T) {
	for _, ok := range []string{"alice", "agent-7", "a.b_c+d@example.com"} {
		if err := CheckPrincipalName(ok); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
	for _, bad := range []string{"", "a b", "a/b", "jwt:x", strings.Repeat("a", MaxPrincipalLen+1), "é"} {
		if err := CheckPrincipalName(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	if KeyPrincipal("0123", "") != "key:0123" || KeyPrincipal("0123", "alice") != "key:alice" {
		t.Error("KeyPrincipal")
	}
}

// TestMethodScopesComplete: every ContextService method has a scope, so
// a new RPC without one fails here instead of being refused (or allowed)
// by accident.
func TestMethodScopesComplete(t *testing.T) {
	sd := contextv1.ContextService_ServiceDesc
	var names []string
	for _, m := range sd.Methods {
		names = append(names, m.MethodName)
	}
	for _, s := range sd.Streams {
		names = append(names, s.StreamName)
	}
	for _, n := range names {
		full := "/" + sd.ServiceName + "/" + n
		if _, ok := RequiredScope(full); !ok {
			t.Errorf("%s has no row in MethodScopes", full)
		}
	}
	if len(MethodScopes) != len(names) {
		t.Errorf("MethodScopes has %d rows, ContextService %d methods", len(MethodScopes), len(names))
	}
}

func TestCheckScope(t *testing.T) {
	id := Identity{Scopes: Scopes(0).With(ScopeContextsRead)}
	if err := CheckScope(id, "x", ScopeContextsRead); err != nil {
		t.Fatal(err)
	}
	err := CheckScope(id, "/svc/Append", ScopeContextsWrite)
	var ce *cperr.Error
	if !errors.As(err, &ce) || ce.Reason != cperr.PermissionDenied || ce.Metadata[MetaScope] != string(ScopeContextsWrite) {
		t.Fatalf("got %v", err)
	}
}

func TestJWTScopeClaim(t *testing.T) {
	for _, tc := range []struct {
		claims  jwt.MapClaims
		want    Scopes
		wantErr bool
	}{
		{jwt.MapClaims{}, DefaultScopes, false},
		{jwt.MapClaims{"scope": "memory:read"}, Scopes(0).With(ScopeMemoryRead), false},
		{jwt.MapClaims{"scope": []any{"memory:read"}}, 0, true},
	} {
		got, err := jwtScopes(tc.claims)
		if (err != nil) != tc.wantErr || got != tc.want {
			t.Errorf("%v: %v, %v", tc.claims, got, err)
		}
	}
}

// FuzzParseScopes: any claim parses or is refused without panicking; a
// parsed set holds only known scopes, is never empty, and round-trips
// through its string form.
func FuzzParseScopes(f *testing.F) {
	for _, s := range []string{"", "contexts:read", "admin memory:write", "openid", "a\x00b", strings.Repeat("x ", 70)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, claim string) {
		s, err := ParseScopes(claim)
		if err != nil {
			return
		}
		if s == 0 || s&^FullScopes != 0 {
			t.Fatalf("ParseScopes(%q) = %b", claim, s)
		}
		back, err := ParseScopes(s.String())
		if err != nil || back != s {
			t.Fatalf("round trip of %q: %v, %v", s, back, err)
		}
		if _, err := CheckScopeList(s.List()); err != nil {
			t.Fatalf("CheckScopeList(%v): %v", s.List(), err)
		}
	})
}
