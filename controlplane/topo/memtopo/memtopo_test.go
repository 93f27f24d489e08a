package memtopo_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/cellplane/cellplane/controlplane/topo"
	"github.com/cellplane/cellplane/controlplane/topo/memtopo"
	"github.com/cellplane/cellplane/controlplane/topo/topotest"
	"github.com/cellplane/cellplane/internal/testutil"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var _ topotest.Compacter = (*memtopo.Store)(nil)

func newStore(t *testing.T) *memtopo.Store {
	st := memtopo.New()
	t.Cleanup(func() { _ = st.Close() })
	return st
}

func TestConformance(t *testing.T) {
	topotest.Run(t, func(t *testing.T) topo.Store { return newStore(t) })
}

var errBoom = errors.New("boom")

func TestFail(t *testing.T) {
	ctx := testutil.Context(t, 10*time.Second)
	st := newStore(t)
	v, err := st.Create(ctx, "tenants/a", []byte("a"))
	if err != nil {
		t.Fatal(err)
	}
	st.Fail(memtopo.OpUpdate, "tenants/", topo.ErrUnavailable)
	st.Fail(memtopo.OpGet, "cells/", errBoom)
	if _, err := st.Update(ctx, "tenants/a", nil, v); !errors.Is(err, topo.ErrUnavailable) {
		t.Fatalf("update = %v, want ErrUnavailable", err)
	}
	if _, err := st.Update(ctx, "tenants/a", nil, v); !errors.Is(err, topo.ErrUnavailable) {
		t.Fatalf("second update = %v, want ErrUnavailable (Fail lasts until Clear)", err)
	}
	if _, err := st.Get(ctx, "tenants/a"); err != nil {
		t.Fatalf("get of another op: %v", err)
	}
	if _, err := st.Get(ctx, "cells/x"); !errors.Is(err, errBoom) {
		t.Fatalf("get cells/x = %v, want boom", err)
	}
	st.Clear()
	if _, err := st.Update(ctx, "tenants/a", nil, v); err != nil {
		t.Fatalf("update after Clear: %v", err)
	}
}

func TestFailNext(t *testing.T) {
	ctx := testutil.Context(t, 10*time.Second)
	st := newStore(t)
	st.FailNext(memtopo.OpTxn, "workflows/", errBoom, 2)
	ops := []topo.Op{topo.Put("cells/c", nil), topo.Put("workflows/w", nil)}
	for i := range 2 {
		if _, err := st.Txn(ctx, nil, ops); !errors.Is(err, errBoom) {
			t.Fatalf("txn %d = %v, want boom", i, err)
		}
	}
	if _, err := st.Txn(ctx, nil, ops); err != nil {
		t.Fatalf("third txn: %v", err)
	}
	// A txn not touching the prefix is not affected.
	st.FailNext(memtopo.OpTxn, "workflows/", errBoom, 1)
	if _, err := st.Txn(ctx, nil, []topo.Op{topo.Put("cells/d", nil)}); err != nil {
		t.Fatalf("txn outside the prefix: %v", err)
	}
}

