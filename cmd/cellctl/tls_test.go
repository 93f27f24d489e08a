package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/cellplane/cellplane/internal/rpcerr"
	"github.com/cellplane/cellplane/internal/testutil"
	cpv1 "github.com/cellplane/cellplane/proto/cellplane/controlplane/v1"
)

// regionsOnly is a ControlPlaneService that only creates and lists regions,
// in memory: enough to test cellctl's transport (TLS), which the real
// control plane's test harness (cptest) does not serve. Everything else
// is tested against the real control plane (TestControlPlane).
type regionsOnly struct {
	cpv1.UnimplementedControlPlaneServiceServer

	mu      sync.Mutex
	regions []*cpv1.Region
}

func (s *regionsOnly) CreateRegion(_ context.Context, req *cpv1.CreateRegionRequest) (*cpv1.CreateRegionResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := &cpv1.Region{Name: req.GetName(), Description: req.GetDescription(), CreateTime: timestamppb.Now()}
	s.regions = append(s.regions, r)
	return &cpv1.CreateRegionResponse{Region: r}, nil
}

func (s *regionsOnly) ListRegions(context.Context, *cpv1.ListRegionsRequest) (*cpv1.ListRegionsResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return &cpv1.ListRegionsResponse{Regions: s.regions}, nil
}

// TestTLSTransport talks to a server that serves TLS with a self-signed
// certificate: --tls-ca makes cellctl use TLS; without it the call fails
// with one line.
func TestTLSTransport(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "cellplane test control plane"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IsCA:                  true,
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	notPEM := filepath.Join(t.TempDir(), "bad.pem")
	if err := os.WriteFile(notPEM, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}

	lis := testutil.Listen(t)
	creds := credentials.NewTLS(&tls.Config{
		Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}},
		MinVersion:   tls.VersionTLS12,
	})
	srv := grpc.NewServer(grpc.Creds(creds), grpc.ChainUnaryInterceptor(rpcerr.UnaryServerInterceptor()))
	cpv1.RegisterControlPlaneServiceServer(srv, &regionsOnly{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(lis)
	}()
	t.Cleanup(func() {
		srv.Stop()
		<-done
	})
	addr := lis.Addr().String()

	if r := cp(t, addr, "--tls-ca", ca, "region", "create", "eu-west-1"); r.code != 0 || r.out != "region eu-west-1 created\n" {
		t.Errorf("with --tls-ca: %+v", r)
	}
	if r := cp(t, addr, "--tls-ca", ca, "region", "list", "-o", "json"); r.code != 0 || !strings.Contains(r.out, `"name": "eu-west-1"`) {
		t.Errorf("list with --tls-ca: %+v", r)
	}
	r := cp(t, addr, "--timeout", "2s", "region", "list")
	if r.code != 1 || strings.Count(r.err, "\n") != 1 {
		t.Errorf("plaintext to a TLS server: %+v, want exit 1 and one line", r)
	}
	r = cp(t, addr, "--tls-ca", notPEM, "region", "list")
	if r.code != 1 || !strings.Contains(r.err, "no PEM certificate") {
		t.Errorf("--tls-ca without a certificate: %+v", r)
	}
}
