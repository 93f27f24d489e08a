package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spf13/cobra"
	"go.uber.org/goleak"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"sigs.k8s.io/yaml"

	"github.com/cellplane/cellplane/cells"
	"github.com/cellplane/cellplane/internal/dial"
	"github.com/cellplane/cellplane/internal/testutil"
	cellv1 "github.com/cellplane/cellplane/proto/cellplane/cell/v1"
	cpv1 "github.com/cellplane/cellplane/proto/cellplane/controlplane/v1"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/")

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// syncBuffer is a bytes.Buffer safe for a running command and the test.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

type result struct {
	code     int
	out, err string
}

func runCmd(ctx context.Context, args ...string) result {
	var out, errb syncBuffer
	code := run(ctx, args, streams{In: strings.NewReader(""), Out: &out, Err: &errb}, buildInfo{Version: "v1.2.3", Commit: "abc1234"})
	return result{code, out.String(), errb.String()}
}

// cp runs cellctl against the control plane at addr.
func cp(t *testing.T, addr string, args ...string) result {
	t.Helper()
	return runCmd(testutil.Context(t, 30*time.Second), append([]string{"--controlplane", addr}, args...)...)
}

// mustCP is cp that fails the test unless the command succeeds.
func mustCP(t *testing.T, addr string, args ...string) string {
	t.Helper()
	r := cp(t, addr, args...)
	if r.code != 0 || r.err != "" {
		t.Fatalf("cellctl %s: exit %d, stderr %q", strings.Join(args, " "), r.code, r.err)
	}
	return r.out
}

// checkGolden compares got with testdata/name, or rewrites it with -update.
func checkGolden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if got != string(want) {
		t.Errorf("output differs from %s; if the change is intended, run\n\tgo test ./cmd/cellctl -update\n%s",
			path, lineDiff(string(want), got))
	}
}

