package provider

import (
	"context"
	"fmt"

	"github.com/hashicorp/terraform-plugin-framework/datasource"
	"github.com/hashicorp/terraform-plugin-framework/datasource/schema"
	"github.com/hashicorp/terraform-plugin-framework/path"
	"github.com/hashicorp/terraform-plugin-framework/schema/validator"
	"github.com/hashicorp/terraform-plugin-framework/types"

	cpv1 "github.com/cellplane/cellplane/proto/cellplane/controlplane/v1"
)

// The singular region and cell data sources, the tenants list with its
// replication, the registry, moves and failovers: live state, read at
// every plan.

// Bounds of data.cellplane_tenants.
const (
	defaultTenantsLimit = 100
	maxTenantsLimit     = 1000
)

// ---- cellplane_region ----

type regionDataSource struct{ c *apiClient }

type regionDataModel struct {
	Name        types.String `tfsdk:"name"`
	Description types.String `tfsdk:"description"`
	CreateTime  types.String `tfsdk:"create_time"`
	Cells       []string     `tfsdk:"cells"`
}

func newRegionDataSource() datasource.DataSource { return &regionDataSource{} }

func (d *regionDataSource) Metadata(_ context.Context, req datasource.MetadataRequest, resp *datasource.MetadataResponse) {
	resp.TypeName = req.ProviderTypeName + "_region"
}

func (d *regionDataSource) Schema(_ context.Context, _ datasource.SchemaRequest, resp *datasource.SchemaResponse) {
	resp.Schema = schema.Schema{
		Description: "One region and the ids of its cells (REGION_NOT_FOUND when it does not exist).",
		Attributes: map[string]schema.Attribute{
			"name":        schema.StringAttribute{Required: true, Validators: []validator.String{dsIDValidator{}}},
			"description": schema.StringAttribute{Computed: true},
			"create_time": schema.StringAttribute{Computed: true, Description: "RFC 3339."},
			"cells":       schema.ListAttribute{Computed: true, ElementType: types.StringType, Description: "The ids of the region's cells."},
		},
	}
}

func (d *regionDataSource) Configure(_ context.Context, req datasource.ConfigureRequest, _ *datasource.ConfigureResponse) {
	d.c = clientOf(req)
}

func (d *regionDataSource) Read(ctx context.Context, req datasource.ReadRequest, resp *datasource.ReadResponse) {
	var m regionDataModel
	resp.Diagnostics.Append(req.Config.Get(ctx, &m)...)
	if resp.Diagnostics.HasError() {
		return
	}
	name := m.Name.ValueString()
	rg, err := findRegion(ctx, d.c, name)
	if err != nil {
		resp.Diagnostics.AddError("Cannot read the region", err.Error())
		return
	}
	if rg == nil {
		resp.Diagnostics.AddAttributeError(path.Root("name"), "Cannot read the region", fmt.Sprintf("REGION_NOT_FOUND: region %s does not exist", name))
		return
	}
	out, err := call(ctx, d.c, func(ctx context.Context, api cpv1.ControlPlaneServiceClient) (*cpv1.ListCellsResponse, error) {
		return api.ListCells(ctx, &cpv1.ListCellsRequest{Region: name})
	})
	if err != nil {
		resp.Diagnostics.AddError("Cannot list the region's cells", err.Error())
		return
	}
	m.Description, m.CreateTime, m.Cells = types.StringValue(rg.GetDescription()), timeString(rg.GetCreateTime().AsTime()), []string{}
	for _, cs := range out.GetCells() {
		m.Cells = append(m.Cells, cs.GetCell().GetId())
	}
	resp.Diagnostics.Append(resp.State.Set(ctx, m)...)
}

// ---- cellplane_cell ----

type cellDataSource struct{ c *apiClient }

type nodeItem struct {
	ID       types.String `tfsdk:"id"`
	Role     types.String `tfsdk:"role"`
	GRPCAddr types.String `tfsdk:"grpc_addr"`
	Version  types.String `tfsdk:"version"`
}

