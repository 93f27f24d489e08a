package service

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/cellplane/cellplane/cells/store"
	"github.com/cellplane/cellplane/internal/auth"
	"github.com/cellplane/cellplane/internal/changecursor"
	"github.com/cellplane/cellplane/internal/cperr"
	"github.com/cellplane/cellplane/internal/tenantmd"
	"github.com/cellplane/cellplane/internal/testutil"
	cellv1 "github.com/cellplane/cellplane/proto/cellplane/cell/v1"
	contextv1 "github.com/cellplane/cellplane/proto/cellplane/context/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
)

type changeStream = grpc.ServerStreamingClient[contextv1.WatchChangesResponse]

// recvChangesTo receives until the stream's cursor reaches tseq and
// returns the changes, checking that cursors only move forward and
// that every change is at or below its response's cursor.
func recvChangesTo(t *testing.T, s changeStream, tseq uint64) (changes []*contextv1.Change, cur *contextv1.ChangeCursor) {
	t.Helper()
	for cur.GetTseq() < tseq {
		resp, err := s.Recv()
		if err != nil {
			t.Fatalf("Recv at cursor %v: %v", cur, err)
		}
		if resp.GetCursor() == nil || resp.GetCursor().GetTseq() < cur.GetTseq() {
			t.Fatalf("cursor %v after %v", resp.GetCursor(), cur)
		}
		for _, c := range resp.GetChanges() {
			if c.GetCursor().GetTseq() <= cur.GetTseq() || c.GetCursor().GetTseq() > resp.GetCursor().GetTseq() {
				t.Fatalf("change at %v outside (%v, %v]", c.GetCursor(), cur, resp.GetCursor())
			}
		}
		changes = append(changes, resp.GetChanges()...)
		cur = resp.GetCursor()
	}
	return changes, cur
}

// logOf returns the tenant's change log from the cell.
func logOf(t *testing.T, ctx context.Context, n *node, tenant string) []*cellv1.ChangeEvent {
	t.Helper()
	var out []*cellv1.ChangeEvent
	after := must(n.cell.GetTenant(ctx, &cellv1.GetTenantRequest{Tenant: tenant}))(t).GetTenant().GetChangelogFirstTseq()
	if after > 0 {
		after--
	}
	for {
		resp := must(n.cell.ListChanges(ctx, &cellv1.ListChangesRequest{Tenant: tenant, AfterTseq: after, Limit: 1000}))(t)
		if len(resp.GetEvents()) == 0 {
			return out
		}
		out = append(out, resp.GetEvents()...)
		after = resp.GetEvents()[len(resp.GetEvents())-1].GetTseq()
	}
}

func tenantTseq(t *testing.T, ctx context.Context, n *node) uint64 {
	t.Helper()
	return must(n.cell.GetTenant(ctx, &cellv1.GetTenantRequest{Tenant: "acme"}))(t).GetTenant().GetTseq()
}

// caller is a call as an edge authenticated it: a principal and scopes.
func caller(ctx context.Context, principal string, scopes auth.Scopes) context.Context {
	return tenantmd.WithScopes(tenantmd.WithCaller(ctx, principal, "grpc:test"), scopes.String())
}

func kinds(cs []*contextv1.Change) []string {
	var out []string
	for _, c := range cs {
		s := c.GetKind().String()[len("CHANGE_KIND_"):] + ":" + c.GetContextId() + c.GetMemoryKey()
		if c.GetPrincipal() != "" {
			s += "@" + c.GetPrincipal()
		}
		out = append(out, s)
	}
	return out
}

