package auth

import (
	"fmt"
	"strings"

	"github.com/cellplane/cellplane/internal/cperr"
)

// Scope is one permission a credential carries. API keys store theirs
// (ApiKey.scopes); JWTs carry them in the space-separated "scope" claim
// (RFC 8693 §4.2, RFC 9068 §2.2.3). What each RPC and MCP tool needs is
// one table per surface (router.MethodScopes, mcp.ToolScopes), each
// checked by a test to name every method and tool.
type Scope string

// The scopes.
const (
	// ScopeContextsRead reads contexts: get, list, read, watch.
	ScopeContextsRead Scope = "contexts:read"
	// ScopeContextsWrite creates, appends to and deletes contexts.
	ScopeContextsWrite Scope = "contexts:write"
	// ScopeMemoryRead reads memory keys: get and list.
	ScopeMemoryRead Scope = "memory:read"
	// ScopeMemoryWrite writes and deletes memory keys.
	ScopeMemoryWrite Scope = "memory:write"
	// ScopeAdmin is the tenant administrator's: audit and erasure. Never
	// granted by default.
	ScopeAdmin Scope = "admin"
)

// allScopes is every scope, in the order of its bit in Scopes.
var allScopes = [...]Scope{ScopeContextsRead, ScopeContextsWrite, ScopeMemoryRead, ScopeMemoryWrite, ScopeAdmin}

// MaxScopeLen bounds one scope token and MaxScopeTokens the tokens of a
// scope claim or list that are looked at (a longer claim is refused).
const (
	MaxScopeLen    = 128
	MaxScopeTokens = 64
)

// AllScopes returns every scope (the MCP protected-resource metadata's
// scopes_supported).
func AllScopes() []Scope { return append([]Scope(nil), allScopes[:]...) }

// AllScopeStrings is AllScopes as strings.
func AllScopeStrings() []string {
	out := make([]string, len(allScopes))
	for i, s := range allScopes {
		out[i] = string(s)
	}
	return out
}

// Scopes is a set of scopes.
type Scopes uint8

// DefaultScopes is what a credential that names no scope of ours holds:
// an API key made before scopes existed, a JWT without a "scope" claim
// (or with none of ours in it). Every scope but admin: what such a
// credential could do before scopes existed, and no more.
const DefaultScopes = Scopes(1<<0 | 1<<1 | 1<<2 | 1<<3)

// FullScopes holds every scope (authentication off).
const FullScopes = Scopes(1<<len(allScopes) - 1)

func bit(s Scope) Scopes {
	for i, x := range allScopes {
		if x == s {
			return 1 << i
		}
	}
	return 0
}

// Has reports whether s holds x.
func (s Scopes) Has(x Scope) bool { b := bit(x); return b != 0 && s&b == b }

// With returns s plus x.
func (s Scopes) With(x Scope) Scopes { return s | bit(x) }

// List returns the scopes s holds, in AllScopes order.
func (s Scopes) List() []string {
	var out []string
	for i, x := range allScopes {
		if s&(1<<i) != 0 {
			out = append(out, string(x))
		}
	}
	return out
}

// String is the space-separated form (a "scope" claim's).
func (s Scopes) String() string { return strings.Join(s.List(), " ") }

// ParseScopes reads a space-separated scope string, as a JWT "scope"
// claim carries it: tokens that are not ours are ignored (an issuer may
// put other audiences' scopes in the same claim); none of ours gives
// DefaultScopes. More than MaxScopeTokens tokens, or one longer than
// MaxScopeLen, is an error.
func ParseScopes(claim string) (Scopes, error) {
	fields := strings.Fields(claim)
	if len(fields) > MaxScopeTokens {
		return 0, fmt.Errorf("more than %d scopes", MaxScopeTokens)
	}
	var s Scopes
	for _, f := range fields {
		if len(f) > MaxScopeLen {
			return 0, fmt.Errorf("a scope is longer than %d bytes", MaxScopeLen)
		}
		s |= bit(Scope(f))
	}
	if s == 0 {
		return DefaultScopes, nil
	}
	return s, nil
}

// CheckScopeList validates the scopes an API key is created with: each
// must be one of AllScopes, at most once. Empty means DefaultScopes.
func CheckScopeList(list []string) (Scopes, error) {
	if len(list) == 0 {
		return DefaultScopes, nil
	}
	if len(list) > len(allScopes) {
		return 0, fmt.Errorf("at most %d scopes", len(allScopes))
	}
	var s Scopes
	for _, x := range list {
		b := bit(Scope(x))
		if b == 0 {
			return 0, fmt.Errorf("unknown scope %q (known: %s)", x, strings.Join(AllScopeStrings(), ", "))
		}
		if s&b != 0 {
			return 0, fmt.Errorf("scope %q given twice", x)
		}
		s |= b
	}
	return s, nil
}

// KeyScopes is the scope set of a stored API key (ApiKey.scopes): empty
// is DefaultScopes; names not known to this version are ignored (a newer
// control plane may know more), and a list of unknown names only holds
// nothing.
func KeyScopes(list []string) Scopes {
	if len(list) == 0 {
		return DefaultScopes
	}
	var s Scopes
	for _, x := range list {
		s |= bit(Scope(x))
	}
	return s
}

// The principal of a call is namespaced by how it authenticated, so that a
// key's chosen principal can never equal a JWT subject:
//
//	key:<ApiKey.principal, or the key id>
//	jwt:<sub>
const (
	PrincipalKeyPrefix = "key:"
	PrincipalJWTPrefix = "jwt:"
)

// MaxPrincipalLen bounds an API key's principal name.
const MaxPrincipalLen = 128

// CheckPrincipalName validates an API key's principal name: 1 to
// MaxPrincipalLen characters of [A-Za-z0-9._@+-] (an agent or user name,
// an email address).
func CheckPrincipalName(p string) error {
	if p == "" || len(p) > MaxPrincipalLen {
		return fmt.Errorf("must be 1 to %d characters", MaxPrincipalLen)
	}
	for i := 0; i < len(p); i++ {
		c := p[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case c == '.', c == '_', c == '@', c == '+', c == '-':
		default:
			return fmt.Errorf("must be characters of [A-Za-z0-9._@+-], not %q", c)
		}
	}
	return nil
}

// KeyPrincipal is the principal of an API key's calls: its principal
// name, or its id when it has none.
func KeyPrincipal(keyID, name string) string {
	if name == "" {
		name = keyID
	}
	return PrincipalKeyPrefix + name
}

// MetaScope is the cperr metadata key naming the scope a refused call
// needed.
const MetaScope = "scope"

func insufficientScope(what string, need Scope) error {
	return cperr.New(cperr.PermissionDenied, "the credentials lack the %s scope that %s needs", need, what).With(MetaScope, string(need))
}