type cellDataModel struct {
	ID              types.String `tfsdk:"id"`
	Region          types.String `tfsdk:"region"`
	State           types.String `tfsdk:"state"`
	Health          types.String `tfsdk:"health"`
	ExpectedMembers types.Int64  `tfsdk:"expected_members"`
	MaxTenants      types.Int64  `tfsdk:"max_tenants"`
	MaxBytes        types.Int64  `tfsdk:"max_bytes"`
	LeaderNode      types.String `tfsdk:"leader_node"`
	LeaderGRPCAddr  types.String `tfsdk:"leader_grpc_addr"`
	LeaderTerm      types.Int64  `tfsdk:"leader_term"`
	Nodes           []nodeItem   `tfsdk:"nodes"`
	Tenants         types.Int64  `tfsdk:"tenants"`
	Bytes           types.Int64  `tfsdk:"bytes"`
}

func newCellDataSource() datasource.DataSource { return &cellDataSource{} }

func (d *cellDataSource) Metadata(_ context.Context, req datasource.MetadataRequest, resp *datasource.MetadataResponse) {
	resp.TypeName = req.ProviderTypeName + "_cell"
}

func (d *cellDataSource) Schema(_ context.Context, _ datasource.SchemaRequest, resp *datasource.SchemaResponse) {
	n := func(desc string) schema.Int64Attribute {
		return schema.Int64Attribute{Computed: true, Description: desc}
	}
	s := func(desc string) schema.StringAttribute {
		return schema.StringAttribute{Computed: true, Description: desc}
	}
	resp.Schema = schema.Schema{
		Description: "One cell's live status (GetCell): its state, health, Raft leader, registered nodes and load. For check blocks and rollout gates.",
		Attributes: map[string]schema.Attribute{
			"id":               schema.StringAttribute{Required: true, Validators: []validator.String{dsIDValidator{}}},
			"region":           s(""),
			"state":            s("ACTIVE, CORDONED, DRAINING or DOWN."),
			"health":           s("HEALTHY, DEGRADED, UNAVAILABLE or NOT_STARTED."),
			"expected_members": n("Raft members it bootstraps with."),
			"max_tenants":      n("Capacity: tenants at most (0: unbounded)."),
			"max_bytes":        n("Capacity: bytes at most (0: unbounded)."),
			"leader_node":      s("The published Raft leader's node id (empty: none)."),
			"leader_grpc_addr": s("Its gRPC address."),
			"leader_term":      n("Its Raft term."),
			"nodes": schema.ListNestedAttribute{Computed: true, Description: "The registered, live nodes.",
				NestedObject: schema.NestedAttributeObject{Attributes: map[string]schema.Attribute{
					"id": s(""), "role": s("MEMBER or WORKER."), "grpc_addr": s(""), "version": s(""),
				}}},
			"tenants": n("Tenants it owns."),
			"bytes":   n("Bytes its tenants store."),
		},
	}
}

func (d *cellDataSource) Configure(_ context.Context, req datasource.ConfigureRequest, _ *datasource.ConfigureResponse) {
	d.c = clientOf(req)
}

func (d *cellDataSource) Read(ctx context.Context, req datasource.ReadRequest, resp *datasource.ReadResponse) {
	var m cellDataModel
	resp.Diagnostics.Append(req.Config.Get(ctx, &m)...)
	if resp.Diagnostics.HasError() {
		return
	}
	cs, err := getCell(ctx, d.c, m.ID.ValueString())
	if err != nil {
		addReasonErr(&resp.Diagnostics, "Cannot read the cell", err, nil, nil)
		return
	}
	resp.Diagnostics.Append(resp.State.Set(ctx, cellDataFromProto(cs))...)
}

