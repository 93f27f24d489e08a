package pki_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/cellplane/cellplane/internal/cperr"
	"github.com/cellplane/cellplane/internal/dial"
	"github.com/cellplane/cellplane/internal/pki"
	"github.com/cellplane/cellplane/internal/rpcerr"
	"github.com/cellplane/cellplane/internal/testutil"
)

var (
	nodeID   = pki.NodeIdentity(cluster, "eu", "c1", "n1")
	routerID = pki.RouterIdentity(cluster, "r1")
	opID     = pki.OperatorIdentity(cluster, pki.RoleAdmin, "alice")
)

func expired(r *pki.LeafRequest) {
	r.NotBefore = time.Now().Add(-2 * time.Hour)
	r.Lifetime = time.Hour
}

// noURICert returns a client certificate signed by ca without a URI SAN.
func noURICert(t *testing.T, ca *pki.CA) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "anonymous"},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, key.Public(), ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// TestHandshake checks each refusal at the TLS layer, with its sentinel,
// on the side that refuses.
func TestHandshake(t *testing.T) {
	ca, otherCA := newCA(t), newCA(t)
	foreignCA, err := pki.NewCA("elsewhere", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	server := newParty(t, ca, nodeID, nil)
	client := newParty(t, ca, routerID, nil)
	wantNode := pki.ExpectKinds(pki.KindNode)

	// A client certificate from another CA, with a bundle that trusts the
	// server.
	stranger := newParty(t, otherCA, routerID, nil)
	trust(t, stranger.dir, ca)
	if err := stranger.src.Reload(); err != nil {
		t.Fatal(err)
	}
	// A server of another cluster that the client's bundle trusts.
	foreign := newParty(t, foreignCA, pki.NodeIdentity("elsewhere", "eu", "c1", "n1"), nil)
	trustsForeign := newParty(t, ca, routerID, nil)
	trust(t, trustsForeign.dir, ca, foreignCA)
	if err := trustsForeign.src.Reload(); err != nil {
		t.Fatal(err)
	}
	bare := func(certs ...tls.Certificate) *tls.Config {
		return &tls.Config{MinVersion: tls.VersionTLS13, InsecureSkipVerify: true, Certificates: certs}
	}

	tests := []struct {
		name                 string
		server, client       *tls.Config
		wantServer, wantClnt error // nil: that side succeeds
	}{
		{"valid", server.src.ServerTLSConfig(nil), client.src.ClientTLSConfig(wantNode), nil, nil},
		{"no client certificate", server.src.ServerTLSConfig(nil), bare(), pki.ErrNoCertificate, nil},
		{"client of another CA", server.src.ServerTLSConfig(nil), stranger.src.ClientTLSConfig(wantNode), pki.ErrUnknownCA, nil},
		{"expired client", server.src.ServerTLSConfig(nil), newParty(t, ca, routerID, expired).src.ClientTLSConfig(wantNode), pki.ErrExpired, nil},
		{"client without URI SAN", server.src.ServerTLSConfig(nil), bare(noURICert(t, ca)), pki.ErrNoURISAN, nil},
		{"client refused by the server's VerifyFunc", server.src.ServerTLSConfig(pki.ExpectKinds(pki.KindControlPlane)), client.src.ClientTLSConfig(wantNode), pki.ErrUnexpectedIdentity, nil},
		{"server of an unexpected kind", server.src.ServerTLSConfig(nil), client.src.ClientTLSConfig(pki.ExpectKinds(pki.KindRouter)), nil, pki.ErrUnexpectedIdentity},
		{"server with a client-only certificate", newParty(t, ca, opID, nil).src.ServerTLSConfig(nil), client.src.ClientTLSConfig(nil), nil, pki.ErrKeyUsage},
		{"server of another CA", newParty(t, otherCA, nodeID, nil).src.ServerTLSConfig(nil), client.src.ClientTLSConfig(wantNode), nil, pki.ErrUnknownCA},
		{"expired server", newParty(t, ca, nodeID, expired).src.ServerTLSConfig(nil), client.src.ClientTLSConfig(wantNode), nil, pki.ErrExpired},
		{"server of another cluster", foreign.src.ServerTLSConfig(nil), trustsForeign.src.ClientTLSConfig(wantNode), nil, pki.ErrUnexpectedIdentity},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			serverErr, clientErr := handshake(t, tt.server, tt.client)
			for _, side := range []struct {
				name      string
				got, want error
			}{{"server", serverErr, tt.wantServer}, {"client", clientErr, tt.wantClnt}} {
				switch {
				case side.want == nil && tt.wantServer == nil && tt.wantClnt == nil && side.got != nil:
					t.Errorf("%s: %v, want success", side.name, side.got)
				case side.want != nil && !errors.Is(side.got, side.want):
					t.Errorf("%s: %v, want %v", side.name, side.got, side.want)
				case side.want != nil && !errors.Is(side.got, cperr.ErrUnauthenticated):
					t.Errorf("%s: %v does not wrap cperr UNAUTHENTICATED", side.name, side.got)
				}
			}
			if tt.wantServer == nil && tt.wantClnt == nil {
				return
			}
			if serverErr == nil && clientErr == nil {
				t.Errorf("both sides succeeded, want a refusal")
			}
		})
	}
}

