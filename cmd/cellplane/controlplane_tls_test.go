package main

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/credentials/insecure"

	"github.com/cellplane/cellplane/cmd/cellplane/internal/devenv"
	"github.com/cellplane/cellplane/controlplane/topo"
	"github.com/cellplane/cellplane/controlplane/topo/etcdtopo"
	"github.com/cellplane/cellplane/internal/dial"
	"github.com/cellplane/cellplane/internal/pki"
	"github.com/cellplane/cellplane/internal/testutil"
	cpv1 "github.com/cellplane/cellplane/proto/cellplane/controlplane/v1"
)

// `cellplane controlplane --certs-dir` serves its API over mutual TLS with
// the files `cellplane cert` writes: an admin operator gets an answer, a
// plaintext caller does not.
func TestControlPlaneCertsDir(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a control plane with embedded etcd")
	}
	dir := t.TempDir()
	ctx := testutil.Context(t, time.Minute)
	for _, args := range [][]string{
		{"cert", "create-ca", "--cluster", "prod", "--certs-dir", dir},
		{"cert", "create-controlplane", "--id", "cp1", "--certs-dir", dir},
		{"cert", "create-operator", "--name", "alice", "--role", "admin", "--certs-dir", dir},
	} {
		if r := runCmd(ctx, args...); r.code != 0 {
			t.Fatalf("%v: %+v", args, r)
		}
	}
	// A missing certificate is a usage error, before anything starts.
	if r := runCmd(ctx, "controlplane", "--id", "cp2", "--data-dir", t.TempDir(), "--certs-dir", dir); r.code != 2 || !strings.Contains(r.err, "controlplane.cp2") {
		t.Fatalf("--certs-dir without the replica's certificate: %+v", r)
	}

	// An http embedded etcd next to a mutual-TLS API: a usage error.
	if r := runCmd(ctx, "controlplane", "--id", "cp1", "--data-dir", t.TempDir(), "--certs-dir", dir,
		"--etcd-client-url", "http://"+testutil.FreeAddr(t)); r.code != 2 || !strings.Contains(r.err, "https://") {
		t.Fatalf("--certs-dir with an http --etcd-client-url: %+v", r)
	}

	grpcAddr := testutil.FreeAddr(t)
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan result, 1)
	go func() {
		done <- runCmd(runCtx, "controlplane", "--id", "cp1", "--data-dir", t.TempDir(), "--certs-dir", dir,
			"--grpc-addr", grpcAddr, "--http-addr", testutil.FreeAddr(t),
			"--etcd-client-url", "https://"+testutil.FreeAddr(t), "--etcd-peer-url", "https://"+testutil.FreeAddr(t))
	}()

	src, err := pki.NewSource(pki.DirConfig(dir, "operator.alice"))
	if err != nil {
		t.Fatal(err)
	}
	dcfg := dial.DefaultConfig()
	dcfg.Credentials = pki.ClientCredentials(src, pki.ExpectKinds(pki.KindControlPlane))
	conn, err := dial.New(grpcAddr, dcfg)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	testutil.Eventually(t, 30*time.Second, func() error {
		select {
		case r := <-done:
			t.Fatalf("the control plane exited: %+v", r)
		default:
		}
		_, err := cpv1.NewControlPlaneServiceClient(conn).GetStatus(ctx, &cpv1.GetStatusRequest{})
		return err
	})
	plain, err := dial.New(grpcAddr, dial.Config{Credentials: insecure.NewCredentials()})
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	if _, err := cpv1.NewControlPlaneServiceClient(plain).GetStatus(ctx, &cpv1.GetStatusRequest{}); err == nil {
		t.Fatal("a plaintext caller got the status of a control plane serving mutual TLS")
	}
	// Its embedded etcd: https, and a router that asked where it is gets
	// a read-only etcd user.
	if r := runCmd(ctx, "cert", "create-router", "--id", "r1", "--certs-dir", dir); r.code != 0 {
		t.Fatalf("create-router: %+v", r)
	}
	rsrc, err := pki.NewSource(pki.DirConfig(dir, "router.r1"))
	if err != nil {
		t.Fatal(err)
	}
	eps, prefix, err := askRegistry(ctx, grpcAddr, 10*time.Second, rsrc)
	if err != nil {
		t.Fatal(err)
	}
	if len(eps) != 1 || !strings.HasPrefix(eps[0], "https://") {
		t.Fatalf("GetRegistry endpoints %v, want one https", eps)
	}
	ecfg := etcdtopo.DefaultConfig()
	ecfg.Endpoints, ecfg.Prefix, ecfg.Identity = eps, prefix, (etcdFlags{}).identity(eps, rsrc)
	st, err := etcdtopo.Dial(ctx, ecfg)
	if err != nil {
		t.Fatalf("the router dials etcd with its certificate: %v", err)
	}
	defer st.Close()
	if _, err := st.List(ctx, topo.TenantsPrefix, topo.ListOptions{}); err != nil {
		t.Fatalf("the router reads placements: %v", err)
	}
	if _, err := st.Txn(ctx, nil, []topo.Op{topo.Put(topo.TenantKey("evil"), []byte("x"))}); !errors.Is(err, topo.ErrPermissionDenied) {
		t.Fatalf("the router writes a placement: %v, want topo.ErrPermissionDenied", err)
	}

	cancel()
	if r := <-done; r.code != 0 || !strings.Contains(r.err, "control plane API serves mutual TLS") || strings.Contains(r.err, "unauthenticated") {
		t.Fatalf("exit %d, stderr:\n%s", r.code, r.err)
	}
}

