package pki

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// File names in a certs directory.
const (
	CACertFile = "ca.crt" // the trusted CA bundle: one CA, or the new and the old one during a rotation
	CAKeyFile  = "ca.key" // the key of the CA that signs (the first certificate of ca.crt); only where certificates are made
)

// Default lifetimes.
const (
	DefaultCALifetime        = 10 * 365 * 24 * time.Hour
	DefaultComponentLifetime = 365 * 24 * time.Hour
	DefaultOperatorLifetime  = 30 * 24 * time.Hour // operators and clients: shorter, they leave laptops
	// backdate is how far before now a certificate becomes valid, so a
	// peer whose clock is a little behind accepts it.
	backdate = 5 * time.Minute
)

// DefaultLifetime returns the default leaf lifetime for a kind.
func DefaultLifetime(k Kind) time.Duration {
	if k.Component() {
		return DefaultComponentLifetime
	}
	return DefaultOperatorLifetime
}

// CA is a cluster's certificate authority: a self-signed certificate with
// the cluster's trust-domain URI (spiffe://<cluster>) and its key.
//
// Keys are ECDSA P-256: every TLS stack the platform meets (Go, etcd,
// browsers and curl for MCP over HTTPS, HSMs and cloud KMSes for a CA key)
// supports it, and Go's implementation is constant-time and fast. Ed25519
// would be as good in Go but is not accepted by every browser and KMS.
type CA struct {
	Cert *x509.Certificate
	Key  crypto.Signer
	// Bundle is the whole trusted bundle the CA was loaded from (Cert
	// first); NewCA sets it to Cert alone.
	Bundle []*x509.Certificate
}

// Cluster returns the cluster (trust domain) the CA signs for.
func (ca *CA) Cluster() string {
	if len(ca.Cert.URIs) == 1 {
		return ca.Cert.URIs[0].Host
	}
	return ""
}

// NewCA creates a CA for cluster, valid for lifetime from now (backdated
// a few minutes for clock skew).
func NewCA(cluster string, lifetime time.Duration) (*CA, error) {
	if !segmentOK(cluster) {
		return nil, fmt.Errorf("%w: cluster %q", ErrBadIdentity, cluster)
	}
	if lifetime <= 0 {
		return nil, fmt.Errorf("pki: CA lifetime must be positive, got %s", lifetime)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("pki: generate CA key: %w", err)
	}
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "cellplane CA " + cluster, Organization: []string{"cellplane"}},
		NotBefore:             now.Add(-backdate),
		NotAfter:              now.Add(lifetime),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true, // it signs leaves only
		URIs:                  []*url.URL{{Scheme: Scheme, Host: cluster}},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("pki: create CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("pki: parse CA certificate: %w", err)
	}
	return &CA{Cert: cert, Key: key, Bundle: []*x509.Certificate{cert}}, nil
}

// LeafRequest asks a CA for a certificate.
type LeafRequest struct {
	Identity Identity
	// Hosts are DNS names and IP addresses put in the certificate's SANs,
	// for TLS clients that check host names (etcd clients, curl, a
	// browser). Platform components check the identity URI instead.
	Hosts []string
	// Lifetime is how long the certificate is valid; 0 means
	// DefaultLifetime(Identity.Kind). It is cut to the CA's expiry.
	Lifetime time.Duration
	// NotBefore is when it becomes valid; zero means a few minutes ago
	// (clock skew). Tests set it in the past to make expired certificates.
	NotBefore time.Time
}

// Leaf is an issued certificate and its key.
type Leaf struct {
	Cert *x509.Certificate
	Key  crypto.Signer
}

