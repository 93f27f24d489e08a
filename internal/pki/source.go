package pki

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
)

// DefaultReloadInterval is how often a Source re-checks its files.
const DefaultReloadInterval = 5 * time.Second

// Config says where a Source finds its TLS material.
type Config struct {
	// CertFile and KeyFile are this process's certificate (PEM, the leaf
	// first, any intermediates after it) and its key.
	CertFile, KeyFile string
	// CAFile is the trusted CA bundle: a PEM file holding one or more CA
	// certificates (two during a CA rotation), or a directory whose *.crt
	// and *.pem files all hold trusted CAs.
	CAFile string
	// ReloadInterval is how often a handshake re-checks the files (their
	// modification time and size) and reloads those that changed. 0
	// disables the checks: only Reload reloads.
	ReloadInterval time.Duration
	// Logger receives reloads and refused peers; nil means slog.Default().
	Logger *slog.Logger
}

// DefaultConfig returns a Config with the default reload interval and no
// files.
func DefaultConfig() Config {
	return Config{ReloadInterval: DefaultReloadInterval}
}

// DirConfig returns DefaultConfig for the files of a certs directory as
// `cellplane cert` lays it out: dir/<name>.crt, dir/<name>.key and the
// bundle dir/ca.crt. name is an Identity's FileName.
func DirConfig(dir, name string) Config {
	c := DefaultConfig()
	c.CertFile = filepath.Join(dir, name+".crt")
	c.KeyFile = filepath.Join(dir, name+".key")
	c.CAFile = filepath.Join(dir, CACertFile)
	return c
}

// Validate reports every problem with c.
func (c Config) Validate() error {
	var errs []error
	if c.CertFile == "" {
		errs = append(errs, errors.New("pki: CertFile is required"))
	}
	if c.KeyFile == "" {
		errs = append(errs, errors.New("pki: KeyFile is required"))
	}
	if c.CAFile == "" {
		errs = append(errs, errors.New("pki: CAFile is required"))
	}
	if c.ReloadInterval < 0 {
		errs = append(errs, fmt.Errorf("pki: ReloadInterval must not be negative, got %s", c.ReloadInterval))
	}
	return errors.Join(errs...)
}

// VerifyFunc decides whether a verified peer identity is acceptable on a
// connection (a cell node dialing a peer expects a node, a router expects
// nodes and workers). An error refuses the handshake.
type VerifyFunc func(Identity) error

// ExpectKinds returns a VerifyFunc accepting identities of the given kinds.
func ExpectKinds(kinds ...Kind) VerifyFunc {
	return func(id Identity) error {
		if !slices.Contains(kinds, id.Kind) {
			return fmt.Errorf("kind %s, want one of %v", id.Kind, kinds)
		}
		return nil
	}
}

// ExpectIdentity returns a VerifyFunc accepting only want (a Raft peer
// dialing a member it knows by id).
func ExpectIdentity(want Identity) VerifyFunc {
	return func(id Identity) error {
		if id != want {
			return fmt.Errorf("want %s", want)
		}
		return nil
	}
}

// Source serves this process's TLS material from disk and reloads it when
// the files change, so certificates and CAs rotate without a restart. It
// has no goroutine: a handshake re-checks the files at most once per
// ReloadInterval, and Reload checks now. A file set that fails to load (a
// key that does not match its certificate while the two are being
// replaced, a half-copied bundle) is logged and the current material kept;
// the next check tries again.
//
// The tls.Configs it returns verify peers themselves (VerifyConnection),
// against the bundle current at the handshake: the chain up to a trusted
// CA, the extended key usage, and exactly one identity URI SAN of this
// process's cluster, then the caller's VerifyFunc. Host names are not
// checked: components dial IP addresses, and the identity is what counts.
// TLS 1.3 is the minimum: every party is Go, 1.3 encrypts the
// certificates (identities do not cross the network in clear) and has no
// weak cipher suites to configure away.
//
// Connections already established are not affected by a reload: a
// certificate or CA that is no longer trusted is refused at the next
// handshake, so components recycle connections (keepalive, max connection
// age) to bound how long an old one lives.
type Source struct {
	cfg Config
	log *slog.Logger

	cur   atomic.Pointer[material]
	clock reloadClock
}

// material is one loaded set of files.
type material struct {
	cert  *tls.Certificate // Leaf set
	id    Identity
	pool  *x509.CertPool
	cas   []*x509.Certificate
	stamp string // the files' names, sizes and modification times
}

// NewSource loads cfg's files and returns a Source serving them, or the
// reason it cannot: missing or unreadable files, a key that does not
// match the certificate, a certificate without a valid identity.
func NewSource(cfg Config) (*Source, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	s := &Source{cfg: cfg, log: cfg.Logger, clock: reloadClock{interval: cfg.ReloadInterval}}
	if s.log == nil {
		s.log = slog.Default()
	}
	if err := s.Reload(); err != nil {
		return nil, err
	}
	return s, nil
}

