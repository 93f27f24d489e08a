package provider

import (
	"errors"
	"fmt"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/terraform-plugin-testing/helper/resource"
	"github.com/hashicorp/terraform-plugin-testing/plancheck"
	"github.com/hashicorp/terraform-plugin-testing/terraform"

	goclient "github.com/cellplane/cellplane/client"
	"github.com/cellplane/cellplane/internal/cperr"
	"github.com/cellplane/cellplane/internal/pki"
	"github.com/cellplane/cellplane/internal/rpcerr"
	"github.com/cellplane/cellplane/platform"
	cpv1 "github.com/cellplane/cellplane/proto/cellplane/controlplane/v1"
)

// cellState reads a cell's stored state through the admin API.
func cellState(t *testing.T, p *platform.Platform, id string) (cpv1.CellState, error) {
	t.Helper()
	out, err := p.Admin().GetCell(ctxFor(t), &cpv1.GetCellRequest{Id: id})
	if err != nil {
		return 0, rpcerr.FromStatus(err)
	}
	return out.GetCell().GetCell().GetState(), nil
}

// TestAccCell: a cell without nodes in its own region (so that no other
// test's tenant is placed on it): created CORDONED with a capacity, read
// by the data source (NOT_STARTED, no leader), imported, changed in place
// (capacity, state), an immutable change refused at plan time, an
// operator's drain never undone by an apply (an empty plan, the cell
// still DRAINING), wait_for_healthy failing within its timeout on a cell
// with no nodes, and the destroy deleting the empty cell.
func TestAccCell(t *testing.T) {
	needTerraform(t)
	p := testPlatform(t)
	const id = "tf-c1"
	cfg := func(body string) string {
		return providerBlock(p) + `
resource "cellplane_region" "r" {
  name = "tf-cells"
}
resource "cellplane_cell" "c" {
  id     = "tf-c1"
  region = cellplane_region.r.name
` + body + `
}
data "cellplane_cell" "c" {
  id = cellplane_cell.c.id
}
data "cellplane_region" "r" {
  name       = cellplane_region.r.name
  depends_on = [cellplane_cell.c]
}
`
	}
	resource.UnitTest(t, resource.TestCase{
		ProtoV6ProviderFactories: factories,
		CheckDestroy: func(*terraform.State) error {
			if _, err := cellState(t, p, id); !errors.Is(err, cperr.ErrCellNotFound) {
				return fmt.Errorf("after destroy, GetCell(%s): %v, want CELL_NOT_FOUND", id, err)
			}
			return nil
		},
		Steps: []resource.TestStep{
			{
				Config: cfg(`  expected_members = 1
  state            = "CORDONED"
  capacity = {
    max_tenants = 10
  }`),
				Check: resource.ComposeAggregateTestCheckFunc(
					resource.TestCheckResourceAttr("cellplane_cell.c", "state", "CORDONED"),
					resource.TestCheckResourceAttr("cellplane_cell.c", "expected_members", "1"),
					resource.TestCheckResourceAttr("cellplane_cell.c", "capacity.max_tenants", "10"),
					resource.TestCheckResourceAttr("cellplane_cell.c", "capacity.max_bytes", "0"),
					resource.TestCheckResourceAttr("cellplane_cell.c", "wait_for_healthy", "false"),
					resource.TestCheckResourceAttr("data.cellplane_cell.c", "state", "CORDONED"),
					resource.TestCheckResourceAttr("data.cellplane_cell.c", "health", "NOT_STARTED"),
					resource.TestCheckResourceAttr("data.cellplane_cell.c", "max_tenants", "10"),
					resource.TestCheckResourceAttr("data.cellplane_cell.c", "nodes.#", "0"),
					resource.TestCheckResourceAttr("data.cellplane_cell.c", "leader_node", ""),
					resource.TestCheckResourceAttr("data.cellplane_region.r", "cells.#", "1"),
					resource.TestCheckResourceAttr("data.cellplane_region.r", "cells.0", id),
					func(*terraform.State) error {
						if st, err := cellState(t, p, id); err != nil || st != cpv1.CellState_CELL_STATE_CORDONED {
							return fmt.Errorf("cell %s: %v, %v; want CORDONED", id, st, err)
						}
						return nil
					},
				),
			},
			{
				ResourceName:            "cellplane_cell.c",
				ImportState:             true,
				ImportStateId:           id,
				ImportStateVerify:       true,
				ImportStateVerifyIgnore: []string{"timeouts"},
			},
			{
				// In place: capacity and state (UpdateCell); the default
				// expected_members would be 3: refused at plan time.
				Config:      cfg(`  capacity = { max_tenants = 20 }`),
				PlanOnly:    true,
				ExpectError: regexp.MustCompile(`(?s)Cannot change an immutable attribute.*expected_members`),
			},
			{
				Config: cfg(`  expected_members = 1
  capacity = {
    max_tenants = 20
    max_bytes   = 1000000
  }`),
				ConfigPlanChecks: resource.ConfigPlanChecks{
					PreApply: []plancheck.PlanCheck{plancheck.ExpectResourceAction("cellplane_cell.c", plancheck.ResourceActionUpdate)},
				},
				Check: resource.ComposeAggregateTestCheckFunc(
					resource.TestCheckResourceAttr("cellplane_cell.c", "state", "ACTIVE"),
					resource.TestCheckResourceAttr("data.cellplane_cell.c", "state", "ACTIVE"),
					resource.TestCheckResourceAttr("data.cellplane_cell.c", "max_tenants", "20"),
					resource.TestCheckResourceAttr("data.cellplane_cell.c", "max_bytes", "1000000"),
				),
			},
			{
				Config:      strings.Replace(cfg(`  expected_members = 1`), "cellplane_region.r.name\n", "\"us-east\"\n", 1),
				PlanOnly:    true,
				ExpectError: regexp.MustCompile(`(?s)Cannot change an immutable attribute.*region`),
			},
			{
				// Capacity removed: unbounded again.
				Config: cfg(`  expected_members = 1`),
				Check:  resource.TestCheckResourceAttr("data.cellplane_cell.c", "max_tenants", "0"),
			},
			{
				// An operator drains the cell: the configuration still says
				// ACTIVE, the plan is empty and the cell stays DRAINING.
				PreConfig: func() {
					if _, err := p.Admin().DrainCell(ctxFor(t), &cpv1.DrainCellRequest{Cell: id}); err != nil {
						t.Fatalf("drain: %v", err)
					}
				},
				Config: cfg(`  expected_members = 1
  state            = "ACTIVE"`),
				ConfigPlanChecks: resource.ConfigPlanChecks{
					PreApply: []plancheck.PlanCheck{plancheck.ExpectEmptyPlan()},
				},
				Check: resource.ComposeAggregateTestCheckFunc(
					resource.TestCheckResourceAttr("cellplane_cell.c", "state", "DRAINING"),
					func(*terraform.State) error {
						if st, err := cellState(t, p, id); err != nil || st != cpv1.CellState_CELL_STATE_DRAINING {
							return fmt.Errorf("cell %s after the apply: %v, %v; want still DRAINING", id, st, err)
						}
						return nil
					},
				),
			},
			{
				// Declaring the drain: nothing to change.
				Config: cfg(`  expected_members = 1
  state            = "DRAINING"`),
				ConfigPlanChecks: resource.ConfigPlanChecks{
					PreApply: []plancheck.PlanCheck{plancheck.ExpectEmptyPlan()},
				},
			},
			{
				// The operator ends the drain; the configuration says
				// DRAINING again: the apply drains (an empty cell: done at once).
				PreConfig: func() {
					if _, err := p.Admin().UncordonCell(ctxFor(t), &cpv1.UncordonCellRequest{Id: id}); err != nil {
						t.Fatalf("uncordon: %v", err)
					}
				},
				Config: cfg(`  expected_members = 1
  state            = "DRAINING"`),
				ConfigPlanChecks: resource.ConfigPlanChecks{
					PreApply: []plancheck.PlanCheck{plancheck.ExpectResourceAction("cellplane_cell.c", plancheck.ResourceActionUpdate)},
				},
				Check: resource.TestCheckResourceAttr("data.cellplane_cell.c", "state", "DRAINING"),
			},
			{
				// No node will join: wait_for_healthy fails within its
				// timeout and says what the cell is.
				Config: cfg(`  expected_members = 1
  state            = "DRAINING"
  wait_for_healthy = true
  timeouts = {
    update = "5s"
  }`),
				ExpectError: regexp.MustCompile(`(?s)Cell not HEALTHY within the timeout.*NOT_STARTED`),
			},
		},
	})
}

