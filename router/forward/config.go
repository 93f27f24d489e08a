package forward

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"google.golang.org/grpc/keepalive"

	"github.com/cellplane/cellplane/internal/dial"
	"github.com/cellplane/cellplane/internal/readcache"
)

// Config configures a Forwarder.
type Config struct {
	// Services are the fully-qualified names of the forwarded services.
	// Their descriptors must be linked into the binary (the forwarder
	// looks up which methods stream). Default: every linked service marked
	// (cellplane.router.v1.tenant_routed) — today ContextService.
	Services []string
	// DefaultTimeout is the deadline given to a call whose caller set
	// none. Default 10 s.
	DefaultTimeout time.Duration
	// MovingHold bounds how long one call is held while its tenant moves:
	// while the placement says the tenant is cutting over (the call waits
	// for the placement to change, then goes to the new owner), and while
	// cells answer TENANT_MOVING (retried with backoff). Both share the
	// budget, counted from the call's first hold. When it runs out the
	// call fails with UNAVAILABLE TENANT_MOVING + RetryInfo; the call's
	// deadline ends a hold earlier. Default 2 s.
	MovingHold time.Duration
	// MaxRetries is how many retries a call makes right away (following a
	// leader hint, trying the next member, after a placement refresh).
	// Beyond them the call keeps retrying with exponential backoff until
	// FailoverHold after its first failure (or its deadline), which lets a
	// call ride out a leader election. Default 3.
	MaxRetries int
	// FailoverHold bounds the time a call keeps retrying when no member of
	// the cell takes it (connection failures, NOT_LEADER, CELL_UNAVAILABLE).
	// Default 5 s.
	FailoverHold time.Duration
	// RetryBackoff is the first backoff delay (doubling up to
	// MaxRetryBackoff). Defaults 20 ms and 250 ms.
	RetryBackoff    time.Duration
	MaxRetryBackoff time.Duration
	// UnavailableRetryAfter is the RetryInfo delay of the CELL_UNAVAILABLE
	// and TENANT_MOVING errors the forwarder makes. Default 1 s.
	UnavailableRetryAfter time.Duration
	// MaxMsgBytes bounds the messages sent to and received from backends.
	// The router's own grpc.Server should set grpc.MaxRecvMsgSize to the
	// same value. Default 8 MiB.
	MaxMsgBytes int
	// Keepalive of backend connections: ping after KeepaliveTime without
	// activity, drop the connection when the ping is not answered within
	// KeepaliveTimeout. Defaults 5 min and 20 s: cells close connections
	// that ping more often than their GRPCLimits.KeepaliveMinTime
	// (serve.Limits, --grpc-keepalive-min-time, default 10 s), so keep
	// KeepaliveTime above it.
	KeepaliveTime    time.Duration
	KeepaliveTimeout time.Duration
	// IdleConnTimeout closes a backend connection that carried no call for
	// this long (an address that left the routing table). 0 keeps
	// connections until Close. Default 10 min.
	IdleConnTimeout time.Duration
	// Dial configures every backend connection (credentials — plaintext
	// when nil —, interceptors, extra dial options). Its Keepalive is
	// replaced by KeepaliveTime and KeepaliveTimeout, and the MaxMsgBytes
	// call limits are added to its options.
	Dial dial.Config
	// Logger receives debug lines about retries; nil discards.
	Logger *slog.Logger
	// ReadCache is the router's change-coherent read cache of
	// ContextService Read and GetMemory (docs/cache.md): STALE reads it
	// holds are answered without a hop to the cell. Off (MaxBytes 0) by
	// default.
	ReadCache readcache.Config
}

// DefaultConfig returns the defaults described on Config.
func DefaultConfig() Config {
	return Config{
		Services:              TenantRoutedServices(),
		DefaultTimeout:        10 * time.Second,
		MovingHold:            2 * time.Second,
		MaxRetries:            3,
		FailoverHold:          5 * time.Second,
		RetryBackoff:          20 * time.Millisecond,
		MaxRetryBackoff:       250 * time.Millisecond,
		UnavailableRetryAfter: time.Second,
		MaxMsgBytes:           8 << 20,
		KeepaliveTime:         5 * time.Minute,
		KeepaliveTimeout:      20 * time.Second,
		IdleConnTimeout:       10 * time.Minute,
		ReadCache:             readcache.DefaultConfig(),
	}
}

// Validate reports the first invalid setting.
func (c Config) Validate() error {
	var errs []error
	if len(c.Services) == 0 {
		errs = append(errs, errors.New("forward: Services is empty"))
	}
	for _, s := range c.Services {
		if s == "" || strings.ContainsAny(s, "/ ") {
			errs = append(errs, fmt.Errorf("forward: invalid service name %q", s))
		}
	}
	pos := func(name string, d time.Duration) {
		if d <= 0 {
			errs = append(errs, fmt.Errorf("forward: %s must be positive, got %s", name, d))
		}
	}
	pos("DefaultTimeout", c.DefaultTimeout)
	pos("MovingHold", c.MovingHold)
	pos("FailoverHold", c.FailoverHold)
	pos("RetryBackoff", c.RetryBackoff)
	pos("MaxRetryBackoff", c.MaxRetryBackoff)
	pos("UnavailableRetryAfter", c.UnavailableRetryAfter)
	pos("KeepaliveTime", c.KeepaliveTime)
	pos("KeepaliveTimeout", c.KeepaliveTimeout)
	if c.MaxRetryBackoff < c.RetryBackoff {
		errs = append(errs, errors.New("forward: MaxRetryBackoff is below RetryBackoff"))
	}
	if c.MaxRetries < 0 {
		errs = append(errs, fmt.Errorf("forward: MaxRetries must not be negative, got %d", c.MaxRetries))
	}
	if c.MaxMsgBytes <= 0 {
		errs = append(errs, fmt.Errorf("forward: MaxMsgBytes must be positive, got %d", c.MaxMsgBytes))
	}
	if c.IdleConnTimeout < 0 {
		errs = append(errs, fmt.Errorf("forward: IdleConnTimeout must not be negative, got %s", c.IdleConnTimeout))
	}
	errs = append(errs, c.Dial.Validate(), c.ReadCache.Validate())
	return errors.Join(errs...)
}

func (c Config) keepalive() keepalive.ClientParameters {
	return keepalive.ClientParameters{Time: c.KeepaliveTime, Timeout: c.KeepaliveTimeout}
}
