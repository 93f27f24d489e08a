package routing

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/cellplane/cellplane/controlplane/catalog"
	"github.com/cellplane/cellplane/controlplane/topo"
	"github.com/cellplane/cellplane/controlplane/topo/memtopo"
	"github.com/cellplane/cellplane/internal/testutil"
	cpv1 "github.com/cellplane/cellplane/proto/cellplane/controlplane/v1"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const wait = 10 * time.Second

var (
	active   = cpv1.TenantState_TENANT_STATE_ACTIVE
	creating = cpv1.TenantState_TENANT_STATE_CREATING
	deleting = cpv1.TenantState_TENANT_STATE_DELETING
)

func put(t testing.TB, st topo.Store, key string, msg proto.Message) {
	t.Helper()
	if _, err := st.Txn(testutil.Context(t, wait), nil, []topo.Op{topo.Put(key, catalog.Encode(msg))}); err != nil {
		t.Fatalf("put %s: %v", key, err)
	}
}

func del(t testing.TB, st topo.Store, key string) {
	t.Helper()
	if _, err := st.Txn(testutil.Context(t, wait), nil, []topo.Op{topo.Del(key)}); err != nil {
		t.Fatalf("delete %s: %v", key, err)
	}
}

func tenant(id, cell string, state cpv1.TenantState, epoch uint64) *cpv1.Tenant {
	return &cpv1.Tenant{Id: id, Cell: cell, State: state, Epoch: epoch, Limits: &cpv1.TenantLimits{Rate: 100, Burst: 10}}
}

func putTenant(t testing.TB, st topo.Store, id, cell string, state cpv1.TenantState, epoch uint64) {
	t.Helper()
	put(t, st, topo.TenantKey(id), tenant(id, cell, state, epoch))
}

func putKey(t testing.TB, st topo.Store, tenantID, keyID string, revoked bool) {
	t.Helper()
	k := &cpv1.ApiKey{Id: keyID, Tenant: tenantID, SecretHash: []byte("hash-" + keyID)}
	if revoked {
		k.RevokeTime = timestamppb.Now()
	}
	put(t, st, topo.APIKeyKey(tenantID, keyID), k)
}

func putCell(t testing.TB, st topo.Store, id, leader string, nodes ...*cpv1.Node) {
	t.Helper()
	put(t, st, topo.CellKey(id), &cpv1.Cell{Id: id, Region: "us-east", State: cpv1.CellState_CELL_STATE_ACTIVE})
	if leader != "" {
		put(t, st, topo.CellLeaderKey(id), &cpv1.CellLeader{NodeId: leader, GrpcAddr: leader + ":1", HttpAddr: leader + ":2", Term: 1})
	}
	for _, n := range nodes {
		put(t, st, topo.CellNodeKey(id, n.GetId()), n)
	}
}

func node(id string, worker bool) *cpv1.Node {
	role := cpv1.NodeRole_NODE_ROLE_MEMBER
	if worker {
		role = cpv1.NodeRole_NODE_ROLE_WORKER
	}
	return &cpv1.Node{Id: id, Role: role, GrpcAddr: id + ":1", HttpAddr: id + ":2"}
}

func testConfig(t testing.TB) Config {
	cfg := DefaultConfig()
	cfg.PageSize = 3 // many pages even for small tests
	cfg.RetryMin = time.Millisecond
	cfg.RetryMax = 20 * time.Millisecond
	cfg.Logger = testutil.Logger(t)
	return cfg
}

