package replication

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/cellplane/cellplane/cells/store"
	"github.com/cellplane/cellplane/internal/cperr"
	"github.com/cellplane/cellplane/internal/ids"
	cellv1 "github.com/cellplane/cellplane/proto/cellplane/cell/v1"
	replicationv1 "github.com/cellplane/cellplane/proto/cellplane/replication/v1"
)

// SourceStore is what the source side reads from a cell store.
// *store.Store implements it.
type SourceStore interface {
	ReadReplica(tenant string, fn func(*store.TenantView) error) error
	WaitTenant(ctx context.Context, tenant string, afterTseq uint64) error
	ExportTenant(ctx context.Context, tenant string, chunkBytes int, fn func(store.ExportChunk) error) error
	// ReplicaBarrier: current — this node leads and its state reflects
	// everything committed before the call (NOT_LEADER otherwise); not
	// current — this member heard from its leader recently.
	ReplicaBarrier(ctx context.Context, current bool) error
}

var _ SourceStore = (*store.Store)(nil)

// SourceConfig bounds what one source node sends.
type SourceConfig struct {
	// MaxBatchEvents and MaxBatchBytes bound one StreamChanges message (a
	// request may ask for less).
	MaxBatchEvents int
	MaxBatchBytes  int
	// Heartbeat is how often an idle stream reports the source's head, so
	// that the standby knows it is caught up (and lag is measurable).
	Heartbeat time.Duration
	// ExportChunkBytes is the default (and largest) export chunk.
	ExportChunkBytes int
	// LagWait is how long a follower whose applied state is behind the
	// standby's position waits to catch up before it answers
	// CELL_UNAVAILABLE ("this member lags; retry elsewhere"). The standby
	// retries, on another member or later; it does not bootstrap again
	// (only the leader, after a read barrier, can tell that a standby is
	// really beyond its source).
	LagWait time.Duration
	// MaxIDLen bounds tenant ids (the rule of package ids).
	MaxIDLen int
	Logger   *slog.Logger
}

// DefaultSourceConfig returns the defaults.
func DefaultSourceConfig() SourceConfig {
	return SourceConfig{
		MaxBatchEvents:   512,
		MaxBatchBytes:    1 << 20,
		Heartbeat:        time.Second,
		ExportChunkBytes: 1 << 20,
		LagWait:          500 * time.Millisecond,
		MaxIDLen:         ids.MaxLen,
	}
}

// Validate reports every problem with c.
func (c SourceConfig) Validate() error {
	var errs []error
	if c.MaxBatchEvents <= 0 || c.MaxBatchBytes <= 0 {
		errs = append(errs, fmt.Errorf("replication: MaxBatchEvents and MaxBatchBytes must be > 0 (got %d, %d)", c.MaxBatchEvents, c.MaxBatchBytes))
	}
	if c.Heartbeat <= 0 {
		errs = append(errs, fmt.Errorf("replication: Heartbeat must be > 0, got %v", c.Heartbeat))
	}
	if c.LagWait <= 0 {
		errs = append(errs, fmt.Errorf("replication: LagWait must be > 0, got %v", c.LagWait))
	}
	if c.ExportChunkBytes <= 0 || c.ExportChunkBytes > 3<<20 {
		errs = append(errs, fmt.Errorf("replication: ExportChunkBytes must be in (0, 3 MiB] (gRPC's message bound), got %d", c.ExportChunkBytes))
	}
	if c.MaxIDLen <= 0 {
		errs = append(errs, fmt.Errorf("replication: MaxIDLen must be > 0"))
	}
	return errors.Join(errs...)
}

// Source serves ReplicationService on a cell node: the tenant change
// streams and exports other cells' standbys read.
type Source struct {
	replicationv1.UnimplementedReplicationServiceServer
	st  SourceStore
	cfg SourceConfig
	log *slog.Logger

	sent     prometheus.Counter
	exported prometheus.Counter
	trimmed  prometheus.Counter
	lagging  prometheus.Counter

	// closing ends open streams when the node shuts down.
	closing context.Context
	close   context.CancelFunc
}

// NewSource returns the ReplicationService of a node.
func NewSource(st SourceStore, cfg SourceConfig) (*Source, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	closing, closeFn := context.WithCancel(context.Background())
	return &Source{
		st: st, cfg: cfg, log: log.With("component", "replication-source"), closing: closing, close: closeFn,
		sent: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "cellplane_replication_source_events_sent_total",
			Help: "Change events this node streamed to standbys.",
		}),
		exported: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "cellplane_replication_source_export_bytes_total",
			Help: "Bytes of tenant exports this node sent.",
		}),
		trimmed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "cellplane_replication_source_trimmed_total",
			Help: "Streams refused because the change log no longer held the standby's position (the standby bootstraps again).",
		}),
		lagging: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "cellplane_replication_source_lagging_total",
			Help: "Streams and exports this member refused because it lagged (a follower behind the standby, or asked for an export): the standby retries elsewhere.",
		}),
	}, nil
}

