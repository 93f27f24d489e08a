package service

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/cellplane/cellplane/cells/store"
	"github.com/cellplane/cellplane/internal/cperr"
	"github.com/cellplane/cellplane/internal/testutil"
	cellv1 "github.com/cellplane/cellplane/proto/cellplane/cell/v1"
	contextv1 "github.com/cellplane/cellplane/proto/cellplane/context/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
)

type watchStream = grpc.ServerStreamingClient[contextv1.WatchResponse]

// recvSeqs receives until it has entries up to seq `to` and checks that
// they are exactly from..to, in order, without gap or duplicate.
func recvSeqs(t *testing.T, s watchStream, from, to uint64) []*contextv1.Entry {
	t.Helper()
	var got []*contextv1.Entry
	for uint64(len(got)) < to-from+1 {
		resp, err := s.Recv()
		if err != nil {
			t.Fatalf("Recv after %d entries: %v", len(got), err)
		}
		if len(resp.GetEntries()) == 0 {
			t.Fatal("empty watch response")
		}
		got = append(got, resp.GetEntries()...)
	}
	checkSeqs(t, got, from, to)
	return got
}

func appendN(t *testing.T, n *node, ctx context.Context, id string, count int) {
	t.Helper()
	es := make([]*contextv1.Entry, count)
	for i := range es {
		es[i] = textEntry("user", fmt.Sprint("m", i))
	}
	must(n.ctx.Append(ctx, &contextv1.AppendRequest{ContextId: id, Entries: es}))(t)
}

func TestStoreWatch(t *testing.T) {
	n := newCell(t, nil, nil)
	ctx := as(testutil.Context(t, 60*time.Second), "acme", 0)
	must(n.ctx.CreateContext(ctx, &contextv1.CreateContextRequest{ContextId: "w"}))(t)
	must(n.ctx.CreateContext(ctx, &contextv1.CreateContextRequest{ContextId: "other"}))(t)
	appendN(t, n, ctx, "w", 3)

	// Catch-up, then live entries, ignoring other contexts' appends.
	wctx, stop := context.WithCancel(ctx)
	s := must(n.ctx.Watch(wctx, &contextv1.WatchRequest{ContextId: "w"}))(t)
	first := recvSeqs(t, s, 1, 3)
	if first[0].GetText() != "m0" || first[0].GetCreateTime() == nil {
		t.Fatalf("first entry %v", first[0])
	}
	appendN(t, n, ctx, "other", 2)
	must(n.ctx.PutMemory(ctx, &contextv1.PutMemoryRequest{Key: "k"}))(t)
	appendN(t, n, ctx, "w", 2)
	live := recvSeqs(t, s, 4, 5)
	if live[1].GetText() != "m1" || live[1].GetCreateTime() == nil {
		t.Fatalf("live entry %v", live[1])
	}

	// Concurrent appenders: every entry once, in order.
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 10 {
				_, err := n.ctx.Append(ctx, &contextv1.AppendRequest{ContextId: "w", RequestId: fmt.Sprintf("g%d-%d", g, i), Entries: []*contextv1.Entry{textEntry("user", "c")}})
				if err != nil {
					t.Errorf("concurrent Append: %v", err)
					return
				}
			}
		}()
	}
	recvSeqs(t, s, 6, 45)
	wg.Wait()
	stop()

	// Resume from the last seq received + 1 minus one: a resume may
	// overlap what the client has; it must not skip.
	s = must(n.ctx.Watch(ctx, &contextv1.WatchRequest{ContextId: "w", FromSeq: 44}))(t)
	recvSeqs(t, s, 44, 45)
	appendN(t, n, ctx, "w", 1)
	recvSeqs(t, s, 46, 46)

	// A watch from the future waits for its seq; a large catch-up comes in
	// batches without gaps.
	future := must(n.ctx.Watch(ctx, &contextv1.WatchRequest{ContextId: "w", FromSeq: 150}))(t)
	appendN(t, n, ctx, "w", 110) // 47..156
	recvSeqs(t, s, 47, 156)
	recvSeqs(t, future, 150, 156)
	all := must(n.ctx.Watch(ctx, &contextv1.WatchRequest{ContextId: "w"}))(t)
	recvSeqs(t, all, 1, 156)

	// Deleting the context ends every watch of it.
	must(n.ctx.DeleteContext(ctx, &contextv1.DeleteContextRequest{ContextId: "w"}))(t)
	for _, st := range []watchStream{s, future, all} {
		wantErr(t, watchErr(st, nil), codes.NotFound, cperr.ContextNotFound)
	}
	wantErr(t, watchErr(n.ctx.Watch(ctx, &contextv1.WatchRequest{ContextId: "w"})), codes.NotFound, cperr.ContextNotFound)
	// A context created again under the same id is another context.
	must(n.ctx.CreateContext(ctx, &contextv1.CreateContextRequest{ContextId: "w"}))(t)
	s = must(n.ctx.Watch(ctx, &contextv1.WatchRequest{ContextId: "w"}))(t)
	appendN(t, n, ctx, "w", 1)
	recvSeqs(t, s, 1, 1)
}

