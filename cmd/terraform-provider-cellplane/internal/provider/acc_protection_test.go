package provider

import (
	"errors"
	"fmt"
	"regexp"
	"testing"

	"github.com/hashicorp/terraform-plugin-framework-timeouts/resource/timeouts"
	"github.com/hashicorp/terraform-plugin-framework/attr"
	"github.com/hashicorp/terraform-plugin-framework/diag"
	"github.com/hashicorp/terraform-plugin-framework/path"
	fwresource "github.com/hashicorp/terraform-plugin-framework/resource"
	"github.com/hashicorp/terraform-plugin-framework/tfsdk"
	"github.com/hashicorp/terraform-plugin-framework/types"
	"github.com/hashicorp/terraform-plugin-testing/helper/resource"
	"github.com/hashicorp/terraform-plugin-testing/plancheck"
	"github.com/hashicorp/terraform-plugin-testing/terraform"

	"github.com/cellplane/cellplane/internal/cperr"
	"github.com/cellplane/cellplane/internal/rpcerr"
	"github.com/cellplane/cellplane/platform"
	cpv1 "github.com/cellplane/cellplane/proto/cellplane/controlplane/v1"
)

// The tenant's deletion_protection is the control plane's: sent at
// create, changed in place (UpdateTenant), read back on refresh.

// protectedTenantConfig is a tenant without standby (quick to create)
// and with protection set to protection ("": the default).
func protectedTenantConfig(p *platform.Platform, id, protection string) string {
	return providerBlock(p) + fmt.Sprintf(`
resource "cellplane_tenant" "t" {
  id          = %q
  home_region = "us-east"
  %s
}
`, id, protection)
}

// checkServerProtection checks the control plane's deletion protection
// of tenant id.
func checkServerProtection(t *testing.T, p *platform.Platform, id string, want bool) resource.TestCheckFunc {
	return func(*terraform.State) error {
		out, err := p.Admin().GetTenant(ctxFor(t), &cpv1.GetTenantRequest{Id: id})
		if err != nil {
			return fmt.Errorf("GetTenant(%s): %w", id, err)
		}
		if got := out.GetTenant().GetDeletionProtection(); got != want {
			return fmt.Errorf("tenant %s: the control plane's deletion_protection is %v, want %v", id, got, want)
		}
		return nil
	}
}

// operatorProtect turns tenant id's protection on or off outside
// Terraform, as `cellctl tenant update --deletion-protection` does.
func operatorProtect(t *testing.T, p *platform.Platform, id string, on bool) {
	t.Helper()
	if _, err := p.Admin().UpdateTenant(ctxFor(t), &cpv1.UpdateTenantRequest{Id: id, DeletionProtection: &on}); err != nil {
		t.Fatalf("turn tenant %s's protection %v: %v", id, on, err)
	}
}

// checkTenantGone is a CheckDestroy: tenant id no longer exists.
func checkTenantGone(t *testing.T, p *platform.Platform, id string) resource.TestCheckFunc {
	return func(*terraform.State) error {
		_, err := p.Admin().GetTenant(ctxFor(t), &cpv1.GetTenantRequest{Id: id})
		if !errors.Is(rpcerr.FromStatus(err), cperr.ErrTenantNotFound) {
			return fmt.Errorf("after destroy, GetTenant(%s): %v, want TENANT_NOT_FOUND", id, err)
		}
		return nil
	}
}

// TestAccTenantProtection: a create (protection by default) protects the
// tenant at the control plane; deletion_protection = false and apply
// turns it off there (UpdateTenant); the destroy that follows deletes
// the tenant.
func TestAccTenantProtection(t *testing.T) {
	needTerraform(t)
	p := testPlatform(t)
	const id = "tf-prot"
	resource.UnitTest(t, resource.TestCase{
		ProtoV6ProviderFactories: factories,
		CheckDestroy:             checkTenantGone(t, p, id),
		Steps: []resource.TestStep{
			{
				Config: protectedTenantConfig(p, id, ""),
				Check: resource.ComposeAggregateTestCheckFunc(
					resource.TestCheckResourceAttr("cellplane_tenant.t", "deletion_protection", "true"),
					checkServerProtection(t, p, id, true),
				),
			},
			{
				Config: protectedTenantConfig(p, id, "deletion_protection = false"),
				ConfigPlanChecks: resource.ConfigPlanChecks{
					PreApply: []plancheck.PlanCheck{plancheck.ExpectResourceAction("cellplane_tenant.t", plancheck.ResourceActionUpdate)},
				},
				Check: resource.ComposeAggregateTestCheckFunc(
					resource.TestCheckResourceAttr("cellplane_tenant.t", "deletion_protection", "false"),
					checkServerProtection(t, p, id, false),
				),
			},
			{
				Config: protectedTenantConfig(p, id, "deletion_protection = true"),
				Check:  checkServerProtection(t, p, id, true),
			},
			{
				Config: protectedTenantConfig(p, id, "deletion_protection = false"),
				Check:  checkServerProtection(t, p, id, false),
			},
		},
	})
}