func TestStoreWatchChanges(t *testing.T) {
	n := newCell(t, nil, nil)
	base := testutil.Context(t, 60*time.Second)
	ctx := as(base, "acme", 0)
	alice := caller(ctx, "alice", auth.DefaultScopes)
	bob := caller(ctx, "bob", auth.DefaultScopes)

	// Opened before anything happens: the first response is the cursor.
	infra := must(n.ctx.WatchChanges(ctx, &contextv1.WatchChangesRequest{}))(t)
	first, err := infra.Recv()
	if err != nil || len(first.GetChanges()) != 0 || first.GetCursor() == nil {
		t.Fatalf("first response %v, %v: want the cursor alone", first, err)
	}
	start := first.GetCursor()
	aliceW := must(n.ctx.WatchChanges(alice, &contextv1.WatchChangesRequest{}))(t)
	must(aliceW.Recv())(t)
	noMem := must(n.ctx.WatchChanges(caller(ctx, "alice", auth.DefaultScopes&^auth.Scopes(0).With(auth.ScopeMemoryRead)), &contextv1.WatchChangesRequest{}))(t)
	must(noMem.Recv())(t)
	onlyA := must(n.ctx.WatchChanges(ctx, &contextv1.WatchChangesRequest{ContextIds: []string{"a"}}))(t)
	must(onlyA.Recv())(t)

	must(n.ctx.CreateContext(alice, &contextv1.CreateContextRequest{ContextId: "a"}))(t)
	must(n.ctx.CreateContext(bob, &contextv1.CreateContextRequest{ContextId: "b"}))(t)
	appendN(t, n, alice, "a", 2)
	appendN(t, n, bob, "b", 1)
	must(n.ctx.PutMemory(alice, &contextv1.PutMemoryRequest{Key: "mine", Value: []byte("x")}))(t)
	must(n.ctx.PutMemory(bob, &contextv1.PutMemoryRequest{Key: "his", Value: []byte("x")}))(t)
	must(n.ctx.PutMemory(bob, &contextv1.PutMemoryRequest{Key: "shared", Value: []byte("x"), Scope: contextv1.MemoryScope_MEMORY_SCOPE_TENANT}))(t)
	must(n.ctx.Fork(alice, &contextv1.ForkRequest{ContextId: "a", NewContextId: "a2"}))(t)
	must(n.ctx.DeleteMemory(alice, &contextv1.DeleteMemoryRequest{Key: "mine"}))(t)
	must(n.ctx.DeleteContext(ctx, &contextv1.DeleteContextRequest{ContextId: "a"}))(t)
	end := tenantTseq(t, base, n)

	for _, tc := range []struct {
		name string
		s    changeStream
		want []string
	}{
		{"infra", infra, []string{"CONTEXT_CREATED:a", "CONTEXT_CREATED:b", "CONTEXT_APPENDED:a", "CONTEXT_APPENDED:b", "MEMORY_PUT:mine@alice", "MEMORY_PUT:his@bob", "MEMORY_PUT:shared", "CONTEXT_FORKED:a2", "MEMORY_DELETED:mine@alice", "CONTEXT_DELETED:a"}},
		{"alice", aliceW, []string{"CONTEXT_CREATED:a", "CONTEXT_APPENDED:a", "MEMORY_PUT:mine", "MEMORY_PUT:shared", "CONTEXT_FORKED:a2", "MEMORY_DELETED:mine", "CONTEXT_DELETED:a"}},
		{"alice without memory:read", noMem, []string{"CONTEXT_CREATED:a", "CONTEXT_APPENDED:a", "CONTEXT_FORKED:a2", "CONTEXT_DELETED:a"}},
		{"context a", onlyA, []string{"CONTEXT_CREATED:a", "CONTEXT_APPENDED:a", "CONTEXT_DELETED:a"}},
	} {
		got, cur := recvChangesTo(t, tc.s, end)
		if fmt.Sprint(kinds(got)) != fmt.Sprint(tc.want) {
			t.Errorf("%s: changes %v, want %v", tc.name, kinds(got), tc.want)
		}
		if cur.GetTseq() != end {
			t.Errorf("%s: cursor %v, want tseq %d", tc.name, cur, end)
		}
	}

	// Against the change log: the infra watch from the start has one
	// change per data event, at its tseq and time, and nothing else.
	from := must(n.ctx.WatchChanges(ctx, &contextv1.WatchChangesRequest{After: start}))(t)
	got, _ := recvChangesTo(t, from, end)
	var want []*cellv1.ChangeEvent
	for _, ev := range logOf(t, base, n, "acme") {
		if ev.GetTseq() > start.GetTseq() {
			want = append(want, ev)
		}
	}
	if len(got) != len(want) {
		t.Fatalf("%d changes for %d events", len(got), len(want))
	}
	for i, ev := range want {
		if got[i].GetCursor().GetTseq() != ev.GetTseq() || got[i].GetCursor().GetTimeUnixNano() != ev.GetTimeUnixNano() {
			t.Errorf("change %d at %v, event at %d/%d", i, got[i].GetCursor(), ev.GetTseq(), ev.GetTimeUnixNano())
		}
	}
	if a := got[2]; a.GetFirstSeq() != 1 || a.GetLastSeq() != 2 {
		t.Errorf("append change %v: want seqs 1..2", a)
	}
	if p := got[4]; p.GetRevision() != p.GetCursor().GetTseq() || p.GetMemoryScope() != contextv1.MemoryScope_MEMORY_SCOPE_PRINCIPAL {
		t.Errorf("put change %v: want revision = tseq, principal scope", p)
	}

	// Resuming from any cursor gives exactly the rest.
	mid := got[4].GetCursor()
	rest := must(n.ctx.WatchChanges(ctx, &contextv1.WatchChangesRequest{After: mid}))(t)
	tail, _ := recvChangesTo(t, rest, end)
	if fmt.Sprint(kinds(tail)) != fmt.Sprint(kinds(got[5:])) {
		t.Errorf("resumed after %v: %v, want %v", mid, kinds(tail), kinds(got[5:]))
	}
}