// Close ends open streams and exports with CELL_UNAVAILABLE (the standby
// resumes on another member), so that a node's graceful stop does not wait
// for them. Call it when the node starts shutting down; it is idempotent.
func (s *Source) Close() { s.close() }

// streamContext is the call's context, also ended by Close.
func (s *Source) streamContext(ctx context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(s.closing, cancel)
	return ctx, func() { stop(); cancel() }
}

func (s *Source) closedErr() error {
	return cperr.New(cperr.CellUnavailable, "the node is shutting down; resume on another member").WithRetryAfter(100 * time.Millisecond)
}

// Collectors returns the source's metrics.
func (s *Source) Collectors() []prometheus.Collector {
	return []prometheus.Collector{s.sent, s.exported, s.trimmed, s.lagging}
}

func (s *Source) checkTenant(tenant string) error {
	if err := ids.Check("tenant", tenant, s.cfg.MaxIDLen); err != nil {
		return err
	}
	return nil
}

// StreamChanges implements ReplicationService.StreamChanges.
func (s *Source) StreamChanges(req *replicationv1.StreamChangesRequest, stream replicationv1.ReplicationService_StreamChangesServer) error {
	if err := s.checkTenant(req.GetTenant()); err != nil {
		return err
	}
	maxEvents, maxBytes := s.cfg.MaxBatchEvents, s.cfg.MaxBatchBytes
	if n := int(req.GetMaxBatchEvents()); n > 0 && n < maxEvents {
		maxEvents = n
	}
	if n := int(req.GetMaxBatchBytes()); n > 0 && n < maxBytes {
		maxBytes = n
	}
	ctx, done := s.streamContext(stream.Context())
	defer done()
	tenant, after := req.GetTenant(), req.GetAfterTseq()
	log := s.log.With("tenant", tenant)
	for {
		msg, err := s.serveBatch(ctx, tenant, after, maxEvents, maxBytes)
		if err != nil {
			if errors.Is(err, cperr.ErrChangesTrimmed) {
				s.trimmed.Inc()
				log.Warn("standby position no longer in the change log; it must bootstrap again", "after_tseq", after)
			}
			return err
		}
		// Events, or a heartbeat (nothing new: the head tells the standby
		// it is caught up).
		if err := stream.Send(msg); err != nil {
			return err
		}
		if n := len(msg.GetEvents()); n > 0 {
			s.sent.Add(float64(n))
			after = msg.GetEvents()[n-1].GetTseq()
			continue // more may be there already
		}
		wctx, cancel := context.WithTimeout(ctx, s.cfg.Heartbeat)
		err = s.st.WaitTenant(wctx, tenant, after)
		cancel()
		if s.closing.Err() != nil {
			return s.closedErr()
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err != nil && !errors.Is(err, context.DeadlineExceeded) {
			return err
		}
	}
}

// errBehind: this member's applied state is behind the standby's position.
var errBehind = errors.New("replication: this member is behind the standby")

// serveBatch is batch under the rule of what a member may serve
// (DESIGN.md "What a source member serves"): a follower must have heard
// from its leader recently; a member behind the standby's position never
// answers CHANGES_TRIMMED for that alone. The leader first catches up to
// the commit index (a read barrier): if the standby is still beyond it,
// the standby diverged and must bootstrap (CHANGES_TRIMMED). A follower
// waits up to LagWait for its apply to reach the position, then answers
// CELL_UNAVAILABLE: the standby retries on another member or later.
func (s *Source) serveBatch(ctx context.Context, tenant string, after uint64, maxEvents, maxBytes int) (*replicationv1.StreamChangesResponse, error) {
	if err := s.st.ReplicaBarrier(ctx, false); err != nil {
		return nil, err
	}
	msg, err := s.batch(tenant, after, maxEvents, maxBytes)
	if !errors.Is(err, errBehind) {
		return msg, err
	}
	berr := s.st.ReplicaBarrier(ctx, true)
	if berr != nil && !errors.Is(berr, cperr.ErrNotLeader) && !errors.Is(berr, cperr.ErrCellUnavailable) {
		return nil, berr
	}
	if berr != nil {
		// A follower (or a leader not ready): wait a little for the apply.
		wctx, cancel := context.WithTimeout(ctx, s.cfg.LagWait)
		werr := s.st.WaitTenant(wctx, tenant, after-1)
		cancel()
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if werr != nil && !errors.Is(werr, context.DeadlineExceeded) {
			return nil, werr
		}
	}
	msg, err = s.batch(tenant, after, maxEvents, maxBytes)
	if !errors.Is(err, errBehind) {
		return msg, err
	}
	if berr == nil {
		// The leader has applied everything committed: the standby holds
		// events its source never committed.
		return nil, cperr.New(cperr.ChangesTrimmed, "the standby is at tseq %d, beyond the source's %d (it diverged)", after, msg.GetHeadTseq())
	}
	s.lagging.Inc()
	e := cperr.New(cperr.CellUnavailable, "this member is at tseq %d, behind the standby's %d; retry on another member", msg.GetHeadTseq(), after).
		WithRetryAfter(s.cfg.LagWait)
	var le *cperr.Error
	if errors.As(berr, &le) {
		if addr := le.Metadata[cperr.MetaLeader]; addr != "" {
			e.With(cperr.MetaLeader, addr)
		}
	}
	return nil, e
}

// batch reads the events after `after` within the bounds, with the head
// (errBehind, with the head, when this member's tseq is below after).
func (s *Source) batch(tenant string, after uint64, maxEvents, maxBytes int) (*replicationv1.StreamChangesResponse, error) {
	msg := &replicationv1.StreamChangesResponse{}
	err := s.st.ReadReplica(tenant, func(v *store.TenantView) error {
		rec := v.Record()
		msg.HeadTseq, msg.SourceRole, msg.SourceEpoch = rec.GetTseq(), rec.GetRole(), rec.GetEpoch()
		if rec.GetUpdateTimeUnixNano() != 0 {
			msg.HeadTime = timestamppb.New(time.Unix(0, rec.GetUpdateTimeUnixNano()))
		}
		if rec.GetRole() == cellv1.Role_ROLE_STANDBY {
			return cperr.New(cperr.WrongCell, "the tenant is a standby in this cell, not a source").With(cperr.MetaRole, rec.GetRole().String())
		}
		if after > rec.GetTseq() {
			// The standby is ahead of this member: it diverged (an old
			// owner's writes) or this member lags; serveBatch tells which.
			return errBehind
		}
		evs, err := v.Changes(after, maxEvents)
		if errors.Is(err, store.ErrChangesTrimmed) {
			return cperr.New(cperr.ChangesTrimmed, "the change log starts after tseq %d", after+1)
		}
		if err != nil {
			return err
		}
		size := 0
		for i, e := range evs {
			size += sizeOf(e)
			if i > 0 && size > maxBytes {
				evs = evs[:i]
				break
			}
		}
		msg.Events = evs
		return nil
	})
	return msg, err
}

func sizeOf(e *cellv1.ChangeEvent) int { return proto.Size(e) }

// ExportTenant implements ReplicationService.ExportTenant.
func (s *Source) ExportTenant(req *replicationv1.ExportTenantRequest, stream replicationv1.ReplicationService_ExportTenantServer) error {
	if err := s.checkTenant(req.GetTenant()); err != nil {
		return err
	}
	chunk := s.cfg.ExportChunkBytes
	if n := int(req.GetChunkBytes()); n > 0 && n < chunk {
		chunk = n
	}
	var sentBytes, sentKeys uint64
	start := time.Now()
	ctx, done := s.streamContext(stream.Context())
	defer done()
	// Only the leader exports, after a read barrier: an export is the
	// standby's new starting point, and one from a lagging follower could
	// take it back behind what it had applied (DESIGN.md).
	if err := s.st.ReplicaBarrier(ctx, true); err != nil {
		if errors.Is(err, cperr.ErrNotLeader) {
			s.lagging.Inc()
		}
		return err
	}
	err := s.st.ExportTenant(ctx, req.GetTenant(), chunk, func(c store.ExportChunk) error {
		sentBytes += uint64(c.Bytes)
		sentKeys += uint64(len(c.Pairs))
		s.exported.Add(float64(c.Bytes))
		return stream.Send(&replicationv1.ExportTenantResponse{Pairs: c.Pairs, Record: c.Record, SentBytes: sentBytes, SentKeys: sentKeys})
	})
	if err != nil {
		if s.closing.Err() != nil {
			return s.closedErr()
		}
		return err
	}
	s.log.Info("tenant exported", "tenant", req.GetTenant(), "bytes", sentBytes, "keys", sentKeys, "took", time.Since(start).Round(time.Millisecond))
	return nil
}
