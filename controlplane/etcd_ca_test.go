package controlplane_test

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cellplane/cellplane/controlplane"
	"github.com/cellplane/cellplane/controlplane/topo"
	"github.com/cellplane/cellplane/internal/pki"
	"github.com/cellplane/cellplane/internal/serve"
	"github.com/cellplane/cellplane/internal/testutil"
	cpv1 "github.com/cellplane/cellplane/proto/cellplane/controlplane/v1"
)

// TestEmbeddedEtcdCARotation: the embedded etcd loads its CA bundle only
// at start, so the control plane restarts it when the bundle's CAs
// change. With both CAs in the bundle, a component presenting a leaf of
// the new CA connects on a new connection, without a restart of the
// control plane; a session (lease) taken before survives; the control
// plane's own store goes on working; the restart is counted. Once the
// old CA is dropped, a leaf of the old CA is refused on a new connection.
func TestEmbeddedEtcdCARotation(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a control plane with embedded etcd")
	}
	e := &pkiEnv{dir: t.TempDir()}
	var err error
	if e.ca, err = pki.NewCA(testCluster, time.Hour); err != nil {
		t.Fatal(err)
	}
	if err := pki.WriteCA(e.dir, e.ca, false); err != nil {
		t.Fatal(err)
	}
	oldCA := e.ca
	cpID := pki.ControlPlaneIdentity(testCluster, "cp1")
	e.issue(t, pki.LeafRequest{Identity: cpID, Hosts: []string{"127.0.0.1"}})
	scfg := pki.DirConfig(e.dir, cpID.FileName())
	scfg.ReloadInterval = 50 * time.Millisecond
	src, err := pki.NewSource(scfg)
	if err != nil {
		t.Fatal(err)
	}
	ports, err := serve.FreeLoopbackPorts(2)
	if err != nil {
		t.Fatal(err)
	}
	cfg := controlplane.DefaultConfig()
	cfg.ID, cfg.DataDir, cfg.TLS = "cp1", t.TempDir(), src
	cfg.EmbeddedClientURL = fmt.Sprintf("https://127.0.0.1:%d", ports[0])
	cfg.EmbeddedPeerURL = fmt.Sprintf("https://127.0.0.1:%d", ports[1])
	cfg.EtcdUnsafeNoFsync = true
	cfg.GRPCListener, cfg.HTTPListener = testutil.Listen(t), testutil.Listen(t)
	cfg.ShutdownTimeout = 5 * time.Second
	cfg.Logger = testutil.Logger(t)
	ctx := testutil.Context(t, 2*time.Minute)
	s, err := controlplane.Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	e.addr = s.GRPCAddr()
	eps := s.EtcdEndpoints()
	adm := cpv1.NewControlPlaneServiceClient(e.dialAs(t, admin))

	// A node with its etcd user, a leaf of the old CA, and a session
	// holding its registry key.
	node := pki.NodeIdentity(testCluster, "r1", "c1", "n1")
	if err := s.EnsureEtcdUser(ctx, node); err != nil {
		t.Fatal(err)
	}
	leafDir := func(ca *pki.CA) string {
		t.Helper()
		dir := t.TempDir()
		leaf, err := ca.Issue(pki.LeafRequest{Identity: node})
		if err != nil {
			t.Fatal(err)
		}
		if err := pki.WriteLeaf(dir, node.FileName(), leaf, false); err != nil {
			t.Fatal(err)
		}
		return dir
	}
	oldDir := leafDir(oldCA)
	copyBundle := func(dir string) {
		t.Helper()
		b, err := os.ReadFile(filepath.Join(e.dir, pki.CACertFile))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, pki.CACertFile), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	copyBundle(oldDir)
	held := dialEtcdAs(t, eps, oldDir, node)
	sess, err := held.NewSession(ctx, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	own := topo.CellNodeKey("c1", "n1")
	if _, err := held.Txn(ctx, nil, []topo.Op{topo.PutLeased(own, []byte("n1"), sess.Lease())}); err != nil {
		t.Fatal(err)
	}
	// answers reports whether etcd answers id's certificate in dir on a
	// new connection.
	answers := func(dir string) error {
		st := dialEtcdAs(t, eps, dir, node)
		defer st.Close()
		rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		_, err := st.Get(rctx, own)
		if err != nil && !errors.Is(err, topo.ErrNotFound) {
			return err
		}
		return nil
	}
	if err := answers(oldDir); err != nil {
		t.Fatalf("before the rotation, a leaf of the CA: %v", err)
	}

	// 1. A new CA, trusted with the old one; a leaf of the new CA is
	// answered once the control plane has restarted its member.
	newCA, err := pki.RotateCA(e.dir, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	e.ca = newCA
	newDir := leafDir(newCA)
	copyBundle(newDir)
	copyBundle(oldDir)
	testutil.Eventually(t, 20*time.Second, func() error {
		if err := answers(newDir); err != nil {
			return fmt.Errorf("a leaf of the new CA: %w", err)
		}
		return nil
	})
	if got := restarts(t, s, "ok"); got != "1" {
		t.Errorf("etcd restarts (ok) = %s, want 1", got)
	}
	select {
	case <-sess.Done():
		t.Fatal("the session taken before the restart was lost")
	default:
	}
	if kv, err := held.Get(ctx, own); err != nil || string(kv.Value) != "n1" {
		t.Fatalf("the leased key after the restart: %v, %v", kv, err)
	}
	if _, err := adm.CreateRegion(ctx, &cpv1.CreateRegionRequest{Name: "after-restart"}); err != nil {
		t.Fatalf("the control plane writes etcd after the restart: %v", err)
	}

	// 2. The control plane's leaf from the new CA, then the old CA
	// dropped: a leaf of the old CA is refused on a new connection.
	e.issue(t, pki.LeafRequest{Identity: cpID, Hosts: []string{"127.0.0.1"}})
	testutil.Eventually(t, 10*time.Second, func() error {
		if src.Certificate().CheckSignatureFrom(newCA.Cert) != nil {
			return errors.New("the control plane still holds its old leaf")
		}
		return nil
	})
	if _, err := pki.FinishRotation(e.dir); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 20*time.Second, func() error {
		if got := restarts(t, s, "ok"); got != "2" {
			return fmt.Errorf("etcd restarts (ok) = %s, want 2", got)
		}
		return nil
	})
	if err := answers(oldDir); !errors.Is(err, topo.ErrUnavailable) && !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("a leaf of the dropped CA on a new connection: %v, want no answer", err)
	}
	if err := handshake(t, eps[0], oldDir, node); err == nil || !strings.Contains(err.Error(), "remote error") {
		t.Errorf("a TLS handshake with a leaf of the dropped CA: %v, want refused by etcd (an alert)", err)
	}
	if err := handshake(t, eps[0], newDir, node); err != nil {
		t.Errorf("a TLS handshake with a leaf of the new CA: %v", err)
	}
	if err := answers(newDir); err != nil {
		t.Errorf("a leaf of the new CA after the old one was dropped: %v", err)
	}
	if _, err := adm.CreateRegion(ctx, &cpv1.CreateRegionRequest{Name: "after-finish"}); err != nil {
		t.Fatalf("the control plane writes etcd after the second restart: %v", err)
	}
}

