package client

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/cellplane/cellplane/internal/pki"
)

// The control plane's address when nothing names one, and the environment
// variable that names one (cellctl's --controlplane, the Terraform
// provider's endpoint).
const (
	DefaultControlPlaneAddr = "127.0.0.1:7000"
	EnvControlPlane         = "CELLPLANE_CONTROLPLANE"
)

// ControlPlaneTarget is where an admin client (cellctl, the Terraform
// provider) reaches the control plane and with which TLS material: the one
// place that resolves it from explicit settings, CELLPLANE_CONTROLPLANE and
// the client configuration file (CELLPLANE_CONFIG), and turns it into
// transport credentials.
type ControlPlaneTarget struct {
	// Addr is host:port of the control plane's gRPC API.
	Addr string
	// CA, Cert and Key are PEM files: CA alone is TLS with server
	// verification only; with Cert and Key, mutual TLS.
	CA, Cert, Key string
	// CertsDir is a certs directory (cellplane cert) holding ca.crt and
	// operator certificates: mutual TLS as the operator CertName (default:
	// the directory's only operator.*.crt). It replaces CA, Cert and Key.
	CertsDir, CertName string
}

// ResolveControlPlaneTarget applies the precedence cellctl documents: an
// explicit value (addrSet, tlsSet: the caller's own settings named it) wins
// over CELLPLANE_CONTROLPLANE (the address), which wins over the client
// configuration file named by CELLPLANE_CONFIG, which wins over
// DefaultControlPlaneAddr. The file's TLS material is used only when the
// caller set none: explicit TLS settings replace it as a whole. configFile
// overrides CELLPLANE_CONFIG when not empty.
func ResolveControlPlaneTarget(t ControlPlaneTarget, addrSet, tlsSet bool, configFile string) (ControlPlaneTarget, error) {
	if configFile == "" {
		configFile = os.Getenv(EnvConfigFile)
	}
	if !addrSet && t.Addr == "" {
		t.Addr = DefaultControlPlaneAddr
	}
	if configFile != "" {
		cf, err := LoadConfigFile(configFile)
		if err != nil {
			return t, err
		}
		if !addrSet && cf.ControlPlane != "" {
			t.Addr = cf.ControlPlane
		}
		if !tlsSet {
			t.CA, t.Cert, t.Key = cf.CA, cf.Cert, cf.Key
		}
	}
	if !addrSet {
		if v, ok := os.LookupEnv(EnvControlPlane); ok && v != "" {
			t.Addr = v
		}
	}
	return t, nil
}

// ErrTargetConfig marks a mistake in a ControlPlaneTarget's settings (a
// usage error for a CLI): errors.Is(err, ErrTargetConfig).
var ErrTargetConfig = errors.New("control plane target settings")

// targetError is a settings mistake: its message as is, and
// errors.Is(err, ErrTargetConfig).
type targetError string

func (e targetError) Error() string        { return string(e) }
func (e targetError) Is(target error) bool { return target == ErrTargetConfig }

// Credentials returns the connection's credentials: mutual TLS with a
// pki.Source (CertsDir, or CA with Cert and Key), checking that the server
// is a peer of kind peer of the CA's cluster; TLS with only server
// verification (CA alone: a control plane behind a TLS-terminating proxy);
// else plaintext.
func (t ControlPlaneTarget) Credentials(peer pki.Kind) (credentials.TransportCredentials, error) {
	var pcfg pki.Config
	switch {
	case t.CertsDir != "":
		name := t.CertName
		if name == "" {
			var err error
			if name, err = onlyOperatorCert(t.CertsDir); err != nil {
				return nil, err
			}
		}
		pcfg = pki.DirConfig(t.CertsDir, name)
	case t.Cert != "":
		pcfg = pki.DefaultConfig()
		pcfg.CAFile, pcfg.CertFile, pcfg.KeyFile = t.CA, t.Cert, t.Key
	case t.CA == "":
		return insecure.NewCredentials(), nil
	default:
		return serverOnlyTLS(t.CA)
	}
	pcfg.Logger = slog.New(slog.DiscardHandler) // refusals come back as the call's error
	src, err := pki.NewSource(pcfg)
	if err != nil {
		return nil, err
	}
	return pki.ClientCredentials(src, pki.ExpectKinds(peer)), nil
}

// onlyOperatorCert returns the base name of the one operator certificate
// in dir.
func onlyOperatorCert(dir string) (string, error) {
	matches, err := filepath.Glob(filepath.Join(dir, "operator.*.crt"))
	if err != nil {
		return "", err
	}
	switch len(matches) {
	case 0:
		return "", targetError(fmt.Sprintf("--certs-dir %s holds no operator.*.crt: make one with 'cellplane cert create-operator' or pass --cert-name", dir))
	case 1:
		return strings.TrimSuffix(filepath.Base(matches[0]), ".crt"), nil
	}
	names := make([]string, len(matches))
	for i, m := range matches {
		names[i] = strings.TrimSuffix(filepath.Base(m), ".crt")
	}
	return "", targetError(fmt.Sprintf("--certs-dir %s holds several operator certificates (%s): pass --cert-name", dir, strings.Join(names, ", ")))
}

// serverOnlyTLS returns TLS credentials that verify the server's chain
// and host name against the CA file and present no client certificate.
func serverOnlyTLS(caFile string) (credentials.TransportCredentials, error) {
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("--tls-ca: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("--tls-ca %s: no PEM certificate in it", caFile)
	}
	return credentials.NewTLS(&tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}), nil
}