func start(t testing.TB, st topo.Store, cfg Config) *Table {
	t.Helper()
	tb, err := Start(testutil.Context(t, time.Minute), st, cfg)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() {
		if err := tb.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return tb
}

func waitLoaded(t testing.TB, tb *Table, minReloads float64) {
	t.Helper()
	testutil.Eventually(t, wait, func() error {
		if n := float64(tb.nReloads.Load()); n < minReloads {
			return fmt.Errorf("%v reloads, want ≥ %v", n, minReloads)
		}
		return nil
	})
}

// waitRoute polls until tenant routes to cell at epoch (cell "": not routable).
func waitRoute(t testing.TB, tb *Table, id, cell string, epoch uint64) {
	t.Helper()
	testutil.Eventually(t, wait, func() error {
		r, ok := tb.Lookup(id)
		switch {
		case cell == "" && ok:
			return fmt.Errorf("%s routable: %+v", id, r)
		case cell == "":
			return nil
		case !ok:
			return fmt.Errorf("%s not routable", id)
		case r.Cell != cell || r.Epoch != epoch:
			return fmt.Errorf("%s: %+v, want cell %s epoch %d", id, r, cell, epoch)
		}
		return nil
	})
}

// fixture fills st with n ACTIVE tenants on c1/c2, a CREATING and a
// DELETING tenant, keys and two cells.
func fixture(t testing.TB, st topo.Store, n int) {
	t.Helper()
	for i := range n {
		putTenant(t, st, fmt.Sprintf("t%03d", i), []string{"c1", "c2"}[i%2], active, uint64(i+1))
	}
	putTenant(t, st, "new", "c1", creating, 1)
	putTenant(t, st, "gone", "c1", deleting, 3)
	putKey(t, st, "t000", "k1", false)
	putKey(t, st, "t000", "k2", true)
	putKey(t, st, "new", "k3", false)
	putCell(t, st, "c1", "n1", node("n1", false), node("n2", false), node("n3", false), node("w1", true))
	putCell(t, st, "c2", "", node("m1", false))
	// registry entries without a cell record are not a cell
	put(t, st, topo.CellLeaderKey("orphan"), &cpv1.CellLeader{NodeId: "x"})
}

func checkFixture(t *testing.T, tb *Table, n int) {
	t.Helper()
	if tb.Len() != n+2 {
		t.Errorf("Len = %d, want %d", tb.Len(), n+2)
	}
	for i := range n {
		id := fmt.Sprintf("t%03d", i)
		r, ok := tb.Lookup(id)
		want := Route{Tenant: id, Cell: []string{"c1", "c2"}[i%2], Epoch: uint64(i + 1), Limits: Limits{Rate: 100, Burst: 10}}
		if !ok || r != want {
			t.Errorf("Lookup(%s) = %+v, %v; want %+v", id, r, ok, want)
		}
	}
	for _, id := range []string{"new", "gone", "nope"} {
		if r, ok := tb.Lookup(id); ok {
			t.Errorf("Lookup(%s) = %+v, want not routable", id, r)
		}
	}
	for _, tc := range []struct {
		key, tenant string
		ok          bool
	}{{"k1", "t000", true}, {"k2", "", false}, {"k3", "", false}, {"k4", "", false}} {
		tn, hash, ok := tb.APIKey(tc.key)
		if ok != tc.ok || tn != tc.tenant || (ok && string(hash) != "hash-"+tc.key) {
			t.Errorf("APIKey(%s) = %q, %q, %v; want %q, %v", tc.key, tn, hash, ok, tc.tenant, tc.ok)
		}
	}
	c1, ok := tb.Cell("c1")
	if !ok {
		t.Fatalf("Cell(c1) missing")
	}
	if c1.Region != "us-east" || c1.LeaderID != "n1" || c1.LeaderGRPC != "n1:1" || c1.LeaderHTTP != "n1:2" ||
		len(c1.Members) != 3 || c1.Members[0] != (Node{ID: "n1", GRPCAddr: "n1:1", HTTPAddr: "n1:2"}) ||
		len(c1.Workers) != 1 || c1.Workers[0] != (Node{ID: "w1", GRPCAddr: "w1:1", HTTPAddr: "w1:2", Worker: true}) {
		t.Errorf("Cell(c1) = %+v", c1)
	}
	if c2, ok := tb.Cell("c2"); !ok || c2.LeaderID != "" || len(c2.Members) != 1 {
		t.Errorf("Cell(c2) = %+v, %v", c2, ok)
	}
	if c, ok := tb.Cell("orphan"); ok {
		t.Errorf("Cell(orphan) = %+v, want absent", c)
	}
}

func TestLoad(t *testing.T) {
	st := memtopo.New()
	defer st.Close()
	fixture(t, st, 20)
	tb := start(t, st, testConfig(t))
	waitLoaded(t, tb, 1)
	if !tb.Loaded() || tb.Revision() != int64(st.Revision()) {
		t.Errorf("Loaded %v Revision %d, want true %d", tb.Loaded(), tb.Revision(), st.Revision())
	}
	checkFixture(t, tb, 20)
	if tb.Age() > time.Minute {
		t.Errorf("Age = %s", tb.Age())
	}
}

func TestWatch(t *testing.T) {
	st := memtopo.New()
	defer st.Close()
	fixture(t, st, 4)
	tb := start(t, st, testConfig(t))
	waitLoaded(t, tb, 1)

	t.Run("placement change", func(t *testing.T) {
		putTenant(t, st, "t000", "c2", active, 7)
		waitRoute(t, tb, "t000", "c2", 7)
	})
	t.Run("new tenant, activation", func(t *testing.T) {
		putTenant(t, st, "late", "c1", creating, 1)
		putTenant(t, st, "new", "c2", active, 1)
		waitRoute(t, tb, "new", "c2", 1)
		if _, ok := tb.Lookup("late"); ok {
			t.Errorf("CREATING tenant routable")
		}
		if tn, _, ok := tb.APIKey("k3"); !ok || tn != "new" {
			t.Errorf("APIKey(k3) of the now ACTIVE tenant = %q, %v", tn, ok)
		}
	})
	t.Run("deleting and delete", func(t *testing.T) {
		putTenant(t, st, "t001", "c2", deleting, 9)
		waitRoute(t, tb, "t001", "", 0)
		del(t, st, topo.TenantKey("t002"))
		waitRoute(t, tb, "t002", "", 0)
		testutil.Eventually(t, wait, func() error {
			if tb.Len() != 6 { // 4 + new + gone + late - t002
				return fmt.Errorf("Len %d", tb.Len())
			}
			return nil
		})
	})
	t.Run("key revoked, key added", func(t *testing.T) {
		putKey(t, st, "t003", "k9", false)
		putKey(t, st, "t000", "k1", true)
		testutil.Eventually(t, wait, func() error {
			if _, _, ok := tb.APIKey("k1"); ok {
				return errors.New("revoked k1 still valid")
			}
			if tn, _, ok := tb.APIKey("k9"); !ok || tn != "t003" {
				return errors.New("k9 not valid yet")
			}
			return nil
		})
		del(t, st, topo.APIKeyKey("t003", "k9"))
		testutil.Eventually(t, wait, func() error {
			if _, _, ok := tb.APIKey("k9"); ok {
				return errors.New("deleted k9 still valid")
			}
			return nil
		})
	})
	t.Run("new leader, node gone, new cell, cell deleted", func(t *testing.T) {
		before, _ := tb.Cell("c1")
		put(t, st, topo.CellLeaderKey("c1"), &cpv1.CellLeader{NodeId: "n2", GrpcAddr: "n2:1", HttpAddr: "n2:2", Term: 2})
		del(t, st, topo.CellNodeKey("c1", "n1"))
		putCell(t, st, "c3", "x1", node("x1", false))
		testutil.Eventually(t, wait, func() error {
			c, _ := tb.Cell("c1")
			if c.LeaderID != "n2" || c.LeaderGRPC != "n2:1" || len(c.Members) != 2 || c.Members[0].ID != "n2" {
				return fmt.Errorf("c1 = %+v", c)
			}
			if c3, ok := tb.Cell("c3"); !ok || c3.LeaderID != "x1" {
				return fmt.Errorf("c3 = %+v", c3)
			}
			return nil
		})
		if before.LeaderID != "n1" || len(before.Members) != 3 {
			t.Errorf("a published CellRoute changed: %+v", before)
		}
		del(t, st, topo.CellLeaderKey("c1"))
		del(t, st, topo.CellKey("c3"))
		testutil.Eventually(t, wait, func() error {
			if c, _ := tb.Cell("c1"); c.LeaderID != "" {
				return fmt.Errorf("c1 leader %q", c.LeaderID)
			}
			if _, ok := tb.Cell("c3"); ok {
				return errors.New("c3 still there")
			}
			return nil
		})
	})
	testutil.Eventually(t, wait, func() error {
		if tb.Revision() != int64(st.Revision()) {
			return fmt.Errorf("Revision %d, store %d", tb.Revision(), st.Revision())
		}
		return nil
	})
	if n := float64(tb.nReloads.Load()); n != 1 {
		t.Errorf("reloads = %v, want 1", n)
	}
}

func TestRefresh(t *testing.T) {
	st := memtopo.New()
	defer st.Close()
	fixture(t, st, 2)
	ws := &killableStore{Store: st}
	tb := start(t, ws, testConfig(t))
	waitLoaded(t, tb, 1)
	ctx := testutil.Context(t, wait)

	// Simulate a watch that has not delivered yet: apply writes under a
	// failing watch so only Refresh can see them.
	st.Fail(memtopo.OpWatch, "", topo.ErrUnavailable)
	st.Fail(memtopo.OpList, topo.CellsPrefix, topo.ErrUnavailable) // full reloads fail
	ws.kill(topo.ErrUnavailable)
	putTenant(t, st, "t000", "c2", active, 5)
	r, ok, err := tb.Refresh(ctx, "t000")
	if err != nil || !ok || r.Cell != "c2" || r.Epoch != 5 {
		t.Fatalf("Refresh = %+v, %v, %v", r, ok, err)
	}
	if got, _ := tb.Lookup("t000"); got != r {
		t.Errorf("Lookup after Refresh = %+v, want %+v", got, r)
	}
	del(t, st, topo.TenantKey("t001"))
	if r, ok, err := tb.Refresh(ctx, "t001"); err != nil || ok {
		t.Errorf("Refresh(deleted) = %+v, %v, %v", r, ok, err)
	}
	if r, ok, err := tb.Refresh(ctx, "t00"); err != nil || ok { // a prefix of other tenants
		t.Errorf("Refresh(t00) = %+v, %v, %v", r, ok, err)
	}
	putTenant(t, st, "fresh", "c1", active, 1)
	if r, ok, err := tb.Refresh(ctx, "fresh"); err != nil || !ok || r.Cell != "c1" {
		t.Errorf("Refresh(fresh) = %+v, %v, %v", r, ok, err)
	}

	// A store error returns the current entry and the error.
	st.Fail(memtopo.OpList, topo.TenantKey("t000"), topo.ErrUnavailable)
	r, ok, err = tb.Refresh(ctx, "t000")
	if !errors.Is(err, topo.ErrUnavailable) || !ok || r.Epoch != 5 {
		t.Errorf("Refresh on failure = %+v, %v, %v", r, ok, err)
	}
	// An old version never overwrites a newer one.
	v := tb.view.Load()
	e, _ := v.get("t000")
	old := e
	old.ver--
	old.epoch = 1
	if v.put("t000", old, nil) {
		t.Errorf("an older version replaced a newer one")
	}
	st.Clear()
}

func TestCompactionReloads(t *testing.T) {
	st := memtopo.New()
	defer st.Close()
	fixture(t, st, 6)
	ws := &killableStore{Store: st}
	tb := start(t, ws, testConfig(t))
	waitLoaded(t, tb, 1)
	revBefore := tb.Revision()

	// History is compacted and the watch ends with ErrCompacted; the next
	// Lists fail for a while: the old table keeps serving meanwhile.
	putTenant(t, st, "t000", "c2", active, 42)
	putTenant(t, st, "t005", "c1", deleting, 43)
	if err := st.Compact(testutil.Context(t, wait), st.Revision()); err != nil {
		t.Fatal(err)
	}
	st.FailNext(memtopo.OpList, "", topo.ErrUnavailable, 3)
	ws.hold()
	ws.kill(topo.ErrCompacted)
	for range 50 {
		if r, ok := tb.Lookup("t003"); !ok || r.Epoch != 4 {
			t.Fatalf("not serving during reload: %+v %v", r, ok)
		}
	}
	ws.release()
	waitLoaded(t, tb, 2)
	waitRoute(t, tb, "t000", "c2", 42)
	waitRoute(t, tb, "t005", "", 0)
	if tb.Revision() <= revBefore {
		t.Errorf("Revision %d after reload, was %d", tb.Revision(), revBefore)
	}
	checkCells(t, tb)
	// and the new watch works
	putTenant(t, st, "t001", "c1", active, 77)
	waitRoute(t, tb, "t001", "c1", 77)
}

func checkCells(t *testing.T, tb *Table) {
	t.Helper()
	if c, ok := tb.Cell("c1"); !ok || c.LeaderID != "n1" {
		t.Errorf("Cell(c1) = %+v, %v", c, ok)
	}
}

func TestListFailuresRetry(t *testing.T) {
	st := memtopo.New()
	defer st.Close()
	fixture(t, st, 5)
	st.FailNext(memtopo.OpList, topo.TenantsPrefix, topo.ErrUnavailable, 3)
	st.FailNext(memtopo.OpList, topo.CellsPrefix, topo.ErrUnavailable, 2)
	tb := start(t, st, testConfig(t))
	if tb.Loaded() {
		t.Errorf("Loaded before any load")
	}
	waitLoaded(t, tb, 1)
	checkFixture(t, tb, 5)

	// Watches failing (not compaction) also reload, with backoff.
	st.FailNext(memtopo.OpWatch, "", topo.ErrUnavailable, 4)
	putTenant(t, st, "t000", "c2", active, 99)
	waitRoute(t, tb, "t000", "c2", 99)
}

func TestWatchFailureReloads(t *testing.T) {
	st := memtopo.New()
	defer st.Close()
	fixture(t, st, 3)
	ws := &killableStore{Store: st}
	tb := start(t, ws, testConfig(t))
	waitLoaded(t, tb, 1)
	st.FailNext(memtopo.OpWatch, "", topo.ErrUnavailable, 4)
	ws.kill(topo.ErrUnavailable)
	putTenant(t, st, "t000", "c2", active, 99)
	waitRoute(t, tb, "t000", "c2", 99)
	if n := float64(tb.nReloads.Load()); n < 2 {
		t.Errorf("reloads = %v, want ≥ 2", n)
	}
}

func TestSnapshotRoundTrip(t *testing.T) {
	st := memtopo.New()
	defer st.Close()
	fixture(t, st, 30)
	path := filepath.Join(t.TempDir(), "router.snap")
	cfg := testConfig(t)
	cfg.SnapshotPath = path
	tb, err := Start(testutil.Context(t, time.Minute), st, cfg)
	if err != nil {
		t.Fatal(err)
	}
	waitLoaded(t, tb, 1)
	if err := tb.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if n := float64(tb.nSnapshots.Load()); n != 1 {
		t.Errorf("snapshot writes = %v, want 1", n)
	}
	rev := tb.Revision()

	// Every operation of the store fails: the snapshot routes.
	down := memtopo.New()
	defer down.Close()
	for _, op := range []memtopo.Operation{memtopo.OpGet, memtopo.OpList, memtopo.OpWatch, memtopo.OpTxn} {
		down.Fail(op, "", topo.ErrUnavailable)
	}
	tb2 := start(t, down, cfg)
	if !tb2.Loaded() || tb2.Revision() != rev {
		t.Fatalf("from snapshot: Loaded %v Revision %d, want true %d", tb2.Loaded(), tb2.Revision(), rev)
	}
	checkFixture(t, tb2, 30)
	if _, _, err := tb2.Refresh(testutil.Context(t, wait), "t000"); !errors.Is(err, topo.ErrUnavailable) {
		t.Errorf("Refresh against a down store: %v", err)
	}
	if r, ok := tb2.Lookup("t000"); !ok || r.Cell != "c1" {
		t.Errorf("Lookup(t000) after a failed Refresh = %+v, %v", r, ok)
	}
	if tb2.Age() > time.Minute {
		t.Errorf("Age from the snapshot = %s", tb2.Age())
	}
	// Still serving after failed reload attempts.
	testutil.Eventually(t, wait, func() error {
		if tb2.Age() < time.Millisecond {
			return errors.New("age not growing")
		}
		return nil
	})
	checkFixture(t, tb2, 30)

	// When the store comes back, the table follows it.
	down2 := st
	tb3 := start(t, down2, cfg)
	checkFixture(t, tb3, 30)
	waitLoaded(t, tb3, 1)
	putTenant(t, st, "t007", "c1", active, 1000)
	waitRoute(t, tb3, "t007", "c1", 1000)
}

func TestSnapshotCorruptIgnored(t *testing.T) {
	st := memtopo.New()
	defer st.Close()
	fixture(t, st, 3)
	v, _ := loadView(t, st)
	good := encodeSnapshot(v, time.Now())
	if _, _, err := decodeSnapshot(good); err != nil {
		t.Fatalf("decode: %v", err)
	}
	flip := func(i int) []byte { b := append([]byte(nil), good...); b[i] ^= 0x40; return b }
	wrongVersion := append([]byte(nil), good...)
	wrongVersion[8] = snapshotVersion + 1
	for name, b := range map[string][]byte{
		"empty":         {},
		"truncated":     good[:len(good)-5],
		"magic":         flip(0),
		"payload bit":   flip(headerLen + 3),
		"checksum":      flip(len(good) - 1),
		"wrong version": wrongVersion,
		"garbage":       []byte("not a snapshot at all, really not"),
	} {
		t.Run(name, func(t *testing.T) {
			if _, _, err := decodeSnapshot(b); !errors.Is(err, errBadSnapshot) {
				t.Fatalf("decode: %v, want errBadSnapshot", err)
			}
			path := filepath.Join(t.TempDir(), "router.snap")
			if err := os.WriteFile(path, b, 0o600); err != nil {
				t.Fatal(err)
			}
			down := memtopo.New()
			defer down.Close()
			down.Fail(memtopo.OpList, "", topo.ErrUnavailable)
			cfg := testConfig(t)
			cfg.SnapshotPath = path
			tb := start(t, down, cfg)
			if tb.Loaded() || tb.Len() != 0 {
				t.Errorf("corrupt snapshot loaded: Loaded %v Len %d", tb.Loaded(), tb.Len())
			}
			if _, ok := tb.Lookup("t000"); ok {
				t.Errorf("routes from a corrupt snapshot")
			}
		})
	}
}

func TestSnapshotWrittenPeriodicallyOnlyWhenChanged(t *testing.T) {
	st := memtopo.New()
	defer st.Close()
	fixture(t, st, 3)
	cfg := testConfig(t)
	cfg.SnapshotPath = filepath.Join(t.TempDir(), "router.snap")
	cfg.SnapshotInterval = 5 * time.Millisecond
	tb := start(t, st, cfg)
	waitLoaded(t, tb, 1)
	testutil.Eventually(t, wait, func() error {
		if n := float64(tb.nSnapshots.Load()); n < 1 {
			return errors.New("no snapshot yet")
		}
		return nil
	})
	// No change: no more writes (checked directly, not by waiting).
	n := float64(tb.nSnapshots.Load())
	if err := tb.writeSnapshotIfChanged(); err != nil {
		t.Fatal(err)
	}
	if float64(tb.nSnapshots.Load()) != n {
		t.Errorf("snapshot written without a change")
	}
	putTenant(t, st, "t001", "c1", active, 55)
	testutil.Eventually(t, wait, func() error {
		v, _, err := readSnapshotFile(cfg.SnapshotPath)
		if err != nil {
			return err
		}
		if e, ok := v.get("t001"); !ok || e.epoch != 55 {
			return fmt.Errorf("t001 in snapshot: %+v", e)
		}
		return nil
	})
}

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		cfg Config
		ok  bool
	}{
		{DefaultConfig(), true},
		{Config{}, true},
		{Config{PageSize: -1}, false},
		{Config{SnapshotInterval: -1}, false},
		{Config{RetryMin: time.Second, RetryMax: time.Millisecond}, false},
		{Config{RetryMin: -1}, false},
		{Config{APIKeyMaxStaleness: -1}, false},
		{Config{FreshnessInterval: -1}, false},
		{Config{APIKeyMaxStaleness: time.Second, FreshnessInterval: time.Second}, false},
		{Config{APIKeyMaxStaleness: time.Second, FreshnessInterval: time.Millisecond}, true},
	} {
		if err := tc.cfg.Validate(); (err == nil) != tc.ok {
			t.Errorf("Validate(%+v) = %v", tc.cfg, err)
		}
	}
	if _, err := Start(t.Context(), memtopo.New(), Config{PageSize: -1}); err == nil {
		t.Errorf("Start with a bad config succeeded")
	}
}

