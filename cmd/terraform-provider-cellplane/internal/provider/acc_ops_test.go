package provider

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/terraform-plugin-testing/helper/resource"
	"github.com/hashicorp/terraform-plugin-testing/plancheck"
	"github.com/hashicorp/terraform-plugin-testing/terraform"

	"github.com/cellplane/cellplane/internal/cperr"
	"github.com/cellplane/cellplane/internal/rpcerr"
	"github.com/cellplane/cellplane/internal/testutil"
	cpv1 "github.com/cellplane/cellplane/proto/cellplane/controlplane/v1"
)

// tenantGone is a CheckDestroy: the tenant's record is gone.
func tenantGone(t *testing.T, id string) func(*terraform.State) error {
	return func(*terraform.State) error {
		_, err := testPlatform(t).Admin().GetTenant(ctxFor(t), &cpv1.GetTenantRequest{Id: id})
		if !errors.Is(rpcerr.FromStatus(err), cperr.ErrTenantNotFound) {
			return fmt.Errorf("after destroy, GetTenant(%s): %v, want TENANT_NOT_FOUND", id, err)
		}
		return nil
	}
}

// wrapped compiles a pattern of a diagnostic that Terraform may have
// wrapped: each space matches any run of white space; . matches newlines.
func wrapped(pattern string) *regexp.Regexp {
	return regexp.MustCompile(`(?s)` + strings.ReplaceAll(pattern, " ", `\s+`))
}

// getTenant reads a tenant through the admin API.
func getTenant(t *testing.T, id string) *cpv1.Tenant {
	t.Helper()
	out, err := testPlatform(t).Admin().GetTenant(ctxFor(t), &cpv1.GetTenantRequest{Id: id})
	if err != nil {
		t.Fatalf("get tenant %s: %v", id, err)
	}
	return out.GetTenant()
}

// moves lists every move of a tenant that is kept (finished ones too).
func moves(t *testing.T, id string) []*cpv1.Move {
	t.Helper()
	out, err := testPlatform(t).Admin().ListMoves(ctxFor(t), &cpv1.ListMovesRequest{Tenant: id, All: true})
	if err != nil {
		t.Fatalf("list moves of %s: %v", id, err)
	}
	return out.GetMoves()
}

// TestAccTenantCreateTimeout: the control plane cannot finish a create
// (its controller is held on the tenant, as when the cell is
// unreachable), so the apply fails at timeouts.create with a diagnostic
// that says what happens next, and leaves nothing in the state (no
// tainted tenant, so no replace). The create is recorded once, with the
// provider's request id. Once the fault is gone the next apply resumes
// that same create (no second create, no ALREADY_EXISTS) and the plan
// after it is empty.
func TestAccTenantCreateTimeout(t *testing.T) {
	needTerraform(t)
	p := testPlatform(t)
	const id = "tf-slow"
	release := faults.holdTenant(t, id)
	cfg := providerBlock(p) + fmt.Sprintf(`
resource "cellplane_tenant" "t" {
  id                  = %q
  home_region         = "us-east"
  deletion_protection = false
  timeouts = {
    create = "3s"
  }
}
`, id)
	var requestID string
	resource.UnitTest(t, resource.TestCase{
		ProtoV6ProviderFactories: factories,
		CheckDestroy:             tenantGone(t, id),
		Steps: []resource.TestStep{
			{
				Config:      cfg,
				ExpectError: wrapped(`Tenant not created within the create timeout.*did not finish within 3s.*the tenant is TENANT_STATE_CREATING.*Nothing was started twice.*resumes the same operation`),
			},
			{
				PreConfig: func() {
					// Recorded once, still being created, under the
					// provider's request id; not in the state.
					tn := getTenant(t, id)
					if tn.GetState() != cpv1.TenantState_TENANT_STATE_CREATING || !strings.HasPrefix(tn.GetCreateRequestId(), createRequestPrefix) {
						t.Fatalf("after the timed-out apply: tenant %v, want CREATING with a %s… request id", tn, createRequestPrefix)
					}
					requestID = tn.GetCreateRequestId()
					release()
				},
				Config: cfg,
				ConfigPlanChecks: resource.ConfigPlanChecks{
					// Nothing in the state: a create (resumed), never a replace.
					PreApply: []plancheck.PlanCheck{plancheck.ExpectResourceAction("cellplane_tenant.t", plancheck.ResourceActionCreate)},
				},
				Check: func(*terraform.State) error {
					tn := getTenant(t, id)
					if tn.GetState() != cpv1.TenantState_TENANT_STATE_ACTIVE || tn.GetCreateRequestId() != requestID {
						return fmt.Errorf("after the resumed apply: tenant %v, want ACTIVE, created by request %s", tn, requestID)
					}
					return nil
				},
			},
			{
				Config: cfg,
				ConfigPlanChecks: resource.ConfigPlanChecks{
					PreApply: []plancheck.PlanCheck{plancheck.ExpectEmptyPlan()},
				},
			},
		},
	})
}

