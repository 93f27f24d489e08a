package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cellplane/cellplane/cells"
	goclient "github.com/cellplane/cellplane/client"
	"github.com/cellplane/cellplane/controlplane"
	"github.com/cellplane/cellplane/controlplane/cptest"
	"github.com/cellplane/cellplane/controlplane/topo/topotest"
	"github.com/cellplane/cellplane/internal/pki"
	"github.com/cellplane/cellplane/internal/testutil"
)

// issueTo writes a certificate of ca for id into dir.
func issueTo(t *testing.T, ca *pki.CA, dir string, id pki.Identity) {
	t.Helper()
	leaf, err := ca.Issue(pki.LeafRequest{Identity: id})
	if err != nil {
		t.Fatal(err)
	}
	if err := pki.WriteLeaf(dir, id.FileName(), leaf, false); err != nil {
		t.Fatal(err)
	}
}

// TestMutualTLS runs cellctl against a real control plane serving mutual
// TLS: with --certs-dir, with the client configuration file
// (CELLPLANE_CONFIG), as a read-only operator, and without a certificate.
func TestMutualTLS(t *testing.T) {
	if testing.Short() {
		t.Skip("runs etcd, a control plane with mutual TLS and a cell node")
	}
	t.Setenv(envControlPlane, "")
	t.Setenv(goclient.EnvConfigFile, "")
	ca, err := pki.NewCA("test", 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := pki.WriteCA(dir, ca, false); err != nil {
		t.Fatal(err)
	}
	issueTo(t, ca, dir, pki.ControlPlaneIdentity("test", "cp1"))
	issueTo(t, ca, dir, pki.OperatorIdentity("test", pki.RoleAdmin, "alice"))
	src, err := pki.NewSource(pki.DirConfig(dir, "controlplane.cp1"))
	if err != nil {
		t.Fatal(err)
	}
	env := &cptest.Env{Endpoints: topotest.StartEtcd(t)}
	env.AddReplica(t, "cp1", func(c *controlplane.Config) { c.TLS = src })
	addr := env.Addr()

	// --certs-dir with the directory's only operator certificate.
	if r := cp(t, addr, "--certs-dir", dir, "status"); r.code != 0 {
		t.Fatalf("status with --certs-dir: %+v", r)
	}
	// No certificate: refused.
	if r := cp(t, addr, "--timeout", "3s", "region", "list"); r.code != 1 || strings.Count(r.err, "\n") != 1 {
		t.Fatalf("plaintext to the mutual TLS control plane: %+v, want exit 1 and one line", r)
	}
	// --tls-* naming the same files.
	tlsFlags := []string{"--tls-ca", filepath.Join(dir, "ca.crt"), "--tls-cert", filepath.Join(dir, "operator.alice.crt"), "--tls-key", filepath.Join(dir, "operator.alice.key")}
	mustCP(t, addr, append(tlsFlags, "region", "create", "r1")...)
	mustCP(t, addr, "--certs-dir", dir, "cell", "create", "c1", "--region", "r1", "--members", "1")
	// The cell serves mutual TLS too: the control plane's cell client
	// presents its identity, and a cell with TLS accepts it (C1, C2).
	env.StartNodes(t, "c1", 1, func(c *cells.Config) {
		id := pki.NodeIdentity("test", "r1", "c1", c.NodeID)
		issueTo(t, ca, dir, id)
		nsrc, err := pki.NewSource(pki.DirConfig(dir, id.FileName()))
		if err != nil {
			t.Fatal(err)
		}
		c.TLS = nsrc
	})
	testutil.Eventually(t, 30*time.Second, func() error {
		if r := cp(t, addr, "--certs-dir", dir, "cell", "get", "c1", "-o", "json"); !strings.Contains(r.out, "CELL_HEALTH_HEALTHY") {
			return fmt.Errorf("cell c1: %+v", r)
		}
		return nil
	})

	// The client configuration file, relative paths and all, with no flag.
	cfgDir := t.TempDir()
	rel, err := filepath.Rel(cfgDir, dir)
	if err != nil {
		t.Fatal(err)
	}
	cfgFile := filepath.Join(cfgDir, "config.yaml")
	body := "controlplane: " + addr + "\nca: " + rel + "/ca.crt\ncert: " + rel + "/operator.alice.crt\nkey: " + rel + "/operator.alice.key\n"
	if err := os.WriteFile(cfgFile, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv(goclient.EnvConfigFile, cfgFile)
	ctx := testutil.Context(t, time.Minute)
	if r := runCmd(ctx, "tenant", "create", "acme", "--region", "r1"); r.code != 0 {
		t.Fatalf("CELLPLANE_CONFIG=%s cellctl tenant create: %+v", cfgFile, r)
	}
	if r := runCmd(ctx, "tenant", "get", "acme", "-o", "json"); r.code != 0 || !strings.Contains(r.out, `"cell": "c1"`) {
		t.Fatalf("tenant get with the config file: %+v", r)
	}

	// A read-only operator (its flags override the file's certificate).
	issueTo(t, ca, dir, pki.OperatorIdentity("test", pki.RoleReadOnly, "bob"))
	ro := []string{"--certs-dir", dir, "--cert-name", "operator.bob"}
	if r := runCmd(ctx, append(ro, "tenant", "key", "create", "acme")...); r.code != 1 || !strings.Contains(r.err, "PERMISSION_DENIED") {
		t.Fatalf("read-only key create: %+v, want PERMISSION_DENIED", r)
	}
	if r := runCmd(ctx, append(ro, "tenant", "delete", "acme", "--yes")...); r.code != 1 || !strings.Contains(r.err, "PERMISSION_DENIED") {
		t.Fatalf("read-only tenant delete: %+v, want PERMISSION_DENIED", r)
	}
	if r := runCmd(ctx, append(ro, "tenant", "list")...); r.code != 0 || !strings.Contains(r.out, "acme") {
		t.Fatalf("read-only tenant list: %+v", r)
	}
	if r := runCmd(ctx, "tenant", "key", "list", "acme", "-o", "json"); r.code != 0 || strings.Contains(r.out, `"id"`) {
		t.Fatalf("the refused key create wrote a key: %+v", r)
	}
	// Two operators in the directory: --cert-name is needed.
	if r := runCmd(ctx, "--certs-dir", dir, "status"); r.code != 2 || !strings.Contains(r.err, "several operator certificates") {
		t.Fatalf("--certs-dir with two operators: %+v", r)
	}
	// A broken file is a usage error naming it.
	if err := os.WriteFile(cfgFile, []byte("controlplan: x\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if r := runCmd(ctx, "status"); r.code != 2 || !strings.Contains(r.err, goclient.EnvConfigFile) {
		t.Fatalf("a broken config file: %+v", r)
	}
}