// TestAccTenantProtectionDrift: protection turned off, then on, by an
// operator outside Terraform is drift: the plan updates it back to the
// configuration's value, and the apply does.
func TestAccTenantProtectionDrift(t *testing.T) {
	needTerraform(t)
	p := testPlatform(t)
	const id = "tf-prot-drift"
	update := resource.ConfigPlanChecks{
		PreApply: []plancheck.PlanCheck{plancheck.ExpectResourceAction("cellplane_tenant.t", plancheck.ResourceActionUpdate)},
	}
	resource.UnitTest(t, resource.TestCase{
		ProtoV6ProviderFactories: factories,
		CheckDestroy:             checkTenantGone(t, p, id),
		Steps: []resource.TestStep{
			{
				Config: protectedTenantConfig(p, id, "deletion_protection = true"),
				Check:  checkServerProtection(t, p, id, true),
			},
			{
				// Turned off outside Terraform: the plan shows it.
				PreConfig:          func() { operatorProtect(t, p, id, false) },
				Config:             protectedTenantConfig(p, id, "deletion_protection = true"),
				PlanOnly:           true,
				ExpectNonEmptyPlan: true,
			},
			{
				Config:           protectedTenantConfig(p, id, "deletion_protection = true"),
				ConfigPlanChecks: update,
				Check: resource.ComposeAggregateTestCheckFunc(
					resource.TestCheckResourceAttr("cellplane_tenant.t", "deletion_protection", "true"),
					checkServerProtection(t, p, id, true),
				),
			},
			{
				Config: protectedTenantConfig(p, id, "deletion_protection = false"),
				Check:  checkServerProtection(t, p, id, false),
			},
			{
				// Turned on outside Terraform: the plan turns it off
				// again (and the destroy after it works).
				PreConfig:        func() { operatorProtect(t, p, id, true) },
				Config:           protectedTenantConfig(p, id, "deletion_protection = false"),
				ConfigPlanChecks: update,
				Check: resource.ComposeAggregateTestCheckFunc(
					resource.TestCheckResourceAttr("cellplane_tenant.t", "deletion_protection", "false"),
					checkServerProtection(t, p, id, false),
				),
			},
		},
	})
}

// TestAccTenantProtectionServerRefusal: a destroy planned from a state
// that says unprotected (no refresh: as when an operator turns
// protection on after Terraform read the tenant) reaches the control
// plane, which refuses it: DELETION_PROTECTED, on deletion_protection,
// and nothing is destroyed.
func TestAccTenantProtectionServerRefusal(t *testing.T) {
	needTerraform(t)
	p := testPlatform(t)
	const id = "tf-prot-late"
	cfg := protectedTenantConfig(p, id, "deletion_protection = false")
	resource.UnitTest(t, resource.TestCase{
		ProtoV6ProviderFactories: factories,
		// Every plan (and the final destroy) without refresh: the state
		// is what Terraform read last.
		AdditionalCLIOptions: &resource.AdditionalCLIOptions{Plan: resource.PlanOptions{NoRefresh: true}},
		CheckDestroy:         checkTenantGone(t, p, id),
		Steps: []resource.TestStep{
			{
				Config: cfg,
				Check:  checkServerProtection(t, p, id, false),
			},
			{
				PreConfig:   func() { operatorProtect(t, p, id, true) },
				Config:      cfg,
				Destroy:     true,
				ExpectError: regexp.MustCompile(`(?s)Error: Tenant is protected from deletion.*DELETION_PROTECTED`),
			},
			{
				PreConfig: func() {
					// Terraform prints no attribute for a destroy's
					// diagnostic: the resource's Delete itself, from the
					// same unprotected state, says deletion_protection.
					deleteOnAttribute(t, id)
					out, err := p.Admin().GetTenant(ctxFor(t), &cpv1.GetTenantRequest{Id: id})
					if err != nil || out.GetTenant().GetState() != cpv1.TenantState_TENANT_STATE_ACTIVE {
						t.Fatalf("after the refused destroy: %v, %v; want the tenant ACTIVE", out.GetTenant(), err)
					}
					operatorProtect(t, p, id, false) // so that the harness's destroy can run
				},
				Config: cfg,
			},
		},
	})
}