// TestAccTenantMove: placement_cell places the tenant at create; a change
// moves it live. The move is held (as when the target cannot be reached)
// so the apply fails at timeouts.update on placement_cell; the next apply
// waits for that same move (one move, never a second) and the tenant is
// served from the new cell. A move by an operator afterwards is not
// drift (empty plan). A max_bytes change applies in place. A control
// plane refusal of a move surfaces on placement_cell.
func TestAccTenantMove(t *testing.T) {
	needTerraform(t)
	p := testPlatform(t)
	const id = "tf-mover"
	cfg := func(cell, extra string) string {
		return providerBlock(p) + fmt.Sprintf(`
resource "cellplane_tenant" "t" {
  id                  = %q
  home_region         = "us-east"
  placement_cell      = %q
  deletion_protection = false
  %s
  timeouts = {
    update = "3s"
  }
}
`, id, cell, extra)
	}
	servedFrom := func(cell string) resource.TestCheckFunc {
		return func(*terraform.State) error {
			if tn := getTenant(t, id); tn.GetCell() != cell || tn.GetState() != cpv1.TenantState_TENANT_STATE_ACTIVE {
				return fmt.Errorf("tenant %s is %s on %q, want ACTIVE on %s", id, tn.GetState(), tn.GetCell(), cell)
			}
			return nil
		}
	}
	var release func()
	resource.UnitTest(t, resource.TestCase{
		ProtoV6ProviderFactories: factories,
		CheckDestroy:             tenantGone(t, id),
		Steps: []resource.TestStep{
			{
				Config: cfg("us-east-a", ""),
				Check: resource.ComposeAggregateTestCheckFunc(
					resource.TestCheckResourceAttr("cellplane_tenant.t", "placement_cell", "us-east-a"),
					servedFrom("us-east-a"),
				),
			},
			{
				// The move cannot progress: the apply fails at the update
				// timeout, on placement_cell.
				PreConfig:   func() { release = faults.holdTenant(t, id) },
				Config:      cfg("eu-west-a", ""),
				ExpectError: wrapped(`Move not finished within the update timeout.*placement_cell.*did not finish within 3s.*to eu-west-a is MOVE_STATE_.*Nothing was started twice`),
			},
			{
				PreConfig: func() {
					mvs := moves(t, id)
					if len(mvs) != 1 || moveFinished(mvs[0].GetState()) || mvs[0].GetTargetCell() != "eu-west-a" || !strings.HasPrefix(mvs[0].GetRequestId(), moveRequestPrefix) {
						t.Fatalf("after the timed-out apply: moves %v, want one unfinished move to eu-west-a with a %s… request id", mvs, moveRequestPrefix)
					}
					release()
				},
				// Resumed: the same move is waited on (the update timeout
				// is long enough now).
				Config: strings.Replace(cfg("eu-west-a", ""), `update = "3s"`, `update = "2m"`, 1),
				Check: resource.ComposeAggregateTestCheckFunc(
					resource.TestCheckResourceAttr("cellplane_tenant.t", "placement_cell", "eu-west-a"),
					servedFrom("eu-west-a"),
					func(*terraform.State) error {
						if mvs := moves(t, id); len(mvs) != 1 || mvs[0].GetState() != cpv1.MoveState_MOVE_STATE_DONE {
							return fmt.Errorf("moves %v, want the one move, DONE", mvs)
						}
						return nil
					},
				),
			},
			{
				// An operator moves it back: not drift.
				PreConfig: func() { operatorMove(t, id, "us-east-a") },
				Config:    strings.Replace(cfg("eu-west-a", ""), `update = "3s"`, `update = "2m"`, 1),
				ConfigPlanChecks: resource.ConfigPlanChecks{
					PreApply: []plancheck.PlanCheck{plancheck.ExpectEmptyPlan()},
				},
				Check: servedFrom("us-east-a"),
			},
			{
				// max_bytes changes in place and reaches the cell.
				Config: strings.Replace(cfg("eu-west-a", "limits = { max_bytes = 1048576 }"), `update = "3s"`, `update = "2m"`, 1),
				ConfigPlanChecks: resource.ConfigPlanChecks{
					PreApply: []plancheck.PlanCheck{plancheck.ExpectResourceAction("cellplane_tenant.t", plancheck.ResourceActionUpdate)},
				},
				Check: resource.ComposeAggregateTestCheckFunc(
					resource.TestCheckResourceAttr("cellplane_tenant.t", "limits.max_bytes", "1048576"),
					func(*terraform.State) error {
						if tn := getTenant(t, id); tn.GetLimits().GetMaxBytes() != 1<<20 || tn.GetQuotaPending() {
							return fmt.Errorf("tenant %v: want max_bytes 1 MiB pushed to the cell", tn)
						}
						return nil
					},
				),
			},
			{
				// A refusal of the control plane, on the attribute.
				Config:      strings.Replace(cfg("nowhere-a", "limits = { max_bytes = 1048576 }"), `update = "3s"`, `update = "2m"`, 1),
				ExpectError: regexp.MustCompile(`(?s)Cannot move the tenant.*placement_cell\s+= "nowhere-a".*CELL_NOT_FOUND`),
			},
			{
				Config: strings.Replace(cfg("eu-west-a", "limits = { max_bytes = 1048576 }"), `update = "3s"`, `update = "2m"`, 1),
				ConfigPlanChecks: resource.ConfigPlanChecks{
					PreApply: []plancheck.PlanCheck{plancheck.ExpectEmptyPlan()},
				},
			},
		},
	})
}

