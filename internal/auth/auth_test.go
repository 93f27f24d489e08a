package auth

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cellplane/cellplane/internal/cperr"
	"github.com/cellplane/cellplane/internal/testutil"
	"github.com/golang-jwt/jwt/v5"
)

const (
	testIssuer   = "https://issuer.example"
	testAudience = "cellplane-router"
)

// keyMap is a KeyLookup over a map.
type keyMap map[string]struct {
	tenant    string
	hash      []byte
	principal string
	scopes    Scopes
}

func (m keyMap) APIKeyGrant(id string) (string, Scopes) {
	k := m[id]
	if k.scopes == 0 {
		return k.principal, DefaultScopes
	}
	return k.principal, k.scopes
}

func (m keyMap) APIKey(id string) (string, []byte, bool) {
	k, ok := m[id]
	return k.tenant, k.hash, ok
}

func (m keyMap) KeysFresh() error { return nil }

func (m keyMap) TokenRevoked(Identity) error { return nil }

// revokingKeys is a KeyLookup that revokes one JWT subject and records
// the identities it was asked about.
type revokingKeys struct {
	keyMap
	subject string
	seen    *[]Identity
}

func (r revokingKeys) TokenRevoked(id Identity) error {
	*r.seen = append(*r.seen, id)
	if id.Subject == r.subject {
		return TokenRevokedError()
	}
	return nil
}

// A verified JWT is checked against the KeyLookup's revocation list, with
// its jti and iat; a revoked one is UNAUTHENTICATED.
func TestJWTRevocationChecked(t *testing.T) {
	ctx := testutil.Context(t, time.Minute)
	k := newKeys(t)
	path := filepath.Join(t.TempDir(), "jwks.json")
	writeJWKS(t, path, ecJWK("ec-1", &k.ec.PublicKey))
	var seen []Identity
	a, err := New(jwtConfig(t, path), revokingKeys{keyMap: keyMap{}, subject: "mallory", seen: &seen})
	if err != nil {
		t.Fatal(err)
	}
	iat := time.Now().Add(-time.Minute).Truncate(time.Second)
	ok := sign(t, jwt.SigningMethodES256, "ec-1", k.ec, with(with(goodClaims(), "jti", "tok-1"), "iat", iat.Unix()))
	if id, err := a.Authenticate(ctx, "Bearer "+ok); err != nil || id.JTI != "tok-1" || !id.IssuedAt.Equal(iat) {
		t.Fatalf("valid token: %+v, %v", id, err)
	}
	bad := sign(t, jwt.SigningMethodES256, "ec-1", k.ec, with(goodClaims(), "sub", "mallory"))
	if _, err := a.Authenticate(ctx, "Bearer "+bad); cperr.ReasonOf(err) != cperr.Unauthenticated {
		t.Fatalf("revoked token: %v, want UNAUTHENTICATED", err)
	}
	if len(seen) != 2 || seen[0].Tenant != "t1" || seen[0].JTI != "tok-1" {
		t.Fatalf("TokenRevoked saw %+v", seen)
	}
}

// TestRevoked: the matching rule of the revocation list.
func TestRevoked(t *testing.T) {
	now := time.Now()
	at := now.Add(-time.Minute)
	entries := map[string]RevocationEntry{
		RevokedSubjectID("alice"): {RevokedAt: at, ExpiresAt: now.Add(time.Hour)},
		RevokedJTIID("tok-1"):     {RevokedAt: at, ExpiresAt: now.Add(time.Hour)},
		RevokedSubjectID("old"):   {RevokedAt: at, ExpiresAt: now.Add(-time.Second)},
	}
	lookup := func(id string) (RevocationEntry, bool) { e, ok := entries[id]; return e, ok }
	for _, tc := range []struct {
		name string
		id   Identity
		want bool
	}{
		{"subject, issued before", Identity{Subject: "alice", IssuedAt: at.Add(-time.Second)}, true},
		{"subject, issued at the revocation", Identity{Subject: "alice", IssuedAt: at}, true},
		{"subject, no iat", Identity{Subject: "alice"}, true},
		{"subject, issued after", Identity{Subject: "alice", IssuedAt: at.Add(time.Second)}, false},
		{"jti", Identity{Subject: "bob", JTI: "tok-1", IssuedAt: now}, true},
		{"other jti", Identity{Subject: "bob", JTI: "tok-2"}, false},
		{"expired entry", Identity{Subject: "old"}, false},
		{"ids are not prefixes", Identity{Subject: "alic"}, false},
	} {
		if got := Revoked(tc.id, now, lookup); got != tc.want {
			t.Errorf("%s: Revoked = %v, want %v", tc.name, got, tc.want)
		}
	}
	if RevokedSubjectID("a/b") == RevokedJTIID("a/b") || strings.Contains(RevokedSubjectID("a/b"), "/") {
		t.Error("entry ids: a subject and a jti collide, or an id holds a slash")
	}
}

