package provider

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/terraform-plugin-framework-timeouts/resource/timeouts"
	"github.com/hashicorp/terraform-plugin-framework/attr"
	"github.com/hashicorp/terraform-plugin-framework/diag"
	"github.com/hashicorp/terraform-plugin-framework/path"
	"github.com/hashicorp/terraform-plugin-framework/resource"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/booldefault"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/float64planmodifier"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/int64planmodifier"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/objectplanmodifier"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/planmodifier"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/stringplanmodifier"
	"github.com/hashicorp/terraform-plugin-framework/schema/validator"
	"github.com/hashicorp/terraform-plugin-framework/types"

	"github.com/cellplane/cellplane/internal/cperr"
	"github.com/cellplane/cellplane/internal/retry"
	cpv1 "github.com/cellplane/cellplane/proto/cellplane/controlplane/v1"
)

// Default time limits of a tenant's long operations (the timeouts block).
const (
	defaultTenantCreateTimeout = 10 * time.Minute
	defaultTenantUpdateTimeout = 30 * time.Minute
	defaultTenantDeleteTimeout = 30 * time.Minute
	// maxWorkflowCall bounds one CreateTenant or DeleteTenant call (the
	// server waits for the workflow up to the call's deadline); past it
	// the provider polls GetTenant.
	maxWorkflowCall = 2 * time.Minute
)

// replicationStreaming is a standby's replication state once bootstrapped
// (ReplicationLag.state).
const replicationStreaming = "STREAMING"

type tenantResource struct{ c *apiClient }

type tenantModel struct {
	ID                 types.String   `tfsdk:"id"`
	HomeRegion         types.String   `tfsdk:"home_region"`
	StandbyRegion      types.String   `tfsdk:"standby_region"`
	PlacementCell      types.String   `tfsdk:"placement_cell"`
	Limits             types.Object   `tfsdk:"limits"`
	DeletionProtection types.Bool     `tfsdk:"deletion_protection"`
	CreateTime         types.String   `tfsdk:"create_time"`
	Timeouts           timeouts.Value `tfsdk:"timeouts"`
}

// limitsAttrTypes are the attributes of limits (cpv1.TenantLimits).
var limitsAttrTypes = map[string]attr.Type{
	"rate": types.Float64Type, "burst": types.Int64Type, "max_bytes": types.Int64Type,
	"bytes_rate": types.Float64Type, "bytes_burst": types.Int64Type,
}

func newTenantResource() resource.Resource { return &tenantResource{} }

var (
	_ resource.ResourceWithImportState = (*tenantResource)(nil)
	_ resource.ResourceWithModifyPlan  = (*tenantResource)(nil)
)

func (r *tenantResource) Metadata(_ context.Context, req resource.MetadataRequest, resp *resource.MetadataResponse) {
	resp.TypeName = req.ProviderTypeName + "_tenant"
}