// Reload re-reads the files now. On error the current material stays in
// use.
func (s *Source) Reload() error {
	return s.clock.now(func() error {
		stamp, err := s.stamp()
		if err != nil {
			return err
		}
		return s.load(stamp)
	})
}

// Identity returns the identity of this process's current certificate.
func (s *Source) Identity() Identity { return s.current().id }

// Certificate returns this process's current leaf certificate.
func (s *Source) Certificate() *x509.Certificate { return s.current().cert.Leaf }

// CAs returns the CAs currently trusted.
func (s *Source) CAs() []*x509.Certificate { return slices.Clone(s.current().cas) }

// current returns the material after a file check if one is due.
func (s *Source) current() *material {
	if s.clock.due() {
		s.clock.check(s.check)
	}
	return s.cur.Load()
}

// check reloads the files if they changed since the last load (under the
// clock's lock).
func (s *Source) check() {
	stamp, err := s.stamp()
	if err == nil {
		if m := s.cur.Load(); m != nil && m.stamp == stamp {
			return
		}
		err = s.load(stamp)
	}
	if err != nil {
		s.log.Warn("pki: reloading TLS material failed; keeping the current one", "cert", s.cfg.CertFile, "ca", s.cfg.CAFile, "err", err)
	}
}

// stamp describes the files' current versions.
func (s *Source) stamp() (string, error) {
	cas, err := s.caFiles()
	if err != nil {
		return "", err
	}
	return stampFiles(append([]string{s.cfg.CertFile, s.cfg.KeyFile}, cas...)...)
}

// caFiles lists the files of the CA bundle.
func (s *Source) caFiles() ([]string, error) {
	fi, err := os.Stat(s.cfg.CAFile)
	if err != nil {
		return nil, fmt.Errorf("pki: %w", err)
	}
	if !fi.IsDir() {
		return []string{s.cfg.CAFile}, nil
	}
	entries, err := os.ReadDir(s.cfg.CAFile)
	if err != nil {
		return nil, fmt.Errorf("pki: %w", err)
	}
	var files []string
	for _, e := range entries {
		if n := e.Name(); e.Type()&fs.ModeType == 0 && !strings.HasPrefix(n, ".") && (strings.HasSuffix(n, ".crt") || strings.HasSuffix(n, ".pem")) {
			files = append(files, filepath.Join(s.cfg.CAFile, n))
		}
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("pki: CA directory %s holds no *.crt or *.pem file", s.cfg.CAFile)
	}
	return files, nil
}

// load reads the files and makes them current.
func (s *Source) load(stamp string) error {
	cert, err := tls.LoadX509KeyPair(s.cfg.CertFile, s.cfg.KeyFile)
	if err != nil {
		return fmt.Errorf("pki: load %s: %w", s.cfg.CertFile, err)
	}
	id, err := IdentityOf(cert.Leaf)
	if err != nil {
		return fmt.Errorf("pki: %s: %w", s.cfg.CertFile, err)
	}
	files, err := s.caFiles()
	if err != nil {
		return err
	}
	var cas []*x509.Certificate
	for _, f := range files {
		certs, err := ReadCerts(f)
		if err != nil {
			return err
		}
		cas = append(cas, certs...)
	}
	pool := x509.NewCertPool()
	for _, c := range cas {
		if !c.IsCA {
			return fmt.Errorf("pki: %s holds a certificate that is not a CA (%s)", s.cfg.CAFile, c.Subject)
		}
		pool.AddCert(c)
	}
	m := &material{cert: &cert, id: id, pool: pool, cas: cas, stamp: stamp}
	if _, err := verifyChain(m, cert.Leaf, cert.Certificate[1:], x509.ExtKeyUsageAny); err != nil {
		// Not fatal: during a rotation a new certificate may arrive
		// before the bundle that trusts it. Peers will refuse it until
		// then, so say so.
		s.log.Warn("pki: this process's certificate is not trusted by its own CA bundle", "cert", s.cfg.CertFile, "identity", id.String(), "err", err)
	}
	old := s.cur.Swap(m)
	if old != nil {
		s.log.Info("pki: TLS material reloaded", "identity", id.String(), "serial", cert.Leaf.SerialNumber.Text(16),
			"not_after", cert.Leaf.NotAfter, "cas", len(cas))
	}
	return nil
}

// verifyChain verifies leaf against m's bundle for usage.
func verifyChain(m *material, leaf *x509.Certificate, rest [][]byte, usage x509.ExtKeyUsage) ([][]*x509.Certificate, error) {
	opts := x509.VerifyOptions{Roots: m.pool, KeyUsages: []x509.ExtKeyUsage{usage}}
	if len(rest) > 0 {
		opts.Intermediates = x509.NewCertPool()
		for _, der := range rest {
			if c, err := x509.ParseCertificate(der); err == nil {
				opts.Intermediates.AddCert(c)
			}
		}
	}
	return leaf.Verify(opts)
}

