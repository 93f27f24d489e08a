package routing

import (
	"errors"
	"fmt"
	"log/slog"
	"time"
)

// Config configures a Table. The zero value of a field means its default
// (see DefaultConfig); Logger nil means slog.Default().
type Config struct {
	// SnapshotPath is the local snapshot file ("" = no snapshot).
	SnapshotPath string
	// SnapshotInterval: the snapshot is written at most this often, and
	// only if the table changed since the last write (default 10s).
	SnapshotInterval time.Duration
	// PageSize is the page size of the full loads from a store without a
	// streaming read (topo.Scanner; etcd has one, RangeStream, and ignores
	// it) (default 50000: a paged etcd Range counts the rest of the range
	// on every page, so a paged load costs pages × remaining keys; a page
	// is ~4 MB).
	PageSize int
	// RetryMin and RetryMax bound the exponential backoff (full jitter:
	// internal/retry) between failed loads (defaults 100ms and 10s).
	RetryMin, RetryMax time.Duration
	// APIKeyMaxStaleness bounds how old the table's view of API keys may
	// be and still authenticate a key: the view is fresh as of the last
	// full load, or the last time the watch proved it had delivered every
	// change (a progress notification answering a freshness probe), or,
	// after a restart, the time the snapshot was known fresh. Older than
	// the bound, APIKey refuses every key (KeysFresh: CREDENTIALS_STALE)
	// so that a key revoked while the watch is down stops working within
	// the bound; routing is not affected. 0 means unbounded (the behaviour
	// before M9: a key revoked during an etcd outage works until the watch
	// recovers). DefaultConfig: DefaultAPIKeyMaxStaleness.
	APIKeyMaxStaleness time.Duration
	// JWTRevocationMaxStaleness bounds how old the view of the JWT
	// revocation list (the same view as the keys) may be and still vouch
	// that a verified JWT is not revoked; older, TokenRevoked refuses
	// every JWT with CREDENTIALS_STALE. 0 (the default) means unbounded: a
	// JWT is checked against the last list known however old it is, so
	// JWT callers keep static stability through an etcd outage (a JWT is
	// bounded by its own exp; see docs/decisions.md).
	JWTRevocationMaxStaleness time.Duration
	// FreshnessInterval is how often the table probes that its watch is
	// caught up (one linearizable read of an empty range, then a progress
	// request on the watches). Default min(10s, APIKeyMaxStaleness/4).
	FreshnessInterval time.Duration
	// Logger receives warnings (reloads, corrupt snapshots, bad records).
	Logger *slog.Logger
}

// Defaults.
const (
	DefaultSnapshotInterval = 10 * time.Second
	DefaultPageSize         = 50000
	DefaultRetryMin         = 100 * time.Millisecond
	DefaultRetryMax         = 10 * time.Second
	// DefaultAPIKeyMaxStaleness: an etcd outage shorter than this is
	// invisible to API-key callers; a longer one refuses them (see
	// docs/decisions.md, "API keys fail closed after a bounded staleness").
	DefaultAPIKeyMaxStaleness = 5 * time.Minute
	DefaultFreshnessInterval  = 10 * time.Second
)

// DefaultConfig returns the defaults (no snapshot file).
func DefaultConfig() Config {
	return Config{
		SnapshotInterval: DefaultSnapshotInterval,
		PageSize:         DefaultPageSize,
		RetryMin:         DefaultRetryMin,
		RetryMax:         DefaultRetryMax,

		APIKeyMaxStaleness: DefaultAPIKeyMaxStaleness,
	}
}

// Validate reports a negative or inconsistent setting.
func (c Config) Validate() error {
	var errs []error
	if c.SnapshotInterval < 0 {
		errs = append(errs, fmt.Errorf("routing: SnapshotInterval %s < 0", c.SnapshotInterval))
	}
	if c.PageSize < 0 {
		errs = append(errs, fmt.Errorf("routing: PageSize %d < 0", c.PageSize))
	}
	if c.RetryMin < 0 || c.RetryMax < 0 {
		errs = append(errs, fmt.Errorf("routing: negative retry backoff (%s, %s)", c.RetryMin, c.RetryMax))
	}
	if c.RetryMin > 0 && c.RetryMax > 0 && c.RetryMin > c.RetryMax {
		errs = append(errs, fmt.Errorf("routing: RetryMin %s > RetryMax %s", c.RetryMin, c.RetryMax))
	}
	if c.APIKeyMaxStaleness < 0 || c.FreshnessInterval < 0 || c.JWTRevocationMaxStaleness < 0 {
		errs = append(errs, fmt.Errorf("routing: negative APIKeyMaxStaleness %s, JWTRevocationMaxStaleness %s or FreshnessInterval %s", c.APIKeyMaxStaleness, c.JWTRevocationMaxStaleness, c.FreshnessInterval))
	}
	if c.JWTRevocationMaxStaleness > 0 && c.FreshnessInterval >= c.JWTRevocationMaxStaleness {
		errs = append(errs, fmt.Errorf("routing: FreshnessInterval %s must be below JWTRevocationMaxStaleness %s", c.FreshnessInterval, c.JWTRevocationMaxStaleness))
	}
	if c.APIKeyMaxStaleness > 0 && c.FreshnessInterval >= c.APIKeyMaxStaleness {
		errs = append(errs, fmt.Errorf("routing: FreshnessInterval %s must be below APIKeyMaxStaleness %s (keys would go stale between probes)", c.FreshnessInterval, c.APIKeyMaxStaleness))
	}
	return errors.Join(errs...)
}

// withDefaults fills zero fields.
func (c Config) withDefaults() Config {
	if c.SnapshotInterval == 0 {
		c.SnapshotInterval = DefaultSnapshotInterval
	}
	if c.PageSize == 0 {
		c.PageSize = DefaultPageSize
	}
	if c.RetryMin == 0 {
		c.RetryMin = DefaultRetryMin
	}
	if c.RetryMax == 0 {
		c.RetryMax = max(DefaultRetryMax, c.RetryMin)
	}
	if c.FreshnessInterval == 0 {
		c.FreshnessInterval = DefaultFreshnessInterval
		for _, b := range []time.Duration{c.APIKeyMaxStaleness, c.JWTRevocationMaxStaleness} {
			if b > 0 {
				c.FreshnessInterval = max(min(c.FreshnessInterval, b/4), time.Millisecond)
			}
		}
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}
