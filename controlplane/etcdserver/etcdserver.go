package etcdserver

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/tlsutil"
	"go.etcd.io/etcd/client/pkg/v3/transport"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/cellplane/cellplane/internal/pki"
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

	// AutoCompactionMode is etcd's --auto-compaction-mode: "periodic"
	// (default) or "revision".
	AutoCompactionMode string
	// AutoCompactionRetention is etcd's --auto-compaction-retention
	// (default DefaultCompactionRetention, "10m"). Periodic: the history
	// kept, a duration ("10m") or whole hours ("1"); etcd compacts every
	// tenth of it (at most hourly). Revision: the number of revisions
	// kept, checked every 5 minutes. "0" turns compaction off: the
	// history then grows until the quota's NOSPACE alarm stops every
	// write (never in production).
	AutoCompactionRetention string
	// QuotaBackendBytes is etcd's --quota-backend-bytes (default
	// DefaultQuotaBackendBytes, 2 GiB): beyond it the member raises the
	// NOSPACE alarm and refuses every write but deletes and compactions.
	QuotaBackendBytes int64
	// DefragInterval is how often the member checks whether to
	// defragment its backend (0: DefaultDefragInterval, 1h; negative:
	// never). A defragmentation blocks the member's reads and writes
	// while it copies the live data (about a second per GiB in use;
	// milliseconds for cellplane's usual few MiB), so it only runs when
	// DefragMinFreeBytes and DefragMinFreeRatio are both exceeded.
	DefragInterval time.Duration
	// DefragMinFreeBytes is the free space (db size − size in use) below
	// which no defragmentation runs (0: DefaultDefragMinFreeBytes, 64 MiB;
	// negative: any).
	DefragMinFreeBytes int64
	// DefragMinFreeRatio is the fraction of the db that must be free for a
	// defragmentation to run, in [0, 1] (0: DefaultDefragMinFreeRatio,
	// 0.5; negative: any).
	DefragMinFreeRatio float64
}

// etcd health defaults (docs/reliability.md, "etcd health (H2)").
const (
	DefaultCompactionMode      = "periodic"
	DefaultCompactionRetention = "10m"
	DefaultQuotaBackendBytes   = int64(2 << 30)
	DefaultDefragInterval      = time.Hour
	DefaultDefragMinFreeBytes  = int64(64 << 20)
	DefaultDefragMinFreeRatio  = 0.5
)

// TLSFiles are the PEM files of a TLS member. etcd reads the certificate
// and key at every handshake, so a rotated leaf is served without a
// restart; it reads the CA bundle once, at start, so a changed bundle
// takes effect at Server.Restart (the control plane restarts its member
// when its CAs change).
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

		AutoCompactionMode:      DefaultCompactionMode,
		AutoCompactionRetention: DefaultCompactionRetention,
		QuotaBackendBytes:       DefaultQuotaBackendBytes,
		DefragInterval:          DefaultDefragInterval,
		DefragMinFreeBytes:      DefaultDefragMinFreeBytes,
		DefragMinFreeRatio:      DefaultDefragMinFreeRatio,
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
	return c.validateHealth()
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
	if c.AutoCompactionMode == "" {
		c.AutoCompactionMode = d.AutoCompactionMode
	}
	if c.AutoCompactionRetention == "" {
		c.AutoCompactionRetention = d.AutoCompactionRetention
	}
	if c.QuotaBackendBytes == 0 {
		c.QuotaBackendBytes = d.QuotaBackendBytes
	}
	if c.DefragInterval == 0 {
		c.DefragInterval = d.DefragInterval
	}
	if c.DefragMinFreeBytes == 0 {
		c.DefragMinFreeBytes = d.DefragMinFreeBytes
	}
	if c.DefragMinFreeRatio == 0 {
		c.DefragMinFreeRatio = d.DefragMinFreeRatio
	}
	return c
}

