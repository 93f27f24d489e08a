package provider

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/terraform-plugin-framework-timeouts/resource/timeouts"
	"github.com/hashicorp/terraform-plugin-framework/attr"
	"github.com/hashicorp/terraform-plugin-framework/diag"
	"github.com/hashicorp/terraform-plugin-framework/path"
	"github.com/hashicorp/terraform-plugin-framework/resource"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/booldefault"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/int64default"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/planmodifier"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/stringdefault"
	"github.com/hashicorp/terraform-plugin-framework/schema/validator"
	"github.com/hashicorp/terraform-plugin-framework/types"

	"github.com/cellplane/cellplane/internal/cperr"
	"github.com/cellplane/cellplane/internal/ids"
	"github.com/cellplane/cellplane/internal/retry"
	cpv1 "github.com/cellplane/cellplane/proto/cellplane/controlplane/v1"
)

// Default time limits of a cell's operations (the timeouts block).
const (
	defaultCellCreateTimeout = 10 * time.Minute
	defaultCellUpdateTimeout = 30 * time.Minute
	defaultCellDeleteTimeout = 5 * time.Minute
	// defaultExpectedMembers is what the control plane makes of 0.
	defaultExpectedMembers = 3
)

// The cell states as the resource spells them (cpv1.CellState without
// its prefix). ACTIVE, CORDONED and DRAINING can be declared; DOWN is
// live state only.
const (
	cellActive   = "ACTIVE"
	cellCordoned = "CORDONED"
	cellDraining = "DRAINING"
	cellDown     = "DOWN"
)

type cellResource struct{ c *apiClient }

type cellModel struct {
	ID              types.String   `tfsdk:"id"`
	Region          types.String   `tfsdk:"region"`
	ExpectedMembers types.Int64    `tfsdk:"expected_members"`
	Capacity        types.Object   `tfsdk:"capacity"`
	State           types.String   `tfsdk:"state"`
	WaitForHealthy  types.Bool     `tfsdk:"wait_for_healthy"`
	Timeouts        timeouts.Value `tfsdk:"timeouts"`
}

// capacityAttrTypes are the attributes of capacity (cpv1.CellCapacity).
var capacityAttrTypes = map[string]attr.Type{"max_tenants": types.Int64Type, "max_bytes": types.Int64Type}

func newCellResource() resource.Resource { return &cellResource{} }

var (
	_ resource.ResourceWithImportState = (*cellResource)(nil)
	_ resource.ResourceWithModifyPlan  = (*cellResource)(nil)
)

func (r *cellResource) Metadata(_ context.Context, req resource.MetadataRequest, resp *resource.MetadataResponse) {
	resp.TypeName = req.ProviderTypeName + "_cell"
}