func TestLookupAllocs(t *testing.T) {
	v := newView()
	for i := range 1000 {
		e, err := v.makeEntry(tenant(fmt.Sprint(i), "c1", active, 1), 1)
		if err != nil {
			t.Fatal(err)
		}
		v.put(fmt.Sprint(i), e, nil)
	}
	tb := &Table{}
	tb.view.Store(v)
	k, miss := "517", "nope"
	var sink Route
	if n := testing.AllocsPerRun(1000, func() {
		r, _ := tb.Lookup(k)
		sink = r
		tb.Lookup(miss)
	}); n != 0 {
		t.Errorf("Lookup allocates %v times", n)
	}
	if sink.Cell != "c1" {
		t.Errorf("Lookup = %+v", sink)
	}
	v.keys["k"] = apiKey{tenant: "517", hash: []byte("h")}
	if n := testing.AllocsPerRun(1000, func() { tb.APIKey("k") }); n != 0 {
		t.Errorf("APIKey allocates %v times", n)
	}
}

func TestConcurrentReadsDuringUpdates(t *testing.T) {
	st := memtopo.New()
	defer st.Close()
	fixture(t, st, 10)
	ws := &killableStore{Store: st}
	tb := start(t, ws, testConfig(t))
	waitLoaded(t, tb, 1)
	ctx := testutil.Context(t, wait)
	var wg sync.WaitGroup
	done := make(chan struct{})
	for range 2 {
		wg.Go(func() {
			for {
				select {
				case <-done:
					return
				default:
				}
				if r, ok := tb.Lookup("t004"); !ok || r.Cell != "c1" {
					t.Errorf("Lookup(t004) = %+v, %v", r, ok)
					return
				}
				if c, ok := tb.Cell("c1"); !ok || c.ID != "c1" {
					t.Errorf("Cell(c1) = %+v", c)
					return
				}
				tb.APIKey("k1")
			}
		})
	}
	for i := range 30 {
		putTenant(t, st, "t001", "c2", active, uint64(100+i))
		put(t, st, topo.CellLeaderKey("c1"), &cpv1.CellLeader{NodeId: fmt.Sprint("n", i%3+1)})
		if i%10 == 0 {
			ws.kill(topo.ErrCompacted)
		}
		if _, _, err := tb.Refresh(ctx, "t003"); err != nil {
			t.Error(err)
		}
	}
	waitRoute(t, tb, "t001", "c2", 129)
	close(done)
	wg.Wait()
}

