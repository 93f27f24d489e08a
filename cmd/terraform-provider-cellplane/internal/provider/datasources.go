package provider

import (
	"context"
	"strings"

	"github.com/hashicorp/terraform-plugin-framework/datasource"
	"github.com/hashicorp/terraform-plugin-framework/datasource/schema"
	"github.com/hashicorp/terraform-plugin-framework/schema/validator"
	"github.com/hashicorp/terraform-plugin-framework/types"

	cpv1 "github.com/cellplane/cellplane/proto/cellplane/controlplane/v1"
)

// Live state (health, leader, load, placement, lag) lives in data
// sources, never in resources: in a resource it would read as drift.

type regionItem struct {
	Name        types.String `tfsdk:"name"`
	Description types.String `tfsdk:"description"`
}

type cellItem struct {
	ID              types.String `tfsdk:"id"`
	Region          types.String `tfsdk:"region"`
	State           types.String `tfsdk:"state"`
	Health          types.String `tfsdk:"health"`
	ExpectedMembers types.Int64  `tfsdk:"expected_members"`
	LeaderNode      types.String `tfsdk:"leader_node"`
	LeaderGRPCAddr  types.String `tfsdk:"leader_grpc_addr"`
	Tenants         types.Int64  `tfsdk:"tenants"`
	Bytes           types.Int64  `tfsdk:"bytes"`
}

func regionAttrs() map[string]schema.Attribute {
	return map[string]schema.Attribute{
		"name":        schema.StringAttribute{Computed: true},
		"description": schema.StringAttribute{Computed: true},
	}
}

func cellAttrs() map[string]schema.Attribute {
	return map[string]schema.Attribute{
		"id":               schema.StringAttribute{Computed: true},
		"region":           schema.StringAttribute{Computed: true},
		"state":            schema.StringAttribute{Computed: true, Description: "ACTIVE, CORDONED, DRAINING or DOWN."},
		"health":           schema.StringAttribute{Computed: true, Description: "HEALTHY, DEGRADED, UNAVAILABLE or NOT_STARTED."},
		"expected_members": schema.Int64Attribute{Computed: true},
		"leader_node":      schema.StringAttribute{Computed: true},
		"leader_grpc_addr": schema.StringAttribute{Computed: true},
		"tenants":          schema.Int64Attribute{Computed: true},
		"bytes":            schema.Int64Attribute{Computed: true},
	}
}

// trimEnum drops an enum value's type prefix: CELL_STATE_ACTIVE → ACTIVE.
func trimEnum(s, prefix string) string { return strings.TrimPrefix(s, prefix) }

func cellFromProto(cs *cpv1.CellStatus) cellItem {
	return cellItem{
		ID:              types.StringValue(cs.GetCell().GetId()),
		Region:          types.StringValue(cs.GetCell().GetRegion()),
		State:           types.StringValue(trimEnum(cs.GetCell().GetState().String(), "CELL_STATE_")),
		Health:          types.StringValue(trimEnum(cs.GetHealth().String(), "CELL_HEALTH_")),
		ExpectedMembers: types.Int64Value(int64(cs.GetCell().GetExpectedMembers())),
		LeaderNode:      types.StringValue(cs.GetLeader().GetNodeId()),
		LeaderGRPCAddr:  types.StringValue(cs.GetLeader().GetGrpcAddr()),
		Tenants:         types.Int64Value(int64(cs.GetLoad().GetTenants())),
		Bytes:           types.Int64Value(int64(cs.GetLoad().GetBytes())),
	}
}

func regionsFromProto(rs []*cpv1.Region) []regionItem {
	out := make([]regionItem, 0, len(rs))
	for _, r := range rs {
		out = append(out, regionItem{Name: types.StringValue(r.GetName()), Description: types.StringValue(r.GetDescription())})
	}
	return out
}

// clientOf is the data sources' Configure.
func clientOf(req datasource.ConfigureRequest) *apiClient {
	c, _ := req.ProviderData.(*apiClient)
	return c
}

// ---- cellplane_status ----

type statusDataSource struct{ c *apiClient }

type statusModel struct {
	Regions          []regionItem `tfsdk:"regions"`
	Cells            []cellItem   `tfsdk:"cells"`
	ControllerLeader types.String `tfsdk:"controller_leader"`
	PendingWorkflows types.Int64  `tfsdk:"pending_workflows"`
}

func newStatusDataSource() datasource.DataSource { return &statusDataSource{} }

func (d *statusDataSource) Metadata(_ context.Context, req datasource.MetadataRequest, resp *datasource.MetadataResponse) {
	resp.TypeName = req.ProviderTypeName + "_status"
}

