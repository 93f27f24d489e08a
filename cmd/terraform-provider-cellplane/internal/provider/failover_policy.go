package provider

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/hashicorp/terraform-plugin-framework/attr"
	"github.com/hashicorp/terraform-plugin-framework/diag"
	"github.com/hashicorp/terraform-plugin-framework/path"
	"github.com/hashicorp/terraform-plugin-framework/resource"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/planmodifier"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/stringplanmodifier"
	"github.com/hashicorp/terraform-plugin-framework/schema/validator"
	"github.com/hashicorp/terraform-plugin-framework/types"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/cellplane/cellplane/internal/cperr"
	"github.com/cellplane/cellplane/internal/ids"
	cpv1 "github.com/cellplane/cellplane/proto/cellplane/controlplane/v1"
)

// failoverPolicyID is the id (and import id) of the one failover policy.
const failoverPolicyID = "default"

// minPolicyUnhealthyFor is the control plane's lower bound of a non-zero
// unhealthy_for (controlplane/api).
const minPolicyUnhealthyFor = time.Second

// privateVersionKey is the private-state key of the policy record's
// version last read (SetFailoverPolicy's expected_version).
const privateVersionKey = "version"

type failoverPolicyResource struct{ c *apiClient }

type failoverPolicyModel struct {
	ID            types.String `tfsdk:"id"`
	Enabled       types.Bool   `tfsdk:"enabled"`
	UnhealthyFor  types.String `tfsdk:"unhealthy_for"`
	Regions       types.Set    `tfsdk:"regions"`
	MaxConcurrent types.Int64  `tfsdk:"max_concurrent"`
}

func newFailoverPolicyResource() resource.Resource { return &failoverPolicyResource{} }

var _ resource.ResourceWithImportState = (*failoverPolicyResource)(nil)

func (r *failoverPolicyResource) Metadata(_ context.Context, req resource.MetadataRequest, resp *resource.MetadataResponse) {
	resp.TypeName = req.ProviderTypeName + "_failover_policy"
}

func (r *failoverPolicyResource) Schema(_ context.Context, _ resource.SchemaRequest, resp *resource.SchemaResponse) {
	resp.Schema = schema.Schema{
		Description: "The platform's automatic promotion policy (one per platform, stored in the control plane): the controller leader promotes the standbys " +
			"of a cell's tenants once the cell has been unhealthy for unhealthy_for. Create adopts the stored policy (or the leader's flag defaults) and " +
			"overwrites it; every write is guarded by the version last read, so a change made by someone else since the refresh fails the apply " +
			"(REVISION_MISMATCH) instead of being overwritten. Destroy DISABLES automatic promotion (stores enabled = false with the other fields at " +
			"the leader's defaults): the control plane keeps a stored policy, so the leader's flag defaults do not come back. Import id: default.",
		Attributes: map[string]schema.Attribute{
			"id": schema.StringAttribute{Computed: true, Description: "Always \"default\" (the import id).",
				PlanModifiers: []planmodifier.String{stringplanmodifier.UseStateForUnknown()}},
			"enabled": schema.BoolAttribute{Required: true, Description: "Whether the controller promotes standbys automatically."},
			"unhealthy_for": schema.StringAttribute{Optional: true,
				Description: "How long a cell must stay unhealthy before its tenants are promoted: a Go duration of at least 1s (e.g. \"30s\"); null: the leader's --auto-promote-after.",
				Validators:  []validator.String{policyDuration{}}},
			"regions": schema.SetAttribute{Optional: true, ElementType: types.StringType,
				Description: "The regions whose cells the policy covers; null: all regions.",
				Validators:  []validator.Set{idSet{}}},
			"max_concurrent": schema.Int64Attribute{Optional: true,
				Description: "Most of the policy's promotions in flight at once; null: the leader's default.",
				Validators:  []validator.Int64{nonNegative{}}},
		},
	}
}

func (r *failoverPolicyResource) Configure(_ context.Context, req resource.ConfigureRequest, _ *resource.ConfigureResponse) {
	if c, ok := req.ProviderData.(*apiClient); ok {
		r.c = c
	}
}

