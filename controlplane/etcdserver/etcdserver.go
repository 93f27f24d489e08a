package etcdserver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/tlsutil"
	"go.etcd.io/etcd/client/pkg/v3/transport"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

// ErrAddrInUse is returned (wrapped) by Start when the client or peer
// address is already taken, usually by another etcd.
var ErrAddrInUse = errors.New("etcdserver: address already in use")

// Config configures the embedded member.
type Config struct {
	// DataDir holds the member's data (required).
	DataDir string
	// ClientURL is where clients connect (default http://127.0.0.1:7379).
	ClientURL string
	// PeerURL is the Raft peer address (default http://127.0.0.1:7380);
	// a single member has no peers but etcd binds it anyway.
	PeerURL string
	// Name is the member name (default "cellplane").
	Name string
	// UnsafeNoFsync disables fsync: for tests only, data may be lost on a
	// crash.
	UnsafeNoFsync bool
	// Logger receives etcd's logs (nil: discarded).
	Logger *slog.Logger
	// StartTimeout bounds Start's wait for readiness (default 30s).
	StartTimeout time.Duration
	// TLS, when set, makes the member serve its client and peer URLs over
	// TLS only (both https) and require a client certificate issued by a
	// CA of TLS.CAFile on both (etcd's --client-cert-auth and
	// --peer-client-cert-auth); with etcd authentication enabled, the
	// certificate's common name is the etcd user. Unset: plaintext (both
	// URLs http).
	TLS *TLSFiles
}

// TLSFiles are the PEM files of a TLS member. etcd reads the certificate
// and key at every handshake, so a rotated leaf is served without a
// restart; it reads the CA bundle once, at start, so a CA rotation puts
// both CAs in the bundle before the member restarts.
type TLSFiles struct {
	// CertFile and KeyFile are the member's certificate (server and client
	// auth: the member presents it to peers too) and key.
	CertFile, KeyFile string
	// CAFile is the bundle of CAs whose clients and peers are accepted (a
	// file, not a directory).
	CAFile string
}

// Validate reports missing files.
func (t TLSFiles) Validate() error {
	var errs []error
	for _, f := range []struct{ name, v string }{{"CertFile", t.CertFile}, {"KeyFile", t.KeyFile}, {"CAFile", t.CAFile}} {
		if f.v == "" {
			errs = append(errs, fmt.Errorf("etcdserver: TLS.%s is required", f.name))
			continue
		}
		fi, err := os.Stat(f.v)
		switch {
		case err != nil:
			errs = append(errs, fmt.Errorf("etcdserver: TLS.%s: %w", f.name, err))
		case fi.IsDir():
			errs = append(errs, fmt.Errorf("etcdserver: TLS.%s %s is a directory, want a PEM file", f.name, f.v))
		}
	}
	return errors.Join(errs...)
}

// DefaultConfig returns the defaults; DataDir must still be set.
func DefaultConfig() Config {
	return Config{
		ClientURL:    "http://127.0.0.1:7379",
		PeerURL:      "http://127.0.0.1:7380",
		Name:         "cellplane",
		StartTimeout: 30 * time.Second,
	}
}

// Validate reports a config that cannot start.
func (c Config) Validate() error {
	if c.DataDir == "" {
		return errors.New("etcdserver: DataDir is required")
	}
	if c.Name == "" {
		return errors.New("etcdserver: Name is required")
	}
	if c.StartTimeout <= 0 {
		return fmt.Errorf("etcdserver: StartTimeout %s must be positive", c.StartTimeout)
	}
	scheme := "http"
	if c.TLS != nil {
		if err := c.TLS.Validate(); err != nil {
			return err
		}
		scheme = "https" // no plaintext listener next to a TLS one
	}
	for _, u := range []struct{ name, v string }{{"ClientURL", c.ClientURL}, {"PeerURL", c.PeerURL}} {
		p, err := url.Parse(u.v)
		if err != nil {
			return fmt.Errorf("etcdserver: %s %q: %w", u.name, u.v, err)
		}
		if p.Scheme != scheme || p.Port() == "" {
			return fmt.Errorf("etcdserver: %s %q: want %s://host:port (TLS %s)", u.name, u.v, scheme, map[bool]string{true: "set", false: "unset"}[c.TLS != nil])
		}
	}
	if c.ClientURL == c.PeerURL {
		return errors.New("etcdserver: ClientURL and PeerURL must differ")
	}
	return nil
}

