package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/credentials/insecure"

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

	grpcAddr := freeAddr(t)
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan result, 1)
	go func() {
		done <- runCmd(runCtx, "controlplane", "--id", "cp1", "--data-dir", t.TempDir(), "--certs-dir", dir,
			"--grpc-addr", grpcAddr, "--http-addr", freeAddr(t),
			"--etcd-client-url", "http://"+freeAddr(t), "--etcd-peer-url", "http://"+freeAddr(t))
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
	cancel()
	if r := <-done; r.code != 0 || !strings.Contains(r.err, "control plane API serves mutual TLS") || strings.Contains(r.err, "unauthenticated") {
		t.Fatalf("exit %d, stderr:\n%s", r.code, r.err)
	}
}