func (r *cellResource) Schema(ctx context.Context, _ resource.SchemaRequest, resp *resource.SchemaResponse) {
	resp.Schema = schema.Schema{
		Description: "A cell of a region: its record in the control plane (the nodes are deployed separately and join it from the registry). " +
			"state declares ACTIVE, CORDONED or DRAINING; an apply never ends a drain an operator started and never fights a DOWN cell " +
			"(a live DRAINING or DOWN state is kept, with a warning, and plans no change). Destroy deletes an empty cell only (CELL_NOT_EMPTY otherwise: nothing is destroyed). " +
			"Live health, leader, nodes and load are in data.cellplane_cell. Import by id: terraform import cellplane_cell.c us-east-a.",
		Attributes: map[string]schema.Attribute{
			"id": schema.StringAttribute{Required: true, Description: "The cell's id. Cannot change: a change is refused at plan time, never a replace.",
				Validators:    []validator.String{idValidator{}},
				PlanModifiers: []planmodifier.String{immutable("a cell cannot be renamed; declare a new cell and drain this one")}},
			"region": schema.StringAttribute{Required: true, Description: "The cell's region. Cannot change: a change is refused at plan time.",
				Validators:    []validator.String{idValidator{}},
				PlanModifiers: []planmodifier.String{immutable("a cell cannot move between regions; declare a new cell in the other region and drain this one")}},
			"expected_members": schema.Int64Attribute{Optional: true, Computed: true, Default: int64default.StaticInt64(defaultExpectedMembers),
				Description:   "The number of Raft members the cell bootstraps with: 1, 3 (the default), 5 or 7. Cannot change after create (refused at plan time).",
				Validators:    []validator.Int64{oneOfInt64{1, 3, 5, 7}},
				PlanModifiers: []planmodifier.Int64{immutableInt64{why: "the control plane cannot change a cell's member count; declare a new cell"}}},
			"capacity": schema.SingleNestedAttribute{Optional: true,
				Description: "Bounds on what placement puts on the cell (0: unbounded); null: unbounded. Changes in place (UpdateCell).",
				Attributes: map[string]schema.Attribute{
					"max_tenants": schema.Int64Attribute{Optional: true, Computed: true, Default: int64default.StaticInt64(0),
						Description: "Tenants at most (0: unbounded).", Validators: []validator.Int64{nonNegative{}}},
					"max_bytes": schema.Int64Attribute{Optional: true, Computed: true, Default: int64default.StaticInt64(0),
						Description: "Stored bytes at most (0: unbounded).", Validators: []validator.Int64{nonNegative{}}},
				}},
			"state": schema.StringAttribute{Optional: true, Computed: true, Default: stringdefault.StaticString(cellActive),
				Description: "ACTIVE (the default: takes new tenants), CORDONED (serves its tenants, takes no new ones) or DRAINING " +
					"(its tenants are moved out; create and update wait until the drain is done; a drain cut off by the update timeout goes on, " +
					"and the next apply resumes waiting for it). In place: UpdateCell, DrainCell. " +
					"While the live state is DRAINING (an operator's drain, or a drain that finished) or DOWN, an apply changes nothing: " +
					"the state keeps the live value, the plan is empty and a warning says why; end a drain with 'cellctl cell uncordon <id>'.",
				Validators: []validator.String{oneOfString{cellActive, cellCordoned, cellDraining}}},
			"wait_for_healthy": schema.BoolAttribute{Optional: true, Computed: true, Default: booldefault.StaticBool(false),
				Description: "When true, create and update block until the cell is HEALTHY (a leader and every expected member alive), within the timeouts."},
			"timeouts": timeouts.Attributes(ctx, timeouts.Opts{Create: true, Update: true, Delete: true}),
		},
	}
}

func (r *cellResource) Configure(_ context.Context, req resource.ConfigureRequest, _ *resource.ConfigureResponse) {
	if c, ok := req.ProviderData.(*apiClient); ok {
		r.c = c
	}
}

// cellStatePlan is the drift rule of state: given the state read from the
// control plane (prior) and the configured one (planned), the value to
// plan and, when the configured one is not followed, why (a warning). A
// DRAINING cell is never made ACTIVE or CORDONED by an apply (that would
// stop an operator's drain), and a DOWN cell is reported, never
// corrected: the plan keeps the live value, so it is empty.
func cellStatePlan(prior, planned string) (string, string) {
	if prior == planned || planned == "" {
		return planned, ""
	}
	switch prior {
	case cellDraining:
		return prior, fmt.Sprintf("The cell is DRAINING (an operator's drain, or a finished one); the configured %s is not applied, because an apply never stops a drain. "+
			"The plan keeps DRAINING. To end the drain, run 'cellctl cell uncordon <id>'; then the next apply sets %s.", planned, planned)
	case cellDown:
		return prior, fmt.Sprintf("The cell is DOWN (declared by an operator or the failover policy); the configured %s is not applied: "+
			"a DOWN cell is reported, never corrected by Terraform. It changes through failover (cellctl).", planned)
	}
	return planned, ""
}

