package pki_test

import (
	"errors"
	"testing"

	"github.com/cellplane/cellplane/internal/pki"
)

// TestServerCertIfGiven: a server of ServerTLSConfigCertIfGiven completes
// a handshake without a client certificate (the authoriser decides) and
// still refuses a certificate that does not verify; a client of
// ClientTLSConfigFromCAs (no certificate of its own) accepts only the
// identity it expects, of the CAs' cluster.
func TestServerCertIfGiven(t *testing.T) {
	ca := newCA(t)
	node := newParty(t, ca, pki.NodeIdentity(cluster, "eu", "c1", "n1"), nil)
	cell := func(want string) pki.VerifyFunc {
		return func(id pki.Identity) error {
			if id.Kind != pki.KindNode || id.Cell != want {
				return errors.New("not a node of " + want)
			}
			return nil
		}
	}
	srv := node.src.ServerTLSConfigCertIfGiven(nil)

	if serr, cerr := handshake(t, srv, pki.ClientTLSConfigFromCAs(ca.Bundle, cluster, nil, cell("c1"))); serr != nil || cerr != nil {
		t.Fatalf("no client certificate, the right cell: server %v, client %v", serr, cerr)
	}
	if _, cerr := handshake(t, srv, pki.ClientTLSConfigFromCAs(ca.Bundle, cluster, nil, cell("c2"))); cerr == nil {
		t.Fatal("a node of c1 accepted as a node of c2")
	}
	if _, cerr := handshake(t, srv, pki.ClientTLSConfigFromCAs(ca.Bundle, "prod", nil, nil)); cerr == nil {
		t.Fatal("a node of cluster test accepted for cluster prod")
	}
	other := newCA(t)
	if _, cerr := handshake(t, srv, pki.ClientTLSConfigFromCAs(other.Bundle, cluster, nil, nil)); cerr == nil {
		t.Fatal("a node of another CA accepted")
	}
	// A client certificate of another CA is still refused by the server.
	stranger := newParty(t, other, pki.ClientIdentity(cluster, "acme"), nil)
	if serr, _ := handshake(t, srv, stranger.src.ClientTLSConfig(nil)); serr == nil {
		t.Fatal("a client certificate of another CA accepted")
	}
	// The strict server still requires one.
	if serr, _ := handshake(t, node.src.ServerTLSConfig(nil), pki.ClientTLSConfigFromCAs(ca.Bundle, cluster, nil, nil)); !errors.Is(serr, pki.ErrNoCertificate) {
		t.Fatalf("strict server without a client certificate: %v", serr)
	}
	if c, err := pki.ClusterOfCAs(ca.Bundle); err != nil || c != cluster {
		t.Fatalf("ClusterOfCAs = %q, %v", c, err)
	}
	if _, err := pki.ClusterOfCAs(append(ca.Bundle, mustCA(t, "prod").Cert)); err == nil {
		t.Fatal("ClusterOfCAs accepted two clusters")
	}
}

func mustCA(t *testing.T, cluster string) *pki.CA {
	t.Helper()
	ca, err := pki.NewCA(cluster, 3600e9)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}