// TestAccCellErrors: a cell in an unknown region is refused with the
// reason on region, a duplicate with ALREADY_EXISTS (import it), and an
// invalid state at plan time; nothing is created.
func TestAccCellErrors(t *testing.T) {
	needTerraform(t)
	p := testPlatform(t)
	resource.UnitTest(t, resource.TestCase{
		ProtoV6ProviderFactories: factories,
		Steps: []resource.TestStep{
			{
				Config: providerBlock(p) + `
resource "cellplane_cell" "c" {
  id     = "tf-bad-cell"
  region = "nowhere"
}
`,
				ExpectError: regexp.MustCompile(`REGION_NOT_FOUND`),
			},
			{
				Config: providerBlock(p) + `
resource "cellplane_cell" "c" {
  id     = "us-east-a"
  region = "us-east"
}
`,
				ExpectError: regexp.MustCompile(`(?s)ALREADY_EXISTS.*import it`),
			},
			{
				Config: providerBlock(p) + `
resource "cellplane_cell" "c" {
  id     = "tf-bad-cell"
  region = "us-east"
  state  = "DOWN"
}
`,
				PlanOnly:    true,
				ExpectError: regexp.MustCompile(`want one of ACTIVE, CORDONED, DRAINING`),
			},
		},
	})
	if _, err := cellState(t, p, "tf-bad-cell"); !errors.Is(err, cperr.ErrCellNotFound) {
		t.Fatalf("cell tf-bad-cell: %v, want CELL_NOT_FOUND", err)
	}
}