// readGolden returns testdata/name.
func readGolden(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// lineDiff lists the lines that differ between want and got.
func lineDiff(want, got string) string {
	w, g := strings.Split(want, "\n"), strings.Split(got, "\n")
	var b strings.Builder
	for i := range max(len(w), len(g)) {
		var wl, gl string
		if i < len(w) {
			wl = w[i]
		}
		if i < len(g) {
			gl = g[i]
		}
		if wl != gl {
			fmt.Fprintf(&b, "line %d:\n\t- %s\n\t+ %s\n", i+1, wl, gl)
		}
	}
	return b.String()
}

func TestVersion(t *testing.T) {
	r := runCmd(t.Context(), "version")
	want := fmt.Sprintf("cellctl v1.2.3 (commit abc1234, %s %s/%s)\n", runtime.Version(), runtime.GOOS, runtime.GOARCH)
	if r.code != 0 || r.out != want || r.err != "" {
		t.Fatalf("version = %d %q %q, want %q", r.code, r.out, r.err, want)
	}
}

// TestHelp compares help texts with golden files: help is documentation.
func TestHelp(t *testing.T) {
	tests := []struct {
		golden string
		args   []string
	}{
		{"help-root.golden", []string{"--help"}},
		{"help-status.golden", []string{"status", "--help"}},
		{"help-cell-create.golden", []string{"cell", "create", "--help"}},
		{"help-tenant.golden", []string{"tenant", "--help"}},
		{"help-tenant-list.golden", []string{"tenant", "list", "--help"}},
		{"help-tenant-key-create.golden", []string{"tenant", "key", "create", "--help"}},
		{"help-tenant-update.golden", []string{"tenant", "update", "--help"}},
		{"help-tenant-create.golden", []string{"tenant", "create", "--help"}},
		{"help-failover-policy-set.golden", []string{"failover-policy", "set", "--help"}},
		{"help-cell-update.golden", []string{"cell", "update", "--help"}},
		{"help-cell-delete.golden", []string{"cell", "delete", "--help"}},
		{"help-region.golden", []string{"region", "--help"}},
		{"help-region-delete.golden", []string{"region", "delete", "--help"}},
	}
	for _, tt := range tests {
		t.Run(tt.golden, func(t *testing.T) {
			r := runCmd(t.Context(), tt.args...)
			if r.code != 0 || r.err != "" {
				t.Fatalf("%v: exit %d, stderr %q", tt.args, r.code, r.err)
			}
			checkGolden(t, tt.golden, r.out)
		})
	}
}

func TestEveryCommandIsDocumented(t *testing.T) {
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		if c.Name() == "help" || c.Name() == "completion" {
			return
		}
		if c.Short == "" || c.Long == "" || c.Example == "" {
			t.Errorf("%q lacks Short, Long or Example", c.CommandPath())
		}
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(newRootCmd(streams{}, buildInfo{}))
}

// TestControlPlane runs cellctl against one real control plane (etcd, a
// replica, and the real nodes of the cells seed makes), shared by the
// subtests, which run in order: the read-only ones first, then the ones
// that change the topology.
func TestControlPlane(t *testing.T) {
	if testing.Short() {
		t.Skip("starts etcd, a control plane and two cells (4 nodes)")
	}
	env := startControlPlane(t)
	topo := seed(t, env)
	addr := env.Addr()

	t.Run("tables", func(t *testing.T) { testTables(t, addr) })
	t.Run("machine output", func(t *testing.T) { testMachineOutput(t, addr) })
	t.Run("environment", func(t *testing.T) { testEnvironment(t, addr) })
	t.Run("server errors", func(t *testing.T) { testServerErrors(t, addr) })
	t.Run("commands", func(t *testing.T) { testCommands(t, addr) })
	t.Run("tenant owner in a real cell", func(t *testing.T) { testTenantOnRealCell(t, addr, topo.use1a) })
}

// testTables checks the table output (-o table, the default) against
// golden files, after normalize.
func testTables(t *testing.T, addr string) {
	tests := []struct {
		golden string
		args   []string
		sort   bool // rows come in a random order (by key id)
	}{
		{"status.golden", []string{"status"}, false},
		{"region-list.golden", []string{"region", "list"}, false},
		{"cell-list.golden", []string{"cell", "list"}, false},
		{"cell-list-region.golden", []string{"cell", "list", "--region", "eu-west"}, false},
		{"cell-get.golden", []string{"cell", "get", "use1-a"}, false},
		{"cell-get-no-nodes.golden", []string{"cell", "get", "euw1-a"}, false},
		{"tenant-list.golden", []string{"tenant", "list"}, false},
		{"tenant-list-page.golden", []string{"tenant", "list", "--page-size", "2"}, false},
		{"tenant-list-filter.golden", []string{"tenant", "list", "--cell", "use1-a", "--state", "active"}, false},
		{"tenant-get.golden", []string{"tenant", "get", "hooli"}, false},
		{"tenant-get-defaults.golden", []string{"tenant", "get", "globex"}, false},
		{"key-list.golden", []string{"tenant", "key", "list", "hooli"}, true},
		{"key-create.golden", []string{"tenant", "key", "create", "initech"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.golden, func(t *testing.T) {
			got := normalize(mustCP(t, addr, tt.args...))
			if tt.sort {
				got = sortRows(got)
			}
			checkGolden(t, tt.golden, got)
		})
	}
}

// testMachineOutput checks that -o json and -o yaml parse back into the
// API's messages, and agree.
func testMachineOutput(t *testing.T, addr string) {
	tests := []struct {
		args  []string
		msg   func() proto.Message
		check func(t *testing.T, m proto.Message)
	}{
		{[]string{"status"}, func() proto.Message { return &cpv1.GetStatusResponse{} }, func(t *testing.T, m proto.Message) {
			s := m.(*cpv1.GetStatusResponse)
			if len(s.GetRegions()) != 3 || len(s.GetCells()) != 3 || s.GetControllerLeader().GetId() != "cp1" {
				t.Errorf("status = %v", s)
			}
		}},
		{[]string{"cell", "get", "use1-a"}, func() proto.Message { return &cpv1.GetCellResponse{} }, func(t *testing.T, m proto.Message) {
			c := m.(*cpv1.GetCellResponse).GetCell()
			if c.GetCell().GetExpectedMembers() != 3 || len(c.GetNodes()) != 3 || c.GetLeader().GetNodeId() == "" ||
				c.GetHealth() != cpv1.CellHealth_CELL_HEALTH_HEALTHY || c.GetCell().GetCapacity().GetMaxTenants() != 100 {
				t.Errorf("cell = %v", c)
			}
		}},
		{[]string{"cell", "get", "euw1-a"}, func() proto.Message { return &cpv1.GetCellResponse{} }, func(t *testing.T, m proto.Message) {
			c := m.(*cpv1.GetCellResponse).GetCell()
			if c.GetCell().GetExpectedMembers() != 5 || len(c.GetNodes()) != 0 || c.GetCell().GetCapacity().GetMaxBytes() != 1000000 {
				t.Errorf("cell = %v", c)
			}
		}},
		{[]string{"tenant", "get", "hooli"}, func() proto.Message { return &cpv1.GetTenantResponse{} }, func(t *testing.T, m proto.Message) {
			tn := m.(*cpv1.GetTenantResponse).GetTenant()
			if tn.GetId() != "hooli" || tn.GetCell() != "use1-a" || tn.GetEpoch() != 1 || tn.GetLimits().GetRate() != 100.5 || tn.GetLimits().GetBytesRate() != 65536 || tn.GetLimits().GetBytesBurst() != 131072 || tn.GetCreateTime() == nil {
				t.Errorf("tenant = %v", tn)
			}
		}},
		{[]string{"tenant", "list", "--all", "--page-size", "1"}, func() proto.Message { return &cpv1.ListTenantsResponse{} }, func(t *testing.T, m proto.Message) {
			l := m.(*cpv1.ListTenantsResponse)
			var ids []string
			for _, tn := range l.GetTenants() {
				ids = append(ids, tn.GetId())
			}
			if strings.Join(ids, ",") != "globex,hooli,initech" || l.GetNextPageToken() != "" {
				t.Errorf("--all listed %v, next token %q", ids, l.GetNextPageToken())
			}
		}},
		{[]string{"tenant", "key", "list", "hooli"}, func() proto.Message { return &cpv1.ListApiKeysResponse{} }, func(t *testing.T, m proto.Message) {
			ks := m.(*cpv1.ListApiKeysResponse).GetKeys()
			revoked := 0
			for _, k := range ks {
				if k.GetRevokeTime() != nil {
					revoked++
				}
				if len(k.GetSecretHash()) != 0 {
					t.Errorf("key %s: the secret's hash is shown", k.GetId())
				}
			}
			if len(ks) != 2 || revoked != 1 {
				t.Errorf("keys = %v", ks)
			}
		}},
		{[]string{"region", "list"}, func() proto.Message { return &cpv1.ListRegionsResponse{} }, func(t *testing.T, m proto.Message) {
			if rs := m.(*cpv1.ListRegionsResponse).GetRegions(); len(rs) != 3 || rs[1].GetName() != "eu-west" || rs[1].GetDescription() != "Ireland" {
				t.Errorf("regions = %v", rs)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			jsonOut := mustCP(t, addr, append(tt.args, "-o", "json")...)
			fromJSON := tt.msg()
			if err := protojson.Unmarshal([]byte(jsonOut), fromJSON); err != nil {
				t.Fatalf("-o json does not parse: %v\n%s", err, jsonOut)
			}
			if !strings.HasPrefix(jsonOut, "{\n  ") || !strings.HasSuffix(jsonOut, "}\n") {
				t.Errorf("-o json is not indented JSON:\n%s", jsonOut)
			}
			tt.check(t, fromJSON)

			yamlOut := mustCP(t, addr, append(tt.args, "--output=yaml")...)
			j, err := yaml.YAMLToJSON([]byte(yamlOut))
			if err != nil {
				t.Fatalf("-o yaml does not parse: %v\n%s", err, yamlOut)
			}
			fromYAML := tt.msg()
			if err := protojson.Unmarshal(j, fromYAML); err != nil {
				t.Fatalf("-o yaml is not the message: %v\n%s", err, yamlOut)
			}
			// Two calls, so live values may differ; the shape may not.
			if n, ny := normalize(marshalOrDie(t, fromJSON)), normalize(marshalOrDie(t, fromYAML)); n != ny {
				t.Errorf("json and yaml differ:\n%s\n%s", n, ny)
			}
		})
	}
}

func marshalOrDie(t *testing.T, m proto.Message) string {
	t.Helper()
	b, err := marshalJSON(m)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func testEnvironment(t *testing.T, addr string) {
	t.Setenv(envControlPlane, addr)
	if r := runCmd(testutil.Context(t, 30*time.Second), "region", "list"); r.code != 0 {
		t.Errorf("with %s set: %+v", envControlPlane, r)
	}
	t.Setenv(envControlPlane, deadAddr(t))
	if r := cp(t, addr, "region", "list"); r.code != 0 {
		t.Errorf("--controlplane does not win over %s: %+v", envControlPlane, r)
	}
}

// testServerErrors checks the control plane's refusals as cellctl prints
// them: exit 1, one line with the reason.
func testServerErrors(t *testing.T, addr string) {
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"unknown tenant", []string{"tenant", "get", "nope"}, "cellctl tenant get: TENANT_NOT_FOUND: tenant nope does not exist"},
		{"unknown tenant keys", []string{"tenant", "key", "list", "nope"}, "cellctl tenant key list: TENANT_NOT_FOUND: "},
		{"unknown key", []string{"tenant", "key", "revoke", "hooli", "0000000000000000"}, "API_KEY_NOT_FOUND: tenant hooli has no API key 0000000000000000"},
		{"tenant exists", []string{"tenant", "create", "hooli", "--region", "us-east"}, "ALREADY_EXISTS: "},
		{"delete unknown", []string{"tenant", "delete", "nope", "--yes"}, "TENANT_NOT_FOUND: "},
		{"bad page size", []string{"tenant", "list", "--page-size", "5000"}, "INVALID_ARGUMENT: "},
		{"unknown cell", []string{"cell", "get", "nope"}, "cellctl cell get: CELL_NOT_FOUND: "},
		{"cordon unknown cell", []string{"cell", "cordon", "nope"}, "CELL_NOT_FOUND: "},
		{"tenant on unknown cell", []string{"tenant", "create", "t1", "--region", "us-east", "--cell", "nope"}, "CELL_NOT_FOUND: "},
		{"tenant on cordoned cell", []string{"tenant", "create", "t1", "--region", "us-east", "--cell", "use1-b"}, "CELL_NOT_ACTIVE: "},
		{"no cells in region", []string{"tenant", "create", "t1", "--region", "ap-south"}, "NO_CAPACITY: region ap-south has no cells: create one with 'cellctl cell create <id> --region ap-south'"},
		{"unknown region", []string{"tenant", "create", "t1", "--region", "mars"}, "REGION_NOT_FOUND: "},
		{"cell in unknown region", []string{"cell", "create", "c1", "--region", "mars"}, "REGION_NOT_FOUND: "},
		{"region twice", []string{"region", "create", "us-east"}, "cellctl region create: ALREADY_EXISTS: "},
		{"cell twice", []string{"cell", "create", "use1-a", "--region", "us-east"}, "ALREADY_EXISTS: "},
		{"bad region name", []string{"region", "create", "Bad Name!"}, "INVALID_ARGUMENT: "},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkOneLineError(t, cp(t, addr, tt.args...), 1, tt.want)
		})
	}
	// None of them changed anything.
	if out := normalize(mustCP(t, addr, "status")); out != readGolden(t, "status.golden") {
		t.Errorf("the failed commands changed the topology:\n%s", out)
	}
}

