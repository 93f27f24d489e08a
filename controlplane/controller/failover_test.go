package controller_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/cellplane/cellplane/cells/registry"
	"github.com/cellplane/cellplane/controlplane/catalog"
	"github.com/cellplane/cellplane/controlplane/controller"
	"github.com/cellplane/cellplane/controlplane/intent"
	"github.com/cellplane/cellplane/controlplane/topo"
	"github.com/cellplane/cellplane/controlplane/topo/memtopo"
	"github.com/cellplane/cellplane/internal/cperr"
	"github.com/cellplane/cellplane/internal/testutil"
	cellv1 "github.com/cellplane/cellplane/proto/cellplane/cell/v1"
	cpv1 "github.com/cellplane/cellplane/proto/cellplane/controlplane/v1"
)

var (
	switchover = cpv1.FailoverKind_FAILOVER_KIND_SWITCHOVER
	promote    = cpv1.FailoverKind_FAILOVER_KIND_PROMOTE
)

// A planned switchover fences the owner, waits for the standby to apply
// the fence, promotes it at epoch + 1 and flips the placement, the old
// owner becoming the standby: nothing lost.
func TestSwitchover(t *testing.T) {
	st := memtopo.New()
	defer st.Close()
	e := newFoEnv(t, st)
	e.cells.set(func(s *simCells) { s.paused["b"] = true }) // the standby lags behind
	e.cells.write(t, "a", "acme", 3)                        // a: tseq 9, b: 6
	e.start(t, "c1", nil)

	fo := e.startFailover(t, "acme", switchover)
	if fo.GetId() != "acme-e2-switchover" || fo.GetFromCell() != "a" || fo.GetToCell() != "b" || fo.GetOldEpoch() != 1 || fo.GetTrigger() != "operator" {
		t.Fatalf("recorded %v", fo)
	}
	fo = e.waitFailover(t, fo.GetId(), cpv1.FailoverState_FAILOVER_STATE_PROMOTING)
	if a := e.cells.get("a", "acme"); a.role != cellv1.Role_ROLE_FENCED || a.epoch != 2 || a.tseq != 10 {
		t.Fatalf("old owner %+v, want FENCED at epoch 2 with the fence event at tseq 10", a)
	}
	if fo.GetOldOwnerTseq() != 9 || !fo.GetOldOwnerReported() || fo.GetNewEpoch() != 2 {
		t.Fatalf("after the fence: %v", fo)
	}
	if p := e.tenant(t, "acme"); !p.GetCuttingOver() || p.GetOperationId() != fo.GetId() || p.GetCell() != "a" || p.GetEpoch() != 1 {
		t.Fatalf("placement while cutting over: %v", p)
	}
	// The standby is not promoted before it applied the fence.
	if err := testutil.Poll(t.Context(), 100*time.Millisecond, func() error {
		if e.cells.get("b", "acme").role == cellv1.Role_ROLE_OWNER {
			return nil
		}
		return errors.New("not promoted")
	}); err == nil {
		t.Fatal("the standby was promoted before it applied the fence")
	}

	e.cells.set(func(s *simCells) { s.paused["b"] = false })
	fo = e.waitFailover(t, fo.GetId(), cpv1.FailoverState_FAILOVER_STATE_DONE)
	p := e.tenant(t, "acme")
	if p.GetCell() != "b" || p.GetStandbyCell() != "a" || p.GetEpoch() != 2 || p.GetCuttingOver() || p.GetOperationId() != "" {
		t.Fatalf("placement after the switchover: %v", p)
	}
	if fo.GetPromotedTseq() != 10 || fo.GetLostEvents() != 0 || fo.GetTimeToPromote().AsDuration() <= 0 || fo.GetPromoteTime() == nil {
		t.Fatalf("failover record %v: want promoted at tseq 10 (the fence), nothing lost", fo)
	}
	if !slices.Contains(e.cells.changes(), "b/acme OWNER@2 tseq 11") {
		t.Fatalf("changes %v: want b OWNER at epoch 2", e.cells.changes())
	}
}