func cellDataFromProto(cs *cpv1.CellStatus) cellDataModel {
	c := cs.GetCell()
	m := cellDataModel{
		ID: types.StringValue(c.GetId()), Region: types.StringValue(c.GetRegion()),
		State:           types.StringValue(cellStateName(c.GetState())),
		Health:          types.StringValue(trimEnum(cs.GetHealth().String(), "CELL_HEALTH_")),
		ExpectedMembers: types.Int64Value(int64(c.GetExpectedMembers())),
		MaxTenants:      types.Int64Value(int64(c.GetCapacity().GetMaxTenants())),
		MaxBytes:        types.Int64Value(int64(c.GetCapacity().GetMaxBytes())),
		LeaderNode:      types.StringValue(cs.GetLeader().GetNodeId()),
		LeaderGRPCAddr:  types.StringValue(cs.GetLeader().GetGrpcAddr()),
		LeaderTerm:      types.Int64Value(int64(cs.GetLeader().GetTerm())),
		Nodes:           []nodeItem{},
		Tenants:         types.Int64Value(int64(cs.GetLoad().GetTenants())),
		Bytes:           types.Int64Value(int64(cs.GetLoad().GetBytes())),
	}
	if m.ExpectedMembers.ValueInt64() == 0 {
		m.ExpectedMembers = types.Int64Value(defaultExpectedMembers)
	}
	for _, n := range cs.GetNodes() {
		m.Nodes = append(m.Nodes, nodeItem{ID: types.StringValue(n.GetId()), Role: types.StringValue(trimEnum(n.GetRole().String(), "NODE_ROLE_")),
			GRPCAddr: types.StringValue(n.GetGrpcAddr()), Version: types.StringValue(n.GetVersion())})
	}
	return m
}

// ---- cellplane_tenants ----

type tenantsDataSource struct{ c *apiClient }

type tenantItem struct {
	ID               types.String `tfsdk:"id"`
	HomeRegion       types.String `tfsdk:"home_region"`
	State            types.String `tfsdk:"state"`
	Cell             types.String `tfsdk:"cell"`
	StandbyCell      types.String `tfsdk:"standby_cell"`
	Epoch            types.Int64  `tfsdk:"epoch"`
	ReplicationState types.String `tfsdk:"replication_state"`
	LagEvents        types.Int64  `tfsdk:"lag_events"`
}

type tenantsDataModel struct {
	Region             types.String `tfsdk:"region"`
	Cell               types.String `tfsdk:"cell"`
	State              types.String `tfsdk:"state"`
	Limit              types.Int64  `tfsdk:"limit"`
	IncludeReplication types.Bool   `tfsdk:"include_replication"`
	Tenants            []tenantItem `tfsdk:"tenants"`
	Truncated          types.Bool   `tfsdk:"truncated"`
}

func newTenantsDataSource() datasource.DataSource { return &tenantsDataSource{} }

func (d *tenantsDataSource) Metadata(_ context.Context, req datasource.MetadataRequest, resp *datasource.MetadataResponse) {
	resp.TypeName = req.ProviderTypeName + "_tenants"
}

func (d *tenantsDataSource) Schema(_ context.Context, _ datasource.SchemaRequest, resp *datasource.SchemaResponse) {
	s := func(desc string) schema.StringAttribute {
		return schema.StringAttribute{Computed: true, Description: desc}
	}
	resp.Schema = schema.Schema{
		Description: "Tenants (filtered, at most limit of them) with their live placement and, when include_replication, their standby's replication state and lag " +
			"(one GetTenant each, which asks the standby cell).",
		Attributes: map[string]schema.Attribute{
			"region": schema.StringAttribute{Optional: true, Description: "Only tenants whose home region is this one.", Validators: []validator.String{dsIDValidator{}}},
			"cell":   schema.StringAttribute{Optional: true, Description: "Only tenants this cell owns.", Validators: []validator.String{dsIDValidator{}}},
			"state": schema.StringAttribute{Optional: true, Description: "Only tenants in this state: CREATING, ACTIVE or DELETING.",
				Validators: []validator.String{oneOfString{"CREATING", "ACTIVE", "DELETING"}}},
			"limit": schema.Int64Attribute{Optional: true, Description: fmt.Sprintf("At most this many tenants (default %d, at most %d).", defaultTenantsLimit, maxTenantsLimit),
				Validators: []validator.Int64{int64Range{1, maxTenantsLimit}}},
			"include_replication": schema.BoolAttribute{Optional: true, Description: "Read each tenant's replication state and lag (default true)."},
			"tenants": schema.ListNestedAttribute{Computed: true, NestedObject: schema.NestedAttributeObject{Attributes: map[string]schema.Attribute{
				"id": s(""), "home_region": s(""), "state": s("CREATING, ACTIVE or DELETING."),
				"cell": s("The cell that serves it now."), "standby_cell": s("Its standby cell (empty: none)."),
				"epoch":             schema.Int64Attribute{Computed: true, Description: "The placement epoch."},
				"replication_state": s("The standby's replication state (BOOTSTRAPPING, STREAMING); empty without a standby or include_replication."),
				"lag_events":        schema.Int64Attribute{Computed: true, Description: "Events the standby is behind."},
			}}},
			"truncated": schema.BoolAttribute{Computed: true, Description: "More tenants match than limit."},
		},
	}
}