// testCommands runs the mutating commands and checks their effect.
func testCommands(t *testing.T, addr string) {
	if out := mustCP(t, addr, "cell", "uncordon", "use1-b"); out != "cell use1-b is ACTIVE\n" {
		t.Errorf("uncordon: %q", out)
	}
	// The policy picks the least loaded ACTIVE cell: use1-b (1 tenant)
	// over use1-a (2).
	if out := mustCP(t, addr, "tenant", "create", "umbrella", "--region", "us-east"); out != "tenant umbrella created on cell use1-b (region us-east, epoch 1, ACTIVE)\n" {
		t.Errorf("create: %q", out)
	}
	if out := mustCP(t, addr, "tenant", "delete", "umbrella", "--yes"); out != "tenant umbrella deleted\n" {
		t.Errorf("delete: %q", out)
	}
	checkOneLineError(t, cp(t, addr, "tenant", "get", "umbrella"), 1, "TENANT_NOT_FOUND")
	if out := mustCP(t, addr, "cell", "cordon", "use1-b"); out != "cell use1-b is CORDONED\n" {
		t.Errorf("cordon: %q", out)
	}
	if out := mustCP(t, addr, "tenant", "delete", "initech", "--yes", "-o", "json"); out != "{}\n" {
		t.Errorf("delete -o json: %q", out)
	}
	out := mustCP(t, addr, "tenant", "key", "create", "hooli", "-o", "json")
	var kr cpv1.CreateApiKeyResponse
	if err := protojson.Unmarshal([]byte(out), &kr); err != nil || !strings.HasPrefix(kr.GetSecret(), "cpk_"+kr.GetKey().GetId()+"_") {
		t.Errorf("key create -o json: %v %q", err, out)
	}
	if out := mustCP(t, addr, "tenant", "key", "revoke", "hooli", kr.GetKey().GetId()); out != "API key "+kr.GetKey().GetId()+" of tenant hooli revoked\n" {
		t.Errorf("revoke: %q", out)
	}
	if out := mustCP(t, addr, "tenant", "token", "revoke", "hooli", "--subject", "agent-7", "--for", "1h"); !strings.HasPrefix(out, "subject agent-7 of tenant hooli revoked until ") {
		t.Errorf("token revoke: %q", out)
	}
	if r := cp(t, addr, "tenant", "token", "revoke", "hooli", "--subject", "a", "--jti", "b", "--for", "1h"); r.code == 0 {
		t.Errorf("token revoke with both --subject and --jti: exit 0, %q", r.out)
	}
	out = normalize(mustCP(t, addr, "cell", "list"))
	if !slices.ContainsFunc(strings.Split(out, "\n"), func(l string) bool {
		return strings.Join(strings.Fields(l), " ") == "use1-a us-east ACTIVE HEALTHY <LEADER> 3/3 1/100 <TIME>"
	}) {
		t.Errorf("cell list after deleting initech (want use1-a with 1/100 tenants):\n%s", out)
	}
	testManage(t, addr)
}