// Issue signs a certificate for req.Identity, which must belong to the
// CA's cluster. Components get server and client auth; operators and
// clients client auth only.
func (ca *CA) Issue(req LeafRequest) (*Leaf, error) {
	id := req.Identity
	if err := id.Validate(); err != nil {
		return nil, err
	}
	if c := ca.Cluster(); id.Cluster != c {
		return nil, fmt.Errorf("%w: identity of cluster %q, CA of cluster %q", ErrBadIdentity, id.Cluster, c)
	}
	lifetime := req.Lifetime
	if lifetime == 0 {
		lifetime = DefaultLifetime(id.Kind)
	}
	if lifetime < 0 {
		return nil, fmt.Errorf("pki: lifetime must be positive, got %s", lifetime)
	}
	notBefore := req.NotBefore
	if notBefore.IsZero() {
		notBefore = time.Now().Add(-backdate)
	}
	notAfter := notBefore.Add(lifetime)
	if notAfter.After(ca.Cert.NotAfter) {
		notAfter = ca.Cert.NotAfter // a leaf does not outlive its CA
	}
	uri, err := url.Parse(id.String())
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadIdentity, err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("pki: generate key: %w", err)
	}
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	usage := []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	if id.Kind.Component() {
		usage = append(usage, x509.ExtKeyUsageServerAuth)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: id.FileName(), Organization: []string{"cellplane"}},
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           usage,
		BasicConstraintsValid: true,
		URIs:                  []*url.URL{uri},
	}
	for _, h := range req.Hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else if h != "" {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, key.Public(), ca.Key)
	if err != nil {
		return nil, fmt.Errorf("pki: sign certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("pki: parse certificate: %w", err)
	}
	return &Leaf{Cert: cert, Key: key}, nil
}

// newSerial returns a random 128-bit positive serial number.
func newSerial() (*big.Int, error) {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return nil, fmt.Errorf("pki: serial number: %w", err)
	}
	return n.Add(n, big.NewInt(1)), nil
}

// Fingerprint returns the SHA-256 of a certificate's DER, in hex.
func Fingerprint(c *x509.Certificate) string {
	sum := sha256.Sum256(c.Raw)
	return hex.EncodeToString(sum[:])
}

// WriteCA writes ca's bundle to dir/ca.crt and its key to dir/ca.key
// (0600), creating dir (0700) if needed. Unless overwrite is set it
// refuses (ErrExists) when either file exists.
func WriteCA(dir string, ca *CA, overwrite bool) error {
	return writePair(dir, CACertFile, CAKeyFile, ca.Bundle, ca.Key, overwrite)
}

// WriteLeaf writes a leaf to dir/<name>.crt and dir/<name>.key (0600).
// Unless overwrite is set it refuses (ErrExists) when either file exists.
// Each file is replaced atomically (written aside, then renamed), so a
// Source polling dir never reads half a file.
func WriteLeaf(dir, name string, leaf *Leaf, overwrite bool) error {
	if !segmentOK(name) {
		return fmt.Errorf("pki: file name %q must be 1-128 characters of [A-Za-z0-9._-]", name)
	}
	return writePair(dir, name+".crt", name+".key", []*x509.Certificate{leaf.Cert}, leaf.Key, overwrite)
}