// loadView builds a view as a full load does.
func loadView(t testing.TB, st topo.Store) (*view, cellStates) {
	t.Helper()
	tb := &Table{cfg: testConfig(t), st: st, log: testutil.Logger(t)}
	v, cells, err := tb.load(testutil.Context(t, wait))
	if err != nil {
		t.Fatal(err)
	}
	return v, cells
}

// killableStore lets a test end the current watches with an error, and
// hold new Lists until released.
type killableStore struct {
	topo.Store
	mu      sync.Mutex
	kills   []chan error
	holding chan struct{}
	// beforePinnedList, if set, runs once before the next List of a
	// page pinned to a revision (a second page).
	beforePinnedList func()
}

func (k *killableStore) hold() {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.holding = make(chan struct{})
}

func (k *killableStore) release() {
	k.mu.Lock()
	defer k.mu.Unlock()
	close(k.holding)
	k.holding = nil
}

func (k *killableStore) List(ctx context.Context, prefix string, opts topo.ListOptions) (topo.ListResult, error) {
	k.mu.Lock()
	h := k.holding
	hook := k.beforePinnedList
	if opts.Revision != 0 {
		k.beforePinnedList = nil
	} else {
		hook = nil
	}
	k.mu.Unlock()
	if hook != nil {
		hook()
	}
	if h != nil {
		select {
		case <-h:
		case <-ctx.Done():
			return topo.ListResult{}, ctx.Err()
		}
	}
	return k.Store.List(ctx, prefix, opts)
}