// A switchover needs a standby that finished its copy; a tenant without a
// standby cannot fail over at all.
func TestFailoverNeedsABootstrappedStandby(t *testing.T) {
	st := memtopo.New()
	defer st.Close()
	foSeedCells(t, st, activeCell("a", "us", 0), activeCell("b", "eu", 0))
	e := &foEnv{st: st, cells: newSimCells()}
	e.cells.notBootstrapped = true
	e.place(t, "acme", "a", "b")
	e.place(t, "solo", "a", "")
	e.start(t, "c1", nil)
	ctx := testutil.Context(t, 10*time.Second)

	if _, err := intent.StartFailover(ctx, st, intent.FailoverRequest{Tenant: "solo", Kind: switchover}); !errors.Is(err, cperr.ErrNoStandby) {
		t.Fatalf("failover of a tenant without a standby: %v, want NO_STANDBY", err)
	}
	fos, err := intent.StartFailover(ctx, st, intent.FailoverRequest{Tenant: "acme", Kind: switchover})
	if err != nil {
		t.Fatal(err)
	}
	fos, err = intent.WaitFailoverAck(ctx, st, fos, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if err := intent.FailoverError(fos[0]); !errors.Is(err, cperr.ErrNoStandby) {
		t.Fatalf("failover with a standby still copying: %v (%v), want NO_STANDBY", err, fos[0])
	}
	p := e.tenant(t, "acme")
	if p.GetOperationId() != "" || p.GetCuttingOver() || p.GetEpoch() != 1 || p.GetCell() != "a" {
		t.Fatalf("placement after the refused failover: %v", p)
	}
	if a := e.cells.get("a", "acme"); a.role != cellv1.Role_ROLE_OWNER || a.epoch != 1 {
		t.Fatalf("owner after the refused failover: %+v", a)
	}
}

// One operation per tenant: a second failover is TENANT_BUSY, but an
// emergency promotion supersedes a switchover stuck waiting (here for a
// standby that does not catch up); the old owner's report finishes it.
func TestPromotionSupersedesAStuckSwitchover(t *testing.T) {
	st := memtopo.New()
	defer st.Close()
	e := newFoEnv(t, st)
	e.cells.set(func(s *simCells) { s.paused["b"] = true }) // b stays at tseq 6
	e.cells.write(t, "a", "acme", 2)                        // a at 8
	e.start(t, "c1", nil)
	ctx := testutil.Context(t, 10*time.Second)

	sw := e.startFailover(t, "acme", switchover)
	e.waitFailover(t, sw.GetId(), cpv1.FailoverState_FAILOVER_STATE_PROMOTING)
	if _, err := intent.StartFailover(ctx, st, intent.FailoverRequest{Tenant: "acme", Kind: switchover}); !errors.Is(err, cperr.ErrTenantBusy) {
		t.Fatalf("a second switchover: %v, want TENANT_BUSY", err)
	}
	pr := e.startFailover(t, "acme", promote)
	if pr.GetId() != "acme-e2-promote" {
		t.Fatalf("promotion id %s", pr.GetId())
	}
	old := e.waitFailover(t, sw.GetId(), cpv1.FailoverState_FAILOVER_STATE_FAILED)
	if !strings.Contains(old.GetErrorMessage(), "superseded") {
		t.Fatalf("superseded switchover: %v", old)
	}
	// a has no authority key (no keeper runs in this test): the promotion
	// goes on after the margin, with what b has (tseq 6).
	pr = e.waitFailover(t, pr.GetId(), cpv1.FailoverState_FAILOVER_STATE_AWAITING_OLD_OWNER)
	if pr.GetPromotedTseq() != 6 || pr.GetLeaseWaitUntil() == nil {
		t.Fatalf("promotion %v: want promoted at tseq 6 after a lease wait", pr)
	}
	p := e.tenant(t, "acme")
	if p.GetCell() != "b" || p.GetStandbyCell() != "" || p.GetEpoch() != 2 || p.GetCuttingOver() || p.GetOperationId() != "" {
		t.Fatalf("placement after the promotion: %v", p)
	}
	// The old owner (fenced by the switchover at tseq 9) reports: the
	// writes it acknowledged were up to tseq 8; b had 6.
	fkey := topo.CellFenceKey("a", "acme")
	fence := &cpv1.CellFence{}
	v, err := catalog.Get(ctx, st, fkey, fence)
	if err != nil || fence.GetEpoch() != 2 || fence.GetFailoverId() != pr.GetId() {
		t.Fatalf("fence %v (%v)", fence, err)
	}
	fence.Applied, fence.Tseq = true, 8
	if _, err := st.Update(ctx, fkey, catalog.Encode(fence), v); err != nil {
		t.Fatal(err)
	}
	pr = e.waitFailover(t, pr.GetId(), cpv1.FailoverState_FAILOVER_STATE_DONE)
	if pr.GetOldOwnerTseq() != 8 || pr.GetLostEvents() != 2 || !pr.GetOldOwnerReported() {
		t.Fatalf("promotion after the report: %v, want 2 lost events", pr)
	}
	if _, err := st.Get(ctx, fkey); !errors.Is(err, topo.ErrNotFound) {
		t.Fatalf("fence key after the report: %v, want it deleted", err)
	}
}

// cuttable is a topo store a test can cut off: every call fails with
// ErrUnavailable while cut (leases are not kept alive by calls in
// memtopo; the test expires them as etcd would).
type cuttable struct {
	topo.Store
	mu  sync.Mutex
	cut bool
}

func (c *cuttable) set(cut bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.cut = cut
}

func (c *cuttable) err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cut {
		return fmt.Errorf("cut off: %w", topo.ErrUnavailable)
	}
	return nil
}

