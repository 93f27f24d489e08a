package replication

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/cellplane/cellplane/cells/store"
	"github.com/cellplane/cellplane/internal/cperr"
	"github.com/cellplane/cellplane/internal/retry"
	"github.com/cellplane/cellplane/internal/rpcerr"
	cellv1 "github.com/cellplane/cellplane/proto/cellplane/cell/v1"
	contextv1 "github.com/cellplane/cellplane/proto/cellplane/context/v1"
	replicationv1 "github.com/cellplane/cellplane/proto/cellplane/replication/v1"
)

// SinkStore is what the sink needs from the standby cell's store.
// *store.Store implements it.
type SinkStore interface {
	Propose(ctx context.Context, cmd *cellv1.Command) (*cellv1.CommandResult, error)
	// Submit queues a command and returns before its result: commands
	// submitted one after another enter the log in that order.
	Submit(ctx context.Context, cmd *cellv1.Command) (*store.Pending, error)
	ReadCell(ctx context.Context, opts store.ReadOptions, fn func(*store.CellView) error) error
	LeaderTerm() (uint64, bool)
}

var _ SinkStore = (*store.Store)(nil)

// Connector returns a connection to any member of a cell (members forward
// what needs the leader). The sink does not close it.
type Connector func(ctx context.Context, cell string) (grpc.ClientConnInterface, error)

// SinkConfig configures the standby side.
type SinkConfig struct {
	// Connect reaches a source cell (required).
	Connect Connector
	// Rescan is how often the leader re-lists its STANDBY tenants (Notify
	// starts a new standby's stream at once).
	Rescan time.Duration
	// AckInterval is how often the applied position is reported to the
	// source (it keeps the change log the standby still needs).
	AckInterval time.Duration
	// RetryMin and RetryMax bound the backoff of a failing stream
	// (internal/retry: doubling, with full jitter).
	RetryMin, RetryMax time.Duration
	// RejectRetry is how long a stream waits after the standby refused its
	// source's events (REPLICATION_EVENT_REJECTED: another tenant's
	// command, a forbidden operation; docs/security.md). The same events
	// would be refused again, so it does not spin: it stays at its
	// position, reports state REJECTED and tries again this much later
	// (the source may have been fixed or the standby re-pointed).
	RejectRetry time.Duration
	// MaxBatchEvents and MaxBatchBytes are asked of the source per message.
	MaxBatchEvents uint32
	MaxBatchBytes  uint64
	// ReadAhead is how many received messages wait while the applies are
	// in Raft; MaxApplyEvents bounds the events coalesced into one
	// proposal.
	ReadAhead      int
	MaxApplyEvents uint32
	// MaxInflightApplies is how many apply proposals a stream keeps in
	// Raft at once (1: one at a time). They are submitted in tseq order
	// and enter the log in that order; the first that fails ends the
	// stream, which resumes from the standby's applied tseq (a later one
	// that was applied meanwhile is skipped by tseq, one that would leave
	// a gap is refused whole by the state machine).
	MaxInflightApplies int
	// ExportChunkBytes is asked of the source per export chunk (one Raft
	// entry each on the standby).
	ExportChunkBytes uint32
	// CallTimeout bounds one apply or import proposal and one ack.
	CallTimeout time.Duration
	// MaxConcurrentBootstraps caps the standby tenants of this cell that
	// import an export at once (finding M5): after a source's log was
	// trimmed, or when many standbys are added together, the others wait
	// for a slot instead of all pulling exports from the source cell and
	// proposing them through this cell's Raft at the same time.
	MaxConcurrentBootstraps int
	Logger                  *slog.Logger
	// Metrics says what the lag metrics show (no tenant ids by default).
	Metrics MetricsConfig
	// OnApplied, when set, is called after each applied batch (tests and
	// the replication benchmark measure delays with it).
	OnApplied func(tenant string, events []*cellv1.ChangeEvent, at time.Time)
}

