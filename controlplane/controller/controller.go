package controller

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/cellplane/cellplane/controlplane/catalog"
	"github.com/cellplane/cellplane/controlplane/intent"
	"github.com/cellplane/cellplane/controlplane/topo"
	"github.com/cellplane/cellplane/internal/retry"
	cellv1 "github.com/cellplane/cellplane/proto/cellplane/cell/v1"
	cpv1 "github.com/cellplane/cellplane/proto/cellplane/controlplane/v1"
)

// Cells is what the controller asks of cells: everything tenant creates
// and deletes, moves, drains, standbys and failovers need (implemented
// over CellService by package cellclient; by fakes in tests). Every call is
// idempotent for a given request id. It is a required collaborator: New
// refuses a nil one.
type Cells interface {
	// SetTenant sets a tenant's role and epoch on a cell (STANDBY: with
	// the cell it replicates from, and whether it keeps its data) and
	// returns the tenant's record there; for OWNER and FENCED the record's
	// tseq is that transition's.
	SetTenant(ctx context.Context, cell string, req *cellv1.SetTenantRequest) (*cellv1.TenantInfo, error)
	// GetTenant reads a tenant's record on a cell's leader, with its
	// replication stream when it is a STANDBY there (nil when none runs).
	GetTenant(ctx context.Context, cell, tenant string) (*cellv1.TenantInfo, *cellv1.ReplicationStatus, error)
	// DeleteTenant removes the tenant's data from cell if the guard in req
	// holds there (no error if the cell does not know the tenant); a guard
	// that does not hold deletes nothing and is WRONG_CELL or STALE_EPOCH
	// (isDeleteRefused).
	DeleteTenant(ctx context.Context, cell string, req *cellv1.DeleteTenantRequest) error
}

// Controller is one control-plane replica's controller. Run campaigns for
// leadership; while it leads, it drives every recorded workflow to its end.
type Controller struct {
	cfg   Config
	st    topo.Store
	cells Cells
	log   *slog.Logger

	leading atomic.Bool
	m       metrics
	mm      moveMetrics
	fm      failoverMetrics
}

// New returns a controller; Run starts it. st and cells are required.
func New(st topo.Store, cells Cells, cfg Config) (*Controller, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	switch {
	case st == nil:
		return nil, errors.New("controller: no topo store")
	case cells == nil:
		return nil, errors.New("controller: no Cells (the client that calls cells)")
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	return &Controller{cfg: cfg, st: st, cells: cells, log: log.With("controller", cfg.ID), m: newMetrics(), mm: newMoveMetrics(), fm: newFailoverMetrics()}, nil
}

// backoff returns the delays of one retry loop: RetryMin doubling up to
// RetryMax, with full jitter (internal/retry).
func (c *Controller) backoff() *retry.Backoff {
	return retry.Policy{Min: c.cfg.RetryMin, Max: c.cfg.RetryMax}.Backoff()
}

// IsLeader reports whether this replica leads right now.
func (c *Controller) IsLeader() bool { return c.leading.Load() }

// Collectors returns the controller's Prometheus collectors.
func (c *Controller) Collectors() []prometheus.Collector {
	return append(append(c.m.collectors(), c.mm.collectors()...), c.fm.collectors()...)
}

// Run campaigns, leads while elected, and campaigns again when leadership
// is lost, until ctx ends; then it resigns (so a successor takes over at
// once) and returns nil. Store errors are retried with backoff.
func (c *Controller) Run(ctx context.Context) error {
	backoff := c.backoff()
	for ctx.Err() == nil {
		err := c.campaignAndLead(ctx)
		if ctx.Err() != nil {
			break
		}
		if err != nil {
			wait := backoff.Next()
			c.log.Warn("controller election failed; retrying", "err", err, "retry_in", wait)
			if retry.Sleep(ctx, wait) != nil {
				break
			}
			continue
		}
		backoff.Reset()
	}
	return nil
}

func (c *Controller) campaignAndLead(ctx context.Context) error {
	sess, err := c.st.NewSession(ctx, c.cfg.SessionTTL)
	if err != nil {
		return fmt.Errorf("new session: %w", err)
	}
	defer func() {
		if !c.cfg.TestingKnobs.Abandon {
			_ = sess.Close()
		}
	}()
	value := catalog.Encode(&cpv1.ControllerLeader{Id: c.cfg.ID, GrpcAddr: c.cfg.Advertise, Since: timestamppb.Now()})
	lead, err := c.st.Campaign(ctx, sess, topo.ControllerElection, value)
	if err != nil {
		return fmt.Errorf("campaign: %w", err)
	}
	c.log.Info("became controller leader", "key", lead.Key())
	c.leading.Store(true)
	c.m.leader.Set(1)
	defer func() {
		c.leading.Store(false)
		c.m.leader.Set(0)
		if c.cfg.TestingKnobs.Abandon {
			return
		}
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		_ = lead.Resign(rctx)
		cancel()
	}()

	lctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-lead.Done():
		case <-sess.Done():
		case <-lctx.Done():
		}
		cancel()
	}()
	err = c.lead(lctx, lead)
	if ctx.Err() == nil {
		c.log.Warn("lost controller leadership", "err", err)
	}
	return nil
}