func (d *tenantsDataSource) Configure(_ context.Context, req datasource.ConfigureRequest, _ *datasource.ConfigureResponse) {
	d.c = clientOf(req)
}

func (d *tenantsDataSource) Read(ctx context.Context, req datasource.ReadRequest, resp *datasource.ReadResponse) {
	var m tenantsDataModel
	resp.Diagnostics.Append(req.Config.Get(ctx, &m)...)
	if resp.Diagnostics.HasError() {
		return
	}
	limit := int(defaultTenantsLimit)
	if !m.Limit.IsNull() {
		limit = int(m.Limit.ValueInt64())
	}
	lreq := &cpv1.ListTenantsRequest{Region: m.Region.ValueString(), Cell: m.Cell.ValueString(), PageSize: uint32(min(limit, maxTenantsLimit))}
	if s := m.State.ValueString(); s != "" {
		lreq.State = cpv1.TenantState(cpv1.TenantState_value["TENANT_STATE_"+s])
	}
	var ts []*cpv1.Tenant
	more := false
	for {
		page, err := call(ctx, d.c, func(ctx context.Context, api cpv1.ControlPlaneServiceClient) (*cpv1.ListTenantsResponse, error) {
			return api.ListTenants(ctx, lreq)
		})
		if err != nil {
			addReasonErr(&resp.Diagnostics, "Cannot list the tenants", err, map[string]path.Path{"region": path.Root("region"), "cell": path.Root("cell")}, nil)
			return
		}
		ts = append(ts, page.GetTenants()...)
		next := page.GetNextPageToken()
		if len(ts) >= limit {
			more = len(ts) > limit || next != ""
			ts = ts[:limit]
			break
		}
		if next == "" || next == lreq.PageToken {
			break
		}
		lreq.PageToken = next
	}
	withRepl := m.IncludeReplication.IsNull() || m.IncludeReplication.ValueBool()
	m.Tenants, m.Truncated = make([]tenantItem, 0, len(ts)), types.BoolValue(more)
	for _, t := range ts {
		it := tenantItem{ID: types.StringValue(t.GetId()), HomeRegion: types.StringValue(t.GetHomeRegion()),
			State: types.StringValue(trimEnum(t.GetState().String(), "TENANT_STATE_")),
			Cell:  types.StringValue(t.GetCell()), StandbyCell: types.StringValue(t.GetStandbyCell()), Epoch: types.Int64Value(int64(t.GetEpoch())),
			ReplicationState: types.StringValue(""), LagEvents: types.Int64Value(0)}
		if withRepl && t.GetStandbyCell() != "" {
			out, err := call(ctx, d.c, func(ctx context.Context, api cpv1.ControlPlaneServiceClient) (*cpv1.GetTenantResponse, error) {
				return api.GetTenant(ctx, &cpv1.GetTenantRequest{Id: t.GetId()})
			})
			switch {
			case isNotFound(err):
				continue // deleted meanwhile
			case err != nil:
				resp.Diagnostics.AddError("Cannot read the tenant "+t.GetId(), err.Error())
				return
			}
			it.ReplicationState, it.LagEvents = types.StringValue(out.GetReplication().GetState()), types.Int64Value(int64(out.GetReplication().GetLagEvents()))
		}
		m.Tenants = append(m.Tenants, it)
	}
	resp.Diagnostics.Append(resp.State.Set(ctx, m)...)
}

// ---- cellplane_registry ----

type registryDataSource struct{ c *apiClient }

