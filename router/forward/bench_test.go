package forward

import (
	"context"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/cellplane/cellplane/internal/tenantmd"
	"github.com/cellplane/cellplane/internal/testutil"
	contextv1 "github.com/cellplane/cellplane/proto/cellplane/context/v1"
)

// echoCell answers Append and Read at once: the backend of the forwarding
// benchmark, so that the figures are the forwarder's cost.
type echoCell struct {
	contextv1.UnimplementedContextServiceServer
	read *contextv1.ReadResponse
}

func (e *echoCell) Append(context.Context, *contextv1.AppendRequest) (*contextv1.AppendResponse, error) {
	return &contextv1.AppendResponse{FirstSeq: 1, LastSeq: 1}, nil
}

func (e *echoCell) Read(context.Context, *contextv1.ReadRequest) (*contextv1.ReadResponse, error) {
	return e.read, nil
}

// BenchmarkForward measures a unary call with a 1 KiB payload (an Append
// of one 1 KiB entry; a Read answered with one) straight to a backend and
// through a forwarder in front of it, all on loopback in this process.
// The difference per op is the router's cost:
//
//	go test -run '^$' -bench Forward -cpuprofile cpu.out ./router/forward
func BenchmarkForward(b *testing.B) {
	entry := &contextv1.Entry{Role: "user", Content: &contextv1.Entry_Text{Text: strings.Repeat("x", 1024)}}
	echo := &echoCell{read: &contextv1.ReadResponse{Entries: []*contextv1.Entry{entry}}}
	lis := testutil.Listen(b)
	srv := grpc.NewServer()
	contextv1.RegisterContextServiceServer(srv, echo)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(lis)
	}()
	b.Cleanup(func() {
		srv.Stop()
		<-done
	})
	r := newResolver()
	r.set("t1", Target{Cell: "c1", Epoch: 1, LeaderAddr: lis.Addr().String()})
	cfg := DefaultConfig()
	routed, _, _ := startRouter(b, cfg, r)
	direct := contextv1.NewContextServiceClient(mustDial(b, lis.Addr().String()))
	ctx := tenantmd.Outgoing(testutil.Context(b, 10*time.Minute), "t1", 0)
	for _, p := range []struct {
		name string
		c    contextv1.ContextServiceClient
	}{{"direct", direct}, {"router", routed}} {
		b.Run(p.name+"/append", func(b *testing.B) {
			req := &contextv1.AppendRequest{ContextId: "c", RequestId: "r", Entries: []*contextv1.Entry{entry}}
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, err := p.c.Append(ctx, req); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
		b.Run(p.name+"/read", func(b *testing.B) {
			req := &contextv1.ReadRequest{ContextId: "c", MaxEntries: 1}
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, err := p.c.Read(ctx, req); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}
