package provider

import (
	"context"
	"time"

	"github.com/hashicorp/terraform-plugin-framework/path"
	"github.com/hashicorp/terraform-plugin-framework/resource"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/planmodifier"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/stringdefault"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/stringplanmodifier"
	"github.com/hashicorp/terraform-plugin-framework/schema/validator"
	"github.com/hashicorp/terraform-plugin-framework/types"

	cpv1 "github.com/cellplane/cellplane/proto/cellplane/controlplane/v1"
)

// maxDescriptionLen is the control plane's bound on descriptions
// (controlplane/api DefaultConfig).
const maxDescriptionLen = 256

type regionResource struct{ c *apiClient }

type regionModel struct {
	Name        types.String `tfsdk:"name"`
	Description types.String `tfsdk:"description"`
	CreateTime  types.String `tfsdk:"create_time"`
}

func newRegionResource() resource.Resource { return &regionResource{} }

var (
	_ resource.ResourceWithImportState = (*regionResource)(nil)
	_ resource.ResourceWithModifyPlan  = (*regionResource)(nil)
)

func (r *regionResource) Metadata(_ context.Context, req resource.MetadataRequest, resp *resource.MetadataResponse) {
	resp.TypeName = req.ProviderTypeName + "_region"
}

func (r *regionResource) Schema(_ context.Context, _ resource.SchemaRequest, resp *resource.SchemaResponse) {
	resp.Schema = schema.Schema{
		Description: "A region of the platform. Import by name: terraform import cellplane_region.r us-east.",
		Attributes: map[string]schema.Attribute{
			"name": schema.StringAttribute{Required: true, Description: "The region's name (an id). Cannot change: a change is refused at plan time.",
				Validators:    []validator.String{idValidator{}},
				PlanModifiers: []planmodifier.String{immutable("a region with cells and tenants cannot be replaced; declare a new region")}},
			"description": schema.StringAttribute{Optional: true, Computed: true, Default: stringdefault.StaticString(""),
				Description: "Free text, at most 256 bytes. Changing it needs the control plane's UpdateRegion.",
				Validators:  []validator.String{maxLen(maxDescriptionLen)}},
			"create_time": schema.StringAttribute{Computed: true, Description: "When the region was created (RFC 3339).",
				PlanModifiers: []planmodifier.String{stringplanmodifier.UseStateForUnknown()}},
		},
	}
}

func (r *regionResource) Configure(_ context.Context, req resource.ConfigureRequest, _ *resource.ConfigureResponse) {
	if c, ok := req.ProviderData.(*apiClient); ok {
		r.c = c
	}
}

// ModifyPlan refuses, at plan time, what the control plane cannot do yet:
// a description change (UpdateRegion) and a destroy (DeleteRegion).
func (r *regionResource) ModifyPlan(ctx context.Context, req resource.ModifyPlanRequest, resp *resource.ModifyPlanResponse) {
	if req.State.Raw.IsNull() {
		return
	}
	var state regionModel
	resp.Diagnostics.Append(req.State.Get(ctx, &state)...)
	if req.Plan.Raw.IsNull() {
		if !haveDeleteRegion {
			resp.Diagnostics.AddError("Cannot destroy a region yet", deleteRegion(ctx, nil, state.Name.ValueString()).Error())
		}
		return
	}
	var plan regionModel
	resp.Diagnostics.Append(req.Plan.Get(ctx, &plan)...)
	if !haveUpdateRegion && !plan.Description.IsUnknown() && !plan.Description.Equal(state.Description) {
		resp.Diagnostics.AddAttributeError(path.Root("description"), "Cannot change a region's description yet",
			updateRegion(ctx, nil, state.Name.ValueString(), "").Error())
	}
}