// testManage: updates and guarded deletes of tenants, cells and regions,
// and deletion protection.
func testManage(t *testing.T, addr string) {
	// A create retried with its request id answers like the first call.
	for range 2 {
		if out := mustCP(t, addr, "tenant", "create", "umbrella", "--region", "us-east", "--deletion-protection", "--request-id", "tf-1"); !strings.HasPrefix(out, "tenant umbrella created on cell use1-a") {
			t.Errorf("create protected: %q", out)
		}
	}
	checkOneLineError(t, cp(t, addr, "tenant", "create", "umbrella", "--region", "us-east", "--request-id", "tf-1"), 1, "REQUEST_ID_REUSED")
	checkOneLineError(t, cp(t, addr, "tenant", "create", "umbrella", "--region", "us-east", "--deletion-protection"), 1, "ALREADY_EXISTS")
	checkOneLineError(t, cp(t, addr, "tenant", "delete", "umbrella", "--yes"), 1, "DELETION_PROTECTED")
	if out := mustCP(t, addr, "tenant", "update", "umbrella", "--rate", "7", "--bytes-burst", "9"); !strings.HasPrefix(out, "tenant umbrella updated (version ") || !strings.HasSuffix(out, ", deletion protection on)\n") {
		t.Errorf("update rate: %q", out)
	}
	var got cpv1.GetTenantResponse
	if err := protojson.Unmarshal([]byte(mustCP(t, addr, "tenant", "get", "umbrella", "-o", "json")), &got); err != nil {
		t.Fatal(err)
	}
	if l := got.GetTenant().GetLimits(); l.GetRate() != 7 || l.GetBytesBurst() != 9 || !got.GetTenant().GetDeletionProtection() || got.GetVersion() == 0 {
		t.Errorf("after update: %v", &got)
	}
	checkOneLineError(t, cp(t, addr, "tenant", "update", "umbrella", "--burst", "3", "--expected-version", fmt.Sprint(got.GetVersion()-1)), 1, "REVISION_MISMATCH")
	if r := cp(t, addr, "tenant", "update", "umbrella"); r.code != 2 {
		t.Errorf("update without a change: exit %d, want 2", r.code)
	}
	if out := mustCP(t, addr, "tenant", "update", "umbrella", "--deletion-protection=false"); !strings.HasSuffix(out, ", deletion protection off)\n") {
		t.Errorf("protection off: %q", out)
	}
	if out := mustCP(t, addr, "tenant", "delete", "umbrella", "--yes"); out != "tenant umbrella deleted\n" {
		t.Errorf("delete after protection off: %q", out)
	}

	checkOneLineError(t, cp(t, addr, "region", "delete", "eu-west"), 1, "REGION_NOT_EMPTY")
	checkOneLineError(t, cp(t, addr, "cell", "delete", "use1-a"), 1, "CELL_NOT_EMPTY")
	if out := mustCP(t, addr, "cell", "update", "euw1-a", "--max-tenants", "5"); out != "cell euw1-a is ACTIVE (max tenants 5, max bytes 1000000)\n" {
		t.Errorf("cell update: %q", out)
	}
	if out := mustCP(t, addr, "cell", "update", "euw1-a", "--state", "cordoned"); out != "cell euw1-a is CORDONED (max tenants 5, max bytes 1000000)\n" {
		t.Errorf("cell update --state: %q", out)
	}
	if out := mustCP(t, addr, "cell", "delete", "euw1-a"); out != "cell euw1-a deleted\n" {
		t.Errorf("cell delete: %q", out)
	}
	if out := mustCP(t, addr, "region", "update", "eu-west", "--description", "Dublin"); out != "region eu-west updated\n" {
		t.Errorf("region update: %q", out)
	}
	if out := mustCP(t, addr, "region", "delete", "eu-west"); out != "region eu-west deleted\n" {
		t.Errorf("region delete: %q", out)
	}
	checkOneLineError(t, cp(t, addr, "region", "delete", "eu-west"), 1, "REGION_NOT_FOUND")

	// The failover policy: the flags' defaults until set, then the stored one.
	checkGolden(t, "failover-policy-get-defaults.golden", normalize(mustCP(t, addr, "failover-policy", "get")))
	var set cpv1.SetFailoverPolicyResponse
	if err := protojson.Unmarshal([]byte(mustCP(t, addr, "failover-policy", "set", "--enabled", "--after", "30s", "--regions", "us-east,ap-south", "-o", "json")), &set); err != nil {
		t.Fatal(err)
	}
	if p := set.GetPolicy(); !p.GetEnabled() || p.GetUnhealthyFor().AsDuration() != 30*time.Second || strings.Join(p.GetRegions(), ",") != "us-east,ap-south" || p.GetMaxConcurrent() != 16 || set.GetVersion() == 0 {
		t.Errorf("failover-policy set: %v", &set)
	}
	// A flag not given keeps its value.
	mustCP(t, addr, "failover-policy", "set", "--enabled=false")
	var pol cpv1.GetFailoverPolicyResponse
	if err := protojson.Unmarshal([]byte(mustCP(t, addr, "failover-policy", "get", "-o", "json")), &pol); err != nil {
		t.Fatal(err)
	}
	if p := pol.GetPolicy(); p.GetEnabled() || p.GetUnhealthyFor().AsDuration() != 30*time.Second || len(p.GetRegions()) != 2 || !pol.GetStored() {
		t.Errorf("failover-policy get after --enabled=false: %v", &pol)
	}
	checkOneLineError(t, cp(t, addr, "failover-policy", "set", "--after", "100ms"), 1, "INVALID_ARGUMENT")
	if r := cp(t, addr, "failover-policy", "set"); r.code != 2 {
		t.Errorf("failover-policy set without a change: exit %d, want 2", r.code)
	}
}