// withDefaults fills empty fields from DefaultConfig (the URLs https with
// TLS).
func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.TLS != nil {
		d.ClientURL, d.PeerURL = "https://127.0.0.1:7379", "https://127.0.0.1:7380"
	}
	if c.ClientURL == "" {
		c.ClientURL = d.ClientURL
	}
	if c.PeerURL == "" {
		c.PeerURL = d.PeerURL
	}
	if c.Name == "" {
		c.Name = d.Name
	}
	if c.StartTimeout == 0 {
		c.StartTimeout = d.StartTimeout
	}
	return c
}

// Server is a running embedded etcd member.
type Server struct {
	etcd      *embed.Etcd
	endpoints []string
	closeOnce sync.Once
}

// Start starts the member and waits until it serves clients, ctx ends, or
// StartTimeout passes. Empty URL, Name and StartTimeout fields take their
// defaults. An address already in use yields an error wrapping
// ErrAddrInUse.
func Start(ctx context.Context, cfg Config) (*Server, error) {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	curl, _ := url.Parse(cfg.ClientURL)
	purl, _ := url.Parse(cfg.PeerURL)

	ec := embed.NewConfig()
	ec.Name = cfg.Name
	ec.Dir = cfg.DataDir
	ec.ListenClientUrls = []url.URL{*curl}
	ec.AdvertiseClientUrls = []url.URL{*curl}
	ec.ListenPeerUrls = []url.URL{*purl}
	ec.AdvertisePeerUrls = []url.URL{*purl}
	ec.InitialCluster = cfg.Name + "=" + purl.String()
	ec.InitialClusterToken = "cellplane"
	ec.ClusterState = embed.ClusterStateFlagNew
	ec.UnsafeNoFsync = cfg.UnsafeNoFsync
	if t := cfg.TLS; t != nil {
		info := transport.TLSInfo{CertFile: t.CertFile, KeyFile: t.KeyFile, TrustedCAFile: t.CAFile, ClientCertAuth: true}
		ec.ClientTLSInfo, ec.PeerTLSInfo = info, info
		ec.TlsMinVersion = string(tlsutil.TLSVersion13) // no cipher suites to configure away
	}
	ec.Logger = "zap"
	ec.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.New(newSlogCore(cfg.Logger)))

	e, err := embed.StartEtcd(ec)
	if err != nil {
		if isAddrInUse(err) {
			return nil, fmt.Errorf("%w: %s or %s: %v", ErrAddrInUse, cfg.ClientURL, cfg.PeerURL, err)
		}
		return nil, fmt.Errorf("etcdserver: start: %w", err)
	}
	timer := time.NewTimer(cfg.StartTimeout)
	defer timer.Stop()
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		e.Close()
		return nil, fmt.Errorf("etcdserver: member failed while starting: %w", err)
	case <-ctx.Done():
		e.Close()
		return nil, fmt.Errorf("etcdserver: start: %w", ctx.Err())
	case <-timer.C:
		e.Close()
		return nil, fmt.Errorf("etcdserver: not ready after %s", cfg.StartTimeout)
	}
	if cfg.Logger != nil {
		cfg.Logger.Info("etcd started", "component", "etcd", "client_url", cfg.ClientURL, "dir", cfg.DataDir, "tls", cfg.TLS != nil)
	}
	return &Server{etcd: e, endpoints: []string{curl.String()}}, nil
}

func isAddrInUse(err error) bool {
	return errors.Is(err, syscall.EADDRINUSE) || strings.Contains(err.Error(), "address already in use")
}

// Endpoints returns the client URLs, for clientv3 / etcdtopo.Config.
func (s *Server) Endpoints() []string { return append([]string(nil), s.endpoints...) }

// Err returns a channel that receives the member's fatal errors.
func (s *Server) Err() <-chan error { return s.etcd.Err() }

// Close stops the member and waits for it; it is idempotent.
func (s *Server) Close() error {
	s.closeOnce.Do(s.etcd.Close)
	return nil
}
