package router_test

import (
	"errors"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/cellplane/cellplane/controlplane/tokenkeys"
	"github.com/cellplane/cellplane/internal/cperr"
	"github.com/cellplane/cellplane/internal/pki"
	"github.com/cellplane/cellplane/internal/tenantmd"
	"github.com/cellplane/cellplane/internal/tenanttoken"
	"github.com/cellplane/cellplane/internal/testutil"
	cpv1 "github.com/cellplane/cellplane/proto/cellplane/controlplane/v1"
	routerv1 "github.com/cellplane/cellplane/proto/cellplane/router/v1"
	"github.com/cellplane/cellplane/router"
)

// TestLookupMintsForTheCallerOnly: a router with an internal identity
// answers Lookup with a tenant token for the tenant the caller's API key
// authenticates — bound to its cell, epoch and the router's cluster,
// signed by a key published in etcd — and never for another tenant,
// whatever the request or the x-cellplane-tenant metadata name, and
// never for a key narrower than the default scopes. A router without an
// internal identity mints nothing.
func TestLookupMintsForTheCallerOnly(t *testing.T) {
	p := newPlatform(t, &cpv1.CreateTenantRequest{Id: "acme"}, &cpv1.CreateTenantRequest{Id: "globex"})
	d := newCertsDir(t)
	r := p.startRouterWith(t, func(c *router.Config) { c.InternalTLS = d.source(t, pki.RouterIdentity("test", "r1")) })
	ctx := testutil.Context(t, time.Minute)
	lk := routerv1.NewRouterServiceClient(dial(t, r.GRPCAddr()))
	ring := tokenkeys.StartRing(ctx, p.env.Store(t), tokenkeys.RingConfig{})
	defer ring.Close()

	var resp *routerv1.LookupResponse
	testutil.Eventually(t, 20*time.Second, func() (err error) {
		resp, err = lk.Lookup(p.as(ctx, "acme"), &routerv1.LookupRequest{})
		if err == nil && resp.GetToken() == "" {
			err = errors.New("no token yet (no signing key)")
		}
		return err
	})
	var claims tenanttoken.Claims
	testutil.Eventually(t, 10*time.Second, func() (err error) {
		claims, err = tenanttoken.Verify(tenanttoken.DefaultConfig(), ring, resp.GetToken(), "test", time.Now())
		return err
	})
	if claims.Tenant != "acme" || claims.Cell != resp.GetCell() || claims.Epoch != resp.GetEpoch() || claims.Epoch == 0 {
		t.Fatalf("claims %+v for %v", claims, resp)
	}
	if exp := resp.GetTokenExpireTime().AsTime(); !exp.Equal(claims.ExpiresAt()) || time.Until(exp) > tenanttoken.DefaultTTL {
		t.Fatalf("token_expire_time %v, claims expire %v", exp, claims.ExpiresAt())
	}
	// The same request naming acme explicitly is fine.
	if resp, err := lk.Lookup(p.as(ctx, "acme"), &routerv1.LookupRequest{Tenant: "acme"}); err != nil || resp.GetToken() == "" {
		t.Fatalf("Lookup{acme} as acme: %v %v", resp, err)
	}

	// acme's key never gets globex's token.
	resp, err := lk.Lookup(p.as(ctx, "acme"), &routerv1.LookupRequest{Tenant: "globex"})
	wantCode(t, "Lookup{globex} as acme", err, codes.PermissionDenied, cperr.PermissionDenied)
	if resp.GetToken() != "" {
		t.Fatal("a refused Lookup carries a token")
	}
	_, err = lk.Lookup(metadata.AppendToOutgoingContext(p.as(ctx, "acme"), tenantmd.TenantKey, "globex"), &routerv1.LookupRequest{})
	if status := codeOf(err); status != codes.PermissionDenied && status != codes.Unauthenticated {
		t.Fatalf("Lookup as acme with x-cellplane-tenant globex: %v", err)
	}
	_, err = lk.Lookup(ctx, &routerv1.LookupRequest{Tenant: "acme"})
	wantCode(t, "Lookup without credentials", err, codes.Unauthenticated, cperr.Unauthenticated)

	// A key narrower than the default scopes gets no token (a token acts
	// as the tenant; docs/decisions.md): it calls through the router.
	narrow, err := p.env.Client(t).CreateApiKey(ctx, &cpv1.CreateApiKeyRequest{Tenant: "acme", Scopes: []string{"contexts:read"}})
	if err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, func() error {
		resp, err := lk.Lookup(metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+narrow.GetSecret()), &routerv1.LookupRequest{})
		if err != nil {
			return err // the key may not be in the router's table yet
		}
		if resp.GetToken() != "" || resp.GetCell() == "" {
			t.Fatalf("Lookup with a contexts:read key: %v, want a route without a token", resp)
		}
		return nil
	})

	// A router without an internal identity mints nothing.
	plain := routerv1.NewRouterServiceClient(dial(t, p.router.GRPCAddr()))
	if resp, err := plain.Lookup(p.as(ctx, "acme"), &routerv1.LookupRequest{}); err != nil || resp.GetToken() != "" {
		t.Fatalf("Lookup at a router without identity: token %q, %v", resp.GetToken(), err)
	}
}

func codeOf(err error) codes.Code { return status.Code(err) }
