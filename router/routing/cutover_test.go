package routing

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"
	"unsafe"

	"github.com/cellplane/cellplane/controlplane/topo"
	"github.com/cellplane/cellplane/controlplane/topo/memtopo"
	"github.com/cellplane/cellplane/internal/testutil"
	cpv1 "github.com/cellplane/cellplane/proto/cellplane/controlplane/v1"
)

func cutting(id, cell string, epoch uint64) *cpv1.Tenant {
	tn := tenant(id, cell, active, epoch)
	tn.CuttingOver = true
	return tn
}

// waitCutting polls until the table counts n tenants cutting over.
func waitCutting(t *testing.T, tb *Table, n int) {
	t.Helper()
	testutil.Eventually(t, wait, func() error {
		if got := tb.CuttingOver(); got != n {
			return fmt.Errorf("CuttingOver = %d, want %d", got, n)
		}
		return nil
	})
}

func TestEntryStaysSmall(t *testing.T) {
	if n := unsafe.Sizeof(entry{}); n != 24 {
		t.Fatalf("entry is %d bytes, want 24 (see the Memory section of doc.go)", n)
	}
}

func TestCuttingOverFlag(t *testing.T) {
	st := memtopo.New()
	defer st.Close()
	fixture(t, st, 4)
	tb := start(t, st, testConfig(t))
	waitLoaded(t, tb, 1)
	if n := tb.CuttingOver(); n != 0 {
		t.Fatalf("CuttingOver = %d before any cutover", n)
	}

	put(t, st, topo.TenantKey("t000"), cutting("t000", "c1", 1))
	put(t, st, topo.TenantKey("t001"), cutting("t001", "c2", 2))
	waitCutting(t, tb, 2)
	r, ok := tb.Lookup("t000")
	want := Route{Tenant: "t000", Cell: "c1", Epoch: 1, Limits: Limits{Rate: 100, Burst: 10}, CuttingOver: true}
	if !ok || r != want {
		t.Fatalf("Lookup(t000) = %+v, %v; want %+v", r, ok, want)
	}

	// The flip clears the flag in the same record that names the new cell.
	putTenant(t, st, "t000", "c2", active, 2)
	waitRoute(t, tb, "t000", "c2", 2)
	if r, _ := tb.Lookup("t000"); r.CuttingOver {
		t.Errorf("flag kept after the flip: %+v", r)
	}
	// Deleting a tenant that is cutting over uncounts it; a non-ACTIVE
	// record with the flag counts (the gauge is about records).
	del(t, st, topo.TenantKey("t001"))
	tn := cutting("t002", "c1", 3)
	tn.State = deleting
	put(t, st, topo.TenantKey("t002"), tn)
	waitRoute(t, tb, "t002", "", 0) // the last of the three writes applied
	if n := tb.CuttingOver(); n != 1 {
		t.Errorf("CuttingOver = %d, want 1 (t002)", n)
	}

	// Refresh reads the flag too.
	ctx := testutil.Context(t, wait)
	st.Fail(memtopo.OpWatch, "", topo.ErrUnavailable)
	st.Fail(memtopo.OpList, topo.CellsPrefix, topo.ErrUnavailable)
	put(t, st, topo.TenantKey("t003"), cutting("t003", "c2", 4))
	r, ok, err := tb.Refresh(ctx, "t003")
	if err != nil || !ok || !r.CuttingOver {
		t.Fatalf("Refresh(t003) = %+v, %v, %v; want cutting over", r, ok, err)
	}
	if n := tb.CuttingOver(); n != 2 {
		t.Errorf("CuttingOver after Refresh = %d, want 2", n)
	}
	st.Clear()
}