// staleKeys is a KeyLookup whose view is past its staleness bound.
type staleKeys struct{ keyMap }

func (staleKeys) KeysFresh() error { return cperr.New(cperr.CredentialsStale, "stale") }

// TestStaleKeysFailClosed: a KeyLookup past its bound refuses every API
// key, the good one included, with CREDENTIALS_STALE; a malformed key is
// still INVALID and JWTs are not affected (M9).
func TestStaleKeysFailClosed(t *testing.T) {
	ctx := testutil.Context(t, time.Minute)
	id, good, hash, err := NewKey()
	if err != nil {
		t.Fatal(err)
	}
	k := newKeys(t)
	path := filepath.Join(t.TempDir(), "jwks.json")
	writeJWKS(t, path, ecJWK("ec-1", &k.ec.PublicKey))
	a, err := New(jwtConfig(t, path), staleKeys{keyMap{id: {tenant: "t1", hash: hash}}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.AuthenticateAPIKey(good); cperr.ReasonOf(err) != cperr.CredentialsStale {
		t.Fatalf("good key with a stale view: %v, want CREDENTIALS_STALE", err)
	}
	if _, err := a.Authenticate(ctx, "Bearer "+good); cperr.ReasonOf(err) != cperr.CredentialsStale {
		t.Fatalf("good bearer key with a stale view: %v, want CREDENTIALS_STALE", err)
	}
	if _, err := a.AuthenticateAPIKey("hello"); cperr.ReasonOf(err) != cperr.Unauthenticated {
		t.Fatalf("malformed key: %v, want UNAUTHENTICATED", err)
	}
	tok := sign(t, jwt.SigningMethodES256, "ec-1", k.ec, goodClaims())
	if id, err := a.Authenticate(ctx, "Bearer "+tok); err != nil || id.Method != MethodJWT {
		t.Fatalf("JWT with a stale key view: %+v, %v", id, err)
	}
}

// keys are the signing keys of a test.
type keys struct {
	rsa, rsaOther *rsa.PrivateKey
	ec, ecOther   *ecdsa.PrivateKey
}

func newKeys(t testing.TB) keys {
	t.Helper()
	var k keys
	var err error
	if k.rsa, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
		t.Fatal(err)
	}
	if k.rsaOther, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
		t.Fatal(err)
	}
	if k.ec, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
		t.Fatal(err)
	}
	if k.ecOther, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
		t.Fatal(err)
	}
	return k
}

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

func rsaJWK(kid string, pub *rsa.PublicKey) map[string]string {
	return map[string]string{"kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256",
		"n": b64(pub.N.Bytes()), "e": b64(big.NewInt(int64(pub.E)).Bytes())}
}

func ecJWK(kid string, pub *ecdsa.PublicKey) map[string]string {
	raw, err := pub.Bytes()
	if err != nil {
		panic(err)
	}
	return map[string]string{"kty": "EC", "kid": kid, "crv": "P-256",
		"x": b64(raw[1:33]), "y": b64(raw[33:65])}
}

