package provider

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/terraform-plugin-framework/attr"
	"github.com/hashicorp/terraform-plugin-framework/datasource"
	"github.com/hashicorp/terraform-plugin-framework/diag"
	"github.com/hashicorp/terraform-plugin-framework/path"
	"github.com/hashicorp/terraform-plugin-framework/resource"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/planmodifier"
	"github.com/hashicorp/terraform-plugin-framework/schema/validator"
	"github.com/hashicorp/terraform-plugin-framework/tfsdk"
	"github.com/hashicorp/terraform-plugin-framework/types"
	"github.com/hashicorp/terraform-plugin-go/tftypes"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/cellplane/cellplane/internal/cperr"
	cpv1 "github.com/cellplane/cellplane/proto/cellplane/controlplane/v1"
)

// The drift rule of a cell's state: a live DRAINING or DOWN cell keeps
// its state whatever the configuration says (with a warning), so an
// apply never ends a drain nor fights a DOWN cell, and the plan is empty.
func TestCellStatePlan(t *testing.T) {
	for _, tc := range []struct {
		prior, planned, want string
		warn                 bool
	}{
		{cellActive, cellActive, cellActive, false},
		{cellActive, cellCordoned, cellCordoned, false},
		{cellCordoned, cellActive, cellActive, false},
		{cellActive, cellDraining, cellDraining, false},
		{cellCordoned, cellDraining, cellDraining, false},
		{cellDraining, cellDraining, cellDraining, false},
		{cellDraining, cellActive, cellDraining, true},
		{cellDraining, cellCordoned, cellDraining, true},
		{cellDown, cellActive, cellDown, true},
		{cellDown, cellCordoned, cellDown, true},
		{cellDown, cellDraining, cellDown, true},
	} {
		got, why := cellStatePlan(tc.prior, tc.planned)
		if got != tc.want || (why != "") != tc.warn {
			t.Errorf("cellStatePlan(%s, %s) = %s, %q; want %s, warning %v", tc.prior, tc.planned, got, why, tc.want, tc.warn)
		}
	}
}

// The attributes of the two resources are a contract (modules and other
// code build on them): exactly these, with these roles.
func TestResourceSchemaContract(t *testing.T) {
	ctx := context.Background()
	type role struct{ required, optional, computed bool }
	for _, tc := range []struct {
		r    resource.Resource
		want map[string]role
	}{
		{newCellResource(), map[string]role{
			"id": {required: true}, "region": {required: true},
			"expected_members": {optional: true, computed: true}, "capacity": {optional: true},
			"state": {optional: true, computed: true}, "wait_for_healthy": {optional: true, computed: true},
			"timeouts": {optional: true},
		}},
		{newFailoverPolicyResource(), map[string]role{
			"id": {computed: true}, "enabled": {required: true}, "unhealthy_for": {optional: true},
			"regions": {optional: true}, "max_concurrent": {optional: true},
		}},
	} {
		var resp resource.SchemaResponse
		tc.r.Schema(ctx, resource.SchemaRequest{}, &resp)
		got := map[string]role{}
		for k, a := range resp.Schema.Attributes {
			got[k] = role{a.IsRequired(), a.IsOptional(), a.IsComputed()}
		}
		if len(got) != len(tc.want) {
			t.Errorf("%T: attributes %v, want %v", tc.r, got, tc.want)
		}
		for k, w := range tc.want {
			if got[k] != w {
				t.Errorf("%T.%s: %+v, want %+v", tc.r, k, got[k], w)
			}
		}
	}
}

// Every data source's schema is valid and the names exist.
func TestDataSourceSchemas(t *testing.T) {
	ctx := context.Background()
	p := New("test")()
	var names []string
	for _, f := range p.DataSources(ctx) {
		d := f()
		var md datasource.MetadataResponse
		d.Metadata(ctx, datasource.MetadataRequest{ProviderTypeName: "cellplane"}, &md)
		names = append(names, md.TypeName)
		var resp datasource.SchemaResponse
		d.Schema(ctx, datasource.SchemaRequest{}, &resp)
		if v := resp.Schema.ValidateImplementation(ctx); v.HasError() || resp.Diagnostics.HasError() {
			t.Fatalf("%s: %v %v", md.TypeName, v, resp.Diagnostics)
		}
	}
	for _, want := range []string{"cellplane_status", "cellplane_region", "cellplane_regions", "cellplane_cell", "cellplane_cells",
		"cellplane_tenant", "cellplane_tenants", "cellplane_registry", "cellplane_moves", "cellplane_failovers"} {
		if !slices.Contains(names, want) {
			t.Errorf("no data source %s (have %v)", want, names)
		}
	}
}

