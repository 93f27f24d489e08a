package etcdtopo_test

import (
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"testing"
	"time"

	"github.com/cellplane/cellplane/controlplane/topo/etcdtopo"
	"github.com/cellplane/cellplane/internal/pki"
)

// IdentityTLS presents the Source's current leaf (a rotated one at the
// next handshake) and accepts only a control plane identity of the
// cluster, or a plain certificate of the bundle valid for the host dialed.
func TestIdentityTLS(t *testing.T) {
	dir := t.TempDir()
	ca, err := pki.NewCA("test", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := pki.WriteCA(dir, ca, false); err != nil {
		t.Fatal(err)
	}
	issue := func(id pki.Identity) *pki.Leaf {
		t.Helper()
		leaf, err := ca.Issue(pki.LeafRequest{Identity: id, Hosts: []string{"127.0.0.1"}})
		if err != nil {
			t.Fatal(err)
		}
		if err := pki.WriteLeaf(dir, id.FileName(), leaf, true); err != nil {
			t.Fatal(err)
		}
		return leaf
	}
	router := pki.RouterIdentity("test", "r1")
	first := issue(router)
	cfg := pki.DirConfig(dir, router.FileName())
	cfg.ReloadInterval = 0 // Reload only
	src, err := pki.NewSource(cfg)
	if err != nil {
		t.Fatal(err)
	}
	tc := etcdtopo.IdentityTLS(src)
	if tc.MinVersion != tls.VersionTLS13 {
		t.Fatalf("MinVersion %x, want TLS 1.3", tc.MinVersion)
	}
	serial := func() *big.Int {
		t.Helper()
		c, err := tc.GetClientCertificate(&tls.CertificateRequestInfo{})
		if err != nil {
			t.Fatal(err)
		}
		return c.Leaf.SerialNumber
	}
	if serial().Cmp(first.Cert.SerialNumber) != 0 {
		t.Fatal("not the current leaf")
	}
	second := issue(router)
	if err := src.Reload(); err != nil {
		t.Fatal(err)
	}
	if serial().Cmp(second.Cert.SerialNumber) != 0 {
		t.Fatal("the rotated leaf is not presented after a reload")
	}

	state := func(leaf *x509.Certificate, serverName string) tls.ConnectionState {
		return tls.ConnectionState{PeerCertificates: []*x509.Certificate{leaf}, ServerName: serverName}
	}
	other, err := pki.NewCA("test", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	otherLeaf, err := other.Issue(pki.LeafRequest{Identity: pki.ControlPlaneIdentity("test", "cp1")})
	if err != nil {
		t.Fatal(err)
	}
	// A plain server certificate signed by the cluster CA (an external
	// etcd's), for 127.0.0.1.
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "etcd"},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, first.Key.Public(), ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	plain, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		cs   tls.ConnectionState
		ok   bool
	}{
		{"the control plane", state(issue(pki.ControlPlaneIdentity("test", "cp1")).Cert, "127.0.0.1"), true},
		{"a node", state(issue(pki.NodeIdentity("test", "eu", "c1", "n1")).Cert, "127.0.0.1"), false},
		{"another CA's control plane", state(otherLeaf.Cert, "127.0.0.1"), false},
		{"a plain certificate for the host", state(plain, "127.0.0.1"), true},
		{"a plain certificate for another host", state(plain, "10.0.0.1"), false},
		{"no certificate", tls.ConnectionState{}, false},
	} {
		if err := tc.VerifyConnection(c.cs); (err == nil) != c.ok {
			t.Errorf("%s: VerifyConnection = %v, want ok %v", c.name, err, c.ok)
		}
	}
}