// handshake makes a TLS handshake with the etcd at endpoint presenting
// id's certificate in dir and reads until etcd's HTTP/2 settings arrive
// (accepted) or an alert (refused: crypto/tls reports "remote error").
func handshake(t *testing.T, endpoint, dir string, id pki.Identity) error {
	t.Helper()
	cert, err := tls.LoadX509KeyPair(filepath.Join(dir, id.FileName()+".crt"), filepath.Join(dir, id.FileName()+".key"))
	if err != nil {
		t.Fatal(err)
	}
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", strings.TrimPrefix(endpoint, "https://"), &tls.Config{
		MinVersion:         tls.VersionTLS13,
		InsecureSkipVerify: true, // the server is not what is checked
		Certificates:       []tls.Certificate{cert},
		NextProtos:         []string{"h2"},
	})
	if err != nil {
		return err
	}
	defer conn.Close()
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	var b [1]byte
	_, err = conn.Read(b[:])
	return err
}

// restarts returns the control plane's etcd restart counter for result
// ("" if absent).
func restarts(t *testing.T, s *controlplane.Server, result string) string {
	t.Helper()
	resp, err := http.Get("http://" + s.HTTPAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	prefix := fmt.Sprintf("cellplane_controlplane_etcd_restarts_total{result=%q} ", result)
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, prefix); ok {
			return v
		}
	}
	return ""
}

// TestEtcdRestartTimeoutValidate: the embedded member's restart bound must
// be positive; with external etcd it is unused.
func TestEtcdRestartTimeoutValidate(t *testing.T) {
	for _, tc := range []struct {
		name     string
		timeout  time.Duration
		external bool
		ok       bool
	}{
		{"default", 30 * time.Second, false, true},
		{"zero embedded", 0, false, false},
		{"negative embedded", -time.Second, false, false},
		{"zero external", 0, true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := controlplane.DefaultConfig()
			cfg.DataDir = t.TempDir()
			cfg.EtcdRestartTimeout = tc.timeout
			if tc.external {
				cfg.EtcdEndpoints = []string{"http://127.0.0.1:1"}
			}
			if err := cfg.Validate(); (err == nil) != tc.ok {
				t.Fatalf("Validate() = %v, want ok %v", err, tc.ok)
			}
		})
	}
}