func (c *cuttable) Get(ctx context.Context, key string) (topo.KV, error) {
	if err := c.err(); err != nil {
		return topo.KV{}, err
	}
	return c.Store.Get(ctx, key)
}

func (c *cuttable) List(ctx context.Context, prefix string, opts topo.ListOptions) (topo.ListResult, error) {
	if err := c.err(); err != nil {
		return topo.ListResult{}, err
	}
	return c.Store.List(ctx, prefix, opts)
}

func (c *cuttable) Txn(ctx context.Context, conds []topo.Cond, ops []topo.Op) (topo.Revision, error) {
	if err := c.err(); err != nil {
		return 0, err
	}
	return c.Store.Txn(ctx, conds, ops)
}

func (c *cuttable) NewSession(ctx context.Context, ttl time.Duration) (topo.Session, error) {
	if err := c.err(); err != nil {
		return nil, err
	}
	return c.Store.NewSession(ctx, ttl)
}

func (c *cuttable) Watch(ctx context.Context, prefix string, from topo.Revision) <-chan topo.WatchResponse {
	if err := c.err(); err != nil {
		ch := make(chan topo.WatchResponse, 1)
		ch <- topo.WatchResponse{Err: err}
		close(ch)
		return ch
	}
	return c.Store.Watch(ctx, prefix, from)
}

