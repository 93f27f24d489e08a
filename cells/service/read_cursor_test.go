package service

import (
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/cellplane/cellplane/internal/tenantmd"
	"github.com/cellplane/cellplane/internal/testutil"
	contextv1 "github.com/cellplane/cellplane/proto/cellplane/context/v1"
)

// Read, GetMemory and GetContext answer with the read's cursor: the
// tenant's tseq at the view they read (that of the last write before
// them), its change time, and the item's expiry when it has one. A read
// cache relies on it (internal/readcache).
func TestReadCursorHeader(t *testing.T) {
	n := newCell(t, nil, nil)
	ctx := as(testutil.Context(t, 20*time.Second), "acme", 0)
	if _, err := n.ctx.CreateContext(ctx, &contextv1.CreateContextRequest{ContextId: "c"}); err != nil {
		t.Fatal(err)
	}
	if _, err := n.ctx.Append(ctx, &contextv1.AppendRequest{ContextId: "c", Entries: []*contextv1.Entry{textEntry("user", "a")}}); err != nil {
		t.Fatal(err)
	}
	if _, err := n.ctx.PutMemory(ctx, &contextv1.PutMemoryRequest{Key: "k", Value: []byte("v"), Ttl: durationpb.New(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	cursor := func(call func(opt grpc.CallOption) error) (uint64, int64, int64) {
		t.Helper()
		var md metadata.MD
		if err := call(grpc.Header(&md)); err != nil {
			t.Fatal(err)
		}
		tseq, at, exp, ok := tenantmd.ReadCursor(md)
		if !ok {
			t.Fatalf("no read cursor in %v", md)
		}
		return tseq, at, exp
	}
	mem, err := n.ctx.GetMemory(ctx, &contextv1.GetMemoryRequest{Key: "k"})
	if err != nil {
		t.Fatal(err)
	}
	revision := mem.GetItem().GetRevision() // the put's tseq: the last write
	for name, call := range map[string]func(grpc.CallOption) error{
		"Read": func(o grpc.CallOption) error {
			_, err := n.ctx.Read(ctx, &contextv1.ReadRequest{ContextId: "c"}, o)
			return err
		},
		"GetContext": func(o grpc.CallOption) error {
			_, err := n.ctx.GetContext(ctx, &contextv1.GetContextRequest{ContextId: "c"}, o)
			return err
		},
		"GetMemory": func(o grpc.CallOption) error {
			_, err := n.ctx.GetMemory(ctx, &contextv1.GetMemoryRequest{Key: "k", ReadOptions: &contextv1.ReadOptions{Consistency: contextv1.Consistency_CONSISTENCY_STALE}}, o)
			return err
		},
	} {
		tseq, at, exp := cursor(call)
		if tseq != revision || at <= 0 {
			t.Errorf("%s: cursor %d.%d, want tseq %d and its time", name, tseq, at, revision)
		}
		if name == "GetMemory" && (exp != mem.GetItem().GetExpireTime().AsTime().UnixNano() || exp == 0) {
			t.Errorf("GetMemory: expiry %d, want the item's %v", exp, mem.GetItem().GetExpireTime().AsTime())
		}
		if name != "GetMemory" && exp != 0 {
			t.Errorf("%s: expiry %d for a context without one", name, exp)
		}
	}
}
