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
	"github.com/cellplane/cellplane/internal/testutil"
	cellv1 "github.com/cellplane/cellplane/proto/cellplane/cell/v1"
	contextv1 "github.com/cellplane/cellplane/proto/cellplane/context/v1"
	replicationv1 "github.com/cellplane/cellplane/proto/cellplane/replication/v1"
	"github.com/cellplane/cellplane/replication"
)

// spoofedSource is a ReplicationService that streams, for tenant "evil",
// events whose commands name "victim" (finding H3: a compromised or
// impersonated source).
type spoofedSource struct {
	replicationv1.UnimplementedReplicationServiceServer
	mu    sync.Mutex
	calls []time.Time
}

func (f *spoofedSource) StreamChanges(req *replicationv1.StreamChangesRequest, stream replicationv1.ReplicationService_StreamChangesServer) error {
	f.mu.Lock()
	f.calls = append(f.calls, time.Now())
	f.mu.Unlock()
	cmd := func(op *cellv1.Command) *cellv1.Command {
		op.Version, op.TimeUnixNano = 1, time.Now().UnixNano()
		return op
	}
	evs := []*cellv1.ChangeEvent{
		{Tseq: req.GetAfterTseq() + 1, Command: cmd(&cellv1.Command{Tenant: req.GetTenant(), Op: &cellv1.Command_PutMemory{PutMemory: &contextv1.PutMemoryRequest{Key: "own", Value: []byte("x")}}})},
		{Tseq: req.GetAfterTseq() + 2, Command: cmd(&cellv1.Command{Tenant: "victim", Op: &cellv1.Command_PutMemory{PutMemory: &contextv1.PutMemoryRequest{Key: "k", Value: []byte("pwned")}}})},
	}
	if err := stream.Send(&replicationv1.StreamChangesResponse{Events: evs, HeadTseq: req.GetAfterTseq() + 2, SourceRole: cellv1.Role_ROLE_OWNER, SourceEpoch: 1}); err != nil {
		return err
	}
	<-stream.Context().Done()
	return nil
}

func (f *spoofedSource) streams() []time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]time.Time(nil), f.calls...)
}

// TestSinkRefusesSpoofedSource: a real sink and a real standby store
// follow a source that streams another tenant's commands. The standby
// refuses every such batch (victim, OWNER in the same cell, keeps its
// data; evil applies nothing, not even its own event of the batch), the
// stream reports REJECTED, and it does not spin: it asks the source again
// only every RejectRetry, not at the fast retry pace.
func TestSinkRefusesSpoofedSource(t *testing.T) {
	ctx := testutil.Context(t, 60*time.Second)
	st := storetest.NewCluster(t, 1).Leader().S()
	for _, c := range []*cellv1.Command{
		{Tenant: "victim", Op: &cellv1.Command_SetTenant{SetTenant: &cellv1.SetTenantOp{Role: cellv1.Role_ROLE_OWNER, Epoch: 1}}},
		{Tenant: "victim", Op: &cellv1.Command_PutMemory{PutMemory: &contextv1.PutMemoryRequest{Key: "k", Value: []byte("mine")}}},
		{Tenant: "evil", Op: &cellv1.Command_SetTenant{SetTenant: &cellv1.SetTenantOp{Role: cellv1.Role_ROLE_STANDBY, Epoch: 1, SourceCell: "spoof"}}},
		{Tenant: "evil", Op: &cellv1.Command_ImportTenant{ImportTenant: &cellv1.ImportTenantOp{First: true, SourceCell: "spoof", Record: &cellv1.TenantRecord{}}}},
	} {
		if _, err := st.Propose(ctx, c); err != nil {
			t.Fatalf("setup %v: %v", c, err)
		}
	}

	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	fake := &spoofedSource{}
	srv := grpc.NewServer()
	replicationv1.RegisterReplicationServiceServer(srv, fake)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	cc, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cc.Close() })

	const rejectRetry = 300 * time.Millisecond
	cfg := replication.DefaultSinkConfig()
	cfg.Connect = func(context.Context, string) (grpc.ClientConnInterface, error) { return cc, nil }
	cfg.Rescan, cfg.RetryMin, cfg.RetryMax, cfg.RejectRetry = 50*time.Millisecond, time.Millisecond, 5*time.Millisecond, rejectRetry
	sink, err := replication.NewSink(st, cfg)
	if err != nil {
		t.Fatal(err)
	}
	sctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); sink.Run(sctx) }()
	t.Cleanup(func() { cancel(); <-done })

	testutil.Eventually(t, 30*time.Second, func() error {
		if n := len(fake.streams()); n < 3 {
			return fmt.Errorf("%d streams so far", n)
		}
		return nil
	})
	calls := fake.streams()
	if gap := calls[2].Sub(calls[0]); gap < 2*rejectRetry {
		t.Errorf("three streams within %v: the sink retried a refused position at the fast pace (want ≥ %v)", gap, 2*rejectRetry)
	}
	if s := sink.Status("evil"); s.GetState() != "REJECTED" || s.GetLastError() == "" || s.GetAppliedTseq() != 0 {
		t.Errorf("status = %v, want REJECTED at tseq 0 with the error", s)
	}
	read := func(tenant, key string) (string, uint64) {
		var val string
		var tseq uint64
		if err := st.ReadReplica(tenant, func(v *store.TenantView) error {
			tseq = v.Record().GetTseq()
			if item, err := v.Memory(key); err == nil {
				val = string(item.GetValue())
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		return val, tseq
	}
	if v, _ := read("victim", "k"); v != "mine" {
		t.Errorf("victim's k = %q, want %q", v, "mine")
	}
	if v, tseq := read("evil", "own"); v != "" || tseq != 0 {
		t.Errorf("evil applied part of a refused batch: own = %q, tseq %d", v, tseq)
	}
}