// An emergency promotion of a tenant whose owner cell is cut off from
// etcd and from the control plane, with a real authority keeper on the
// old cell: the promotion waits until the old leader stopped being valid
// and its authority key expired; the standby is promoted with what it
// had; when the old cell comes back it applies the fence, reports, and
// the writes it acknowledged that the standby never received are counted.
func TestEmergencyPromotion(t *testing.T) {
	st := memtopo.New()
	defer st.Close()
	e := newFoEnv(t, st)                                    // a: tseq 6, b caught up
	e.cells.set(func(s *simCells) { s.paused["b"] = true }) // replication stops
	e.cells.write(t, "a", "acme", 3)                        // acknowledged by a only: tseq 9
	ctx := testutil.Context(t, 20*time.Second)

	cut := &cuttable{Store: st}
	acfg := registry.DefaultAuthorityConfig()
	acfg.Cell, acfg.NodeID = "a", "a-n1"
	acfg.TTL, acfg.DriftMargin, acfg.Poll = 2*time.Second, 500*time.Millisecond, 5*time.Millisecond
	acfg.Logger = testutil.Logger(t).With("keeper", "a-n1")
	keeper, err := registry.StartAuthority(cut, acfg, registry.LeaderFunc(func() (uint64, bool) { return 1, true }), e.cells.proposer("a"))
	if err != nil {
		t.Fatal(err)
	}
	defer keeper.Close()
	testutil.Eventually(t, 5*time.Second, func() error {
		if !keeper.Valid() {
			return errors.New("keeper of a not valid yet")
		}
		return nil
	})
	e.start(t, "c1", nil)

	// Cell a is cut off: from etcd (its keeper) and from the controller.
	cut.set(true)
	e.cells.set(func(s *simCells) { s.down["a"] = true })
	fo := e.startFailover(t, "acme", promote)
	fo = e.waitFailover(t, fo.GetId(), cpv1.FailoverState_FAILOVER_STATE_WAITING_LEASE)
	if p := e.tenant(t, "acme"); p.GetEpoch() != 2 || !p.GetCuttingOver() || p.GetCell() != "a" {
		t.Fatalf("placement while waiting for the lease: %v", p)
	}
	akv, err := st.Get(ctx, topo.CellAuthorityKey("a"))
	if err != nil {
		t.Fatalf("a's authority key: %v", err)
	}
	// While the key exists, nothing is promoted.
	if err := testutil.Poll(ctx, 200*time.Millisecond, func() error {
		if e.cells.get("b", "acme").role == cellv1.Role_ROLE_OWNER {
			return nil
		}
		return errors.New("not promoted")
	}); err == nil {
		t.Fatal("the standby was promoted while the old owner's authority key existed")
	}
	// The old leader stops acknowledging on its own clock; then etcd
	// expires its lease (memtopo: the test does, as etcd would after the TTL).
	testutil.Eventually(t, 5*time.Second, func() error {
		if keeper.Valid() {
			return errors.New("the cut-off keeper is still valid")
		}
		return nil
	})
	expired := time.Now()
	if !st.ExpireLease(akv.Lease) {
		t.Fatal("the authority key's lease is gone already")
	}

	fo = e.waitFailover(t, fo.GetId(), cpv1.FailoverState_FAILOVER_STATE_AWAITING_OLD_OWNER)
	if fo.GetPromoteTime().AsTime().Before(expired) || fo.GetLeaseWaitUntil().AsTime().Before(expired) {
		t.Fatalf("promoted at %s (lease wait until %s), before the lease expired at %s", fo.GetPromoteTime().AsTime(), fo.GetLeaseWaitUntil().AsTime(), expired)
	}
	if fo.GetPromotedTseq() != 6 || fo.GetNewEpoch() != 2 || fo.GetOldOwnerReported() {
		t.Fatalf("promotion %v: want promoted at tseq 6, no report yet", fo)
	}
	if b := e.cells.get("b", "acme"); b.role != cellv1.Role_ROLE_OWNER || b.epoch != 2 {
		t.Fatalf("standby after the promotion: %+v", b)
	}
	if p := e.tenant(t, "acme"); p.GetCell() != "b" || p.GetStandbyCell() != "" || p.GetEpoch() != 2 || p.GetCuttingOver() || p.GetOperationId() != "" {
		t.Fatalf("placement after the promotion: %v", p)
	}
	// The old owner's lost events may hold a quota change: the
	// placement's max_bytes is pushed to the new owner again (quota.go).
	testutil.Eventually(t, 5*time.Second, func() error {
		p := e.tenant(t, "acme")
		e.cells.mu.Lock()
		q := e.cells.quota["b/acme"]
		e.cells.mu.Unlock()
		if p.GetQuotaPending() || q == nil || q.GetMaxBytes() != p.GetLimits().GetMaxBytes() {
			return fmt.Errorf("after the promotion: quota_pending %v, b's quota %v, want max_bytes %d pushed", p.GetQuotaPending(), q, p.GetLimits().GetMaxBytes())
		}
		return nil
	})

	// Cell a comes back: its leader applies the fence before it takes
	// its authority again, and reports.
	e.cells.set(func(s *simCells) { s.down["a"] = false })
	cut.set(false)
	fo = e.waitFailover(t, fo.GetId(), cpv1.FailoverState_FAILOVER_STATE_DONE)
	if fo.GetOldOwnerTseq() != 9 || fo.GetLostEvents() != 3 {
		t.Fatalf("after the old owner's report: %v, want old_owner_tseq 9 and 3 lost events", fo)
	}
	if a := e.cells.get("a", "acme"); a.role != cellv1.Role_ROLE_FENCED || a.epoch != 2 || a.tseq != 10 {
		t.Fatalf("old owner %+v, want FENCED at epoch 2 (its data kept)", a)
	}
	testutil.Eventually(t, 5*time.Second, func() error {
		if !keeper.Valid() {
			return errors.New("a's leader not valid again")
		}
		return nil
	})
	if _, err := st.Get(ctx, topo.CellFenceKey("a", "acme")); !errors.Is(err, topo.ErrNotFound) {
		t.Fatalf("fence key: %v, want deleted after the report", err)
	}
}