func TestPeerIdentityWithoutTLS(t *testing.T) {
	_, err := pki.PeerIdentity(context.Background())
	if !errors.Is(err, pki.ErrNoCertificate) || !errors.Is(err, cperr.ErrUnauthenticated) {
		t.Fatalf("PeerIdentity(no peer) = %v, want ErrNoCertificate and UNAUTHENTICATED", err)
	}
	// The gRPC edge maps it once, like every domain error.
	if st := status.Convert(rpcerr.ToStatus(err)); st.Code() != codes.Unauthenticated {
		t.Errorf("rpcerr.ToStatus(%v) = %v, want UNAUTHENTICATED", err, st)
	}
	_, err = pki.IdentityFromState(tls.ConnectionState{})
	if !errors.Is(err, pki.ErrNoCertificate) {
		t.Fatalf("IdentityFromState(no handshake) = %v, want ErrNoCertificate", err)
	}
}

// TestGRPC: (a) valid mTLS works and the server sees the client's
// identity; (b)-(e) every other case is refused before any call reaches
// the server.
func TestGRPC(t *testing.T) {
	ctx := testutil.Context(t, 30*time.Second)
	ca, otherCA := newCA(t), newCA(t)
	server := newParty(t, ca, nodeID, nil)
	addr, seen := serve(t, server.src)
	client := newParty(t, ca, routerID, nil)
	wantNode := pki.ExpectKinds(pki.KindNode)

	t.Run("valid", func(t *testing.T) {
		serial, err := check(ctx, addr, pki.ClientCredentials(client.src, wantNode))
		if err != nil {
			t.Fatal(err)
		}
		if serial.Cmp(server.src.Certificate().SerialNumber) != 0 {
			t.Errorf("client saw server serial %x, want %x", serial, server.src.Certificate().SerialNumber)
		}
		calls, id, clientSerial, err := seen.get()
		if calls != 1 || err != nil || id != routerID || clientSerial.Cmp(client.src.Certificate().SerialNumber) != 0 {
			t.Errorf("server saw %d calls, %v (%v) serial %x; want 1 call from %v serial %x", calls, id, err, clientSerial, routerID, client.src.Certificate().SerialNumber)
		}
	})

	stranger := newParty(t, otherCA, routerID, nil)
	trust(t, stranger.dir, ca)
	if err := stranger.src.Reload(); err != nil {
		t.Fatal(err)
	}
	refused := []struct {
		name  string
		creds credentials.TransportCredentials
	}{
		{"no client certificate", credentials.NewTLS(&tls.Config{MinVersion: tls.VersionTLS13, InsecureSkipVerify: true})},
		{"client of another CA", pki.ClientCredentials(stranger.src, wantNode)},
		{"expired client", pki.ClientCredentials(newParty(t, ca, routerID, expired).src, wantNode)},
		{"server of an unexpected kind", pki.ClientCredentials(client.src, pki.ExpectKinds(pki.KindControlPlane))},
	}
	for _, tt := range refused {
		t.Run(tt.name, func(t *testing.T) {
			before, _, _, _ := seen.get()
			_, err := check(ctx, addr, tt.creds)
			if status.Code(err) != codes.Unavailable {
				t.Errorf("call = %v, want UNAVAILABLE (handshake refused)", err)
			}
			if after, _, _, _ := seen.get(); after != before {
				t.Errorf("the server handled %d calls, want none", after-before)
			}
		})
	}
}

