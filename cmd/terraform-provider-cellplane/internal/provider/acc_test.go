package provider

import (
	"errors"
	"fmt"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/hashicorp/terraform-plugin-testing/helper/resource"
	"github.com/hashicorp/terraform-plugin-testing/plancheck"
	"github.com/hashicorp/terraform-plugin-testing/terraform"

	goclient "github.com/cellplane/cellplane/client"
	"github.com/cellplane/cellplane/internal/cperr"
	"github.com/cellplane/cellplane/internal/pki"
	"github.com/cellplane/cellplane/internal/rpcerr"
	"github.com/cellplane/cellplane/internal/testutil"
	cpv1 "github.com/cellplane/cellplane/proto/cellplane/controlplane/v1"
)

// TestAccRegion: create a region (with the data sources beside it), an
// empty plan after apply, import by name, a description change refused
// at plan time (no UpdateRegion yet), a rename refused at plan time, and
// a destroy refused at plan time (no DeleteRegion yet); the test leaves
// the region with a removed block (forget, do not destroy).
func TestAccRegion(t *testing.T) {
	needTerraform(t)
	p := testPlatform(t)
	cfg := func(desc string) string {
		return providerBlock(p) + fmt.Sprintf(`
resource "cellplane_region" "r" {
  name        = "tf-region"
  description = %q
}
data "cellplane_cells" "east" {
  region = "us-east"
}
data "cellplane_regions" "all" {
  depends_on = [cellplane_region.r]
}
data "cellplane_status" "s" {}
`, desc)
	}
	resource.UnitTest(t, resource.TestCase{
		ProtoV6ProviderFactories: factories,
		Steps: []resource.TestStep{
			{
				Config: cfg("made by terraform"),
				Check: resource.ComposeAggregateTestCheckFunc(
					resource.TestCheckResourceAttr("cellplane_region.r", "name", "tf-region"),
					resource.TestCheckResourceAttr("cellplane_region.r", "description", "made by terraform"),
					resource.TestCheckResourceAttrSet("cellplane_region.r", "create_time"),
					// The platform is shared with the other tests (some add
					// regions and cells): the expected entries are there,
					// whatever else is, and the region filter holds.
					resource.TestCheckTypeSetElemNestedAttrs("data.cellplane_cells.east", "cells.*", map[string]string{"id": "us-east-a", "state": "ACTIVE"}),
					checkAllListed("data.cellplane_cells.east", "cells", "region", "us-east"),
					resource.TestCheckTypeSetElemNestedAttrs("data.cellplane_regions.all", "regions.*", map[string]string{"name": "tf-region", "description": "made by terraform"}),
					resource.TestCheckTypeSetElemNestedAttrs("data.cellplane_regions.all", "regions.*", map[string]string{"name": "us-east"}),
					resource.TestCheckTypeSetElemNestedAttrs("data.cellplane_regions.all", "regions.*", map[string]string{"name": "eu-west"}),
					resource.TestCheckTypeSetElemNestedAttrs("data.cellplane_status.s", "cells.*", map[string]string{"id": "us-east-a"}),
					resource.TestCheckTypeSetElemNestedAttrs("data.cellplane_status.s", "cells.*", map[string]string{"id": "eu-west-a"}),
				),
			},
			{
				ResourceName:                         "cellplane_region.r",
				ImportState:                          true,
				ImportStateId:                        "tf-region",
				ImportStateVerify:                    true,
				ImportStateVerifyIdentifierAttribute: "name",
			},
			{
				// UpdateRegion in place.
				Config: cfg("changed"),
				Check:  resource.TestCheckResourceAttr("cellplane_region.r", "description", "changed"),
			},
			{
				Config:      regexp.MustCompile(`"tf-region"`).ReplaceAllString(cfg("changed"), `"tf-region2"`),
				ExpectError: regexp.MustCompile(`Cannot change an immutable attribute`),
				PlanOnly:    true,
			},
			{
				// Forgotten, not deleted: a removed block.
				Config: providerBlock(p) + `
removed {
  from = cellplane_region.r
  lifecycle {
    destroy = false
  }
}
`,
			},
		},
	})
	rg, err := findRegion(ctxFor(t), testClient(t), "tf-region")
	if err != nil || rg == nil || rg.GetDescription() != "changed" {
		t.Fatalf("region tf-region after removed: %v, %v; want it kept, with the new description", rg, err)
	}

	// Imported again and destroyed: DeleteRegion (the region is empty).
	resource.UnitTest(t, resource.TestCase{
		ProtoV6ProviderFactories: factories,
		Steps: []resource.TestStep{
			{
				Config: providerBlock(p) + `
import {
  to = cellplane_region.r
  id = "tf-region"
}
resource "cellplane_region" "r" {
  name        = "tf-region"
  description = "changed"
}
`,
			},
		},
		CheckDestroy: func(*terraform.State) error {
			rg, err := findRegion(ctxFor(t), testClient(t), "tf-region")
			if err != nil {
				return err
			}
			if rg != nil {
				return fmt.Errorf("region tf-region still there after destroy")
			}
			return nil
		},
	})
}