// testTenantOnRealCell: a tenant created through cellctl ends up OWNER at
// epoch 1 on every node of a real 3-node cell, and is gone from all of them
// after 'cellctl tenant delete'.
func testTenantOnRealCell(t *testing.T, addr string, nodes []*cells.Node) {
	if out := mustCP(t, addr, "tenant", "create", "acme", "--region", "us-east"); out != "tenant acme created on cell use1-a (region us-east, epoch 1, ACTIVE)\n" {
		t.Fatalf("create: %q (use1-a is the only ACTIVE cell of us-east)", out)
	}
	if len(nodes) != 3 {
		t.Fatalf("%d nodes, want 3", len(nodes))
	}
	for _, n := range nodes {
		cl := cellClient(t, n.GRPCAddr())
		// The leader applied it before the control plane published the
		// placement; a follower may be a little behind.
		testutil.Eventually(t, 10*time.Second, func() error {
			resp, err := cl.GetTenant(testutil.Context(t, 5*time.Second), &cellv1.GetTenantRequest{Tenant: "acme"})
			if err != nil {
				return fmt.Errorf("node %s: %w", n.Info().GetNodeId(), err)
			}
			if tn := resp.GetTenant(); tn.GetRole() != cellv1.Role_ROLE_OWNER || tn.GetEpoch() != 1 {
				return fmt.Errorf("node %s: tenant %v, want OWNER at epoch 1", n.Info().GetNodeId(), tn)
			}
			return nil
		})
	}

	if out := mustCP(t, addr, "tenant", "delete", "acme", "--yes"); out != "tenant acme deleted\n" {
		t.Fatalf("delete: %q", out)
	}
	checkOneLineError(t, cp(t, addr, "tenant", "get", "acme"), 1, "TENANT_NOT_FOUND")
	for _, n := range nodes {
		cl := cellClient(t, n.GRPCAddr())
		testutil.Eventually(t, 10*time.Second, func() error {
			resp, err := cl.GetTenant(testutil.Context(t, 5*time.Second), &cellv1.GetTenantRequest{Tenant: "acme"})
			switch {
			case err == nil:
				return fmt.Errorf("node %s still has the deleted tenant: %v", n.Info().GetNodeId(), resp.GetTenant())
			case status.Code(err) != codes.NotFound:
				return fmt.Errorf("node %s: %w, want NotFound", n.Info().GetNodeId(), err)
			}
			return nil
		})
	}
}