func (d *statusDataSource) Schema(_ context.Context, _ datasource.SchemaRequest, resp *datasource.SchemaResponse) {
	resp.Schema = schema.Schema{
		Description: "The platform's topology and health now (GetStatus): for check blocks and rollout gates.",
		Attributes: map[string]schema.Attribute{
			"regions":           schema.ListNestedAttribute{Computed: true, NestedObject: schema.NestedAttributeObject{Attributes: regionAttrs()}},
			"cells":             schema.ListNestedAttribute{Computed: true, NestedObject: schema.NestedAttributeObject{Attributes: cellAttrs()}},
			"controller_leader": schema.StringAttribute{Computed: true, Description: "The id of the controller replica that leads."},
			"pending_workflows": schema.Int64Attribute{Computed: true},
		},
	}
}

func (d *statusDataSource) Configure(_ context.Context, req datasource.ConfigureRequest, _ *datasource.ConfigureResponse) {
	d.c = clientOf(req)
}

func (d *statusDataSource) Read(ctx context.Context, _ datasource.ReadRequest, resp *datasource.ReadResponse) {
	out, err := call(ctx, d.c, func(ctx context.Context, api cpv1.ControlPlaneServiceClient) (*cpv1.GetStatusResponse, error) {
		return api.GetStatus(ctx, &cpv1.GetStatusRequest{})
	})
	if err != nil {
		resp.Diagnostics.AddError("Cannot read the status", err.Error())
		return
	}
	m := statusModel{Regions: regionsFromProto(out.GetRegions()), Cells: []cellItem{},
		ControllerLeader: types.StringValue(out.GetControllerLeader().GetId()), PendingWorkflows: types.Int64Value(int64(out.GetPendingWorkflows()))}
	for _, cs := range out.GetCells() {
		m.Cells = append(m.Cells, cellFromProto(cs))
	}
	resp.Diagnostics.Append(resp.State.Set(ctx, m)...)
}

// ---- cellplane_regions ----

type regionsDataSource struct{ c *apiClient }

type regionsModel struct {
	Regions []regionItem `tfsdk:"regions"`
}

func newRegionsDataSource() datasource.DataSource { return &regionsDataSource{} }

func (d *regionsDataSource) Metadata(_ context.Context, req datasource.MetadataRequest, resp *datasource.MetadataResponse) {
	resp.TypeName = req.ProviderTypeName + "_regions"
}

func (d *regionsDataSource) Schema(_ context.Context, _ datasource.SchemaRequest, resp *datasource.SchemaResponse) {
	resp.Schema = schema.Schema{
		Description: "Every region.",
		Attributes:  map[string]schema.Attribute{"regions": schema.ListNestedAttribute{Computed: true, NestedObject: schema.NestedAttributeObject{Attributes: regionAttrs()}}},
	}
}

func (d *regionsDataSource) Configure(_ context.Context, req datasource.ConfigureRequest, _ *datasource.ConfigureResponse) {
	d.c = clientOf(req)
}

func (d *regionsDataSource) Read(ctx context.Context, _ datasource.ReadRequest, resp *datasource.ReadResponse) {
	out, err := call(ctx, d.c, func(ctx context.Context, api cpv1.ControlPlaneServiceClient) (*cpv1.ListRegionsResponse, error) {
		return api.ListRegions(ctx, &cpv1.ListRegionsRequest{})
	})
	if err != nil {
		resp.Diagnostics.AddError("Cannot list the regions", err.Error())
		return
	}
	resp.Diagnostics.Append(resp.State.Set(ctx, regionsModel{Regions: regionsFromProto(out.GetRegions())})...)
}

// ---- cellplane_cells ----

type cellsDataSource struct{ c *apiClient }

type cellsModel struct {
	Region types.String `tfsdk:"region"`
	Cells  []cellItem   `tfsdk:"cells"`
}

func newCellsDataSource() datasource.DataSource { return &cellsDataSource{} }

func (d *cellsDataSource) Metadata(_ context.Context, req datasource.MetadataRequest, resp *datasource.MetadataResponse) {
	resp.TypeName = req.ProviderTypeName + "_cells"
}

func (d *cellsDataSource) Schema(_ context.Context, _ datasource.SchemaRequest, resp *datasource.SchemaResponse) {
	resp.Schema = schema.Schema{
		Description: "The cells (of a region), with their live health, leader and load.",
		Attributes: map[string]schema.Attribute{
			"region": schema.StringAttribute{Optional: true, Description: "Only this region's cells.", Validators: []validator.String{dsIDValidator{}}},
			"cells":  schema.ListNestedAttribute{Computed: true, NestedObject: schema.NestedAttributeObject{Attributes: cellAttrs()}},
		},
	}
}

func (d *cellsDataSource) Configure(_ context.Context, req datasource.ConfigureRequest, _ *datasource.ConfigureResponse) {
	d.c = clientOf(req)
}

