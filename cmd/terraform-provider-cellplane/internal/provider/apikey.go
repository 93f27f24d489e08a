package provider

import (
	"context"
	"errors"

	"github.com/hashicorp/terraform-plugin-framework/path"
	"github.com/hashicorp/terraform-plugin-framework/resource"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/planmodifier"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/stringdefault"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/stringplanmodifier"
	"github.com/hashicorp/terraform-plugin-framework/schema/validator"
	"github.com/hashicorp/terraform-plugin-framework/types"

	"github.com/cellplane/cellplane/internal/cperr"
	cpv1 "github.com/cellplane/cellplane/proto/cellplane/controlplane/v1"
)

type apiKeyResource struct{ c *apiClient }

type apiKeyModel struct {
	ID          types.String `tfsdk:"id"`
	Tenant      types.String `tfsdk:"tenant"`
	Description types.String `tfsdk:"description"`
	Principal   types.String `tfsdk:"principal"`
	KeyID       types.String `tfsdk:"key_id"`
	Secret      types.String `tfsdk:"secret"`
	CreateTime  types.String `tfsdk:"create_time"`
}

func newAPIKeyResource() resource.Resource { return &apiKeyResource{} }

var _ resource.ResourceWithImportState = (*apiKeyResource)(nil)

func (r *apiKeyResource) Metadata(_ context.Context, req resource.MetadataRequest, resp *resource.MetadataResponse) {
	resp.TypeName = req.ProviderTypeName + "_api_key"
}

func (r *apiKeyResource) Schema(_ context.Context, _ resource.SchemaRequest, resp *resource.SchemaResponse) {
	keep := []planmodifier.String{stringplanmodifier.UseStateForUnknown()}
	resp.Schema = schema.Schema{
		Description: "An API key of a tenant. The secret is shown once by the control plane and kept (sensitive) in the state: protect the state. " +
			"Destroy revokes the key; a key revoked outside Terraform is planned again. Import: terraform import cellplane_api_key.k <tenant>/<key_id> (the secret is then unknown: null). " +
			"Rotate with lifecycle { create_before_destroy = true } and a description change; set principal so that the new key acts for the same principal (what the agent created stays reachable).",
		Attributes: map[string]schema.Attribute{
			"id": schema.StringAttribute{Computed: true, Description: "<tenant>/<key_id>.", PlanModifiers: keep},
			"tenant": schema.StringAttribute{Required: true, Description: "The tenant the key belongs to.", Validators: []validator.String{idValidator{}},
				PlanModifiers: []planmodifier.String{stringplanmodifier.RequiresReplace()}},
			"description": schema.StringAttribute{Optional: true, Computed: true, Default: stringdefault.StaticString(""),
				Description: "Free text (at most 256 bytes); a change makes a new key.", Validators: []validator.String{maxLen(maxDescriptionLen)},
				PlanModifiers: []planmodifier.String{stringplanmodifier.RequiresReplace()}},
			"principal": schema.StringAttribute{Optional: true, Computed: true, Default: stringdefault.StaticString(""),
				Description:   "Who the key acts for inside the tenant ([A-Za-z0-9._@+-], at most 128 characters); empty: the key's id. Contexts and memory belong to it, so a rotated key with the same principal keeps them. A change makes a new key.",
				PlanModifiers: []planmodifier.String{stringplanmodifier.RequiresReplace()}},
			"key_id":      schema.StringAttribute{Computed: true, Description: "The key's id.", PlanModifiers: keep},
			"secret":      schema.StringAttribute{Computed: true, Sensitive: true, Description: "The secret (cpk_<key id>_<random>), known only to the Terraform run that created the key.", PlanModifiers: keep},
			"create_time": schema.StringAttribute{Computed: true, Description: "When the key was created (RFC 3339).", PlanModifiers: keep},
		},
	}
}

func (r *apiKeyResource) Configure(_ context.Context, req resource.ConfigureRequest, _ *resource.ConfigureResponse) {
	if c, ok := req.ProviderData.(*apiClient); ok {
		r.c = c
	}
}