// Concurrent writers: a watch sees every change once, in tseq order.
func TestStoreWatchChangesConcurrent(t *testing.T) {
	n := newCell(t, nil, func(c *Config) { c.WatchChangeBatch = 3 })
	base := testutil.Context(t, 60*time.Second)
	ctx := as(base, "acme", 0)
	must(n.ctx.CreateContext(ctx, &contextv1.CreateContextRequest{ContextId: "w"}))(t)
	s := must(n.ctx.WatchChanges(ctx, &contextv1.WatchChangesRequest{}))(t)
	must(s.Recv())(t)
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 10 {
				var err error
				if i%2 == 0 {
					_, err = n.ctx.Append(ctx, &contextv1.AppendRequest{ContextId: "w", Entries: []*contextv1.Entry{textEntry("u", "x")}})
				} else {
					_, err = n.ctx.PutMemory(ctx, &contextv1.PutMemoryRequest{Key: fmt.Sprint("k", g, i), Value: []byte("v")})
				}
				if err != nil {
					t.Errorf("write: %v", err)
					return
				}
			}
		}()
	}
	wg.Wait()
	got, _ := recvChangesTo(t, s, tenantTseq(t, base, n))
	if len(got) != 40 {
		t.Fatalf("%d changes, want 40", len(got))
	}
	var seq uint64
	for i, c := range got {
		if i > 0 && c.GetCursor().GetTseq() != got[i-1].GetCursor().GetTseq()+1 {
			t.Fatalf("gap or duplicate at %v after %v", c.GetCursor(), got[i-1].GetCursor())
		}
		if c.GetKind() == contextv1.ChangeKind_CHANGE_KIND_CONTEXT_APPENDED {
			if c.GetFirstSeq() != seq+1 {
				t.Fatalf("append %d..%d after seq %d", c.GetFirstSeq(), c.GetLastSeq(), seq)
			}
			seq = c.GetLastSeq()
		}
	}
}

func TestStoreWatchChangesCursorExpired(t *testing.T) {
	n := newCell(t, func(c *store.Config) { c.ChangeLog.MaxEvents = 2 }, nil)
	base := testutil.Context(t, 60*time.Second)
	ctx := as(base, "acme", 0)
	must(n.ctx.CreateContext(ctx, &contextv1.CreateContextRequest{ContextId: "w"}))(t)
	s := must(n.ctx.WatchChanges(ctx, &contextv1.WatchChangesRequest{}))(t)
	old := must(s.Recv())(t).GetCursor()
	appendN(t, n, ctx, "w", 1)
	_, cur := recvChangesTo(t, s, tenantTseq(t, base, n))
	for range 5 {
		appendN(t, n, ctx, "w", 1)
	}
	log := logOf(t, base, n, "acme")
	oldest, last := log[0], log[len(log)-1]
	wantMeta := func(e *cperr.Error) {
		t.Helper()
		if got, want := e.Metadata[cperr.MetaOldestCursor], changecursor.Format(&contextv1.ChangeCursor{Tseq: oldest.GetTseq(), TimeUnixNano: oldest.GetTimeUnixNano()}); got != want {
			t.Errorf("oldest_cursor %q, want %q", got, want)
		}
		if got, want := e.Metadata[cperr.MetaCurrentCursor], changecursor.Format(&contextv1.ChangeCursor{Tseq: last.GetTseq(), TimeUnixNano: last.GetTimeUnixNano()}); got != want {
			t.Errorf("current_cursor %q, want %q", got, want)
		}
	}
	for name, c := range map[string]*contextv1.ChangeCursor{
		"trimmed":   old,
		"trimmed 2": cur,
		// A cursor whose tseq this cell reused for another change (what a
		// promotion that lost the history leaves): constructed directly.
		"lost history": {Tseq: last.GetTseq(), TimeUnixNano: last.GetTimeUnixNano() + 1},
		"beyond":       {Tseq: last.GetTseq() + 5, TimeUnixNano: 1},
	} {
		e := wantErr(t, watchChangesErr(n.ctx.WatchChanges(ctx, &contextv1.WatchChangesRequest{After: c})), codes.OutOfRange, cperr.CursorExpired)
		wantMeta(e)
		_ = name
	}
	// The metadata's cursors resume.
	cc := must(changecursor.Parse(changecursor.Format(&contextv1.ChangeCursor{Tseq: oldest.GetTseq(), TimeUnixNano: oldest.GetTimeUnixNano()})))(t)
	r := must(n.ctx.WatchChanges(ctx, &contextv1.WatchChangesRequest{After: cc}))(t)
	got, _ := recvChangesTo(t, r, last.GetTseq())
	if len(got) != 1 {
		t.Errorf("from the oldest cursor: %v, want the last append", kinds(got))
	}
}

