package terraform

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/cellplane/cellplane/internal/cperr"
	"github.com/cellplane/cellplane/internal/rpcerr"
	"github.com/cellplane/cellplane/internal/testutil"
	"github.com/cellplane/cellplane/platform"
	cpv1 "github.com/cellplane/cellplane/proto/cellplane/controlplane/v1"
)

var testSummary = regexp.MustCompile(`(\d+) passed, (\d+) failed`)

// regions are the example's three waves, in order, as `cellplane dev
// --regions us-east,eu-west,ap-south --cells-per-region 1` names them.
var regions = []string{"us-east", "eu-west", "ap-south"}

// exampleTenants are examples/multi-region's default tenants: id → the
// cells of its owner and standby ("" for none) once wave 3 is applied.
var exampleTenants = map[string][2]string{
	"acme":    {"us-east-a", "eu-west-a"},
	"globex":  {"eu-west-a", "us-east-a"},
	"initech": {"ap-south-a", "eu-west-a"},
	"scratch": {"us-east-a", ""},
}

// TestModulesAndMultiRegionExample runs the modules' terraform test files
// and the multi-region example's done-means sequence against one platform.
func TestModulesAndMultiRegionExample(t *testing.T) {
	tf := newTerraform(t)
	p := startPlatform(t)
	tf.env = append(tf.env, "CELLPLANE_CONFIG="+p.ClientConfigPath())
	ctx := testutil.Context(t, 10*time.Minute)

	for _, mod := range []string{"tenant", "region"} {
		t.Run("modules/"+mod, func(t *testing.T) {
			out, code := tf.run(t, filepath.Join(tf.tree, "modules", mod), "test")
			if code != 0 {
				t.Fatalf("terraform test in modules/%s: exit %d\n%s", mod, code, out)
			}
			// "Success! 9 passed, 0 failed." (OpenTofu: the same words): a
			// directory without tests passes with 0.
			m := testSummary.FindStringSubmatch(out)
			if m == nil || m[1] == "0" || m[2] != "0" {
				t.Fatalf("terraform test in modules/%s: want some passed and none failed:\n%s", mod, out)
			}
		})
	}
	t.Run("examples/multi-region", func(t *testing.T) {
		doneMeans(ctx, t, tf, p)
	})
}

