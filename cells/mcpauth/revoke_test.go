package mcpauth

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/cellplane/cellplane/controlplane/catalog"
	"github.com/cellplane/cellplane/controlplane/topo"
	"github.com/cellplane/cellplane/controlplane/topo/etcdtopo"
	"github.com/cellplane/cellplane/controlplane/topo/memtopo"
	"github.com/cellplane/cellplane/controlplane/topo/topotest"
	"github.com/cellplane/cellplane/internal/auth"
	"github.com/cellplane/cellplane/internal/cperr"
	"github.com/cellplane/cellplane/internal/faultnet"
	"github.com/cellplane/cellplane/internal/testutil"
	cpv1 "github.com/cellplane/cellplane/proto/cellplane/controlplane/v1"
)

func gauge(g prometheus.Gauge) float64 {
	m := &dto.Metric{}
	if err := g.Write(m); err != nil {
		return -1
	}
	return m.GetGauge().GetValue()
}

// run starts a.Run for the test's lifetime.
func run(t *testing.T, a *Authenticator) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		a.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		wg.Wait()
	})
}

// revokeKey marks the key of secret revoked in the registry, as the
// control plane's RevokeApiKey does.
func revokeKey(t *testing.T, st topo.Store, tenant, secret string) {
	t.Helper()
	ctx := testutil.Context(t, 10*time.Second)
	id, _ := auth.KeyID(secret)
	rec, ver, err := catalog.GetAPIKey(ctx, st, tenant, id)
	if err != nil {
		t.Fatal(err)
	}
	rec.RevokeTime = timestamppb.Now()
	if _, err := st.Update(ctx, topo.APIKeyKey(tenant, id), catalog.Encode(rec), ver); err != nil {
		t.Fatal(err)
	}
}

