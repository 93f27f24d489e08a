package client

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"unicode"

	"sigs.k8s.io/yaml"

	"github.com/cellplane/cellplane/internal/ids"
	"github.com/cellplane/cellplane/internal/pki"
)

// EnvConfigFile is the environment variable naming the client
// configuration file that cellctl and programs using this package read.
const EnvConfigFile = "CELLPLANE_CONFIG"

// MaxConfigFileSize bounds the configuration file read by LoadConfigFile.
const MaxConfigFileSize = 64 << 10

// ConfigFile is the one client configuration file of cellplane (like a
// kubeconfig): where the control plane and the router are, and the TLS
// material and credentials to call them with. It is YAML or JSON (YAML is
// a superset); unknown keys are refused, so a misspelt key is an error
// rather than silently ignored:
//
//	controlplane: cp.example.internal:7000
//	router: router.example.internal:7100
//	ca: certs/ca.crt              # relative paths are relative to the file
//	cert: certs/operator.alice.crt
//	key: certs/operator.alice.key
//	tenant: acme                  # the Go client's tenant
//	apiKey: cpk_...               # and its API key (keep the file private)
//	cellCA: certs/ca.crt          # the cluster CA: the Go client calls the
//	                              # tenant's cell directly over TLS with a
//	                              # router-minted tenant token
//
// cellctl uses controlplane and the TLS material (its flags override the
// file's values); the Go client uses router, tenant, apiKey and the TLS
// material (ClientConfig).
type ConfigFile struct {
	// ControlPlane is host:port of the control plane's gRPC API.
	ControlPlane string `json:"controlplane,omitempty"`
	// Router is host:port of the router's gRPC API.
	Router string `json:"router,omitempty"`
	// CA is the PEM bundle of the cluster's CA(s); Cert and Key are this
	// caller's certificate (an operator's for cellctl, a client's for a
	// program) and its key. Cert and Key go together and need CA.
	CA   string `json:"ca,omitempty"`
	Cert string `json:"cert,omitempty"`
	Key  string `json:"key,omitempty"`
	// Tenant is the tenant the Go client acts for, APIKey its API key.
	Tenant string `json:"tenant,omitempty"`
	APIKey string `json:"apiKey,omitempty"`
	// CellCA is the PEM bundle of the cluster CA(s) the cells' node
	// certificates chain to. With it the Go client's direct path is on
	// and authenticated: TLS to the tenant's cell (a node identity of that
	// cell is required) with the tenant token its router Lookup returns
	// (Config.CellCAs). Often the same file as CA.
	CellCA string `json:"cellCA,omitempty"`
}