func TestFailEveryOperation(t *testing.T) {
	ctx := testutil.Context(t, 10*time.Second)
	st := newStore(t)
	sess, err := st.NewSession(ctx, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	calls := map[memtopo.Operation]func() error{
		memtopo.OpGet:    func() error { _, err := st.Get(ctx, "k"); return err },
		memtopo.OpCreate: func() error { _, err := st.Create(ctx, "k", nil); return err },
		memtopo.OpUpdate: func() error { _, err := st.Update(ctx, "k", nil, 1); return err },
		memtopo.OpDelete: func() error { return st.Delete(ctx, "k", 0) },
		memtopo.OpTxn:    func() error { _, err := st.Txn(ctx, []topo.Cond{topo.IfAbsent("k")}, nil); return err },
		memtopo.OpList:   func() error { _, err := st.List(ctx, "k", topo.ListOptions{}); return err },
		memtopo.OpWatch: func() error {
			for r := range st.Watch(ctx, "k", 0) {
				return r.Err
			}
			return errors.New("watch closed without a response")
		},
		memtopo.OpSession:  func() error { _, err := st.NewSession(ctx, time.Second); return err },
		memtopo.OpCampaign: func() error { _, err := st.Campaign(ctx, sess, "k", nil); return err },
	}
	for op, call := range calls {
		t.Run(op.String(), func(t *testing.T) {
			st.FailNext(op, "", errBoom, 1)
			if err := call(); !errors.Is(err, errBoom) {
				t.Fatalf("%s = %v, want boom", op, err)
			}
		})
	}
}

func TestExpireLease(t *testing.T) {
	ctx := testutil.Context(t, 10*time.Second)
	st := newStore(t)
	s1, err := st.NewSession(ctx, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	s2, err := st.NewSession(ctx, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	l1, err := st.Campaign(ctx, s1, topo.ControllerElection, []byte("one"))
	if err != nil {
		t.Fatal(err)
	}
	won := make(chan error, 1)
	go func() {
		_, err := st.Campaign(ctx, s2, topo.ControllerElection, []byte("two"))
		won <- err
	}()
	testutil.Eventually(t, 5*time.Second, func() error {
		res, err := st.List(ctx, topo.ControllerElection+"/", topo.ListOptions{})
		if err != nil || len(res.KVs) != 2 {
			return fmt.Errorf("candidates %d, %v", len(res.KVs), err)
		}
		return nil
	})
	if !st.ExpireLease(s1.Lease()) {
		t.Fatal("ExpireLease: no such lease")
	}
	<-s1.Done()
	<-l1.Done()
	if err := <-won; err != nil {
		t.Fatalf("second campaign: %v", err)
	}
	if st.ExpireLease(s1.Lease()) {
		t.Fatal("ExpireLease of an expired lease reported true")
	}
	if got := st.Leases(); len(got) != 1 || got[0] != s2.Lease() {
		t.Fatalf("leases %v, want [%x]", got, s2.Lease())
	}
}

func TestSlowWatcherEndsWithCompacted(t *testing.T) {
	ctx := testutil.Context(t, 10*time.Second)
	st := memtopo.NewWithOptions(memtopo.Options{MaxWatchBacklog: 10})
	t.Cleanup(func() { _ = st.Close() })
	ch := st.Watch(ctx, "s/", 0)
	// Nobody reads: writers must not block, and the watcher overflows.
	for i := range 50 {
		if _, err := st.Create(ctx, fmt.Sprintf("s/%d", i), nil); err != nil {
			t.Fatal(err)
		}
	}
	var last topo.WatchResponse
	for r := range ch {
		last = r
	}
	if !errors.Is(last.Err, topo.ErrCompacted) {
		t.Fatalf("last response %+v, want ErrCompacted", last)
	}
}

func TestClosed(t *testing.T) {
	ctx := testutil.Context(t, 10*time.Second)
	st := memtopo.New()
	ch := st.Watch(ctx, "", 0)
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	r := <-ch
	if !errors.Is(r.Err, topo.ErrClosed) {
		t.Fatalf("watch after close: %+v", r)
	}
	if _, err := st.Get(ctx, "k"); !errors.Is(err, topo.ErrClosed) {
		t.Fatalf("get after close: %v", err)
	}
	if err := st.Compact(context.Background(), 1); !errors.Is(err, topo.ErrClosed) {
		t.Fatalf("compact after close: %v", err)
	}
}

func TestWatchFromFutureRevision(t *testing.T) {
	ctx := testutil.Context(t, 10*time.Second)
	st := newStore(t)
	from := st.Revision() + 3
	ch := st.Watch(ctx, "f/", from)
	for i := range 4 {
		if _, err := st.Create(ctx, fmt.Sprintf("f/%d", i), nil); err != nil {
			t.Fatal(err)
		}
	}
	r := <-ch
	if r.Err != nil || r.Revision != from || len(r.Events) != 1 || r.Events[0].KV.Key != "f/2" {
		t.Fatalf("first response %+v, want f/2 at %d", r, from)
	}
}
