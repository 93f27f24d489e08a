package routing

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/cellplane/cellplane/controlplane/topo"
	"github.com/cellplane/cellplane/controlplane/topo/topotest"
	"github.com/cellplane/cellplane/internal/testutil"
	cpv1 "github.com/cellplane/cellplane/proto/cellplane/controlplane/v1"
)

// TestEtcd runs load, watch, a real compaction in the middle of a
// paginated reload, and the recovery against a real embedded etcd.
func TestEtcd(t *testing.T) {
	if testing.Short() {
		t.Skip("starts etcd")
	}
	st := topotest.NewEtcdStore(t)
	compacter, ok := st.(topotest.Compacter)
	if !ok {
		t.Fatalf("%T does not compact", st)
	}
	fixture(t, st, 10)
	ws := &killableStore{Store: st}
	tb := start(t, ws, testConfig(t))
	waitLoaded(t, tb, 1)
	checkFixture(t, tb, 10)

	// watch
	putTenant(t, st, "t000", "c2", active, 50)
	put(t, st, topo.CellLeaderKey("c1"), &cpv1.CellLeader{NodeId: "n2", GrpcAddr: "n2:1"})
	del(t, st, topo.CellNodeKey("c1", "n3"))
	putTenant(t, st, "t001", "c1", deleting, 51)
	waitRoute(t, tb, "t000", "c2", 50)
	waitRoute(t, tb, "t001", "", 0)
	testutil.Eventually(t, wait, func() error {
		if c, _ := tb.Cell("c1"); c.LeaderID != "n2" || len(c.Members) != 2 {
			return fmt.Errorf("c1 = %+v", c)
		}
		return nil
	})

	// A real compaction while the reload pages through tenants/ at a
	// pinned revision: that List fails with ErrCompacted and the reload
	// starts over, serving the old table meanwhile.
	compacted := make(chan error, 1)
	ws.mu.Lock()
	ws.beforePinnedList = func() {
		ctx := testutil.Context(t, wait)
		rev, err := st.Txn(ctx, nil, []topo.Op{topo.Put(topo.TenantKey("t002"), tenantBytes("t002", "c2", 60))})
		if err == nil {
			err = compacter.Compact(ctx, rev)
		}
		compacted <- err
	}
	ws.mu.Unlock()
	ws.kill(errors.New("simulated watch failure"))
	select {
	case err := <-compacted:
		if err != nil {
			t.Fatalf("write and compact: %v", err)
		}
	case <-testutil.Context(t, wait).Done():
		t.Fatal("no paginated reload")
	}
	if r, ok := tb.Lookup("t003"); !ok || r.Epoch != 4 {
		t.Errorf("Lookup(t003) during the reload = %+v, %v", r, ok)
	}
	waitLoaded(t, tb, 2)
	waitRoute(t, tb, "t002", "c2", 60)
	putTenant(t, st, "t004", "c2", active, 70)
	waitRoute(t, tb, "t004", "c2", 70)

	// Watching from a compacted revision: ErrCompacted, then a reload.
	ctx := testutil.Context(t, wait)
	r, ok := <-st.Watch(ctx, topo.TenantsPrefix, 1)
	if !ok || !errors.Is(r.Err, topo.ErrCompacted) {
		t.Errorf("watch from 1 after compaction: %+v, %v", r, ok)
	}
	testutil.Eventually(t, 30*time.Second, func() error {
		if _, _, err := tb.Refresh(ctx, "t004"); err != nil {
			return err
		}
		return nil
	})
}

func tenantBytes(id, cell string, epoch uint64) []byte {
	return mustEncode(tenant(id, cell, active, epoch))
}
