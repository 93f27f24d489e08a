package provider

import (
	"regexp"
	"testing"

	"github.com/hashicorp/terraform-plugin-framework/types"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/cellplane/cellplane/internal/ids"
	cpv1 "github.com/cellplane/cellplane/proto/cellplane/controlplane/v1"
)

// The request ids the provider derives: the same intent always gets the
// same id (a retried or resumed apply), a different intent another one,
// and every id passes the control plane's id rule.
func TestRequestIDs(t *testing.T) {
	base := &cpv1.CreateTenantRequest{Id: "acme", HomeRegion: "us-east", StandbyRegion: "eu-west", Limits: &cpv1.TenantLimits{Rate: 10}}
	idOf := func(f func(*cpv1.CreateTenantRequest)) string {
		r := &cpv1.CreateTenantRequest{Id: "acme", HomeRegion: "us-east", StandbyRegion: "eu-west", Limits: &cpv1.TenantLimits{Rate: 10}}
		f(r)
		return createRequestID(r)
	}
	same := idOf(func(*cpv1.CreateTenantRequest) {})
	if got := createRequestID(base); got != same {
		t.Fatalf("same request: %s then %s", same, got)
	}
	if got := idOf(func(r *cpv1.CreateTenantRequest) { r.RequestId = "whatever" }); got != same {
		t.Fatalf("request_id is not part of its own derivation: %s vs %s", got, same)
	}
	valid := regexp.MustCompile(`^tf-[cm]-[0-9a-f]{40}$`)
	seen := map[string]string{"same": same}
	for name, id := range map[string]string{
		"other tenant":     idOf(func(r *cpv1.CreateTenantRequest) { r.Id = "acme2" }),
		"other home":       idOf(func(r *cpv1.CreateTenantRequest) { r.HomeRegion = "eu-west"; r.StandbyRegion = "us-east" }),
		"no standby":       idOf(func(r *cpv1.CreateTenantRequest) { r.StandbyRegion = "" }),
		"other limits":     idOf(func(r *cpv1.CreateTenantRequest) { r.Limits.MaxBytes = 1 << 20 }),
		"placed on a cell": idOf(func(r *cpv1.CreateTenantRequest) { r.Cell = "us-east-a" }),
		"protected":        idOf(func(r *cpv1.CreateTenantRequest) { r.DeletionProtection = true }),
		"move":             moveRequestID("acme", "us-east-b", "us-east-a", 1),
		"move back":        moveRequestID("acme", "us-east-a", "us-east-b", 2),
		"move again":       moveRequestID("acme", "us-east-b", "us-east-a", 3),
		"move elsewhere":   moveRequestID("acme", "us-east-c", "us-east-a", 1),
	} {
		for other, oid := range seen {
			if oid == id {
				t.Fatalf("%s and %s share request id %s", name, other, id)
			}
		}
		seen[name] = id
	}
	for name, id := range seen {
		if !valid.MatchString(id) {
			t.Fatalf("%s: request id %q", name, id)
		}
		if err := ids.Check("request_id", id, ids.MaxLen); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
	}
	// Pinned: an apply resumed by another build of the provider must send
	// the same id. deletion_protection is part of the request (the
	// control plane's request hash covers it, so a protected and an
	// unprotected create are different requests); an unprotected create
	// keeps the id it had before the provider sent the field (proto3
	// omits a false bool).
	for _, g := range []struct {
		protect bool
		want    string
	}{{false, "tf-c-355c6a0338d5dc4bc1f229b86d6103a60783fb7b"}, {true, "tf-c-f28f34d18dfeaa5c0a2ce2c4bd55db23df9c911a"}} {
		if got := idOf(func(r *cpv1.CreateTenantRequest) { r.DeletionProtection = g.protect }); got != g.want {
			t.Fatalf("create request id (deletion_protection %v) = %s, want %s", g.protect, got, g.want)
		}
	}
	if a, b := moveRequestID("acme", "b", "a", 1), moveRequestID("acme", "b", "a", 1); a != b {
		t.Fatalf("an interrupted move (same placement) gets another id: %s, %s", a, b)
	}
}

// The placement drift rule: refresh keeps placement_cell (what Terraform
// asked for) whatever cell serves the tenant now, so a move or failover
// outside Terraform gives no diff.
func TestPlacementCellDrift(t *testing.T) {
	prior := tenantModel{ID: types.StringValue("acme"), PlacementCell: types.StringValue("us-east-a"), DeletionProtection: types.BoolValue(true)}
	for _, tc := range []struct{ name, cell, standby, owner string }{
		{"where asked", "us-east-a", "", "us-east"},
		{"moved by an operator", "us-east-b", "", "us-east"},
		{"switched over", "eu-west-a", "us-east-a", "eu-west"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := tenantView{t: &cpv1.Tenant{Id: "acme", HomeRegion: "us-east", Cell: tc.cell, StandbyCell: tc.standby, CreateTime: timestamppb.Now()},
				ownerRegion: tc.owner}
			if got := v.toModel(prior).PlacementCell; !got.Equal(prior.PlacementCell) {
				t.Fatalf("placement_cell read as %s, want %s (the asked placement)", got, prior.PlacementCell)
			}
		})
	}
	none := prior
	none.PlacementCell = types.StringNull()
	v := tenantView{t: &cpv1.Tenant{Id: "acme", HomeRegion: "us-east", Cell: "us-east-a", CreateTime: timestamppb.Now()}, ownerRegion: "us-east"}
	if got := v.toModel(none).PlacementCell; !got.IsNull() {
		t.Fatalf("unmanaged placement read as %s, want null (import, or not asked)", got)
	}
}

// The deletion_protection drift rule: refresh reads the control plane's
// value whatever the prior state says (an operator's cellctl change is
// drift; an import takes the server's value).
func TestDeletionProtectionRead(t *testing.T) {
	for _, tc := range []struct {
		name   string
		prior  types.Bool
		server bool
	}{
		{"turned off outside Terraform", types.BoolValue(true), false},
		{"turned on outside Terraform", types.BoolValue(false), true},
		{"import of an unprotected tenant", types.BoolNull(), false},
		{"import of a protected tenant", types.BoolNull(), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			prior := tenantModel{ID: types.StringValue("acme"), DeletionProtection: tc.prior}
			v := tenantView{t: &cpv1.Tenant{Id: "acme", HomeRegion: "us-east", DeletionProtection: tc.server, CreateTime: timestamppb.Now()}}
			if got := v.toModel(prior).DeletionProtection; !got.Equal(types.BoolValue(tc.server)) {
				t.Fatalf("deletion_protection read as %s, want the server's %v", got, tc.server)
			}
		})
	}
}