// TestAccCellDrain: two 1-node cells of a new region declared in
// Terraform before their nodes exist; once the nodes joined,
// wait_for_healthy passes and the data sources show the live cells and
// the tenant; state = "DRAINING" waits until the tenant is moved out;
// an apply saying ACTIVE again leaves the drained cell DRAINING; the
// destroy of a cell that still serves a tenant and has a node is refused
// (CELL_NOT_EMPTY) and deletes nothing.
func TestAccCellDrain(t *testing.T) {
	needTerraform(t)
	p := testPlatform(t)
	const tenant = "tf-drained"
	cellsB := func(stateA, stateB, extra string) string {
		return providerBlock(p) + fmt.Sprintf(`
resource "cellplane_region" "r" {
  name = "tf-drain"
}
resource "cellplane_cell" "a" {
  id               = "tf-drain-a"
  region           = cellplane_region.r.name
  expected_members = 1
  state            = %q
  %s
}
resource "cellplane_cell" "b" {
  id               = "tf-drain-b"
  region           = cellplane_region.r.name
  expected_members = 1
  state            = %q
  %s
}
`, stateA, extra, stateB, strings.ReplaceAll(extra, "timeouts", "# timeouts"))
	}
	cells := func(stateA, extra string) string { return cellsB(stateA, "ACTIVE", extra) }
	live := `
data "cellplane_cell" "a" {
  id         = cellplane_cell.a.id
  depends_on = [cellplane_cell.a]
}
data "cellplane_tenants" "t" {
  region     = "tf-drain"
  depends_on = [cellplane_cell.a]
}
data "cellplane_moves" "m" {
  tenant     = "tf-drained"
  all        = true
  depends_on = [cellplane_cell.a]
}
data "cellplane_registry" "r" {}
`
	resource.UnitTest(t, resource.TestCase{
		ProtoV6ProviderFactories: factories,
		Steps: []resource.TestStep{
			{
				// The records first (CORDONED: nothing lands on a cell
				// before its nodes exist); the nodes join afterwards.
				Config: cells("CORDONED", ""),
			},
			{
				PreConfig: func() {
					for _, c := range []string{"tf-drain-a", "tf-drain-b"} {
						if _, err := p.AddCell(ctxFor(t), platform.CellSpec{Region: "tf-drain", ID: c, Nodes: 1}); err != nil {
							t.Fatalf("start the nodes of %s: %v", c, err)
						}
					}
				},
				// Healthy now: ACTIVE, and wait_for_healthy passes.
				Config: cells("ACTIVE", "wait_for_healthy = true"),
			},
			{
				PreConfig: func() {
					if _, err := p.Admin().CreateTenant(ctxFor(t), &cpv1.CreateTenantRequest{Id: tenant, HomeRegion: "tf-drain", Cell: "tf-drain-a"}); err != nil {
						t.Fatalf("create tenant: %v", err)
					}
				},
				Config: cells("ACTIVE", "wait_for_healthy = true") + live,
				Check: resource.ComposeAggregateTestCheckFunc(
					resource.TestCheckResourceAttr("data.cellplane_cell.a", "health", "HEALTHY"),
					resource.TestCheckResourceAttr("data.cellplane_cell.a", "nodes.#", "1"),
					resource.TestCheckResourceAttr("data.cellplane_cell.a", "nodes.0.role", "MEMBER"),
					resource.TestCheckResourceAttrSet("data.cellplane_cell.a", "leader_grpc_addr"),
					resource.TestCheckResourceAttr("data.cellplane_cell.a", "tenants", "1"),
					resource.TestCheckResourceAttr("data.cellplane_tenants.t", "tenants.#", "1"),
					resource.TestCheckResourceAttr("data.cellplane_tenants.t", "tenants.0.id", tenant),
					resource.TestCheckResourceAttr("data.cellplane_tenants.t", "tenants.0.cell", "tf-drain-a"),
					resource.TestCheckResourceAttr("data.cellplane_tenants.t", "truncated", "false"),
					resource.TestCheckResourceAttr("data.cellplane_moves.m", "moves.#", "0"),
					resource.TestCheckResourceAttrSet("data.cellplane_registry.r", "etcd_endpoints.0"),
				),
			},
			{
				// tf-drain-b cordoned: the drain of tf-drain-a has nowhere
				// to move the tenant.
				Config: cellsB("ACTIVE", "CORDONED", "wait_for_healthy = true") + live,
			},
			{
				// The drain is started but cut off by its timeout: an
				// error, and the drain goes on in the control plane.
				Config:      cellsB("DRAINING", "CORDONED", "wait_for_healthy = true\n  timeouts = { update = \"1s\" }") + live,
				ExpectError: regexp.MustCompile(`Cell not drained within the timeout`),
			},
			{
				// The next apply resumes waiting (the state still says
				// ACTIVE while the drain Terraform started runs): it
				// returns once tf-drain-b (ACTIVE again) has the tenant.
				Config: cells("DRAINING", "wait_for_healthy = true") + live,
				ConfigPlanChecks: resource.ConfigPlanChecks{
					PreApply: []plancheck.PlanCheck{
						plancheck.ExpectResourceAction("cellplane_cell.a", plancheck.ResourceActionUpdate),
						plancheck.ExpectResourceAction("cellplane_cell.b", plancheck.ResourceActionUpdate),
					},
				},
				Check: resource.ComposeAggregateTestCheckFunc(
					resource.TestCheckResourceAttr("cellplane_cell.a", "state", "DRAINING"),
					func(*terraform.State) error {
						out, err := p.Admin().GetTenant(ctxFor(t), &cpv1.GetTenantRequest{Id: tenant})
						if err != nil {
							return err
						}
						if c := out.GetTenant().GetCell(); c != "tf-drain-b" {
							return fmt.Errorf("after the drain tenant %s is on %s, want tf-drain-b", tenant, c)
						}
						return nil
					},
				),
			},
			{
				// The moves data source shows the drain's move.
				Config: cells("DRAINING", "wait_for_healthy = true") + live,
				Check: resource.ComposeAggregateTestCheckFunc(
					resource.TestCheckResourceAttr("data.cellplane_moves.m", "moves.#", "1"),
					resource.TestCheckResourceAttr("data.cellplane_moves.m", "moves.0.drain_cell", "tf-drain-a"),
					resource.TestCheckResourceAttr("data.cellplane_moves.m", "moves.0.target_cell", "tf-drain-b"),
					resource.TestCheckResourceAttr("data.cellplane_tenants.t", "tenants.0.cell", "tf-drain-b"),
				),
			},
			{
				// ACTIVE again in the configuration: the drain is not undone.
				Config: cells("ACTIVE", "wait_for_healthy = true") + live,
				ConfigPlanChecks: resource.ConfigPlanChecks{
					PreApply: []plancheck.PlanCheck{plancheck.ExpectEmptyPlan()},
				},
				Check: func(*terraform.State) error {
					if st, err := cellState(t, p, "tf-drain-a"); err != nil || st != cpv1.CellState_CELL_STATE_DRAINING {
						return fmt.Errorf("tf-drain-a after the apply: %v, %v; want DRAINING", st, err)
					}
					return nil
				},
			},
			{
				// Destroy of tf-drain-b (it serves the tenant, its node is
				// registered): refused, nothing destroyed.
				Config:      strings.SplitN(cells("ACTIVE", ""), `resource "cellplane_cell" "b"`, 2)[0],
				ExpectError: regexp.MustCompile(`(?s)Cannot destroy the cell.*CELL_NOT_EMPTY.*Nothing was destroyed`),
			},
			{
				// Forget the cells and the region (they have nodes).
				Config: providerBlock(p) + `
removed {
  from = cellplane_cell.a
  lifecycle {
    destroy = false
  }
}
removed {
  from = cellplane_cell.b
  lifecycle {
    destroy = false
  }
}
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
	if st, err := cellState(t, p, "tf-drain-b"); err != nil || st != cpv1.CellState_CELL_STATE_ACTIVE {
		t.Fatalf("tf-drain-b after the refused destroy: %v, %v; want it kept, ACTIVE", st, err)
	}
	out, err := p.Admin().GetTenant(ctxFor(t), &cpv1.GetTenantRequest{Id: tenant})
	if err != nil || out.GetTenant().GetCell() != "tf-drain-b" {
		t.Fatalf("tenant %s after the refused destroy: %v, %v", tenant, out, err)
	}
}

// TestAccFailoverPolicy: the policy created (adopting what is there),
// read back from the control plane, imported as "default", changed in
// place, changed outside Terraform (planned back), and destroyed: the
// stored policy is then disabled. The policy names a region with no cells,
// so it never promotes anything of the shared platform.
func TestAccFailoverPolicy(t *testing.T) {
	needTerraform(t)
	p := testPlatform(t)
	cfg := func(body string) string {
		return providerBlock(p) + "resource \"cellplane_failover_policy\" \"p\" {\n" + body + "\n}\n"
	}
	get := func() *cpv1.GetFailoverPolicyResponse {
		out, err := p.Admin().GetFailoverPolicy(ctxFor(t), &cpv1.GetFailoverPolicyRequest{})
		if err != nil {
			t.Fatalf("GetFailoverPolicy: %v", err)
		}
		return out
	}
	resource.UnitTest(t, resource.TestCase{
		ProtoV6ProviderFactories: factories,
		CheckDestroy: func(*terraform.State) error {
			out := get()
			if !out.GetStored() || out.GetPolicy().GetEnabled() || len(out.GetPolicy().GetRegions()) != 0 || out.GetPolicy().GetUnhealthyFor().AsDuration() != 0 {
				return fmt.Errorf("after destroy the policy is %v (stored %v), want stored and disabled", out.GetPolicy(), out.GetStored())
			}
			return nil
		},
		Steps: []resource.TestStep{
			{
				Config: cfg(`  enabled        = true
  unhealthy_for  = "1m"
  regions        = ["tf-policy-none"]
  max_concurrent = 2`),
				Check: resource.ComposeAggregateTestCheckFunc(
					resource.TestCheckResourceAttr("cellplane_failover_policy.p", "id", "default"),
					resource.TestCheckResourceAttr("cellplane_failover_policy.p", "unhealthy_for", "1m"),
					func(*terraform.State) error {
						out := get()
						pol := out.GetPolicy()
						if !out.GetStored() || !pol.GetEnabled() || pol.GetUnhealthyFor().AsDuration() != time.Minute ||
							len(pol.GetRegions()) != 1 || pol.GetRegions()[0] != "tf-policy-none" || pol.GetMaxConcurrent() != 2 {
							return fmt.Errorf("stored policy %v", pol)
						}
						return nil
					},
				),
			},
			{
				ResourceName:                         "cellplane_failover_policy.p",
				ImportState:                          true,
				ImportStateId:                        "default",
				ImportStateVerify:                    true,
				ImportStateVerifyIdentifierAttribute: "id",
				// The import reads the canonical spelling (1m0s).
				ImportStateVerifyIgnore: []string{"unhealthy_for"},
			},
			{
				ResourceName:  "cellplane_failover_policy.p",
				ImportState:   true,
				ImportStateId: "global",
				ExpectError:   regexp.MustCompile(`import id is "default"`),
			},
			{
				Config: cfg(`  enabled       = false
  unhealthy_for = "45s"
  regions       = ["tf-policy-none", "tf-policy-none2"]`),
				ConfigPlanChecks: resource.ConfigPlanChecks{
					PreApply: []plancheck.PlanCheck{plancheck.ExpectResourceAction("cellplane_failover_policy.p", plancheck.ResourceActionUpdate)},
				},
				Check: func(*terraform.State) error {
					pol := get().GetPolicy()
					if pol.GetEnabled() || pol.GetUnhealthyFor().AsDuration() != 45*time.Second || len(pol.GetRegions()) != 2 || pol.GetMaxConcurrent() != 0 {
						return fmt.Errorf("stored policy %v", pol)
					}
					return nil
				},
			},
			{
				Config: cfg(`  enabled       = false
  unhealthy_for = "10ms"`),
				PlanOnly:    true,
				ExpectError: regexp.MustCompile(`at least 1s`),
			},
			{
				// Changed outside Terraform: the plan puts it back.
				PreConfig: func() {
					if _, err := p.Admin().SetFailoverPolicy(ctxFor(t), &cpv1.SetFailoverPolicyRequest{Policy: &cpv1.FailoverPolicy{Enabled: true}}); err != nil {
						t.Fatal(err)
					}
				},
				Config: cfg(`  enabled       = false
  unhealthy_for = "45s"
  regions       = ["tf-policy-none", "tf-policy-none2"]`),
				ConfigPlanChecks: resource.ConfigPlanChecks{
					PreApply: []plancheck.PlanCheck{plancheck.ExpectResourceAction("cellplane_failover_policy.p", plancheck.ResourceActionUpdate)},
				},
				Check: func(*terraform.State) error {
					if pol := get().GetPolicy(); pol.GetEnabled() || len(pol.GetRegions()) != 2 {
						return fmt.Errorf("stored policy %v", pol)
					}
					return nil
				},
			},
		},
	})
}

// TestFailoverPolicyConcurrentEdit: a write over a version that is no
// longer current (someone changed the policy after Terraform read it) is
// refused with REVISION_MISMATCH and writes nothing.
func TestFailoverPolicyConcurrentEdit(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a platform")
	}
	needTerraform(t) // the shared platform is for the acceptance tests
	p := testPlatform(t)
	c := testClient(t)
	ctx := ctxFor(t)
	first, err := setPolicy(ctx, c, &cpv1.FailoverPolicy{Regions: []string{"tf-edit"}}, 0)
	if err != nil {
		t.Fatal(err)
	}
	// Someone else writes.
	if _, err := setPolicy(ctx, c, &cpv1.FailoverPolicy{Regions: []string{"tf-edit-other"}}, first.GetVersion()); err != nil {
		t.Fatal(err)
	}
	// Terraform writes over what it read first: refused.
	_, err = updatePolicy(ctx, c, &cpv1.FailoverPolicy{Enabled: true, Regions: []string{"tf-edit"}}, first.GetVersion())
	if !errors.Is(err, cperr.ErrRevisionMismatch) {
		t.Fatalf("stale write: %v, want REVISION_MISMATCH", err)
	}
	out, err := p.Admin().GetFailoverPolicy(ctx, &cpv1.GetFailoverPolicyRequest{})
	if err != nil || out.GetPolicy().GetEnabled() || out.GetPolicy().GetRegions()[0] != "tf-edit-other" {
		t.Fatalf("after the refused write: %v, %v; want the other writer's policy", out, err)
	}
	if _, err := setPolicy(ctx, c, &cpv1.FailoverPolicy{}, 0); err != nil {
		t.Fatal(err)
	}
}

// TestAccCellReadOnlyOperator: a read-only operator reads the cell and
// policy data sources but is refused a cell create, a cell change and a
// policy change (PERMISSION_DENIED), and nothing is written.
func TestAccCellReadOnlyOperator(t *testing.T) {
	needTerraform(t)
	p := testPlatform(t)
	ca, err := pki.LoadCA(p.CertsDir())
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := ca.Issue(pki.LeafRequest{Identity: pki.OperatorIdentity(ca.Cluster(), pki.RoleReadOnly, "viewer2")})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := pki.WriteLeaf(dir, "operator.viewer2", leaf, false); err != nil {
		t.Fatal(err)
	}
	t.Setenv(goclient.EnvConfigFile, "")
	block := fmt.Sprintf(`
provider "cellplane" {
  endpoint      = %q
  tls_ca_file   = %q
  tls_cert_file = %q
  tls_key_file  = %q
}
data "cellplane_cell" "east" {
  id = "us-east-a"
}
data "cellplane_failovers" "f" {}
`, p.ControlPlaneAddr(), filepath.Join(p.CertsDir(), pki.CACertFile), filepath.Join(dir, "operator.viewer2.crt"), filepath.Join(dir, "operator.viewer2.key"))
	before, err := p.Admin().GetFailoverPolicy(ctxFor(t), &cpv1.GetFailoverPolicyRequest{})
	if err != nil {
		t.Fatal(err)
	}
	resource.UnitTest(t, resource.TestCase{
		ProtoV6ProviderFactories: factories,
		Steps: []resource.TestStep{
			{
				Config: block,
				Check: resource.ComposeAggregateTestCheckFunc(
					resource.TestCheckResourceAttr("data.cellplane_cell.east", "health", "HEALTHY"),
					resource.TestCheckResourceAttrSet("data.cellplane_failovers.f", "failovers.#"),
				),
			},
			{
				Config:      block + "resource \"cellplane_cell\" \"c\" {\n  id     = \"tf-denied-cell\"\n  region = \"us-east\"\n}\n",
				ExpectError: regexp.MustCompile(`(?s)PERMISSION_DENIED.*admin role`),
			},
			{
				Config:      block + "resource \"cellplane_failover_policy\" \"p\" {\n  enabled = true\n}\n",
				ExpectError: regexp.MustCompile(`PERMISSION_DENIED`),
			},
			{
				// An existing cell adopted, then a change refused.
				Config: block + `
import {
  to = cellplane_cell.east
  id = "us-east-a"
}
resource "cellplane_cell" "east" {
  id               = "us-east-a"
  region           = "us-east"
  expected_members = 1
  state            = "CORDONED"
}
`,
				ExpectError: regexp.MustCompile(`PERMISSION_DENIED`),
			},
			{
				Config: block + `
removed {
  from = cellplane_cell.east
  lifecycle {
    destroy = false
  }
}
`,
			},
		},
	})
	if _, err := cellState(t, p, "tf-denied-cell"); !errors.Is(err, cperr.ErrCellNotFound) {
		t.Fatalf("cell tf-denied-cell: %v, want CELL_NOT_FOUND", err)
	}
	if st, err := cellState(t, p, "us-east-a"); err != nil || st != cpv1.CellState_CELL_STATE_ACTIVE {
		t.Fatalf("us-east-a: %v, %v; want ACTIVE", st, err)
	}
	after, err := p.Admin().GetFailoverPolicy(ctxFor(t), &cpv1.GetFailoverPolicyRequest{})
	if err != nil || after.GetVersion() != before.GetVersion() {
		t.Fatalf("failover policy version %d → %d (%v); want unchanged", before.GetVersion(), after.GetVersion(), err)
	}
}