// A component's etcd identity: its own certificate for https endpoints,
// unless --etcd-cert/--etcd-ca name other files; never for http.
func TestEtcdFlagsIdentity(t *testing.T) {
	src := &pki.Source{} // identity only compares the pointer
	https, http := []string{"https://127.0.0.1:2379"}, []string{"http://127.0.0.1:2379"}
	for _, tc := range []struct {
		name  string
		f     etcdFlags
		eps   []string
		src   *pki.Source
		wants bool
	}{
		{"https with certs-dir", etcdFlags{}, https, src, true},
		{"http with certs-dir", etcdFlags{}, http, src, false},
		{"https without certs-dir", etcdFlags{}, https, nil, false},
		{"--etcd-cert overrides", etcdFlags{CertFile: "c", KeyFile: "k"}, https, src, false},
		{"--etcd-ca overrides", etcdFlags{CAFile: "ca"}, https, src, false},
	} {
		if got := tc.f.identity(tc.eps, tc.src); (got != nil) != tc.wants {
			t.Errorf("%s: identity = %v, want set %v", tc.name, got, tc.wants)
		}
	}
}

// `cellplane dev` (mutual TLS unless --insecure) serves its embedded etcd
// on https: the default URLs switch, given ones are kept (and validated).
func TestDevEtcdURLsForMTLS(t *testing.T) {
	never := func(string) bool { return false }
	cfg := devenv.DefaultConfig()
	cfg.MutualTLS = false // --insecure
	etcdURLsForMTLS(&cfg, never)
	if cfg.EtcdClientURL != "http://127.0.0.1:7379" || cfg.EtcdPeerURL != "http://127.0.0.1:7380" {
		t.Fatalf("with --insecure: %s %s", cfg.EtcdClientURL, cfg.EtcdPeerURL)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("--insecure defaults: %v", err)
	}
	cfg.MutualTLS = true
	etcdURLsForMTLS(&cfg, never)
	if cfg.EtcdClientURL != "https://127.0.0.1:7379" || cfg.EtcdPeerURL != "https://127.0.0.1:7380" {
		t.Fatalf("with --mtls: %s %s", cfg.EtcdClientURL, cfg.EtcdPeerURL)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("--mtls defaults: %v", err)
	}
	cfg = devenv.DefaultConfig()
	cfg.MutualTLS = true
	cfg.EtcdClientURL = "http://127.0.0.1:9"
	etcdURLsForMTLS(&cfg, func(f string) bool { return f == "etcd-client-url" })
	if cfg.EtcdClientURL != "http://127.0.0.1:9" {
		t.Fatalf("a given URL changed: %s", cfg.EtcdClientURL)
	}
	if err := cfg.Validate(); err == nil {
		t.Fatal("--mtls with an http --etcd-client-url: Validate accepted it")
	}
}