// writePair writes certs and key. The key goes first: a Source that reads
// between the two writes sees the old certificate with the new key, which
// do not match, and keeps its current material until the next poll.
func writePair(dir, certName, keyName string, certs []*x509.Certificate, key crypto.Signer, overwrite bool) error {
	certPath, keyPath := filepath.Join(dir, certName), filepath.Join(dir, keyName)
	if !overwrite {
		for _, p := range []string{certPath, keyPath} {
			if _, err := os.Lstat(p); err == nil {
				return &existsError{path: p}
			}
		}
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("pki: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return fmt.Errorf("pki: marshal key: %w", err)
	}
	if err := writeAtomic(keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		return err
	}
	return writeAtomic(certPath, EncodeCerts(certs...), 0o644)
}

// existsError is ErrExists and fs.ErrExist for one path.
type existsError struct{ path string }

func (e *existsError) Error() string   { return ErrExists.Error() + " " + e.path }
func (e *existsError) Unwrap() []error { return []error{ErrExists, fs.ErrExist} }

// EncodeCerts returns certs as concatenated PEM blocks.
func EncodeCerts(certs ...*x509.Certificate) []byte {
	var b bytes.Buffer
	for _, c := range certs {
		_ = pem.Encode(&b, &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
	}
	return b.Bytes()
}

// writeAtomic writes data to path through a temporary file in the same
// directory and a rename.
func writeAtomic(path string, data []byte, perm os.FileMode) (err error) {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("pki: %w", err)
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	if err := f.Chmod(perm); err != nil {
		return fmt.Errorf("pki: %w", err)
	}
	if _, err := f.Write(data); err != nil {
		return fmt.Errorf("pki: %w", err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("pki: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("pki: %w", err)
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return fmt.Errorf("pki: %w", err)
	}
	return nil
}

// LoadCA reads dir/ca.crt and dir/ca.key. The signing certificate is the
// one of the bundle whose public key matches the key; the others (an old
// CA during a rotation) stay in Bundle.
func LoadCA(dir string) (*CA, error) {
	certs, err := ReadCerts(filepath.Join(dir, CACertFile))
	if err != nil {
		return nil, err
	}
	key, err := readKey(filepath.Join(dir, CAKeyFile))
	if err != nil {
		return nil, err
	}
	ca := &CA{Key: key}
	for _, c := range certs {
		if ca.Cert == nil && samePublicKey(c.PublicKey, key.Public()) {
			ca.Cert = c
		}
	}
	if ca.Cert == nil {
		return nil, fmt.Errorf("pki: %s holds no certificate for the key in %s", filepath.Join(dir, CACertFile), CAKeyFile)
	}
	if !ca.Cert.IsCA {
		return nil, fmt.Errorf("pki: %s is not a CA certificate", filepath.Join(dir, CACertFile))
	}
	ca.Bundle = append([]*x509.Certificate{ca.Cert}, without(certs, ca.Cert)...)
	return ca, nil
}

// RotateCA starts a CA rotation in dir: it creates a new CA for the same
// cluster and writes ca.key = the new key and ca.crt = the new CA followed
// by the old one(s), so every component that reloads ca.crt trusts both
// while leaves are reissued. FinishRotation ends it.
func RotateCA(dir string, lifetime time.Duration) (*CA, error) {
	old, err := LoadCA(dir)
	if err != nil {
		return nil, err
	}
	ca, err := NewCA(old.Cluster(), lifetime)
	if err != nil {
		return nil, err
	}
	ca.Bundle = append(ca.Bundle, old.Bundle...)
	if err := WriteCA(dir, ca, true); err != nil {
		return nil, err
	}
	return ca, nil
}

// FinishRotation ends a CA rotation in dir: ca.crt keeps only the CA of
// ca.key. Run it (and distribute ca.crt) once every leaf is reissued by
// the new CA; from then on the old CA's certificates are refused.
func FinishRotation(dir string) (*CA, error) {
	ca, err := LoadCA(dir)
	if err != nil {
		return nil, err
	}
	ca.Bundle = ca.Bundle[:1]
	if err := writeAtomic(filepath.Join(dir, CACertFile), EncodeCerts(ca.Cert), 0o644); err != nil {
		return nil, err
	}
	return ca, nil
}

func without(certs []*x509.Certificate, c *x509.Certificate) []*x509.Certificate {
	var out []*x509.Certificate
	for _, x := range certs {
		if !x.Equal(c) {
			out = append(out, x)
		}
	}
	return out
}

func samePublicKey(a, b crypto.PublicKey) bool {
	k, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && k.Equal(b)
}

// ReadCerts reads every CERTIFICATE block of a PEM file.
func ReadCerts(path string) ([]*x509.Certificate, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("pki: %w", err)
	}
	var certs []*x509.Certificate
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("pki: %s: %w", path, err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, fmt.Errorf("pki: %s holds no certificate", path)
	}
	return certs, nil
}

// readKey reads a PKCS#8 (or SEC 1 EC) private key from a PEM file.
func readKey(path string) (crypto.Signer, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("pki: %w", err)
	}
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, fmt.Errorf("pki: %s holds no PEM key", path)
	}
	var key any
	switch block.Type {
	case "EC PRIVATE KEY":
		key, err = x509.ParseECPrivateKey(block.Bytes)
	default:
		key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	}
	if err != nil {
		return nil, fmt.Errorf("pki: %s: %w", path, err)
	}
	s, ok := key.(crypto.Signer)
	if !ok {
		return nil, errors.New("pki: " + path + ": key cannot sign")
	}
	return s, nil
}

// IdentityOf returns the identity in a certificate's URI SAN. Its errors
// wrap ErrNoURISAN or ErrBadIdentity (and cperr UNAUTHENTICATED).
func IdentityOf(c *x509.Certificate) (Identity, error) {
	if len(c.URIs) != 1 {
		return Identity{}, unauthenticated(ErrNoURISAN, "want exactly one URI SAN, found %d", len(c.URIs))
	}
	id, err := ParseIdentity(c.URIs[0].String())
	if err != nil {
		return Identity{}, unauthenticated(ErrBadIdentity, "%s", strings.TrimPrefix(err.Error(), ErrBadIdentity.Error()+": "))
	}
	return id, nil
}
