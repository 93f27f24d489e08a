package mcp_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/cellplane/cellplane/cells/mcp"
	"github.com/cellplane/cellplane/cells/mcpauth"
	"github.com/cellplane/cellplane/controlplane/topo/memtopo"
	"github.com/cellplane/cellplane/internal/auth"
	"github.com/cellplane/cellplane/internal/testutil"
)

// jwtIssuer signs ES256 tokens and writes the JWKS file that verifies them.
type jwtIssuer struct {
	key  *ecdsa.PrivateKey
	file string
}

func newJWTIssuer(t *testing.T) *jwtIssuer {
	t.Helper()
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
	return &jwtIssuer{key: key, file: file}
}

func (i *jwtIssuer) token(t *testing.T, tenant, aud string) string {
	t.Helper()
	tok := jwt.NewWithClaims(jwt.SigningMethodES256, jwt.MapClaims{"iss": "https://issuer.test", "aud": aud, "sub": "agent", "tenant": tenant,
		"exp": time.Now().Add(time.Minute).Unix(), "iat": time.Now().Unix()})
	tok.Header["kid"] = "k"
	s, err := tok.SignedString(i.key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// post sends a legacy tools/list with the given Host header and
// credentials and returns the response (body read).
func post(t *testing.T, w *worker, host string, header ...string) (*http.Response, string) {
	t.Helper()
	ctx := testutil.Context(t, 10*time.Second)
	req, _ := http.NewRequestWithContext(ctx, "POST", w.url("acme"), strings.NewReader(legacyList))
	req.Host = host
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	req.Header.Set("Mcp-Protocol-Version", "2025-06-18")
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

// M4: the audience a JWT is checked against, and the RFC 9728 resource,
// are the configured public URL's, whatever the Host header says.
func TestJWTAudienceIsThePublicURLNotTheHost(t *testing.T) {
	iss := newJWTIssuer(t)
	jc := auth.DefaultConfig()
	jc.JWKSFile, jc.Issuer, jc.Logger = iss.file, "https://issuer.test", testutil.Logger(t)
	a, err := mcpauth.New(mcpauth.Config{JWT: &jc})
	if err != nil {
		t.Fatal(err)
	}
	cfg := mcp.DefaultConfig()
	cfg.PublicURL = "https://mcp.example.test/"
	w := startWorker(t, cfg, dial(t, "127.0.0.1:1"), a) // tools/list never calls the cell
	const public = "https://mcp.example.test/t/acme/mcp"

	// A token for another host of the same issuer, sent with that Host.
	resp, body := post(t, w, "other.example", "Authorization", "Bearer "+iss.token(t, "acme", "http://other.example/t/acme/mcp"))
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("a token for another host with Host: other.example: %d %s, want 401", resp.StatusCode, body)
	}
	if got, want := resp.Header.Get("WWW-Authenticate"), `resource_metadata="https://mcp.example.test/.well-known/oauth-protected-resource/t/acme/mcp"`; !strings.Contains(got, want) {
		t.Fatalf("WWW-Authenticate %q, want it to contain %s", got, want)
	}
	// A token for the node's own address (the old default), by any Host.
	resp, body = post(t, w, strings.TrimPrefix(w.base, "http://"), "Authorization", "Bearer "+iss.token(t, "acme", w.url("acme")))
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("a token for the listen address: %d %s, want 401", resp.StatusCode, body)
	}
	// A token for the configured URL works (sent to the listen address:
	// on loopback the SDK refuses other Hosts itself, DNS-rebinding
	// protection, after authentication).
	resp, body = post(t, w, strings.TrimPrefix(w.base, "http://"), "Authorization", "Bearer "+iss.token(t, "acme", public))
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, "context_read") {
		t.Fatalf("a token for %s: %d %s", public, resp.StatusCode, body)
	}

	// The metadata names the configured URL regardless of Host.
	ctx := testutil.Context(t, 10*time.Second)
	req, _ := http.NewRequestWithContext(ctx, "GET", w.base+"/.well-known/oauth-protected-resource/t/acme/mcp", nil)
	req.Host = "other.example"
	mresp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer mresp.Body.Close()
	var doc mcp.ProtectedResourceMetadata
	if err := json.NewDecoder(mresp.Body).Decode(&doc); err != nil {
		t.Fatal(err)
	}
	if doc.Resource != public {
		t.Fatalf("metadata resource %q with Host other.example, want %q", doc.Resource, public)
	}
}

func TestPublicURLIsRequiredAndChecked(t *testing.T) {
	cell := dial(t, "127.0.0.1:1")
	for _, u := range []string{"", "mcp.example", "ftp://mcp.example", "https://mcp.example/?q=1", "https://u@mcp.example", "https://mcp.example/#f"} {
		cfg := mcp.DefaultConfig()
		cfg.PublicURL = u
		if _, err := mcp.New(cfg, cell, nil); err == nil {
			t.Errorf("PublicURL %q accepted", u)
		}
	}
	cfg := mcp.DefaultConfig()
	cfg.PublicURL = "https://example.com/prefix/"
	if _, err := mcp.New(cfg, cell, nil); err != nil {
		t.Errorf("PublicURL with a path prefix: %v", err)
	}
}

// H6 over HTTP: once the worker's budget of registry reads for unknown
// key ids is spent, such a request gets 429 RATE_LIMITED with Retry-After
// and reads nothing.
func TestUnknownKeysAreRateLimited(t *testing.T) {
	st := memtopo.New()
	t.Cleanup(func() { st.Close() })
	a, err := mcpauth.New(mcpauth.Config{Registry: st, MissRate: 1e-9, MissBurst: 1})
	if err != nil {
		t.Fatal(err)
	}
	w := startWorker(t, mcp.DefaultConfig(), dial(t, "127.0.0.1:1"), a)
	host := strings.TrimPrefix(w.base, "http://")
	resp, body := post(t, w, host, "X-Api-Key", "cpk_0123456789abcdef_xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx")
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("first unknown key: %d %s, want 401", resp.StatusCode, body)
	}
	resp, body = post(t, w, host, "X-Api-Key", "cpk_fedcba9876543210_xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx")
	if resp.StatusCode != http.StatusTooManyRequests || !strings.Contains(body, `"RATE_LIMITED"`) || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("second unknown key: %d %q Retry-After %q, want 429 RATE_LIMITED with Retry-After", resp.StatusCode, body, resp.Header.Get("Retry-After"))
	}
	if ra := resp.Header.Get("Retry-After"); ra != "60" {
		t.Fatalf("Retry-After %q, want the 60 s cap (the next read is 1e9 s away)", ra)
	}
	// The first id again: remembered as unknown, so 401 at once (not 429).
	resp, body = post(t, w, host, "X-Api-Key", "cpk_0123456789abcdef_xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx")
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("the remembered unknown key: %d %s, want 401", resp.StatusCode, body)
	}
}
