package main

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/cellplane/cellplane/internal/pki"
	"github.com/cellplane/cellplane/internal/testutil"
)

// certsDir makes a CA of cluster "prod" and node certificates in a fresh
// directory with `cellplane cert`.
func certsDir(t *testing.T, nodes ...[3]string) string {
	t.Helper()
	dir := t.TempDir()
	cmds := [][]string{{"cert", "create-ca", "--cluster", "prod", "--certs-dir", dir}}
	for _, n := range nodes {
		cmds = append(cmds, []string{"cert", "create-node", "--region", n[0], "--cell", n[1], "--node", n[2], "--certs-dir", dir})
	}
	for _, args := range cmds {
		if r := runCmd(t.Context(), args...); r.code != 0 {
			t.Fatalf("%v: exit %d, %s", args, r.code, r.err)
		}
	}
	return dir
}

func TestCellTLSFlagErrors(t *testing.T) {
	dir := certsDir(t, [3]string{"eu", "c1", "n1"}, [3]string{"us", "c9", "n1"})
	empty := t.TempDir()
	tests := []struct {
		name string
		args []string
		code int
		want string
	}{
		{"name without dir", []string{"--cert-name", "node.eu.c1.n1"}, 2, "--cert-name needs --certs-dir"},
		{"no certificate", []string{"--certs-dir", empty}, 2, `holds no certificate of node "n1"`},
		{"several certificates", []string{"--certs-dir", dir}, 2, "holds several certificates of node \"n1\" (node.eu.c1.n1.crt, node.us.c9.n1.crt): choose one with --cert-name"},
		{"none of this cell", []string{"--certs-dir", dir, "--cell", "c2"}, 2, `holds no certificate of node "n1"`},
		{"named, of another cell", []string{"--certs-dir", dir, "--cert-name", "node.eu.c1.n1", "--cell", "c9"}, 2, `is of cell "c1", this node's cell is "c9"`},
		{"named, missing", []string{"--certs-dir", dir, "--cert-name", "node.eu.c1.n7"}, 1, "no such file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := append([]string{"cell", "--id", "n1", "--data-dir", t.TempDir()}, tt.args...)
			r := runCmd(t.Context(), args...)
			if r.code != tt.code || !strings.Contains(r.err, tt.want) || strings.Count(r.err, "\n") != 1 {
				t.Fatalf("exit %d, stderr %q; want %d and one line containing %q", r.code, r.err, tt.code, tt.want)
			}
		})
	}
}

// A node started with --certs-dir finds its certificate by id and cell
// and runs its Raft transport with mutual TLS, without the warning.
func TestCellTLS(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a node; skipped with -short")
	}
	dir := certsDir(t, [3]string{"eu", "c1", "n1"}, [3]string{"eu", "c2", "n1"})
	// The HTTP port serves mutual TLS: probe it as an operator.
	if r := runCmd(t.Context(), "cert", "create-operator", "--name", "probe", "--role", "read-only", "--certs-dir", dir); r.code != 0 {
		t.Fatalf("create-operator: exit %d, %s", r.code, r.err)
	}
	probe, err := pki.NewSource(pki.DirConfig(dir, "operator.probe"))
	if err != nil {
		t.Fatal(err)
	}
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: probe.ClientTLSConfig(pki.ExpectKinds(pki.KindNode))}}
	defer hc.CloseIdleConnections()
	raft, grpcAddr, httpAddr := testutil.FreeAddr(t), testutil.FreeAddr(t), testutil.FreeAddr(t)
	ctx, cancel := context.WithCancel(testutil.Context(t, time.Minute))
	defer cancel()
	done := make(chan result, 1)
	go func() {
		done <- runCmd(ctx, "cell", "--id", "n1", "--cell", "c1", "--data-dir", t.TempDir(), "--certs-dir", dir,
			"--raft-addr", raft, "--grpc-addr", grpcAddr, "--http-addr", httpAddr,
			"--bootstrap", "n1@"+raft, "--log-format", "json")
	}()
	testutil.Eventually(t, 20*time.Second, func() error {
		select {
		case r := <-done:
			done <- r
			return nil // exited early: reported below
		default:
		}
		resp, err := hc.Get("https://" + httpAddr + "/readyz")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("/readyz = %d", resp.StatusCode)
		}
		return nil
	})
	cancel()
	r := <-done
	if r.code != 0 {
		t.Fatalf("exit %d; stderr:\n%s", r.code, r.err)
	}
	if !strings.Contains(r.err, `"msg":"raft transport: mutual TLS","node":"n1","identity":"spiffe://prod/region/eu/cell/c1/node/n1"`) {
		t.Errorf("logs lack the Raft transport's identity:\n%s", r.err)
	}
	if strings.Contains(r.err, "INSECURE") {
		t.Errorf("logs warn of --insecure:\n%s", r.err)
	}
}
