package router_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/cellplane/cellplane/controlplane/catalog"
	"github.com/cellplane/cellplane/controlplane/topo"
	"github.com/cellplane/cellplane/controlplane/topo/etcdtopo"
	"github.com/cellplane/cellplane/controlplane/topo/topotest"
	"github.com/cellplane/cellplane/internal/auth"
	"github.com/cellplane/cellplane/internal/cperr"
	"github.com/cellplane/cellplane/internal/faultnet"
	"github.com/cellplane/cellplane/internal/logging"
	"github.com/cellplane/cellplane/internal/rpcerr"
	"github.com/cellplane/cellplane/internal/testutil"
	cpv1 "github.com/cellplane/cellplane/proto/cellplane/controlplane/v1"
	routerv1 "github.com/cellplane/cellplane/proto/cellplane/router/v1"
	"github.com/cellplane/cellplane/router"
)

// revokeEnv is a real etcd reached by the router through a TCP proxy the
// test cuts, a tenant record and two API keys written straight into etcd
// (no cell: RouterService.Lookup answers from the table, so the front
// door's authentication is all that is exercised).
type revokeEnv struct {
	st               topo.Store // direct to etcd (the operator's side)
	proxy            *faultnet.Proxy
	snapshot         string
	revokeID         string
	revoked, kept    string // secrets
	bound, freshness time.Duration
}

func newRevokeEnv(t *testing.T) *revokeEnv {
	t.Helper()
	if testing.Short() {
		t.Skip("starts etcd")
	}
	eps := topotest.StartEtcd(t)
	e := &revokeEnv{
		proxy:     faultnet.Start(t, strings.TrimPrefix(eps[0], "http://")),
		snapshot:  filepath.Join(t.TempDir(), "router.snap"),
		bound:     2 * time.Second,
		freshness: 50 * time.Millisecond,
	}
	cfg := etcdtopo.DefaultConfig()
	cfg.Endpoints = eps
	st, err := etcdtopo.Dial(testutil.Context(t, 10*time.Second), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	e.st = st
	ctx := testutil.Context(t, 10*time.Second)
	tenant := &cpv1.Tenant{Id: "acme", Cell: "c1", Epoch: 1, State: cpv1.TenantState_TENANT_STATE_ACTIVE}
	ops := []topo.Op{topo.Put(topo.TenantKey("acme"), catalog.Encode(tenant))}
	for _, s := range []*string{&e.revoked, &e.kept} {
		id, secret, hash, err := auth.NewKey()
		if err != nil {
			t.Fatal(err)
		}
		*s = secret
		if s == &e.revoked {
			e.revokeID = id
		}
		ops = append(ops, topo.Put(topo.APIKeyKey("acme", id), catalog.Encode(&cpv1.ApiKey{Id: id, Tenant: "acme", SecretHash: hash})))
	}
	if _, err := st.Txn(ctx, nil, ops); err != nil {
		t.Fatal(err)
	}
	return e
}

// revoke marks the first key revoked in etcd, as RevokeApiKey does.
func (e *revokeEnv) revoke(t *testing.T) {
	t.Helper()
	ctx := testutil.Context(t, 10*time.Second)
	rec, ver, err := catalog.GetAPIKey(ctx, e.st, "acme", e.revokeID)
	if err != nil {
		t.Fatal(err)
	}
	rec.RevokeTime = timestamppb.Now()
	if _, err := e.st.Update(ctx, topo.APIKeyKey("acme", e.revokeID), catalog.Encode(rec), ver); err != nil {
		t.Fatal(err)
	}
}

func (e *revokeEnv) startRouter(t *testing.T) *router.Server {
	t.Helper()
	cfg := router.DefaultConfig()
	cfg.EtcdEndpoints = []string{"http://" + e.proxy.Addr()}
	cfg.GRPCListener, cfg.HTTPListener = testutil.Listen(t), testutil.Listen(t)
	cfg.Routing.SnapshotPath = e.snapshot
	cfg.Routing.SnapshotInterval = 50 * time.Millisecond
	cfg.Routing.APIKeyMaxStaleness = e.bound
	cfg.Routing.FreshnessInterval = e.freshness
	cfg.Auth.Mode = auth.ModeAPIKey
	cfg.ShutdownTimeout = 5 * time.Second
	cfg.Logger = slog.New(logging.NewHandler(testutil.SlogWriter(t), logging.FormatText, slog.LevelInfo, false))
	r, err := router.Start(testutil.Context(t, 30*time.Second), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Close() })
	return r
}