// checkAllListed checks that every element of list attribute list of
// resource name has attribute attr equal to want (a data source's
// filter), and that there is at least one.
func checkAllListed(name, list, attr, want string) resource.TestCheckFunc {
	return func(s *terraform.State) error {
		rs, ok := s.RootModule().Resources[name]
		if !ok {
			return fmt.Errorf("%s: not in state", name)
		}
		n, err := strconv.Atoi(rs.Primary.Attributes[list+".#"])
		if err != nil || n == 0 {
			return fmt.Errorf("%s: %s.# = %q, want at least one", name, list, rs.Primary.Attributes[list+".#"])
		}
		for i := range n {
			if got := rs.Primary.Attributes[fmt.Sprintf("%s.%d.%s", list, i, attr)]; got != want {
				return fmt.Errorf("%s: %s.%d.%s = %q, want %q", name, list, i, attr, got, want)
			}
		}
		return nil
	}
}

// TestAccRegionNotEmpty: destroying a region that still has cells is
// refused by the control plane (REGION_NOT_EMPTY) and the region stays.
func TestAccRegionNotEmpty(t *testing.T) {
	needTerraform(t)
	p := testPlatform(t)
	resource.UnitTest(t, resource.TestCase{
		ProtoV6ProviderFactories: factories,
		Steps: []resource.TestStep{
			{
				Config: providerBlock(p) + `
import {
  to = cellplane_region.east
  id = "us-east"
}
resource "cellplane_region" "east" {
  name = "us-east"
}
`,
			},
			{
				Config:      providerBlock(p),
				ExpectError: regexp.MustCompile(`(?s)Cannot destroy the region.*still has`),
			},
			{
				Config: providerBlock(p) + `
removed {
  from = cellplane_region.east
  lifecycle {
    destroy = false
  }
}
`,
			},
		},
	})
	// Still there: the refused destroy deleted nothing.
	rg, err := findRegion(ctxFor(t), testClient(t), "us-east")
	if err != nil || rg == nil {
		t.Fatalf("region us-east after the test: %v, %v", rg, err)
	}
}