// ModifyPlan applies the drift rule of state (cellStatePlan) to an
// update.
func (r *cellResource) ModifyPlan(ctx context.Context, req resource.ModifyPlanRequest, resp *resource.ModifyPlanResponse) {
	if req.State.Raw.IsNull() || req.Plan.Raw.IsNull() {
		return
	}
	var prior, plan types.String
	resp.Diagnostics.Append(req.State.GetAttribute(ctx, path.Root("state"), &prior)...)
	resp.Diagnostics.Append(req.Plan.GetAttribute(ctx, path.Root("state"), &plan)...)
	if resp.Diagnostics.HasError() || plan.IsUnknown() || prior.IsNull() {
		return
	}
	keep, why := cellStatePlan(prior.ValueString(), plan.ValueString())
	if why == "" {
		return
	}
	resp.Diagnostics.AddAttributeWarning(path.Root("state"), "Cell state not changed", why)
	resp.Diagnostics.Append(resp.Plan.SetAttribute(ctx, path.Root("state"), types.StringValue(keep))...)
}

// cellFields maps CreateCell's and UpdateCell's field violations to
// attributes.
var cellFields = map[string]path.Path{
	"id": path.Root("id"), "region": path.Root("region"), "expected_members": path.Root("expected_members"),
	"capacity": path.Root("capacity"), "state": path.Root("state"), "cell": path.Root("id"),
}

// cellReasons maps the error contract's reasons to the cell's attributes.
var cellReasons = map[cperr.Reason]path.Path{
	cperr.AlreadyExists:  path.Root("id"),
	cperr.CellNotFound:   path.Root("id"),
	cperr.CellNotEmpty:   path.Root("id"),
	cperr.RegionNotFound: path.Root("region"),
	cperr.CellNotActive:  path.Root("state"),
	cperr.NoCapacity:     path.Root("capacity"),
}

// addReasonErr adds err as a diagnostic on the attribute its field
// violation (fields) or its reason (reasons) names, else on the resource
// (the reasons' hints in detail).
func addReasonErr(diags *diag.Diagnostics, summary string, err error, fields map[string]path.Path, reasons map[cperr.Reason]path.Path) {
	var ce *cperr.Error
	if !errors.As(err, &ce) {
		diags.AddError(summary, err.Error())
		return
	}
	for _, v := range ce.Violations {
		// policy.regions[2] is reported on regions.
		f, _, _ := strings.Cut(v.Field, "[")
		if p, ok := fields[f]; ok {
			diags.AddAttributeError(p, summary, fmt.Sprintf("%s: %s", v.Field, v.Description))
			return
		}
	}
	detail := ce.Error()
	switch ce.Reason {
	case cperr.AlreadyExists:
		detail += "\n\nTo manage the existing object, import it (an import block, or terraform import)."
	case cperr.CellNotEmpty:
		var left []string
		for _, k := range []string{cperr.MetaTenants, cperr.MetaNodes, cperr.MetaOperations} {
			if v := ce.Metadata[k]; v != "" {
				left = append(left, k+": "+v)
			}
		}
		if len(left) > 0 {
			detail += "\n\nStill using the cell: " + strings.Join(left, "; ") + "."
		}
		detail += "\n\nNothing was destroyed. Drain the cell (state = \"DRAINING\"), stop its nodes, then destroy it; " +
			"or stop managing it with a removed block (lifecycle { destroy = false })."
	case cperr.PermissionDenied:
		detail += "\n\nThe provider's operator certificate needs the admin role to change the platform."
	}
	if p, ok := reasons[ce.Reason]; ok {
		diags.AddAttributeError(p, summary, detail)
		return
	}
	diags.AddError(summary, detail)
}

// capacityToProto is capacity as the API takes it (null: unbounded).
func capacityToProto(o types.Object) *cpv1.CellCapacity {
	if o.IsNull() || o.IsUnknown() {
		return &cpv1.CellCapacity{}
	}
	a := o.Attributes()
	i := func(k string) uint64 {
		if v, ok := a[k].(types.Int64); ok && v.ValueInt64() > 0 {
			return uint64(v.ValueInt64())
		}
		return 0
	}
	return &cpv1.CellCapacity{MaxTenants: i("max_tenants"), MaxBytes: i("max_bytes")}
}

