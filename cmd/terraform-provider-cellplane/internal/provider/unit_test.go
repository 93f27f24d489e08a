package provider

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/terraform-plugin-framework/attr"
	"github.com/hashicorp/terraform-plugin-framework/path"
	fwprovider "github.com/hashicorp/terraform-plugin-framework/provider"
	"github.com/hashicorp/terraform-plugin-framework/resource"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/planmodifier"
	"github.com/hashicorp/terraform-plugin-framework/schema/validator"
	"github.com/hashicorp/terraform-plugin-framework/tfsdk"
	"github.com/hashicorp/terraform-plugin-framework/types"
	"github.com/hashicorp/terraform-plugin-go/tftypes"

	goclient "github.com/cellplane/cellplane/client"
	cpv1 "github.com/cellplane/cellplane/proto/cellplane/controlplane/v1"
)

// present is a non-null raw value: a state or plan that exists.
var present = tftypes.NewValue(tftypes.String, "x")

func TestImmutable(t *testing.T) {
	for _, tc := range []struct {
		name        string
		noState     bool
		noPlan      bool
		state, plan types.String
		wantRefusal bool
	}{
		{name: "create", noState: true, state: types.StringNull(), plan: types.StringValue("acme")},
		{name: "unchanged", state: types.StringValue("acme"), plan: types.StringValue("acme")},
		{name: "changed", state: types.StringValue("acme"), plan: types.StringValue("acme2"), wantRefusal: true},
		{name: "unknown", state: types.StringValue("acme"), plan: types.StringUnknown()},
		{name: "destroy", noPlan: true, state: types.StringValue("acme"), plan: types.StringNull()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := planmodifier.StringRequest{Path: path.Root("id"), StateValue: tc.state, PlanValue: tc.plan,
				State: tfsdk.State{Raw: present}, Plan: tfsdk.Plan{Raw: present}}
			if tc.noState {
				req.State.Raw = tftypes.NewValue(tftypes.String, nil)
			}
			if tc.noPlan {
				req.Plan.Raw = tftypes.NewValue(tftypes.String, nil)
			}
			resp := &planmodifier.StringResponse{PlanValue: tc.plan}
			immutable("because").PlanModifyString(context.Background(), req, resp)
			if got := resp.Diagnostics.HasError(); got != tc.wantRefusal {
				t.Fatalf("refused = %v, want %v (%v)", got, tc.wantRefusal, resp.Diagnostics)
			}
			// Never a replace: the modifier refuses, it does not plan one.
			if resp.RequiresReplace {
				t.Fatal("RequiresReplace set")
			}
		})
	}
}

func limits(rate float64, burst int64) types.Object {
	return types.ObjectValueMust(limitsAttrTypes, map[string]attr.Value{
		"rate": types.Float64Value(rate), "burst": types.Int64Value(burst), "max_bytes": types.Int64Value(0),
		"bytes_rate": types.Float64Value(0), "bytes_burst": types.Int64Value(0),
	})
}

func TestTenantPlanRules(t *testing.T) {
	base := tenantModel{ID: types.StringValue("acme"), HomeRegion: types.StringValue("us-east"), StandbyRegion: types.StringValue("eu-west"),
		Limits: limits(0, 0), DeletionProtection: types.BoolValue(true)}
	with := func(f func(*tenantModel)) tenantModel { m := base; f(&m); return m }
	for _, tc := range []struct {
		name            string
		noState, noPlan bool
		state, plan     tenantModel
		wantPath        string // the attribute of the refusal, "" for none
	}{
		{name: "create", noState: true, plan: base},
		{name: "no change", state: base, plan: base},
		{name: "destroy protected", noPlan: true, state: base, wantPath: "deletion_protection"},
		{name: "destroy unprotected", noPlan: true, state: with(func(m *tenantModel) { m.DeletionProtection = types.BoolValue(false) })},
		{name: "standby in the home region", noState: true, plan: with(func(m *tenantModel) { m.StandbyRegion = types.StringValue("us-east") }), wantPath: "standby_region"},
		{name: "limits change (UpdateTenant)", state: base, plan: with(func(m *tenantModel) { m.Limits = limits(10, 0) })},
		{name: "max_bytes change (UpdateTenant pushes the quota)", state: with(func(m *tenantModel) { m.Limits = limits(10, 0) }), plan: with(func(m *tenantModel) {
			m.Limits = types.ObjectValueMust(limitsAttrTypes, map[string]attr.Value{
				"rate": types.Float64Value(10), "burst": types.Int64Value(0), "max_bytes": types.Int64Value(1 << 30),
				"bytes_rate": types.Float64Value(0), "bytes_burst": types.Int64Value(0),
			})
		})},
		{name: "placement_cell change (a move)", state: base, plan: with(func(m *tenantModel) { m.PlacementCell = types.StringValue("us-east-b") })},
		{name: "limits unknown", state: base, plan: with(func(m *tenantModel) { m.Limits = types.ObjectUnknown(limitsAttrTypes) })},
		{name: "protection off", state: base, plan: with(func(m *tenantModel) { m.DeletionProtection = types.BoolValue(false) })},
	} {
		t.Run(tc.name, func(t *testing.T) {
			diags := tenantPlanRules(tc.noState, tc.noPlan, tc.state, tc.plan)
			if tc.wantPath == "" {
				if diags.HasError() {
					t.Fatalf("refused: %v", diags)
				}
				return
			}
			if !diags.HasError() {
				t.Fatalf("not refused, want a refusal on %s", tc.wantPath)
			}
			type withPath interface{ Path() path.Path }
			if p, ok := diags.Errors()[0].(withPath); !ok || p.Path().String() != tc.wantPath {
				t.Fatalf("refusal %v, want it on %s", diags.Errors()[0], tc.wantPath)
			}
		})
	}
}

