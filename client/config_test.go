package client_test

import (
	"crypto/tls"
	"crypto/x509"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cellplane/cellplane/client"
	"github.com/cellplane/cellplane/internal/pki"
)

func TestParseConfigFile(t *testing.T) {
	for _, tc := range []struct {
		name, data string
		want       client.ConfigFile
		err        string
	}{
		{name: "yaml", data: "controlplane: cp:7000\nrouter: 10.0.0.1:7100\nca: certs/ca.crt\ncert: certs/operator.alice.crt\nkey: /abs/operator.alice.key\ntenant: acme\napiKey: cpk_abc.def\n",
			want: client.ConfigFile{ControlPlane: "cp:7000", Router: "10.0.0.1:7100", CA: "/etc/cp/certs/ca.crt",
				Cert: "/etc/cp/certs/operator.alice.crt", Key: "/abs/operator.alice.key", Tenant: "acme", APIKey: "cpk_abc.def"}},
		{name: "json", data: `{"controlplane": "[::1]:7000"}`, want: client.ConfigFile{ControlPlane: "[::1]:7000"}},
		{name: "cell CA", data: "router: r:7100\ntenant: acme\napiKey: k\ncellCA: certs/ca.crt\n",
			want: client.ConfigFile{Router: "r:7100", Tenant: "acme", APIKey: "k", CellCA: "/etc/cp/certs/ca.crt"}},
		{name: "control character in cellCA", data: "cellCA: \"a\\u0001\"\n", err: "cellCA"},
		{name: "empty", data: ""},
		{name: "unknown key", data: "controlplan: cp:7000\n", err: "unknown field"},
		{name: "duplicate key", data: "controlplane: a:1\ncontrolplane: b:2\n", err: "controlplane"},
		{name: "no port", data: "controlplane: cp\n", err: "want host:port"},
		{name: "cert without key", data: "ca: ca.crt\ncert: a.crt\n", err: "cert and key go together"},
		{name: "cert without ca", data: "cert: a.crt\nkey: a.key\n", err: "cert needs ca"},
		{name: "bad tenant", data: "tenant: a/b\n", err: "tenant"},
		{name: "bad api key", data: "apiKey: \"a b\"\n", err: "apiKey"},
		{name: "not a map", data: "- a\n", err: "cannot unmarshal"},
		{name: "too large", data: "router: a:1\n" + strings.Repeat("#", client.MaxConfigFileSize), err: "larger than"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := client.ParseConfigFile([]byte(tc.data), "/etc/cp")
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err %v, want one containing %q", err, tc.err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("got %+v, %v; want %+v", got, err, tc.want)
			}
		})
	}
}

func TestLoadConfigFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(path, []byte("router: 127.0.0.1:7100\ntenant: acme\napiKey: k\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cf, err := client.LoadConfigFile(path)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := cf.ClientConfig()
	if err != nil || cfg.Router != "127.0.0.1:7100" || cfg.Tenant != "acme" || cfg.APIKey != "k" || cfg.Validate() != nil {
		t.Fatalf("ClientConfig: %+v %v", cfg, err)
	}
	if _, err := client.LoadConfigFile(filepath.Join(dir, "missing")); err == nil {
		t.Fatal("a missing file loaded")
	}
	if !cfg.Direct {
		t.Fatal("without a certificate the client no longer calls cells directly")
	}
	cf.CA, cf.Cert, cf.Key = filepath.Join(dir, "ca.crt"), filepath.Join(dir, "x.crt"), filepath.Join(dir, "x.key")
	if _, err := cf.ClientConfig(); err == nil {
		t.Fatal("missing certificate files accepted")
	}
	// With a client certificate every call goes through the router: a
	// cell serving mutual TLS refuses a client identity.
	ca, err := pki.NewCA("test", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	id := pki.ClientIdentity("test", "acme")
	leaf, err := ca.Issue(pki.LeafRequest{Identity: id})
	if err != nil {
		t.Fatal(err)
	}
	if err := pki.WriteCA(dir, ca, false); err != nil {
		t.Fatal(err)
	}
	if err := pki.WriteLeaf(dir, "x", leaf, false); err != nil {
		t.Fatal(err)
	}
	cfg, err = cf.ClientConfig()
	if err != nil || cfg.Direct {
		t.Fatalf("ClientConfig with a client certificate: Direct %v, %v", cfg.Direct, err)
	}
	if cfg.TLS == nil || len(cfg.DialOptions) != 0 {
		t.Fatal("the router's mutual TLS must be Config.TLS (DialOptions would reach the cells too)")
	}

	// With cellCA: the authenticated direct path, the client certificate
	// (a client/<tenant> one) presented to the cells.
	cf.CellCA = filepath.Join(dir, pki.CACertFile)
	cfg, err = cf.ClientConfig()
	if err != nil || !cfg.Direct || len(cfg.CellCAs) != 1 || cfg.CellCertificate == nil || cfg.Validate() != nil {
		t.Fatalf("ClientConfig with cellCA: Direct %v, CAs %d, cert %v, %v (%v)", cfg.Direct, len(cfg.CellCAs), cfg.CellCertificate != nil, err, cfg.Validate())
	}
	cf.CellCA = filepath.Join(dir, "x.crt") // a leaf, not a cluster CA
	if cfg, err := cf.ClientConfig(); err == nil && cfg.Validate() == nil {
		t.Fatal("a leaf certificate accepted as the cells' CA")
	}
}

func TestConfigValidateCellCAs(t *testing.T) {
	ca, err := pki.NewCA("test", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	other, err := pki.NewCA("prod", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cfg := client.DefaultConfig()
	cfg.Router, cfg.Tenant = "127.0.0.1:7100", "acme"
	cfg.CellCAs = []*x509.Certificate{ca.Cert}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	cfg.CellCAs = append(cfg.CellCAs, other.Cert)
	if cfg.Validate() == nil {
		t.Fatal("CAs of two clusters accepted")
	}
	cfg.CellCAs = nil
	cfg.CellCertificate = &tls.Certificate{}
	if cfg.Validate() == nil {
		t.Fatal("CellCertificate without CellCAs accepted")
	}
}

// FuzzParseConfigFile: the decoder never panics, and what it accepts
// validates and parses again to the same value.
func FuzzParseConfigFile(f *testing.F) {
	for _, s := range []string{
		"controlplane: cp:7000\nca: ca.crt\ncert: a.crt\nkey: a.key\n",
		`{"router": "r:1", "tenant": "acme", "apiKey": "k"}`,
		"tenant: &a x\nrouter: *a\n",
		"",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		cf, err := client.ParseConfigFile(data, "")
		if err != nil {
			return
		}
		if err := cf.Validate(); err != nil {
			t.Fatalf("accepted %+v that does not validate: %v", cf, err)
		}
	})
}