func (r *regionResource) Create(ctx context.Context, req resource.CreateRequest, resp *resource.CreateResponse) {
	var plan regionModel
	resp.Diagnostics.Append(req.Plan.Get(ctx, &plan)...)
	if resp.Diagnostics.HasError() {
		return
	}
	out, err := call(ctx, r.c, func(ctx context.Context, api cpv1.ControlPlaneServiceClient) (*cpv1.CreateRegionResponse, error) {
		return api.CreateRegion(ctx, &cpv1.CreateRegionRequest{Name: plan.Name.ValueString(), Description: plan.Description.ValueString()})
	})
	if err != nil {
		addErr(&resp.Diagnostics, "Cannot create the region", err, map[string]path.Path{"name": path.Root("name"), "description": path.Root("description")})
		return
	}
	resp.Diagnostics.Append(resp.State.Set(ctx, regionFromProto(out.GetRegion()))...)
}

// findRegion returns the named region, or nil when there is none
// (ListRegions: there is no GetRegion).
func findRegion(ctx context.Context, c *apiClient, name string) (*cpv1.Region, error) {
	out, err := call(ctx, c, func(ctx context.Context, api cpv1.ControlPlaneServiceClient) (*cpv1.ListRegionsResponse, error) {
		return api.ListRegions(ctx, &cpv1.ListRegionsRequest{})
	})
	if err != nil {
		return nil, err
	}
	for _, rg := range out.GetRegions() {
		if rg.GetName() == name {
			return rg, nil
		}
	}
	return nil, nil
}

func (r *regionResource) Read(ctx context.Context, req resource.ReadRequest, resp *resource.ReadResponse) {
	var state regionModel
	resp.Diagnostics.Append(req.State.Get(ctx, &state)...)
	if resp.Diagnostics.HasError() {
		return
	}
	rg, err := findRegion(ctx, r.c, state.Name.ValueString())
	if err != nil {
		resp.Diagnostics.AddError("Cannot read the region", err.Error())
		return
	}
	if rg == nil {
		resp.State.RemoveResource(ctx)
		return
	}
	resp.Diagnostics.Append(resp.State.Set(ctx, regionFromProto(rg))...)
}

func (r *regionResource) Update(ctx context.Context, req resource.UpdateRequest, resp *resource.UpdateResponse) {
	var plan regionModel
	resp.Diagnostics.Append(req.Plan.Get(ctx, &plan)...)
	if resp.Diagnostics.HasError() {
		return
	}
	if err := updateRegion(ctx, r.c.api, plan.Name.ValueString(), plan.Description.ValueString()); err != nil {
		addErr(&resp.Diagnostics, "Cannot change the region", err, map[string]path.Path{"description": path.Root("description")})
		return
	}
	resp.Diagnostics.Append(resp.State.Set(ctx, plan)...)
}

func (r *regionResource) Delete(ctx context.Context, req resource.DeleteRequest, resp *resource.DeleteResponse) {
	var state regionModel
	resp.Diagnostics.Append(req.State.Get(ctx, &state)...)
	if resp.Diagnostics.HasError() {
		return
	}
	if err := deleteRegion(ctx, r.c.api, state.Name.ValueString()); err != nil {
		addErr(&resp.Diagnostics, "Cannot destroy the region", err, nil)
	}
}

func (r *regionResource) ImportState(ctx context.Context, req resource.ImportStateRequest, resp *resource.ImportStateResponse) {
	resource.ImportStatePassthroughID(ctx, path.Root("name"), req, resp)
}

func regionFromProto(rg *cpv1.Region) regionModel {
	return regionModel{
		Name:        types.StringValue(rg.GetName()),
		Description: types.StringValue(rg.GetDescription()),
		CreateTime:  timeString(rg.GetCreateTime().AsTime()),
	}
}

// timeString is t in RFC 3339, or null for the zero time.
func timeString(t time.Time) types.String {
	if t.IsZero() || t.Unix() == 0 {
		return types.StringNull()
	}
	return types.StringValue(t.UTC().Format(time.RFC3339Nano))
}
