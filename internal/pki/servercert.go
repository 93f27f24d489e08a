package pki

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"
)

// ServerCertConfig says where a ServerCert finds its certificate and key.
type ServerCertConfig struct {
	// CertFile and KeyFile are the server's certificate (PEM, the leaf
	// first, any intermediates after it) and its key: one from a public CA,
	// a company CA, or `cellplane cert create-router`. No identity URI SAN
	// is required and no client CA is involved.
	CertFile, KeyFile string
	// ReloadInterval is how often a handshake re-checks the files (their
	// modification time and size) and reloads them when they changed. 0
	// disables the checks: only Reload reloads.
	ReloadInterval time.Duration
	// Logger receives reloads and failed reloads; nil means slog.Default().
	Logger *slog.Logger
}

// DefaultServerCertConfig returns a ServerCertConfig with the default
// reload interval and no files.
func DefaultServerCertConfig() ServerCertConfig {
	return ServerCertConfig{ReloadInterval: DefaultReloadInterval}
}

// Validate reports every problem with c.
func (c ServerCertConfig) Validate() error {
	var errs []error
	if c.CertFile == "" {
		errs = append(errs, errors.New("pki: server CertFile is required"))
	}
	if c.KeyFile == "" {
		errs = append(errs, errors.New("pki: server KeyFile is required"))
	}
	if c.ReloadInterval < 0 {
		errs = append(errs, fmt.Errorf("pki: server ReloadInterval must not be negative, got %s", c.ReloadInterval))
	}
	return errors.Join(errs...)
}

// ServerCert serves a plain server certificate (server-side TLS, the
// client authenticating with something else: an API key, a JWT) from disk
// and reloads it when the files change, so it rotates without a restart.
// It is the public front door's counterpart of Source, which serves
// mutual TLS between components: no CA bundle, no identity, no client
// certificate.
//
// Like Source it has no goroutine: a handshake re-checks the files at most
// once per ReloadInterval. A pair that fails to load (a key that does not
// match its certificate while the two files are being replaced) is logged
// and the current certificate kept; the next check tries again, so
// replacing the files under traffic fails no handshake. Connections
// already established keep the certificate they were set up with.
type ServerCert struct {
	cfg ServerCertConfig
	log *slog.Logger

	cur   atomic.Pointer[servedCert]
	clock reloadClock
}

type servedCert struct {
	cert  *tls.Certificate // Leaf set
	stamp string
}

// NewServerCert loads cfg's files and returns a ServerCert serving them,
// or the reason it cannot (missing or unreadable files, a key that does
// not match the certificate).
func NewServerCert(cfg ServerCertConfig) (*ServerCert, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	c := &ServerCert{cfg: cfg, log: cfg.Logger, clock: reloadClock{interval: cfg.ReloadInterval}}
	if c.log == nil {
		c.log = slog.Default()
	}
	if err := c.Reload(); err != nil {
		return nil, err
	}
	return c, nil
}

// Reload re-reads the files now. On error the current certificate stays
// in use.
func (c *ServerCert) Reload() error {
	return c.clock.now(func() error {
		stamp, err := stampFiles(c.cfg.CertFile, c.cfg.KeyFile)
		if err != nil {
			return err
		}
		return c.load(stamp)
	})
}

// Certificate returns the current leaf certificate.
func (c *ServerCert) Certificate() *x509.Certificate { return c.current().cert.Leaf }

// GetCertificate is a tls.Config.GetCertificate serving the current
// certificate.
func (c *ServerCert) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return c.current().cert, nil
}

// PublicTLSConfig returns the tls.Config of a public front door serving
// the current certificate, offering HTTP/2 and HTTP/1.1 by ALPN (gRPC
// needs h2). TLS 1.2 is the minimum, not 1.3 as between components: the
// callers are external programs (agents, MCP clients, SDKs in other
// languages, corporate proxies) and some still stop at 1.2. Go's default
// TLS 1.2 cipher suites are all ECDHE with AEAD (forward secret, no CBC,
// no RSA key exchange), so nothing weak needs configuring away.
func (c *ServerCert) PublicTLSConfig() *tls.Config {
	return &tls.Config{
		MinVersion:     tls.VersionTLS12,
		GetCertificate: c.GetCertificate,
		NextProtos:     []string{"h2", "http/1.1"},
	}
}

// current returns the certificate after a file check if one is due.
func (c *ServerCert) current() *servedCert {
	if c.clock.due() {
		c.clock.check(c.check)
	}
	return c.cur.Load()
}

// check reloads the files if they changed since the last load (under the
// clock's lock).
func (c *ServerCert) check() {
	stamp, err := stampFiles(c.cfg.CertFile, c.cfg.KeyFile)
	if err == nil {
		if m := c.cur.Load(); m != nil && m.stamp == stamp {
			return
		}
		err = c.load(stamp)
	}
	if err != nil {
		c.log.Warn("pki: reloading the server certificate failed; keeping the current one", "cert", c.cfg.CertFile, "err", err)
	}
}

func (c *ServerCert) load(stamp string) error {
	cert, err := tls.LoadX509KeyPair(c.cfg.CertFile, c.cfg.KeyFile)
	if err != nil {
		return fmt.Errorf("pki: load %s: %w", c.cfg.CertFile, err)
	}
	leaf := cert.Leaf
	if now := time.Now(); now.After(leaf.NotAfter) || now.Before(leaf.NotBefore) {
		// Served anyway (refusing to start would not help the operator
		// more than clients' errors do), but said loudly.
		c.log.Warn("pki: the server certificate is not valid now", "cert", c.cfg.CertFile,
			"not_before", leaf.NotBefore, "not_after", leaf.NotAfter)
	}
	if old := c.cur.Swap(&servedCert{cert: &cert, stamp: stamp}); old != nil {
		c.log.Info("pki: server certificate reloaded", "cert", c.cfg.CertFile, "serial", leaf.SerialNumber.Text(16),
			"not_after", leaf.NotAfter)
	}
	return nil
}