type registryDataModel struct {
	EtcdEndpoints []string     `tfsdk:"etcd_endpoints"`
	Prefix        types.String `tfsdk:"prefix"`
}

func newRegistryDataSource() datasource.DataSource { return &registryDataSource{} }

func (d *registryDataSource) Metadata(_ context.Context, req datasource.MetadataRequest, resp *datasource.MetadataResponse) {
	resp.TypeName = req.ProviderTypeName + "_registry"
}

func (d *registryDataSource) Schema(_ context.Context, _ datasource.SchemaRequest, resp *datasource.SchemaResponse) {
	resp.Schema = schema.Schema{
		Description: "Where cell nodes register (GetRegistry): the etcd client endpoints and the keyspace prefix, for the nodes' configuration.",
		Attributes: map[string]schema.Attribute{
			"etcd_endpoints": schema.ListAttribute{Computed: true, ElementType: types.StringType},
			"prefix":         schema.StringAttribute{Computed: true},
		},
	}
}

func (d *registryDataSource) Configure(_ context.Context, req datasource.ConfigureRequest, _ *datasource.ConfigureResponse) {
	d.c = clientOf(req)
}

func (d *registryDataSource) Read(ctx context.Context, _ datasource.ReadRequest, resp *datasource.ReadResponse) {
	out, err := call(ctx, d.c, func(ctx context.Context, api cpv1.ControlPlaneServiceClient) (*cpv1.GetRegistryResponse, error) {
		return api.GetRegistry(ctx, &cpv1.GetRegistryRequest{})
	})
	if err != nil {
		addReasonErr(&resp.Diagnostics, "Cannot read the registry", err, nil, nil)
		return
	}
	m := registryDataModel{EtcdEndpoints: append([]string{}, out.GetEtcdEndpoints()...), Prefix: types.StringValue(out.GetPrefix())}
	resp.Diagnostics.Append(resp.State.Set(ctx, m)...)
}

// ---- cellplane_moves ----

type movesDataSource struct{ c *apiClient }

type moveItem struct {
	ID           types.String `tfsdk:"id"`
	Tenant       types.String `tfsdk:"tenant"`
	SourceCell   types.String `tfsdk:"source_cell"`
	TargetCell   types.String `tfsdk:"target_cell"`
	State        types.String `tfsdk:"state"`
	DrainCell    types.String `tfsdk:"drain_cell"`
	ErrorReason  types.String `tfsdk:"error_reason"`
	ErrorMessage types.String `tfsdk:"error_message"`
	CreateTime   types.String `tfsdk:"create_time"`
	UpdateTime   types.String `tfsdk:"update_time"`
}

type movesDataModel struct {
	Tenant types.String `tfsdk:"tenant"`
	Cell   types.String `tfsdk:"cell"`
	All    types.Bool   `tfsdk:"all"`
	Moves  []moveItem   `tfsdk:"moves"`
}

func newMovesDataSource() datasource.DataSource { return &movesDataSource{} }

func (d *movesDataSource) Metadata(_ context.Context, req datasource.MetadataRequest, resp *datasource.MetadataResponse) {
	resp.TypeName = req.ProviderTypeName + "_moves"
}

func (d *movesDataSource) Schema(_ context.Context, _ datasource.SchemaRequest, resp *datasource.SchemaResponse) {
	s := func() schema.StringAttribute { return schema.StringAttribute{Computed: true} }
	resp.Schema = schema.Schema{
		Description: "Tenant moves (ListMoves): the running ones, or with all also the finished ones still kept.",
		Attributes: map[string]schema.Attribute{
			"tenant": schema.StringAttribute{Optional: true, Description: "Only this tenant's moves.", Validators: []validator.String{dsIDValidator{}}},
			"cell":   schema.StringAttribute{Optional: true, Description: "Only moves from or to this cell.", Validators: []validator.String{dsIDValidator{}}},
			"all":    schema.BoolAttribute{Optional: true, Description: "Include finished moves (DONE, CANCELLED, FAILED) still kept."},
			"moves": schema.ListNestedAttribute{Computed: true, NestedObject: schema.NestedAttributeObject{Attributes: map[string]schema.Attribute{
				"id": s(), "tenant": s(), "source_cell": s(), "target_cell": s(),
				"state":        schema.StringAttribute{Computed: true, Description: "PREPARING, COPYING, CATCHING_UP, FENCING, CUTTING_OVER, CLEANING_UP, DONE, CANCELLED or FAILED."},
				"drain_cell":   schema.StringAttribute{Computed: true, Description: "The drain that started it, if any."},
				"error_reason": s(), "error_message": s(), "create_time": s(), "update_time": s(),
			}}},
		},
	}
}