func writeJWKS(t testing.TB, path string, ks ...map[string]string) {
	t.Helper()
	data, err := json.Marshal(map[string]any{"keys": ks})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

func jwtConfig(t testing.TB, path string) Config {
	cfg := DefaultConfig()
	cfg.Mode = ModeJWT
	cfg.JWKSFile = path
	cfg.Issuer = testIssuer
	cfg.Audience = testAudience
	cfg.Logger = testutil.Logger(t)
	return cfg
}

// goodClaims are valid claims for tenant t1.
func goodClaims() jwt.MapClaims {
	now := time.Now()
	return jwt.MapClaims{
		"iss":    testIssuer,
		"aud":    []string{"other", testAudience},
		"sub":    "user-1",
		"tenant": "t1",
		"iat":    now.Unix(),
		"nbf":    now.Add(-time.Minute).Unix(),
		"exp":    now.Add(time.Hour).Unix(),
	}
}

func sign(t testing.TB, m jwt.SigningMethod, kid string, key any, claims jwt.MapClaims) string {
	t.Helper()
	tok := jwt.NewWithClaims(m, claims)
	if kid != "" {
		tok.Header["kid"] = kid
	}
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func with(c jwt.MapClaims, k string, v any) jwt.MapClaims {
	c[k] = v
	return c
}

func without(c jwt.MapClaims, k string) jwt.MapClaims {
	delete(c, k)
	return c
}

// noneToken is an unsigned token with alg "none".
func noneToken(t testing.TB, kid string) string {
	t.Helper()
	tok := jwt.NewWithClaims(jwt.SigningMethodNone, goodClaims())
	tok.Header["kid"] = kid
	s, err := tok.SignedString(jwt.UnsafeAllowNoneSignatureType)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func wantReason(t *testing.T, err error, r cperr.Reason) {
	t.Helper()
	if cperr.ReasonOf(err) != r {
		t.Fatalf("err = %v, want reason %s", err, r)
	}
}

func TestAuthenticateJWT(t *testing.T) {
	ctx := testutil.Context(t, time.Minute)
	k := newKeys(t)
	path := filepath.Join(t.TempDir(), "jwks.json")
	writeJWKS(t, path, rsaJWK("rsa-1", &k.rsa.PublicKey), ecJWK("ec-1", &k.ec.PublicKey))
	a, err := New(jwtConfig(t, path), nil)
	if err != nil {
		t.Fatal(err)
	}
	if a.Mode() != ModeJWT {
		t.Fatalf("Mode = %q", a.Mode())
	}
	rsaPubDER, err := x509.MarshalPKIXPublicKey(&k.rsa.PublicKey)
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name    string
		header  string
		want    Identity
		wantMsg string // for failures
	}{
		{name: "good RS256", header: "Bearer " + sign(t, jwt.SigningMethodRS256, "rsa-1", k.rsa, goodClaims()),
			want: Identity{Tenant: "t1", Subject: "user-1", Principal: "jwt:user-1", Scopes: DefaultScopes, Method: MethodJWT, KeyID: "rsa-1"}},
		{name: "good ES256", header: "Bearer " + sign(t, jwt.SigningMethodES256, "ec-1", k.ec, goodClaims()),
			want: Identity{Tenant: "t1", Subject: "user-1", Principal: "jwt:user-1", Scopes: DefaultScopes, Method: MethodJWT, KeyID: "ec-1"}},
		{name: "scheme is case-insensitive", header: "bearer " + sign(t, jwt.SigningMethodES256, "ec-1", k.ec, goodClaims()),
			want: Identity{Tenant: "t1", Subject: "user-1", Principal: "jwt:user-1", Scopes: DefaultScopes, Method: MethodJWT, KeyID: "ec-1"}},
		{name: "string audience", header: "Bearer " + sign(t, jwt.SigningMethodES256, "ec-1", k.ec, with(goodClaims(), "aud", testAudience)),
			want: Identity{Tenant: "t1", Subject: "user-1", Principal: "jwt:user-1", Scopes: DefaultScopes, Method: MethodJWT, KeyID: "ec-1"}},
		{name: "expired within leeway", header: "Bearer " + sign(t, jwt.SigningMethodRS256, "rsa-1", k.rsa, with(goodClaims(), "exp", time.Now().Add(-10*time.Second).Unix())),
			want: Identity{Tenant: "t1", Subject: "user-1", Principal: "jwt:user-1", Scopes: DefaultScopes, Method: MethodJWT, KeyID: "rsa-1"}},

		{name: "missing", header: "", wantMsg: msgMissing},
		{name: "bearer without token", header: "Bearer ", wantMsg: msgMissing},
		{name: "basic scheme", header: "Basic dXNlcjpwYXNz", wantMsg: msgScheme},
		{name: "RS256 bad signature", header: "Bearer " + sign(t, jwt.SigningMethodRS256, "rsa-1", k.rsaOther, goodClaims()), wantMsg: msgSignature},
		{name: "ES256 bad signature", header: "Bearer " + sign(t, jwt.SigningMethodES256, "ec-1", k.ecOther, goodClaims()), wantMsg: msgSignature},
		{name: "unknown kid", header: "Bearer " + sign(t, jwt.SigningMethodRS256, "rsa-2", k.rsa, goodClaims()), wantMsg: msgUnknownKey},
		{name: "no kid", header: "Bearer " + sign(t, jwt.SigningMethodRS256, "", k.rsa, goodClaims()), wantMsg: msgUnknownKey},
		{name: "kid of the other key type", header: "Bearer " + sign(t, jwt.SigningMethodES256, "rsa-1", k.ec, goodClaims()), wantMsg: msgUnknownKey},
		{name: "wrong issuer", header: "Bearer " + sign(t, jwt.SigningMethodRS256, "rsa-1", k.rsa, with(goodClaims(), "iss", testIssuer+"/")), wantMsg: msgIssuer},
		{name: "missing issuer", header: "Bearer " + sign(t, jwt.SigningMethodRS256, "rsa-1", k.rsa, without(goodClaims(), "iss")), wantMsg: msgClaimMissing},
		{name: "wrong audience", header: "Bearer " + sign(t, jwt.SigningMethodRS256, "rsa-1", k.rsa, with(goodClaims(), "aud", "someone-else")), wantMsg: msgAudience},
		{name: "missing audience", header: "Bearer " + sign(t, jwt.SigningMethodRS256, "rsa-1", k.rsa, without(goodClaims(), "aud")), wantMsg: msgClaimMissing},
		{name: "expired", header: "Bearer " + sign(t, jwt.SigningMethodRS256, "rsa-1", k.rsa, with(goodClaims(), "exp", time.Now().Add(-time.Hour).Unix())), wantMsg: msgExpired},
		{name: "not yet valid", header: "Bearer " + sign(t, jwt.SigningMethodRS256, "rsa-1", k.rsa, with(goodClaims(), "nbf", time.Now().Add(time.Hour).Unix())), wantMsg: msgNotYetValid},
		{name: "issued in the future", header: "Bearer " + sign(t, jwt.SigningMethodRS256, "rsa-1", k.rsa, with(goodClaims(), "iat", time.Now().Add(time.Hour).Unix())), wantMsg: msgIssuedAt},
		{name: "missing exp", header: "Bearer " + sign(t, jwt.SigningMethodRS256, "rsa-1", k.rsa, without(goodClaims(), "exp")), wantMsg: msgClaimMissing},
		{name: "alg none", header: "Bearer " + noneToken(t, "rsa-1"), wantMsg: msgAlg},
		{name: "HS256 with the public key as secret", header: "Bearer " + sign(t, jwt.SigningMethodHS256, "rsa-1", rsaPubDER, goodClaims()), wantMsg: msgAlg},
		{name: "RS384", header: "Bearer " + sign(t, jwt.SigningMethodRS384, "rsa-1", k.rsa, goodClaims()), wantMsg: msgAlg},
		{name: "PS256 with the RSA key", header: "Bearer " + sign(t, jwt.SigningMethodPS256, "rsa-1", k.rsa, goodClaims()), wantMsg: msgAlg},
		{name: "missing tenant claim", header: "Bearer " + sign(t, jwt.SigningMethodRS256, "rsa-1", k.rsa, without(goodClaims(), "tenant")), wantMsg: msgTenantClaim},
		{name: "non-string tenant claim", header: "Bearer " + sign(t, jwt.SigningMethodRS256, "rsa-1", k.rsa, with(goodClaims(), "tenant", 42)), wantMsg: msgTenantClaim},
		{name: "garbage", header: "Bearer not.a.jwt", wantMsg: msgMalformed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			id, err := a.Authenticate(ctx, tc.header)
			if tc.wantMsg == "" {
				if err != nil {
					t.Fatalf("Authenticate: %v", err)
				}
				if id.IssuedAt.IsZero() {
					t.Fatalf("identity %+v: no IssuedAt (the token has an iat)", id)
				}
				id.IssuedAt = time.Time{}
				if id != tc.want {
					t.Fatalf("identity = %+v, want %+v", id, tc.want)
				}
				return
			}
			wantReason(t, err, cperr.Unauthenticated)
			if !errors.Is(err, cperr.ErrUnauthenticated) {
				t.Fatalf("errors.Is(err, ErrUnauthenticated) = false for %v", err)
			}
			var ce *cperr.Error
			errors.As(err, &ce)
			if ce.Message != tc.wantMsg {
				t.Fatalf("message = %q, want %q", ce.Message, tc.wantMsg)
			}
			if tok, _ := strings.CutPrefix(tc.header, "Bearer "); len(tok) > 8 && strings.Contains(err.Error(), tok) {
				t.Fatal("the error echoes the token")
			}
			if id != (Identity{}) {
				t.Fatalf("identity %+v returned with an error", id)
			}
		})
	}
}

func TestTenantClaimConfigurable(t *testing.T) {
	ctx := testutil.Context(t, time.Minute)
	k := newKeys(t)
	path := filepath.Join(t.TempDir(), "jwks.json")
	writeJWKS(t, path, ecJWK("ec-1", &k.ec.PublicKey))
	cfg := jwtConfig(t, path)
	cfg.TenantClaim = "https://cellplane.dev/tenant"
	a, err := New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	tok := sign(t, jwt.SigningMethodES256, "ec-1", k.ec, with(goodClaims(), cfg.TenantClaim, "t9"))
	id, err := a.Authenticate(ctx, "Bearer "+tok)
	if err != nil || id.Tenant != "t9" {
		t.Fatalf("Authenticate = %+v, %v; want tenant t9", id, err)
	}
}

func TestAPIKeys(t *testing.T) {
	ctx := testutil.Context(t, time.Minute)
	goodID, good, goodHash, err := NewKey()
	if err != nil {
		t.Fatal(err)
	}
	revokedID, revoked, _, err := NewKey()
	if err != nil {
		t.Fatal(err)
	}
	_, unknown, _, err := NewKey()
	if err != nil {
		t.Fatal(err)
	}
	wrongID, _, wrongHash, err := NewKey()
	if err != nil {
		t.Fatal(err)
	}
	_ = revokedID // revoked: no longer in the table
	table := keyMap{
		goodID:  {tenant: "t1", hash: goodHash},
		wrongID: {tenant: "t2", hash: wrongHash},
	}
	// A secret with a known id but another random part.
	forged := "cpk_" + wrongID + "_" + strings.Repeat("A", 43)

	a, err := New(DefaultConfig(), table)
	if err != nil {
		t.Fatal(err)
	}
	k := newKeys(t)
	path := filepath.Join(t.TempDir(), "jwks.json")
	writeJWKS(t, path, ecJWK("ec-1", &k.ec.PublicKey))
	aj, err := New(jwtConfig(t, path), table) // mode jwt also takes API keys
	if err != nil {
		t.Fatal(err)
	}
	ajNoKeys, err := New(jwtConfig(t, path), nil)
	if err != nil {
		t.Fatal(err)
	}
	jwtTok := sign(t, jwt.SigningMethodES256, "ec-1", k.ec, goodClaims())
	wantGood := Identity{Tenant: "t1", Subject: goodID, Principal: "key:" + goodID, Scopes: DefaultScopes, Method: MethodAPIKey, KeyID: goodID}

	tests := []struct {
		name    string
		a       *Authenticator
		header  string // authorization; if empty, xAPIKey is used
		xAPIKey string
		want    Identity
		wantMsg string
	}{
		{name: "good bearer", a: a, header: "Bearer " + good, want: wantGood},
		{name: "good x-api-key", a: a, xAPIKey: good, want: wantGood},
		{name: "good in mode jwt", a: aj, header: "Bearer " + good, want: wantGood},
		{name: "revoked", a: a, header: "Bearer " + revoked, wantMsg: msgInvalidAPIKey},
		{name: "unknown", a: a, xAPIKey: unknown, wantMsg: msgInvalidAPIKey},
		{name: "wrong secret for a known id", a: a, xAPIKey: forged, wantMsg: msgInvalidAPIKey},
		{name: "malformed id", a: a, header: "Bearer cpk_nothex_abc", wantMsg: msgInvalidAPIKey},
		{name: "malformed x-api-key", a: a, xAPIKey: "hello", wantMsg: msgInvalidAPIKey},
		{name: "truncated", a: a, xAPIKey: good[:len("cpk_")+16], wantMsg: msgInvalidAPIKey},
		{name: "empty x-api-key", a: a, xAPIKey: "", wantMsg: msgMissing},
		{name: "JWT in mode apikey", a: a, header: "Bearer " + jwtTok, wantMsg: msgJWTDisabled},
		{name: "API key in mode jwt without a KeyLookup", a: ajNoKeys, header: "Bearer " + good, wantMsg: msgAPIKeyDisabled},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var id Identity
			var err error
			if tc.header != "" {
				id, err = tc.a.Authenticate(ctx, tc.header)
			} else {
				id, err = tc.a.AuthenticateAPIKey(tc.xAPIKey)
			}
			if tc.wantMsg == "" {
				if err != nil || id != tc.want {
					t.Fatalf("got %+v, %v; want %+v", id, err, tc.want)
				}
				return
			}
			wantReason(t, err, cperr.Unauthenticated)
			var ce *cperr.Error
			errors.As(err, &ce)
			if ce.Message != tc.wantMsg {
				t.Fatalf("message = %q, want %q", ce.Message, tc.wantMsg)
			}
			if strings.Contains(err.Error(), "cpk_") {
				t.Fatal("the error echoes the key")
			}
		})
	}
}