// capacityFromProto is the capacity read, as Terraform sees it: an
// unbounded capacity reads as null while the prior value is null (so an
// omitted block stays omitted).
func capacityFromProto(c *cpv1.CellCapacity, prior types.Object) types.Object {
	if c.GetMaxTenants() == 0 && c.GetMaxBytes() == 0 && (prior.IsNull() || prior.IsUnknown()) {
		return types.ObjectNull(capacityAttrTypes)
	}
	return types.ObjectValueMust(capacityAttrTypes, map[string]attr.Value{
		"max_tenants": types.Int64Value(int64(c.GetMaxTenants())), "max_bytes": types.Int64Value(int64(c.GetMaxBytes())),
	})
}

// cellStateName is a cell state without its prefix: CELL_STATE_ACTIVE →
// ACTIVE.
func cellStateName(s cpv1.CellState) string { return trimEnum(s.String(), "CELL_STATE_") }

// toModel fills the attributes the control plane owns from c, keeping the
// configuration-only ones (wait_for_healthy, timeouts) of prior.
func cellToModel(c *cpv1.Cell, prior cellModel) cellModel {
	m := prior
	m.ID = types.StringValue(c.GetId())
	m.Region = types.StringValue(c.GetRegion())
	em := int64(c.GetExpectedMembers())
	if em == 0 {
		em = defaultExpectedMembers
	}
	m.ExpectedMembers = types.Int64Value(em)
	m.Capacity = capacityFromProto(c.GetCapacity(), prior.Capacity)
	m.State = types.StringValue(cellStateName(c.GetState()))
	if m.WaitForHealthy.IsNull() || m.WaitForHealthy.IsUnknown() {
		m.WaitForHealthy = types.BoolValue(false)
	}
	if m.Timeouts.IsNull() || m.Timeouts.IsUnknown() {
		m.Timeouts = timeouts.Value{Object: types.ObjectNull(map[string]attr.Type{"create": types.StringType, "update": types.StringType, "delete": types.StringType})}
	}
	return m
}

// getCell reads a cell with its live status.
func getCell(ctx context.Context, c *apiClient, id string) (*cpv1.CellStatus, error) {
	out, err := call(ctx, c, func(ctx context.Context, api cpv1.ControlPlaneServiceClient) (*cpv1.GetCellResponse, error) {
		return api.GetCell(ctx, &cpv1.GetCellRequest{Id: id})
	})
	if err != nil {
		return nil, err
	}
	return out.GetCell(), nil
}

// pollErr sorts a poll's read error: retryable ones wait, others end the
// poll.
func pollErr(err error) error {
	if retryable(err) {
		return err
	}
	return retry.Permanent(err)
}

// waitHealthy polls until the cell is HEALTHY or ctx ends.
func waitHealthy(ctx context.Context, c *apiClient, id string) error {
	// The last health seen is kept: when the deadline cuts a GetCell
	// short, the error still says what the cell was.
	var seen error
	cutShort := false
	err := poll(ctx, func() error {
		cs, err := getCell(ctx, c, id)
		if err != nil {
			cutShort = true
			return pollErr(err)
		}
		cutShort = false
		if h := cs.GetHealth(); h != cpv1.CellHealth_CELL_HEALTH_HEALTHY {
			seen = fmt.Errorf("cell %s is %s (%d of %d members registered)", id, trimEnum(h.String(), "CELL_HEALTH_"),
				len(cs.GetNodes()), cs.GetCell().GetExpectedMembers())
			return seen
		}
		return nil
	})
	if err != nil && cutShort && seen != nil {
		return fmt.Errorf("%w (last seen: %v)", err, seen)
	}
	return err
}

// drainProgress says what is left of a cell's drain: the tenants it owns
// and the moves out of it still running.
func drainProgress(ctx context.Context, c *apiClient, id string) (tenants, moves int, err error) {
	req := &cpv1.ListTenantsRequest{Cell: id, PageSize: 1000}
	for {
		page, err := call(ctx, c, func(ctx context.Context, api cpv1.ControlPlaneServiceClient) (*cpv1.ListTenantsResponse, error) {
			return api.ListTenants(ctx, req)
		})
		if err != nil {
			return 0, 0, err
		}
		tenants += len(page.GetTenants())
		if page.GetNextPageToken() == "" || page.GetNextPageToken() == req.PageToken {
			break
		}
		req.PageToken = page.GetNextPageToken()
	}
	out, err := call(ctx, c, func(ctx context.Context, api cpv1.ControlPlaneServiceClient) (*cpv1.ListMovesResponse, error) {
		return api.ListMoves(ctx, &cpv1.ListMovesRequest{Cell: id})
	})
	if err != nil {
		return 0, 0, err
	}
	for _, mv := range out.GetMoves() {
		if mv.GetSourceCell() == id {
			moves++
		}
	}
	return tenants, moves, nil
}

