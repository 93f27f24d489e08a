package mcpauth

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/cellplane/cellplane/controlplane/catalog"
	"github.com/cellplane/cellplane/controlplane/topo"
	"github.com/cellplane/cellplane/controlplane/topo/memtopo"
	"github.com/cellplane/cellplane/internal/auth"
	"github.com/cellplane/cellplane/internal/cperr"
	"github.com/cellplane/cellplane/internal/testutil"
	cpv1 "github.com/cellplane/cellplane/proto/cellplane/controlplane/v1"
)

func request(headers ...string) *http.Request {
	r, _ := http.NewRequest(http.MethodPost, "http://w/t/acme/mcp", nil)
	for i := 0; i+1 < len(headers); i += 2 {
		r.Header.Set(headers[i], headers[i+1])
	}
	return r
}

func newKey(t *testing.T, st topo.Store, tenant string, revoked bool) string {
	t.Helper()
	id, secret, hash, err := auth.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	rec := &cpv1.ApiKey{Id: id, Tenant: tenant, SecretHash: hash}
	if revoked {
		rec.RevokeTime = timestamppb.Now()
	}
	if _, err := st.Create(testutil.Context(t, 5*time.Second), topo.APIKeyKey(tenant, id), catalog.Encode(rec)); err != nil {
		t.Fatal(err)
	}
	return secret
}

func reason(err error) cperr.Reason { return cperr.ReasonOf(err) }

func TestAPIKeys(t *testing.T) {
	st := memtopo.New()
	defer st.Close()
	a, err := New(Config{Registry: st, KeyCacheTTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	good := newKey(t, st, "acme", false)
	revoked := newKey(t, st, "acme", true)
	other := newKey(t, st, "globex", false)
	tests := []struct {
		name    string
		r       *http.Request
		want    cperr.Reason
		wantPri string
	}{
		{"x-api-key", request("X-Api-Key", good), "", "key:"},
		{"bearer key", request("Authorization", "Bearer "+good), "", "key:"},
		{"revoked", request("X-Api-Key", revoked), cperr.Unauthenticated, ""},
		{"another tenant's key", request("X-Api-Key", other), cperr.Unauthenticated, ""},
		{"garbage", request("X-Api-Key", "nope"), cperr.Unauthenticated, ""},
		{"nothing", request(), cperr.Unauthenticated, ""},
		{"jwt not accepted", request("Authorization", "Bearer a.b.c"), cperr.Unauthenticated, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p, err := a.Authenticate(tc.r, "acme", "http://w/t/acme/mcp")
			if reason(err) != tc.want {
				t.Fatalf("err %v, want %q", err, tc.want)
			}
			if tc.want == "" && (len(p.Principal) < 4 || p.Principal[:4] != tc.wantPri) {
				t.Fatalf("principal %q", p.Principal)
			}
		})
	}
	// The registry goes down: cached keys still work, unknown ones cannot
	// be checked (UNAUTHENTICATED with a retry hint).
	st.Fail(memtopo.OpGet, "", topo.ErrUnavailable)
	if _, err := a.Authenticate(request("X-Api-Key", good), "acme", ""); err != nil {
		t.Fatalf("cached key with the registry down: %v", err)
	}
	fresh := "cpk_0123456789abcdef_xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
	_, err = a.Authenticate(request("X-Api-Key", fresh), "acme", "")
	var ce *cperr.Error
	if !errors.As(err, &ce) || ce.Reason != cperr.Unauthenticated || ce.RetryAfter <= 0 {
		t.Fatalf("uncached key with the registry down: %v", err)
	}
}

func TestJWTAudienceIsTheTenantsURL(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pad := func(b []byte) string {
		out := make([]byte, 32)
		copy(out[32-len(b):], b)
		return base64.RawURLEncoding.EncodeToString(out)
	}
	jwks, _ := json.Marshal(map[string]any{"keys": []map[string]string{{"kty": "EC", "crv": "P-256", "kid": "k", "use": "sig", "alg": "ES256",
		"x": pad(key.X.Bytes()), "y": pad(key.Y.Bytes())}}})
	file := filepath.Join(t.TempDir(), "jwks.json")
	if err := os.WriteFile(file, jwks, 0o600); err != nil {
		t.Fatal(err)
	}
	jc := auth.DefaultConfig()
	jc.JWKSFile, jc.Issuer, jc.Logger = file, "https://issuer.test", testutil.Logger(t)
	a, err := New(Config{JWT: &jc})
	if err != nil {
		t.Fatal(err)
	}
	token := func(tenant, aud string) string {
		tok := jwt.NewWithClaims(jwt.SigningMethodES256, jwt.MapClaims{"iss": "https://issuer.test", "aud": aud, "sub": "agent", "tenant": tenant,
			"exp": time.Now().Add(time.Minute).Unix(), "iat": time.Now().Unix()})
		tok.Header["kid"] = "k"
		s, err := tok.SignedString(key)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	url := "https://mcp.example/t/acme/mcp"
	if p, err := a.Authenticate(request("Authorization", "Bearer "+token("acme", url)), "acme", url); err != nil || p.Principal != "jwt:agent" {
		t.Fatalf("good token: %q %v", p, err)
	}
	if _, err := a.Authenticate(request("Authorization", "Bearer "+token("acme", "https://mcp.example/t/globex/mcp")), "acme", url); reason(err) != cperr.Unauthenticated {
		t.Fatalf("token for another URL: %v", err)
	}
	if _, err := a.Authenticate(request("Authorization", "Bearer "+token("globex", url)), "acme", url); reason(err) != cperr.PermissionDenied {
		t.Fatalf("token of another tenant: %v", err)
	}
	if got := a.AuthorizationServers(); len(got) != 1 || got[0] != "https://issuer.test" {
		t.Fatalf("authorization servers %v", got)
	}
	if c := a.Challenge(cperr.New(cperr.Unauthenticated, "x")); c == "" {
		t.Fatal("empty challenge")
	}
}
