package main

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/cellplane/cellplane/internal/dial"
	"github.com/cellplane/cellplane/internal/pki"
	"github.com/cellplane/cellplane/internal/testutil"
)

// TestCertCommands: certificates made by `cellplane cert` carry the right
// identities, and a node's certificate serves mutual TLS to an operator
// and a client (their identities seen by the server).
func TestCertCommands(t *testing.T) {
	ctx := testutil.Context(t, 30*time.Second)
	dir := filepath.Join(t.TempDir(), "certs")
	for _, args := range [][]string{
		{"cert", "create-ca", "--cluster", "prod", "--certs-dir", dir},
		{"cert", "create-node", "--region", "eu", "--cell", "c1", "--node", "n1", "--host", "127.0.0.1", "--host", "localhost", "--certs-dir", dir},
		{"cert", "create-operator", "--name", "alice", "--role", "admin", "--certs-dir", dir},
		{"cert", "create-client", "--tenant", "acme", "--lifetime", "1h", "--certs-dir", dir},
	} {
		if r := runCmd(ctx, args...); r.code != 0 || r.err != "" || !strings.HasPrefix(r.out, "wrote ") {
			t.Fatalf("%v: exit %d, stdout %q, stderr %q", args, r.code, r.out, r.err)
		}
	}
	for _, f := range []string{"ca.key", "node.eu.c1.n1.key", "operator.alice.key", "client.acme.key"} {
		fi, err := os.Stat(filepath.Join(dir, f))
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: %v, mode %v; want 0600", f, err, fi.Mode().Perm())
		}
	}

	// Refusals: an existing file, a bad role, another cluster.
	for _, tt := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"cert", "create-node", "--region", "eu", "--cell", "c1", "--node", "n1", "--certs-dir", dir}, 1, "pass --overwrite"},
		{[]string{"cert", "create-ca", "--cluster", "prod", "--certs-dir", dir}, 1, "pass --overwrite"},
		{[]string{"cert", "create-operator", "--name", "bob", "--role", "root", "--certs-dir", dir}, 2, `operator role "root"`},
		{[]string{"cert", "create-router", "--id", "r1", "--cluster", "other", "--certs-dir", dir}, 2, `of cluster "prod"`},
		{[]string{"cert", "create-router", "--id", "r 1", "--certs-dir", dir}, 2, "bad identity"},
		{[]string{"cert", "create-client", "--tenant", "acme", "--certs-dir", filepath.Join(t.TempDir(), "none")}, 1, "create-ca"},
	} {
		r := runCmd(ctx, tt.args...)
		if r.code != tt.code || !strings.Contains(r.err, tt.want) || strings.Count(r.err, "\n") != 1 {
			t.Errorf("%v: exit %d, stderr %q; want exit %d and one line containing %q", tt.args, r.code, r.err, tt.code, tt.want)
		}
	}
	r := runCmd(ctx, "cert", "create-node", "--region", "eu", "--cell", "c1", "--node", "n1", "--overwrite", "--certs-dir", dir)
	if r.code != 0 {
		t.Fatalf("--overwrite: exit %d, stderr %q", r.code, r.err)
	}

	// list names every certificate with its identity and issuer.
	r = runCmd(ctx, "cert", "list", "--certs-dir", dir)
	if r.code != 0 {
		t.Fatalf("list: exit %d, stderr %q", r.code, r.err)
	}
	for _, want := range []string{"spiffe://prod ", "spiffe://prod/region/eu/cell/c1/node/n1", "spiffe://prod/operator/admin/alice", "spiffe://prod/client/acme"} {
		if !strings.Contains(r.out, want) {
			t.Errorf("list lacks %q:\n%s", want, r.out)
		}
	}
	if strings.Contains(r.out, " -\n") {
		t.Errorf("list shows a certificate without issuer:\n%s", r.out)
	}

	// The node serves; the operator and the client call it.
	source := func(name string) *pki.Source {
		cfg := pki.DirConfig(dir, name)
		cfg.Logger = testutil.Logger(t)
		src, err := pki.NewSource(cfg)
		if err != nil {
			t.Fatal(err)
		}
		return src
	}
	var seen []string
	srv := grpc.NewServer(grpc.Creds(pki.ServerCredentials(source("node.eu.c1.n1"))),
		grpc.UnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			id, err := pki.PeerIdentity(ctx)
			if err != nil {
				return nil, err
			}
			seen = append(seen, id.String())
			return h(ctx, req)
		}))
	healthpb.RegisterHealthServer(srv, health.NewServer())
	l := testutil.Listen(t)
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(l) }()
	defer func() { srv.Stop(); <-done }()

	for _, name := range []string{"operator.alice", "client.acme"} {
		cfg := dial.DefaultConfig()
		cfg.Credentials = pki.ClientCredentials(source(name), pki.ExpectKinds(pki.KindNode))
		conn, err := dial.New(l.Addr().String(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		_, err = healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
		conn.Close()
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
	}
	if want := []string{"spiffe://prod/operator/admin/alice", "spiffe://prod/client/acme"}; strings.Join(seen, " ") != strings.Join(want, " ") {
		t.Errorf("server saw %v, want %v", seen, want)
	}
}

// TestCertCARotation: create-ca --rotate trusts old and new CA; leaves
// are then signed by the new one; finish-ca-rotation keeps only it.
func TestCertCARotation(t *testing.T) {
	ctx := testutil.Context(t, 30*time.Second)
	dir := t.TempDir()
	steps := [][]string{
		{"cert", "create-ca", "--cluster", "prod", "--certs-dir", dir},
		{"cert", "create-ca", "--rotate", "--certs-dir", dir},
		{"cert", "create-router", "--id", "r1", "--certs-dir", dir},
		{"cert", "finish-ca-rotation", "--certs-dir", dir},
	}
	var cas []int
	for _, args := range steps {
		if r := runCmd(ctx, args...); r.code != 0 {
			t.Fatalf("%v: exit %d, stderr %q", args, r.code, r.err)
		}
		certs, err := pki.ReadCerts(filepath.Join(dir, pki.CACertFile))
		if err != nil {
			t.Fatal(err)
		}
		cas = append(cas, len(certs))
	}
	if want := []int{1, 2, 2, 1}; !slices.Equal(cas, want) {
		t.Errorf("CAs trusted after each step = %v, want %v", cas, want)
	}
	ca, err := pki.LoadCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := pki.ReadCerts(filepath.Join(dir, "router.r1.crt"))
	if err != nil {
		t.Fatal(err)
	}
	if err := leaf[0].CheckSignatureFrom(ca.Cert); err != nil {
		t.Errorf("the router's certificate is not signed by the new CA: %v", err)
	}
}