// waitDrained polls until the cell owns no tenant and no move out of it
// runs (the drain is done), or ctx ends; it fails at once if the cell
// stops DRAINING (an operator ended the drain).
func waitDrained(ctx context.Context, c *apiClient, id string) error {
	return poll(ctx, func() error {
		cs, err := getCell(ctx, c, id)
		if err != nil {
			return pollErr(err)
		}
		tenants, moves, err := drainProgress(ctx, c, id)
		if err != nil {
			return pollErr(err)
		}
		if tenants == 0 && moves == 0 {
			return nil
		}
		if st := cs.GetCell().GetState(); st != cpv1.CellState_CELL_STATE_DRAINING {
			return retry.Permanent(fmt.Errorf("the drain of cell %s stopped: the cell is %s with %d tenant(s) left", id, cellStateName(st), tenants))
		}
		return fmt.Errorf("cell %s is draining: %d tenant(s) left, %d move(s) running", id, tenants, moves)
	})
}

// drain starts a drain (DrainCell; again on a DRAINING cell it only
// reports progress) and waits until it is done.
func drain(ctx context.Context, c *apiClient, id string) error {
	if _, err := call(ctx, c, func(ctx context.Context, api cpv1.ControlPlaneServiceClient) (*cpv1.DrainCellResponse, error) {
		return api.DrainCell(ctx, &cpv1.DrainCellRequest{Cell: id})
	}); err != nil {
		return err
	}
	return waitDrained(ctx, c, id)
}

// converge brings the live cell (live) to plan's state and capacity, then
// waits for health when asked. capacityChanged: plan's capacity differs
// from what is stored.
//
// drainRunning reports that the drain waited for was cut off by the
// timeout while the cell is still DRAINING: it goes on in the control
// plane, and the next apply resumes waiting (see drainPendingKey).
func (r *cellResource) converge(ctx context.Context, plan cellModel, live *cpv1.Cell, capacityChanged bool, diags *diag.Diagnostics) (drainRunning bool) {
	id := plan.ID.ValueString()
	want, have := plan.State.ValueString(), cellStateName(live.GetState())
	ureq := &cpv1.UpdateCellRequest{Id: id}
	if capacityChanged {
		ureq.Capacity = capacityToProto(plan.Capacity)
	}
	if want != have {
		switch {
		case have == cellDraining || have == cellDown:
			// Changed since the plan: never undone by an apply.
			diags.AddAttributeError(path.Root("state"), "Cell state changed outside Terraform",
				fmt.Sprintf("Cell %s became %s after the plan; an apply does not change a %s cell. Run plan again.", id, have, have))
			return false
		case want == cellActive:
			ureq.State = cpv1.CellState_CELL_STATE_ACTIVE
		case want == cellCordoned:
			ureq.State = cpv1.CellState_CELL_STATE_CORDONED
		}
	}
	if ureq.Capacity != nil || ureq.State != cpv1.CellState_CELL_STATE_UNSPECIFIED {
		if _, err := call(ctx, r.c, func(ctx context.Context, api cpv1.ControlPlaneServiceClient) (*cpv1.UpdateCellResponse, error) {
			return api.UpdateCell(ctx, ureq)
		}); err != nil {
			addReasonErr(diags, "Cannot update the cell", err, cellFields, cellReasons)
			return false
		}
	}
	if want == cellDraining {
		wait := waitDrained
		if have != cellDraining {
			wait = drain
		}
		if err := wait(ctx, r.c, id); err != nil {
			diags.AddAttributeError(path.Root("state"), "Cell not drained within the timeout",
				err.Error()+"\n\nThe drain goes on in the control plane; the next apply waits for it again "+
					"(or follow it with 'cellctl cell drain "+id+" --wait').")
			return errors.Is(err, context.DeadlineExceeded)
		}
	}
	if plan.WaitForHealthy.ValueBool() {
		if err := waitHealthy(ctx, r.c, id); err != nil {
			diags.AddAttributeError(path.Root("wait_for_healthy"), "Cell not HEALTHY within the timeout", err.Error())
		}
	}
	return false
}