// TestAccTenant: a tenant with its DR region, created ACTIVE with its
// standby STREAMING; an empty plan after apply and after a switchover
// through the admin API (the data source shows the move); import; an
// immutable change refused at plan; a destroy refused at plan time while
// protected (at the control plane too: Tenant.deletion_protection; and
// the tenant still there); protection off (UpdateTenant), then the
// harness's destroy, which waits until the tenant is gone. The standby
// removed outside Terraform (as by an emergency promotion) plans a
// re-protection, and a destroy refused at plan time revoked no key.
func TestAccTenant(t *testing.T) {
	needTerraform(t)
	p := testPlatform(t)
	const id = "tf-acme"
	cfg := func(home, protection string) string {
		return providerBlock(p) + fmt.Sprintf(`
resource "cellplane_tenant" "t" {
  id             = %q
  home_region    = %q
  standby_region = "eu-west"
  placement_cell = "us-east-a"
  %s
  timeouts = {
    create = "2m"
  }
}
data "cellplane_tenant" "t" {
  id = cellplane_tenant.t.id
}
resource "cellplane_api_key" "k" {
  tenant = cellplane_tenant.t.id
}
`, id, home, protection)
	}
	resource.UnitTest(t, resource.TestCase{
		ProtoV6ProviderFactories: factories,
		CheckDestroy: func(*terraform.State) error {
			_, err := p.Admin().GetTenant(ctxFor(t), &cpv1.GetTenantRequest{Id: id})
			if !errors.Is(rpcerr.FromStatus(err), cperr.ErrTenantNotFound) {
				return fmt.Errorf("after destroy, GetTenant(%s): %v, want TENANT_NOT_FOUND", id, err)
			}
			return nil
		},
		Steps: []resource.TestStep{
			{
				Config: cfg("us-east", ""),
				Check: resource.ComposeAggregateTestCheckFunc(
					resource.TestCheckResourceAttr("cellplane_tenant.t", "deletion_protection", "true"),
					checkServerProtection(t, p, id, true), // the control plane's, not only the state's
					resource.TestCheckResourceAttr("cellplane_tenant.t", "standby_region", "eu-west"),
					resource.TestCheckResourceAttr("cellplane_tenant.t", "limits.rate", "0"),
					resource.TestCheckResourceAttr("data.cellplane_tenant.t", "state", "ACTIVE"),
					resource.TestCheckResourceAttr("data.cellplane_tenant.t", "cell", "us-east-a"),
					resource.TestCheckResourceAttr("data.cellplane_tenant.t", "standby_cell", "eu-west-a"),
					resource.TestCheckResourceAttr("data.cellplane_tenant.t", "replication_state", replicationStreaming),
				),
			},
			{
				ResourceName:      "cellplane_tenant.t",
				ImportState:       true,
				ImportStateId:     id,
				ImportStateVerify: true,
				// placement_cell is what the configuration asked for, not
				// read back: null after an import.
				ImportStateVerifyIgnore: []string{"timeouts", "placement_cell"},
			},
			{
				// A switchover outside Terraform: not drift.
				PreConfig: func() { switchover(t, p.Admin(), id) },
				Config:    cfg("us-east", ""),
				ConfigPlanChecks: resource.ConfigPlanChecks{
					PreApply: []plancheck.PlanCheck{plancheck.ExpectEmptyPlan()},
				},
				Check: resource.ComposeAggregateTestCheckFunc(
					resource.TestCheckResourceAttr("cellplane_tenant.t", "standby_region", "eu-west"),
					resource.TestCheckResourceAttr("cellplane_tenant.t", "placement_cell", "us-east-a"),
					resource.TestCheckResourceAttr("data.cellplane_tenant.t", "cell", "eu-west-a"),
					resource.TestCheckResourceAttr("data.cellplane_tenant.t", "failed_over", "true"),
					resource.TestCheckResourceAttr("data.cellplane_tenant.t", "epoch", "2"),
				),
			},
			{
				// The standby lost outside Terraform (as after an emergency
				// promotion): the plan re-protects, in the pair's region
				// that is not the owner's (home, now).
				PreConfig: func() {
					if _, err := p.Admin().ClearStandby(ctxFor(t), &cpv1.ClearStandbyRequest{Tenant: id}); err != nil {
						t.Fatalf("clear the standby: %v", err)
					}
				},
				Config: cfg("us-east", ""),
				ConfigPlanChecks: resource.ConfigPlanChecks{
					PreApply: []plancheck.PlanCheck{plancheck.ExpectResourceAction("cellplane_tenant.t", plancheck.ResourceActionUpdate)},
				},
				Check: resource.ComposeAggregateTestCheckFunc(
					resource.TestCheckResourceAttr("cellplane_tenant.t", "standby_region", "eu-west"),
					resource.TestCheckResourceAttr("data.cellplane_tenant.t", "cell", "eu-west-a"),
					resource.TestCheckResourceAttr("data.cellplane_tenant.t", "standby_cell", "us-east-a"),
				),
			},
			{
				Config:      cfg("eu-west", ""),
				ExpectError: regexp.MustCompile(`Cannot change an immutable attribute`),
				PlanOnly:    true,
			},
			{
				Config:      cfg("us-east", ""),
				Destroy:     true,
				ExpectError: regexp.MustCompile(`Tenant is protected from deletion`),
			},
			{
				PreConfig: func() {
					// Refused at plan time: nothing was destroyed, not
					// even the key that a destroy removes first.
					if _, err := p.Admin().GetTenant(ctxFor(t), &cpv1.GetTenantRequest{Id: id}); err != nil {
						t.Fatalf("after the refused destroy: %v", err)
					}
					ks, err := p.Admin().ListApiKeys(ctxFor(t), &cpv1.ListApiKeysRequest{Tenant: id})
					if err != nil || len(ks.GetKeys()) != 1 || ks.GetKeys()[0].GetRevokeTime() != nil {
						t.Fatalf("after the refused destroy: keys %v, %v; want the one key, not revoked", ks.GetKeys(), err)
					}
				},
				Config: cfg("us-east", "deletion_protection = false"),
				Check: resource.ComposeAggregateTestCheckFunc(
					resource.TestCheckResourceAttr("cellplane_tenant.t", "deletion_protection", "false"),
					checkServerProtection(t, p, id, false), // UpdateTenant: the destroy below is not refused
				),
			},
		},
	})
}

