package provider

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/terraform-plugin-framework/providerserver"
	"github.com/hashicorp/terraform-plugin-go/tfprotov6"
	"go.uber.org/goleak"

	"github.com/cellplane/cellplane/internal/testutil"
	"github.com/cellplane/cellplane/platform"
	cpv1 "github.com/cellplane/cellplane/proto/cellplane/controlplane/v1"
)

// The acceptance tests (acc_test.go) run Terraform (or OpenTofu) against a
// real in-process platform: etcd, the control plane with mutual TLS, and
// two regions of one 1-node cell, the provider connecting with the admin
// operator certificate of the platform's client configuration file.
//
// They run when TF_ACC is set and a binary is found (TF_ACC_TERRAFORM_PATH,
// else terraform on PATH, else the tofu .ci/terraform caches); .ci/run sets
// both. Under CI (CI=true) a missing binary or TF_ACC is a failure, never a
// silent skip. plugin-testing is never allowed to download anything.

// shared is the one platform of the package's acceptance tests (started
// by the first test that needs it, closed by TestMain).
var shared struct {
	once sync.Once
	p    *platform.Platform
	err  error
	dir  string
}

func TestMain(m *testing.M) {
	code := m.Run()
	testProvider.close()
	if shared.p != nil {
		shared.p.Close()
	}
	if shared.dir != "" {
		_ = os.RemoveAll(shared.dir)
	}
	if code == 0 {
		// go-plugin copies a finished terraform process's stdout and
		// stderr until the pipes report EOF, which can come after the
		// test (seen under CI load); those readers end on their own.
		if err := goleak.Find(goleak.IgnoreAnyFunction("github.com/hashicorp/go-plugin.copyChan")); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
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

// terraformBinary returns the Terraform-compatible CLI the tests use, or
// "" when none is found.
func terraformBinary() string {
	if p := os.Getenv("TF_ACC_TERRAFORM_PATH"); p != "" {
		return p
	}
	if p, err := exec.LookPath("terraform"); err == nil {
		return p
	}
	if p := tofuCache(); fileExists(p) {
		return p
	}
	return ""
}

func fileExists(p string) bool { st, err := os.Stat(p); return err == nil && !st.IsDir() }

// needTerraform skips (or, under CI, fails) a test that cannot run, and
// sets the environment plugin-testing reads so that it never downloads.
func needTerraform(t *testing.T) {
	t.Helper()
	ci := os.Getenv("CI") == "true"
	if os.Getenv("TF_ACC") == "" {
		if ci {
			t.Fatal("CI=true but TF_ACC is not set: .ci/run must run the Terraform tests (it exports TF_ACC=1 and TF_ACC_TERRAFORM_PATH from .ci/terraform)")
		}
		t.Skip("Terraform acceptance test: set TF_ACC=1 (and have terraform on PATH, or run .ci/terraform)")
	}
	bin := terraformBinary()
	if bin == "" {
		if ci {
			t.Fatal("no Terraform binary: .ci/run sets TF_ACC_TERRAFORM_PATH from .ci/terraform")
		}
		t.Skip("no Terraform binary: put terraform on PATH or run .ci/terraform (builds OpenTofu)")
	}
	t.Setenv("TF_ACC_TERRAFORM_PATH", bin)
	t.Setenv("CHECKPOINT_DISABLE", "1")
	t.Setenv("TF_IN_AUTOMATION", "1")
	cli := filepath.Join(t.TempDir(), "cli.tfrc")
	if err := os.WriteFile(cli, []byte("disable_checkpoint = true\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("TF_CLI_CONFIG_FILE", cli)
	if filepath.Base(bin) == "tofu" {
		// OpenTofu resolves an unqualified provider in its own registry's
		// namespace: the reattached provider must be registered there.
		t.Setenv("TF_ACC_PROVIDER_HOST", "registry.opentofu.org")
	}
}

// testPlatform returns the shared platform: regions us-east and eu-west,
// one 1-node cell each (us-east-a, eu-west-a), mutual TLS.
func testPlatform(t *testing.T) *platform.Platform {
	t.Helper()
	shared.once.Do(func() {
		dir, err := os.MkdirTemp("", "tfprov")
		if err != nil {
			shared.err = err
			return
		}
		shared.dir = dir
		cfg := platform.DefaultConfig()
		cfg.Name = "tfprov"
		cfg.DataDir = dir
		cfg.Regions, cfg.CellsPerRegion, cfg.NodesPerCell = []string{"us-east", "eu-west"}, 1, 1
		cfg.MutualTLS = true
		cfg.Node.MCPDisabled = true
		cfg.Node.RegistryTTL = time.Second
		cfg.Controller.RetryMin, cfg.Controller.RetryMax = 10*time.Millisecond, 200*time.Millisecond
		cfg.Controller.Failover.PollInterval = 20 * time.Millisecond
		cfg.Controller.Moves.PollInterval = 20 * time.Millisecond
		cfg.Controller.Moves.CleanupGrace = 200 * time.Millisecond
		cfg.Controller.Moves.HousekeepingInterval = 200 * time.Millisecond
		cfg.Controller.Failover.LeaseMargin = 300 * time.Millisecond
		cfg.ShutdownTimeout = 5 * time.Second
		cfg.EtcdUnsafeNoFsync = true
		cfg.TestingKnobs.Controller.BeforeStep = func(ctx context.Context, wf *cpv1.Workflow) error { return faults.hold(ctx, wf.GetTenant()) }
		cfg.TestingKnobs.Controller.BeforeMoveStep = func(ctx context.Context, mv *cpv1.Move) error { return faults.hold(ctx, mv.GetTenant()) }
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		shared.p, shared.err = platform.Start(ctx, cfg)
	})
	if shared.err != nil {
		t.Fatalf("start the platform: %v", shared.err)
	}
	return shared.p
}

// faults stalls the control plane's work on chosen tenants: while a
// tenant is held, the controller leader does not act on its workflows
// (create, delete) or moves, as when its cell cannot be reached; the
// operation stays recorded and goes on once released.
var faults = &faultSet{held: map[string]chan struct{}{}}

type faultSet struct {
	mu   sync.Mutex
	held map[string]chan struct{}
}

// holdTenant holds tenant's operations until the returned release is
// called (also at the test's end).
func (f *faultSet) holdTenant(t *testing.T, tenant string) (release func()) {
	f.mu.Lock()
	ch := make(chan struct{})
	f.held[tenant] = ch
	f.mu.Unlock()
	var once sync.Once
	release = func() {
		once.Do(func() {
			f.mu.Lock()
			delete(f.held, tenant)
			f.mu.Unlock()
			close(ch)
		})
	}
	t.Cleanup(release)
	return release
}

// hold blocks while tenant is held (the controller's knobs).
func (f *faultSet) hold(ctx context.Context, tenant string) error {
	f.mu.Lock()
	ch := f.held[tenant]
	f.mu.Unlock()
	if ch == nil {
		return nil
	}
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// factories serve the provider in process (plugin-testing reattaches to
// it: nothing is installed or downloaded).
var (
	testProvider = New("test")().(*cellplaneProvider)
	factories    = map[string]func() (tfprotov6.ProviderServer, error){
		"cellplane": providerserver.NewProtocol6WithError(testProvider),
	}
)

// providerBlock is the provider configuration of the test platform: the
// client configuration file the platform wrote (its address and the admin
// operator certificate), as a user of `cellplane dev` would.
func providerBlock(p *platform.Platform) string {
	return fmt.Sprintf("provider \"cellplane\" {\n  config_file = %q\n}\n", p.ClientConfigPath())
}

// ctxFor is a context for a test's direct calls to the admin API.
func ctxFor(t *testing.T) context.Context { return testutil.Context(t, time.Minute) }

// testClient is an apiClient on the test platform's admin connection.
func testClient(t *testing.T) *apiClient {
	p := testPlatform(t)
	return &apiClient{api: p.Admin(), addr: p.ControlPlaneAddr(), callTimeout: 10 * time.Second, ops: make(chan struct{}, 1)}
}