func (d *movesDataSource) Configure(_ context.Context, req datasource.ConfigureRequest, _ *datasource.ConfigureResponse) {
	d.c = clientOf(req)
}

func (d *movesDataSource) Read(ctx context.Context, req datasource.ReadRequest, resp *datasource.ReadResponse) {
	var m movesDataModel
	resp.Diagnostics.Append(req.Config.Get(ctx, &m)...)
	if resp.Diagnostics.HasError() {
		return
	}
	out, err := call(ctx, d.c, func(ctx context.Context, api cpv1.ControlPlaneServiceClient) (*cpv1.ListMovesResponse, error) {
		return api.ListMoves(ctx, &cpv1.ListMovesRequest{Tenant: m.Tenant.ValueString(), Cell: m.Cell.ValueString(), All: m.All.ValueBool()})
	})
	if err != nil {
		addReasonErr(&resp.Diagnostics, "Cannot list the moves", err, map[string]path.Path{"tenant": path.Root("tenant"), "cell": path.Root("cell")}, nil)
		return
	}
	m.Moves = make([]moveItem, 0, len(out.GetMoves()))
	for _, mv := range out.GetMoves() {
		m.Moves = append(m.Moves, moveItem{
			ID: types.StringValue(mv.GetId()), Tenant: types.StringValue(mv.GetTenant()),
			SourceCell: types.StringValue(mv.GetSourceCell()), TargetCell: types.StringValue(mv.GetTargetCell()),
			State:     types.StringValue(trimEnum(mv.GetState().String(), "MOVE_STATE_")),
			DrainCell: types.StringValue(mv.GetDrainCell()), ErrorReason: types.StringValue(mv.GetErrorReason()), ErrorMessage: types.StringValue(mv.GetErrorMessage()),
			CreateTime: timeString(mv.GetCreateTime().AsTime()), UpdateTime: timeString(mv.GetUpdateTime().AsTime()),
		})
	}
	resp.Diagnostics.Append(resp.State.Set(ctx, m)...)
}

// ---- cellplane_failovers ----

type failoversDataSource struct{ c *apiClient }

type failoverItem struct {
	ID          types.String `tfsdk:"id"`
	Tenant      types.String `tfsdk:"tenant"`
	Kind        types.String `tfsdk:"kind"`
	State       types.String `tfsdk:"state"`
	FromCell    types.String `tfsdk:"from_cell"`
	ToCell      types.String `tfsdk:"to_cell"`
	NewEpoch    types.Int64  `tfsdk:"new_epoch"`
	Trigger     types.String `tfsdk:"trigger"`
	LostEvents  types.Int64  `tfsdk:"lost_events"`
	ErrorReason types.String `tfsdk:"error_reason"`
	CreateTime  types.String `tfsdk:"create_time"`
}

type failoversDataModel struct {
	Tenant    types.String   `tfsdk:"tenant"`
	Cell      types.String   `tfsdk:"cell"`
	Failovers []failoverItem `tfsdk:"failovers"`
}

func newFailoversDataSource() datasource.DataSource { return &failoversDataSource{} }

func (d *failoversDataSource) Metadata(_ context.Context, req datasource.MetadataRequest, resp *datasource.MetadataResponse) {
	resp.TypeName = req.ProviderTypeName + "_failovers"
}