// A controller deposed while it fences the owner cannot record the
// failover's progress; the next leader resumes it, and the fence (same
// request id) is applied once.
func TestDeposedControllerCannotWriteTheFailover(t *testing.T) {
	st := memtopo.New()
	defer st.Close()
	e := newFoEnv(t, st)
	release := make(chan struct{})
	e.start(t, "old", nil)
	leases := st.Leases()
	ctx := testutil.Context(t, 15*time.Second)
	e.cells.set(func(s *simCells) { s.block = release })
	fo := e.startFailover(t, "acme", switchover)
	// old recorded the first step and is now inside the fence call.
	var v topo.Version
	testutil.Eventually(t, 5*time.Second, func() error {
		cur, cv, err := intent.GetFailover(ctx, st, fo.GetId())
		if err != nil || cur.GetNewEpoch() != 2 {
			return fmt.Errorf("first step not recorded yet (%v)", err)
		}
		v = cv
		return nil
	})
	st.Fail(memtopo.OpSession, "", topo.ErrUnavailable) // old cannot campaign again
	for _, l := range leases {
		st.ExpireLease(l)
	}
	e.cells.set(func(s *simCells) { s.block = nil })
	close(release)
	if err := testutil.Poll(ctx, 300*time.Millisecond, func() error {
		_, cv, err := intent.GetFailover(ctx, st, fo.GetId())
		if err == nil && cv != v {
			return nil
		}
		return errors.New("unchanged")
	}); err == nil {
		t.Fatal("a deposed controller wrote the failover record")
	}
	// The deposed leader's fence call is not guarded by its leadership: it
	// went through if the release came first, or ended with its
	// leadership's context (which won the race under load in CI). Either
	// way the successor's fence, same request id, applies once (below).
	if a := e.cells.get("a", "acme"); a.role != cellv1.Role_ROLE_FENCED && (a.role != cellv1.Role_ROLE_OWNER || a.epoch != 1) {
		t.Fatalf("owner %+v: want FENCED (the deposed call went through) or still OWNER at epoch 1 (it was cancelled)", a)
	}
	st.Clear()
	e.start(t, "new", nil)
	fo = e.waitFailover(t, fo.GetId(), cpv1.FailoverState_FAILOVER_STATE_DONE)
	fences := 0
	for _, c := range e.cells.changes() {
		if strings.HasPrefix(c, "a/acme FENCED@2") {
			fences++
		}
	}
	if fences != 1 || fo.GetOldOwnerTseq() != 6 || fo.GetPromotedTseq() != 7 {
		t.Fatalf("fenced %d times, record %v: want one fence at tseq 7", fences, fo)
	}
}

