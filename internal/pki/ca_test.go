package pki_test

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/cellplane/cellplane/internal/pki"
	"github.com/cellplane/cellplane/internal/testutil"
)

func TestIssue(t *testing.T) {
	ca, err := pki.NewCA(cluster, pki.DefaultCALifetime)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		id    pki.Identity
		usage []x509.ExtKeyUsage
	}{
		{nodeID, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth}},
		{routerID, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth}},
		{opID, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}},
		{pki.ClientIdentity(cluster, "acme"), []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}},
	}
	for _, tt := range tests {
		t.Run(string(tt.id.Kind), func(t *testing.T) {
			leaf, err := ca.Issue(pki.LeafRequest{Identity: tt.id, Hosts: []string{"127.0.0.1", "localhost", ""}, Lifetime: 48 * time.Hour})
			if err != nil {
				t.Fatal(err)
			}
			c := leaf.Cert
			if got, err := pki.IdentityOf(c); err != nil || got != tt.id {
				t.Errorf("IdentityOf = %v, %v; want %v", got, err, tt.id)
			}
			if !slices.Equal(c.ExtKeyUsage, tt.usage) || c.IsCA {
				t.Errorf("usage %v (CA %v), want %v", c.ExtKeyUsage, c.IsCA, tt.usage)
			}
			if len(c.IPAddresses) != 1 || !slices.Equal(c.DNSNames, []string{"localhost"}) {
				t.Errorf("SANs %v %v, want 127.0.0.1 and localhost", c.IPAddresses, c.DNSNames)
			}
			if c.Subject.CommonName != tt.id.FileName() {
				t.Errorf("CN %q, want %q", c.Subject.CommonName, tt.id.FileName())
			}
			if d := c.NotAfter.Sub(c.NotBefore); d != 48*time.Hour {
				t.Errorf("lifetime %s, want 48h", d)
			}
			if err := c.CheckSignatureFrom(ca.Cert); err != nil {
				t.Error(err)
			}
		})
	}
	// A leaf does not outlive its CA (of one hour here); another
	// cluster's identity is refused.
	short := newCA(t)
	leaf, err := short.Issue(pki.LeafRequest{Identity: nodeID})
	if err != nil || !leaf.Cert.NotAfter.Equal(short.Cert.NotAfter) {
		t.Errorf("default lifetime: %v, not after %s, want the CA's %s", err, leaf.Cert.NotAfter, short.Cert.NotAfter)
	}
	if _, err := ca.Issue(pki.LeafRequest{Identity: pki.RouterIdentity("other", "r1")}); !errors.Is(err, pki.ErrBadIdentity) {
		t.Errorf("identity of another cluster: %v, want ErrBadIdentity", err)
	}
	if _, err := ca.Issue(pki.LeafRequest{Identity: pki.RouterIdentity(cluster, "")}); !errors.Is(err, pki.ErrBadIdentity) {
		t.Errorf("invalid identity: %v, want ErrBadIdentity", err)
	}
}