// TestAccAPIKey: a tenant without standby and its key: the secret is in
// the state, import by <tenant>/<key_id>, destroy revokes the key and
// deletes the tenant.
func TestAccAPIKey(t *testing.T) {
	needTerraform(t)
	p := testPlatform(t)
	cfg := providerBlock(p) + `
resource "cellplane_tenant" "t" {
  id                  = "tf-keys"
  home_region         = "eu-west"
  deletion_protection = false
}
resource "cellplane_api_key" "k" {
  tenant      = cellplane_tenant.t.id
  description = "agents"
}
`
	var keyID string
	resource.UnitTest(t, resource.TestCase{
		ProtoV6ProviderFactories: factories,
		Steps: []resource.TestStep{
			{
				Config: cfg,
				Check: resource.ComposeAggregateTestCheckFunc(
					resource.TestMatchResourceAttr("cellplane_api_key.k", "secret", regexp.MustCompile(`^cpk_`)),
					resource.TestCheckResourceAttr("cellplane_api_key.k", "tenant", "tf-keys"),
					func(s *terraform.State) error {
						keyID = s.RootModule().Resources["cellplane_api_key.k"].Primary.Attributes["key_id"]
						return nil
					},
				),
			},
			{
				ResourceName:            "cellplane_api_key.k",
				ImportState:             true,
				ImportStateIdFunc:       func(*terraform.State) (string, error) { return "tf-keys/" + keyID, nil },
				ImportStateVerify:       true,
				ImportStateVerifyIgnore: []string{"secret"},
			},
		},
	})
	ks, err := p.Admin().ListApiKeys(ctxFor(t), &cpv1.ListApiKeysRequest{Tenant: "tf-keys"})
	if !errors.Is(rpcerr.FromStatus(err), cperr.ErrTenantNotFound) {
		t.Fatalf("after destroy: keys %v, %v; want the tenant gone", ks, err)
	}
}