func (r *tenantResource) Schema(ctx context.Context, _ resource.SchemaRequest, resp *resource.SchemaResponse) {
	keep := func() []planmodifier.Int64 { return []planmodifier.Int64{int64planmodifier.UseStateForUnknown()} }
	keepF := func() []planmodifier.Float64 { return []planmodifier.Float64{float64planmodifier.UseStateForUnknown()} }
	resp.Schema = schema.Schema{
		Description: "A tenant: its home region, its DR (standby) region and its limits. Create blocks until the tenant is ACTIVE " +
			"(and its standby STREAMING); destroy waits until its data is gone and is refused at plan time while deletion_protection is true. " +
			"Import by id: terraform import cellplane_tenant.t acme.",
		Attributes: map[string]schema.Attribute{
			"id": schema.StringAttribute{Required: true, Description: "The tenant's id. Cannot change: a change is refused at plan time, never a replace.",
				Validators:    []validator.String{idValidator{}},
				PlanModifiers: []planmodifier.String{immutable("replacing a tenant would delete its data; declare a new tenant instead")}},
			"home_region": schema.StringAttribute{Required: true, Description: "The region the tenant is created in. Cannot change (refused at plan time).",
				Validators:    []validator.String{idValidator{}},
				PlanModifiers: []planmodifier.String{immutable("a tenant cannot be re-homed; a switchover to the standby region is done with cellctl and is not drift")}},
			"standby_region": schema.StringAttribute{Optional: true,
				Description: "The DR region of the pair {home_region, standby_region}; null: no standby. A switchover (the tenant served from this region, " +
					"its standby at home) is not drift. After an emergency promotion (no standby) the next apply re-protects the tenant in the pair's other region.",
				Validators: []validator.String{idValidator{}}},
			"placement_cell": schema.StringAttribute{Optional: true,
				Description: "The cell Terraform places the tenant on. At create: the tenant is created on it (it must be ACTIVE, in home_region, " +
					"under capacity). A change (or setting it later) starts a live move (StartMove) and blocks until the move is DONE, within " +
					"timeouts.update; an interrupted move (timeout, Ctrl-C, killed process) is resumed by the next apply, never started twice. " +
					"Drift rule: this is the placement Terraform last asked for, not where the tenant is served now. Refresh never changes it, " +
					"so a move by an operator (cellctl tenant move, a drain) or a switchover or promotion is not drift and gives no diff; " +
					"the live placement is in data.cellplane_tenant (cell). To move the tenant again, set another cell. " +
					"Null: Terraform does not manage the placement (removing it moves nothing).",
				Validators: []validator.String{idValidator{}}},
			"limits": schema.SingleNestedAttribute{Optional: true, Computed: true,
				Description:   "Rate and size limits (0: the component default), changed in place (UpdateTenant). A max_bytes change reaches the tenant's cell (its quota) before the apply returns.",
				PlanModifiers: []planmodifier.Object{objectplanmodifier.UseStateForUnknown()},
				Attributes: map[string]schema.Attribute{
					"rate":        schema.Float64Attribute{Optional: true, Computed: true, PlanModifiers: keepF(), Description: "Requests per second."},
					"burst":       schema.Int64Attribute{Optional: true, Computed: true, PlanModifiers: keep(), Description: "Request burst."},
					"max_bytes":   schema.Int64Attribute{Optional: true, Computed: true, PlanModifiers: keep(), Description: "Stored bytes at most."},
					"bytes_rate":  schema.Float64Attribute{Optional: true, Computed: true, PlanModifiers: keepF(), Description: "Written bytes per second."},
					"bytes_burst": schema.Int64Attribute{Optional: true, Computed: true, PlanModifiers: keep(), Description: "Written bytes burst."},
				}},
			"deletion_protection": schema.BoolAttribute{Optional: true, Computed: true, Default: booldefault.StaticBool(true),
				Description: "The control plane's deletion protection of the tenant (Tenant.deletion_protection): sent at create, changed in place " +
					"(UpdateTenant). While true (the default) the control plane refuses to delete the tenant (DELETION_PROTECTED) and Terraform refuses " +
					"a destroy at plan time, before anything is destroyed; the value is in state, so removing the resource block does not lift it. " +
					"Set false and apply first. Drift rule: refresh reads the control plane's value, so protection turned off or on outside Terraform " +
					"(cellctl tenant update --deletion-protection) shows in the plan, and apply sets it back to the configuration's value. " +
					"A destroy that reaches a tenant protected since the refresh is refused by the control plane (DELETION_PROTECTED) and destroys nothing."},
			"create_time": schema.StringAttribute{Computed: true, Description: "When the tenant was created (RFC 3339).",
				PlanModifiers: []planmodifier.String{stringplanmodifier.UseStateForUnknown()}},
			"timeouts": timeouts.Attributes(ctx, timeouts.Opts{Create: true, Update: true, Delete: true}),
		},
	}
}

func (r *tenantResource) Configure(_ context.Context, req resource.ConfigureRequest, _ *resource.ConfigureResponse) {
	if c, ok := req.ProviderData.(*apiClient); ok {
		r.c = c
	}
}

// ModifyPlan holds the tenant's plan-time safety rules: a destroy (or a
// replace) of a protected tenant is refused before anything is destroyed;
// standby_region must differ from home_region; a limits change needs
// UpdateTenant. (id and home_region: the immutable plan modifier.)
func (r *tenantResource) ModifyPlan(ctx context.Context, req resource.ModifyPlanRequest, resp *resource.ModifyPlanResponse) {
	var state, plan tenantModel
	if !req.State.Raw.IsNull() {
		resp.Diagnostics.Append(req.State.Get(ctx, &state)...)
	}
	if !req.Plan.Raw.IsNull() {
		resp.Diagnostics.Append(req.Plan.Get(ctx, &plan)...)
	}
	if resp.Diagnostics.HasError() {
		return
	}
	resp.Diagnostics.Append(tenantPlanRules(req.State.Raw.IsNull(), req.Plan.Raw.IsNull(), state, plan)...)
	if req.Plan.Raw.IsNull() && !resp.Diagnostics.HasError() {
		resp.Diagnostics.AddWarning("Destroying a tenant deletes its data",
			fmt.Sprintf("Tenant %s, its standby copy and all its API keys will be deleted; this cannot be undone.", state.ID.ValueString()))
	}
}