func TestStoreWatchErrors(t *testing.T) {
	n := newCell(t, nil, nil)
	base := testutil.Context(t, 30*time.Second)
	ctx := as(base, "acme", 0)
	must(n.ctx.CreateContext(ctx, &contextv1.CreateContextRequest{ContextId: "w"}))(t)

	wantErr(t, watchErr(n.ctx.Watch(ctx, &contextv1.WatchRequest{ContextId: "missing"})), codes.NotFound, cperr.ContextNotFound)
	wantErr(t, watchErr(n.ctx.Watch(as(base, "acme", 9), &contextv1.WatchRequest{ContextId: "w"})), codes.FailedPrecondition, cperr.StaleEpoch)
	wantErr(t, watchErr(n.ctx.Watch(as(base, "nobody", 0), &contextv1.WatchRequest{ContextId: "w"})), codes.FailedPrecondition, cperr.WrongCell)

	// Fencing the tenant ends its watches: the tenant moved on.
	s := must(n.ctx.Watch(ctx, &contextv1.WatchRequest{ContextId: "w"}))(t)
	appendN(t, n, ctx, "w", 1)
	recvSeqs(t, s, 1, 1)
	must(n.cell.SetTenant(base, &cellv1.SetTenantRequest{Tenant: "acme", Role: cellv1.Role_ROLE_FENCED, Epoch: 2}))(t)
	wantErr(t, watchErr(s, nil), codes.FailedPrecondition, cperr.WrongCell)
}

func TestStoreWatchTenantDeleted(t *testing.T) {
	n := newCell(t, nil, nil)
	base := testutil.Context(t, 30*time.Second)
	ctx := as(base, "acme", 0)
	must(n.ctx.CreateContext(ctx, &contextv1.CreateContextRequest{ContextId: "w"}))(t)
	s := must(n.ctx.Watch(ctx, &contextv1.WatchRequest{ContextId: "w"}))(t)
	appendN(t, n, ctx, "w", 1)
	recvSeqs(t, s, 1, 1)
	must(n.cell.DeleteTenant(base, &cellv1.DeleteTenantRequest{Tenant: "acme", Force: true}))(t)
	// The store keeps no change event for a deleted tenant (its change log
	// goes with it); the watch still ends with CONTEXT_NOT_FOUND.
	wantErr(t, watchErr(s, nil), codes.NotFound, cperr.ContextNotFound)
}

// TestStoreWatchTrimmedChangeLog runs the watch against a change log that
// keeps a single event, so that it must fall back to reading entries.
func TestStoreWatchTrimmedChangeLog(t *testing.T) {
	n := newCell(t, func(c *store.Config) { c.ChangeLog.MaxEvents = 1 }, nil)
	ctx := as(testutil.Context(t, 60*time.Second), "acme", 0)
	must(n.ctx.CreateContext(ctx, &contextv1.CreateContextRequest{ContextId: "w"}))(t)
	must(n.ctx.CreateContext(ctx, &contextv1.CreateContextRequest{ContextId: "other"}))(t)
	s := must(n.ctx.Watch(ctx, &contextv1.WatchRequest{ContextId: "w"}))(t)
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 15 {
				id := "w"
				if i%3 == 0 {
					id = "other"
				}
				if _, err := n.ctx.Append(ctx, &contextv1.AppendRequest{ContextId: id, RequestId: fmt.Sprintf("g%d-%d", g, i), Entries: []*contextv1.Entry{textEntry("user", "x")}}); err != nil {
					t.Errorf("Append: %v", err)
					return
				}
			}
		}()
	}
	recvSeqs(t, s, 1, 40)
	wg.Wait()
	must(n.ctx.DeleteContext(ctx, &contextv1.DeleteContextRequest{ContextId: "w"}))(t)
	wantErr(t, watchErr(s, nil), codes.NotFound, cperr.ContextNotFound)
}

