package replication_test

import (
	"context"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/cellplane/cellplane/cells/store"
	"github.com/cellplane/cellplane/cells/storetest"
	"github.com/cellplane/cellplane/internal/failpoint"
	"github.com/cellplane/cellplane/internal/testutil"
	cellv1 "github.com/cellplane/cellplane/proto/cellplane/cell/v1"
	contextv1 "github.com/cellplane/cellplane/proto/cellplane/context/v1"
	replicationv1 "github.com/cellplane/cellplane/proto/cellplane/replication/v1"
	"github.com/cellplane/cellplane/replication"
)

// pacedSource streams tenant "acme"'s change log of n events (a
// create_context, then one append per event), one event per message,
// sending the next one only when next lets it (the test paces the
// stream); then it holds the stream open. Its AckReplica blocks while
// hold is set.
type pacedSource struct {
	replicationv1.UnimplementedReplicationServiceServer
	cellv1.UnimplementedCellServiceServer
	n    uint64
	next chan struct{}

	mu      sync.Mutex
	streams int
	acks    []uint64
	hold    chan struct{} // nil: acks answer at once
}

func (f *pacedSource) event(tseq uint64) *cellv1.ChangeEvent {
	c := &cellv1.Command{Tenant: "acme", Version: 1, TimeUnixNano: time.Now().UnixNano(), RequestId: fmt.Sprintf("r%d", tseq)}
	if tseq == 1 {
		c.Op = &cellv1.Command_CreateContext{CreateContext: &contextv1.CreateContextRequest{ContextId: "c"}}
	} else {
		c.Op = &cellv1.Command_Append{Append: &contextv1.AppendRequest{ContextId: "c", Entries: []*contextv1.Entry{
			{Role: "user", Content: &contextv1.Entry_Text{Text: fmt.Sprintf("e%d", tseq)}}}}}
	}
	return &cellv1.ChangeEvent{Tseq: tseq, TimeUnixNano: c.GetTimeUnixNano(), Command: c}
}

func (f *pacedSource) StreamChanges(req *replicationv1.StreamChangesRequest, stream replicationv1.ReplicationService_StreamChangesServer) error {
	f.mu.Lock()
	f.streams++
	f.mu.Unlock()
	for t := req.GetAfterTseq() + 1; t <= f.n; t++ {
		if t > req.GetAfterTseq()+1 {
			select {
			case <-f.next:
			case <-stream.Context().Done():
				return nil
			}
		}
		msg := &replicationv1.StreamChangesResponse{Events: []*cellv1.ChangeEvent{f.event(t)}, HeadTseq: t, SourceRole: cellv1.Role_ROLE_OWNER, SourceEpoch: 1}
		if err := stream.Send(msg); err != nil {
			return err
		}
	}
	<-stream.Context().Done()
	return nil
}

func (f *pacedSource) AckReplica(ctx context.Context, req *cellv1.AckReplicaRequest) (*cellv1.AckReplicaResponse, error) {
	f.mu.Lock()
	f.acks = append(f.acks, req.GetTseq())
	hold := f.hold
	f.mu.Unlock()
	if hold != nil {
		select {
		case <-hold:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return &cellv1.AckReplicaResponse{}, nil
}

func (f *pacedSource) ackCalls() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.acks)
}

// countingStore is the standby's store, counting the applies submitted
// and not yet reported applied (OnApplied).
type countingStore struct {
	*store.Store
	next chan<- struct{} // told of every submitted apply (paces the source)

	mu            sync.Mutex
	inflight, max int
}

func (c *countingStore) Submit(ctx context.Context, cmd *cellv1.Command) (*store.Pending, error) {
	p, err := c.Store.Submit(ctx, cmd)
	if err == nil && cmd.GetApplyChanges() != nil {
		c.mu.Lock()
		c.inflight++
		c.max = max(c.max, c.inflight)
		c.mu.Unlock()
		select {
		case c.next <- struct{}{}:
		default:
		}
	}
	return p, err
}