func TestModeNone(t *testing.T) {
	ctx := testutil.Context(t, time.Minute)
	cfg := DefaultConfig()
	cfg.Mode = ModeNone
	cfg.Logger = testutil.Logger(t)
	a, err := New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range []string{"", "Bearer whatever"} {
		id, err := a.Authenticate(ctx, h)
		if err != nil || id.Method != MethodNone || id.Tenant != "" {
			t.Fatalf("Authenticate(%q) = %+v, %v", h, id, err)
		}
	}
	if id, err := a.AuthenticateAPIKey(""); err != nil || id.Method != MethodNone {
		t.Fatalf("AuthenticateAPIKey = %+v, %v", id, err)
	}
}

func TestCheckTenant(t *testing.T) {
	jwtID := Identity{Tenant: "t1", Subject: "u", Method: MethodJWT, KeyID: "k"}
	keyID := Identity{Tenant: "t1", Subject: "0123456789abcdef", Method: MethodAPIKey, KeyID: "0123456789abcdef"}
	none := Identity{Method: MethodNone}
	tests := []struct {
		name      string
		id        Identity
		requested string
		want      string
		wantErr   cperr.Reason
	}{
		{name: "jwt, no tenant asked", id: jwtID, want: "t1"},
		{name: "jwt, same tenant", id: jwtID, requested: "t1", want: "t1"},
		{name: "jwt, other tenant", id: jwtID, requested: "t2", wantErr: cperr.PermissionDenied},
		{name: "api key, other tenant", id: keyID, requested: "t2", wantErr: cperr.PermissionDenied},
		{name: "api key, same tenant", id: keyID, requested: "t1", want: "t1"},
		{name: "none, tenant asked", id: none, requested: "t3", want: "t3"},
		{name: "none, no tenant", id: none, wantErr: cperr.InvalidArgument},
		{name: "none, malformed tenant", id: none, requested: "acme/../x", wantErr: cperr.InvalidArgument},
		{name: "none, tenant too long", id: none, requested: strings.Repeat("t", 129), wantErr: cperr.InvalidArgument},
		{name: "none, longest tenant", id: none, requested: strings.Repeat("t", 128), want: strings.Repeat("t", 128)},
		{name: "empty identity", id: Identity{}, requested: "t1", wantErr: cperr.Unauthenticated},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := CheckTenant(tc.id, tc.requested)
			if tc.wantErr != "" {
				wantReason(t, err, tc.wantErr)
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("CheckTenant = %q, %v; want %q", got, err, tc.want)
			}
		})
	}
	// The PERMISSION_DENIED names the requested tenant in its metadata.
	_, err := CheckTenant(jwtID, "t2")
	var ce *cperr.Error
	if !errors.As(err, &ce) || ce.Metadata[cperr.MetaTenant] != "t2" {
		t.Fatalf("metadata: %v", err)
	}
}