func TestCapacity(t *testing.T) {
	null := types.ObjectNull(capacityAttrTypes)
	obj := func(mt, mb int64) types.Object {
		return types.ObjectValueMust(capacityAttrTypes, map[string]attr.Value{"max_tenants": types.Int64Value(mt), "max_bytes": types.Int64Value(mb)})
	}
	// An unbounded capacity reads as null while the block is omitted, as
	// zeros once it is written (no perpetual diff either way).
	if got := capacityFromProto(nil, null); !got.IsNull() {
		t.Errorf("unbounded, omitted: %v", got)
	}
	if got := capacityFromProto(&cpv1.CellCapacity{}, obj(0, 0)); !got.Equal(obj(0, 0)) {
		t.Errorf("unbounded, written: %v", got)
	}
	if got := capacityFromProto(&cpv1.CellCapacity{MaxTenants: 5}, null); !got.Equal(obj(5, 0)) {
		t.Errorf("bounded, changed outside: %v", got)
	}
	if p := capacityToProto(null); p.GetMaxTenants() != 0 || p.GetMaxBytes() != 0 {
		t.Errorf("null → %v, want unbounded", p)
	}
	if p := capacityToProto(obj(7, 9)); p.GetMaxTenants() != 7 || p.GetMaxBytes() != 9 {
		t.Errorf("{7,9} → %v", p)
	}
	if !capacityToProtoEqual(null, nil) || capacityToProtoEqual(obj(1, 0), nil) {
		t.Error("capacityToProtoEqual")
	}
}

func TestCellToModel(t *testing.T) {
	prior := cellModel{Capacity: types.ObjectNull(capacityAttrTypes), WaitForHealthy: types.BoolValue(true)}
	m := cellToModel(&cpv1.Cell{Id: "c", Region: "r", State: cpv1.CellState_CELL_STATE_DOWN}, prior)
	if m.ExpectedMembers.ValueInt64() != defaultExpectedMembers {
		t.Errorf("expected_members 0 read as %v, want %d", m.ExpectedMembers, defaultExpectedMembers)
	}
	if m.State.ValueString() != cellDown || !m.WaitForHealthy.ValueBool() || !m.Capacity.IsNull() {
		t.Errorf("model %+v", m)
	}
}

// Each reason lands on its attribute; CELL_NOT_EMPTY says what is left
// and that nothing was destroyed.
func TestAddReasonErr(t *testing.T) {
	for _, tc := range []struct {
		err      error
		path     path.Path // empty: on the resource
		contains string
	}{
		{cperr.New(cperr.RegionNotFound, "region x does not exist"), path.Root("region"), "REGION_NOT_FOUND"},
		{cperr.New(cperr.AlreadyExists, "cell c exists"), path.Root("id"), "import it"},
		{cperr.New(cperr.CellNotActive, "cell c is DRAINING"), path.Root("state"), "DRAINING"},
		{cperr.New(cperr.CellNotEmpty, "cell c still has").With(cperr.MetaTenants, "t1").With(cperr.MetaNodes, "n1"), path.Root("id"), "tenants: t1; nodes: n1"},
		{cperr.Invalid(cperr.FieldViolation{Field: "expected_members", Description: "must be 1, 3, 5 or 7"}), path.Root("expected_members"), "must be"},
		{cperr.New(cperr.PermissionDenied, "read-only"), path.Empty(), "admin role"},
		{cperr.Invalid(cperr.FieldViolation{Field: "capacity[0]", Description: "bad"}), path.Root("capacity"), "bad"},
		{errors.New("cannot reach"), path.Empty(), "cannot reach"},
	} {
		var diags diag.Diagnostics
		addReasonErr(&diags, "summary", tc.err, cellFields, cellReasons)
		if len(diags) != 1 || !diags.HasError() {
			t.Fatalf("%v: %v", tc.err, diags)
		}
		d := diags[0]
		got := path.Empty()
		if wp, ok := d.(diag.DiagnosticWithPath); ok {
			got = wp.Path()
		}
		if !got.Equal(tc.path) || !strings.Contains(d.Detail(), tc.contains) {
			t.Errorf("%v: on %q, detail %q; want on %q, containing %q", tc.err, got, d.Detail(), tc.path, tc.contains)
		}
	}
}

