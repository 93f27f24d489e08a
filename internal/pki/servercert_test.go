package pki_test

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cellplane/cellplane/internal/pki"
	"github.com/cellplane/cellplane/internal/pki/pkitest"
	"github.com/cellplane/cellplane/internal/testutil"
)

func TestServerCertConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		mod  func(*pki.ServerCertConfig)
		want string // "" valid
	}{
		{"both files", func(c *pki.ServerCertConfig) {}, ""},
		{"no cert", func(c *pki.ServerCertConfig) { c.CertFile = "" }, "CertFile"},
		{"no key", func(c *pki.ServerCertConfig) { c.KeyFile = "" }, "KeyFile"},
		{"negative interval", func(c *pki.ServerCertConfig) { c.ReloadInterval = -time.Second }, "ReloadInterval"},
		{"no checks", func(c *pki.ServerCertConfig) { c.ReloadInterval = 0 }, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := pki.DefaultServerCertConfig()
			c.CertFile, c.KeyFile = "a.crt", "a.key"
			tc.mod(&c)
			err := c.Validate()
			if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
				t.Fatalf("Validate() = %v, want %q", err, tc.want)
			}
		})
	}
}

// serveTLS accepts TLS connections on 127.0.0.1 with cfg and completes
// their handshakes until the test ends.
func serveTLS(t *testing.T, cfg *tls.Config) string {
	t.Helper()
	l := tls.NewListener(testutil.Listen(t), cfg)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			_ = c.(*tls.Conn).Handshake()
			_ = c.Close()
		}
	}()
	t.Cleanup(func() { _ = l.Close(); <-done })
	return l.Addr().String()
}

// A plain server certificate (no identity URI SAN, no client CA) is
// served over TLS 1.2 and 1.3, with h2 by ALPN, and reloaded when its
// files change; a key that does not match its certificate keeps the
// current pair.
func TestServerCertServesAndReloads(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "router.crt"), filepath.Join(dir, "router.key")
	ca := pkitest.NewServerCA(t)
	first := ca.Write(t, certFile, keyFile, "127.0.0.1")
	cfg := pki.DefaultServerCertConfig()
	cfg.CertFile, cfg.KeyFile, cfg.ReloadInterval = certFile, keyFile, 0
	cfg.Logger = testutil.Logger(t)
	sc, err := pki.NewServerCert(cfg)
	if err != nil {
		t.Fatal(err)
	}
	addr := serveTLS(t, sc.PublicTLSConfig())
	handshake := func(version uint16) (tls.ConnectionState, error) {
		c, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: ca.Pool(), MinVersion: version, MaxVersion: version, NextProtos: []string{"h2"}})
		if err != nil {
			return tls.ConnectionState{}, err
		}
		defer c.Close()
		return c.ConnectionState(), nil
	}
	for _, v := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
		cs, err := handshake(v)
		if err != nil {
			t.Fatalf("TLS %x: %v", v, err)
		}
		if cs.PeerCertificates[0].SerialNumber.Cmp(first.SerialNumber) != 0 || cs.NegotiatedProtocol != "h2" {
			t.Fatalf("TLS %x: serial %x proto %q", v, cs.PeerCertificates[0].SerialNumber, cs.NegotiatedProtocol)
		}
	}
	if _, err := handshake(tls.VersionTLS11); err == nil {
		t.Fatal("a TLS 1.1 handshake succeeded")
	}

	second := ca.Write(t, certFile, keyFile, "127.0.0.1")
	if err := sc.Reload(); err != nil {
		t.Fatal(err)
	}
	if cs, err := handshake(tls.VersionTLS13); err != nil || cs.PeerCertificates[0].SerialNumber.Cmp(second.SerialNumber) != 0 {
		t.Fatalf("after a reload: %v, want serial %x", err, second.SerialNumber)
	}

	// Half a rotation: a new certificate beside the old key.
	other := filepath.Join(dir, "other")
	ca.Write(t, other+".crt", other+".key", "127.0.0.1")
	if err := os.Rename(other+".crt", certFile); err != nil {
		t.Fatal(err)
	}
	if err := sc.Reload(); err == nil {
		t.Fatal("a key that does not match its certificate loaded")
	}
	if got := sc.Certificate().SerialNumber; got.Cmp(second.SerialNumber) != 0 {
		t.Fatalf("after a failed reload the serial is %x, want %x kept", got, second.SerialNumber)
	}
	if _, err := pki.NewServerCert(cfg); err == nil {
		t.Fatal("NewServerCert loaded a mismatched pair")
	}
}

// With a ReloadInterval, a handshake notices changed files by itself.
func TestServerCertReloadsOnHandshake(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "s.crt"), filepath.Join(dir, "s.key")
	ca := pkitest.NewServerCA(t)
	ca.Write(t, certFile, keyFile, "127.0.0.1")
	cfg := pki.DefaultServerCertConfig()
	cfg.CertFile, cfg.KeyFile, cfg.ReloadInterval = certFile, keyFile, time.Millisecond
	cfg.Logger = testutil.Logger(t)
	sc, err := pki.NewServerCert(cfg)
	if err != nil {
		t.Fatal(err)
	}
	next := ca.Write(t, certFile, keyFile, "127.0.0.1")
	testutil.Eventually(t, 5*time.Second, func() error {
		c, err := sc.GetCertificate(nil)
		if err != nil {
			return err
		}
		if c.Leaf.SerialNumber.Cmp(next.SerialNumber) != 0 {
			return fmt.Errorf("serial %x, want %x", c.Leaf.SerialNumber, next.SerialNumber)
		}
		return nil
	})
}

// A certificate from `cellplane cert create-router` (the cluster CA, an
// identity URI SAN) serves the front door too; clients trust ca.crt.
func TestServerCertFromClusterCA(t *testing.T) {
	ca := newCA(t)
	dir := t.TempDir()
	id := pki.RouterIdentity(cluster, "r1")
	leaf := install(t, ca, dir, pki.LeafRequest{Identity: id, Hosts: []string{"127.0.0.1"}})
	cfg := pki.DefaultServerCertConfig()
	cfg.CertFile, cfg.KeyFile = filepath.Join(dir, id.FileName()+".crt"), filepath.Join(dir, id.FileName()+".key")
	cfg.Logger = testutil.Logger(t)
	sc, err := pki.NewServerCert(cfg)
	if err != nil {
		t.Fatal(err)
	}
	addr := serveTLS(t, sc.PublicTLSConfig())
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	c, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: pool})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if got := c.ConnectionState().PeerCertificates[0].SerialNumber; got.Cmp(leaf.Cert.SerialNumber) != 0 {
		t.Fatalf("serial %x, want %x", got, leaf.Cert.SerialNumber)
	}
}