// TestAccTenantProtectionImport: a tenant created by cellctl without
// protection, imported into a configuration that protects it: the one
// apply (import and update) turns protection on at the control plane,
// and the next plan is empty.
func TestAccTenantProtectionImport(t *testing.T) {
	needTerraform(t)
	p := testPlatform(t)
	const id = "tf-prot-import"
	if _, err := p.Admin().CreateTenant(ctxFor(t), &cpv1.CreateTenantRequest{Id: id, HomeRegion: "us-east"}); err != nil {
		t.Fatalf("create tenant %s (as cellctl tenant create does): %v", id, err)
	}
	imp := fmt.Sprintf("import {\n  to = cellplane_tenant.t\n  id = %q\n}\n", id)
	resource.UnitTest(t, resource.TestCase{
		ProtoV6ProviderFactories: factories,
		CheckDestroy:             checkTenantGone(t, p, id),
		Steps: []resource.TestStep{
			{
				Config: imp + protectedTenantConfig(p, id, "deletion_protection = true"),
				ConfigPlanChecks: resource.ConfigPlanChecks{
					PreApply: []plancheck.PlanCheck{plancheck.ExpectResourceAction("cellplane_tenant.t", plancheck.ResourceActionUpdate)},
					// The harness also fails a non-empty plan after the apply.
					PostApplyPostRefresh: []plancheck.PlanCheck{plancheck.ExpectEmptyPlan()},
				},
				Check: resource.ComposeAggregateTestCheckFunc(
					resource.TestCheckResourceAttr("cellplane_tenant.t", "deletion_protection", "true"),
					checkServerProtection(t, p, id, true),
				),
			},
			{
				Config:           protectedTenantConfig(p, id, "deletion_protection = true"),
				ConfigPlanChecks: resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{plancheck.ExpectEmptyPlan()}},
			},
			{
				Config: protectedTenantConfig(p, id, "deletion_protection = false"),
				Check:  checkServerProtection(t, p, id, false),
			},
		},
	})
}

// deleteOnAttribute runs the tenant resource's Delete on a state that
// says tenant id is unprotected while the control plane says protected:
// one error, DELETION_PROTECTED, on deletion_protection.
func deleteOnAttribute(t *testing.T, id string) {
	t.Helper()
	ctx := ctxFor(t)
	r := &tenantResource{c: testClient(t)}
	var sr fwresource.SchemaResponse
	r.Schema(ctx, fwresource.SchemaRequest{}, &sr)
	st := tfsdk.State{Schema: sr.Schema}
	m := tenantModel{ID: types.StringValue(id), HomeRegion: types.StringValue("us-east"), StandbyRegion: types.StringNull(),
		PlacementCell: types.StringNull(), Limits: types.ObjectNull(limitsAttrTypes), DeletionProtection: types.BoolValue(false),
		CreateTime: types.StringNull(), Timeouts: timeouts.Value{Object: types.ObjectNull(timeoutsAttrTypes(sr))}}
	if d := st.Set(ctx, m); d.HasError() {
		t.Fatalf("state: %v", d)
	}
	var resp fwresource.DeleteResponse
	r.Delete(ctx, fwresource.DeleteRequest{State: st}, &resp)
	errs := resp.Diagnostics.Errors()
	if len(errs) != 1 {
		t.Fatalf("Delete of protected tenant %s: %v, want one error", id, resp.Diagnostics)
	}
	dp, ok := errs[0].(diag.DiagnosticWithPath)
	if !ok || !dp.Path().Equal(path.Root("deletion_protection")) || !regexp.MustCompile(`DELETION_PROTECTED`).MatchString(errs[0].Detail()) {
		t.Fatalf("Delete of protected tenant %s: %q (%T), want DELETION_PROTECTED on deletion_protection", id, errs[0].Detail(), errs[0])
	}
}

// timeoutsAttrTypes are the attribute types of the tenant's timeouts.
func timeoutsAttrTypes(sr fwresource.SchemaResponse) map[string]attr.Type {
	return sr.Schema.Attributes["timeouts"].GetType().(timeouts.Type).AttrTypes
}