// The DR-pair rule: what standby_region reads as after each event.
func TestPairStandbyRegion(t *testing.T) {
	for _, tc := range []struct {
		name                 string
		owner, standby, want string
	}{
		{"steady", "us-east", "eu-west", "eu-west"},
		{"switchover (not drift)", "eu-west", "us-east", "eu-west"},
		{"emergency promotion (no standby: re-protect)", "eu-west", "", ""},
		{"no standby asked", "us-east", "", ""},
		{"standby in a third region", "us-east", "ap-south", "ap-south"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := pairStandbyRegion("us-east", tc.owner, tc.standby); got != tc.want {
				t.Fatalf("pairStandbyRegion(us-east, %q, %q) = %q, want %q", tc.owner, tc.standby, got, tc.want)
			}
		})
	}
	// After a promotion to eu-west, the new standby goes home.
	if got := standbyTarget("us-east", "eu-west", "eu-west"); got != "us-east" {
		t.Fatalf("standbyTarget after promotion = %q, want us-east", got)
	}
	if got := standbyTarget("us-east", "eu-west", "us-east"); got != "eu-west" {
		t.Fatalf("standbyTarget = %q, want eu-west", got)
	}
}

func TestParseAPIKeyImportID(t *testing.T) {
	for _, tc := range []struct {
		in, tenant, key string
		ok              bool
	}{
		{"acme/0123abcd", "acme", "0123abcd", true},
		{"acme", "", "", false},
		{"acme/", "", "", false},
		{"/k", "", "", false},
		{"a/b/c", "", "", false},
		{"ac me/k", "", "", false},
	} {
		tenant, key, err := parseAPIKeyImportID(tc.in)
		if (err == nil) != tc.ok || tenant != tc.tenant || key != tc.key {
			t.Errorf("parseAPIKeyImportID(%q) = %q, %q, %v", tc.in, tenant, key, err)
		}
	}
}

func TestValidators(t *testing.T) {
	for _, tc := range []struct {
		v    validator.String
		in   string
		fail bool
	}{
		{idValidator{}, "us-east", false},
		{idValidator{}, "us east", true},
		{idValidator{}, strings.Repeat("a", 129), true},
		{maxLen(3), "abc", false},
		{maxLen(3), "abcd", true},
	} {
		resp := &validator.StringResponse{}
		tc.v.ValidateString(context.Background(), validator.StringRequest{Path: path.Root("x"), ConfigValue: types.StringValue(tc.in)}, resp)
		if resp.Diagnostics.HasError() != tc.fail {
			t.Errorf("%T(%q): error = %v, want %v", tc.v, tc.in, resp.Diagnostics.HasError(), tc.fail)
		}
	}
}