// tenantPlanRules are ModifyPlan's checks as a function of the prior
// state and the plan (noState: a create; noPlan: a destroy).
func tenantPlanRules(noState, noPlan bool, state, plan tenantModel) diag.Diagnostics {
	var diags diag.Diagnostics
	if noPlan {
		if !noState && !state.DeletionProtection.IsNull() && state.DeletionProtection.ValueBool() {
			diags.AddAttributeError(path.Root("deletion_protection"), "Tenant is protected from deletion",
				fmt.Sprintf("Tenant %s has deletion_protection = true: the plan destroys nothing. To delete it (and its data), set deletion_protection = false, apply, then destroy.",
					state.ID.ValueString()))
		}
		return diags
	}
	if !plan.StandbyRegion.IsNull() && !plan.StandbyRegion.IsUnknown() && plan.StandbyRegion.Equal(plan.HomeRegion) {
		diags.AddAttributeError(path.Root("standby_region"), "Invalid standby_region",
			"standby_region must differ from home_region: a standby in the same region does not survive the region's loss")
	}
	if !noState && !haveUpdateTenant && !plan.DeletionProtection.IsUnknown() && !plan.DeletionProtection.Equal(state.DeletionProtection) {
		diags.AddAttributeError(path.Root("deletion_protection"), "Cannot change a tenant's deletion protection yet",
			errNeedsRPC("changing the deletion protection of tenant "+state.ID.ValueString(), "UpdateTenant").Error())
	}
	if !noState && !plan.Limits.IsUnknown() && !plan.Limits.IsNull() && !limitsEqual(plan.Limits, state.Limits) {
		switch {
		case !haveUpdateTenant:
			diags.AddAttributeError(path.Root("limits"), "Cannot change a tenant's limits yet", errNeedsRPC("changing the limits of tenant "+state.ID.ValueString(), "UpdateTenant").Error())
		}
	}
	return diags
}

// limitsEqual compares two limits objects on their known attributes.
func limitsEqual(a, b types.Object) bool {
	if a.IsNull() || b.IsNull() {
		return a.IsNull() == b.IsNull()
	}
	bv := b.Attributes()
	for k, v := range a.Attributes() {
		if v.IsUnknown() {
			continue
		}
		if !v.Equal(bv[k]) {
			return false
		}
	}
	return true
}

func limitsToProto(o types.Object) *cpv1.TenantLimits {
	if o.IsNull() || o.IsUnknown() {
		return nil
	}
	a := o.Attributes()
	f := func(k string) float64 {
		if v, ok := a[k].(types.Float64); ok {
			return v.ValueFloat64()
		}
		return 0
	}
	i := func(k string) int64 {
		if v, ok := a[k].(types.Int64); ok {
			return v.ValueInt64()
		}
		return 0
	}
	return &cpv1.TenantLimits{Rate: f("rate"), Burst: uint32(i("burst")), MaxBytes: uint64(i("max_bytes")), BytesRate: f("bytes_rate"), BytesBurst: uint32(i("bytes_burst"))}
}

func limitsFromProto(l *cpv1.TenantLimits) types.Object {
	return types.ObjectValueMust(limitsAttrTypes, map[string]attr.Value{
		"rate": types.Float64Value(l.GetRate()), "burst": types.Int64Value(int64(l.GetBurst())), "max_bytes": types.Int64Value(int64(l.GetMaxBytes())),
		"bytes_rate": types.Float64Value(l.GetBytesRate()), "bytes_burst": types.Int64Value(int64(l.GetBytesBurst())),
	})
}