func TestOnlyDrainRecord(t *testing.T) {
	drainOnly := cperr.New(cperr.CellNotEmpty, "x").With(cperr.MetaOperations, "drain-c")
	if !onlyDrainRecord(drainOnly, "c") {
		t.Error("the drain record alone: want a retry")
	}
	for _, err := range []error{
		cperr.New(cperr.CellNotEmpty, "x").With(cperr.MetaOperations, "drain-c").With(cperr.MetaNodes, "n1"),
		cperr.New(cperr.CellNotEmpty, "x").With(cperr.MetaOperations, "mv-1"),
		cperr.New(cperr.CellNotActive, "x"),
	} {
		if onlyDrainRecord(err, "c") {
			t.Errorf("%v: want final", err)
		}
	}
}

func TestImmutableInt64(t *testing.T) {
	req := planmodifier.Int64Request{Path: path.Root("expected_members"), StateValue: types.Int64Value(3), PlanValue: types.Int64Value(5),
		State: tfsdk.State{Raw: present}, Plan: tfsdk.Plan{Raw: present}}
	resp := &planmodifier.Int64Response{PlanValue: req.PlanValue}
	immutableInt64{why: "x"}.PlanModifyInt64(context.Background(), req, resp)
	if !resp.Diagnostics.HasError() || resp.RequiresReplace {
		t.Fatalf("a change: %v, replace %v; want a refusal, never a replace", resp.Diagnostics, resp.RequiresReplace)
	}
	req.PlanValue = types.Int64Value(3)
	resp = &planmodifier.Int64Response{PlanValue: req.PlanValue}
	immutableInt64{}.PlanModifyInt64(context.Background(), req, resp)
	if resp.Diagnostics.HasError() {
		t.Fatal(resp.Diagnostics)
	}
	req.State.Raw = tftypes.NewValue(tftypes.String, nil) // a create
	req.PlanValue = types.Int64Value(5)
	resp = &planmodifier.Int64Response{PlanValue: req.PlanValue}
	immutableInt64{}.PlanModifyInt64(context.Background(), req, resp)
	if resp.Diagnostics.HasError() {
		t.Fatal(resp.Diagnostics)
	}
}

func TestCellValidators(t *testing.T) {
	ctx := context.Background()
	str := func(v validator.String, in string) bool {
		resp := &validator.StringResponse{}
		v.ValidateString(ctx, validator.StringRequest{Path: path.Root("x"), ConfigValue: types.StringValue(in)}, resp)
		return resp.Diagnostics.HasError()
	}
	i64 := func(v validator.Int64, in int64) bool {
		resp := &validator.Int64Response{}
		v.ValidateInt64(ctx, validator.Int64Request{Path: path.Root("x"), ConfigValue: types.Int64Value(in)}, resp)
		return resp.Diagnostics.HasError()
	}
	states := oneOfString{cellActive, cellCordoned, cellDraining}
	for _, tc := range []struct {
		name string
		fail bool
		want bool
	}{
		{"state ACTIVE", str(states, "ACTIVE"), false},
		{"state DOWN", str(states, "DOWN"), true},
		{"members 3", i64(oneOfInt64{1, 3, 5, 7}, 3), false},
		{"members 2", i64(oneOfInt64{1, 3, 5, 7}, 2), true},
		{"capacity -1", i64(nonNegative{}, -1), true},
		{"limit 0", i64(int64Range{1, 1000}, 0), true},
		{"limit 1000", i64(int64Range{1, 1000}, 1000), false},
		{"unhealthy_for 30s", str(policyDuration{}, "30s"), false},
		{"unhealthy_for 0s", str(policyDuration{}, "0s"), false},
		{"unhealthy_for 500ms", str(policyDuration{}, "500ms"), true},
		{"unhealthy_for soon", str(policyDuration{}, "soon"), true},
	} {
		if tc.fail != tc.want {
			t.Errorf("%s: error %v, want %v", tc.name, tc.fail, tc.want)
		}
	}
	resp := &validator.SetResponse{}
	idSet{}.ValidateSet(ctx, validator.SetRequest{Path: path.Root("regions"),
		ConfigValue: types.SetValueMust(types.StringType, []attr.Value{types.StringValue("ok"), types.StringValue("not ok")})}, resp)
	if !resp.Diagnostics.HasError() {
		t.Error("regions with a bad id: want an error")
	}
}