// The provider block resolves like cellctl: endpoint > CELLPLANE_CONTROLPLANE
// > the file (config_file > CELLPLANE_CONFIG) > 127.0.0.1:7000; the
// block's TLS settings replace the file's as a whole.
func TestResolveSettings(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "client.yaml")
	if err := os.WriteFile(file, []byte("controlplane: file.example:7000\nca: certs/ca.crt\ncert: certs/op.crt\nkey: certs/op.key\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		env     map[string]string
		m       providerModel
		want    goclient.ControlPlaneTarget
		wantErr string
	}{
		{name: "defaults", want: goclient.ControlPlaneTarget{Addr: "127.0.0.1:7000"}},
		{name: "CELLPLANE_CONFIG", env: map[string]string{goclient.EnvConfigFile: file},
			want: goclient.ControlPlaneTarget{Addr: "file.example:7000", CA: filepath.Join(dir, "certs/ca.crt"), Cert: filepath.Join(dir, "certs/op.crt"), Key: filepath.Join(dir, "certs/op.key")}},
		{name: "env address over the file", env: map[string]string{goclient.EnvConfigFile: file, goclient.EnvControlPlane: "env.example:7000"},
			want: goclient.ControlPlaneTarget{Addr: "env.example:7000", CA: filepath.Join(dir, "certs/ca.crt"), Cert: filepath.Join(dir, "certs/op.crt"), Key: filepath.Join(dir, "certs/op.key")}},
		{name: "endpoint over env, CA over the file's TLS", env: map[string]string{goclient.EnvControlPlane: "env.example:7000"},
			m:    providerModel{Endpoint: types.StringValue("cp:7000"), ConfigFile: types.StringValue(file), TLSCAFile: types.StringValue("/ca.pem")},
			want: goclient.ControlPlaneTarget{Addr: "cp:7000", CA: "/ca.pem"}},
		{name: "cert without key", m: providerModel{TLSCAFile: types.StringValue("/ca"), TLSCertFile: types.StringValue("/c")}, wantErr: "go together"},
		{name: "cert without CA", m: providerModel{TLSCertFile: types.StringValue("/c"), TLSKeyFile: types.StringValue("/k")}, wantErr: "needs tls_ca_file"},
		{name: "bad call_timeout", m: providerModel{CallTimeout: types.StringValue("soon")}, wantErr: "call_timeout"},
		{name: "missing file", m: providerModel{ConfigFile: types.StringValue(filepath.Join(dir, "nope.yaml"))}, wantErr: "nope.yaml"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv(goclient.EnvConfigFile, "")
			t.Setenv(goclient.EnvControlPlane, "")
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			s, err := resolveSettings(tc.m)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if s.target != tc.want || s.callTimeout != DefaultCallTimeout || s.maxOps != DefaultMaxConcurrentOperations {
				t.Fatalf("settings %+v, want target %+v", s, tc.want)
			}
		})
	}
	s, err := resolveSettings(providerModel{CallTimeout: types.StringValue("3s"), MaxConcurrentOperations: types.Int64Value(2)})
	if err != nil || s.callTimeout != 3*time.Second || s.maxOps != 2 {
		t.Fatalf("settings %+v, %v", s, err)
	}
}

// The schemas are valid (what Terraform's GetProviderSchema checks).
func TestSchemas(t *testing.T) {
	ctx := context.Background()
	p := New("test")()
	var ps fwprovider.SchemaResponse
	p.Schema(ctx, fwprovider.SchemaRequest{}, &ps)
	if ps.Diagnostics.HasError() {
		t.Fatal(ps.Diagnostics)
	}
	for _, f := range p.Resources(ctx) {
		var resp resource.SchemaResponse
		f().Schema(ctx, resource.SchemaRequest{}, &resp)
		if d := resp.Schema.ValidateImplementation(ctx); d.HasError() || resp.Diagnostics.HasError() {
			t.Fatalf("%T: %v %v", f(), d, resp.Diagnostics)
		}
	}
}

func TestAcquireBounds(t *testing.T) {
	c := &apiClient{ops: make(chan struct{}, 1)}
	release, err := c.acquire(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := c.acquire(ctx); err == nil {
		t.Fatal("a second operation got a slot of max_concurrent_operations = 1")
	}
	release()
	if r, err := c.acquire(context.Background()); err != nil {
		t.Fatal(err)
	} else {
		r()
	}
}

// What "created" waits for: ACTIVE, and with a standby asked, STREAMING.
func TestTenantUsable(t *testing.T) {
	active := cpv1.TenantState_TENANT_STATE_ACTIVE
	for _, tc := range []struct {
		name        string
		v           tenantView
		wantStandby bool
		usable      bool
	}{
		{"creating", tenantView{t: &cpv1.Tenant{State: cpv1.TenantState_TENANT_STATE_CREATING}}, false, false},
		{"active", tenantView{t: &cpv1.Tenant{State: active}}, false, true},
		{"no standby cell yet", tenantView{t: &cpv1.Tenant{State: active}}, true, false},
		{"bootstrapping", tenantView{t: &cpv1.Tenant{State: active, StandbyCell: "e"}, repl: &cpv1.ReplicationLag{State: "BOOTSTRAPPING"}}, true, false},
		{"standby did not answer", tenantView{t: &cpv1.Tenant{State: active, StandbyCell: "e"}}, true, false},
		{"streaming", tenantView{t: &cpv1.Tenant{State: active, StandbyCell: "e"}, repl: &cpv1.ReplicationLag{State: replicationStreaming}}, true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if why := tc.v.usable(tc.wantStandby); (why == "") != tc.usable {
				t.Fatalf("usable = %q, want usable %v", why, tc.usable)
			}
		})
	}
}