func (r *apiKeyResource) Create(ctx context.Context, req resource.CreateRequest, resp *resource.CreateResponse) {
	var plan apiKeyModel
	resp.Diagnostics.Append(req.Plan.Get(ctx, &plan)...)
	if resp.Diagnostics.HasError() {
		return
	}
	out, err := call(ctx, r.c, func(ctx context.Context, api cpv1.ControlPlaneServiceClient) (*cpv1.CreateApiKeyResponse, error) {
		return api.CreateApiKey(ctx, &cpv1.CreateApiKeyRequest{Tenant: plan.Tenant.ValueString(), Description: plan.Description.ValueString(), Principal: plan.Principal.ValueString()})
	})
	if err != nil {
		addErr(&resp.Diagnostics, "Cannot create the API key", err, map[string]path.Path{"tenant": path.Root("tenant"), "description": path.Root("description"), "principal": path.Root("principal")})
		return
	}
	m := apiKeyFromProto(out.GetKey())
	m.Secret = types.StringValue(out.GetSecret())
	resp.Diagnostics.Append(resp.State.Set(ctx, m)...)
}

// findAPIKey returns the tenant's unrevoked key id, or nil when there is
// none (no GetApiKey: ListApiKeys). A missing tenant counts as no key.
func findAPIKey(ctx context.Context, c *apiClient, tenant, id string) (*cpv1.ApiKey, error) {
	out, err := call(ctx, c, func(ctx context.Context, api cpv1.ControlPlaneServiceClient) (*cpv1.ListApiKeysResponse, error) {
		return api.ListApiKeys(ctx, &cpv1.ListApiKeysRequest{Tenant: tenant})
	})
	if isNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	for _, k := range out.GetKeys() {
		if k.GetId() == id && k.GetRevokeTime() == nil {
			return k, nil
		}
	}
	return nil, nil
}

func (r *apiKeyResource) Read(ctx context.Context, req resource.ReadRequest, resp *resource.ReadResponse) {
	var state apiKeyModel
	resp.Diagnostics.Append(req.State.Get(ctx, &state)...)
	if resp.Diagnostics.HasError() {
		return
	}
	k, err := findAPIKey(ctx, r.c, state.Tenant.ValueString(), state.KeyID.ValueString())
	if err != nil {
		resp.Diagnostics.AddError("Cannot read the API key", err.Error())
		return
	}
	if k == nil {
		resp.State.RemoveResource(ctx)
		return
	}
	m := apiKeyFromProto(k)
	m.Secret = state.Secret
	resp.Diagnostics.Append(resp.State.Set(ctx, m)...)
}

// Update is never called: every attribute a user sets forces a new key.
func (r *apiKeyResource) Update(ctx context.Context, req resource.UpdateRequest, resp *resource.UpdateResponse) {
	var plan apiKeyModel
	resp.Diagnostics.Append(req.Plan.Get(ctx, &plan)...)
	resp.Diagnostics.Append(resp.State.Set(ctx, plan)...)
}

func (r *apiKeyResource) Delete(ctx context.Context, req resource.DeleteRequest, resp *resource.DeleteResponse) {
	var state apiKeyModel
	resp.Diagnostics.Append(req.State.Get(ctx, &state)...)
	if resp.Diagnostics.HasError() {
		return
	}
	_, err := call(ctx, r.c, func(ctx context.Context, api cpv1.ControlPlaneServiceClient) (*cpv1.RevokeApiKeyResponse, error) {
		return api.RevokeApiKey(ctx, &cpv1.RevokeApiKeyRequest{Tenant: state.Tenant.ValueString(), Id: state.KeyID.ValueString()})
	})
	if err != nil && !errors.Is(err, cperr.ErrAPIKeyNotFound) && !errors.Is(err, cperr.ErrTenantNotFound) {
		resp.Diagnostics.AddError("Cannot revoke the API key", err.Error())
	}
}

func (r *apiKeyResource) ImportState(ctx context.Context, req resource.ImportStateRequest, resp *resource.ImportStateResponse) {
	tenant, keyID, err := parseAPIKeyImportID(req.ID)
	if err != nil {
		resp.Diagnostics.AddError("Invalid import id", err.Error())
		return
	}
	resp.Diagnostics.Append(resp.State.SetAttribute(ctx, path.Root("tenant"), tenant)...)
	resp.Diagnostics.Append(resp.State.SetAttribute(ctx, path.Root("key_id"), keyID)...)
	resp.Diagnostics.Append(resp.State.SetAttribute(ctx, path.Root("id"), tenant+"/"+keyID)...)
}

func apiKeyFromProto(k *cpv1.ApiKey) apiKeyModel {
	return apiKeyModel{
		ID:          types.StringValue(k.GetTenant() + "/" + k.GetId()),
		Tenant:      types.StringValue(k.GetTenant()),
		Description: types.StringValue(k.GetDescription()),
		Principal:   types.StringValue(k.GetPrincipal()),
		KeyID:       types.StringValue(k.GetId()),
		Secret:      types.StringNull(),
		CreateTime:  timeString(k.GetCreateTime().AsTime()),
	}
}