// policyFields maps SetFailoverPolicy's field violations to attributes.
var policyFields = map[string]path.Path{
	"policy.unhealthy_for": path.Root("unhealthy_for"), "policy.regions": path.Root("regions"), "policy.max_concurrent": path.Root("max_concurrent"),
}

// policyToProto is the model as the API takes it.
func policyToProto(ctx context.Context, m failoverPolicyModel) (*cpv1.FailoverPolicy, diag.Diagnostics) {
	var diags diag.Diagnostics
	p := &cpv1.FailoverPolicy{Enabled: m.Enabled.ValueBool()}
	if v := m.UnhealthyFor.ValueString(); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			diags.AddAttributeError(path.Root("unhealthy_for"), "Invalid duration", err.Error())
			return nil, diags
		}
		p.UnhealthyFor = durationpb.New(d)
	}
	if !m.Regions.IsNull() && !m.Regions.IsUnknown() {
		diags.Append(m.Regions.ElementsAs(ctx, &p.Regions, false)...)
		slices.Sort(p.Regions)
	}
	if v := m.MaxConcurrent.ValueInt64(); v > 0 {
		p.MaxConcurrent = uint32(v)
	}
	return p, diags
}

// policyToModel is the stored policy as Terraform sees it: a field at
// its default (0, empty) reads as null while the prior value is null, and
// a duration keeps the prior spelling ("1m" for 1m0s).
func policyToModel(p *cpv1.FailoverPolicy, prior failoverPolicyModel) failoverPolicyModel {
	m := failoverPolicyModel{ID: types.StringValue(failoverPolicyID), Enabled: types.BoolValue(p.GetEnabled())}
	d := p.GetUnhealthyFor().AsDuration()
	switch pd, err := time.ParseDuration(prior.UnhealthyFor.ValueString()); {
	case !prior.UnhealthyFor.IsNull() && !prior.UnhealthyFor.IsUnknown() && err == nil && pd == d:
		m.UnhealthyFor = prior.UnhealthyFor
	case d == 0 && (prior.UnhealthyFor.IsNull() || prior.UnhealthyFor.IsUnknown()):
		m.UnhealthyFor = types.StringNull()
	default:
		m.UnhealthyFor = types.StringValue(d.String())
	}
	if len(p.GetRegions()) == 0 && (prior.Regions.IsNull() || prior.Regions.IsUnknown()) {
		m.Regions = types.SetNull(types.StringType)
	} else {
		vs := make([]attr.Value, 0, len(p.GetRegions()))
		for _, r := range p.GetRegions() {
			vs = append(vs, types.StringValue(r))
		}
		m.Regions = types.SetValueMust(types.StringType, vs)
	}
	if p.GetMaxConcurrent() == 0 && (prior.MaxConcurrent.IsNull() || prior.MaxConcurrent.IsUnknown()) {
		m.MaxConcurrent = types.Int64Null()
	} else {
		m.MaxConcurrent = types.Int64Value(int64(p.GetMaxConcurrent()))
	}
	return m
}

// privateState is the part of resource private state the policy uses.
type privateState interface {
	GetKey(context.Context, string) ([]byte, diag.Diagnostics)
	SetKey(context.Context, string, []byte) diag.Diagnostics
}

type versionJSON struct {
	Version uint64 `json:"v"`
}

func getVersion(ctx context.Context, p privateState) (uint64, diag.Diagnostics) {
	b, diags := p.GetKey(ctx, privateVersionKey)
	if len(b) == 0 || diags.HasError() {
		return 0, diags
	}
	var v versionJSON
	if err := json.Unmarshal(b, &v); err != nil {
		diags.AddError("Corrupt private state", err.Error())
	}
	return v.Version, diags
}

func setVersion(ctx context.Context, p privateState, v uint64) diag.Diagnostics {
	b, _ := json.Marshal(versionJSON{Version: v})
	return p.SetKey(ctx, privateVersionKey, b)
}