func dialEtcd(t *testing.T, endpoint string) topo.Store {
	t.Helper()
	cfg := etcdtopo.DefaultConfig()
	cfg.Endpoints = []string{endpoint}
	cfg.DialTimeout = 2 * time.Second
	st, err := etcdtopo.Dial(testutil.Context(t, 10*time.Second), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	return st
}

// M9, with a real etcd: a cached key whose record is revoked is refused
// at the watch event, long before its cache TTL (an hour here); the other
// key stays cached.
func TestWatchEvictsRevokedKey(t *testing.T) {
	if testing.Short() {
		t.Skip("starts etcd")
	}
	st := dialEtcd(t, topotest.StartEtcd(t)[0])
	a, err := New(Config{Registry: st, KeyCacheTTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	run(t, a)
	revoked, kept := newKey(t, st, "acme", false), newKey(t, st, "acme", false)
	testutil.Eventually(t, 10*time.Second, func() error {
		if gauge(a.watchUp) != 1 {
			return errors.New("watch not up")
		}
		return nil
	})
	// Cached (the creation events may evict a first read: check until a
	// hit answers).
	testutil.Eventually(t, 10*time.Second, func() error {
		hits := value(a.lookups.WithLabelValues(resultHit))
		for _, k := range []string{revoked, kept} {
			if err := check(a, k); err != nil {
				t.Fatalf("key before the revocation: %v", err)
			}
		}
		if value(a.lookups.WithLabelValues(resultHit)) < hits+2 {
			return errors.New("not both cached yet")
		}
		return nil
	})
	revokeKey(t, st, "acme", revoked)
	testutil.Eventually(t, 10*time.Second, func() error {
		if err := check(a, revoked); cperr.ReasonOf(err) != cperr.Unauthenticated {
			return fmt.Errorf("revoked key: %v", err)
		}
		return nil
	})
	if err := check(a, kept); err != nil {
		t.Fatalf("the other key: %v", err)
	}
}

// M9, with a real etcd behind a proxy the test cuts: a key revoked while
// the worker cannot reach etcd keeps working at most until
// APIKeyMaxStaleness, then every cached key is refused with
// CREDENTIALS_STALE; once etcd is back the revoked key is refused and the
// other one works.
func TestStaleRecordRefusedWhileEtcdCut(t *testing.T) {
	if testing.Short() {
		t.Skip("starts etcd")
	}
	eps := topotest.StartEtcd(t)
	admin := dialEtcd(t, eps[0])
	proxy := faultnet.Start(t, strings.TrimPrefix(eps[0], "http://"))
	st := dialEtcd(t, "http://"+proxy.Addr())
	const bound = time.Second
	a, err := New(Config{Registry: st, KeyCacheTTL: 50 * time.Millisecond, APIKeyMaxStaleness: bound, LookupTimeout: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	// The keys exist before the watch starts: no creation event can evict
	// them from the cache after the checks below.
	revoked, kept := newKey(t, admin, "acme", false), newKey(t, admin, "acme", false)
	run(t, a)
	testutil.Eventually(t, 10*time.Second, func() error {
		if gauge(a.watchUp) != 1 {
			return errors.New("watch not up")
		}
		return nil
	})
	for _, k := range []string{revoked, kept} {
		if err := check(a, k); err != nil {
			t.Fatalf("key before the cut: %v", err)
		}
	}
	proxy.Cut()
	cut := time.Now()
	revokeKey(t, admin, "acme", revoked)
	testutil.Eventually(t, 20*time.Second, func() error {
		err := check(a, revoked)
		switch cperr.ReasonOf(err) {
		case "":
			if since := time.Since(cut); since > bound+time.Second {
				t.Fatalf("the revoked key still works %s after the cut (bound %s)", since, bound)
			}
			return errors.New("the revoked key still works")
		case cperr.CredentialsStale:
			return nil
		}
		t.Fatalf("revoked key while cut: %v", err)
		return nil
	})
	if err := check(a, kept); cperr.ReasonOf(err) != cperr.CredentialsStale {
		t.Fatalf("valid key with a stale record: %v, want CREDENTIALS_STALE", err)
	}
	proxy.Heal()
	testutil.Eventually(t, 30*time.Second, func() error {
		if err := check(a, revoked); cperr.ReasonOf(err) != cperr.Unauthenticated {
			return fmt.Errorf("revoked key after the heal: %v", err)
		}
		if err := check(a, kept); err != nil {
			return fmt.Errorf("valid key after the heal: %v", err)
		}
		return nil
	})
}

// Bound 0 keeps the old behaviour: the last answer stands while the
// registry is down, however old.
func TestUnboundedStalenessKeepsLastAnswer(t *testing.T) {
	st := memtopo.New()
	defer st.Close()
	a, err := New(Config{Registry: st, KeyCacheTTL: time.Nanosecond})
	if err != nil {
		t.Fatal(err)
	}
	k := newKey(t, st, "acme", false)
	if err := check(a, k); err != nil {
		t.Fatal(err)
	}
	st.Fail(memtopo.OpGet, "", topo.ErrUnavailable)
	start := time.Now()
	testutil.Eventually(t, 5*time.Second, func() error {
		if err := check(a, k); err != nil {
			t.Fatalf("unbounded: %v", err)
		}
		if time.Since(start) < 100*time.Millisecond {
			return errors.New("not yet")
		}
		return nil
	})
}

// testIssuer signs ES256 JWTs for tenant acme, verified through a JWKS
// file.
type testIssuer struct {
	key  *ecdsa.PrivateKey
	file string
}

func newTestIssuer(t *testing.T) *testIssuer {
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
	return &testIssuer{key: key, file: file}
}

const acmeURL = "https://mcp.example/t/acme/mcp"

func (i *testIssuer) token(t *testing.T, sub, jti string, iat time.Time) string {
	t.Helper()
	claims := jwt.MapClaims{"iss": "https://issuer.test", "aud": acmeURL, "sub": sub, "tenant": "acme",
		"exp": time.Now().Add(time.Hour).Unix(), "iat": iat.Unix()}
	if jti != "" {
		claims["jti"] = jti
	}
	tok := jwt.NewWithClaims(jwt.SigningMethodES256, claims)
	tok.Header["kid"] = "k"
	s, err := tok.SignedString(i.key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func checkJWT(a *Authenticator, token string) error {
	_, err := a.Authenticate(request("Authorization", "Bearer "+token), "acme", acmeURL)
	return err
}

// M9, JWTs at the worker, with a real etcd: a subject or jti put on the
// tenant's revocation list (as RevokeToken writes it) is refused at the
// watch event, though the cached list would be reused for an hour; a
// token issued to the subject afterwards, and other subjects, work.
func TestWatchRefusesRevokedJWT(t *testing.T) {
	if testing.Short() {
		t.Skip("starts etcd")
	}
	st := dialEtcd(t, topotest.StartEtcd(t)[0])
	iss := newTestIssuer(t)
	jc := auth.DefaultConfig()
	jc.JWKSFile, jc.Issuer, jc.Logger = iss.file, "https://issuer.test", testutil.Logger(t)
	a, err := New(Config{Registry: st, JWT: &jc, KeyCacheTTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	run(t, a)
	testutil.Eventually(t, 10*time.Second, func() error {
		if gauge(a.watchUp) != 1 {
			return errors.New("watch not up")
		}
		return nil
	})
	before := time.Now().Add(-time.Minute)
	bySubject, byJTI, other := iss.token(t, "agent-7", "", before), iss.token(t, "agent-8", "tok-9", before), iss.token(t, "agent-9", "", before)
	for _, tok := range []string{bySubject, byJTI, other} {
		if err := checkJWT(a, tok); err != nil {
			t.Fatalf("token before the revocation: %v", err)
		}
	}
	ctx := testutil.Context(t, 10*time.Second)
	revokedAt := time.Now()
	for _, rec := range []*cpv1.RevokedToken{
		{Tenant: "acme", Subject: "agent-7", RevokeTime: timestamppb.New(revokedAt), ExpireTime: timestamppb.New(revokedAt.Add(time.Hour))},
		{Tenant: "acme", Jti: "tok-9", RevokeTime: timestamppb.New(revokedAt), ExpireTime: timestamppb.New(revokedAt.Add(time.Hour))},
	} {
		if _, err := st.Txn(ctx, nil, []topo.Op{topo.Put(topo.RevokedTokenKey("acme", catalog.RevokedTokenID(rec)), catalog.Encode(rec))}); err != nil {
			t.Fatal(err)
		}
	}
	testutil.Eventually(t, 10*time.Second, func() error {
		for _, tok := range []string{bySubject, byJTI} {
			if err := checkJWT(a, tok); cperr.ReasonOf(err) != cperr.Unauthenticated {
				return fmt.Errorf("revoked token: %v", err)
			}
		}
		return nil
	})
	if err := checkJWT(a, other); err != nil {
		t.Fatalf("another subject's token: %v", err)
	}
	if err := checkJWT(a, iss.token(t, "agent-7", "", revokedAt.Add(2*time.Second))); err != nil {
		t.Fatalf("a token issued to the subject after the revocation: %v", err)
	}
}

// With JWTRevocationMaxStaleness, a JWT is refused (CREDENTIALS_STALE)
// once the cached revocation list is older than the bound and the
// registry cannot be read; without it the last list stands.
func TestStaleRevocationList(t *testing.T) {
	for _, bound := range []time.Duration{0, 100 * time.Millisecond} {
		t.Run(bound.String(), func(t *testing.T) {
			st := memtopo.New()
			defer st.Close()
			iss := newTestIssuer(t)
			jc := auth.DefaultConfig()
			jc.JWKSFile, jc.Issuer, jc.Logger = iss.file, "https://issuer.test", testutil.Logger(t)
			a, err := New(Config{Registry: st, JWT: &jc, KeyCacheTTL: time.Millisecond, JWTRevocationMaxStaleness: bound})
			if err != nil {
				t.Fatal(err)
			}
			tok := iss.token(t, "agent", "", time.Now())
			if err := checkJWT(a, tok); err != nil {
				t.Fatal(err)
			}
			st.Fail(memtopo.OpList, "", topo.ErrUnavailable)
			start := time.Now()
			testutil.Eventually(t, 5*time.Second, func() error {
				err := checkJWT(a, tok)
				if bound == 0 {
					if err != nil {
						t.Fatalf("unbounded: %v", err)
					}
					if time.Since(start) < 300*time.Millisecond {
						return errors.New("not yet")
					}
					return nil
				}
				switch cperr.ReasonOf(err) {
				case "":
					return errors.New("still accepted")
				case cperr.CredentialsStale:
					return nil
				}
				t.Fatalf("stale list: %v", err)
				return nil
			})
		})
	}
}