func (c *countingStore) onApplied(string, []*cellv1.ChangeEvent, time.Time) {
	c.mu.Lock()
	c.inflight--
	c.mu.Unlock()
}

func (c *countingStore) maxInflight() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.max
}

// sinkSetup is a bootstrapped standby "acme" of cell "paced" on a real
// one-node store, a pacedSource of n events and a sink following it.
type sinkSetup struct {
	st   *store.Store
	cs   *countingStore
	src  *pacedSource
	sink *replication.Sink
}

func newSinkSetup(t *testing.T, ctx context.Context, n uint64, mutate func(*replication.SinkConfig)) *sinkSetup {
	t.Helper()
	st := storetest.NewCluster(t, 1).Leader().S()
	for _, c := range []*cellv1.Command{
		{Tenant: "acme", Op: &cellv1.Command_SetTenant{SetTenant: &cellv1.SetTenantOp{Role: cellv1.Role_ROLE_STANDBY, Epoch: 1, SourceCell: "paced"}}},
		{Tenant: "acme", Op: &cellv1.Command_ImportTenant{ImportTenant: &cellv1.ImportTenantOp{First: true, SourceCell: "paced", Record: &cellv1.TenantRecord{}}}},
	} {
		if _, err := st.Propose(ctx, c); err != nil {
			t.Fatalf("setup %v: %v", c, err)
		}
	}
	next := make(chan struct{}, 1024)
	src := &pacedSource{n: n, next: next}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	replicationv1.RegisterReplicationServiceServer(srv, src)
	cellv1.RegisterCellServiceServer(srv, src)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	cc, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cc.Close() })

	cs := &countingStore{Store: st, next: next}
	cfg := replication.DefaultSinkConfig()
	cfg.Connect = func(context.Context, string) (grpc.ClientConnInterface, error) { return cc, nil }
	cfg.Rescan, cfg.RetryMin, cfg.RetryMax, cfg.AckInterval = 50*time.Millisecond, time.Millisecond, 20*time.Millisecond, 20*time.Millisecond
	cfg.OnApplied = cs.onApplied
	if mutate != nil {
		mutate(&cfg)
	}
	sink, err := replication.NewSink(cs, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return &sinkSetup{st: st, cs: cs, src: src, sink: sink}
}

func (s *sinkSetup) run(t *testing.T, ctx context.Context) {
	sctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); s.sink.Run(sctx) }()
	t.Cleanup(func() { cancel(); <-done })
}