// verifyPeer checks a peer's certificate chain against the current
// bundle, its identity against this process's cluster, then verify.
func (s *Source) verifyPeer(cs tls.ConnectionState, usage x509.ExtKeyUsage, verify VerifyFunc) (Identity, error) {
	if len(cs.PeerCertificates) == 0 {
		return Identity{}, unauthenticated(ErrNoCertificate, "")
	}
	m := s.current()
	leaf := cs.PeerCertificates[0]
	var rest [][]byte
	for _, c := range cs.PeerCertificates[1:] {
		rest = append(rest, c.Raw)
	}
	if _, err := verifyChain(m, leaf, rest, usage); err != nil {
		return Identity{}, classify(err)
	}
	id, err := IdentityOf(leaf)
	if err != nil {
		return Identity{}, err
	}
	if id.Cluster != m.id.Cluster {
		return id, unauthenticated(ErrUnexpectedIdentity, "%s is not of cluster %q", id, m.id.Cluster)
	}
	if verify != nil {
		if err := verify(id); err != nil {
			return id, unauthenticated(ErrUnexpectedIdentity, "%s: %v", id, err)
		}
	}
	return id, nil
}

// verifyConnection returns a tls.Config.VerifyConnection that verifies
// the peer and logs a refusal.
func (s *Source) verifyConnection(usage x509.ExtKeyUsage, verify VerifyFunc, side string) func(tls.ConnectionState) error {
	return func(cs tls.ConnectionState) error {
		id, err := s.verifyPeer(cs, usage, verify)
		if err != nil {
			peerID := ""
			if id.Kind != "" {
				peerID = id.String()
			}
			s.log.Warn("pki: peer refused", "side", side, "peer_identity", peerID, "err", err)
		}
		return err
	}
}

// ServerTLSConfig returns the tls.Config of a server: it presents the
// current certificate and requires a client certificate that verifies
// against the current bundle (tls.RequireAndVerifyClientCert semantics,
// checked by VerifyConnection so a reloaded bundle applies at once), with
// client-auth usage and a valid identity accepted by verify (nil: any
// identity of the cluster). For an HTTP server, set NextProtos on the
// returned config; gRPC's credentials set it themselves.
func (s *Source) ServerTLSConfig(verify VerifyFunc) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		// Requested, and required by VerifyConnection, which refuses a
		// missing certificate with ErrNoCertificate.
		ClientAuth: tls.RequestClientCert,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return s.current().cert, nil
		},
		VerifyConnection: s.verifyConnection(x509.ExtKeyUsageClientAuth, verify, "server"),
	}
}

// ServerTLSConfigCertIfGiven is ServerTLSConfig for a server that also
// accepts callers without a client certificate
// (tls.VerifyClientCertIfGiven semantics): a certificate, when given, is
// verified exactly as ServerTLSConfig does (a bad one fails the
// handshake); without one the handshake completes and PeerIdentity
// returns ErrNoCertificate, so the server's authoriser must refuse every
// call it cannot authorise otherwise (a cell node: a ContextService call
// with a tenant token, docs/security.md "Tenant tokens").
func (s *Source) ServerTLSConfigCertIfGiven(verify VerifyFunc) *tls.Config {
	c := s.ServerTLSConfig(verify)
	strict := c.VerifyConnection
	c.VerifyConnection = func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 {
			return nil
		}
		return strict(cs)
	}
	return c
}

// ClientTLSConfig returns the tls.Config of a client: it presents the
// current certificate and accepts a server whose certificate verifies
// against the current bundle, with server-auth usage and an identity
// accepted by verify. Pass a verify: components dial IP addresses, so the
// identity's kind is the only check that the right kind of peer answered.
func (s *Source) ClientTLSConfig(verify VerifyFunc) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		// The chain and the identity are verified by VerifyConnection
		// against the bundle current at the handshake; Go's own check
		// would pin one pool and check a host name, which components
		// dialing IPs do not have.
		InsecureSkipVerify: true,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return s.current().cert, nil
		},
		VerifyConnection: s.verifyConnection(x509.ExtKeyUsageServerAuth, verify, "client"),
	}
}

// ServerCredentials returns gRPC transport credentials for a server
// (grpc.Creds(...)): ServerTLSConfig(nil). Authorisation by identity is
// the job of the server's interceptor, with PeerIdentity.
func ServerCredentials(src *Source) credentials.TransportCredentials {
	return credentials.NewTLS(src.ServerTLSConfig(nil))
}