func (r *cellResource) Create(ctx context.Context, req resource.CreateRequest, resp *resource.CreateResponse) {
	var plan cellModel
	resp.Diagnostics.Append(req.Plan.Get(ctx, &plan)...)
	if resp.Diagnostics.HasError() {
		return
	}
	limit, d := plan.Timeouts.Create(ctx, defaultCellCreateTimeout)
	resp.Diagnostics.Append(d...)
	if resp.Diagnostics.HasError() {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	out, err := call(ctx, r.c, func(ctx context.Context, api cpv1.ControlPlaneServiceClient) (*cpv1.CreateCellResponse, error) {
		return api.CreateCell(ctx, &cpv1.CreateCellRequest{Id: plan.ID.ValueString(), Region: plan.Region.ValueString(),
			ExpectedMembers: uint32(plan.ExpectedMembers.ValueInt64()), Capacity: capacityToProto(plan.Capacity)})
	})
	if err != nil {
		addReasonErr(&resp.Diagnostics, "Cannot create the cell", err, cellFields, cellReasons)
		return
	}
	r.converge(ctx, plan, out.GetCell(), false, &resp.Diagnostics)
	r.save(ctx, plan, &resp.State, &resp.Diagnostics)
}

// save reads the cell back into st. On an earlier error it still saves
// what exists (Terraform then taints a created cell, rather than losing
// track of it).
func (r *cellResource) save(ctx context.Context, plan cellModel, st interface {
	Set(context.Context, any) diag.Diagnostics
}, diags *diag.Diagnostics) {
	cs, err := getCell(ctx, r.c, plan.ID.ValueString())
	if err != nil {
		if !diags.HasError() {
			diags.AddError("Cannot read the cell back", err.Error())
		}
		return
	}
	m := cellToModel(cs.GetCell(), plan)
	if !diags.HasError() && m.State.ValueString() != plan.State.ValueString() {
		// Changed by someone else while the apply ran.
		diags.AddAttributeError(path.Root("state"), "Cell state changed outside Terraform",
			fmt.Sprintf("cell %s is %s now, not %s", plan.ID.ValueString(), m.State.ValueString(), plan.State.ValueString()))
	}
	diags.Append(st.Set(ctx, m)...)
}

func (r *cellResource) Read(ctx context.Context, req resource.ReadRequest, resp *resource.ReadResponse) {
	var state cellModel
	resp.Diagnostics.Append(req.State.Get(ctx, &state)...)
	if resp.Diagnostics.HasError() {
		return
	}
	cs, err := getCell(ctx, r.c, state.ID.ValueString())
	if isNotFound(err) {
		resp.State.RemoveResource(ctx)
		return
	}
	if err != nil {
		resp.Diagnostics.AddError("Cannot read the cell", err.Error())
		return
	}
	m := cellToModel(cs.GetCell(), state)
	pending, d := req.Private.GetKey(ctx, drainPendingKey)
	resp.Diagnostics.Append(d...)
	if len(pending) > 0 {
		keep, err := keepPendingDrain(ctx, r.c, cs.GetCell())
		if err != nil {
			resp.Diagnostics.AddError("Cannot read the cell's drain", err.Error())
			return
		}
		if keep {
			m.State = state.State
		} else {
			resp.Diagnostics.Append(resp.Private.SetKey(ctx, drainPendingKey, nil)...)
		}
	}
	resp.Diagnostics.Append(resp.State.Set(ctx, m)...)
}

func (r *cellResource) Update(ctx context.Context, req resource.UpdateRequest, resp *resource.UpdateResponse) {
	var plan, prior cellModel
	resp.Diagnostics.Append(req.Plan.Get(ctx, &plan)...)
	resp.Diagnostics.Append(req.State.Get(ctx, &prior)...)
	if resp.Diagnostics.HasError() {
		return
	}
	limit, d := plan.Timeouts.Update(ctx, defaultCellUpdateTimeout)
	resp.Diagnostics.Append(d...)
	if resp.Diagnostics.HasError() {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	cs, err := getCell(ctx, r.c, plan.ID.ValueString())
	if err != nil {
		addReasonErr(&resp.Diagnostics, "Cannot read the cell", err, cellFields, cellReasons)
		return
	}
	changed := !capacityToProtoEqual(plan.Capacity, cs.GetCell().GetCapacity())
	running := r.converge(ctx, plan, cs.GetCell(), changed, &resp.Diagnostics)
	r.save(ctx, plan, &resp.State, &resp.Diagnostics)
	if running && prior.State.ValueString() != cellDraining {
		// Resume on the next apply: the state keeps the value from before
		// the drain until the drain is done (Read), so the next plan
		// waits for it again.
		resp.Diagnostics.Append(resp.State.SetAttribute(ctx, path.Root("state"), prior.State)...)
		resp.Diagnostics.Append(resp.Private.SetKey(ctx, drainPendingKey, []byte(`{"pending":true}`))...)
		return
	}
	resp.Diagnostics.Append(resp.Private.SetKey(ctx, drainPendingKey, nil)...)
}

// drainPendingKey is the private-state key set while a drain an apply
// started and stopped waiting for (its timeout) is not done: Read then
// keeps the state from before the drain, so the next plan shows the
// change to DRAINING again and the apply resumes waiting (it does not
// start a second drain: the cell is DRAINING already).
const drainPendingKey = "drain_pending"

// keepPendingDrain reports whether Read should keep the prior state
// because a drain an apply started is still running.
func keepPendingDrain(ctx context.Context, c *apiClient, live *cpv1.Cell) (bool, error) {
	if live.GetState() != cpv1.CellState_CELL_STATE_DRAINING {
		return false, nil // ended by an operator (or DOWN): report it
	}
	tenants, moves, err := drainProgress(ctx, c, live.GetId())
	if err != nil {
		return false, err
	}
	return tenants > 0 || moves > 0, nil
}

// capacityToProtoEqual reports whether o means the stored capacity c.
func capacityToProtoEqual(o types.Object, c *cpv1.CellCapacity) bool {
	p := capacityToProto(o)
	return p.GetMaxTenants() == c.GetMaxTenants() && p.GetMaxBytes() == c.GetMaxBytes()
}

func (r *cellResource) Delete(ctx context.Context, req resource.DeleteRequest, resp *resource.DeleteResponse) {
	var state cellModel
	resp.Diagnostics.Append(req.State.Get(ctx, &state)...)
	if resp.Diagnostics.HasError() {
		return
	}
	limit, d := state.Timeouts.Delete(ctx, defaultCellDeleteTimeout)
	resp.Diagnostics.Append(d...)
	if resp.Diagnostics.HasError() {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	id := state.ID.ValueString()
	err := poll(ctx, func() error {
		_, err := call(ctx, r.c, func(ctx context.Context, api cpv1.ControlPlaneServiceClient) (*cpv1.DeleteCellResponse, error) {
			return api.DeleteCell(ctx, &cpv1.DeleteCellRequest{Id: id})
		})
		switch {
		case err == nil || isNotFound(err):
			return nil
		case retryable(err) || onlyDrainRecord(err, id):
			return err
		}
		return retry.Permanent(err)
	})
	if err != nil {
		addReasonErr(&resp.Diagnostics, "Cannot destroy the cell", err, cellFields, cellReasons)
	}
}

// onlyDrainRecord reports whether err is a CELL_NOT_EMPTY that names
// only the cell's finished drain, whose record the controller removes at
// its next pass.
func onlyDrainRecord(err error, id string) bool {
	var ce *cperr.Error
	return errors.As(err, &ce) && ce.Reason == cperr.CellNotEmpty && ce.Metadata[cperr.MetaTenants] == "" &&
		ce.Metadata[cperr.MetaNodes] == "" && ce.Metadata[cperr.MetaOperations] == "drain-"+id
}

func (r *cellResource) ImportState(ctx context.Context, req resource.ImportStateRequest, resp *resource.ImportStateResponse) {
	if err := ids.Check("id", req.ID, ids.MaxLen); err != nil {
		resp.Diagnostics.AddError("Invalid import id", fmt.Sprintf("want a cell id: %v", err))
		return
	}
	resource.ImportStatePassthroughID(ctx, path.Root("id"), req, resp)
	resp.Diagnostics.Append(resp.State.SetAttribute(ctx, path.Root("wait_for_healthy"), false)...)
}

// ---- small schema helpers ----

// immutableInt64 is immutable for an int64 attribute.
type immutableInt64 struct{ why string }

func (m immutableInt64) Description(context.Context) string {
	return "cannot change after create; a change is refused at plan time (never a replace)"
}

func (m immutableInt64) MarkdownDescription(ctx context.Context) string { return m.Description(ctx) }

func (m immutableInt64) PlanModifyInt64(_ context.Context, req planmodifier.Int64Request, resp *planmodifier.Int64Response) {
	if req.State.Raw.IsNull() || req.Plan.Raw.IsNull() || req.PlanValue.IsUnknown() || req.StateValue.IsNull() {
		return
	}
	if req.PlanValue.Equal(req.StateValue) {
		return
	}
	resp.Diagnostics.AddAttributeError(req.Path, "Cannot change an immutable attribute",
		fmt.Sprintf("%s cannot change from %s to %s: %s", req.Path, req.StateValue, req.PlanValue, m.why))
}

// oneOfString accepts only the listed values.
type oneOfString []string

func (o oneOfString) Description(context.Context) string {
	return "one of " + strings.Join(o, ", ")
}

func (o oneOfString) MarkdownDescription(ctx context.Context) string { return o.Description(ctx) }

func (o oneOfString) ValidateString(ctx context.Context, req validator.StringRequest, resp *validator.StringResponse) {
	if req.ConfigValue.IsNull() || req.ConfigValue.IsUnknown() || slices.Contains(o, req.ConfigValue.ValueString()) {
		return
	}
	resp.Diagnostics.AddAttributeError(req.Path, "Invalid value", fmt.Sprintf("%s is %q: want %s", req.Path, req.ConfigValue.ValueString(), o.Description(ctx)))
}

// oneOfInt64 accepts only the listed values.
type oneOfInt64 []int64

func (o oneOfInt64) Description(context.Context) string {
	s := make([]string, len(o))
	for i, v := range o {
		s[i] = fmt.Sprint(v)
	}
	return "one of " + strings.Join(s, ", ")
}

func (o oneOfInt64) MarkdownDescription(ctx context.Context) string { return o.Description(ctx) }

func (o oneOfInt64) ValidateInt64(ctx context.Context, req validator.Int64Request, resp *validator.Int64Response) {
	if req.ConfigValue.IsNull() || req.ConfigValue.IsUnknown() || slices.Contains(o, req.ConfigValue.ValueInt64()) {
		return
	}
	resp.Diagnostics.AddAttributeError(req.Path, "Invalid value", fmt.Sprintf("%s is %d: want %s", req.Path, req.ConfigValue.ValueInt64(), o.Description(ctx)))
}

// nonNegative accepts 0 and more.
type nonNegative struct{}

func (nonNegative) Description(context.Context) string { return "at least 0" }

func (v nonNegative) MarkdownDescription(ctx context.Context) string { return v.Description(ctx) }

func (nonNegative) ValidateInt64(_ context.Context, req validator.Int64Request, resp *validator.Int64Response) {
	if req.ConfigValue.IsNull() || req.ConfigValue.IsUnknown() || req.ConfigValue.ValueInt64() >= 0 {
		return
	}
	resp.Diagnostics.AddAttributeError(req.Path, "Invalid value", fmt.Sprintf("%s is %d: want at least 0", req.Path, req.ConfigValue.ValueInt64()))
}
