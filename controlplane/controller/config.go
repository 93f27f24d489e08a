package controller

import (
	"errors"
	"fmt"
	"github.com/cellplane/cellplane/controlplane/tokenkeys"
	"log/slog"
	"time"
)

// Config configures a controller replica.
type Config struct {
	// ID names this replica (the election value); unique among replicas.
	ID string
	// Advertise is this replica's gRPC address, published with its
	// leadership so operators see who leads.
	Advertise string
	// SessionTTL is the lease of the replica's election session: a killed
	// leader is replaced after at most about this long.
	SessionTTL time.Duration
	// MaxConcurrentWorkflows bounds the workflows the leader drives at once.
	MaxConcurrentWorkflows int
	// RetryMin and RetryMax pace the retries of a failing workflow step
	// (internal/retry: doubling, with full jitter).
	RetryMin, RetryMax time.Duration
	// CellCallTimeout bounds one call to a cell.
	CellCallTimeout time.Duration
	// Moves configures live moves, drains and standbys.
	Moves MoveConfig
	// Failover configures switchovers and emergency promotions;
	// AutoPromote the automatic promotion policy (off by default).
	Failover    FailoverConfig
	AutoPromote AutoPromoteConfig
	// TokenKeys configures the rotation of the tenant-token signing keys
	// (controlplane/tokenkeys) the leader runs.
	TokenKeys tokenkeys.RotationConfig
	// Logger; nil means slog.Default().
	Logger *slog.Logger
	// TestingKnobs are hooks for tests only.
	TestingKnobs TestingKnobs
}

// DefaultConfig returns the defaults (ID must still be set).
func DefaultConfig() Config {
	return Config{
		SessionTTL:             5 * time.Second,
		MaxConcurrentWorkflows: 64,
		RetryMin:               100 * time.Millisecond,
		RetryMax:               5 * time.Second,
		CellCallTimeout:        10 * time.Second,
		Moves:                  DefaultMoveConfig(),
		Failover:               DefaultFailoverConfig(),
		AutoPromote:            DefaultAutoPromoteConfig(),
		TokenKeys:              tokenkeys.DefaultRotationConfig(),
	}
}

// Validate reports a configuration that cannot work.
func (c Config) Validate() error {
	var errs []error
	if c.ID == "" {
		errs = append(errs, errors.New("controller: ID is required"))
	}
	if c.SessionTTL < time.Second {
		errs = append(errs, fmt.Errorf("controller: SessionTTL %v < 1s (etcd leases are whole seconds)", c.SessionTTL))
	}
	if c.MaxConcurrentWorkflows < 1 {
		errs = append(errs, fmt.Errorf("controller: MaxConcurrentWorkflows %d < 1", c.MaxConcurrentWorkflows))
	}
	if c.RetryMin <= 0 || c.RetryMax < c.RetryMin {
		errs = append(errs, fmt.Errorf("controller: need 0 < RetryMin (%v) <= RetryMax (%v)", c.RetryMin, c.RetryMax))
	}
	if c.CellCallTimeout <= 0 {
		errs = append(errs, fmt.Errorf("controller: CellCallTimeout %v <= 0", c.CellCallTimeout))
	}
	errs = append(errs, c.Moves.Validate())
	errs = append(errs, c.Failover.Validate(), c.AutoPromote.Validate(), c.TokenKeys.Validate())
	return errors.Join(errs...)
}
