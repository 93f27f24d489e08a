package main

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cellplane/cellplane/controlplane"
	"github.com/cellplane/cellplane/controlplane/cptest"
	"github.com/cellplane/cellplane/controlplane/topo/topotest"
	"github.com/cellplane/cellplane/internal/pki"
	"github.com/cellplane/cellplane/internal/testutil"
)

// The router's and the worker's --certs-dir / --cert-name: their
// identities for the calls into cells (C1, C2), refused clearly when
// unusable.
func TestComponentTLSFlagErrors(t *testing.T) {
	dir := t.TempDir()
	for _, args := range [][]string{
		{"cert", "create-ca", "--cluster", "prod", "--certs-dir", dir},
		{"cert", "create-router", "--id", "r1", "--certs-dir", dir},
		{"cert", "create-router", "--id", "r2", "--certs-dir", dir},
		{"cert", "create-worker", "--id", "w1", "--certs-dir", dir},
	} {
		if r := runCmd(t.Context(), args...); r.code != 0 {
			t.Fatalf("%v: exit %d, %s", args, r.code, r.err)
		}
	}
	empty := t.TempDir()
	router := []string{"router", "--etcd-endpoints", "http://127.0.0.1:1"}
	worker := []string{"worker", "--id", "w9", "--cell", "c1", "--etcd-endpoints", "http://127.0.0.1:1"}
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"router: name without dir", append(router, "--cert-name", "router.r1"), "--cert-name needs --certs-dir"},
		{"router: no certificate", append(router, "--certs-dir", empty), "holds no router certificate"},
		{"router: several", append(router, "--certs-dir", dir), "holds several router certificates (router.r1.crt, router.r2.crt): choose one with --cert-name"},
		{"router: a worker's", append(router, "--certs-dir", dir, "--cert-name", "worker.w1"), "is not a router's"},
		{"worker: name without dir", append(worker, "--cert-name", "worker.w1"), "--cert-name needs --certs-dir"},
		{"worker: none of this id", append(worker, "--certs-dir", dir), "worker.w9"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := runCmd(t.Context(), tt.args...)
			if r.code != 2 || !strings.Contains(r.err, tt.want) {
				t.Fatalf("exit %d, stderr %q; want 2 and %q", r.code, r.err, tt.want)
			}
		})
	}
}

// --controlplane against a control plane serving mutual TLS: a component
// asks where etcd is with its identity; without one it is refused.
func TestAskRegistryWithIdentity(t *testing.T) {
	if testing.Short() {
		t.Skip("runs etcd and a control plane with mutual TLS")
	}
	ca, err := pki.NewCA("test", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := pki.WriteCA(dir, ca, false); err != nil {
		t.Fatal(err)
	}
	source := func(id pki.Identity) *pki.Source {
		leaf, err := ca.Issue(pki.LeafRequest{Identity: id})
		if err != nil {
			t.Fatal(err)
		}
		if err := pki.WriteLeaf(dir, id.FileName(), leaf, false); err != nil {
			t.Fatal(err)
		}
		src, err := pki.NewSource(pki.DirConfig(dir, id.FileName()))
		if err != nil {
			t.Fatal(err)
		}
		return src
	}
	env := &cptest.Env{Endpoints: topotest.StartEtcd(t)}
	env.AddReplica(t, "cp1", func(c *controlplane.Config) { c.TLS = source(pki.ControlPlaneIdentity("test", "cp1")) })
	ctx := testutil.Context(t, 30*time.Second)
	for _, id := range []pki.Identity{pki.RouterIdentity("test", "r1"), pki.WorkerIdentity("test", "w1"), pki.NodeIdentity("test", "r1", "c1", "n1")} {
		eps, prefix, err := askRegistry(ctx, env.Addr(), 5*time.Second, source(id))
		if err != nil || !slices.Equal(eps, env.Endpoints) || prefix == "" {
			t.Fatalf("askRegistry as %s: %v %q %v, want %v", id, eps, prefix, err, env.Endpoints)
		}
	}
	if _, _, err := askRegistry(ctx, env.Addr(), 2*time.Second, nil); err == nil {
		t.Fatal("askRegistry without an identity reached a control plane serving mutual TLS")
	}
}

// Every serving command refuses to start without TLS material unless
// --insecure is given, naming both; the two are exclusive.
func TestServingCommandsNeedTLSOrInsecure(t *testing.T) {
	dir := t.TempDir()
	commands := map[string][]string{
		"cell":         {"cell", "--id", "n1", "--data-dir", t.TempDir(), "--bootstrap", "n1@127.0.0.1:1"},
		"router":       {"router", "--etcd-endpoints", "http://127.0.0.1:1"},
		"worker":       {"worker", "--id", "w1", "--cell", "c1", "--etcd-endpoints", "http://127.0.0.1:1"},
		"controlplane": {"controlplane", "--id", "cp1", "--data-dir", t.TempDir()},
	}
	for name, args := range commands {
		t.Run(name, func(t *testing.T) {
			r := runCmd(t.Context(), args...)
			if r.code != 2 || !strings.Contains(r.err, "no TLS material: pass --certs-dir DIR") || !strings.Contains(r.err, "--insecure") ||
				strings.Count(r.err, "\n") != 1 {
				t.Fatalf("without TLS material: exit %d, stderr %q", r.code, r.err)
			}
			r = runCmd(t.Context(), append(args, "--certs-dir", dir, "--insecure")...)
			if r.code != 2 || !strings.Contains(r.err, "--certs-dir and --insecure are exclusive") {
				t.Fatalf("with both: exit %d, stderr %q", r.code, r.err)
			}
		})
	}
}