// LoadConfigFile reads, parses and validates the configuration file at
// path; relative file paths in it are made relative to its directory.
func LoadConfigFile(path string) (ConfigFile, error) {
	f, err := os.Open(path)
	if err != nil {
		return ConfigFile{}, fmt.Errorf("client config: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxConfigFileSize+1))
	if err != nil {
		return ConfigFile{}, fmt.Errorf("client config %s: %w", path, err)
	}
	cf, err := ParseConfigFile(data, filepath.Dir(path))
	if err != nil {
		return ConfigFile{}, fmt.Errorf("client config %s: %w", path, err)
	}
	return cf, nil
}

// ParseConfigFile decodes a configuration file's contents (YAML or JSON)
// and validates it. Relative CA, Cert and Key paths are joined to dir
// ("" leaves them as they are).
func ParseConfigFile(data []byte, dir string) (ConfigFile, error) {
	if len(data) > MaxConfigFileSize {
		return ConfigFile{}, fmt.Errorf("larger than %d bytes", MaxConfigFileSize)
	}
	var cf ConfigFile
	if err := yaml.UnmarshalStrict(data, &cf); err != nil {
		return ConfigFile{}, err
	}
	if err := cf.Validate(); err != nil {
		return ConfigFile{}, err
	}
	if dir != "" {
		for _, p := range []*string{&cf.CA, &cf.Cert, &cf.Key, &cf.CellCA} {
			if *p != "" && !filepath.IsAbs(*p) {
				*p = filepath.Join(dir, *p)
			}
		}
	}
	return cf, nil
}

// Validate reports every problem with f: addresses that are not
// host:port, a certificate without its key or CA, a tenant that is not a
// valid id, an API key with spaces or control characters.
func (f ConfigFile) Validate() error {
	var errs []error
	for _, a := range []struct{ name, v string }{{"controlplane", f.ControlPlane}, {"router", f.Router}} {
		if a.v == "" {
			continue
		}
		if _, port, err := net.SplitHostPort(a.v); err != nil || port == "" {
			errs = append(errs, fmt.Errorf("%s %q: want host:port", a.name, a.v))
		}
	}
	if (f.Cert == "") != (f.Key == "") {
		errs = append(errs, errors.New("cert and key go together"))
	}
	if f.Cert != "" && f.CA == "" {
		errs = append(errs, errors.New("cert needs ca"))
	}
	for _, p := range []struct{ name, v string }{{"ca", f.CA}, {"cert", f.Cert}, {"key", f.Key}, {"cellCA", f.CellCA}} {
		if strings.ContainsFunc(p.v, func(r rune) bool { return r == 0 || unicode.IsControl(r) }) {
			errs = append(errs, fmt.Errorf("%s: control character in the path", p.name))
		}
	}
	if f.Tenant != "" {
		if err := ids.Check("tenant", f.Tenant, ids.MaxLen); err != nil {
			errs = append(errs, err)
		}
	}
	if f.APIKey != "" && strings.ContainsFunc(f.APIKey, func(r rune) bool { return r > unicode.MaxASCII || !unicode.IsPrint(r) || r == ' ' }) {
		errs = append(errs, errors.New("apiKey: only printable ASCII without spaces"))
	}
	return errors.Join(errs...)
}

// TLSSource returns a pki.Source of f's CA, certificate and key, or nil
// when f names no certificate.
func (f ConfigFile) TLSSource() (*pki.Source, error) {
	if f.Cert == "" {
		return nil, nil
	}
	cfg := pki.DefaultConfig()
	cfg.CAFile, cfg.CertFile, cfg.KeyFile = f.CA, f.Cert, f.Key
	return pki.NewSource(cfg)
}

// ClientConfig returns DefaultConfig with f's router, tenant and API key;
// when f names a certificate, mutual TLS to the router (a server must
// prove a router identity of the CA's cluster); and when f names cellCA,
// the authenticated direct path (Config.CellCAs: TLS to the tenant's
// cell with a router-minted tenant token; a client/<tenant> certificate
// of f is presented to the cells too). A certificate without cellCA sends
// every call through the router (docs/security.md, "Tenant tokens").
func (f ConfigFile) ClientConfig() (Config, error) {
	c := DefaultConfig()
	c.Router, c.Tenant, c.APIKey = f.Router, f.Tenant, f.APIKey
	src, err := f.TLSSource()
	if err != nil {
		return Config{}, err
	}
	if src != nil {
		c.Direct = false
		// The router's connection only (Config.TLS): DialOptions would
		// apply to the cells' connections too.
		c.TLS = src.ClientTLSConfig(pki.ExpectKinds(pki.KindRouter))
	}
	if f.CellCA != "" {
		cas, err := pki.ReadCerts(f.CellCA)
		if err != nil {
			return Config{}, fmt.Errorf("cellCA: %w", err)
		}
		c.CellCAs, c.Direct = cas, true
		if src != nil && src.Identity().Kind == pki.KindClient {
			cert, err := tls.LoadX509KeyPair(f.Cert, f.Key)
			if err != nil {
				return Config{}, fmt.Errorf("cert: %w", err)
			}
			c.CellCertificate = &cert
		}
	}
	return c, nil
}