func watchChangesErr(s changeStream, err error) error {
	if err != nil {
		return err
	}
	for {
		if _, err := s.Recv(); err != nil {
			return err
		}
	}
}

// An idle watch sends heartbeats (the cursor alone); fencing the tenant
// ends it with WRONG_CELL.
func TestStoreWatchChangesHeartbeatAndFence(t *testing.T) {
	n := newCell(t, nil, func(c *Config) { c.WatchHeartbeat = 20 * time.Millisecond })
	base := testutil.Context(t, 60*time.Second)
	ctx := as(base, "acme", 0)
	must(n.ctx.CreateContext(ctx, &contextv1.CreateContextRequest{ContextId: "w"}))(t)
	s := must(n.ctx.WatchChanges(ctx, &contextv1.WatchChangesRequest{}))(t)
	first := must(s.Recv())(t)
	for range 3 {
		hb := must(s.Recv())(t)
		if len(hb.GetChanges()) != 0 || hb.GetCursor().GetTseq() != first.GetCursor().GetTseq() {
			t.Fatalf("heartbeat %v, want cursor %v alone", hb, first.GetCursor())
		}
	}
	must(n.cell.SetTenant(base, &cellv1.SetTenantRequest{Tenant: "acme", Role: cellv1.Role_ROLE_FENCED, Epoch: 2}))(t)
	wantErr(t, watchChangesErr(s, nil), codes.FailedPrecondition, cperr.WrongCell)
}

func TestWatchChangesCapPerTenant(t *testing.T) {
	n := newCell(t, nil, func(c *Config) { c.Limits.MaxWatchesPerTenant = 1 })
	ctx := as(testutil.Context(t, 60*time.Second), "acme", 0)
	s := must(n.ctx.WatchChanges(ctx, &contextv1.WatchChangesRequest{}))(t)
	must(s.Recv())(t)
	wantErr(t, watchChangesErr(n.ctx.WatchChanges(ctx, &contextv1.WatchChangesRequest{})), codes.ResourceExhausted, cperr.QuotaExceeded)
}

// Watch responses carry a cursor; a resume with it continues, a resume
// with a cursor this cell's history does not hold (a lost-history
// promotion, constructed directly) ends with CURSOR_EXPIRED.
func TestStoreWatchCursor(t *testing.T) {
	n := newCell(t, nil, nil)
	base := testutil.Context(t, 60*time.Second)
	ctx := as(base, "acme", 0)
	must(n.ctx.CreateContext(ctx, &contextv1.CreateContextRequest{ContextId: "w"}))(t)
	appendN(t, n, ctx, "w", 2)
	s := must(n.ctx.Watch(ctx, &contextv1.WatchRequest{ContextId: "w"}))(t)
	resp := must(s.Recv())(t)
	cur := resp.GetCursor()
	if cur.GetTseq() != tenantTseq(t, base, n) || cur.GetTimeUnixNano() == 0 {
		t.Fatalf("catch-up cursor %v, want the tenant's position", cur)
	}
	appendN(t, n, ctx, "w", 1)
	live := must(s.Recv())(t)
	if live.GetCursor().GetTseq() <= cur.GetTseq() {
		t.Fatalf("live cursor %v after %v", live.GetCursor(), cur)
	}
	r := must(n.ctx.Watch(ctx, &contextv1.WatchRequest{ContextId: "w", FromSeq: 4, Cursor: live.GetCursor()}))(t)
	appendN(t, n, ctx, "w", 1)
	recvSeqs(t, r, 4, 4)
	bad := &contextv1.ChangeCursor{Tseq: live.GetCursor().GetTseq(), TimeUnixNano: live.GetCursor().GetTimeUnixNano() - 1}
	wantErr(t, watchErr(n.ctx.Watch(ctx, &contextv1.WatchRequest{ContextId: "w", FromSeq: 4, Cursor: bad})), codes.OutOfRange, cperr.CursorExpired)
	// Old clients (no cursor) are not checked.
	recvSeqs(t, must(n.ctx.Watch(ctx, &contextv1.WatchRequest{ContextId: "w", FromSeq: 4}))(t), 4, 4)
}
