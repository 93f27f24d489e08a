package service

import (
	"context"
	"errors"
	"net"
	"testing"

	"github.com/cellplane/cellplane/internal/cperr"
	"github.com/cellplane/cellplane/internal/rpcerr"
	"github.com/cellplane/cellplane/internal/tenantmd"
	"github.com/cellplane/cellplane/internal/testutil"
	cellv1 "github.com/cellplane/cellplane/proto/cellplane/cell/v1"
	contextv1 "github.com/cellplane/cellplane/proto/cellplane/context/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// node is one served instance of the services, reached through the
// generated clients over real gRPC on 127.0.0.1.
type node struct {
	info *cellv1.NodeInfo
	svc  *Server
	ctx  contextv1.ContextServiceClient
	cell cellv1.CellServiceClient
	// seen receives the incoming metadata of every unary call.
	seen chan metadata.MD
}

// serveNode serves st on lis with the rpcerr interceptors, as the node
// will, and returns clients connected to it. Everything stops on cleanup.
func serveNode(t *testing.T, st Store, info *cellv1.NodeInfo, lis net.Listener, tweak func(*Config)) *node {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Node = info
	cfg.Logger = testutil.Logger(t).With("node", info.GetNodeId())
	if tweak != nil {
		tweak(&cfg)
	}
	svc, err := New(st, cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	n := &node{info: info, svc: svc, seen: make(chan metadata.MD, 1024)}
	record := func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		md, _ := metadata.FromIncomingContext(ctx)
		select {
		case n.seen <- md:
		default:
		}
		return h(ctx, req)
	}
	gs := grpc.NewServer(
		grpc.ChainUnaryInterceptor(rpcerr.UnaryServerInterceptor(), record),
		grpc.ChainStreamInterceptor(rpcerr.StreamServerInterceptor()),
		grpc.MaxRecvMsgSize(cfg.Limits.MaxRequestBytes+64<<10),
	)
	svc.Register(gs)
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = gs.Serve(lis)
	}()
	cc, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(8<<20)))
	if err != nil {
		t.Fatalf("grpc.NewClient: %v", err)
	}
	t.Cleanup(func() {
		_ = cc.Close()
		if err := svc.Close(); err != nil {
			t.Errorf("Server.Close: %v", err)
		}
		gs.Stop()
		<-served
	})
	n.ctx = contextv1.NewContextServiceClient(cc)
	n.cell = cellv1.NewCellServiceClient(cc)
	return n
}

// as returns ctx with the tenant (and epoch, when not 0) on outgoing
// metadata.
func as(ctx context.Context, tenant string, epoch uint64) context.Context {
	return tenantmd.Outgoing(ctx, tenant, epoch)
}

// wantErr asserts a status code and an ErrorInfo reason, read back with
// rpcerr.FromStatus and errors.Is, and returns the decoded error.
func wantErr(t *testing.T, err error, code codes.Code, reason cperr.Reason) *cperr.Error {
	t.Helper()
	if err == nil {
		t.Fatalf("got success, want %v %s", code, reason)
	}
	if got := status.Code(err); got != code {
		t.Fatalf("code %v (%v), want %v %s", got, err, code, reason)
	}
	e := rpcerr.FromStatus(err)
	if !errors.Is(e, &cperr.Error{Reason: reason}) {
		t.Fatalf("error %v, want reason %s", e, reason)
	}
	var ce *cperr.Error
	if !errors.As(e, &ce) {
		t.Fatalf("error %T is not a *cperr.Error", e)
	}
	return ce
}

// wantField asserts that an INVALID_ARGUMENT error names field.
func wantField(t *testing.T, err error, field string) {
	t.Helper()
	ce := wantErr(t, err, codes.InvalidArgument, cperr.InvalidArgument)
	for _, v := range ce.Violations {
		if v.Field == field {
			return
		}
	}
	t.Fatalf("violations %+v do not name %q", ce.Violations, field)
}

// must checks the result of a call: must(client.Call(ctx, req))(t)
// returns the response or fails the test with the error.
func must[T any](v T, err error) func(*testing.T) T {
	return func(t *testing.T) T {
		t.Helper()
		if err != nil {
			t.Fatalf("unexpected error: %v", err)
		}
		return v
	}
}

func textEntry(role, s string) *contextv1.Entry {
	return &contextv1.Entry{Role: role, Content: &contextv1.Entry_Text{Text: s}}
}