func TestStoreWatchEndsOnClose(t *testing.T) {
	n := newCell(t, nil, nil)
	ctx := as(testutil.Context(t, 30*time.Second), "acme", 0)
	must(n.ctx.CreateContext(ctx, &contextv1.CreateContextRequest{ContextId: "w"}))(t)
	appendN(t, n, ctx, "w", 2)
	s := must(n.ctx.Watch(ctx, &contextv1.WatchRequest{ContextId: "w"}))(t)
	recvSeqs(t, s, 1, 2)
	if err := n.svc.Close(); err != nil {
		t.Fatal(err)
	}
	e := wantErr(t, watchErr(s, nil), codes.Unavailable, cperr.CellUnavailable)
	if e.RetryAfter <= 0 {
		t.Fatalf("no retry hint: %v", e)
	}
}

// TestStoreWatchSmallBatches reads the change log one event at a time and
// entries two at a time, so that a view often holds more entries than the
// events handled so far: the watch must advance by events, not by views.
func TestStoreWatchSmallBatches(t *testing.T) {
	n := newCell(t, nil, func(c *Config) {
		c.WatchChangeBatch = 1
		c.Limits.DefaultReadEntries = 2
	})
	ctx := as(testutil.Context(t, 60*time.Second), "acme", 0)
	must(n.ctx.CreateContext(ctx, &contextv1.CreateContextRequest{ContextId: "w"}))(t)
	must(n.ctx.CreateContext(ctx, &contextv1.CreateContextRequest{ContextId: "other"}))(t)
	appendN(t, n, ctx, "w", 5)
	s := must(n.ctx.Watch(ctx, &contextv1.WatchRequest{ContextId: "w"}))(t)
	recvSeqs(t, s, 1, 5)
	var wg sync.WaitGroup
	for range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 10 {
				id := "w"
				if i%4 == 0 {
					id = "other"
				}
				if _, err := n.ctx.Append(ctx, &contextv1.AppendRequest{ContextId: id, Entries: []*contextv1.Entry{textEntry("u", "a"), textEntry("u", "b"), textEntry("u", "c")}}); err != nil {
					t.Errorf("Append: %v", err)
					return
				}
			}
		}()
	}
	wg.Wait()
	// 3 goroutines × 7 appends to w × 3 entries, after the first 5.
	recvSeqs(t, s, 6, 5+3*7*3)
	must(n.ctx.DeleteContext(ctx, &contextv1.DeleteContextRequest{ContextId: "w"}))(t)
	wantErr(t, watchErr(s, nil), codes.NotFound, cperr.ContextNotFound)
}

// A tenant holds at most Limits.MaxWatchesPerTenant Watch streams on a
// node: the next is refused with QUOTA_EXCEEDED, other tenants are not
// affected, and a closed stream frees its slot.
func TestWatchCapPerTenant(t *testing.T) {
	const max = 2
	n := newCell(t, nil, func(c *Config) { c.Limits.MaxWatchesPerTenant = max })
	ctx := testutil.Context(t, 60*time.Second)
	acme, other := as(ctx, "acme", 0), as(ctx, "other", 0)
	must(n.cell.SetTenant(ctx, &cellv1.SetTenantRequest{Tenant: "other", Role: cellv1.Role_ROLE_OWNER, Epoch: 1}))(t)
	must(n.ctx.CreateContext(acme, &contextv1.CreateContextRequest{ContextId: "w"}))(t)
	must(n.ctx.CreateContext(other, &contextv1.CreateContextRequest{ContextId: "w"}))(t)
	appendN(t, n, acme, "w", 1)
	appendN(t, n, other, "w", 1)

	open := func(ctx context.Context) (watchStream, context.CancelFunc, error) {
		wctx, cancel := context.WithCancel(ctx)
		s, err := n.ctx.Watch(wctx, &contextv1.WatchRequest{ContextId: "w"})
		if err == nil {
			_, err = s.Recv() // the entry: the stream is open on the node
		}
		if err != nil {
			cancel()
		}
		return s, cancel, err
	}
	var cancels []context.CancelFunc
	defer func() {
		for _, c := range cancels {
			c()
		}
	}()
	for range max {
		_, cancel, err := open(acme)
		if err != nil {
			t.Fatalf("watch under the cap: %v", err)
		}
		cancels = append(cancels, cancel)
	}
	_, _, err := open(acme)
	e := wantErr(t, err, codes.ResourceExhausted, cperr.QuotaExceeded)
	if e.Metadata[cperr.MetaTenant] != "acme" {
		t.Errorf("metadata %v does not name the tenant", e.Metadata)
	}
	_, cancel, err := open(other)
	if err != nil {
		t.Fatalf("another tenant's watch: %v", err)
	}
	cancels = append(cancels, cancel)

	cancels[0]()
	testutil.Eventually(t, 10*time.Second, func() error {
		_, cancel, err := open(acme)
		if err != nil {
			return err
		}
		cancels = append(cancels, cancel)
		return nil
	})
}
