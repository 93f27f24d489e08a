package etcdserver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"sync"
	"syscall"
	"time"

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
	for _, u := range []struct{ name, v string }{{"ClientURL", c.ClientURL}, {"PeerURL", c.PeerURL}} {
		p, err := url.Parse(u.v)
		if err != nil {
			return fmt.Errorf("etcdserver: %s %q: %w", u.name, u.v, err)
		}
		if p.Scheme != "http" || p.Port() == "" {
			return fmt.Errorf("etcdserver: %s %q: want http://host:port", u.name, u.v)
		}
	}
	if c.ClientURL == c.PeerURL {
		return errors.New("etcdserver: ClientURL and PeerURL must differ")
	}
	return nil
}

// withDefaults fills empty fields from DefaultConfig.
func (c Config) withDefaults() Config {
	d := DefaultConfig()
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
		cfg.Logger.Info("etcd started", "component", "etcd", "client_url", cfg.ClientURL, "dir", cfg.DataDir)
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