func cellClient(t *testing.T, addr string) cellv1.CellServiceClient {
	t.Helper()
	conn, err := dial.New(addr, dial.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return cellv1.NewCellServiceClient(conn)
}

// deadAddr returns a loopback address nothing listens on.
func deadAddr(t *testing.T) string {
	l := testutil.Listen(t)
	addr := l.Addr().String()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	return addr
}

// checkOneLineError checks a failed command: its exit code, and one line
// on stderr that contains want and no Go or gRPC internals.
func checkOneLineError(t *testing.T, r result, code int, want string) {
	t.Helper()
	if r.code != code {
		t.Errorf("exit code %d, want %d (stderr %q)", r.code, code, r.err)
	}
	if strings.Count(r.err, "\n") != 1 || !strings.Contains(r.err, want) {
		t.Errorf("stderr = %q, want one line containing %q", r.err, want)
	}
	for _, bad := range []string{"goroutine ", "panic", "rpc error:"} {
		if strings.Contains(r.err, bad) {
			t.Errorf("stderr has %q: %q", bad, r.err)
		}
	}
	if r.out != "" {
		t.Errorf("stdout = %q, want nothing", r.out)
	}
}

// TestErrorsAreOneLine checks the errors cellctl finds without a control
// plane to answer (usage, transport): one line, exit 2 for usage.
func TestErrorsAreOneLine(t *testing.T) {
	dead := deadAddr(t)
	silent := testutil.Listen(t) // accepts connections, never answers
	tests := []struct {
		name     string
		args     []string
		wantCode int
		want     string
	}{
		{"unreachable", []string{"--controlplane", dead, "status"}, 1, "cellctl status: cannot reach the control plane at " + dead + ": "},
		{"silent", []string{"--controlplane", silent.Addr().String(), "--timeout", "300ms", "tenant", "list"}, 1, "no answer from the control plane at " + silent.Addr().String() + " within 300ms"},
		{"unknown flag", []string{"status", "--nope"}, 2, "unknown flag: --nope"},
		{"bad output", []string{"-o", "xml", "status"}, 2, `--output "xml": want one of table, json, yaml`},
		{"bad timeout", []string{"--timeout", "soon", "status"}, 2, `invalid argument "soon"`},
		{"bad state", []string{"tenant", "list", "--state", "gone"}, 2, `--state "gone": want one of active, creating, deleting`},
		{"bad page size flag", []string{"tenant", "list", "--page-size", "-1"}, 2, "--page-size"},
		{"all and token", []string{"tenant", "list", "--all", "--page-token", "x"}, 2, "--all and --page-token are exclusive"},
		{"missing id", []string{"tenant", "get"}, 2, "want 1 argument(s) <id>, got 0"},
		{"malformed id", []string{"tenant", "get", "acme/x"}, 1, "INVALID_ARGUMENT: invalid id"},
		{"id too long", []string{"tenant", "move", strings.Repeat("t", 129), "--to", "c2"}, 1, "INVALID_ARGUMENT: invalid tenant"},
		{"extra arg", []string{"status", "now"}, 2, "want 0 argument(s)"},
		{"delete without yes", []string{"tenant", "delete", "acme"}, 2, "add --yes to confirm"},
		{"cell without region", []string{"cell", "create", "c1"}, 2, "--region is required"},
		{"tenant without region", []string{"tenant", "create", "t1"}, 2, "--region is required"},
		{"even members", []string{"cell", "create", "c1", "--region", "r", "--members", "4"}, 2, "--members 4: want 1, 3, 5 or 7"},
		{"no members", []string{"cell", "create", "c1", "--region", "r", "--members", "0"}, 2, "--members 0: want 1, 3, 5 or 7"},
		{"too many members", []string{"cell", "create", "c1", "--region", "r", "--members", "9"}, 2, "--members 9: want 1, 3, 5 or 7"},
		{"cert without key", []string{"--tls-cert", "c.pem", "status"}, 2, "--tls-cert and --tls-key go together"},
		{"unknown command", []string{"frobnicate"}, 2, `unknown command "frobnicate" for "cellctl"`},
		{"unknown subcommand", []string{"tenant", "frobnicate"}, 2, `unknown command "frobnicate" for "cellctl tenant"`},
		{"missing CA file", []string{"--tls-ca", filepath.Join(t.TempDir(), "ca.pem"), "status"}, 1, "--tls-ca: open "},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkOneLineError(t, runCmd(testutil.Context(t, 30*time.Second), tt.args...), tt.wantCode, tt.want)
		})
	}
}

func TestCompletion(t *testing.T) {
	for _, shell := range []string{"bash", "zsh", "fish", "powershell"} {
		t.Run(shell, func(t *testing.T) {
			r := runCmd(t.Context(), "completion", shell)
			if r.code != 0 || !strings.Contains(r.out, "cellctl") || r.err != "" {
				t.Errorf("completion %s: exit %d, stderr %q, %d bytes", shell, r.code, r.err, len(r.out))
			}
		})
	}
	tests := []struct {
		args []string
		want []string
	}{
		{[]string{"__complete", "tenant", ""}, []string{"create", "get", "list", "delete", "key"}},
		{[]string{"__complete", "tenant", "list", "--state", ""}, []string{"active", "creating", "deleting"}},
		{[]string{"__complete", "-o", ""}, []string{"table", "json", "yaml"}},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			r := runCmd(t.Context(), tt.args...)
			if r.code != 0 {
				t.Fatalf("exit %d, stderr %q", r.code, r.err)
			}
			for _, w := range tt.want {
				if !strings.Contains(r.out, w) {
					t.Errorf("completions %q lack %q", r.out, w)
				}
			}
		})
	}
}