// getPolicy reads the policy (GetFailoverPolicy).
func getPolicy(ctx context.Context, c *apiClient) (*cpv1.GetFailoverPolicyResponse, error) {
	return call(ctx, c, func(ctx context.Context, api cpv1.ControlPlaneServiceClient) (*cpv1.GetFailoverPolicyResponse, error) {
		return api.GetFailoverPolicy(ctx, &cpv1.GetFailoverPolicyRequest{})
	})
}

// setPolicy stores p over expected (0: whatever is stored).
func setPolicy(ctx context.Context, c *apiClient, p *cpv1.FailoverPolicy, expected uint64) (*cpv1.SetFailoverPolicyResponse, error) {
	return call(ctx, c, func(ctx context.Context, api cpv1.ControlPlaneServiceClient) (*cpv1.SetFailoverPolicyResponse, error) {
		return api.SetFailoverPolicy(ctx, &cpv1.SetFailoverPolicyRequest{Policy: p, ExpectedVersion: expected})
	})
}

// addPolicyErr adds a SetFailoverPolicy error, explaining a concurrent
// edit.
func addPolicyErr(diags *diag.Diagnostics, summary string, err error) {
	if errors.Is(err, cperr.ErrRevisionMismatch) {
		diags.AddError(summary, err.Error()+"\n\nThe failover policy was changed outside Terraform after it was last read; nothing was written. "+
			"Run plan again to see the change, then apply.")
		return
	}
	addReasonErr(diags, summary, err, policyFields, nil)
}

func (r *failoverPolicyResource) Create(ctx context.Context, req resource.CreateRequest, resp *resource.CreateResponse) {
	var plan failoverPolicyModel
	resp.Diagnostics.Append(req.Plan.Get(ctx, &plan)...)
	if resp.Diagnostics.HasError() {
		return
	}
	p, d := policyToProto(ctx, plan)
	resp.Diagnostics.Append(d...)
	if resp.Diagnostics.HasError() {
		return
	}
	cur, err := getPolicy(ctx, r.c)
	if err != nil {
		addReasonErr(&resp.Diagnostics, "Cannot read the failover policy", err, nil, nil)
		return
	}
	out, err := setPolicy(ctx, r.c, p, cur.GetVersion())
	if err != nil {
		addPolicyErr(&resp.Diagnostics, "Cannot set the failover policy", err)
		return
	}
	if cur.GetStored() {
		resp.Diagnostics.AddWarning("Failover policy adopted",
			fmt.Sprintf("A failover policy was already stored (version %d); Terraform replaced it and manages it from now on.", cur.GetVersion()))
	}
	resp.Diagnostics.Append(setVersion(ctx, resp.Private, out.GetVersion())...)
	resp.Diagnostics.Append(resp.State.Set(ctx, policyToModel(out.GetPolicy(), plan))...)
}

func (r *failoverPolicyResource) Read(ctx context.Context, req resource.ReadRequest, resp *resource.ReadResponse) {
	var state failoverPolicyModel
	resp.Diagnostics.Append(req.State.Get(ctx, &state)...)
	if resp.Diagnostics.HasError() {
		return
	}
	cur, err := getPolicy(ctx, r.c)
	if err != nil {
		resp.Diagnostics.AddError("Cannot read the failover policy", err.Error())
		return
	}
	if !cur.GetStored() {
		// Nothing stored (removed from the store by hand): plan a create.
		resp.State.RemoveResource(ctx)
		return
	}
	resp.Diagnostics.Append(setVersion(ctx, resp.Private, cur.GetVersion())...)
	resp.Diagnostics.Append(resp.State.Set(ctx, policyToModel(cur.GetPolicy(), state))...)
}

