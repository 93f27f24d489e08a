package controlplane

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/cellplane/cellplane/controlplane/api"
	"github.com/cellplane/cellplane/controlplane/controller"
	"github.com/cellplane/cellplane/controlplane/topo"
	"github.com/cellplane/cellplane/internal/dial"
	"github.com/cellplane/cellplane/internal/pki"
	"github.com/cellplane/cellplane/internal/serve"
)

// Default listen addresses.
const (
	DefaultGRPCAddr          = "127.0.0.1:7000"
	DefaultHTTPAddr          = "127.0.0.1:7001"
	DefaultEmbeddedClientURL = "http://127.0.0.1:7379"
	DefaultEmbeddedPeerURL   = "http://127.0.0.1:7380"
	// DefaultEmbeddedTLSClientURL and DefaultEmbeddedTLSPeerURL are the
	// embedded member's URLs with TLS (Config.TLS set).
	DefaultEmbeddedTLSClientURL = "https://127.0.0.1:7379"
	DefaultEmbeddedTLSPeerURL   = "https://127.0.0.1:7380"
)

// Config configures a control-plane replica.
type Config struct {
	// ID names this replica among controller replicas (default: host-pid).
	ID string
	// DataDir holds the embedded etcd's data (unused with EtcdEndpoints).
	DataDir string

	// EtcdEndpoints: an external etcd cluster. Empty: embed a single
	// member in DataDir.
	EtcdEndpoints []string
	// EtcdPrefix is the keyspace root (default topo.Prefix).
	EtcdPrefix string
	// EtcdCertFile, EtcdKeyFile, EtcdCAFile: TLS to an external etcd
	// whose certificates are not the cluster's. Unset, a replica with TLS
	// reaches https endpoints with its own identity (TLS), and, as root,
	// turns etcd authentication on and provisions the components' etcd
	// users (controlplane/etcdauth, docs/security.md "etcd").
	EtcdCertFile, EtcdKeyFile, EtcdCAFile string
	// EtcdDialTimeout bounds reaching etcd at start.
	EtcdDialTimeout time.Duration
	// EmbeddedClientURL and EmbeddedPeerURL are the embedded member's
	// URLs. With TLS they must be https: the member then serves TLS with
	// this replica's certificate, requires a client certificate of the
	// cluster's CA, and runs with authentication on (each component's
	// certificate is its etcd user).
	EmbeddedClientURL, EmbeddedPeerURL string
	// EtcdUnsafeNoFsync makes the embedded etcd skip fsync: faster, but a
	// crash of the machine may lose acknowledged writes or corrupt the
	// data dir. UNSAFE: for tests and benchmarks (bulk loads), never for a
	// member whose data matters.
	EtcdUnsafeNoFsync bool
	// EtcdRestartTimeout bounds a restart of the embedded member, which
	// the replica makes when the CAs of its TLS bundle change (etcd reads
	// its CA bundle only at start): the wait until the member serves
	// again (default 30s).
	EtcdRestartTimeout time.Duration
	// EmbeddedEtcdHealth sets the embedded member's compaction, quota and
	// defragmentation (etcdserver.Config; zero fields: etcdserver's
	// defaults: periodic compaction keeping 10m, 2 GiB quota, a
	// thresholded defragmentation check every hour). See
	// docs/reliability.md "etcd health (H2)".
	EmbeddedEtcdHealth EtcdHealth

	// GRPCAddr and HTTPAddr are the listen addresses; GRPCListener and
	// HTTPListener, when set, are used instead (tests).
	GRPCAddr, HTTPAddr         string
	GRPCListener, HTTPListener net.Listener

	// TLS, when set, makes the gRPC API serve mutual TLS only (no
	// plaintext fallback) with this process's certificate (a controlplane
	// identity), and authorises every call by the caller's identity
	// (Policy). nil serves plaintext with no authentication: anyone who
	// reaches GRPCAddr owns every tenant (`cellplane controlplane` refuses
	// to start so unless --insecure is given, and warns then). The HTTP
	// port (metrics, health, readiness) stays plaintext either way.
	TLS *pki.Source

	// Controller and API configure the parts (their ID/Logger are filled).
	Controller controller.Config
	API        api.Config

	// Dial configures the connections the replica opens to cells
	// (credentials, keepalive); the zero value is plaintext, or mutual
	// TLS with the control plane's identity when TLS is set (cells
	// serving mutual TLS accept tenant placement from the control plane
	// only).
	Dial dial.Config

	// ShutdownTimeout bounds a graceful stop.
	// GRPCLimits and HTTPLimits bound the gRPC and HTTP servers (streams,
	// pings, idle connections, connections, HTTP timeouts; finding M6).
	// The zero values mean serve.DefaultLimits and serve.DefaultHTTPLimits.
	GRPCLimits serve.Limits
	HTTPLimits serve.HTTPLimits

	ShutdownTimeout time.Duration
	// Logger; nil means slog.Default().
	Logger *slog.Logger

	// TestingKnobs for tests only.
	TestingKnobs TestingKnobs
}

