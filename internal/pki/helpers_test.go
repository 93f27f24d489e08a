package pki_test

import (
	"context"
	"crypto/tls"
	"math/big"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/peer"

	"github.com/cellplane/cellplane/internal/dial"
	"github.com/cellplane/cellplane/internal/pki"
	"github.com/cellplane/cellplane/internal/testutil"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const cluster = "test"

// newCA creates a CA for cluster, failing the test on error.
func newCA(t *testing.T) *pki.CA {
	t.Helper()
	ca, err := pki.NewCA(cluster, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

// install issues a leaf of ca for req into dir (replacing what is there)
// and returns it.
func install(t *testing.T, ca *pki.CA, dir string, req pki.LeafRequest) *pki.Leaf {
	t.Helper()
	leaf, err := ca.Issue(req)
	if err != nil {
		t.Fatal(err)
	}
	if err := pki.WriteLeaf(dir, req.Identity.FileName(), leaf, true); err != nil {
		t.Fatal(err)
	}
	return leaf
}

// trust writes cas as dir/ca.crt, atomically.
func trust(t *testing.T, dir string, cas ...*pki.CA) {
	t.Helper()
	var data []byte
	for _, ca := range cas {
		data = append(data, pki.EncodeCerts(ca.Cert)...)
	}
	tmp := filepath.Join(dir, ".ca.crt.tmp")
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, pki.CACertFile)); err != nil {
		t.Fatal(err)
	}
}

// party is a directory with a CA bundle and one identity's certificate,
// and the Source reading it.
type party struct {
	dir string
	id  pki.Identity
	src *pki.Source
}

// newParty makes dir with ca trusted and a certificate of ca for id.
func newParty(t *testing.T, ca *pki.CA, id pki.Identity, mod func(*pki.LeafRequest)) *party {
	t.Helper()
	p := &party{dir: t.TempDir(), id: id}
	trust(t, p.dir, ca)
	req := pki.LeafRequest{Identity: id, Hosts: []string{"127.0.0.1", "localhost"}}
	if mod != nil {
		mod(&req)
	}
	install(t, ca, p.dir, req)
	cfg := pki.DirConfig(p.dir, id.FileName())
	cfg.ReloadInterval = 0 // the tests reload explicitly
	cfg.Logger = testutil.Logger(t).With("party", id.String())
	src, err := pki.NewSource(cfg)
	if err != nil {
		t.Fatal(err)
	}
	p.src = src
	return p
}

// seen records what a server saw of its callers.
type seen struct {
	mu     sync.Mutex
	calls  int
	id     pki.Identity
	serial *big.Int
	err    error
}

func (s *seen) get() (int, pki.Identity, *big.Int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls, s.id, s.serial, s.err
}

// serve starts a gRPC server with ServerCredentials(src) and the health
// service on 127.0.0.1; an interceptor records PeerIdentity of each call.
func serve(t *testing.T, src *pki.Source) (string, *seen) {
	t.Helper()
	s := &seen{}
	srv := grpc.NewServer(grpc.Creds(pki.ServerCredentials(src)),
		grpc.UnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			id, err := pki.PeerIdentity(ctx)
			s.mu.Lock()
			s.calls++
			s.id, s.err = id, err
			if p, ok := peerTLS(ctx); ok && len(p.PeerCertificates) > 0 {
				s.serial = p.PeerCertificates[0].SerialNumber
			}
			s.mu.Unlock()
			if err != nil {
				return nil, err
			}
			return h(ctx, req)
		}))
	healthpb.RegisterHealthServer(srv, health.NewServer())
	l := testutil.Listen(t)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(l)
	}()
	t.Cleanup(func() {
		srv.Stop()
		<-done
	})
	return l.Addr().String(), s
}

// check dials addr with creds through internal/dial, calls Health.Check
// and returns the serial of the server's certificate.
func check(ctx context.Context, addr string, creds credentials.TransportCredentials) (*big.Int, error) {
	cfg := dial.DefaultConfig()
	cfg.Credentials = creds
	conn, err := dial.New(addr, cfg)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	return checkConn(ctx, conn)
}

// checkConn calls Health.Check on conn and returns the serial of the
// server's certificate.
func checkConn(ctx context.Context, conn *grpc.ClientConn) (*big.Int, error) {
	var p peerInfo
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{}, grpc.Peer(&p.Peer)); err != nil {
		return nil, err
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(info.State.PeerCertificates) == 0 {
		return nil, nil
	}
	return info.State.PeerCertificates[0].SerialNumber, nil
}

// handshake runs one TLS handshake over loopback TCP between a server
// with scfg and a client with ccfg, and returns each side's error.
func handshake(t *testing.T, scfg, ccfg *tls.Config) (serverErr, clientErr error) {
	t.Helper()
	l := testutil.Listen(t)
	ctx := testutil.Context(t, 10*time.Second)
	errc := make(chan error, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			errc <- err
			return
		}
		defer c.Close()
		tc := tls.Server(c, scfg)
		err = tc.HandshakeContext(ctx)
		if err == nil {
			// In TLS 1.3 the server verifies the client's certificate
			// after the client finished: read to let the client learn
			// of a refusal.
			_, _ = tc.Write([]byte{1})
		}
		errc <- err
	}()
	d := tls.Dialer{Config: ccfg}
	c, clientErr := d.DialContext(ctx, "tcp", l.Addr().String())
	if clientErr == nil {
		buf := make([]byte, 1)
		_, clientErr = c.Read(buf)
		c.Close()
	}
	return <-errc, clientErr
}

// peerInfo receives a call's peer (grpc.Peer).
type peerInfo struct{ peer.Peer }

// peerTLS returns the TLS state of a server call's connection.
func peerTLS(ctx context.Context) (tls.ConnectionState, bool) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return tls.ConnectionState{}, false
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	return info.State, ok
}
