package controller

import (
	"errors"
	"fmt"
	"slices"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	cpv1 "github.com/cellplane/cellplane/proto/cellplane/controlplane/v1"
)

// FailoverConfig configures switchovers and emergency promotions
// (Config.Failover).
type FailoverConfig struct {
	// MaxConcurrent bounds the failover steps the leader runs at once (a
	// cell failover starts one per tenant; waits do not hold a slot).
	MaxConcurrent int
	// PollInterval paces the leader's reads while it waits: the standby
	// catching up to the fence (switchover), the old owner's authority key
	// (emergency).
	PollInterval time.Duration
	// CutoverPollInterval paces the reads of a switchover's standby
	// between the fence and the promotion: clients' writes are paused then.
	CutoverPollInterval time.Duration
	// LeaseMargin is how long an emergency promotion waits after it saw
	// the old owner cell's authority key gone (its lease expired in etcd)
	// before it promotes the standby. The cell already stops acknowledging
	// writes a drift margin before etcd expires its lease; this margin is
	// the control plane's own slack on top (and covers clock skew between
	// controller replicas, which record the deadline as a timestamp).
	LeaseMargin time.Duration
	// HistoryMax and HistoryTTL bound the finished failovers (DONE,
	// FAILED) kept for 'cellctl failover list|get': older or more are
	// deleted every HousekeepingInterval. A failover waiting for its old
	// owner's report is never deleted.
	HistoryMax           int
	HistoryTTL           time.Duration
	HousekeepingInterval time.Duration
}

// DefaultFailoverConfig returns the defaults.
func DefaultFailoverConfig() FailoverConfig {
	return FailoverConfig{
		MaxConcurrent:        16,
		PollInterval:         200 * time.Millisecond,
		CutoverPollInterval:  5 * time.Millisecond,
		LeaseMargin:          500 * time.Millisecond,
		HistoryMax:           10000, // a cell failover writes one per tenant; the standby reconciler reads DONE switchovers
		HistoryTTL:           7 * 24 * time.Hour,
		HousekeepingInterval: time.Minute,
	}
}

// Validate reports a configuration that cannot work.
func (c FailoverConfig) Validate() error {
	var errs []error
	if c.MaxConcurrent < 1 {
		errs = append(errs, fmt.Errorf("controller: Failover.MaxConcurrent %d < 1", c.MaxConcurrent))
	}
	if c.PollInterval <= 0 {
		errs = append(errs, fmt.Errorf("controller: Failover.PollInterval %v <= 0", c.PollInterval))
	}
	if c.CutoverPollInterval <= 0 {
		errs = append(errs, fmt.Errorf("controller: Failover.CutoverPollInterval %v <= 0", c.CutoverPollInterval))
	}
	if c.HistoryMax < 1 || c.HistoryTTL <= 0 || c.HousekeepingInterval <= 0 {
		errs = append(errs, fmt.Errorf("controller: Failover.HistoryMax (%d) must be ≥ 1, HistoryTTL (%v) and HousekeepingInterval (%v) > 0", c.HistoryMax, c.HistoryTTL, c.HousekeepingInterval))
	}
	if c.LeaseMargin < 0 {
		errs = append(errs, fmt.Errorf("controller: Failover.LeaseMargin %v < 0", c.LeaseMargin))
	}
	return errors.Join(errs...)
}