// Server is a running embedded etcd member.
type Server struct {
	cfg       Config // with defaults
	endpoints []string
	errc      chan error // the current member's fatal errors (Err)

	mu       sync.Mutex // serialises Restart and Close
	etcd     *embed.Etcd
	streams  *streamGate   // the current member's client streams
	stopFwd  chan struct{} // stops the current member's error forwarder
	fwdDone  chan struct{}
	maint    *maintainer // the current member's defragmentation loop
	health   *healthMetrics
	trusted  []*x509.Certificate // the CA bundle read at the last (re)start
	restarts int
	closed   bool
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
	s := &Server{cfg: cfg, endpoints: []string{curl.String()}, errc: make(chan error, 1), health: newHealthMetrics()}
	if err := s.start(ctx); err != nil {
		return nil, err
	}
	if cfg.Logger != nil {
		cfg.Logger.Info("etcd started", "component", "etcd", "client_url", cfg.ClientURL, "dir", cfg.DataDir, "tls", cfg.TLS != nil)
	}
	return s, nil
}

// embedConfig is etcd's config for cfg: the same on every (re)start (same
// name, data dir, client and peer URLs, TLS files).
func embedConfig(cfg Config, streams *streamGate) *embed.Config {
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
	ec.ClusterState = embed.ClusterStateFlagNew // ignored once the data dir has a member
	ec.UnsafeNoFsync = cfg.UnsafeNoFsync
	ec.AutoCompactionMode = cfg.AutoCompactionMode
	ec.AutoCompactionRetention = cfg.AutoCompactionRetention
	ec.QuotaBackendBytes = cfg.QuotaBackendBytes
	if t := cfg.TLS; t != nil {
		info := transport.TLSInfo{CertFile: t.CertFile, KeyFile: t.KeyFile, TrustedCAFile: t.CAFile, ClientCertAuth: true}
		ec.ClientTLSInfo, ec.PeerTLSInfo = info, info
		ec.TlsMinVersion = string(tlsutil.TLSVersion13) // no cipher suites to configure away
	}
	ec.Logger = "zap"
	ec.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.New(newSlogCore(cfg.Logger)))
	ec.GRPCAdditionalServerOptions = []grpc.ServerOption{grpc.ChainStreamInterceptor(streams.intercept)}
	return ec
}

// start starts a member on s.cfg and waits until it is ready (s.mu held,
// or s not yet shared).
func (s *Server) start(ctx context.Context) error {
	cfg := s.cfg
	var trusted []*x509.Certificate
	if cfg.TLS != nil {
		// Read before etcd does: if the file changes in between, etcd
		// trusts the newer bundle and TrustedCAs reports the older one,
		// so a caller comparing bundles restarts once more (never the
		// other way round, which would miss a change).
		var err error
		if trusted, err = pki.ReadCerts(cfg.TLS.CAFile); err != nil {
			return fmt.Errorf("etcdserver: CA bundle: %w", err)
		}
	}
	streams := newStreamGate()
	e, err := embed.StartEtcd(embedConfig(cfg, streams))
	if err != nil {
		if isAddrInUse(err) {
			return fmt.Errorf("%w: %s or %s: %v", ErrAddrInUse, cfg.ClientURL, cfg.PeerURL, err)
		}
		return fmt.Errorf("etcdserver: start: %w", err)
	}
	timer := time.NewTimer(cfg.StartTimeout)
	defer timer.Stop()
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		e.Close()
		return fmt.Errorf("etcdserver: member failed while starting: %w", err)
	case <-ctx.Done():
		e.Close()
		return fmt.Errorf("etcdserver: start: %w", ctx.Err())
	case <-timer.C:
		e.Close()
		return fmt.Errorf("etcdserver: not ready after %s", cfg.StartTimeout)
	}
	s.etcd, s.streams, s.trusted = e, streams, trusted
	s.stopFwd, s.fwdDone = make(chan struct{}), make(chan struct{})
	go forward(e.Err(), s.errc, s.stopFwd, s.fwdDone)
	s.maint = startMaintainer(e, cfg, s.health)
	return nil
}

// forward passes a member's fatal errors to Err until stop closes.
func forward(from <-chan error, to chan<- error, stop <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	for {
		select {
		case err, ok := <-from:
			if !ok {
				return
			}
			select {
			case to <- err:
			default: // one pending error is enough to act on
			}
		case <-stop:
			return
		}
	}
}