// ServerCredentialsCertIfGiven returns gRPC transport credentials for a
// server that accepts callers without a client certificate:
// ServerTLSConfigCertIfGiven(nil).
func ServerCredentialsCertIfGiven(src *Source) credentials.TransportCredentials {
	return credentials.NewTLS(src.ServerTLSConfigCertIfGiven(nil))
}

// ClientCredentials returns gRPC transport credentials for a client
// (internal/dial.Config.Credentials): ClientTLSConfig(verify).
func ClientCredentials(src *Source, verify VerifyFunc) credentials.TransportCredentials {
	return credentials.NewTLS(src.ClientTLSConfig(verify))
}

// PeerIdentity returns the verified identity of the peer of a gRPC
// server call, for an interceptor to authorise. Its errors wrap
// ErrNoCertificate (no TLS, no certificate), ErrExpired (the certificate
// expired since the handshake: a long-lived connection does not outlive
// its certificate), ErrNoURISAN or ErrBadIdentity, and a cperr
// UNAUTHENTICATED error.
func PeerIdentity(ctx context.Context) (Identity, error) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return Identity{}, unauthenticated(ErrNoCertificate, "no peer in context")
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok {
		return Identity{}, unauthenticated(ErrNoCertificate, "connection is not TLS")
	}
	return IdentityFromState(info.State)
}

// IdentityFromState returns the identity of the peer of a TLS connection
// (an HTTP request's r.TLS, a raw tls.Conn's ConnectionState()). It trusts
// that the handshake verified the certificate, as the configs of a Source
// do; it checks that the certificate has not expired since. Errors as
// PeerIdentity's.
func IdentityFromState(cs tls.ConnectionState) (Identity, error) {
	if !cs.HandshakeComplete || len(cs.PeerCertificates) == 0 {
		return Identity{}, unauthenticated(ErrNoCertificate, "")
	}
	leaf := cs.PeerCertificates[0]
	if now := time.Now(); now.After(leaf.NotAfter) || now.Before(leaf.NotBefore) {
		return Identity{}, unauthenticated(ErrExpired, "valid %s to %s", leaf.NotBefore.UTC().Format(time.RFC3339), leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	return IdentityOf(leaf)
}

// ClientTLSConfigFromCAs returns the tls.Config of a client that is not
// a component (the smart client of a tenant): it presents cert when not
// nil (a client/<tenant> certificate) and accepts a server whose
// certificate verifies against cas (fixed: the caller builds a new config
// to trust other CAs) with server-auth usage and exactly one identity of
// cluster, accepted by verify. Host names are not checked: the identity
// is.
func ClientTLSConfigFromCAs(cas []*x509.Certificate, cluster string, cert *tls.Certificate, verify VerifyFunc) *tls.Config {
	pool := x509.NewCertPool()
	for _, c := range cas {
		pool.AddCert(c)
	}
	m := &material{pool: pool}
	c := &tls.Config{
		MinVersion:         tls.VersionTLS13,
		InsecureSkipVerify: true, // VerifyConnection verifies the chain and the identity
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return unauthenticated(ErrNoCertificate, "")
			}
			var rest [][]byte
			for _, pc := range cs.PeerCertificates[1:] {
				rest = append(rest, pc.Raw)
			}
			if _, err := verifyChain(m, cs.PeerCertificates[0], rest, x509.ExtKeyUsageServerAuth); err != nil {
				return classify(err)
			}
			id, err := IdentityOf(cs.PeerCertificates[0])
			if err != nil {
				return err
			}
			if id.Cluster != cluster {
				return unauthenticated(ErrUnexpectedIdentity, "%s is not of cluster %q", id, cluster)
			}
			if verify != nil {
				if err := verify(id); err != nil {
					return unauthenticated(ErrUnexpectedIdentity, "%s: %v", id, err)
				}
			}
			return nil
		},
	}
	if cert != nil {
		c.Certificates = []tls.Certificate{*cert}
	}
	return c
}

// ClusterOfCAs returns the cluster (trust domain) the CA certificates
// sign for, from their identity URI (spiffe://<cluster>); an error when
// there is none, one is not a CA of a cluster, or they disagree.
func ClusterOfCAs(cas []*x509.Certificate) (string, error) {
	cluster := ""
	for _, c := range cas {
		if !c.IsCA || len(c.URIs) != 1 || c.URIs[0].Scheme != "spiffe" || c.URIs[0].Host == "" {
			return "", fmt.Errorf("pki: %s is not a cluster CA", c.Subject)
		}
		if cluster != "" && c.URIs[0].Host != cluster {
			return "", fmt.Errorf("pki: CAs of clusters %q and %q", cluster, c.URIs[0].Host)
		}
		cluster = c.URIs[0].Host
	}
	if cluster == "" {
		return "", errors.New("pki: no CA certificate")
	}
	return cluster, nil
}