func TestWWWAuthenticate(t *testing.T) {
	ctx := testutil.Context(t, time.Minute)
	cfg := DefaultConfig()
	a, err := New(cfg, keyMap{})
	if err != nil {
		t.Fatal(err)
	}
	_, missing := a.Authenticate(ctx, "")
	_, badKey := a.Authenticate(ctx, "Bearer cpk_zz")
	_, denied := CheckTenant(Identity{Tenant: "t1", Method: MethodAPIKey}, "t2")
	_, noTenant := CheckTenant(Identity{Method: MethodNone}, "")
	tests := []struct {
		name string
		err  error
		want string
	}{
		{"nil", nil, `Bearer realm="cellplane"`},
		{"missing credentials", missing, `Bearer realm="cellplane"`},
		{"invalid API key", badKey, `Bearer realm="cellplane", error="invalid_token", error_description="invalid API key"`},
		{"expired", unauthenticated(msgExpired), `Bearer realm="cellplane", error="invalid_token", error_description="token expired"`},
		{"permission denied", denied, `Bearer realm="cellplane", error="insufficient_scope", error_description="the credentials are not valid for the requested tenant"`},
		{"invalid argument", noTenant, `Bearer realm="cellplane", error="invalid_request", error_description="x-cellplane-tenant is required"`},
		{"quotes and controls stripped", unauthenticated("bad \"x\"\\\n"), `Bearer realm="cellplane", error="invalid_token", error_description="bad x"`},
		{"not a cperr", errors.New("boom"), `Bearer realm="cellplane"`},
		{"another reason", cperr.New(cperr.RateLimited, "slow down"), `Bearer realm="cellplane"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := a.WWWAuthenticate(tc.err); got != tc.want {
				t.Fatalf("WWWAuthenticate = %s\nwant %s", got, tc.want)
			}
		})
	}
}

func TestReloadJWKS(t *testing.T) {
	ctx := testutil.Context(t, time.Minute)
	k := newKeys(t)
	path := filepath.Join(t.TempDir(), "jwks.json")
	writeJWKS(t, path, rsaJWK("old", &k.rsa.PublicKey))
	a, err := New(jwtConfig(t, path), nil)
	if err != nil {
		t.Fatal(err)
	}
	oldTok := "Bearer " + sign(t, jwt.SigningMethodRS256, "old", k.rsa, goodClaims())
	newTok := "Bearer " + sign(t, jwt.SigningMethodES256, "new", k.ec, goodClaims())
	if _, err := a.Authenticate(ctx, oldTok); err != nil {
		t.Fatalf("old key before rotation: %v", err)
	}
	if _, err := a.Authenticate(ctx, newTok); err == nil {
		t.Fatal("new key accepted before it was published")
	}

	writeJWKS(t, path, ecJWK("new", &k.ec.PublicKey)) // rotate: old key retired
	if err := a.ReloadJWKS(); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Authenticate(ctx, newTok); err != nil {
		t.Fatalf("new key after rotation: %v", err)
	}
	_, err = a.Authenticate(ctx, oldTok)
	wantReason(t, err, cperr.Unauthenticated)

	// A broken file keeps the keys in use.
	if err := os.WriteFile(path, []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := a.ReloadJWKS(); err == nil {
		t.Fatal("ReloadJWKS accepted a broken file")
	}
	if _, err := a.Authenticate(ctx, newTok); err != nil {
		t.Fatalf("keys lost after a failed reload: %v", err)
	}
}

func TestParseJWKS(t *testing.T) {
	k := newKeys(t)
	small, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	goodRSA := rsaJWK("r", &k.rsa.PublicKey)
	goodEC := ecJWK("e", &k.ec.PublicKey)
	mod := func(base map[string]string, kv ...string) map[string]string {
		m := map[string]string{}
		for key, v := range base {
			m[key] = v
		}
		for i := 0; i < len(kv); i += 2 {
			if kv[i+1] == "" {
				delete(m, kv[i])
			} else {
				m[kv[i]] = kv[i+1]
			}
		}
		return m
	}
	enc := func(ks ...map[string]string) string {
		b, _ := json.Marshal(map[string]any{"keys": ks})
		return string(b)
	}
	tests := []struct {
		name     string
		data     string
		wantKids []string
		wantErr  bool
	}{
		{name: "rsa and ec", data: enc(goodRSA, goodEC), wantKids: []string{"r", "e"}},
		{name: "unsupported keys skipped", data: enc(goodEC, map[string]string{"kty": "oct", "k": "c2VjcmV0"},
			mod(goodEC, "kid", "p384", "crv", "P-384"), mod(goodRSA, "kid", "enc", "use", "enc"), mod(goodRSA, "kid", "ps", "alg", "PS256")),
			wantKids: []string{"e"}},
		{name: "not json", data: "keys", wantErr: true},
		{name: "empty set", data: `{"keys":[]}`, wantErr: true},
		{name: "only unsupported", data: enc(map[string]string{"kty": "oct", "kid": "h", "k": "c2VjcmV0"}), wantErr: true},
		{name: "duplicate kid", data: enc(goodRSA, mod(goodEC, "kid", "r")), wantErr: true},
		{name: "missing kid", data: enc(mod(goodRSA, "kid", "")), wantErr: true},
		{name: "private key", data: enc(mod(goodEC, "d", "AAAA")), wantErr: true},
		{name: "short RSA modulus", data: enc(rsaJWK("s", &small.PublicKey)), wantErr: true},
		{name: "bad n", data: enc(mod(goodRSA, "n", "!!")), wantErr: true},
		{name: "padded n", data: enc(mod(goodRSA, "n", goodRSA["n"]+"==")), wantErr: true},
		{name: "even e", data: enc(mod(goodRSA, "e", b64([]byte{1, 0, 0}))), wantErr: true},
		{name: "huge e", data: enc(mod(goodRSA, "e", b64([]byte{1, 0, 0, 0, 1}))), wantErr: true},
		{name: "short x", data: enc(mod(goodEC, "x", goodEC["x"][:20])), wantErr: true},
		{name: "point off the curve", data: enc(mod(goodEC, "y", goodEC["x"])), wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			keys, err := parseJWKS([]byte(tc.data))
			if tc.wantErr {
				if err == nil {
					t.Fatalf("parseJWKS accepted it: %v", keys)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(keys) != len(tc.wantKids) {
				t.Fatalf("got %d keys, want %v", len(keys), tc.wantKids)
			}
			for _, kid := range tc.wantKids {
				if _, ok := keys[kid]; !ok {
					t.Fatalf("kid %q missing", kid)
				}
			}
		})
	}
}

func TestConfigValidate(t *testing.T) {
	mod := func(f func(*Config)) Config {
		c := DefaultConfig()
		f(&c)
		return c
	}
	jwtOK := func(c *Config) { c.Mode, c.JWKSFile, c.Issuer, c.Audience = ModeJWT, "k.json", "i", "a" }
	tests := []struct {
		name    string
		cfg     Config
		wantErr bool
	}{
		{"default", DefaultConfig(), false},
		{"jwt complete", mod(jwtOK), false},
		{"none", mod(func(c *Config) { c.Mode = ModeNone }), false},
		{"bad mode", mod(func(c *Config) { c.Mode = "basic" }), true},
		{"jwt without file", mod(func(c *Config) { jwtOK(c); c.JWKSFile = "" }), true},
		{"jwt without issuer", mod(func(c *Config) { jwtOK(c); c.Issuer = "" }), true},
		{"jwt without audience", mod(func(c *Config) { jwtOK(c); c.Audience = "" }), true},
		{"no tenant claim", mod(func(c *Config) { c.TenantClaim = "" }), true},
		{"negative leeway", mod(func(c *Config) { c.Leeway = -time.Second }), true},
		{"quote in realm", mod(func(c *Config) { c.Realm = `a"b` }), true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.cfg.Validate(); (err != nil) != tc.wantErr {
				t.Fatalf("Validate = %v, wantErr %v", err, tc.wantErr)
			}
		})
	}
	if _, err := New(DefaultConfig(), nil); err == nil {
		t.Fatal("mode apikey without a KeyLookup accepted")
	}
	missingFile := mod(jwtOK)
	missingFile.Logger = testutil.Logger(t)
	if _, err := New(missingFile, nil); err == nil {
		t.Fatal("a missing JWKS file accepted")
	}
}

