package api

import (
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/cellplane/cellplane/controlplane/catalog"
	"github.com/cellplane/cellplane/internal/cperr"
	"github.com/cellplane/cellplane/internal/testutil"
	cpv1 "github.com/cellplane/cellplane/proto/cellplane/controlplane/v1"
)

func TestRevokeToken(t *testing.T) {
	s, st := newServer(t)
	putTenants(t, st, 1, func(int) string { return "c1" })
	ctx := testutil.Context(t, 10*time.Second)
	hour := timestamppb.New(time.Now().Add(time.Hour))
	for _, tc := range []struct {
		name string
		req  *cpv1.RevokeTokenRequest
		want cperr.Reason
	}{
		{"subject", &cpv1.RevokeTokenRequest{Tenant: "t0000", Subject: "alice/with slash", ExpireTime: hour}, ""},
		{"jti", &cpv1.RevokeTokenRequest{Tenant: "t0000", Jti: "tok-1", ExpireTime: hour, Reason: "leaked"}, ""},
		{"again replaces", &cpv1.RevokeTokenRequest{Tenant: "t0000", Jti: "tok-1", ExpireTime: hour}, ""},
		{"neither", &cpv1.RevokeTokenRequest{Tenant: "t0000", ExpireTime: hour}, cperr.InvalidArgument},
		{"both", &cpv1.RevokeTokenRequest{Tenant: "t0000", Subject: "a", Jti: "b", ExpireTime: hour}, cperr.InvalidArgument},
		{"no expiry", &cpv1.RevokeTokenRequest{Tenant: "t0000", Subject: "a"}, cperr.InvalidArgument},
		{"expired", &cpv1.RevokeTokenRequest{Tenant: "t0000", Subject: "a", ExpireTime: timestamppb.New(time.Now().Add(-time.Second))}, cperr.InvalidArgument},
		{"too far", &cpv1.RevokeTokenRequest{Tenant: "t0000", Subject: "a", ExpireTime: timestamppb.New(time.Now().Add(2 * maxTokenRevocation))}, cperr.InvalidArgument},
		{"huge subject", &cpv1.RevokeTokenRequest{Tenant: "t0000", Subject: strings.Repeat("a", maxTokenClaimLen+1), ExpireTime: hour}, cperr.InvalidArgument},
		{"bad tenant id", &cpv1.RevokeTokenRequest{Tenant: "no/pe", Subject: "a", ExpireTime: hour}, cperr.InvalidArgument},
		{"unknown tenant", &cpv1.RevokeTokenRequest{Tenant: "nobody", Subject: "a", ExpireTime: hour}, cperr.TenantNotFound},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := s.RevokeToken(ctx, tc.req)
			if got := cperr.ReasonOf(err); got != tc.want {
				t.Fatalf("RevokeToken = %v, want %q", err, tc.want)
			}
			if err == nil && (resp.GetRevoked().GetRevokeTime() == nil || resp.GetRevoked().GetTenant() != "t0000") {
				t.Fatalf("response %v", resp)
			}
		})
	}
	recs, _, err := catalog.ListRevokedTokens(ctx, st, "t0000")
	if err != nil || len(recs) != 2 {
		t.Fatalf("revocation list: %d entries, %v; want 2 (a subject and a jti)", len(recs), err)
	}
	// The entries are sub-records of the tenant, never tenants.
	if resp, err := s.ListTenants(ctx, &cpv1.ListTenantsRequest{}); err != nil || len(resp.GetTenants()) != 1 {
		t.Fatalf("ListTenants with a revocation list: %v, %v", resp, err)
	}
}