// AutoPromoteConfig is the automatic failover policy (Config.AutoPromote):
// when a cell has been unhealthy (no published leader, or fewer live
// members than a quorum, or none at all) for UnhealthyFor, the leader
// starts an emergency promotion for each tenant the cell owns whose
// standby is in a healthy cell. Off by default: promoting loses the writes
// the standby had not received (reported per failover).
type AutoPromoteConfig struct {
	Enabled bool
	// UnhealthyFor is how long a cell must stay unhealthy, as seen by the
	// leader (a new leader starts counting afresh).
	UnhealthyFor time.Duration
	// Regions limits the policy to the cells of these regions (empty: all).
	Regions []string
	// Interval paces the policy's passes over the cells' health.
	Interval time.Duration
	// MaxConcurrent bounds the policy's promotions in flight (recorded and
	// not yet promoted); more wait for the next passes.
	MaxConcurrent int
	// ResumeGrace is how long the policy starts no promotion after the
	// leader regained sight of the cells' health: at the start of its term,
	// and after it could not read the health for BlindAfter (etcd
	// unreachable, or this process stalled). After an etcd outage every
	// cell's registration may have lapsed and cells re-register and
	// re-publish their leaders at their own pace; what the leader sees
	// then is the outage, not dead cells (scenario S22). It should exceed
	// the cells' registry TTL plus their registrar's retry (defaults 5 s +
	// 2 s). 0: no grace.
	ResumeGrace time.Duration
	// BlindAfter is the gap between two successful reads of the cells'
	// health beyond which the policy counts itself blind (it forgets what
	// it saw and waits ResumeGrace). Must exceed Interval when ResumeGrace
	// is set.
	BlindAfter time.Duration
}

// DefaultAutoPromoteConfig returns the defaults (disabled).
func DefaultAutoPromoteConfig() AutoPromoteConfig {
	return AutoPromoteConfig{UnhealthyFor: 10 * time.Second, Interval: time.Second, MaxConcurrent: 16,
		ResumeGrace: 20 * time.Second, BlindAfter: 3 * time.Second}
}

// Validate reports a configuration that cannot work.
func (c AutoPromoteConfig) Validate() error {
	var errs []error
	if c.UnhealthyFor <= 0 {
		errs = append(errs, fmt.Errorf("controller: AutoPromote.UnhealthyFor %v <= 0", c.UnhealthyFor))
	}
	if c.Interval <= 0 {
		errs = append(errs, fmt.Errorf("controller: AutoPromote.Interval %v <= 0", c.Interval))
	}
	if c.MaxConcurrent < 1 {
		errs = append(errs, fmt.Errorf("controller: AutoPromote.MaxConcurrent %d < 1", c.MaxConcurrent))
	}
	if c.ResumeGrace < 0 {
		errs = append(errs, fmt.Errorf("controller: AutoPromote.ResumeGrace %v < 0", c.ResumeGrace))
	}
	if c.ResumeGrace > 0 && c.BlindAfter <= c.Interval {
		errs = append(errs, fmt.Errorf("controller: AutoPromote.BlindAfter %v must exceed Interval %v when ResumeGrace is set", c.BlindAfter, c.Interval))
	}
	for _, r := range c.Regions {
		if r == "" {
			errs = append(errs, errors.New("controller: AutoPromote.Regions lists an empty region"))
		}
	}
	return errors.Join(errs...)
}

// Policy returns c as a stored policy record: what GetFailoverPolicy
// answers while none is stored.
func (c AutoPromoteConfig) Policy() *cpv1.FailoverPolicy {
	return &cpv1.FailoverPolicy{Enabled: c.Enabled, UnhealthyFor: durationpb.New(c.UnhealthyFor),
		Regions: slices.Clone(c.Regions), MaxConcurrent: uint32(c.MaxConcurrent)}
}

// Apply returns c overridden by the stored policy p: enabled and regions
// as p says, unhealthy_for and max_concurrent when set. Interval,
// ResumeGrace and BlindAfter stay the process's.
func (c AutoPromoteConfig) Apply(p *cpv1.FailoverPolicy) AutoPromoteConfig {
	c.Enabled = p.GetEnabled()
	if d := p.GetUnhealthyFor().AsDuration(); d > 0 {
		c.UnhealthyFor = d
	}
	c.Regions = slices.Clone(p.GetRegions())
	if m := p.GetMaxConcurrent(); m > 0 {
		c.MaxConcurrent = int(m)
	}
	return c
}

// allows reports whether the policy covers region.
func (c AutoPromoteConfig) allows(region string) bool {
	if len(c.Regions) == 0 {
		return true
	}
	for _, r := range c.Regions {
		if r == region {
			return true
		}
	}
	return false
}