// tseq is the standby's applied tseq of acme.
func (s *sinkSetup) tseq(t *testing.T) uint64 {
	var tseq uint64
	if err := s.st.ReadReplica("acme", func(v *store.TenantView) error {
		tseq = v.Record().GetTseq()
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return tseq
}

// checkLog checks that the standby holds every event once, in order.
func (s *sinkSetup) checkLog(t *testing.T) {
	t.Helper()
	var entries []*contextv1.Entry
	if err := s.st.ReadReplica("acme", func(v *store.TenantView) error {
		var err error
		entries, err = v.Entries("c", 0, 10_000, 1<<30)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if want := int(s.src.n) - 1; len(entries) != want {
		t.Fatalf("the standby holds %d entries, want %d (each event applied once)", len(entries), want)
	}
	for i, e := range entries {
		if want := fmt.Sprintf("e%d", i+2); e.GetText() != want || e.GetSeq() != uint64(i+1) {
			t.Fatalf("entry %d = %q (seq %d), want %q", i+1, e.GetText(), e.GetSeq(), want)
		}
	}
}

// TestSinkPipelinesApplies: while the standby's Raft answers slowly, the
// sink keeps several applies in flight (never more than
// MaxInflightApplies) instead of one at a time, and the standby still
// applies every event once, in order.
func TestSinkPipelinesApplies(t *testing.T) {
	ctx := testutil.Context(t, 60*time.Second)
	const n = 24
	s := newSinkSetup(t, ctx, n, nil)
	// Every Raft entry's answer waits: the submitted applies pile up.
	if err := failpoint.Enable(failpoint.StoreAfterApplyBeforeAck + "=sleep(100ms)"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(failpoint.Reset)
	s.run(t, ctx)
	testutil.Eventually(t, 30*time.Second, func() error {
		if got := s.tseq(t); got != n {
			return fmt.Errorf("standby at tseq %d of %d", got, n)
		}
		return nil
	})
	failpoint.Reset()
	if m, limit := s.cs.maxInflight(), replication.DefaultSinkConfig().MaxInflightApplies; m < 2 || m > limit {
		t.Errorf("at most %d applies were in flight, want at least 2 and at most MaxInflightApplies (%d)", m, limit)
	}
	if st := s.sink.Status("acme"); st.GetBootstraps() != 0 {
		t.Errorf("%d bootstraps, want none", st.GetBootstraps())
	}
	s.checkLog(t)
}

// TestSinkPipelineResumesAfterFailure: an apply whose result does not
// come within CallTimeout fails while later ones are in flight. The
// stream stops there and resumes from the standby's applied tseq: no
// bootstrap, no event applied twice or skipped.
func TestSinkPipelineResumesAfterFailure(t *testing.T) {
	ctx := testutil.Context(t, 60*time.Second)
	const n = 24
	s := newSinkSetup(t, ctx, n, func(c *replication.SinkConfig) { c.CallTimeout = 150 * time.Millisecond })
	// The answers of Raft entries 3 and 4 after this wait past the
	// timeout (they are applied all the same).
	if err := failpoint.Enable(failpoint.StoreAfterApplyBeforeAck + "=sleep(400ms)@3,2"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(failpoint.Reset)
	s.run(t, ctx)
	testutil.Eventually(t, 30*time.Second, func() error {
		if got := s.tseq(t); got != n {
			return fmt.Errorf("standby at tseq %d of %d", got, n)
		}
		return nil
	})
	if failpoint.Hits(failpoint.StoreAfterApplyBeforeAck) < 4 {
		t.Fatal("the failpoint was not reached: nothing failed")
	}
	s.src.mu.Lock()
	streams := s.src.streams
	s.src.mu.Unlock()
	if streams < 2 {
		t.Errorf("%d streams: the failed apply did not end the stream", streams)
	}
	if st := s.sink.Status("acme"); st.GetBootstraps() != 0 {
		t.Errorf("%d bootstraps, want none (resumed from the applied tseq)", st.GetBootstraps())
	}
	s.checkLog(t)
}

// TestSinkAppliesWhileAckHangs: the ack to the source goes off the apply
// path. While the source has not answered an ack (its answer crosses the
// long link), the sink goes on applying what it receives.
func TestSinkAppliesWhileAckHangs(t *testing.T) {
	ctx := testutil.Context(t, 60*time.Second)
	const n = 6
	s := newSinkSetup(t, ctx, n, func(c *replication.SinkConfig) { c.CallTimeout = time.Minute })
	hold := make(chan struct{})
	s.src.hold = hold
	s.cs.next = nil // the test paces the source
	s.run(t, ctx)
	// The first events, then an ack that hangs.
	testutil.Eventually(t, 30*time.Second, func() error {
		if s.src.ackCalls() == 0 {
			return fmt.Errorf("no ack yet (standby at tseq %d)", s.tseq(t))
		}
		return nil
	})
	// The source releases the rest only now: they must be applied while
	// the ack still hangs.
	for range n {
		s.src.next <- struct{}{}
	}
	testutil.Eventually(t, 30*time.Second, func() error {
		if got := s.tseq(t); got != n {
			return fmt.Errorf("standby at tseq %d of %d while an ack hangs", got, n)
		}
		return nil
	})
	if calls := s.src.ackCalls(); calls != 1 {
		t.Errorf("%d ack calls while the first hangs, want 1", calls)
	}
	close(hold)
	testutil.Eventually(t, 30*time.Second, func() error {
		s.src.mu.Lock()
		defer s.src.mu.Unlock()
		if last := s.src.acks[len(s.src.acks)-1]; last != n {
			return fmt.Errorf("last ack %d, want %d", last, n)
		}
		return nil
	})
	s.checkLog(t)
}