// FuzzAuthenticate checks that arbitrary authorization values never panic
// and never authenticate: the fuzzer holds no private key and no API key
// secret of the table.
func FuzzAuthenticate(f *testing.F) {
	ctx := testutil.Context(f, time.Minute)
	k := newKeys(f)
	path := filepath.Join(f.TempDir(), "jwks.json")
	writeJWKS(f, path, rsaJWK("rsa-1", &k.rsa.PublicKey), ecJWK("ec-1", &k.ec.PublicKey))
	id, secret, hash, err := NewKey()
	if err != nil {
		f.Fatal(err)
	}
	_ = secret // never given to the fuzzer
	cfg := jwtConfig(f, path)
	a, err := New(cfg, keyMap{id: {tenant: "t1", hash: hash}})
	if err != nil {
		f.Fatal(err)
	}
	rsaPubDER, _ := x509.MarshalPKIXPublicKey(&k.rsa.PublicKey)
	// Seeds: well-formed tokens that must fail (wrong key, alg tricks) and
	// near-misses of the API key.
	for _, s := range []string{
		"",
		"Bearer ",
		"Bearer a.b.c",
		"Basic x",
		"Bearer " + sign(f, jwt.SigningMethodRS256, "rsa-1", k.rsaOther, goodClaims()),
		"Bearer " + sign(f, jwt.SigningMethodES256, "ec-1", k.ecOther, goodClaims()),
		"Bearer " + sign(f, jwt.SigningMethodHS256, "rsa-1", rsaPubDER, goodClaims()),
		"Bearer " + noneToken(f, "ec-1"),
		"Bearer cpk_" + id + "_",
		"Bearer cpk_" + id + "_" + strings.Repeat("A", 43),
		"bearer  cpk_0000000000000000_x",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, authorization string) {
		if got, err := a.Authenticate(ctx, authorization); err == nil {
			t.Fatalf("authenticated %q as %+v", authorization, got)
		} else if cperr.ReasonOf(err) != cperr.Unauthenticated {
			t.Fatalf("error %v is not UNAUTHENTICATED", err)
		}
		if got, err := a.AuthenticateAPIKey(authorization); err == nil {
			t.Fatalf("authenticated API key %q as %+v", authorization, got)
		}
	})
}

