package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spf13/cobra"
	"go.uber.org/goleak"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"sigs.k8s.io/yaml"

	"github.com/cellplane/cellplane/internal/testutil"
	controlplanev1 "github.com/cellplane/cellplane/proto/cellplane/controlplane/v1"
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

// seed fills a control plane with a small topology, through cellctl itself.
func seed(t *testing.T, addr string) {
	t.Helper()
	for _, args := range [][]string{
		{"region", "create", "eu-west-1", "--description", "Ireland"},
		{"region", "create", "us-east-1"},
		{"cell", "create", "eu1-a", "--region", "eu-west-1", "--max-tenants", "100"},
		{"cell", "create", "eu1-b", "--region", "eu-west-1"},
		{"cell", "create", "us1-a", "--region", "us-east-1", "--members", "5", "--max-bytes", "1000000"},
		{"tenant", "create", "acme", "--region", "eu-west-1", "--cell", "eu1-a", "--rate", "100.5", "--burst", "200", "--max-bytes", "5000000"},
		{"tenant", "create", "globex", "--region", "eu-west-1"},
		{"tenant", "create", "initech", "--region", "us-east-1"},
		{"cell", "cordon", "eu1-b"},
		{"tenant", "key", "create", "acme", "--description", "production agents"},
		{"tenant", "key", "create", "acme"},
		{"tenant", "key", "revoke", "acme", "key-0002"},
	} {
		mustCP(t, addr, args...)
	}
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

// TestTables checks the table output (-o table, the default) against
// golden files.
func TestTables(t *testing.T) {
	addr := startControlPlane(t)
	seed(t, addr)
	tests := []struct {
		golden string
		args   []string
	}{
		{"status.golden", []string{"status"}},
		{"region-list.golden", []string{"region", "list"}},
		{"cell-list.golden", []string{"cell", "list"}},
		{"cell-list-region.golden", []string{"cell", "list", "--region", "us-east-1"}},
		{"cell-get.golden", []string{"cell", "get", "eu1-a"}},
		{"tenant-list.golden", []string{"tenant", "list"}},
		{"tenant-list-page.golden", []string{"tenant", "list", "--page-size", "2"}},
		{"tenant-list-filter.golden", []string{"tenant", "list", "--region", "eu-west-1", "--state", "active"}},
		{"tenant-get.golden", []string{"tenant", "get", "acme"}},
		{"tenant-get-defaults.golden", []string{"tenant", "get", "globex"}},
		{"key-list.golden", []string{"tenant", "key", "list", "acme"}},
		{"key-create.golden", []string{"tenant", "key", "create", "initech"}},
	}
	for _, tt := range tests {
		t.Run(tt.golden, func(t *testing.T) {
			checkGolden(t, tt.golden, mustCP(t, addr, tt.args...))
		})
	}
}

// TestMachineOutput checks that -o json and -o yaml parse back into the
// API's messages, and agree.
func TestMachineOutput(t *testing.T) {
	addr := startControlPlane(t)
	seed(t, addr)
	tests := []struct {
		args  []string
		msg   func() proto.Message
		check func(t *testing.T, m proto.Message)
	}{
		{[]string{"status"}, func() proto.Message { return &controlplanev1.GetStatusResponse{} }, func(t *testing.T, m proto.Message) {
			s := m.(*controlplanev1.GetStatusResponse)
			if len(s.GetRegions()) != 2 || len(s.GetCells()) != 3 || s.GetControllerLeader().GetId() != "cp-1" {
				t.Errorf("status = %v", s)
			}
		}},
		{[]string{"cell", "get", "us1-a"}, func() proto.Message { return &controlplanev1.GetCellResponse{} }, func(t *testing.T, m proto.Message) {
			c := m.(*controlplanev1.GetCellResponse).GetCell()
			if c.GetCell().GetExpectedMembers() != 5 || len(c.GetNodes()) != 5 || c.GetCell().GetCapacity().GetMaxBytes() != 1000000 {
				t.Errorf("cell = %v", c)
			}
		}},
		{[]string{"tenant", "get", "acme"}, func() proto.Message { return &controlplanev1.GetTenantResponse{} }, func(t *testing.T, m proto.Message) {
			tn := m.(*controlplanev1.GetTenantResponse).GetTenant()
			if tn.GetId() != "acme" || tn.GetCell() != "eu1-a" || tn.GetLimits().GetRate() != 100.5 || tn.GetCreateTime().AsTime() != fakeNow.AsTime() {
				t.Errorf("tenant = %v", tn)
			}
		}},
		{[]string{"tenant", "list", "--all", "--page-size", "1"}, func() proto.Message { return &controlplanev1.ListTenantsResponse{} }, func(t *testing.T, m proto.Message) {
			l := m.(*controlplanev1.ListTenantsResponse)
			var ids []string
			for _, tn := range l.GetTenants() {
				ids = append(ids, tn.GetId())
			}
			if strings.Join(ids, ",") != "acme,globex,initech" || l.GetNextPageToken() != "" {
				t.Errorf("--all listed %v, next token %q", ids, l.GetNextPageToken())
			}
		}},
		{[]string{"tenant", "key", "list", "acme"}, func() proto.Message { return &controlplanev1.ListApiKeysResponse{} }, func(t *testing.T, m proto.Message) {
			ks := m.(*controlplanev1.ListApiKeysResponse).GetKeys()
			if len(ks) != 2 || ks[0].GetRevokeTime() != nil || ks[1].GetRevokeTime() == nil {
				t.Errorf("keys = %v", ks)
			}
		}},
		{[]string{"region", "list"}, func() proto.Message { return &controlplanev1.ListRegionsResponse{} }, func(t *testing.T, m proto.Message) {
			if rs := m.(*controlplanev1.ListRegionsResponse).GetRegions(); len(rs) != 2 || rs[0].GetDescription() != "Ireland" {
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
			if again := mustCP(t, addr, append(tt.args, "-o", "json")...); again != jsonOut {
				t.Errorf("-o json is not stable:\n%s\n%s", jsonOut, again)
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
			if !proto.Equal(fromJSON, fromYAML) {
				t.Errorf("json and yaml differ:\n%v\n%v", fromJSON, fromYAML)
			}
		})
	}
}

// TestCommands runs the mutating commands and checks their effect.
func TestCommands(t *testing.T) {
	addr := startControlPlane(t)
	seed(t, addr)

	if out := mustCP(t, addr, "cell", "uncordon", "eu1-b"); out != "cell eu1-b is ACTIVE\n" {
		t.Errorf("uncordon: %q", out)
	}
	if out := mustCP(t, addr, "tenant", "create", "hooli", "--region", "eu-west-1"); out != "tenant hooli created on cell eu1-a (region eu-west-1, epoch 1, ACTIVE)\n" {
		t.Errorf("create: %q (the fake places on the least loaded ACTIVE cell, ties by id)", out)
	}
	if out := mustCP(t, addr, "tenant", "delete", "hooli", "--yes"); out != "tenant hooli deleted\n" {
		t.Errorf("delete: %q", out)
	}
	r := cp(t, addr, "tenant", "get", "hooli")
	if r.code != 1 || !strings.Contains(r.err, "TENANT_NOT_FOUND") {
		t.Errorf("get after delete: %+v", r)
	}
	if out := mustCP(t, addr, "tenant", "delete", "initech", "--yes", "-o", "json"); out != "{}\n" {
		t.Errorf("delete -o json: %q", out)
	}
	out := mustCP(t, addr, "tenant", "key", "create", "acme", "-o", "json")
	var kr controlplanev1.CreateApiKeyResponse
	if err := protojson.Unmarshal([]byte(out), &kr); err != nil || !strings.HasPrefix(kr.GetSecret(), "cpk_"+kr.GetKey().GetId()+"_") {
		t.Errorf("key create -o json: %v %q", err, out)
	}
}

func TestEnvironment(t *testing.T) {
	addr := startControlPlane(t)
	t.Setenv(envControlPlane, addr)
	if r := runCmd(testutil.Context(t, 30*time.Second), "region", "list"); r.code != 0 {
		t.Errorf("with %s set: %+v", envControlPlane, r)
	}
	dead := deadAddr(t)
	t.Setenv(envControlPlane, dead)
	if r := cp(t, addr, "region", "list"); r.code != 0 {
		t.Errorf("--controlplane does not win over %s: %+v", envControlPlane, r)
	}
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

func TestErrorsAreOneLine(t *testing.T) {
	addr := startControlPlane(t)
	seed(t, addr)
	dead := deadAddr(t)
	silent := testutil.Listen(t) // accepts connections, never answers
	tests := []struct {
		name     string
		args     []string
		wantCode int
		want     string
	}{
		{"unknown tenant", []string{"--controlplane", addr, "tenant", "get", "nope"}, 1, `cellctl tenant get: TENANT_NOT_FOUND: tenant "nope" not found`},
		{"unknown tenant keys", []string{"--controlplane", addr, "tenant", "key", "list", "nope"}, 1, "TENANT_NOT_FOUND"},
		{"unknown key", []string{"--controlplane", addr, "tenant", "key", "revoke", "acme", "key-9"}, 1, `KEY_NOT_FOUND: API key "key-9" of tenant "acme" not found`},
		{"tenant exists", []string{"--controlplane", addr, "tenant", "create", "acme", "--region", "eu-west-1"}, 1, `ALREADY_EXISTS: tenant "acme" already exists`},
		{"delete unknown", []string{"--controlplane", addr, "tenant", "delete", "nope", "--yes"}, 1, "TENANT_NOT_FOUND"},
		{"bad page size", []string{"--controlplane", addr, "tenant", "list", "--page-size", "5000"}, 1, "INVALID_ARGUMENT: invalid page_size; page_size: at most 1000"},
		{"unreachable", []string{"--controlplane", dead, "status"}, 1, "cellctl status: cannot reach the control plane at " + dead + ": "},
		{"silent", []string{"--controlplane", silent.Addr().String(), "--timeout", "300ms", "tenant", "list"}, 1, "no answer from the control plane at " + silent.Addr().String() + " within 300ms"},
		{"unknown flag", []string{"status", "--nope"}, 2, "unknown flag: --nope"},
		{"bad output", []string{"-o", "xml", "status"}, 2, `--output "xml": want one of table, json, yaml`},
		{"bad timeout", []string{"--timeout", "soon", "status"}, 2, `invalid argument "soon"`},
		{"bad state", []string{"tenant", "list", "--state", "gone"}, 2, `--state "gone": want one of active, creating, deleting`},
		{"bad page size flag", []string{"tenant", "list", "--page-size", "-1"}, 2, "--page-size"},
		{"all and token", []string{"tenant", "list", "--all", "--page-token", "x"}, 2, "--all and --page-token are exclusive"},
		{"missing id", []string{"tenant", "get"}, 2, "want 1 argument(s) <id>, got 0"},
		{"extra arg", []string{"status", "now"}, 2, "want 0 argument(s)"},
		{"delete without yes", []string{"tenant", "delete", "acme"}, 2, "add --yes to confirm"},
		{"cell without region", []string{"cell", "create", "c1"}, 2, "--region is required"},
		{"tenant without region", []string{"tenant", "create", "t1"}, 2, "--region is required"},
		{"bad members", []string{"cell", "create", "c1", "--region", "r", "--members", "4"}, 2, "--members 4: want 3 or 5"},
		{"cert without key", []string{"--tls-cert", "c.pem", "status"}, 2, "--tls-cert and --tls-key go together"},
		{"unknown command", []string{"frobnicate"}, 2, `unknown command "frobnicate" for "cellctl"`},
		{"unknown subcommand", []string{"tenant", "frobnicate"}, 2, `unknown command "frobnicate" for "cellctl tenant"`},
		{"missing CA file", []string{"--tls-ca", filepath.Join(t.TempDir(), "ca.pem"), "status"}, 1, "--tls-ca: open "},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := runCmd(testutil.Context(t, 30*time.Second), tt.args...)
			if r.code != tt.wantCode {
				t.Errorf("exit code %d, want %d (stderr %q)", r.code, tt.wantCode, r.err)
			}
			if strings.Count(r.err, "\n") != 1 || !strings.Contains(r.err, tt.want) {
				t.Errorf("stderr = %q, want one line containing %q", r.err, tt.want)
			}
			for _, bad := range []string{"goroutine ", "panic", "rpc error:"} {
				if strings.Contains(r.err, bad) {
					t.Errorf("stderr has %q: %q", bad, r.err)
				}
			}
			if r.out != "" {
				t.Errorf("stdout = %q, want nothing", r.out)
			}
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