// A cell failover switches over every tenant of the cell that has a
// standby, and leaves the others alone.
func TestCellSwitchover(t *testing.T) {
	st := memtopo.New()
	defer st.Close()
	e := newFoEnv(t, st)
	e.place(t, "beta", "a", "b")
	e.place(t, "solo", "a", "")
	e.start(t, "c1", nil)
	fos, err := intent.StartFailover(testutil.Context(t, 5*time.Second), st, intent.FailoverRequest{Cell: "a", Kind: switchover})
	if err != nil {
		t.Fatal(err)
	}
	var tenants []string
	for _, fo := range fos {
		tenants = append(tenants, fo.GetTenant())
		e.waitFailover(t, fo.GetId(), cpv1.FailoverState_FAILOVER_STATE_DONE)
	}
	slices.Sort(tenants)
	if strings.Join(tenants, ",") != "acme,beta" {
		t.Fatalf("failed over %v, want acme and beta", tenants)
	}
	for _, id := range []string{"acme", "beta"} {
		if p := e.tenant(t, id); p.GetCell() != "b" || p.GetEpoch() != 2 {
			t.Fatalf("%s: %v", id, p)
		}
	}
	if p := e.tenant(t, "solo"); p.GetCell() != "a" || p.GetEpoch() != 1 || p.GetOperationId() != "" {
		t.Fatalf("solo: %v", p)
	}
	all, err := intent.ListFailovers(testutil.Context(t, 5*time.Second), st, intent.FailoverFilter{Cell: "b", Tenant: "beta"})
	if err != nil || len(all) != 1 || all[0].GetTenant() != "beta" {
		t.Fatalf("list: %v %v", all, err)
	}
}

// Finished failovers beyond the history bounds are deleted (the newest
// HistoryMax within HistoryTTL are kept); one still waiting for its old
// owner's report is kept however old.
func TestFailoverHistoryIsBounded(t *testing.T) {
	st := memtopo.New()
	e := newFoEnv(t, st)
	ctx := testutil.Context(t, 15*time.Second)
	old := time.Now().Add(-30 * 24 * time.Hour)
	put := func(id string, state cpv1.FailoverState, updated time.Time) {
		fo := &cpv1.Failover{Id: id, Tenant: "t-" + id, Kind: promote, FromCell: "a", State: state, UpdateTime: timestamppb.New(updated)}
		ops := []topo.Op{topo.Put(topo.FailoverKey(id), catalog.Encode(fo))}
		if state == cpv1.FailoverState_FAILOVER_STATE_AWAITING_OLD_OWNER {
			// Really waiting: its fence is in etcd and not yet applied.
			// Without one the controller rightly finishes it at once ("no
			// report will come"), as DONE with a new update time, the
			// newest of the history, which then pushes f2 out (the old
			// flake: kept [f3 f5] whenever that step ran before the
			// first prune).
			fence := &cpv1.CellFence{Tenant: fo.GetTenant(), Epoch: 2, FailoverId: id}
			ops = append(ops, topo.Put(topo.CellFenceKey("a", fo.GetTenant()), catalog.Encode(fence)))
		}
		if _, err := st.Txn(ctx, nil, ops); err != nil {
			t.Fatal(err)
		}
	}
	now := time.Now()
	put("f1", cpv1.FailoverState_FAILOVER_STATE_DONE, now.Add(-3*time.Minute))
	put("f2", cpv1.FailoverState_FAILOVER_STATE_FAILED, now.Add(-2*time.Minute))
	put("f3", cpv1.FailoverState_FAILOVER_STATE_DONE, now.Add(-time.Minute))
	put("f4", cpv1.FailoverState_FAILOVER_STATE_DONE, old)               // past the TTL
	put("f5", cpv1.FailoverState_FAILOVER_STATE_AWAITING_OLD_OWNER, old) // not finished: kept
	e.start(t, "c1", func(c *controller.Config) {
		c.Failover.HistoryMax = 2
		c.Failover.HousekeepingInterval = 20 * time.Millisecond
	})
	testutil.Eventually(t, 10*time.Second, func() error {
		recs, _, err := catalog.ListRecords(ctx, st, topo.FailoversPrefix, topo.KindFailover, catalog.NewFailover)
		if err != nil {
			return err
		}
		var ids []string
		for _, r := range recs {
			ids = append(ids, r.Parsed.ID)
		}
		if want := []string{"f2", "f3", "f5"}; !slices.Equal(ids, want) {
			return fmt.Errorf("kept %v, want %v", ids, want)
		}
		return nil
	})
	if fo, _, err := intent.GetFailover(ctx, st, "f5"); err != nil || fo.GetState() != cpv1.FailoverState_FAILOVER_STATE_AWAITING_OLD_OWNER {
		t.Fatalf("f5: %v (%v), want still awaiting its old owner", fo, err)
	}
}
