package etcdauth_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/goleak"
	"go.uber.org/zap"

	"github.com/cellplane/cellplane/controlplane/etcdauth"
	"github.com/cellplane/cellplane/controlplane/etcdserver"
	"github.com/cellplane/cellplane/controlplane/topo"
	"github.com/cellplane/cellplane/controlplane/topo/etcdtopo"
	"github.com/cellplane/cellplane/controlplane/topo/topotest"
	"github.com/cellplane/cellplane/internal/pki"
	"github.com/cellplane/cellplane/internal/testutil"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const prefix = "/cellplane/v1/"

// certsDir is a certs directory of cluster "test" with one certificate
// per identity.
type certsDir struct {
	t   *testing.T
	dir string
	ca  *pki.CA
}

func newCertsDir(t *testing.T) *certsDir {
	t.Helper()
	ca, err := pki.NewCA("test", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	d := &certsDir{t: t, dir: t.TempDir(), ca: ca}
	if err := pki.WriteCA(d.dir, ca, false); err != nil {
		t.Fatal(err)
	}
	return d
}

// issue writes id's certificate (valid from notBefore for lifetime; zero:
// the defaults) and returns its file name.
func (d *certsDir) issue(id pki.Identity, notBefore time.Time, lifetime time.Duration) string {
	d.t.Helper()
	leaf, err := d.ca.Issue(pki.LeafRequest{Identity: id, Hosts: []string{"127.0.0.1"}, NotBefore: notBefore, Lifetime: lifetime})
	if err != nil {
		d.t.Fatal(err)
	}
	if err := pki.WriteLeaf(d.dir, id.FileName(), leaf, true); err != nil {
		d.t.Fatal(err)
	}
	return id.FileName()
}

func (d *certsDir) source(id pki.Identity) *pki.Source {
	d.t.Helper()
	name := id.FileName()
	if _, err := os.Stat(filepath.Join(d.dir, name+".crt")); err != nil {
		d.issue(id, time.Time{}, 0)
	}
	cfg := pki.DirConfig(d.dir, name)
	cfg.Logger = testutil.Logger(d.t)
	src, err := pki.NewSource(cfg)
	if err != nil {
		d.t.Fatal(err)
	}
	return src
}

// files are the etcd server files of id.
func (d *certsDir) files(id pki.Identity) *etcdserver.TLSFiles {
	name := d.issue(id, time.Time{}, 0)
	return &etcdserver.TLSFiles{
		CertFile: filepath.Join(d.dir, name+".crt"), KeyFile: filepath.Join(d.dir, name+".key"),
		CAFile: filepath.Join(d.dir, pki.CACertFile),
	}
}

func dialAs(t *testing.T, eps []string, src *pki.Source) *etcdtopo.Store {
	t.Helper()
	cfg := etcdtopo.DefaultConfig()
	cfg.Endpoints, cfg.Prefix, cfg.Identity, cfg.Logger = eps, prefix, src, testutil.Logger(t)
	cfg.Lazy = true // a refused identity is what the calls check
	st, err := etcdtopo.Dial(testutil.Context(t, 10*time.Second), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	return st
}

var (
	cpID     = pki.ControlPlaneIdentity("test", "cp1")
	routerID = pki.RouterIdentity("test", "r1")
	workerID = pki.WorkerIdentity("test", "w1")
	nodeA    = pki.NodeIdentity("test", "eu", "a", "n1")
	nodeB    = pki.NodeIdentity("test", "eu", "b", "n1")
)

// env is a TLS etcd with authentication on (Bootstrap by the control
// plane's identity) and a root store.
type env struct {
	d    *certsDir
	eps  []string
	root *etcdtopo.Store
	prov *etcdauth.Provisioner
}

func newEnv(t *testing.T) *env {
	t.Helper()
	d := newCertsDir(t)
	srv := topotest.StartEtcdServerTLS(t, d.files(cpID))
	e := &env{d: d, eps: srv.Endpoints()}
	if !strings.HasPrefix(e.eps[0], "https://") {
		t.Fatalf("endpoints %v, want https", e.eps)
	}
	root := dialAs(t, e.eps, d.source(cpID))
	e.root = root
	ctx := testutil.Context(t, 30*time.Second)
	for range 2 { // idempotent
		if err := etcdauth.Bootstrap(ctx, root, cpID.FileName()); err != nil {
			t.Fatalf("Bootstrap: %v", err)
		}
	}
	e.prov = etcdauth.NewProvisioner(root, prefix)
	for _, id := range []pki.Identity{routerID, workerID, nodeA, nodeB} {
		if err := e.prov.Ensure(ctx, id); err != nil {
			t.Fatalf("Ensure %s: %v", id, err)
		}
		// A second provisioner (another replica, a restart) finds it all
		// in place.
		if err := etcdauth.NewProvisioner(root, prefix).Ensure(ctx, id); err != nil {
			t.Fatalf("Ensure %s again: %v", id, err)
		}
	}
	seed := []topo.Op{
		topo.Put("tenants/t1", []byte("t1")),
		topo.Put(topo.CellKey("a"), []byte("a")),
		topo.Put(topo.CellKey("b"), []byte("b")),
		topo.Put(topo.CellLoadKey("a"), []byte("load")),
		topo.Put(etcdauth.TokenKeysPrivatePrefix+"k1", []byte("secret")),
		topo.Put("tokenkeys/public/k1", []byte("public")),
	}
	if _, err := root.Txn(ctx, nil, seed); err != nil {
		t.Fatalf("seed as root: %v", err)
	}
	return e
}

func put(ctx context.Context, st topo.Store, key string) error {
	_, err := st.Txn(ctx, nil, []topo.Op{topo.Put(key, []byte("x"))})
	return err
}

// TestRBAC: each component reads what it needs and writes only what its
// role allows; every refused write leaves the key untouched.
func TestRBAC(t *testing.T) {
	if testing.Short() {
		t.Skip("starts etcd")
	}
	e := newEnv(t)
	ctx := testutil.Context(t, 60*time.Second)
	type step struct {
		key   string
		write bool
		ok    bool
	}
	readable := []string{"tenants/t1", topo.CellKey("a"), topo.CellKey("b"), "tokenkeys/public/k1"}
	for _, tc := range []struct {
		id    pki.Identity
		steps []step
	}{
		{routerID, []step{
			{key: etcdauth.TokenKeysPrivatePrefix + "k1", ok: true}, // it mints tokens
			{key: "tenants/t2", write: true},
			{key: "tenants/t1", write: true},
			{key: topo.CellNodeKey("a", "n1"), write: true},
			{key: etcdauth.TokenKeysPrivatePrefix + "k2", write: true},
		}},
		{workerID, []step{
			{key: etcdauth.TokenKeysPrivatePrefix + "k1"},
			{key: "tenants/t2", write: true},
			{key: topo.CellLeaderKey("a"), write: true},
		}},
		{nodeA, []step{
			{key: topo.CellNodeKey("a", "n1"), write: true, ok: true},
			{key: topo.CellLeaderKey("a"), write: true, ok: true},
			{key: topo.CellBootstrapKey("a"), write: true, ok: true},
			{key: topo.CellAuthorityKey("a"), write: true, ok: true},
			{key: topo.CellFenceKey("a", "t1"), write: true, ok: true},
			{key: topo.CellNodeKey("b", "n1"), write: true},
			{key: topo.CellLeaderKey("b"), write: true},
			{key: topo.CellAuthorityKey("b"), write: true},
			{key: topo.CellKey("a"), write: true},
			{key: topo.CellLoadKey("a"), write: true},
			{key: "tenants/t1", write: true},
			{key: "workflows/w1", write: true},
			{key: etcdauth.TokenKeysPrivatePrefix + "k1", write: true},
			{key: etcdauth.TokenKeysPrivatePrefix + "k1"},
		}},
	} {
		t.Run(string(tc.id.Kind), func(t *testing.T) {
			st := dialAs(t, e.eps, e.d.source(tc.id))
			for _, k := range readable {
				if _, err := st.Get(ctx, k); err != nil {
					t.Errorf("read %s: %v", k, err)
				}
			}
			if _, err := st.List(ctx, topo.TenantsPrefix, topo.ListOptions{}); err != nil {
				t.Errorf("list tenants: %v", err)
			}
			for _, s := range tc.steps {
				var before topo.KV
				var err error
				if s.write {
					before, _ = e.root.Get(ctx, s.key)
					err = put(ctx, st, s.key)
				} else {
					_, err = st.Get(ctx, s.key)
				}
				switch {
				case s.ok && err != nil:
					t.Errorf("%s (write %v): %v, want allowed", s.key, s.write, err)
				case !s.ok && !errors.Is(err, topo.ErrPermissionDenied):
					t.Errorf("%s (write %v): %v, want topo.ErrPermissionDenied", s.key, s.write, err)
				}
				if s.write && !s.ok {
					after, _ := e.root.Get(ctx, s.key)
					if after.Version != before.Version || string(after.Value) != string(before.Value) {
						t.Errorf("%s: a refused write changed it: %+v → %+v", s.key, before, after)
					}
				}
			}
		})
	}

	t.Run("node session", func(t *testing.T) {
		// A node's registration: a lease, its key under it, renewed.
		st := dialAs(t, e.eps, e.d.source(nodeA))
		sess, err := st.NewSession(ctx, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer sess.Close()
		if _, err := st.Txn(ctx, nil, []topo.Op{topo.PutLeased(topo.CellNodeKey("a", "n2"), []byte("n2"), sess.Lease())}); err != nil {
			t.Fatalf("leased registration: %v", err)
		}
		if _, err := st.Txn(ctx, nil, []topo.Op{topo.PutLeased(topo.CellNodeKey("b", "n2"), []byte("n2"), sess.Lease())}); !errors.Is(err, topo.ErrPermissionDenied) {
			t.Fatalf("leased registration in cell b: %v, want denied", err)
		}
	})

	t.Run("role reset", func(t *testing.T) {
		// A role changed behind the control plane's back (or by an older
		// version) is set back to exactly its ranges by the next Ensure.
		role, err := etcdauth.RoleFor(workerID, prefix)
		if err != nil {
			t.Fatal(err)
		}
		if err := e.root.EnsureRole(ctx, role.Name, []etcdtopo.Perm{{Key: prefix + "tenants/", End: prefix + "tenants0", Write: true}}); err != nil {
			t.Fatal(err)
		}
		st := dialAs(t, e.eps, e.d.source(workerID))
		if err := put(ctx, st, "tenants/tampered"); err != nil {
			t.Fatalf("the tampered role does not apply: %v", err)
		}
		if err := etcdauth.NewProvisioner(e.root, prefix).Ensure(ctx, workerID); err != nil {
			t.Fatal(err)
		}
		if err := put(ctx, st, "tenants/tampered2"); !errors.Is(err, topo.ErrPermissionDenied) {
			t.Fatalf("write after the reset: %v, want denied", err)
		}
		if _, err := st.Get(ctx, topo.CellKey("a")); err != nil {
			t.Fatalf("read after the reset: %v", err)
		}
	})

	t.Run("unprovisioned identity", func(t *testing.T) {
		st := dialAs(t, e.eps, e.d.source(pki.WorkerIdentity("test", "w2")))
		if _, err := st.Get(ctx, "tenants/t1"); !errors.Is(err, topo.ErrPermissionDenied) {
			t.Fatalf("read by a worker with no etcd user: %v, want denied", err)
		}
	})

	t.Run("operator", func(t *testing.T) {
		if err := e.prov.Ensure(ctx, pki.OperatorIdentity("test", pki.RoleAdmin, "alice")); !errors.Is(err, etcdauth.ErrNoAccess) {
			t.Fatalf("Ensure(operator): %v, want ErrNoAccess", err)
		}
	})
}

// TestTLSRefusals: etcd serves nobody without a certificate of the
// cluster's CA that is valid now, and nothing in plaintext.
func TestTLSRefusals(t *testing.T) {
	if testing.Short() {
		t.Skip("starts etcd")
	}
	e := newEnv(t)
	other := newCertsDir(t)
	expired := e.d.issue(pki.WorkerIdentity("test", "w-expired"), time.Now().Add(-2*time.Hour), time.Hour)
	if err := e.prov.Ensure(testutil.Context(t, 10*time.Second), pki.WorkerIdentity("test", "w-expired")); err != nil {
		t.Fatal(err) // its user exists: the certificate alone must refuse it
	}
	if err := e.prov.Ensure(testutil.Context(t, 10*time.Second), routerID); err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(e.d.ca.Cert)
	load := func(dir, name string) []tls.Certificate {
		c, err := tls.LoadX509KeyPair(filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key"))
		if err != nil {
			t.Fatal(err)
		}
		return []tls.Certificate{c}
	}
	for _, tc := range []struct {
		name string
		eps  []string
		tls  *tls.Config
	}{
		{"no client certificate", e.eps, &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS13}},
		{"another CA's certificate", e.eps, &tls.Config{RootCAs: roots, Certificates: load(other.dir, other.issue(routerID, time.Time{}, 0))}},
		{"expired certificate", e.eps, &tls.Config{RootCAs: roots, Certificates: load(e.d.dir, expired)}},
		{"plaintext", []string{strings.Replace(e.eps[0], "https://", "http://", 1)}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cli, err := clientv3.New(clientv3.Config{Endpoints: tc.eps, TLS: tc.tls, DialTimeout: 2 * time.Second, Logger: zap.NewNop()})
			if err != nil {
				return // refused at once
			}
			defer cli.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			defer cancel()
			if _, err := cli.Put(ctx, prefix+"tenants/intruder", "x"); err == nil {
				t.Fatal("Put succeeded")
			}
			if _, err := cli.Get(ctx, prefix+"tenants/t1"); err == nil {
				t.Fatal("Get succeeded")
			}
		})
	}
	if _, err := e.root.Get(testutil.Context(t, 5*time.Second), "tenants/intruder"); !errors.Is(err, topo.ErrNotFound) {
		t.Fatalf("tenants/intruder: %v, want not found", err)
	}
	// The control case: a valid certificate of the CA is served.
	st := dialAs(t, e.eps, e.d.source(routerID))
	if _, err := st.Get(testutil.Context(t, 5*time.Second), "tenants/t1"); err != nil {
		t.Fatalf("router: %v", err)
	}
}