// lookup calls RouterService.Lookup with secret and returns the error's
// reason ("" on success).
func lookup(t *testing.T, r *router.Server, secret string) (cperr.Reason, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+secret), 5*time.Second)
	defer cancel()
	_, err := routerv1.NewRouterServiceClient(dial(t, r.GRPCAddr())).Lookup(ctx, &routerv1.LookupRequest{})
	if err == nil {
		return "", nil
	}
	return cperr.ReasonOf(rpcerr.FromStatus(err)), err
}

// want polls until secret gets reason ("" = accepted).
func want(t *testing.T, r *router.Server, what, secret string, reason cperr.Reason, within time.Duration) {
	t.Helper()
	testutil.Eventually(t, within, func() error {
		got, err := lookup(t, r, secret)
		if got != reason {
			return fmt.Errorf("%s: %q (%v), want %q", what, got, err, reason)
		}
		return nil
	})
}

func readyz(t *testing.T, r *router.Server, path string) (int, map[string]any) {
	t.Helper()
	resp, err := http.Get("http://" + r.HTTPAddr() + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body := map[string]any{}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, body
}

// M9: a key revoked while the router's etcd connection is cut works at
// most until the staleness bound, then every API key is refused with
// CREDENTIALS_STALE (the router stays ready: routing is not affected);
// once etcd is reachable again the revoked key is refused and the other
// one works.
func TestRevokedKeyWhileEtcdCut(t *testing.T) {
	e := newRevokeEnv(t)
	r := e.startRouter(t)
	want(t, r, "key before the cut", e.revoked, "", 20*time.Second)
	want(t, r, "other key before the cut", e.kept, "", 5*time.Second)
	if code, body := readyz(t, r, "/readyz/apikeys"); code != http.StatusOK {
		t.Fatalf("/readyz/apikeys while fresh: %d %v", code, body)
	}

	e.proxy.Cut()
	cut := time.Now()
	e.revoke(t)
	// The revoked key keeps working at most until the bound (the router
	// cannot know), then it is refused.
	testutil.Eventually(t, 20*time.Second, func() error {
		got, err := lookup(t, r, e.revoked)
		switch got {
		case "":
			if since := time.Since(cut); since > e.bound+time.Second {
				t.Fatalf("the revoked key still works %s after the cut (bound %s)", since, e.bound)
			}
			return errors.New("the revoked key still works")
		case cperr.CredentialsStale:
			return nil
		}
		t.Fatalf("revoked key while cut: %q %v", got, err)
		return nil
	})
	// Fail closed: the valid key too, with a retryable UNAVAILABLE.
	if got, err := lookup(t, r, e.kept); got != cperr.CredentialsStale {
		t.Fatalf("valid key with a stale view: %q %v", got, err)
	}
	if code, body := readyz(t, r, "/readyz"); code != http.StatusOK || body["api_keys_fresh"] != false {
		t.Fatalf("/readyz while stale: %d %v (want 200, api_keys_fresh false)", code, body)
	}
	if code, _ := readyz(t, r, "/readyz/apikeys"); code != http.StatusServiceUnavailable {
		t.Fatalf("/readyz/apikeys while stale: %d, want 503", code)
	}

	e.proxy.Heal()
	want(t, r, "revoked key after the watch recovered", e.revoked, cperr.Unauthenticated, 30*time.Second)
	want(t, r, "valid key after the watch recovered", e.kept, "", 10*time.Second)
}

// M9: a router restarted from a snapshot older than the bound, with etcd
// unreachable, refuses API keys until its watch syncs; then the revoked
// key stays refused and the valid key works.
func TestRestartFromOldSnapshotRefusesKeysUntilSync(t *testing.T) {
	e := newRevokeEnv(t)
	r := e.startRouter(t)
	want(t, r, "key before the restart", e.kept, "", 20*time.Second)
	testutil.Eventually(t, 10*time.Second, func() error {
		if r.Table().Len() == 0 {
			return errors.New("empty table")
		}
		return nil
	})
	e.proxy.Cut()
	if err := r.Close(); err != nil { // writes the final snapshot
		t.Fatal(err)
	}
	closed := time.Now()
	e.revoke(t) // while the router is down and cut off
	// Let the snapshot grow older than the bound (polled, no sleep).
	testutil.Eventually(t, 10*time.Second, func() error {
		if time.Since(closed) <= e.bound {
			return errors.New("snapshot not yet older than the bound")
		}
		return nil
	})
	r2 := e.startRouter(t)
	if !r2.Table().Loaded() {
		t.Fatal("the restarted router did not load its snapshot")
	}
	if _, ok := r2.Table().Lookup("acme"); !ok {
		t.Fatal("the restarted router does not route from its snapshot (static stability)")
	}
	for _, s := range []string{e.revoked, e.kept} {
		if got, err := lookup(t, r2, s); got != cperr.CredentialsStale {
			t.Fatalf("key served from a snapshot older than the bound: %q %v, want CREDENTIALS_STALE", got, err)
		}
	}
	e.proxy.Heal()
	want(t, r2, "revoked key after sync", e.revoked, cperr.Unauthenticated, 30*time.Second)
	want(t, r2, "valid key after sync", e.kept, "", 10*time.Second)
}

// signed returns a JWT of iss for tenant acme with the given subject, jti
// and iat.
func (i *jwtIssuer) signed(t *testing.T, sub, jti string, iat time.Time) string {
	t.Helper()
	claims := jwt.MapClaims{"iss": "https://issuer.test", "aud": "cellplane", "sub": sub, "tenant": "acme",
		"exp": time.Now().Add(time.Hour).Unix(), "iat": iat.Unix()}
	if jti != "" {
		claims["jti"] = jti
	}
	tok := jwt.NewWithClaims(jwt.SigningMethodRS256, claims)
	tok.Header["kid"] = "k1"
	s, err := tok.SignedString(i.key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// M9, JWTs: entries of the tenant's revocation list in etcd (as
// RevokeToken writes them) are honoured by the router through its watch:
// a subject's tokens issued up to the revocation and a token named by its
// jti are refused, a token issued to the subject afterwards works; a
// router restarted from its snapshot with etcd cut still refuses them.
func TestRevokedJWTRefused(t *testing.T) {
	e := newRevokeEnv(t)
	iss := newIssuer(t)
	start := func() *router.Server {
		cfg := router.DefaultConfig()
		cfg.EtcdEndpoints = []string{"http://" + e.proxy.Addr()}
		cfg.GRPCListener, cfg.HTTPListener = testutil.Listen(t), testutil.Listen(t)
		cfg.Routing.SnapshotPath = e.snapshot
		cfg.Routing.SnapshotInterval = 50 * time.Millisecond
		cfg.Auth.Mode = auth.ModeJWT
		cfg.Auth.JWKSFile, cfg.Auth.Issuer, cfg.Auth.Audience = iss.file, "https://issuer.test", "cellplane"
		cfg.ShutdownTimeout = 5 * time.Second
		cfg.Logger = slog.New(logging.NewHandler(testutil.SlogWriter(t), logging.FormatText, slog.LevelInfo, false))
		r, err := router.Start(testutil.Context(t, 30*time.Second), cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = r.Close() })
		return r
	}
	r := start()
	before := time.Now().Add(-time.Minute)
	bySubject := iss.signed(t, "agent-7", "", before)
	byJTI := iss.signed(t, "agent-8", "tok-9", before)
	other := iss.signed(t, "agent-9", "", before)
	for _, tok := range []string{bySubject, byJTI, other} {
		want(t, r, "token before the revocation", tok, "", 20*time.Second)
	}

	ctx := testutil.Context(t, 10*time.Second)
	revokedAt := time.Now()
	until := timestamppb.New(revokedAt.Add(time.Hour))
	for _, rec := range []*cpv1.RevokedToken{
		{Tenant: "acme", Subject: "agent-7", RevokeTime: timestamppb.New(revokedAt), ExpireTime: until},
		{Tenant: "acme", Jti: "tok-9", RevokeTime: timestamppb.New(revokedAt), ExpireTime: until},
	} {
		if _, err := e.st.Txn(ctx, nil, []topo.Op{topo.Put(topo.RevokedTokenKey("acme", catalog.RevokedTokenID(rec)), catalog.Encode(rec))}); err != nil {
			t.Fatal(err)
		}
	}
	want(t, r, "token of a revoked subject", bySubject, cperr.Unauthenticated, 20*time.Second)
	want(t, r, "revoked jti", byJTI, cperr.Unauthenticated, 5*time.Second)
	want(t, r, "token of another subject", other, "", 5*time.Second)
	want(t, r, "token issued to the subject after the revocation", iss.signed(t, "agent-7", "", revokedAt.Add(2*time.Second)), "", 5*time.Second)

	// Restarted from its snapshot with etcd unreachable: still refused.
	e.proxy.Cut()
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	r2 := start()
	for _, tok := range []string{bySubject, byJTI} {
		if got, err := lookup(t, r2, tok); got != cperr.Unauthenticated {
			t.Fatalf("revoked token at a router restarted from its snapshot: %q %v", got, err)
		}
	}
	if got, err := lookup(t, r2, other); got != "" {
		t.Fatalf("valid token at a router restarted from its snapshot with etcd cut: %q %v", got, err)
	}
}