// streamGate ends the member's client streams (watches, lease
// keep-alives) on demand: a gRPC stream interceptor (inside etcd's own)
// that gives each stream a context it can cancel, and refuses new
// streams once closed. Unary requests are left alone, to finish.
type streamGate struct {
	mu      sync.Mutex
	closed  bool
	next    uint64
	cancels map[uint64]context.CancelFunc
}

func newStreamGate() *streamGate {
	return &streamGate{cancels: make(map[uint64]context.CancelFunc)}
}

// errRestarting refuses a stream opened while the member stops: the
// client opens it again (on a new connection, to the next member).
var errRestarting = status.Error(codes.Unavailable, "etcdserver: the member is restarting")

func (g *streamGate) intercept(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	ctx, cancel := context.WithCancel(ss.Context())
	defer cancel()
	g.mu.Lock()
	if g.closed {
		g.mu.Unlock()
		return errRestarting
	}
	id := g.next
	g.next++
	g.cancels[id] = cancel
	g.mu.Unlock()
	defer func() {
		g.mu.Lock()
		delete(g.cancels, id)
		g.mu.Unlock()
	}()
	err := h(srv, ctxStream{ServerStream: ss, ctx: ctx})
	if ctx.Err() != nil && ss.Context().Err() == nil {
		// Ended by close, not by the client: say UNAVAILABLE, which
		// etcd's client retries (a watch resumes at its revision, a
		// keep-alive opens again), not the handler's CANCELED, which
		// ends a watch for good.
		return errRestarting
	}
	return err
}

// close ends every stream and refuses new ones.
func (g *streamGate) close() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.closed = true
	for _, cancel := range g.cancels {
		cancel()
	}
}

// ctxStream is a stream with the gate's context.
type ctxStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (c ctxStream) Context() context.Context { return c.ctx }

// stop closes the current member (s.mu held). It ends the clients'
// streams first: etcd's Close shuts its client server down gracefully,
// which waits for the long-lived streams (watches, lease keep-alives)
// until its request timeout (at least 5s) before cutting them anyway;
// ending them first lets Close return as soon as the unary requests in
// flight are answered (none is cut). The clients see their streams end
// and open them again on the next member.
func (s *Server) stop() {
	if s.etcd == nil {
		return
	}
	close(s.stopFwd) // a member closed on purpose is no fatal error
	<-s.fwdDone
	s.maint.stop()
	s.streams.close()
	s.etcd.Close()
	s.etcd, s.streams = nil, nil
}

// ErrClosed is returned by Restart after Close.
var ErrClosed = errors.New("etcdserver: closed")

// Restart stops the member and starts it again in place: the same data
// dir, name, client and peer URLs and TLS files, re-read (etcd reads its
// CA bundle only at start, so this is how a changed bundle takes
// effect). It waits until the new member is ready, ctx ends or
// StartTimeout passes. Clients lose their connections and reconnect;
// data, leases (their expiry extended by etcd's election timeout when the
// member leads again), users and roles live in the data dir and survive.
// On error the member is down; a later Restart may start it.
func (s *Server) Restart(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	s.stop()
	if err := s.start(ctx); err != nil {
		return err
	}
	s.restarts++
	return nil
}

// TrustedCAs returns the CAs of the bundle the member read at its last
// (re)start: the client and peer certificates it accepts are chained to
// one of them (nil without TLS).
func (s *Server) TrustedCAs() []*x509.Certificate {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.trusted)
}

// Restarts returns how many times Restart succeeded.
func (s *Server) Restarts() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.restarts
}

func isAddrInUse(err error) bool {
	return errors.Is(err, syscall.EADDRINUSE) || strings.Contains(err.Error(), "address already in use")
}

// Endpoints returns the client URLs, for clientv3 / etcdtopo.Config.
func (s *Server) Endpoints() []string { return append([]string(nil), s.endpoints...) }

// Err returns a channel that receives the member's fatal errors (of the
// member running now: a Restart's stop is not one).
func (s *Server) Err() <-chan error { return s.errc }

// Close stops the member and waits for it; it is idempotent.
func (s *Server) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	s.stop()
	return nil
}