// doneMeans is issue 15's "done means" sequence on examples/multi-region.
func doneMeans(ctx context.Context, t *testing.T, tf *terraform, p *platform.Platform) {
	api := p.Admin()
	ex := filepath.Join(tf.tree, "examples", "multi-region")
	tf.must(t, ex, "get")
	// Wave by wave: grow enabled_regions one region per apply; every apply
	// is followed by an empty plan.
	for i := range regions {
		enabled := regions[:i+1]
		writeVars(t, ex, enabled, true)
		tf.must(t, ex, "apply", "-auto-approve")
		tf.emptyPlan(t, ex)
		for _, r := range enabled {
			if _, err := api.GetCell(ctx, &cpv1.GetCellRequest{Id: r + "-a"}); err != nil {
				t.Fatalf("wave %d: cell %s-a: %v", i+1, r, err)
			}
		}
	}
	for id, want := range exampleTenants {
		ten := getTenant(ctx, t, api, id)
		if ten.GetCell() != want[0] || ten.GetStandbyCell() != want[1] {
			t.Errorf("tenant %s: owner %q standby %q, want %q %q", id, ten.GetCell(), ten.GetStandbyCell(), want[0], want[1])
		}
	}
	keysBefore := liveKeys(ctx, t, api, "acme")
	if len(keysBefore) != 1 {
		t.Fatalf("acme has %d live API keys, want 1 (the example's agents key)", len(keysBefore))
	}

	// A planned switchover with cellctl is not drift.
	out, err := tf.cellctl(ctx, "tenant", "failover", "acme", "--wait")
	if err != nil {
		t.Fatalf("cellctl tenant failover acme --wait: %v\n%s", err, out)
	}
	if ten := getTenant(ctx, t, api, "acme"); ten.GetCell() != "eu-west-a" || ten.GetStandbyCell() != "us-east-a" {
		t.Fatalf("after the switchover acme is on %q with standby %q, want eu-west-a and us-east-a", ten.GetCell(), ten.GetStandbyCell())
	}
	tf.emptyPlan(t, ex)

	// A destroy of protected tenants is refused at plan time: nothing is
	// deleted, not even the keys that would go first.
	out, code := tf.run(t, ex, "destroy", "-auto-approve")
	if code == 0 {
		t.Fatalf("terraform destroy of protected tenants succeeded:\n%s", out)
	}
	if !strings.Contains(out, "Tenant is protected from deletion") {
		t.Fatalf("terraform destroy failed, but not on deletion protection:\n%s", out)
	}
	for id := range exampleTenants {
		getTenant(ctx, t, api, id)
	}
	if keys := liveKeys(ctx, t, api, "acme"); len(keys) != len(keysBefore) {
		t.Fatalf("after the refused destroy acme has %d live keys, want %d", len(keys), len(keysBefore))
	}
	if rs, err := api.ListRegions(ctx, &cpv1.ListRegionsRequest{}); err != nil || len(rs.GetRegions()) != len(regions) {
		t.Fatalf("after the refused destroy: regions %v, %v", rs.GetRegions(), err)
	}

	// Protection off (an in-place update), then destroy everything.
	writeVars(t, ex, regions, false)
	tf.must(t, ex, "apply", "-auto-approve")
	tf.emptyPlan(t, ex)
	teardown(ctx, t, tf, p, ex)
}