// pairStandbyRegion is standby_region as Terraform sees it: the DR region
// of the pair {home, DR}, given where the tenant is served (ownerRegion)
// and where its standby is now (standbyRegion, "" for none). A switchover
// (the owner in the DR region, the standby at home) reads as the same
// pair: no drift. No standby (an emergency promotion, or none asked)
// reads as "" (null), so the plan re-protects.
func pairStandbyRegion(home, ownerRegion, standbyRegion string) string {
	switch {
	case standbyRegion == "":
		return ""
	case ownerRegion == home || ownerRegion == "":
		return standbyRegion
	case standbyRegion == home:
		return ownerRegion
	}
	return standbyRegion
}

// standbyTarget is the region SetStandby is asked for, for the pair
// {home, dr}: the member that is not where the tenant is served now.
func standbyTarget(home, dr, ownerRegion string) string {
	if ownerRegion == dr {
		return home
	}
	return dr
}

// tenantView is a tenant as read from the control plane, with the
// regions of its cells.
type tenantView struct {
	t             *cpv1.Tenant
	repl          *cpv1.ReplicationLag
	ownerRegion   string
	standbyRegion string
}

// readTenant reads a tenant and the regions of its owner and standby
// cells.
func readTenant(ctx context.Context, c *apiClient, id string) (tenantView, error) {
	out, err := call(ctx, c, func(ctx context.Context, api cpv1.ControlPlaneServiceClient) (*cpv1.GetTenantResponse, error) {
		return api.GetTenant(ctx, &cpv1.GetTenantRequest{Id: id})
	})
	if err != nil {
		return tenantView{}, err
	}
	v := tenantView{t: out.GetTenant(), repl: out.GetReplication()}
	if v.t.GetCell() == "" && v.t.GetStandbyCell() == "" {
		return v, nil
	}
	regions, err := cellRegions(ctx, c)
	if err != nil {
		return tenantView{}, err
	}
	v.ownerRegion, v.standbyRegion = regions[v.t.GetCell()], regions[v.t.GetStandbyCell()]
	return v, nil
}

// cellRegions maps every cell to its region.
func cellRegions(ctx context.Context, c *apiClient) (map[string]string, error) {
	out, err := call(ctx, c, func(ctx context.Context, api cpv1.ControlPlaneServiceClient) (*cpv1.ListCellsResponse, error) {
		return api.ListCells(ctx, &cpv1.ListCellsRequest{})
	})
	if err != nil {
		return nil, err
	}
	m := make(map[string]string, len(out.GetCells()))
	for _, cs := range out.GetCells() {
		m[cs.GetCell().GetId()] = cs.GetCell().GetRegion()
	}
	return m, nil
}

// toModel fills the attributes the control plane owns from v
// (deletion_protection among them: the server's value, so a change
// outside Terraform is drift), keeping the configuration-only ones
// (timeouts) of prior, and placement_cell: the placement Terraform
// asked for, never the live one (the drift rule: a move or failover
// outside Terraform is not drift).
func (v tenantView) toModel(prior tenantModel) tenantModel {
	m := prior
	m.ID = types.StringValue(v.t.GetId())
	m.HomeRegion = types.StringValue(v.t.GetHomeRegion())
	if sr := pairStandbyRegion(v.t.GetHomeRegion(), v.ownerRegion, v.standbyRegion); sr != "" {
		m.StandbyRegion = types.StringValue(sr)
	} else {
		m.StandbyRegion = types.StringNull()
	}
	m.Limits = limitsFromProto(v.t.GetLimits())
	m.CreateTime = timeString(v.t.GetCreateTime().AsTime())
	m.DeletionProtection = types.BoolValue(v.t.GetDeletionProtection())
	if m.Timeouts.IsNull() || m.Timeouts.IsUnknown() {
		m.Timeouts = timeouts.Value{Object: types.ObjectNull(m.Timeouts.AttributeTypes(context.Background()))}
	}
	return m
}

// usable says why a tenant is not usable yet ("" when it is): ACTIVE, and
// with a standby wanted, the standby STREAMING.
func (v tenantView) usable(wantStandby bool) string {
	if v.t.GetState() != cpv1.TenantState_TENANT_STATE_ACTIVE {
		return fmt.Sprintf("tenant %s is %s", v.t.GetId(), v.t.GetState())
	}
	if wantStandby {
		if v.t.GetStandbyCell() == "" {
			return fmt.Sprintf("tenant %s has no standby cell yet", v.t.GetId())
		}
		if v.repl.GetState() != replicationStreaming {
			return fmt.Sprintf("tenant %s's standby on %s is %q, not %s yet", v.t.GetId(), v.t.GetStandbyCell(), v.repl.GetState(), replicationStreaming)
		}
	}
	return ""
}