func TestWaitChange(t *testing.T) {
	st := memtopo.New()
	defer st.Close()
	fixture(t, st, 4)
	tb := start(t, st, testConfig(t))
	waitLoaded(t, tb, 1)

	type result struct {
		r   Route
		ok  bool
		err error
	}
	waitFor := func(ctx context.Context, id string, seen Route) <-chan result {
		ch := make(chan result, 1)
		go func() {
			r, ok, err := tb.WaitChange(ctx, id, seen)
			ch <- result{r, ok, err}
		}()
		return ch
	}
	recv := func(t *testing.T, ch <-chan result) result {
		t.Helper()
		select {
		case res := <-ch:
			return res
		case <-time.After(wait):
			t.Fatal("WaitChange did not return")
			return result{}
		}
	}

	t.Run("already different: at once", func(t *testing.T) {
		r, ok, err := tb.WaitChange(testutil.Context(t, wait), "t000", Route{Cell: "elsewhere"})
		if err != nil || !ok || r.Cell != "c1" {
			t.Fatalf("WaitChange = %+v, %v, %v", r, ok, err)
		}
	})

	t.Run("context ends first", func(t *testing.T) {
		seen, _ := tb.Lookup("t000")
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
		defer cancel()
		r, ok, err := tb.WaitChange(ctx, "t000", seen)
		if !errors.Is(err, context.DeadlineExceeded) || !ok || r != seen {
			t.Fatalf("WaitChange = %+v, %v, %v; want the current route and DeadlineExceeded", r, ok, err)
		}
	})

	t.Run("cutover then flip", func(t *testing.T) {
		ctx := testutil.Context(t, wait)
		seen, _ := tb.Lookup("t001")
		ch := waitFor(ctx, "t001", seen)
		// A limits change is not a route change: the waiter sleeps on.
		lim := tenant("t001", seen.Cell, active, seen.Epoch)
		lim.Limits.Rate = 7
		put(t, st, topo.TenantKey("t001"), lim)
		testutil.Eventually(t, wait, func() error {
			if r, _ := tb.Lookup("t001"); r.Limits.Rate != 7 {
				return fmt.Errorf("limits not applied: %+v", r)
			}
			return nil
		})
		put(t, st, topo.TenantKey("t001"), cutting("t001", seen.Cell, seen.Epoch))
		res := recv(t, ch)
		if res.err != nil || !res.ok || !res.r.CuttingOver || res.r.Cell != seen.Cell {
			t.Fatalf("WaitChange = %+v; want the same cell, cutting over", res)
		}
		// Held calls wait for the flip: new cell, epoch + 1, flag cleared.
		ch = waitFor(ctx, "t001", res.r)
		putTenant(t, st, "t001", "c1", active, seen.Epoch+1)
		res = recv(t, ch)
		if res.err != nil || !res.ok || res.r.CuttingOver || res.r.Cell != "c1" || res.r.Epoch != seen.Epoch+1 {
			t.Fatalf("WaitChange after the flip = %+v", res)
		}
	})

	t.Run("tenant deleted", func(t *testing.T) {
		ctx := testutil.Context(t, wait)
		seen, _ := tb.Lookup("t002")
		ch := waitFor(ctx, "t002", seen)
		del(t, st, topo.TenantKey("t002"))
		if res := recv(t, ch); res.err != nil || res.ok {
			t.Fatalf("WaitChange on a deleted tenant = %+v, want not ok", res)
		}
	})

	t.Run("full reload wakes waiters", func(t *testing.T) {
		ctx := testutil.Context(t, wait)
		ws := &killableStore{Store: st}
		tb := start(t, ws, testConfig(t))
		waitLoaded(t, tb, 1)
		seen, _ := tb.Lookup("t003")
		ch := waitFor(ctx, "t003", seen)
		// The change can only arrive through a reload: every watch fails
		// (the running one is killed), so the table reloads over and over.
		st.Fail(memtopo.OpWatch, "", topo.ErrUnavailable)
		defer st.Clear()
		ws.kill(topo.ErrUnavailable)
		waitLoaded(t, tb, 2)
		putTenant(t, st, "t003", "c2", active, 40)
		res := recv(t, ch)
		if res.err != nil || !res.ok || res.r.Cell != "c2" || res.r.Epoch != 40 {
			t.Fatalf("WaitChange across a reload = %+v", res)
		}
	})
}

func TestBroadcastIdleAllocatesNothing(t *testing.T) {
	var b broadcast
	if n := testing.AllocsPerRun(100, b.notify); n != 0 {
		t.Errorf("notify without waiters allocates %v times", n)
	}
	ch := b.wait()
	if ch != b.wait() {
		t.Fatal("two waiters got different channels before a notify")
	}
	b.notify()
	select {
	case <-ch:
	default:
		t.Fatal("notify did not close the waiters' channel")
	}
	if b.wait() == ch {
		t.Fatal("a closed channel was handed out again")
	}
}

func TestSnapshotCuttingOver(t *testing.T) {
	st := memtopo.New()
	defer st.Close()
	fixture(t, st, 3)
	put(t, st, topo.TenantKey("t001"), cutting("t001", "c2", 9))
	v, _ := loadView(t, st)

	t.Run("current format keeps the flag", func(t *testing.T) {
		v2, _, err := decodeSnapshot(encodeSnapshot(v, time.Now()))
		if err != nil {
			t.Fatal(err)
		}
		e, ok := v2.get("t001")
		if !ok || !e.cuttingOver() || v2.cutting.Load() != 1 {
			t.Fatalf("t001 = %+v, %v; cutting %d", e, ok, v2.cutting.Load())
		}
		if e, _ := v2.get("t000"); e.cuttingOver() {
			t.Errorf("t000 cutting over after a round trip")
		}
	})

	t.Run("version 1 is still read", func(t *testing.T) {
		old := encodeSnapshotFormat(v, time.Now(), snapshotVersionNoFlags)
		v1, _, err := decodeSnapshot(old)
		if err != nil {
			t.Fatalf("decode a version 1 snapshot: %v", err)
		}
		if v1.n.Load() != v.n.Load() || v1.cutting.Load() != 0 {
			t.Fatalf("version 1: %d tenants (want %d), %d cutting over", v1.n.Load(), v.n.Load(), v1.cutting.Load())
		}
		tb := &Table{}
		tb.view.Store(v1)
		if r, ok := tb.Lookup("t001"); !ok || r.Cell != "c2" || r.Epoch != 9 || r.CuttingOver {
			t.Errorf("Lookup(t001) from version 1 = %+v, %v", r, ok)
		}
	})

	t.Run("unknown flags are refused", func(t *testing.T) {
		bad := newView()
		e, err := bad.makeEntry(tenant("x", "c1", active, 1), 1)
		if err != nil {
			t.Fatal(err)
		}
		e.flags = 0x80
		bad.put("x", e, nil)
		if _, _, err := decodeSnapshot(encodeSnapshot(bad, time.Now())); !errors.Is(err, errBadSnapshot) {
			t.Fatalf("decode with unknown flags: %v, want errBadSnapshot", err)
		}
	})
}
