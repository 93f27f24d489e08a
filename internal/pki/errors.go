package pki

import (
	"crypto/x509"
	"errors"
	"fmt"

	"github.com/cellplane/cellplane/internal/cperr"
)

// Sentinels for errors.Is. Errors about a peer (from a handshake, from
// PeerIdentity or IdentityFromState) wrap one of them and also a
// cperr UNAUTHENTICATED error, so internal/rpcerr maps them to
// codes.Unauthenticated without a table of its own.
var (
	// ErrNoCertificate: the peer presented no certificate (or the
	// connection is not TLS).
	ErrNoCertificate = errors.New("pki: no peer certificate")
	// ErrExpired: the peer's certificate (or its CA) is expired or not yet
	// valid.
	ErrExpired = errors.New("pki: certificate expired or not yet valid")
	// ErrUnknownCA: the peer's certificate is not signed by a CA of the
	// current trusted bundle.
	ErrUnknownCA = errors.New("pki: certificate signed by an unknown CA")
	// ErrKeyUsage: the peer's certificate is not valid for its role in the
	// handshake (an operator certificate presented by a server), or it is
	// otherwise invalid.
	ErrKeyUsage = errors.New("pki: certificate not valid for this use")
	// ErrNoURISAN: the peer's certificate carries no URI SAN (or more than
	// one).
	ErrNoURISAN = errors.New("pki: certificate has no identity URI SAN")
	// ErrBadIdentity: an identity URI or Identity is malformed.
	ErrBadIdentity = errors.New("pki: bad identity")
	// ErrUnexpectedIdentity: the peer's identity is valid but not one this
	// side accepts (another cluster, or refused by a VerifyFunc).
	ErrUnexpectedIdentity = errors.New("pki: unexpected peer identity")
	// ErrExists: a certificate or key file exists and overwriting was not
	// asked for. It comes with fs.ErrExist.
	ErrExists = errors.New("pki: refusing to overwrite an existing file")
)

// peerError is an error about a peer: a pki sentinel and a cperr
// UNAUTHENTICATED error at once.
type peerError struct {
	sentinel error
	cp       *cperr.Error
}

func (e *peerError) Error() string   { return e.cp.Message }
func (e *peerError) Unwrap() []error { return []error{e.sentinel, e.cp} }

// unauthenticated returns an error wrapping sentinel and an
// UNAUTHENTICATED *cperr.Error whose message is safe to show the peer.
func unauthenticated(sentinel error, format string, args ...any) error {
	msg := fmt.Sprintf(format, args...)
	if cause := sentinel.Error(); msg == "" {
		msg = cause
	} else {
		msg = cause + ": " + msg
	}
	return &peerError{sentinel: sentinel, cp: cperr.New(cperr.Unauthenticated, "%s", msg)}
}

// classify turns an x509 verification error into a peer error with the
// matching sentinel.
func classify(err error) error {
	var inv x509.CertificateInvalidError
	var unk x509.UnknownAuthorityError
	switch {
	case errors.As(err, &inv) && inv.Reason == x509.Expired:
		return unauthenticated(ErrExpired, "%s", inv.Detail)
	case errors.As(err, &unk):
		return unauthenticated(ErrUnknownCA, "")
	case errors.As(err, &inv) && inv.Reason == x509.IncompatibleUsage:
		return unauthenticated(ErrKeyUsage, "wrong extended key usage")
	default:
		return unauthenticated(ErrKeyUsage, "%v", err)
	}
}