// teardown destroys the example: the tenants (and their keys and data)
// while the cells run, then, with the cells' nodes stopped (the control
// plane refuses to delete a cell with a registered node), the cells, the
// regions and the failover policy.
func teardown(ctx context.Context, t *testing.T, tf *terraform, p *platform.Platform, ex string) {
	t.Helper()
	api := p.Admin()
	tf.must(t, ex, "destroy", "-auto-approve", "-target=module.tenant")
	for id := range exampleTenants {
		if _, err := api.GetTenant(ctx, &cpv1.GetTenantRequest{Id: id}); cperr.ReasonOf(rpcerr.FromStatus(err)) != cperr.TenantNotFound {
			t.Fatalf("after destroy, tenant %s: %v (want TENANT_NOT_FOUND)", id, err)
		}
	}
	for _, c := range p.Cells() {
		for _, n := range c.Nodes() {
			n.Stop()
		}
	}
	testutil.Eventually(t, time.Minute, func() error {
		for _, r := range regions {
			cs, err := api.GetCell(ctx, &cpv1.GetCellRequest{Id: r + "-a"})
			if err != nil {
				return err
			}
			if n := len(cs.GetCell().GetNodes()); n != 0 {
				return fmt.Errorf("cell %s still has %d registered nodes", r+"-a", n)
			}
		}
		return nil
	})
	tf.must(t, ex, "destroy", "-auto-approve")
	rs, err := api.ListRegions(ctx, &cpv1.ListRegionsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(rs.GetRegions()) != 0 {
		t.Fatalf("after destroy the platform still has regions %v", rs.GetRegions())
	}
}

// writeVars writes the example's terraform.tfvars: the enabled regions
// (the waves so far) and the tenants' deletion protection.
func writeVars(t *testing.T, dir string, enabled []string, protect bool) {
	t.Helper()
	quoted := make([]string, len(enabled))
	for i, r := range enabled {
		quoted[i] = fmt.Sprintf("%q", r)
	}
	vars := fmt.Sprintf("enabled_regions     = [%s]\ndeletion_protection = %t\n", strings.Join(quoted, ", "), protect)
	if err := os.WriteFile(filepath.Join(dir, "terraform.tfvars"), []byte(vars), 0o600); err != nil {
		t.Fatal(err)
	}
}

func getTenant(ctx context.Context, t *testing.T, api cpv1.ControlPlaneServiceClient, id string) *cpv1.Tenant {
	t.Helper()
	r, err := api.GetTenant(ctx, &cpv1.GetTenantRequest{Id: id})
	if err != nil {
		t.Fatalf("get tenant %s: %v", id, err)
	}
	return r.GetTenant()
}

// liveKeys lists a tenant's API keys that are not revoked.
func liveKeys(ctx context.Context, t *testing.T, api cpv1.ControlPlaneServiceClient, tenant string) []string {
	t.Helper()
	r, err := api.ListApiKeys(ctx, &cpv1.ListApiKeysRequest{Tenant: tenant})
	if err != nil {
		t.Fatalf("list %s's keys: %v", tenant, err)
	}
	var ids []string
	for _, k := range r.GetKeys() {
		if k.GetRevokeTime() == nil {
			ids = append(ids, k.GetId())
		}
	}
	return ids
}

// terraform runs a Terraform-compatible CLI on a copy of deploy/terraform,
// with the provider from dev_overrides and the platform from the
// environment.
type terraform struct {
	bin  string
	tree string   // the copy of deploy/terraform
	env  []string // for terraform and cellctl
}

func newTerraform(t *testing.T) *terraform {
	t.Helper()
	ci := os.Getenv("CI") == "true"
	if os.Getenv("TF_ACC") == "" {
		if ci {
			t.Fatal("CI=true but TF_ACC is not set: .ci/run must run the Terraform tests (it exports TF_ACC=1 and TF_ACC_TERRAFORM_PATH from .ci/terraform)")
		}
		t.Skip("Terraform test: set TF_ACC=1 (and have terraform on PATH, or run .ci/terraform)")
	}
	bin := terraformBinary()
	if bin == "" {
		if ci {
			t.Fatal("no Terraform binary: .ci/run sets TF_ACC_TERRAFORM_PATH from .ci/terraform")
		}
		t.Skip("no Terraform binary: put terraform on PATH or run .ci/terraform (builds OpenTofu)")
	}
	root, err := testutil.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	work := t.TempDir()
	tree := filepath.Join(work, "terraform")
	if err := copyTree(filepath.Join(root, "deploy", "terraform"), tree); err != nil {
		t.Fatal(err)
	}
	cli := filepath.Join(work, "dev.tfrc")
	rc := fmt.Sprintf("disable_checkpoint = true\nprovider_installation {\n  dev_overrides {\n    %q = %q\n  }\n  direct {}\n}\n",
		"cellplane/cellplane", filepath.Dir(bins.provider))
	if err := os.WriteFile(cli, []byte(rc), 0o600); err != nil {
		t.Fatal(err)
	}
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "TF_") || strings.HasPrefix(k, "CELLPLANE_") {
			continue // only what this test sets
		}
		env = append(env, kv)
	}
	env = append(env, "TF_CLI_CONFIG_FILE="+cli, "CHECKPOINT_DISABLE=1", "TF_IN_AUTOMATION=1", "TF_INPUT=0")
	t.Logf("terraform binary: %s", bin)
	return &terraform{bin: bin, tree: tree, env: env}
}

// run runs the CLI in dir and returns its combined output and exit code.
func (tf *terraform) run(t *testing.T, dir string, args ...string) (string, int) {
	t.Helper()
	ctx := testutil.Context(t, 5*time.Minute)
	cmd := exec.CommandContext(ctx, tf.bin, append([]string{args[0], "-no-color"}, args[1:]...)...)
	cmd.Dir, cmd.Env = dir, tf.env
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	err := cmd.Run()
	t.Logf("%s %s (in %s): %s", filepath.Base(tf.bin), strings.Join(args, " "), filepath.Base(dir), time.Since(start).Round(time.Millisecond))
	var ee *exec.ExitError
	switch {
	case err == nil:
		return out.String(), 0
	case errors.As(err, &ee) && ctx.Err() == nil:
		return out.String(), ee.ExitCode()
	default:
		t.Fatalf("%s %v: %v\n%s", tf.bin, args, err, out.String())
		return "", -1
	}
}