func (d *cellsDataSource) Read(ctx context.Context, req datasource.ReadRequest, resp *datasource.ReadResponse) {
	var m cellsModel
	resp.Diagnostics.Append(req.Config.Get(ctx, &m)...)
	if resp.Diagnostics.HasError() {
		return
	}
	out, err := call(ctx, d.c, func(ctx context.Context, api cpv1.ControlPlaneServiceClient) (*cpv1.ListCellsResponse, error) {
		return api.ListCells(ctx, &cpv1.ListCellsRequest{Region: m.Region.ValueString()})
	})
	if err != nil {
		resp.Diagnostics.AddError("Cannot list the cells", err.Error())
		return
	}
	m.Cells = []cellItem{}
	for _, cs := range out.GetCells() {
		m.Cells = append(m.Cells, cellFromProto(cs))
	}
	resp.Diagnostics.Append(resp.State.Set(ctx, m)...)
}

// ---- cellplane_tenant ----

type tenantDataSource struct{ c *apiClient }

type tenantDataModel struct {
	ID               types.String `tfsdk:"id"`
	HomeRegion       types.String `tfsdk:"home_region"`
	State            types.String `tfsdk:"state"`
	Cell             types.String `tfsdk:"cell"`
	CellRegion       types.String `tfsdk:"cell_region"`
	StandbyCell      types.String `tfsdk:"standby_cell"`
	StandbyRegion    types.String `tfsdk:"standby_region"`
	Epoch            types.Int64  `tfsdk:"epoch"`
	FailedOver       types.Bool   `tfsdk:"failed_over"`
	Protected        types.Bool   `tfsdk:"protected"`
	ReplicationState types.String `tfsdk:"replication_state"`
	LagEvents        types.Int64  `tfsdk:"lag_events"`
}

func newTenantDataSource() datasource.DataSource { return &tenantDataSource{} }

func (d *tenantDataSource) Metadata(_ context.Context, req datasource.MetadataRequest, resp *datasource.MetadataResponse) {
	resp.TypeName = req.ProviderTypeName + "_tenant"
}

func (d *tenantDataSource) Schema(_ context.Context, _ datasource.SchemaRequest, resp *datasource.SchemaResponse) {
	s := func(desc string) schema.StringAttribute {
		return schema.StringAttribute{Computed: true, Description: desc}
	}
	resp.Schema = schema.Schema{
		Description: "A tenant's live placement and replication: where it is served now (which changes with switchovers, promotions and moves), its standby and its lag.",
		Attributes: map[string]schema.Attribute{
			"id":                schema.StringAttribute{Required: true, Validators: []validator.String{dsIDValidator{}}},
			"home_region":       s("The region it was created in."),
			"state":             s("CREATING, ACTIVE or DELETING."),
			"cell":              s("The cell that serves it now."),
			"cell_region":       s("That cell's region."),
			"standby_cell":      s("Its standby cell, if any."),
			"standby_region":    s("That cell's region."),
			"epoch":             schema.Int64Attribute{Computed: true, Description: "The placement epoch (grows with every move and failover)."},
			"failed_over":       schema.BoolAttribute{Computed: true, Description: "Served outside its home region."},
			"protected":         schema.BoolAttribute{Computed: true, Description: "It has a standby."},
			"replication_state": s("The standby's replication state (BOOTSTRAPPING, STREAMING), when it answered."),
			"lag_events":        schema.Int64Attribute{Computed: true, Description: "Events the standby is behind."},
		},
	}
}

func (d *tenantDataSource) Configure(_ context.Context, req datasource.ConfigureRequest, _ *datasource.ConfigureResponse) {
	d.c = clientOf(req)
}

func (d *tenantDataSource) Read(ctx context.Context, req datasource.ReadRequest, resp *datasource.ReadResponse) {
	var m tenantDataModel
	resp.Diagnostics.Append(req.Config.Get(ctx, &m)...)
	if resp.Diagnostics.HasError() {
		return
	}
	v, err := readTenant(ctx, d.c, m.ID.ValueString())
	if err != nil {
		resp.Diagnostics.AddError("Cannot read the tenant", err.Error())
		return
	}
	t := v.t
	m = tenantDataModel{
		ID: types.StringValue(t.GetId()), HomeRegion: types.StringValue(t.GetHomeRegion()),
		State: types.StringValue(trimEnum(t.GetState().String(), "TENANT_STATE_")),
		Cell:  types.StringValue(t.GetCell()), CellRegion: types.StringValue(v.ownerRegion),
		StandbyCell: types.StringValue(t.GetStandbyCell()), StandbyRegion: types.StringValue(v.standbyRegion),
		Epoch:            types.Int64Value(int64(t.GetEpoch())),
		FailedOver:       types.BoolValue(v.ownerRegion != "" && v.ownerRegion != t.GetHomeRegion()),
		Protected:        types.BoolValue(t.GetStandbyCell() != ""),
		ReplicationState: types.StringValue(v.repl.GetState()), LagEvents: types.Int64Value(int64(v.repl.GetLagEvents())),
	}
	resp.Diagnostics.Append(resp.State.Set(ctx, m)...)
}