// AuthenticateFor checks the audience given with the call (an MCP
// worker's per-tenant URL), not the configured one.
func TestAuthenticateForAudience(t *testing.T) {
	ctx := testutil.Context(t, time.Minute)
	k := newKeys(t)
	path := filepath.Join(t.TempDir(), "jwks.json")
	writeJWKS(t, path, ecJWK("ec-1", &k.ec.PublicKey))
	cfg := jwtConfig(t, path)
	cfg.Audience = ""
	cfg.PerRequestAudience = true
	a, err := New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	acme := "https://mcp.example/t/acme/mcp"
	tok := sign(t, jwt.SigningMethodES256, "ec-1", k.ec, with(goodClaims(), "aud", acme))
	if id, err := a.AuthenticateFor(ctx, "Bearer "+tok, acme); err != nil || id.Tenant != "t1" {
		t.Fatalf("token for its audience: %+v, %v", id, err)
	}
	_, err = a.AuthenticateFor(ctx, "Bearer "+tok, "https://mcp.example/t/globex/mcp")
	wantReason(t, err, cperr.Unauthenticated)
	_, err = a.AuthenticateFor(ctx, "Basic xyz", acme)
	wantReason(t, err, cperr.Unauthenticated)
	cfg.PerRequestAudience = false
	if cfg.Validate() == nil {
		t.Fatal("jwt mode without an audience validated")
	}
}