// switchover runs a planned switchover of tenant through the admin API
// and waits until it is DONE.
func switchover(t *testing.T, cl cpv1.ControlPlaneServiceClient, tenant string) {
	t.Helper()
	ctx := ctxFor(t)
	resp, err := cl.Failover(ctx, &cpv1.FailoverRequest{Tenant: tenant, Kind: cpv1.FailoverKind_FAILOVER_KIND_SWITCHOVER})
	if err != nil {
		t.Fatalf("switchover: %v", err)
	}
	id := resp.GetFailovers()[0].GetId()
	testutil.Eventually(t, 60*time.Second, func() error {
		out, err := cl.GetFailover(ctx, &cpv1.GetFailoverRequest{Id: id})
		if err != nil {
			return err
		}
		if s := out.GetFailover().GetState(); s != cpv1.FailoverState_FAILOVER_STATE_DONE {
			return fmt.Errorf("failover %s is %s", id, s)
		}
		return nil
	})
}

// TestAccReadOnlyOperator: the provider configured with explicit TLS
// settings and a read-only operator's certificate reads (data sources)
// but is refused a create, with the control plane's reason, and nothing
// is written.
func TestAccReadOnlyOperator(t *testing.T) {
	needTerraform(t)
	p := testPlatform(t)
	ca, err := pki.LoadCA(p.CertsDir())
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := ca.Issue(pki.LeafRequest{Identity: pki.OperatorIdentity(ca.Cluster(), pki.RoleReadOnly, "viewer")})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := pki.WriteLeaf(dir, "operator.viewer", leaf, false); err != nil {
		t.Fatal(err)
	}
	t.Setenv(goclient.EnvConfigFile, "") // only the block's settings
	block := fmt.Sprintf(`
provider "cellplane" {
  endpoint      = %q
  tls_ca_file   = %q
  tls_cert_file = %q
  tls_key_file  = %q
}
data "cellplane_regions" "all" {}
`, p.ControlPlaneAddr(), filepath.Join(p.CertsDir(), pki.CACertFile), filepath.Join(dir, "operator.viewer.crt"), filepath.Join(dir, "operator.viewer.key"))
	resource.UnitTest(t, resource.TestCase{
		ProtoV6ProviderFactories: factories,
		Steps: []resource.TestStep{
			{
				Config: block,
				Check:  resource.TestCheckResourceAttrSet("data.cellplane_regions.all", "regions.#"),
			},
			{
				Config:      block + "resource \"cellplane_region\" \"r\" {\n  name = \"tf-denied\"\n}\n",
				ExpectError: regexp.MustCompile(`PERMISSION_DENIED`),
			},
		},
	})
	if rg, err := findRegion(ctxFor(t), testClient(t), "tf-denied"); err != nil || rg != nil {
		t.Fatalf("region tf-denied: %v, %v; want none", rg, err)
	}
}

// TestAccTenantErrors: the control plane's refusals surface as
// diagnostics with its reason, at plan time where the provider can tell
// (a standby in the home region) and at apply otherwise (an unknown
// region), and nothing is left in the state.
func TestAccTenantErrors(t *testing.T) {
	needTerraform(t)
	p := testPlatform(t)
	resource.UnitTest(t, resource.TestCase{
		ProtoV6ProviderFactories: factories,
		Steps: []resource.TestStep{
			{
				Config: providerBlock(p) + `
resource "cellplane_tenant" "t" {
  id             = "tf-bad"
  home_region    = "us-east"
  standby_region = "us-east"
}
`,
				PlanOnly:    true,
				ExpectError: regexp.MustCompile(`standby_region must differ from home_region`),
			},
			{
				Config: providerBlock(p) + `
resource "cellplane_tenant" "t" {
  id          = "tf-bad"
  home_region = "nowhere"
}
`,
				ExpectError: regexp.MustCompile(`REGION_NOT_FOUND`),
			},
		},
	})
	if _, err := p.Admin().GetTenant(ctxFor(t), &cpv1.GetTenantRequest{Id: "tf-bad"}); !errors.Is(rpcerr.FromStatus(err), cperr.ErrTenantNotFound) {
		t.Fatalf("tenant tf-bad: %v, want TENANT_NOT_FOUND", err)
	}
}