// lead drives workflows until lctx ends: every recorded one, then each new
// one the watch shows.
func (c *Controller) lead(ctx context.Context, lead topo.Leadership) error {
	r := &runner{c: c, lead: lead, running: map[string]bool{}, sem: make(chan struct{}, c.cfg.MaxConcurrentWorkflows)}
	defer r.wg.Wait()
	r.wg.Add(1)
	go func() { defer r.wg.Done(); r.leadMoves(ctx) }() // moves, drains, standbys: move_runner.go
	r.wg.Add(1)
	go func() { defer r.wg.Done(); r.leadFailovers(ctx) }() // failovers and the promotion policy: failover.go
	r.wg.Add(1)
	go func() { defer r.wg.Done(); r.rotateTokenKeys(ctx) }() // tenant-token keys: tokenkeys.go
	r.wg.Add(1)
	go func() { defer r.wg.Done(); r.leadQuotas(ctx) }() // max_bytes changes to cells: quota.go
	r.follow(ctx, topo.WorkflowsPrefix, func(ev topo.Event) { r.consider(ctx, ev) })
	return ctx.Err()
}

// runner tracks the workflows one leadership term drives.
type runner struct {
	c    *Controller
	lead topo.Leadership
	sem  chan struct{}
	wg   sync.WaitGroup

	mu      sync.Mutex
	running map[string]bool
}

// consider starts a worker for a workflow record unless one runs already
// or the workflow has failed for good.
func (r *runner) consider(ctx context.Context, ev topo.Event) {
	rec, ok, err := catalog.WorkflowEvent(ev)
	switch {
	case !ok:
		return
	case err != nil:
		r.c.log.Error("undecodable workflow record; skipping it", "key", ev.KV.Key, "err", err)
		return
	case rec.Value.GetStep() == cpv1.WorkflowStep_WORKFLOW_STEP_FAILED:
		return
	}
	id := rec.Parsed.ID
	r.spawn(ctx, "workflow:"+id, r.sem, func(ctx context.Context) { r.drive(ctx, id) })
}

// drive runs one workflow step by step until it ends, fails for good, or
// this replica stops leading. Each iteration re-reads the record, so it
// always acts on the recorded step.
func (r *runner) drive(ctx context.Context, id string) {
	c := r.c
	backoff := c.backoff()
	for ctx.Err() == nil {
		wf, v, err := catalog.GetWorkflow(ctx, c.st, id)
		if errors.Is(err, topo.ErrNotFound) {
			return // finished (by us or a predecessor)
		}
		if err == nil {
			if wf.GetStep() == cpv1.WorkflowStep_WORKFLOW_STEP_FAILED {
				return
			}
			if k := c.cfg.TestingKnobs.BeforeStep; k != nil {
				if kerr := k(ctx, wf); kerr != nil {
					c.log.Debug("testing knob stopped the workflow", "workflow", id, "step", wf.GetStep().String())
					return
				}
			}
			err = r.step(ctx, wf, v)
		}
		switch {
		case err == nil || errors.Is(err, errConflict):
			backoff.Reset()
			continue
		case errors.Is(err, errNotLeader) || ctx.Err() != nil:
			return
		}
		c.m.stepErrors.WithLabelValues(wf.GetKind().String()).Inc()
		wait := backoff.Next()
		c.log.Warn("workflow step failed; retrying", "workflow", id, "tenant", wf.GetTenant(), "step", wf.GetStep().String(), "err", err, "retry_in", wait)
		if retry.Sleep(ctx, wait) != nil {
			return
		}
	}
}

var (
	// errNotLeader: a guarded write found this replica no longer leads
	// (the intents the leader records itself fail the same way).
	errNotLeader = intent.ErrNotLeader
	// errConflict: a record changed under a step; re-read and go on.
	errConflict = errors.New("controller: record changed concurrently")
)

// commit writes ops in one transaction guarded by this replica's
// leadership key (condition 0) and by conds. A failed guard is
// errNotLeader (a deposed leader writes nothing); a failed cond is
// errConflict.
func (r *runner) commit(ctx context.Context, conds []topo.Cond, ops []topo.Op) error {
	all := append([]topo.Cond{topo.IfVersion(r.lead.Key(), r.lead.Version())}, conds...)
	_, err := r.c.st.Txn(ctx, all, ops)
	var ce *topo.CondError
	if errors.As(err, &ce) {
		if ce.Index == 0 {
			return errNotLeader
		}
		return fmt.Errorf("%w: %v", errConflict, err)
	}
	return err
}