func (d *failoversDataSource) Schema(_ context.Context, _ datasource.SchemaRequest, resp *datasource.SchemaResponse) {
	s := func(desc string) schema.StringAttribute {
		return schema.StringAttribute{Computed: true, Description: desc}
	}
	resp.Schema = schema.Schema{
		Description: "Failovers (ListFailovers), planned (SWITCHOVER) and emergency (PROMOTE), with what each lost.",
		Attributes: map[string]schema.Attribute{
			"tenant": schema.StringAttribute{Optional: true, Description: "Only this tenant's failovers.", Validators: []validator.String{dsIDValidator{}}},
			"cell":   schema.StringAttribute{Optional: true, Description: "Only failovers from or to this cell.", Validators: []validator.String{dsIDValidator{}}},
			"failovers": schema.ListNestedAttribute{Computed: true, NestedObject: schema.NestedAttributeObject{Attributes: map[string]schema.Attribute{
				"id": s(""), "tenant": s(""), "kind": s("SWITCHOVER or PROMOTE."),
				"state":     s("FENCING, WAITING_LEASE, PROMOTING, AWAITING_OLD_OWNER, DONE or FAILED."),
				"from_cell": s("The owner before."), "to_cell": s("The owner after."),
				"new_epoch":    schema.Int64Attribute{Computed: true},
				"trigger":      s("Why it started: operator, or the policy's reason."),
				"lost_events":  schema.Int64Attribute{Computed: true, Description: "Events acknowledged by the old owner that the standby never had (the RPO)."},
				"error_reason": s(""), "create_time": s(""),
			}}},
		},
	}
}

func (d *failoversDataSource) Configure(_ context.Context, req datasource.ConfigureRequest, _ *datasource.ConfigureResponse) {
	d.c = clientOf(req)
}

func (d *failoversDataSource) Read(ctx context.Context, req datasource.ReadRequest, resp *datasource.ReadResponse) {
	var m failoversDataModel
	resp.Diagnostics.Append(req.Config.Get(ctx, &m)...)
	if resp.Diagnostics.HasError() {
		return
	}
	out, err := call(ctx, d.c, func(ctx context.Context, api cpv1.ControlPlaneServiceClient) (*cpv1.ListFailoversResponse, error) {
		return api.ListFailovers(ctx, &cpv1.ListFailoversRequest{Tenant: m.Tenant.ValueString(), Cell: m.Cell.ValueString()})
	})
	if err != nil {
		addReasonErr(&resp.Diagnostics, "Cannot list the failovers", err, map[string]path.Path{"tenant": path.Root("tenant"), "cell": path.Root("cell")}, nil)
		return
	}
	m.Failovers = make([]failoverItem, 0, len(out.GetFailovers()))
	for _, f := range out.GetFailovers() {
		m.Failovers = append(m.Failovers, failoverItem{
			ID: types.StringValue(f.GetId()), Tenant: types.StringValue(f.GetTenant()),
			Kind:     types.StringValue(trimEnum(f.GetKind().String(), "FAILOVER_KIND_")),
			State:    types.StringValue(trimEnum(f.GetState().String(), "FAILOVER_STATE_")),
			FromCell: types.StringValue(f.GetFromCell()), ToCell: types.StringValue(f.GetToCell()), NewEpoch: types.Int64Value(int64(f.GetNewEpoch())),
			Trigger: types.StringValue(f.GetTrigger()), LostEvents: types.Int64Value(int64(f.GetLostEvents())),
			ErrorReason: types.StringValue(f.GetErrorReason()), CreateTime: timeString(f.GetCreateTime().AsTime()),
		})
	}
	resp.Diagnostics.Append(resp.State.Set(ctx, m)...)
}

// int64Range accepts [lo, hi].
type int64Range struct{ lo, hi int64 }

func (r int64Range) Description(context.Context) string { return fmt.Sprintf("%d to %d", r.lo, r.hi) }

func (r int64Range) MarkdownDescription(ctx context.Context) string { return r.Description(ctx) }

func (r int64Range) ValidateInt64(ctx context.Context, req validator.Int64Request, resp *validator.Int64Response) {
	if req.ConfigValue.IsNull() || req.ConfigValue.IsUnknown() {
		return
	}
	if v := req.ConfigValue.ValueInt64(); v < r.lo || v > r.hi {
		resp.Diagnostics.AddAttributeError(req.Path, "Invalid value", fmt.Sprintf("%s is %d: want %s", req.Path, v, r.Description(ctx)))
	}
}
