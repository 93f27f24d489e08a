package etcdtopo

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"strings"

	"go.etcd.io/etcd/client/pkg/v3/transport"

	"github.com/cellplane/cellplane/internal/pki"
)

// endpointsTLS reports whether the endpoints are https (true) or http
// (false); bare host:port endpoints follow the TLS material. Mixed
// schemes are an error: one connection would be plaintext.
func endpointsTLS(eps []string) (tlsEndpoints, plainEndpoints bool) {
	for _, e := range eps {
		switch {
		case strings.HasPrefix(e, "https://"), strings.HasPrefix(e, "unixs://"):
			tlsEndpoints = true
		case strings.HasPrefix(e, "http://"), strings.HasPrefix(e, "unix://"):
			plainEndpoints = true
		}
	}
	return tlsEndpoints, plainEndpoints
}

// SecureEndpoints reports whether any endpoint is an https URL: a
// component with a TLS identity uses it for etcd then (Config.Identity).
func SecureEndpoints(eps []string) bool {
	t, _ := endpointsTLS(eps)
	return t
}

// hasTLS reports whether c carries TLS material.
func (c Config) hasTLS() bool {
	return c.Identity != nil || c.CertFile != "" || c.CAFile != ""
}

// validateTLS checks the endpoints' schemes against the TLS material:
// https needs material (no plaintext fallback), material needs https (a
// client certificate is never sent in clear, and an http endpoint would
// quietly be plaintext).
func (c Config) validateTLS() error {
	tlsEps, plainEps := endpointsTLS(c.Endpoints)
	var errs []error
	if tlsEps && plainEps {
		errs = append(errs, fmt.Errorf("etcdtopo: endpoints %v mix http and https", c.Endpoints))
	}
	if tlsEps && !c.hasTLS() {
		errs = append(errs, fmt.Errorf("etcdtopo: https endpoints %v need TLS material (Identity, or CertFile/KeyFile/CAFile)", c.Endpoints))
	}
	if plainEps && c.hasTLS() {
		errs = append(errs, fmt.Errorf("etcdtopo: TLS material given for http endpoints %v: use https", c.Endpoints))
	}
	if c.Identity != nil && (c.CertFile != "" || c.CAFile != "") {
		errs = append(errs, errors.New("etcdtopo: Identity and CertFile/KeyFile/CAFile exclude each other"))
	}
	return errors.Join(errs...)
}

// clientTLS returns the client's tls.Config, nil for plaintext.
func (c Config) clientTLS() (*tls.Config, error) {
	switch {
	case c.Identity != nil:
		return IdentityTLS(c.Identity), nil
	case c.CertFile != "" || c.CAFile != "":
		// etcd's TLSInfo re-reads CertFile and KeyFile at every handshake.
		info := transport.TLSInfo{CertFile: c.CertFile, KeyFile: c.KeyFile, TrustedCAFile: c.CAFile}
		cfg, err := info.ClientConfig()
		if err != nil {
			return nil, err
		}
		cfg.MinVersion = tls.VersionTLS12 // an external etcd may not speak 1.3
		return cfg, nil
	}
	return nil, nil
}

// IdentityTLS returns the tls.Config of an etcd client with a
// component's identity: it presents src's current certificate (a rotated
// leaf is used at the next handshake, no restart) and accepts a server
// whose certificate chains to src's current CA bundle with server-auth
// usage and is either a control plane identity of src's cluster (the
// control plane's embedded etcd serves the control plane's certificate)
// or, for an external etcd with a plain server certificate, valid for the
// host name dialed. TLS 1.3 only.
func IdentityTLS(src *pki.Source) *tls.Config {
	base := src.ClientTLSConfig(nil)
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		// Verified below against the bundle current at the handshake.
		InsecureSkipVerify:   true,
		GetClientCertificate: base.GetClientCertificate,
		VerifyConnection: func(cs tls.ConnectionState) error {
			return verifyEtcdServer(src, cs)
		},
	}
}

// verifyEtcdServer is IdentityTLS's server check.
func verifyEtcdServer(src *pki.Source, cs tls.ConnectionState) error {
	if len(cs.PeerCertificates) == 0 {
		return errors.New("etcdtopo: etcd presented no certificate")
	}
	roots := x509.NewCertPool()
	for _, ca := range src.CAs() {
		roots.AddCert(ca)
	}
	opts := x509.VerifyOptions{Roots: roots, Intermediates: x509.NewCertPool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	for _, c := range cs.PeerCertificates[1:] {
		opts.Intermediates.AddCert(c)
	}
	leaf := cs.PeerCertificates[0]
	if _, err := leaf.Verify(opts); err != nil {
		return fmt.Errorf("etcdtopo: etcd's certificate: %w", err)
	}
	if len(leaf.URIs) == 0 {
		// An external etcd's plain server certificate: the host name.
		if err := leaf.VerifyHostname(cs.ServerName); err != nil {
			return fmt.Errorf("etcdtopo: etcd's certificate: %w", err)
		}
		return nil
	}
	id, err := pki.IdentityOf(leaf)
	if err != nil {
		return fmt.Errorf("etcdtopo: etcd's certificate: %w", err)
	}
	if id.Kind != pki.KindControlPlane || id.Cluster != src.Identity().Cluster {
		return fmt.Errorf("etcdtopo: etcd presented %s, want a controlplane identity of cluster %q", id, src.Identity().Cluster)
	}
	return nil
}