func TestWriteAndLoad(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "certs")
	ca := newCA(t)
	if err := pki.WriteCA(dir, ca, false); err != nil {
		t.Fatal(err)
	}
	if err := pki.WriteCA(dir, newCA(t), false); !errors.Is(err, pki.ErrExists) || !errors.Is(err, fs.ErrExist) {
		t.Fatalf("second WriteCA = %v, want ErrExists and fs.ErrExist", err)
	}
	loaded, err := pki.LoadCA(dir)
	if err != nil || !loaded.Cert.Equal(ca.Cert) || loaded.Cluster() != cluster {
		t.Fatalf("LoadCA = %v, %v", loaded, err)
	}
	leaf, err := loaded.Issue(pki.LeafRequest{Identity: routerID})
	if err != nil {
		t.Fatal(err)
	}
	if err := pki.WriteLeaf(dir, "router.r1", leaf, false); err != nil {
		t.Fatal(err)
	}
	if err := pki.WriteLeaf(dir, "router.r1", leaf, false); !errors.Is(err, pki.ErrExists) {
		t.Fatalf("second WriteLeaf = %v, want ErrExists", err)
	}
	if err := pki.WriteLeaf(dir, "router.r1", leaf, true); err != nil {
		t.Fatalf("WriteLeaf with overwrite: %v", err)
	}
	for name, want := range map[string]os.FileMode{"ca.key": 0o600, "router.r1.key": 0o600, "ca.crt": 0o644, "router.r1.crt": 0o644} {
		if fi, err := os.Stat(filepath.Join(dir, name)); err != nil || fi.Mode().Perm() != want {
			t.Errorf("%s: %v mode %v, want %v", name, err, fi.Mode().Perm(), want)
		}
	}
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("certs dir: %v mode %v, want 0700", err, fi.Mode().Perm())
	}
	if _, err := tls.LoadX509KeyPair(filepath.Join(dir, "router.r1.crt"), filepath.Join(dir, "router.r1.key")); err != nil {
		t.Errorf("the written pair does not load: %v", err)
	}

	// Rotation: both CAs, then the new one only.
	rotated, err := pki.RotateCA(dir, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if certs, _ := pki.ReadCerts(filepath.Join(dir, pki.CACertFile)); len(certs) != 2 || !certs[0].Equal(rotated.Cert) || !certs[1].Equal(ca.Cert) {
		t.Fatalf("after RotateCA ca.crt holds %d certificates, want the new CA then the old", len(certs))
	}
	if _, err := pki.FinishRotation(dir); err != nil {
		t.Fatal(err)
	}
	if certs, _ := pki.ReadCerts(filepath.Join(dir, pki.CACertFile)); len(certs) != 1 || !certs[0].Equal(rotated.Cert) {
		t.Fatalf("after FinishRotation ca.crt holds %d certificates, want the new CA", len(certs))
	}

	infos, err := pki.ListDir(dir)
	if err != nil || len(infos) != 2 {
		t.Fatalf("ListDir = %v, %v; want the CA and the router", infos, err)
	}
	if infos[1].Identity != routerID.String() || infos[1].Kind != "router" || infos[1].Issuer != "" {
		t.Errorf("ListDir router = %+v; want no issuer (signed by the retired CA)", infos[1])
	}
}

// TestCADirectory: the trusted bundle may be a directory of CA files.
func TestCADirectory(t *testing.T) {
	ca1, ca2 := newCA(t), newCA(t)
	p := newParty(t, ca2, nodeID, nil)
	cas := filepath.Join(t.TempDir(), "cas")
	for i, ca := range []*pki.CA{ca1, ca2} {
		if err := pki.WriteCA(filepath.Join(cas, string(rune('a'+i))), ca, false); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(filepath.Join(cas, string(rune('a'+i)), pki.CACertFile), filepath.Join(cas, string(rune('a'+i))+".pem")); err != nil {
			t.Fatal(err)
		}
	}
	cfg := pki.DirConfig(p.dir, nodeID.FileName())
	cfg.CAFile = cas
	cfg.Logger = testutil.Logger(t)
	src, err := pki.NewSource(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if got := len(src.CAs()); got != 2 {
		t.Fatalf("trusts %d CAs, want 2", got)
	}
	client := newParty(t, ca1, routerID, nil)
	trust(t, client.dir, ca2)
	if err := client.src.Reload(); err != nil {
		t.Fatal(err)
	}
	if serverErr, clientErr := handshake(t, src.ServerTLSConfig(nil), client.src.ClientTLSConfig(nil)); serverErr != nil || clientErr != nil {
		t.Fatalf("handshake: server %v, client %v", serverErr, clientErr)
	}
}

func TestSourceConfig(t *testing.T) {
	if err := (pki.Config{ReloadInterval: -1}).Validate(); err == nil {
		t.Error("Validate accepted a config without files and a negative interval")
	}
	if err := pki.DirConfig("d", "n").Validate(); err != nil {
		t.Errorf("DirConfig: %v", err)
	}
	if _, err := pki.NewSource(pki.DirConfig(t.TempDir(), "none")); err == nil {
		t.Error("NewSource without files succeeded")
	}
}

func TestIdentityFromState(t *testing.T) {
	ca := newCA(t)
	valid, err := ca.Issue(pki.LeafRequest{Identity: routerID})
	if err != nil {
		t.Fatal(err)
	}
	old, err := ca.Issue(pki.LeafRequest{Identity: routerID, NotBefore: time.Now().Add(-2 * time.Hour), Lifetime: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	id, err := pki.IdentityFromState(tls.ConnectionState{HandshakeComplete: true, PeerCertificates: []*x509.Certificate{valid.Cert}})
	if err != nil || id != routerID {
		t.Errorf("valid: %v, %v", id, err)
	}
	// A connection does not outlive the certificate it was made with.
	if _, err := pki.IdentityFromState(tls.ConnectionState{HandshakeComplete: true, PeerCertificates: []*x509.Certificate{old.Cert}}); !errors.Is(err, pki.ErrExpired) {
		t.Errorf("expired since the handshake: %v, want ErrExpired", err)
	}
}