// DefaultConfig returns the defaults (DataDir must be set to embed etcd).
func DefaultConfig() Config {
	host, _ := os.Hostname()
	if host == "" {
		host = "cp"
	}
	return Config{
		ID:                 host + "-" + strconv.Itoa(os.Getpid()),
		EtcdPrefix:         topo.Prefix,
		EtcdDialTimeout:    5 * time.Second,
		EtcdRestartTimeout: 30 * time.Second,
		EmbeddedClientURL:  DefaultEmbeddedClientURL,
		EmbeddedPeerURL:    DefaultEmbeddedPeerURL,
		GRPCAddr:           DefaultGRPCAddr,
		HTTPAddr:           DefaultHTTPAddr,
		Controller:         controller.DefaultConfig(),
		API:                api.DefaultConfig(),
		Dial:               dial.DefaultConfig(),
		ShutdownTimeout:    10 * time.Second,
		GRPCLimits:         serve.DefaultLimits(),
		HTTPLimits:         serve.DefaultHTTPLimits(),
	}
}

// Validate reports a configuration that cannot work.
func (c Config) Validate() error {
	var errs []error
	if c.ID == "" {
		errs = append(errs, errors.New("controlplane: ID is required"))
	}
	if len(c.EtcdEndpoints) == 0 && c.DataDir == "" {
		errs = append(errs, errors.New("controlplane: a data dir is required to embed etcd (or give etcd endpoints)"))
	}
	if err := c.GRPCLimits.ValidateOrZero(); err != nil {
		errs = append(errs, fmt.Errorf("controlplane: GRPCLimits: %w", err))
	}
	if err := c.HTTPLimits.ValidateOrZero(); err != nil {
		errs = append(errs, fmt.Errorf("controlplane: HTTPLimits: %w", err))
	}
	if c.EtcdDialTimeout <= 0 {
		errs = append(errs, fmt.Errorf("controlplane: etcd dial timeout %v <= 0", c.EtcdDialTimeout))
	}
	if len(c.EtcdEndpoints) == 0 && c.EtcdRestartTimeout <= 0 {
		errs = append(errs, fmt.Errorf("controlplane: embedded etcd restart timeout %v <= 0", c.EtcdRestartTimeout))
	}
	if (c.EtcdCertFile == "") != (c.EtcdKeyFile == "") {
		errs = append(errs, errors.New("controlplane: etcd cert and key files go together"))
	}
	if c.GRPCListener == nil && c.GRPCAddr == "" || c.HTTPListener == nil && c.HTTPAddr == "" {
		errs = append(errs, errors.New("controlplane: gRPC and HTTP addresses are required"))
	}
	if c.ShutdownTimeout <= 0 {
		errs = append(errs, fmt.Errorf("controlplane: shutdown timeout %v <= 0", c.ShutdownTimeout))
	}
	if c.TLS != nil {
		if k := c.TLS.Identity().Kind; k != pki.KindControlPlane {
			errs = append(errs, fmt.Errorf("controlplane: TLS certificate is a %s identity (%s), want a controlplane one", k, c.TLS.Identity()))
		}
	}
	if len(c.EtcdEndpoints) == 0 {
		// The embedded member: https with TLS, http without (no
		// plaintext listener next to the mutual-TLS API).
		want := "http://"
		if c.TLS != nil {
			want = "https://"
		}
		for _, u := range []string{c.EmbeddedClientURL, c.EmbeddedPeerURL} {
			if u != "" && !strings.HasPrefix(u, want) {
				errs = append(errs, fmt.Errorf("controlplane: embedded etcd URL %q: want %shost:port (TLS %s)", u, want, map[bool]string{true: "set", false: "unset"}[c.TLS != nil]))
			}
		}
	}
	ctl := c.Controller
	ctl.ID = c.ID
	errs = append(errs, ctl.Validate(), c.API.Validate(), c.Dial.Validate())
	return errors.Join(errs...)
}

// EtcdHealth is the embedded etcd member's housekeeping (the fields of
// etcdserver.Config of the same names; zero: etcdserver's defaults).
type EtcdHealth struct {
	AutoCompactionMode, AutoCompactionRetention string
	QuotaBackendBytes                           int64
	DefragInterval                              time.Duration
	DefragMinFreeBytes                          int64
	DefragMinFreeRatio                          float64
}