func (r *failoverPolicyResource) Update(ctx context.Context, req resource.UpdateRequest, resp *resource.UpdateResponse) {
	var plan failoverPolicyModel
	resp.Diagnostics.Append(req.Plan.Get(ctx, &plan)...)
	if resp.Diagnostics.HasError() {
		return
	}
	p, d := policyToProto(ctx, plan)
	resp.Diagnostics.Append(d...)
	v, d := getVersion(ctx, req.Private)
	resp.Diagnostics.Append(d...)
	if resp.Diagnostics.HasError() {
		return
	}
	out, err := updatePolicy(ctx, r.c, p, v)
	if err != nil {
		addPolicyErr(&resp.Diagnostics, "Cannot update the failover policy", err)
		return
	}
	resp.Diagnostics.Append(setVersion(ctx, resp.Private, out.GetVersion())...)
	resp.Diagnostics.Append(resp.State.Set(ctx, policyToModel(out.GetPolicy(), plan))...)
}

// updatePolicy stores p only over version v (the one last read); with no
// version known (a state from before private state), over the one read
// now.
func updatePolicy(ctx context.Context, c *apiClient, p *cpv1.FailoverPolicy, v uint64) (*cpv1.SetFailoverPolicyResponse, error) {
	if v == 0 {
		cur, err := getPolicy(ctx, c)
		if err != nil {
			return nil, err
		}
		v = cur.GetVersion()
	}
	if v == 0 {
		// Nothing stored since: expected_version 0 would not guard.
		return nil, cperr.New(cperr.RevisionMismatch, "the failover policy is no longer stored")
	}
	return setPolicy(ctx, c, p, v)
}

// Delete disables automatic promotion: enabled false, the other fields at
// the leader's defaults (there is no call that removes the stored
// record).
func (r *failoverPolicyResource) Delete(ctx context.Context, req resource.DeleteRequest, resp *resource.DeleteResponse) {
	v, d := getVersion(ctx, req.Private)
	resp.Diagnostics.Append(d...)
	if resp.Diagnostics.HasError() {
		return
	}
	if _, err := updatePolicy(ctx, r.c, &cpv1.FailoverPolicy{Enabled: false}, v); err != nil {
		addPolicyErr(&resp.Diagnostics, "Cannot disable the failover policy", err)
	}
}

func (r *failoverPolicyResource) ImportState(ctx context.Context, req resource.ImportStateRequest, resp *resource.ImportStateResponse) {
	if req.ID != failoverPolicyID {
		resp.Diagnostics.AddError("Invalid import id", fmt.Sprintf("the failover policy's import id is %q, not %q", failoverPolicyID, req.ID))
		return
	}
	resource.ImportStatePassthroughID(ctx, path.Root("id"), req, resp)
}

// policyDuration accepts a Go duration of 0 or at least 1s.
type policyDuration struct{}

func (policyDuration) Description(context.Context) string {
	return "a Go duration of at least 1s (or 0s: the leader's default)"
}

func (v policyDuration) MarkdownDescription(ctx context.Context) string { return v.Description(ctx) }

func (v policyDuration) ValidateString(ctx context.Context, req validator.StringRequest, resp *validator.StringResponse) {
	if req.ConfigValue.IsNull() || req.ConfigValue.IsUnknown() {
		return
	}
	d, err := time.ParseDuration(req.ConfigValue.ValueString())
	if err != nil || d < 0 || (d != 0 && d < minPolicyUnhealthyFor) {
		resp.Diagnostics.AddAttributeError(req.Path, "Invalid duration", fmt.Sprintf("%s is %q: want %s", req.Path, req.ConfigValue.ValueString(), v.Description(ctx)))
	}
}

// idSet checks every element of a set of strings is an id.
type idSet struct{}

func (idSet) Description(ctx context.Context) string { return "each " + idValidator{}.Description(ctx) }

func (v idSet) MarkdownDescription(ctx context.Context) string { return v.Description(ctx) }

func (idSet) ValidateSet(ctx context.Context, req validator.SetRequest, resp *validator.SetResponse) {
	if req.ConfigValue.IsNull() || req.ConfigValue.IsUnknown() {
		return
	}
	for _, e := range req.ConfigValue.Elements() {
		s, ok := e.(types.String)
		if !ok || s.IsNull() || s.IsUnknown() {
			continue
		}
		if err := ids.Check(req.Path.String(), s.ValueString(), ids.MaxLen); err != nil {
			resp.Diagnostics.AddAttributeError(req.Path, "Invalid region", err.Error())
		}
	}
}
