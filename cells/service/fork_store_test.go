package service

import (
	"testing"
	"time"

	"github.com/cellplane/cellplane/internal/cperr"
	"github.com/cellplane/cellplane/internal/testutil"
	contextv1 "github.com/cellplane/cellplane/proto/cellplane/context/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// TestStoreForkAndRetention: ContextService.Fork mints an id before
// proposing (so a retry with the request id answers the first fork),
// reads stitch, and the retention fields reach the state machine.
func TestStoreForkAndRetention(t *testing.T) {
	n := newCell(t, nil, nil)
	ctx := as(testutil.Context(t, 30*time.Second), "acme", 0)
	must(n.ctx.CreateContext(ctx, &contextv1.CreateContextRequest{ContextId: "src"}))(t)
	must(n.ctx.Append(ctx, &contextv1.AppendRequest{ContextId: "src", Entries: []*contextv1.Entry{
		{Role: "user", Content: &contextv1.Entry_Text{Text: "a"}}, {Role: "user", Content: &contextv1.Entry_Text{Text: "b"}}}}))(t)

	f := must(n.ctx.Fork(ctx, &contextv1.ForkRequest{ContextId: "src", AtSeq: 1, RequestId: "fk"}))(t).GetContext()
	again := must(n.ctx.Fork(ctx, &contextv1.ForkRequest{ContextId: "src", AtSeq: 1, RequestId: "fk"}))(t).GetContext()
	if f.GetContextId() == "" || again.GetContextId() != f.GetContextId() || f.GetParentContextId() != "src" || f.GetParentSeq() != 1 {
		t.Fatalf("fork %v, retried %v", f, again)
	}
	must(n.ctx.Append(ctx, &contextv1.AppendRequest{ContextId: f.GetContextId(), Entries: []*contextv1.Entry{{Role: "user", Content: &contextv1.Entry_Text{Text: "F"}}}}))(t)
	r := must(n.ctx.Read(ctx, &contextv1.ReadRequest{ContextId: f.GetContextId()}))(t)
	if es := r.GetEntries(); len(es) != 2 || es[0].GetText() != "a" || es[1].GetText() != "F" || es[1].GetSeq() != 2 || r.GetLastSeq() != 2 {
		t.Fatalf("fork reads %v", r)
	}
	_, err := n.ctx.Fork(ctx, &contextv1.ForkRequest{ContextId: "src", AtSeq: 7})
	wantErr(t, err, codes.Aborted, cperr.SequenceMismatch)
	_, err = n.ctx.Fork(ctx, &contextv1.ForkRequest{ContextId: "src", Ttl: durationpb.New(time.Hour), ExpireTime: timestamppb.Now()})
	wantErr(t, err, codes.InvalidArgument, cperr.InvalidArgument)

	c := must(n.ctx.CreateContext(ctx, &contextv1.CreateContextRequest{ContextId: "ttl", Ttl: durationpb.New(time.Hour)}))(t).GetContext()
	if d := time.Until(c.GetExpireTime().AsTime()); d <= 0 || d > time.Hour {
		t.Fatalf("expire_time %v", c.GetExpireTime())
	}
	past := timestamppb.New(time.Now().Add(-time.Minute))
	p := must(n.ctx.PutMemory(ctx, &contextv1.PutMemoryRequest{Key: "old", Value: []byte("v"), ExpireTime: past}))(t)
	if !p.GetExpireTime().AsTime().Equal(past.AsTime()) {
		t.Fatalf("put expire_time %v", p.GetExpireTime())
	}
	_, err = n.ctx.GetMemory(ctx, &contextv1.GetMemoryRequest{Key: "old"})
	wantErr(t, err, codes.NotFound, cperr.KeyNotFound)
}