// waitUsable polls until the tenant is usable (see usable) or ctx ends.
func waitUsable(ctx context.Context, c *apiClient, id string, wantStandby bool) (tenantView, error) {
	var v tenantView
	err := poll(ctx, func() error {
		var err error
		v, err = readTenant(ctx, c, id)
		switch {
		case isNotFound(err):
			// A create whose workflow failed removes the record.
			return retry.Permanent(fmt.Errorf("tenant %s is gone: its create failed (see the control plane's log or 'cellctl tenant get')", id))
		case err != nil && retryable(err):
			return err
		case err != nil:
			return retry.Permanent(err)
		}
		if why := v.usable(wantStandby); why != "" {
			return errors.New(why)
		}
		return nil
	})
	return v, err
}

// tenantFields maps the control plane's field names of a tenant's
// requests to the resource's attributes.
var tenantFields = map[string]path.Path{
	"id": path.Root("id"), "home_region": path.Root("home_region"), "standby_region": path.Root("standby_region"),
	"limits": path.Root("limits"), "cell": path.Root("placement_cell"), "target_cell": path.Root("placement_cell"),
}

// Create creates the tenant with a request id derived from the request
// (ops.go), so that an apply after one that timed out or was killed
// resumes the same create (the control plane answers with the tenant the
// first call recorded and waits for it) instead of creating it twice or
// failing with ALREADY_EXISTS. A create that is not usable within
// timeouts.create leaves nothing in the state: the create goes on at the
// control plane, and the next apply (the same configuration) waits for it.
func (r *tenantResource) Create(ctx context.Context, req resource.CreateRequest, resp *resource.CreateResponse) {
	var plan tenantModel
	resp.Diagnostics.Append(req.Plan.Get(ctx, &plan)...)
	if resp.Diagnostics.HasError() {
		return
	}
	limit, d := plan.Timeouts.Create(ctx, defaultTenantCreateTimeout)
	resp.Diagnostics.Append(d...)
	if resp.Diagnostics.HasError() {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	release, err := r.c.acquire(ctx)
	if err != nil {
		resp.Diagnostics.AddError("Cannot create the tenant", err.Error())
		return
	}
	defer release()
	id := plan.ID.ValueString()
	creq := &cpv1.CreateTenantRequest{Id: id, HomeRegion: plan.HomeRegion.ValueString(), Limits: limitsToProto(plan.Limits),
		StandbyRegion: plan.StandbyRegion.ValueString(), Cell: plan.PlacementCell.ValueString(),
		DeletionProtection: plan.DeletionProtection.ValueBool()}
	creq.RequestId = createRequestID(creq)
	err = poll(ctx, func() error {
		cctx, ccancel := context.WithTimeout(ctx, maxWorkflowCall)
		defer ccancel()
		_, err := r.c.api.CreateTenant(cctx, creq)
		err = r.c.mapErr(err)
		switch {
		case err == nil:
			return nil
		case retryable(err) || (errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil):
			// Not placed within the call (CONTROLPLANE_UNAVAILABLE: the
			// server's workflow wait ended), or not recorded at all
			// (unreachable): send it again. The same request id makes
			// the retry wait for the create the first call recorded.
			return err
		}
		return retry.Permanent(err)
	})
	if err != nil {
		switch {
		case errors.Is(err, cperr.ErrAlreadyExists):
			resp.Diagnostics.AddAttributeError(path.Root("id"), "Cannot create the tenant",
				fmt.Sprintf("%v\n\nTenant %s exists and was not created by this configuration (or its settings changed since the apply that created it). "+
					"To manage it, import it: terraform import <address> %s (or an import block).", err, id, id))
		case ctx.Err() != nil:
			resp.Diagnostics.AddError("Tenant not created within the create timeout", timeoutDetail(id, limit, "create", lastSeen(ctx, r.c, id, err)))
		default:
			addErr(&resp.Diagnostics, "Cannot create the tenant", err, tenantFields)
		}
		return
	}
	v, err := waitUsable(ctx, r.c, id, !plan.StandbyRegion.IsNull())
	if err != nil {
		// Not saved: the state would be tainted and the next plan a
		// replace (a delete). The next apply resumes instead.
		resp.Diagnostics.AddError("Tenant not usable within the create timeout", timeoutDetail(id, limit, "create", err))
		return
	}
	resp.Diagnostics.Append(resp.State.Set(ctx, v.toModel(plan))...)
}

// lastSeen adds what the control plane says of tenant id now to err, the
// error of an operation whose time ran out (a short call of its own).
func lastSeen(ctx context.Context, c *apiClient, id string, err error) error {
	v, rerr := readTenant(context.WithoutCancel(ctx), c, id)
	switch {
	case rerr != nil:
		return err
	case v.t.GetOperationId() != "":
		return fmt.Errorf("%w; the tenant is %s on %q, busy with %s", err, v.t.GetState(), v.t.GetCell(), v.t.GetOperationId())
	}
	return fmt.Errorf("%w; the tenant is %s on %q", err, v.t.GetState(), v.t.GetCell())
}

// timeoutDetail explains a long operation that did not finish in time
// and what the next apply does about it.
func timeoutDetail(id string, limit time.Duration, op string, err error) string {
	return fmt.Sprintf("Tenant %s: the %s did not finish within %v (timeouts.%s): %v\n\n"+
		"The operation is recorded at the control plane and goes on. Nothing was started twice. Run apply again "+
		"(with the same configuration) to wait for it: it resumes the same operation. 'cellctl tenant get %s' shows where it is.",
		id, op, limit, op, err, id)
}

func (r *tenantResource) Read(ctx context.Context, req resource.ReadRequest, resp *resource.ReadResponse) {
	var state tenantModel
	resp.Diagnostics.Append(req.State.Get(ctx, &state)...)
	if resp.Diagnostics.HasError() {
		return
	}
	v, err := readTenant(ctx, r.c, state.ID.ValueString())
	if isNotFound(err) {
		resp.State.RemoveResource(ctx)
		return
	}
	if err != nil {
		resp.Diagnostics.AddError("Cannot read the tenant", err.Error())
		return
	}
	if v.t.GetState() == cpv1.TenantState_TENANT_STATE_DELETING {
		resp.Diagnostics.AddWarning("Tenant is being deleted", fmt.Sprintf("Tenant %s is DELETING (outside Terraform); it is dropped from the state.", v.t.GetId()))
		resp.State.RemoveResource(ctx)
		return
	}
	resp.Diagnostics.Append(resp.State.Set(ctx, v.toModel(state))...)
}

// Update changes what the plan changes, in order: deletion_protection
// (UpdateTenant, setProtection), the limits
// (UpdateTenant; a max_bytes change reaches the cell before it returns),
// the placement (a live move to placement_cell, waited until DONE), the
// standby. Each step that finished is saved even when a later one fails,
// so the next plan shows only what is left; a move or standby change
// that did not finish in time is resumed by the next apply.
func (r *tenantResource) Update(ctx context.Context, req resource.UpdateRequest, resp *resource.UpdateResponse) {
	var plan, state tenantModel
	resp.Diagnostics.Append(req.Plan.Get(ctx, &plan)...)
	resp.Diagnostics.Append(req.State.Get(ctx, &state)...)
	if resp.Diagnostics.HasError() {
		return
	}
	limit, d := plan.Timeouts.Update(ctx, defaultTenantUpdateTimeout)
	resp.Diagnostics.Append(d...)
	if resp.Diagnostics.HasError() {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	id := plan.ID.ValueString()
	// done is the state so far: the prior state with each finished step's
	// attributes taken from the plan.
	done := state
	done.Timeouts = plan.Timeouts
	save := func() { resp.Diagnostics.Append(resp.State.Set(ctx, done)...) }
	if !plan.DeletionProtection.IsUnknown() && !plan.DeletionProtection.IsNull() && !plan.DeletionProtection.Equal(state.DeletionProtection) {
		if err := setProtection(ctx, r.c, id, plan.DeletionProtection.ValueBool()); err != nil {
			addErrAt(&resp.Diagnostics, "Cannot change deletion_protection", err, tenantFields, path.Root("deletion_protection"))
			save()
			return
		}
		done.DeletionProtection = plan.DeletionProtection
	}
	if !plan.Limits.IsUnknown() && !limitsEqual(plan.Limits, state.Limits) {
		err := poll(ctx, func() error {
			// A max_bytes change returns once the cell enforces it
			// (CONTROLPLANE_UNAVAILABLE while it does not yet: the same
			// update again waits again).
			cctx, ccancel := context.WithTimeout(ctx, maxWorkflowCall)
			defer ccancel()
			err := r.c.mapErr(updateTenantLimits(cctx, r.c.api, id, limitsToProto(plan.Limits)))
			if err == nil || retryable(err) || (errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil) {
				return err
			}
			return retry.Permanent(err)
		})
		if err != nil {
			addErrAt(&resp.Diagnostics, "Cannot change the limits", err, map[string]path.Path{
				"limits": path.Root("limits"), "limits.max_bytes": path.Root("limits").AtName("max_bytes"),
				"limits.rate": path.Root("limits").AtName("rate"), "limits.bytes_rate": path.Root("limits").AtName("bytes_rate")}, path.Root("limits"))
			save()
			return
		}
		done.Limits = plan.Limits
	}
	if !plan.PlacementCell.IsNull() && !plan.PlacementCell.IsUnknown() && !plan.PlacementCell.Equal(state.PlacementCell) {
		if err := r.move(ctx, id, plan.PlacementCell.ValueString()); err != nil {
			if ctx.Err() != nil {
				resp.Diagnostics.AddAttributeError(path.Root("placement_cell"), "Move not finished within the update timeout", timeoutDetail(id, limit, "update", err))
			} else {
				addErrAt(&resp.Diagnostics, "Cannot move the tenant", err, tenantFields, path.Root("placement_cell"))
			}
			save()
			return
		}
	}
	done.PlacementCell = plan.PlacementCell
	if !plan.StandbyRegion.Equal(state.StandbyRegion) {
		if err := r.changeStandby(ctx, id, plan.HomeRegion.ValueString(), plan.StandbyRegion); err != nil {
			addErrAt(&resp.Diagnostics, "Cannot change the standby", err, map[string]path.Path{"region": path.Root("standby_region")}, path.Root("standby_region"))
			save()
			return
		}
	}
	v, err := readTenant(ctx, r.c, id)
	if err != nil {
		resp.Diagnostics.AddError("Cannot read the tenant", err.Error())
		save()
		return
	}
	resp.Diagnostics.Append(resp.State.Set(ctx, v.toModel(plan))...)
}

// move moves the tenant to cell (moveTenant), holding one of the long
// operation slots.
func (r *tenantResource) move(ctx context.Context, id, cell string) error {
	release, err := r.c.acquire(ctx)
	if err != nil {
		return err
	}
	defer release()
	return moveTenant(ctx, r.c, id, cell)
}

// changeStandby makes the tenant's standby match the pair {home, dr}:
// clears the standby it has (when dr changed or is null), then asks for
// one in the pair's region that is not the owner's and waits until it
// streams.
func (r *tenantResource) changeStandby(ctx context.Context, id, home string, dr types.String) error {
	release, err := r.c.acquire(ctx)
	if err != nil {
		return err
	}
	defer release()
	v, err := readTenant(ctx, r.c, id)
	if err != nil {
		return err
	}
	want := dr.ValueString()
	if v.t.GetStandbyCell() != "" && (dr.IsNull() || pairStandbyRegion(home, v.ownerRegion, v.standbyRegion) != want) {
		if err := poll(ctx, func() error {
			_, err := call(ctx, r.c, func(ctx context.Context, api cpv1.ControlPlaneServiceClient) (*cpv1.ClearStandbyResponse, error) {
				return api.ClearStandby(ctx, &cpv1.ClearStandbyRequest{Tenant: id})
			})
			if err != nil && !retryable(err) {
				return retry.Permanent(err)
			}
			return err
		}); err != nil {
			return err
		}
		v.t.StandbyCell = ""
	}
	if dr.IsNull() {
		return nil
	}
	if v.t.GetStandbyCell() == "" {
		region := standbyTarget(home, want, v.ownerRegion)
		if err := poll(ctx, func() error {
			_, err := call(ctx, r.c, func(ctx context.Context, api cpv1.ControlPlaneServiceClient) (*cpv1.SetStandbyResponse, error) {
				return api.SetStandby(ctx, &cpv1.SetStandbyRequest{Tenant: id, Region: region})
			})
			if err != nil && !retryable(err) {
				return retry.Permanent(err)
			}
			return err
		}); err != nil {
			return err
		}
	}
	_, err = waitUsable(ctx, r.c, id, true)
	return err
}

// setProtection turns tenant id's deletion protection on or off
// (UpdateTenant with deletion_protection only): read the record, and
// unless it already has the wanted value, write over the version read
// (expected_version), reading again when it changed in between (a
// move, a failover, an operator). An apply resumed after a failed one
// finds the value set and writes nothing.
func setProtection(ctx context.Context, c *apiClient, id string, on bool) error {
	return poll(ctx, func() error {
		out, err := call(ctx, c, func(ctx context.Context, api cpv1.ControlPlaneServiceClient) (*cpv1.GetTenantResponse, error) {
			return api.GetTenant(ctx, &cpv1.GetTenantRequest{Id: id})
		})
		if err == nil && out.GetTenant().GetDeletionProtection() == on {
			return nil
		}
		if err == nil {
			_, err = call(ctx, c, func(ctx context.Context, api cpv1.ControlPlaneServiceClient) (*cpv1.UpdateTenantResponse, error) {
				return updateTenantProtection(ctx, api, id, on, out.GetVersion())
			})
		}
		switch {
		case err == nil, retryable(err), errors.Is(err, cperr.ErrRevisionMismatch):
			return err
		}
		return retry.Permanent(err)
	})
}

func (r *tenantResource) Delete(ctx context.Context, req resource.DeleteRequest, resp *resource.DeleteResponse) {
	var state tenantModel
	resp.Diagnostics.Append(req.State.Get(ctx, &state)...)
	if resp.Diagnostics.HasError() {
		return
	}
	// The plan-time check is the guard; this one covers a state edited
	// by hand between plan and apply.
	if state.DeletionProtection.ValueBool() {
		resp.Diagnostics.AddAttributeError(path.Root("deletion_protection"), "Tenant is protected from deletion", "set deletion_protection = false and apply first")
		return
	}
	limit, d := state.Timeouts.Delete(ctx, defaultTenantDeleteTimeout)
	resp.Diagnostics.Append(d...)
	if resp.Diagnostics.HasError() {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	release, err := r.c.acquire(ctx)
	if err != nil {
		resp.Diagnostics.AddError("Cannot delete the tenant", err.Error())
		return
	}
	defer release()
	id := state.ID.ValueString()
	// DeleteTenant until it is accepted (TENANT_BUSY while another
	// workflow holds the tenant), then GetTenant until the record (the
	// last thing removed, after the data and the standby copy) is gone.
	err = poll(ctx, func() error {
		cctx, ccancel := context.WithTimeout(ctx, maxWorkflowCall)
		defer ccancel()
		_, err := r.c.api.DeleteTenant(cctx, &cpv1.DeleteTenantRequest{Id: id})
		err = r.c.mapErr(err)
		switch {
		case err == nil || isNotFound(err):
			return nil
		case errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil:
			return nil // recorded; wait below
		case retryable(err):
			return err
		}
		return retry.Permanent(err)
	})
	if errors.Is(err, cperr.ErrDeletionProtected) {
		// Protected at the control plane since the refresh (turned on
		// outside Terraform): refused there, nothing deleted.
		resp.Diagnostics.AddAttributeError(path.Root("deletion_protection"), "Tenant is protected from deletion",
			fmt.Sprintf("%v\n\nThe control plane refused to delete tenant %s and nothing was deleted: its deletion protection was turned on "+
				"after Terraform last read it. Refresh (the plan then shows deletion_protection = true); to delete the tenant, set "+
				"deletion_protection = false, apply, then destroy.", err, id))
		return
	}
	if err == nil {
		err = poll(ctx, func() error {
			v, err := readTenant(ctx, r.c, id)
			switch {
			case isNotFound(err):
				return nil
			case err != nil && !retryable(err):
				return retry.Permanent(err)
			case err != nil:
				return err
			}
			return fmt.Errorf("tenant %s is still %s", id, v.t.GetState())
		})
	}
	if err != nil {
		resp.Diagnostics.AddError("Cannot delete the tenant", err.Error())
	}
}

func (r *tenantResource) ImportState(ctx context.Context, req resource.ImportStateRequest, resp *resource.ImportStateResponse) {
	// Read fills the rest, deletion_protection with the control plane's
	// value: a configuration that differs plans an in-place update.
	resource.ImportStatePassthroughID(ctx, path.Root("id"), req, resp)
}