// TestRotationUnderTraffic replaces the leaf certificates, then the CA
// (both CAs trusted during the switch, then only the new one) while a
// client calls without pause, each call on a new connection (so each
// makes a handshake) and on one long-lived connection. No call may fail:
// files are replaced atomically and each Source reloads after its files
// are complete, in an order where each side trusts what the other
// presents. New handshakes present the new certificates.
func TestRotationUnderTraffic(t *testing.T) {
	ctx := testutil.Context(t, 60*time.Second)
	ca1 := newCA(t)
	server := newParty(t, ca1, nodeID, nil)
	addr, seen := serve(t, server.src)
	client := newParty(t, ca1, routerID, nil)
	creds := pki.ClientCredentials(client.src, pki.ExpectKinds(pki.KindNode))

	cfg := dial.DefaultConfig()
	cfg.Credentials = creds
	longLived, err := dial.New(addr, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer longLived.Close()

	var (
		mu         sync.Mutex
		lastSerial *big.Int
		failures   []error
		calls      atomic.Int64
	)
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			default:
			}
			serial, err := check(ctx, addr, creds)
			_, lerr := checkConn(ctx, longLived)
			calls.Add(1)
			mu.Lock()
			if err != nil {
				failures = append(failures, err)
			}
			if lerr != nil {
				failures = append(failures, lerr)
			}
			if err == nil {
				lastSerial = serial
			}
			mu.Unlock()
		}
	}()
	halt := sync.OnceFunc(func() {
		close(stop)
		<-done
	})
	defer halt()
	// seesServer waits until new handshakes present the server's current
	// certificate, and the server sees the client's current one, with a
	// few more calls after the change.
	sees := func(step string) {
		t.Helper()
		wantServer, wantClient := server.src.Certificate().SerialNumber, client.src.Certificate().SerialNumber
		from := calls.Load()
		testutil.Eventually(t, 20*time.Second, func() error {
			mu.Lock()
			got := lastSerial
			mu.Unlock()
			_, _, gotClient, _ := seen.get()
			switch {
			case got == nil || got.Cmp(wantServer) != 0:
				return errors.New(step + ": client does not see the new server certificate yet")
			case gotClient == nil || gotClient.Cmp(wantClient) != 0:
				return errors.New(step + ": server does not see the new client certificate yet")
			case calls.Load() < from+3:
				return errors.New(step + ": too few calls yet")
			}
			return nil
		})
	}
	reload := func(ps ...*party) {
		t.Helper()
		for _, p := range ps {
			if err := p.src.Reload(); err != nil {
				t.Fatal(err)
			}
		}
	}
	sees("start")
	first := server.src.Certificate().SerialNumber

	// 1. New leaves from the same CA.
	install(t, ca1, server.dir, pki.LeafRequest{Identity: nodeID})
	install(t, ca1, client.dir, pki.LeafRequest{Identity: routerID})
	reload(server, client)
	if server.src.Certificate().SerialNumber.Cmp(first) == 0 {
		t.Fatal("the server's Source did not load the new certificate")
	}
	sees("new leaves")

	// 2. A new CA: first both trust old and new, then the leaves are
	// reissued by the new CA, then only the new CA is trusted.
	ca2 := newCA(t)
	trust(t, server.dir, ca2, ca1)
	trust(t, client.dir, ca2, ca1)
	reload(server, client)
	sees("two CAs trusted")
	install(t, ca2, server.dir, pki.LeafRequest{Identity: nodeID})
	install(t, ca2, client.dir, pki.LeafRequest{Identity: routerID})
	reload(server, client)
	sees("leaves of the new CA")
	trust(t, server.dir, ca2)
	trust(t, client.dir, ca2)
	reload(server, client)
	sees("only the new CA trusted")

	// The old CA is no longer trusted: its certificates are refused.
	old := newParty(t, ca1, routerID, nil)
	trust(t, old.dir, ca2)
	reload(old)
	if _, err := check(ctx, addr, pki.ClientCredentials(old.src, nil)); status.Code(err) != codes.Unavailable {
		t.Errorf("a client certificate of the retired CA: %v, want refused", err)
	}

	halt()
	mu.Lock()
	defer mu.Unlock()
	if len(failures) > 0 {
		t.Errorf("%d of %d calls failed during the rotation, want none; first: %v", len(failures), calls.Load(), failures[0])
	}
	t.Logf("%d calls (each: a new connection and the long-lived one) during the rotation", calls.Load())
}

// TestReloadKeepsMaterialOnError: a half-replaced pair (new key, old
// certificate) is refused by Reload and the current material stays.
func TestReloadKeepsMaterialOnError(t *testing.T) {
	ca := newCA(t)
	p := newParty(t, ca, nodeID, nil)
	before := p.src.Certificate().SerialNumber
	// A new key next to the old certificate.
	leaf, err := ca.Issue(pki.LeafRequest{Identity: nodeID})
	if err != nil {
		t.Fatal(err)
	}
	keyOnly := &pki.Leaf{Cert: p.src.Certificate(), Key: leaf.Key}
	if err := pki.WriteLeaf(p.dir, nodeID.FileName(), keyOnly, true); err != nil {
		t.Fatal(err)
	}
	if err := p.src.Reload(); err == nil {
		t.Fatal("Reload accepted a key that does not match the certificate")
	}
	if got := p.src.Certificate().SerialNumber; got.Cmp(before) != 0 {
		t.Fatalf("serial after a failed reload = %x, want %x", got, before)
	}
}

// TestPolling: with a ReloadInterval, a handshake picks up changed files
// without Reload.
func TestPolling(t *testing.T) {
	ca := newCA(t)
	p := newParty(t, ca, nodeID, nil)
	cfg := pki.DirConfig(p.dir, nodeID.FileName())
	cfg.ReloadInterval = time.Millisecond
	cfg.Logger = testutil.Logger(t)
	src, err := pki.NewSource(cfg)
	if err != nil {
		t.Fatal(err)
	}
	leaf := install(t, ca, p.dir, pki.LeafRequest{Identity: nodeID})
	testutil.Eventually(t, 10*time.Second, func() error {
		if src.Certificate().SerialNumber.Cmp(leaf.Cert.SerialNumber) != 0 {
			return errors.New("the new certificate is not loaded yet")
		}
		return nil
	})
}