func (k *killableStore) kill(err error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, c := range k.kills {
		select {
		case c <- err:
		default:
		}
	}
	k.kills = nil
}

func (k *killableStore) Watch(ctx context.Context, prefix string, from topo.Revision) <-chan topo.WatchResponse {
	ctx, cancel := context.WithCancel(ctx)
	in := k.Store.Watch(ctx, prefix, from)
	kill := make(chan error, 1)
	k.mu.Lock()
	k.kills = append(k.kills, kill)
	k.mu.Unlock()
	out := make(chan topo.WatchResponse)
	go func() {
		defer close(out)
		defer func() {
			cancel()
			for range in { // drain until the inner watch closes
			}
		}()
		for {
			select {
			case err := <-kill:
				select {
				case out <- topo.WatchResponse{Err: err}:
				case <-ctx.Done():
				}
				return
			case r, ok := <-in:
				if !ok {
					return
				}
				select {
				case out <- r:
				case <-ctx.Done():
					return
				}
				if r.Err != nil {
					return
				}
			}
		}
	}()
	return out
}

func mustEncode(t *cpv1.Tenant) []byte { return catalog.Encode(t) }

func TestCellRouteAddresses(t *testing.T) {
	c := &CellRoute{
		Members: []Node{{ID: "n1", GRPCAddr: "g1", HTTPAddr: "h1"}, {ID: "n2", GRPCAddr: "g2"}},
		Workers: []Node{{ID: "w1", HTTPAddr: "hw", Worker: true}, {ID: "w2", Worker: true}},
	}
	if got := c.MemberGRPC(); !slices.Equal(got, []string{"g1", "g2"}) {
		t.Fatalf("MemberGRPC = %v", got)
	}
	if got := c.MCPHTTP(); !slices.Equal(got, []string{"h1", "hw"}) {
		t.Fatalf("MCPHTTP = %v", got)
	}
	if a, b := c.MemberGRPC(), c.MemberGRPC(); &a[0] != &b[0] {
		t.Fatal("MemberGRPC rebuilt its slice on a second call")
	}
}

