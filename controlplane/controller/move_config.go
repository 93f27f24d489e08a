package controller

import (
	"errors"
	"fmt"
	"time"
)

// MoveConfig configures what the leader does for live tenant moves, cell
// drains and standbys (Config.Moves).
type MoveConfig struct {
	// MaxConcurrent bounds the moves the leader drives at once; more are
	// recorded and wait in PREPARING.
	MaxConcurrent int
	// PollInterval paces the leader's reads of a target's progress while
	// it copies, catches up and applies the fence.
	PollInterval time.Duration
	// CutoverPollInterval paces the same reads between the fence and the
	// flip: clients' writes are paused then, so the leader looks often.
	CutoverPollInterval time.Duration
	// LagBound is the replication lag (events) under which the target is
	// close enough to fence the source: the write pause is about the time
	// to apply this many events.
	LagBound uint64
	// PrepareTimeout, CopyTimeout and CatchUpTimeout bound the waits before
	// the fence (from when the leader started waiting; a new leader starts
	// afresh). A move that exceeds one fails and is undone: the target's
	// copy is deleted and the tenant stays on its source.
	PrepareTimeout, CopyTimeout, CatchUpTimeout time.Duration
	// CutoverWarnAfter: after the fence a move only goes forward; a wait
	// longer than this is reported (log at Warn, error_message on the move)
	// and goes on.
	CutoverWarnAfter time.Duration
	// CleanupGrace is how long the source keeps its (FENCED) copy after
	// the flip, so that routers have followed the placement before the
	// data goes.
	CleanupGrace time.Duration
	// HistoryMax and HistoryTTL bound the finished moves kept for
	// 'cellctl move list --all': older or more are deleted.
	HistoryMax int
	HistoryTTL time.Duration
	// HousekeepingInterval paces the leader's pass over moves/ (history
	// bound, metrics).
	HousekeepingInterval time.Duration

	// DrainConcurrency is the default number of moves a drain runs at once.
	DrainConcurrency int
	// DrainInterval paces the leader's pass over draining cells.
	DrainInterval time.Duration
	// DrainRetryAfter: a tenant whose drain move failed or was cancelled is
	// tried again after this long.
	DrainRetryAfter time.Duration

	// StandbyResyncInterval paces the standby reconciler's full pass over
	// the placements (it also follows every placement change).
	StandbyResyncInterval time.Duration
	// StandbyConcurrency bounds the standby repairs run at once.
	StandbyConcurrency int
}

// DefaultMoveConfig returns the defaults.
func DefaultMoveConfig() MoveConfig {
	return MoveConfig{
		MaxConcurrent:         16,
		PollInterval:          200 * time.Millisecond,
		CutoverPollInterval:   5 * time.Millisecond,
		LagBound:              100,
		PrepareTimeout:        5 * time.Minute,
		CopyTimeout:           30 * time.Minute,
		CatchUpTimeout:        10 * time.Minute,
		CutoverWarnAfter:      time.Minute,
		CleanupGrace:          30 * time.Second,
		HistoryMax:            1000,
		HistoryTTL:            24 * time.Hour,
		HousekeepingInterval:  10 * time.Second,
		DrainConcurrency:      4,
		DrainInterval:         2 * time.Second,
		DrainRetryAfter:       5 * time.Minute,
		StandbyResyncInterval: time.Minute,
		StandbyConcurrency:    8,
	}
}

// Validate reports a configuration that cannot work.
func (c MoveConfig) Validate() error {
	var errs []error
	positive := func(name string, d time.Duration) {
		if d <= 0 {
			errs = append(errs, fmt.Errorf("controller: Moves.%s %v <= 0", name, d))
		}
	}
	positive("PollInterval", c.PollInterval)
	positive("CutoverPollInterval", c.CutoverPollInterval)
	positive("PrepareTimeout", c.PrepareTimeout)
	positive("CopyTimeout", c.CopyTimeout)
	positive("CatchUpTimeout", c.CatchUpTimeout)
	positive("CutoverWarnAfter", c.CutoverWarnAfter)
	positive("HistoryTTL", c.HistoryTTL)
	positive("HousekeepingInterval", c.HousekeepingInterval)
	positive("DrainInterval", c.DrainInterval)
	positive("StandbyResyncInterval", c.StandbyResyncInterval)
	if c.CleanupGrace < 0 {
		errs = append(errs, fmt.Errorf("controller: Moves.CleanupGrace %v < 0", c.CleanupGrace))
	}
	if c.DrainRetryAfter < 0 {
		errs = append(errs, fmt.Errorf("controller: Moves.DrainRetryAfter %v < 0", c.DrainRetryAfter))
	}
	if c.MaxConcurrent < 1 || c.DrainConcurrency < 1 || c.StandbyConcurrency < 1 {
		errs = append(errs, errors.New("controller: Moves.MaxConcurrent, DrainConcurrency and StandbyConcurrency must be >= 1"))
	}
	if c.HistoryMax < 0 {
		errs = append(errs, fmt.Errorf("controller: Moves.HistoryMax %d < 0", c.HistoryMax))
	}
	return errors.Join(errs...)
}
