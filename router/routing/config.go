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
	// PageSize is the page size of the full List loads (default 50000:
	// etcd counts the rest of the range on every page, so a load costs
	// pages × remaining keys — large pages keep a 1M-tenant load near
	// 8 s instead of 30 s; a page is ~4 MB).
	PageSize int
	// RetryMin and RetryMax bound the exponential backoff (full jitter:
	// internal/retry) between failed loads (defaults 100ms and 10s).
	RetryMin, RetryMax time.Duration
	// Logger receives warnings (reloads, corrupt snapshots, bad records).
	Logger *slog.Logger
}

// Defaults.
const (
	DefaultSnapshotInterval = 10 * time.Second
	DefaultPageSize         = 50000
	DefaultRetryMin         = 100 * time.Millisecond
	DefaultRetryMax         = 10 * time.Second
)

// DefaultConfig returns the defaults (no snapshot file).
func DefaultConfig() Config {
	return Config{
		SnapshotInterval: DefaultSnapshotInterval,
		PageSize:         DefaultPageSize,
		RetryMin:         DefaultRetryMin,
		RetryMax:         DefaultRetryMax,
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
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}