// gatedStore holds Lists of one key until released, counting them.
type gatedStore struct {
	topo.Store
	key     string
	reads   atomic.Int64
	release chan struct{}
}

func (g *gatedStore) List(ctx context.Context, prefix string, opts topo.ListOptions) (topo.ListResult, error) {
	if prefix == g.key {
		g.reads.Add(1)
		select {
		case <-g.release:
		case <-ctx.Done():
			return topo.ListResult{}, ctx.Err()
		}
	}
	return g.Store.List(ctx, prefix, opts)
}

// N concurrent Refreshes of one tenant (N calls failing with WRONG_CELL at
// once) read etcd once (finding M5); a later Refresh reads again.
func TestRefreshSingleflight(t *testing.T) {
	const n = 16
	st := memtopo.New()
	defer st.Close()
	fixture(t, st, 2)
	gs := &gatedStore{Store: st, key: topo.TenantKey("t000"), release: make(chan struct{})}
	tb := start(t, gs, testConfig(t))
	waitLoaded(t, tb, 1)
	putTenant(t, st, "t000", "c2", active, 7)
	ctx := testutil.Context(t, wait)

	type result struct {
		r   Route
		ok  bool
		err error
	}
	results := make(chan result, n)
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			r, ok, err := tb.Refresh(ctx, "t000")
			results <- result{r, ok, err}
		})
	}
	testutil.Eventually(t, wait, func() error {
		if j := tb.nRefreshJoins.Load(); j != n-1 {
			return fmt.Errorf("%d Refreshes joined the read under way, want %d", j, n-1)
		}
		return nil
	})
	close(gs.release)
	wg.Wait()
	close(results)
	for res := range results {
		if res.err != nil || !res.ok || res.r.Cell != "c2" || res.r.Epoch != 7 {
			t.Fatalf("Refresh = %+v, %v, %v", res.r, res.ok, res.err)
		}
	}
	if got := gs.reads.Load(); got != 1 {
		t.Fatalf("%d Refreshes read etcd %d times, want once", n, got)
	}
	if _, _, err := tb.Refresh(ctx, "t000"); err != nil {
		t.Fatal(err)
	}
	if got := gs.reads.Load(); got != 2 {
		t.Fatalf("a later Refresh: %d reads, want 2 (no stale sharing)", got)
	}
}