// The policy read back keeps the configuration's spelling and its nulls:
// no perpetual diff.
func TestPolicyToModel(t *testing.T) {
	ctx := context.Background()
	prior := failoverPolicyModel{UnhealthyFor: types.StringValue("1m"), Regions: types.SetNull(types.StringType), MaxConcurrent: types.Int64Null()}
	m := policyToModel(&cpv1.FailoverPolicy{Enabled: true, UnhealthyFor: durationpb.New(time.Minute)}, prior)
	if m.UnhealthyFor.ValueString() != "1m" || !m.Regions.IsNull() || !m.MaxConcurrent.IsNull() || m.ID.ValueString() != failoverPolicyID {
		t.Errorf("model %+v", m)
	}
	// Changed outside Terraform: the stored values show.
	m = policyToModel(&cpv1.FailoverPolicy{UnhealthyFor: durationpb.New(90 * time.Second), Regions: []string{"b", "a"}, MaxConcurrent: 4}, prior)
	if m.UnhealthyFor.ValueString() != "1m30s" || len(m.Regions.Elements()) != 2 || m.MaxConcurrent.ValueInt64() != 4 {
		t.Errorf("model %+v", m)
	}
	// And back to the API: sorted regions, zero for null.
	p, d := policyToProto(ctx, m)
	if d.HasError() || !slices.Equal(p.GetRegions(), []string{"a", "b"}) || p.GetUnhealthyFor().AsDuration() != 90*time.Second {
		t.Errorf("proto %v %v", p, d)
	}
	p, d = policyToProto(ctx, failoverPolicyModel{Enabled: types.BoolValue(false), UnhealthyFor: types.StringNull(), Regions: types.SetNull(types.StringType), MaxConcurrent: types.Int64Null()})
	if d.HasError() || p.GetUnhealthyFor() != nil || len(p.GetRegions()) != 0 || p.GetMaxConcurrent() != 0 {
		t.Errorf("proto of nulls %v %v", p, d)
	}
}

// ModifyPlan keeps a live DRAINING (or DOWN) state in the plan, with a
// warning on state, whatever the configuration says; it leaves other
// changes alone.
func TestCellModifyPlan(t *testing.T) {
	ctx := context.Background()
	r := newCellResource().(*cellResource)
	var sr resource.SchemaResponse
	r.Schema(ctx, resource.SchemaRequest{}, &sr)
	model := func(state string) cellModel {
		return cellToModel(&cpv1.Cell{Id: "c", Region: "r", ExpectedMembers: 1}, cellModel{
			Capacity: types.ObjectNull(capacityAttrTypes), WaitForHealthy: types.BoolValue(false)}).withState(state)
	}
	for _, tc := range []struct {
		prior, planned, want string
		warn                 bool
	}{
		{cellDraining, cellActive, cellDraining, true},
		{cellDown, cellCordoned, cellDown, true},
		{cellActive, cellCordoned, cellCordoned, false},
		{cellCordoned, cellDraining, cellDraining, false},
	} {
		st := tfsdk.State{Schema: sr.Schema, Raw: tftypes.NewValue(sr.Schema.Type().TerraformType(ctx), nil)}
		pl := tfsdk.Plan{Schema: sr.Schema, Raw: tftypes.NewValue(sr.Schema.Type().TerraformType(ctx), nil)}
		if d := st.Set(ctx, model(tc.prior)); d.HasError() {
			t.Fatal(d)
		}
		if d := pl.Set(ctx, model(tc.planned)); d.HasError() {
			t.Fatal(d)
		}
		resp := &resource.ModifyPlanResponse{Plan: pl}
		r.ModifyPlan(ctx, resource.ModifyPlanRequest{State: st, Plan: pl}, resp)
		var got types.String
		resp.Diagnostics.Append(resp.Plan.GetAttribute(ctx, path.Root("state"), &got)...)
		if resp.Diagnostics.HasError() {
			t.Fatal(resp.Diagnostics)
		}
		if got.ValueString() != tc.want || (resp.Diagnostics.WarningsCount() == 1) != tc.warn {
			t.Errorf("prior %s, planned %s: plan %s, diagnostics %v; want %s, warning %v", tc.prior, tc.planned, got, resp.Diagnostics, tc.want, tc.warn)
		}
	}
}

func (m cellModel) withState(s string) cellModel { m.State = types.StringValue(s); return m }