// operatorMove moves a tenant with the admin API, as `cellctl tenant
// move` does, and waits until the move is DONE.
func operatorMove(t *testing.T, tenant, cell string) {
	t.Helper()
	cl := testPlatform(t).Admin()
	ctx := ctxFor(t)
	out, err := cl.StartMove(ctx, &cpv1.StartMoveRequest{Tenant: tenant, TargetCell: cell})
	if err != nil {
		t.Fatalf("move %s to %s: %v", tenant, cell, err)
	}
	testutil.Eventually(t, 60*time.Second, func() error {
		mv, err := cl.GetMove(ctx, &cpv1.GetMoveRequest{Id: out.GetMove().GetId()})
		if err != nil {
			return err
		}
		if s := mv.GetMove().GetState(); s != cpv1.MoveState_MOVE_STATE_DONE {
			return fmt.Errorf("move %s is %s", mv.GetMove().GetId(), s)
		}
		return nil
	})
}

// TestAccTenantCreateKilled: an apply killed after its CreateTenant was
// recorded saves nothing (no state, no private state). The next apply
// derives the same request id from the same configuration, so the control
// plane answers with the tenant the killed apply started and waits for it:
// no ALREADY_EXISTS, no second create, an empty plan after.
func TestAccTenantCreateKilled(t *testing.T) {
	needTerraform(t)
	p := testPlatform(t)
	const id = "tf-killed"
	release := faults.holdTenant(t, id)
	// What the killed apply sent: the request the provider builds from
	// this configuration (limits unknown: not sent), with its derived id.
	req := &cpv1.CreateTenantRequest{Id: id, HomeRegion: "eu-west"}
	req.RequestId = createRequestID(req)
	ctx, cancel := context.WithTimeout(ctxFor(t), time.Second)
	_, err := p.Admin().CreateTenant(ctx, req)
	cancel()
	if err == nil {
		t.Fatal("the held create finished")
	}
	if tn := getTenant(t, id); tn.GetState() != cpv1.TenantState_TENANT_STATE_CREATING || tn.GetCreateRequestId() != req.GetRequestId() {
		t.Fatalf("the killed apply's tenant: %v, want CREATING by request %s", tn, req.GetRequestId())
	}
	cfg := providerBlock(p) + fmt.Sprintf(`
resource "cellplane_tenant" "t" {
  id                  = %q
  home_region         = "eu-west"
  deletion_protection = false
}
`, id)
	resource.UnitTest(t, resource.TestCase{
		ProtoV6ProviderFactories: factories,
		CheckDestroy:             tenantGone(t, id),
		Steps: []resource.TestStep{
			{
				PreConfig: release,
				Config:    cfg,
				Check: func(*terraform.State) error {
					if tn := getTenant(t, id); tn.GetState() != cpv1.TenantState_TENANT_STATE_ACTIVE || tn.GetCreateRequestId() != req.GetRequestId() {
						return fmt.Errorf("after the apply: %v, want ACTIVE, created by request %s", tn, req.GetRequestId())
					}
					return nil
				},
			},
			{
				Config: cfg,
				ConfigPlanChecks: resource.ConfigPlanChecks{
					PreApply: []plancheck.PlanCheck{plancheck.ExpectEmptyPlan()},
				},
			},
		},
	})
}