// A Refresh that joined a read whose first caller gave up reads again.
func TestRefreshSingleflightLeaderCanceled(t *testing.T) {
	st := memtopo.New()
	defer st.Close()
	fixture(t, st, 2)
	gs := &gatedStore{Store: st, key: topo.TenantKey("t000"), release: make(chan struct{})}
	tb := start(t, gs, testConfig(t))
	waitLoaded(t, tb, 1)

	lctx, lcancel := context.WithCancel(testutil.Context(t, wait))
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() { _, _, _ = tb.Refresh(lctx, "t000") })
	testutil.Eventually(t, wait, func() error {
		if gs.reads.Load() != 1 {
			return errors.New("the first read has not started")
		}
		return nil
	})
	joined := make(chan error, 1)
	wg.Go(func() {
		_, _, err := tb.Refresh(testutil.Context(t, wait), "t000")
		joined <- err
	})
	testutil.Eventually(t, wait, func() error {
		if tb.nRefreshJoins.Load() != 1 {
			return errors.New("not joined yet")
		}
		return nil
	})
	lcancel()
	testutil.Eventually(t, wait, func() error {
		if gs.reads.Load() != 2 {
			return errors.New("the joiner has not read again")
		}
		return nil
	})
	close(gs.release)
	if err := <-joined; err != nil {
		t.Fatalf("joiner: %v", err)
	}
}