// DefaultSinkConfig returns the defaults; Connect must still be set.
func DefaultSinkConfig() SinkConfig {
	return SinkConfig{
		Rescan:             time.Second,
		AckInterval:        time.Second,
		RetryMin:           50 * time.Millisecond,
		RetryMax:           2 * time.Second,
		RejectRetry:        time.Minute,
		MaxBatchEvents:     512,
		MaxBatchBytes:      1 << 20,
		ReadAhead:          64,
		MaxApplyEvents:     2048,
		MaxInflightApplies: 4,
		ExportChunkBytes:   1 << 20,
		CallTimeout:        10 * time.Second,
		Metrics:            DefaultMetricsConfig(),

		MaxConcurrentBootstraps: 2,
	}
}

// Validate reports every problem with c's knobs (Connect is checked by
// NewSink: a node sets it when it starts).
func (c SinkConfig) Validate() error {
	var errs []error
	for name, d := range map[string]time.Duration{"Rescan": c.Rescan, "AckInterval": c.AckInterval, "RetryMin": c.RetryMin, "RetryMax": c.RetryMax, "RejectRetry": c.RejectRetry, "CallTimeout": c.CallTimeout} {
		if d <= 0 {
			errs = append(errs, fmt.Errorf("replication: SinkConfig.%s must be > 0, got %v", name, d))
		}
	}
	if c.RetryMax < c.RetryMin {
		errs = append(errs, fmt.Errorf("replication: RetryMax %v is below RetryMin %v", c.RetryMax, c.RetryMin))
	}
	if c.MaxBatchEvents == 0 || c.MaxBatchBytes == 0 || c.ExportChunkBytes == 0 {
		errs = append(errs, errors.New("replication: MaxBatchEvents, MaxBatchBytes and ExportChunkBytes must be > 0"))
	}
	if c.ReadAhead < 1 || c.MaxApplyEvents < c.MaxBatchEvents {
		errs = append(errs, fmt.Errorf("replication: ReadAhead must be ≥ 1 (got %d) and MaxApplyEvents ≥ MaxBatchEvents (got %d < %d)", c.ReadAhead, c.MaxApplyEvents, c.MaxBatchEvents))
	}
	if c.MaxInflightApplies < 1 {
		errs = append(errs, fmt.Errorf("replication: SinkConfig.MaxInflightApplies must be ≥ 1, got %d", c.MaxInflightApplies))
	}
	if c.MaxConcurrentBootstraps < 1 {
		errs = append(errs, fmt.Errorf("replication: SinkConfig.MaxConcurrentBootstraps must be ≥ 1, got %d", c.MaxConcurrentBootstraps))
	}
	if err := c.Metrics.Validate(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// Sink runs, on the standby cell's Raft leader, one stream per STANDBY
// tenant: it bootstraps the tenant from an export of its source when
// needed, then applies the source's change stream through this cell's
// Raft, acknowledges its position to the source, and re-bootstraps when
// the source no longer holds that position. Streams stop when this node
// stops leading (the new leader's sink takes over from the replicated
// applied tseq) or the tenant stops being a standby.
type Sink struct {
	st  SinkStore
	cfg SinkConfig
	log *slog.Logger
	m   *sinkMetrics
	lag *lagCollector

	poke chan struct{}
	// bootSlots holds a token per bootstrap running
	// (MaxConcurrentBootstraps).
	bootSlots chan struct{}

	mu      sync.Mutex
	streams map[string]*stream
	wg      sync.WaitGroup
}

// NewSink returns a sink; Run drives it.
func NewSink(st SinkStore, cfg SinkConfig) (*Sink, error) {
	if cfg.Connect == nil {
		return nil, errors.New("replication: SinkConfig.Connect is required")
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	s := &Sink{st: st, cfg: cfg, log: log.With("component", "replication-sink"), m: newSinkMetrics(),
		poke: make(chan struct{}, 1), streams: map[string]*stream{}, bootSlots: make(chan struct{}, cfg.MaxConcurrentBootstraps)}
	s.lag = newLagCollector(s, cfg.Metrics)
	return s, nil
}

// Collectors returns the sink's metrics. None carries a tenant id unless
// SinkConfig.Metrics.TenantLabels is set (see MetricsConfig).
func (s *Sink) Collectors() []prometheus.Collector { return append(s.m.collectors(), s.lag) }

// lags reads every stream's lag at now, and counts the streams by state.
func (s *Sink) lags(now time.Time) ([]tenantLag, map[string]int) {
	s.mu.Lock()
	streams := make([]*stream, 0, len(s.streams))
	for _, st := range s.streams {
		streams = append(streams, st)
	}
	s.mu.Unlock()
	lags := make([]tenantLag, 0, len(streams))
	states := make(map[string]int, len(streamStates))
	for _, st := range streams {
		st.mu.Lock()
		l := tenantLag{tenant: st.tenant, events: st.lagEventsLocked(), seconds: st.lagLocked(now).Seconds()}
		states[st.status.State]++
		st.mu.Unlock()
		lags = append(lags, l)
	}
	return lags, states
}

// Notify tells the sink a tenant's role changed here (a new standby
// starts streaming without waiting for the next rescan).
func (s *Sink) Notify(string) {
	select {
	case s.poke <- struct{}{}:
	default:
	}
}

// Run manages the streams until ctx ends; then it stops them all and
// returns when they have.
func (s *Sink) Run(ctx context.Context) {
	t := time.NewTicker(s.cfg.Rescan)
	defer t.Stop()
	defer func() {
		s.stopAll()
		s.wg.Wait()
	}()
	for {
		if _, leader := s.st.LeaderTerm(); leader {
			if err := s.reconcile(ctx); err != nil && ctx.Err() == nil {
				s.log.Debug("listing standby tenants failed", "err", err)
			}
		} else {
			s.stopAll()
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-s.poke:
		}
	}
}

// reconcile starts a stream for every STANDBY tenant with a source and
// stops the others.
func (s *Sink) reconcile(ctx context.Context) error {
	want := map[string]string{}
	after := ""
	for {
		var page []*cellv1.TenantInfo
		var more bool
		err := s.st.ReadCell(ctx, store.ReadOptions{Consistency: contextv1.Consistency_CONSISTENCY_LEADER, IgnoreAuthority: true}, func(v *store.CellView) error {
			var err error
			page, more, err = v.ListTenants(after, 1000)
			return err
		})
		if err != nil {
			return err
		}
		for _, t := range page {
			if t.GetRole() == cellv1.Role_ROLE_STANDBY && t.GetSourceCell() != "" {
				want[t.GetTenant()] = t.GetSourceCell()
			}
		}
		if !more || len(page) == 0 {
			break
		}
		after = page[len(page)-1].GetTenant()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for tenant, st := range s.streams {
		if src, ok := want[tenant]; !ok || src != st.source {
			st.cancel()
			delete(s.streams, tenant)
		}
	}
	for tenant, src := range want {
		if _, ok := s.streams[tenant]; ok {
			continue
		}
		sctx, cancel := context.WithCancel(ctx)
		st := &stream{sink: s, tenant: tenant, source: src, cancel: cancel,
			log: s.log.With("tenant", tenant, "source_cell", src)}
		st.status.SourceCell = src
		st.status.State = stateStarting
		s.streams[tenant] = st
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			st.run(sctx)
		}()
	}
	s.m.streams.Set(float64(len(s.streams)))
	return nil
}

func (s *Sink) stopAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for tenant, st := range s.streams {
		st.cancel()
		delete(s.streams, tenant)
	}
	s.m.streams.Set(0)
}

// Status reports a tenant's stream (nil when this node runs none for it).
func (s *Sink) Status(tenant string) *cellv1.ReplicationStatus {
	s.mu.Lock()
	st := s.streams[tenant]
	s.mu.Unlock()
	if st == nil {
		return nil
	}
	return st.snapshot()
}

// stream is one standby tenant's replication.
type stream struct {
	sink   *Sink
	tenant string
	source string
	cancel context.CancelFunc
	log    *slog.Logger

	mu     sync.Mutex
	status cellv1.ReplicationStatus
	// pendingSince is the source time of the oldest change not applied
	// yet (zero when caught up).
	pendingSince time.Time
	// inflightSince holds the source time of the first event of each
	// apply in Raft, oldest first (pendingSince moves to the next one
	// when an apply completes).
	inflightSince []time.Time
	ackedTseq     uint64
}

func (st *stream) snapshot() *cellv1.ReplicationStatus {
	st.mu.Lock()
	defer st.mu.Unlock()
	out := &cellv1.ReplicationStatus{
		SourceCell: st.status.SourceCell, AppliedTseq: st.status.AppliedTseq, SourceTseq: st.status.SourceTseq,
		State: st.status.State, LastError: st.status.LastError, Bootstraps: st.status.Bootstraps,
		SourceRole: st.status.SourceRole, SourceEpoch: st.status.SourceEpoch,
	}
	out.LagEvents = st.lagEventsLocked()
	out.Lag = durationpb.New(st.lagLocked(time.Now()))
	return out
}

// lagEventsLocked is how many events the standby is behind the source's
// newest it knows of.
func (st *stream) lagEventsLocked() uint64 {
	if st.status.SourceTseq > st.status.AppliedTseq {
		return st.status.SourceTseq - st.status.AppliedTseq
	}
	return 0
}

// lagLocked is the age at now of the oldest change not applied yet (0
// when caught up).
func (st *stream) lagLocked(now time.Time) time.Duration {
	if st.status.SourceTseq <= st.status.AppliedTseq || st.pendingSince.IsZero() {
		return 0
	}
	return max(0, now.Sub(st.pendingSince))
}

func (st *stream) setState(state string, err error) {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.status.State = state
	if err != nil {
		st.status.LastError = err.Error()
	}
}

var (
	// errNotStandby: the tenant is no longer a standby of this source here.
	errNotStandby = errors.New("replication: tenant is no longer a standby of this source")
	// errBootstrap: the stream cannot continue; import an export first.
	errBootstrap = errors.New("replication: standby must bootstrap from an export")
)

// run keeps the stream going until ctx ends or the tenant is no longer a
// standby of the source.
func (st *stream) run(ctx context.Context) {
	s := st.sink
	backoff := retry.Policy{Min: s.cfg.RetryMin, Max: s.cfg.RetryMax}.Backoff()
	reason := "initial"
	for ctx.Err() == nil {
		rec, err := st.localRecord(ctx)
		if err == nil {
			if rec.GetRole() != cellv1.Role_ROLE_STANDBY || rec.GetSourceCell() != st.source {
				return
			}
			st.mu.Lock()
			st.status.AppliedTseq = rec.GetTseq()
			st.mu.Unlock()
			if !rec.GetBootstrapped() {
				err = st.bootstrap(ctx, reason)
			} else {
				err = st.follow(ctx, rec.GetTseq())
			}
		}
		switch {
		case ctx.Err() != nil:
			return
		case errors.Is(err, errNotStandby):
			return
		case errors.Is(err, cperr.ErrReplicationEventRejected):
			// Permanent for this position: no bootstrap, no fast retry.
			s.m.rejected.Inc()
			st.setState(stateRejected, err)
			st.mu.Lock()
			at := st.status.AppliedTseq
			st.mu.Unlock()
			st.log.Error("the standby refused its source's change events; the stream holds its position",
				"tseq", at, "err", err, "retry_in", s.cfg.RejectRetry)
			if retry.Sleep(ctx, s.cfg.RejectRetry) != nil {
				return
			}
			continue
		case errors.Is(err, errBootstrap):
			reason = "trimmed"
			if err := st.markForBootstrap(ctx); err != nil {
				st.log.Warn("cannot reset the standby for a bootstrap", "err", err)
			} else {
				backoff.Reset()
				continue
			}
		case err == nil:
			backoff.Reset()
			continue
		}
		s.m.restarts.Inc()
		st.setState(stateRetrying, err)
		wait := backoff.Next()
		st.log.Warn("replication stream failed; retrying", "err", err, "retry_in", wait)
		if retry.Sleep(ctx, wait) != nil {
			return
		}
	}
}

func (st *stream) localRecord(ctx context.Context) (*cellv1.TenantInfo, error) {
	var info *cellv1.TenantInfo
	err := st.sink.st.ReadCell(ctx, store.ReadOptions{Consistency: contextv1.Consistency_CONSISTENCY_LEADER, IgnoreAuthority: true}, func(v *store.CellView) error {
		var err error
		info, err = v.Tenant(st.tenant)
		return err
	})
	if errors.Is(err, cperr.ErrTenantNotFound) {
		return nil, errNotStandby
	}
	return info, err
}

// markForBootstrap makes the next loop import an export: an empty first
// import chunk clears the tenant's data and its bootstrapped mark.
func (st *stream) markForBootstrap(ctx context.Context) error {
	_, err := st.propose(ctx, &cellv1.Command{Tenant: st.tenant, Op: &cellv1.Command_ImportTenant{ImportTenant: &cellv1.ImportTenantOp{First: true, SourceCell: st.source}}})
	return err
}

func (st *stream) propose(ctx context.Context, cmd *cellv1.Command) (*cellv1.CommandResult, error) {
	pctx, cancel := context.WithTimeout(ctx, st.sink.cfg.CallTimeout)
	defer cancel()
	res, err := st.sink.st.Propose(pctx, cmd)
	return res, proposeErr(err)
}

// proposeErr maps a proposal's error to what the stream does next.
func proposeErr(err error) error {
	switch {
	case errors.Is(err, cperr.ErrWrongCell), errors.Is(err, cperr.ErrTenantNotFound), errors.Is(err, cperr.ErrStaleEpoch):
		return fmt.Errorf("%w: %v", errNotStandby, err)
	case errors.Is(err, cperr.ErrChangesTrimmed):
		return fmt.Errorf("%w: %v", errBootstrap, err)
	}
	return err
}

// acquireBootstrap waits for a bootstrap slot (MaxConcurrentBootstraps)
// or ctx; release gives it back.
// It logs (on log) when it has to wait.
func (s *Sink) acquireBootstrap(ctx context.Context, log *slog.Logger) (release func(), err error) {
	select {
	case s.bootSlots <- struct{}{}:
	default:
		log.Info("standby bootstrap waits for a slot", "max_concurrent_bootstraps", s.cfg.MaxConcurrentBootstraps)
		select {
		case s.bootSlots <- struct{}{}:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return func() { <-s.bootSlots }, nil
}

// bootstrap imports a consistent export of the source, once a bootstrap
// slot is free.
func (st *stream) bootstrap(ctx context.Context, reason string) error {
	s := st.sink
	st.setState(stateBootstrapping, nil)
	release, err := s.acquireBootstrap(ctx, st.log)
	if err != nil {
		return err
	}
	defer release()
	conn, err := s.cfg.Connect(ctx, st.source)
	if err != nil {
		return err
	}
	start := time.Now()
	ectx, cancel := context.WithCancel(ctx)
	defer cancel()
	exp, err := replicationv1.NewReplicationServiceClient(conn).ExportTenant(ectx, &replicationv1.ExportTenantRequest{Tenant: st.tenant, ChunkBytes: s.cfg.ExportChunkBytes})
	if err != nil {
		return rpcerr.FromStatus(err)
	}
	first := true
	var rec *cellv1.TenantRecord
	for {
		chunk, err := exp.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return rpcerr.FromStatus(err)
		}
		op := &cellv1.ImportTenantOp{First: first, Pairs: chunk.GetPairs(), Record: chunk.GetRecord(), SourceCell: st.source}
		if _, err := st.propose(ctx, &cellv1.Command{Tenant: st.tenant, Op: &cellv1.Command_ImportTenant{ImportTenant: op}}); err != nil {
			return err
		}
		first = false
		s.m.importedBytes.Add(float64(chunkBytes(chunk)))
		if chunk.GetRecord() != nil {
			rec = chunk.GetRecord()
		}
	}
	if rec == nil {
		return errors.New("replication: export ended without the tenant record")
	}
	s.m.bootstraps.WithLabelValues(reason).Inc()
	st.mu.Lock()
	st.status.Bootstraps++
	st.status.AppliedTseq = rec.GetTseq()
	if rec.GetTseq() > st.status.SourceTseq {
		st.status.SourceTseq = rec.GetTseq()
	}
	st.mu.Unlock()
	st.log.Info("standby bootstrapped from an export", "reason", reason, "tseq", rec.GetTseq(), "took", time.Since(start).Round(time.Millisecond))
	return nil
}

// chunkBytes is the key and value bytes of an export chunk.
func chunkBytes(c *replicationv1.ExportTenantResponse) int {
	n := 0
	for _, kv := range c.GetPairs() {
		n += len(kv.GetKey()) + len(kv.GetValue())
	}
	return n
}

// follow applies the change stream after `after` until it fails.
//
// A receiver reads the stream ahead (ReadAhead messages); this goroutine
// coalesces what was received into one apply_changes proposal and
// submits it, keeping up to MaxInflightApplies in Raft (the store enters
// them in the log in submission order); a completer waits for their
// results in that order and records the new position. The first apply
// that fails ends the stream: the ones after it are not waited for (one
// that still applies is harmless: the next stream resumes from the
// standby's replicated tseq and skips what is applied, and one that would
// leave a gap is refused whole). Acks go from their own goroutine, off
// the apply path: their answer crosses the long link.
func (st *stream) follow(ctx context.Context, after uint64) error {
	s := st.sink
	conn, err := s.cfg.Connect(ctx, st.source)
	if err != nil {
		return err
	}
	sctx, cancel := context.WithCancel(ctx)
	var bg sync.WaitGroup
	defer func() {
		cancel()
		bg.Wait()
	}()
	rs, err := replicationv1.NewReplicationServiceClient(conn).StreamChanges(sctx, &replicationv1.StreamChangesRequest{
		Tenant: st.tenant, AfterTseq: after, MaxBatchEvents: s.cfg.MaxBatchEvents, MaxBatchBytes: s.cfg.MaxBatchBytes})
	if err != nil {
		return rpcerr.FromStatus(err)
	}
	st.setState(stateStreaming, nil)
	st.mu.Lock()
	st.inflightSince = st.inflightSince[:0]
	st.mu.Unlock()

	// The receiver: messages that arrive while the applies are in Raft
	// are coalesced into the next proposal, so the standby's apply
	// batches grow when it falls behind (like the owner's group commit).
	type received struct {
		msg *replicationv1.StreamChangesResponse
		err error
	}
	in := make(chan received, s.cfg.ReadAhead)
	bg.Add(2)
	go func() {
		defer bg.Done()
		for {
			msg, err := rs.Recv()
			select {
			case in <- received{msg, err}:
			case <-sctx.Done():
				return
			}
			if err != nil {
				return
			}
		}
	}()
	go func() {
		defer bg.Done()
		st.ackLoop(sctx, cellv1.NewCellServiceClient(conn))
	}()

	// The completer.
	type inflight struct {
		pd     *store.Pending
		ctx    context.Context
		cancel context.CancelFunc
		evs    []*cellv1.ChangeEvent
		msg    *replicationv1.StreamChangesResponse
	}
	slots := make(chan struct{}, s.cfg.MaxInflightApplies)
	pipe := make(chan inflight, s.cfg.MaxInflightApplies)
	stop := make(chan struct{}) // closed when an apply failed (applyErr)
	var applyErr error
	completed := make(chan struct{})
	go func() {
		defer close(completed)
		for a := range pipe {
			res, err := a.pd.Wait(a.ctx)
			a.cancel()
			if err != nil {
				err = proposeErr(err)
			} else {
				err = st.applied(a.evs, a.msg, res)
			}
			<-slots
			if err != nil {
				applyErr = err
				close(stop)
				for a := range pipe {
					a.cancel()
				}
				return
			}
		}
	}()
	// finish waits for the applies in flight (their positions count) and
	// returns the first failure in stream order.
	finish := func(err error) error {
		close(pipe)
		<-completed
		if applyErr != nil {
			return applyErr
		}
		return err
	}

	for {
		// A slot first: while MaxInflightApplies are in Raft, received
		// messages pile up and join the next proposal.
		select {
		case slots <- struct{}{}:
		case <-stop:
			return finish(nil)
		case <-ctx.Done():
			return finish(ctx.Err())
		}
		var r received
		select {
		case r = <-in:
		case <-stop:
			<-slots
			return finish(nil)
		case <-ctx.Done():
			<-slots
			return finish(ctx.Err())
		}
		if r.err != nil {
			<-slots
			return finish(streamErr(r.err))
		}
		msg := r.msg
		evs := msg.GetEvents()
		var pendingErr error
	coalesce:
		for uint32(len(evs)) < s.cfg.MaxApplyEvents {
			select {
			case more := <-in:
				if more.err != nil {
					pendingErr = more.err // apply what came before it first
					break coalesce
				}
				msg = more.msg
				evs = append(evs, msg.GetEvents()...)
			default:
				break coalesce
			}
		}
		st.mu.Lock()
		if h := msg.GetHeadTseq(); h > st.status.SourceTseq {
			st.status.SourceTseq = h
		}
		st.status.SourceRole, st.status.SourceEpoch = msg.GetSourceRole(), msg.GetSourceEpoch()
		if len(evs) > 0 && st.pendingSince.IsZero() {
			st.pendingSince = time.Unix(0, evs[0].GetTimeUnixNano())
		}
		st.mu.Unlock()
		select {
		case <-stop: // nothing more after a failed apply
			<-slots
			return finish(nil)
		default:
		}
		if len(evs) == 0 {
			<-slots
		} else {
			actx, acancel := context.WithTimeout(sctx, s.cfg.CallTimeout)
			pd, err := s.st.Submit(actx, &cellv1.Command{Tenant: st.tenant, Op: &cellv1.Command_ApplyChanges{ApplyChanges: &cellv1.ApplyChangesOp{Events: evs}}})
			if err != nil {
				acancel()
				<-slots
				return finish(proposeErr(err))
			}
			st.mu.Lock()
			st.inflightSince = append(st.inflightSince, time.Unix(0, evs[0].GetTimeUnixNano()))
			st.mu.Unlock()
			pipe <- inflight{pd: pd, ctx: actx, cancel: acancel, evs: evs, msg: msg} // never blocks: a slot is held
		}
		if pendingErr != nil {
			return finish(streamErr(pendingErr))
		}
	}
}

// streamErr maps the change stream's error to what the stream does next.
func streamErr(err error) error {
	err = rpcerr.FromStatus(err)
	if errors.Is(err, cperr.ErrChangesTrimmed) {
		return fmt.Errorf("%w: %v", errBootstrap, err)
	}
	return err
}

// applied records an applied batch (events in tseq order; msg is the
// newest message they came with).
func (st *stream) applied(evs []*cellv1.ChangeEvent, msg *replicationv1.StreamChangesResponse, res *cellv1.CommandResult) error {
	s := st.sink
	now := time.Now()
	last := evs[len(evs)-1]
	s.m.applied.Add(float64(len(evs)))
	s.m.applyBatch.Observe(float64(len(evs)))
	s.m.applyDelay.Observe(now.Sub(time.Unix(0, last.GetTimeUnixNano())).Seconds())
	st.mu.Lock()
	st.status.AppliedTseq = res.GetTseq()
	st.status.LastError = ""
	if len(st.inflightSince) > 0 {
		st.inflightSince = st.inflightSince[1:]
	}
	st.pendingSince = time.Time{}
	if st.status.SourceTseq > st.status.AppliedTseq {
		// Behind: since the first event of the next apply in Raft, or
		// by events not received yet, at least as old as the source's
		// newest write.
		if len(st.inflightSince) > 0 {
			st.pendingSince = st.inflightSince[0]
		} else if ht := msg.GetHeadTime(); ht != nil {
			st.pendingSince = ht.AsTime()
		}
	}
	st.mu.Unlock()
	if f := s.cfg.OnApplied; f != nil {
		f(st.tenant, evs, now)
	}
	if res.GetTseq() < last.GetTseq() {
		// The standby refused to follow (it diverged): bootstrap.
		return fmt.Errorf("%w: applied only up to %d of %d", errBootstrap, res.GetTseq(), last.GetTseq())
	}
	return nil
}

// ackLoop reports the applied tseq to the source every AckInterval until
// ctx ends. A failed ack is retried at the next tick; the source keeps
// more of its log meanwhile, nothing else.
func (st *stream) ackLoop(ctx context.Context, cells cellv1.CellServiceClient) {
	t := time.NewTicker(st.sink.cfg.AckInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		st.mu.Lock()
		applied, due := st.status.AppliedTseq, st.status.AppliedTseq != st.ackedTseq
		st.mu.Unlock()
		if !due {
			continue
		}
		actx, cancel := context.WithTimeout(ctx, st.sink.cfg.CallTimeout)
		_, err := cells.AckReplica(actx, &cellv1.AckReplicaRequest{Tenant: st.tenant, Tseq: applied})
		cancel()
		if err != nil {
			if ctx.Err() == nil {
				st.log.Debug("ack to the source failed", "err", err)
			}
			continue
		}
		st.mu.Lock()
		st.ackedTseq = applied
		st.mu.Unlock()
	}
}
