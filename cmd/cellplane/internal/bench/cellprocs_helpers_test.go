package bench

import (
	"crypto/tls"
	"crypto/x509"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/cellplane/cellplane/internal/pki"
)

// newTestHTTPS is the scrape client of procEnv, for in-process tests.
func newTestHTTPS(bp *benchPKI) (*http.Client, error) {
	cert, key := leafFiles(bp.Dir, pki.RouterIdentity(benchPKICluster, "bench"))
	pair, err := tls.LoadX509KeyPair(cert, key)
	if err != nil {
		return nil, err
	}
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true,
		TLSClientConfig: &tls.Config{Certificates: []tls.Certificate{pair}, RootCAs: caPool(bp)}}}, nil
}

func caPool(bp *benchPKI) *x509.CertPool {
	pool := x509.NewCertPool()
	if b, err := os.ReadFile(filepath.Join(bp.Dir, pki.CACertFile)); err == nil {
		pool.AppendCertsFromPEM(b)
	}
	return pool
}

// noClientCert trusts the cluster CA but presents no certificate.
func noClientCert(bp *benchPKI) *tls.Config {
	return &tls.Config{RootCAs: caPool(bp), ServerName: "127.0.0.1"}
}

func tlsDial(addr string, cfg *tls.Config) (*tls.Conn, error) {
	d := &net.Dialer{Timeout: 5 * time.Second}
	c, err := tls.DialWithDialer(d, "tcp", addr, cfg)
	if err != nil {
		return nil, err
	}
	return c, nil
}