// must runs the CLI and fails the test unless it exits 0.
func (tf *terraform) must(t *testing.T, dir string, args ...string) string {
	t.Helper()
	out, code := tf.run(t, dir, args...)
	if code != 0 {
		t.Fatalf("%s %s: exit %d\n%s", filepath.Base(tf.bin), strings.Join(args, " "), code, out)
	}
	return out
}

// emptyPlan fails the test unless `plan -detailed-exitcode` exits 0 (no
// changes).
func (tf *terraform) emptyPlan(t *testing.T, dir string) {
	t.Helper()
	out, code := tf.run(t, dir, "plan", "-detailed-exitcode")
	if code != 0 {
		t.Fatalf("plan -detailed-exitcode: exit %d, want 0 (no changes)\n%s", code, out)
	}
}

// cellctl runs the cellctl built by TestMain with the platform's client
// configuration.
func (tf *terraform) cellctl(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, bins.cellctl, args...)
	cmd.Env = tf.env
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// tofuCache is where .ci/terraform caches the tofu it builds.
func tofuCache() string {
	dir := os.Getenv("XDG_CACHE_HOME")
	if dir == "" {
		home, _ := os.UserHomeDir()
		dir = filepath.Join(home, ".cache")
	}
	return filepath.Join(dir, "cellplane", "tofu-v1.10.6", "tofu")
}

// terraformBinary is TF_ACC_TERRAFORM_PATH, else terraform on PATH, else
// the tofu .ci/terraform caches, else "".
func terraformBinary() string {
	if p := os.Getenv("TF_ACC_TERRAFORM_PATH"); p != "" {
		return p
	}
	if p, err := exec.LookPath("terraform"); err == nil {
		return p
	}
	if st, err := os.Stat(tofuCache()); err == nil && !st.IsDir() {
		return tofuCache()
	}
	return ""
}

// startPlatform starts the platform the example expects, in process:
// regions us-east, eu-west and ap-south of one 1-node cell each (<region>-a),
// mutual TLS, the provider and cellctl using its client configuration file.
func startPlatform(t *testing.T) *platform.Platform {
	t.Helper()
	cfg := platform.DefaultConfig()
	cfg.Name = "tfexample"
	cfg.DataDir = t.TempDir()
	cfg.Regions, cfg.CellsPerRegion, cfg.NodesPerCell = regions, 1, 1
	cfg.MutualTLS = true
	cfg.Node.MCPDisabled = true
	cfg.Node.RegistryTTL = time.Second
	cfg.Controller.RetryMin, cfg.Controller.RetryMax = 10*time.Millisecond, 200*time.Millisecond
	cfg.Controller.Failover.PollInterval = 20 * time.Millisecond
	cfg.Controller.Failover.LeaseMargin = 300 * time.Millisecond
	cfg.ShutdownTimeout = 5 * time.Second
	cfg.EtcdUnsafeNoFsync = true
	ctx := testutil.Context(t, 2*time.Minute)
	p, err := platform.Start(ctx, cfg)
	if err != nil {
		t.Fatalf("start the platform: %v", err)
	}
	t.Cleanup(p.Close)
	return p
}

// copyTree copies deploy/terraform (without state or .terraform
// directories a developer's runs may have left) to dst.
func copyTree(src, dst string) error {
	return filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, path)
		name := d.Name()
		if d.IsDir() && name == ".terraform" {
			return filepath.SkipDir
		}
		if !d.IsDir() && (strings.HasPrefix(name, "terraform.tfstate") || name == "terraform.tfvars" || name == ".terraform.lock.hcl") {
			return nil
		}
		target := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(target, 0o755)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(target, b, 0o644)
	})
}
