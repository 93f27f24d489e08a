package controller_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cellplane/cellplane/cells"
	"github.com/cellplane/cellplane/controlplane"
	"github.com/cellplane/cellplane/controlplane/cellclient"
	"github.com/cellplane/cellplane/controlplane/cptest"
	"github.com/cellplane/cellplane/controlplane/topo"
	"github.com/cellplane/cellplane/controlplane/topo/etcdtopo"
	"github.com/cellplane/cellplane/controlplane/topo/topotest"
	"github.com/cellplane/cellplane/internal/cperr"
	"github.com/cellplane/cellplane/internal/dial"
	"github.com/cellplane/cellplane/internal/faultnet"
	"github.com/cellplane/cellplane/internal/rpcerr"
	"github.com/cellplane/cellplane/internal/tenantmd"
	"github.com/cellplane/cellplane/internal/testutil"
	cellv1 "github.com/cellplane/cellplane/proto/cellplane/cell/v1"
	contextv1 "github.com/cellplane/cellplane/proto/cellplane/context/v1"
	cpv1 "github.com/cellplane/cellplane/proto/cellplane/controlplane/v1"
)

// Failovers with real etcd, a real control plane and real cells (one
// node each, to keep the package quick): the owner cell in us, the
// standby cell in eu.

// failoverEnv starts etcd and a control-plane replica with quick failover
// pacing.
func failoverEnv(t *testing.T) (*cptest.Env, cpv1.ControlPlaneServiceClient, topo.Store) {
	t.Helper()
	env := &cptest.Env{Endpoints: topotest.StartEtcd(t)}
	env.AddReplica(t, "cp1", func(c *controlplane.Config) {
		c.Controller.Failover.PollInterval = 20 * time.Millisecond
		c.Controller.Failover.LeaseMargin = 300 * time.Millisecond
	})
	return env, env.Client(t), env.Store(t)
}

// placeWithStandby creates tenant on cell with a standby on standbyCell
// and waits until the standby is bootstrapped.
func placeWithStandby(t *testing.T, cl cpv1.ControlPlaneServiceClient, cc *cellclient.Client, tenant, cell, standbyCell string) {
	t.Helper()
	ctx := testutil.Context(t, 60*time.Second)
	if _, err := cl.CreateTenant(ctx, &cpv1.CreateTenantRequest{Id: tenant, HomeRegion: "us", Cell: cell}); err != nil {
		t.Fatalf("create %s: %v", tenant, err)
	}
	if _, err := cl.SetStandby(ctx, &cpv1.SetStandbyRequest{Tenant: tenant, Cell: standbyCell}); err != nil {
		t.Fatalf("standby of %s: %v", tenant, err)
	}
	testutil.Eventually(t, 30*time.Second, func() error {
		info, _, err := cc.GetTenant(ctx, standbyCell, tenant)
		if err != nil {
			return err
		}
		if info.GetRole() != cellv1.Role_ROLE_STANDBY || !info.GetBootstrapped() {
			return fmt.Errorf("standby %v", info)
		}
		return nil
	})
}

// caughtUp waits until standbyCell applied everything ownerCell has.
func caughtUp(t *testing.T, cc *cellclient.Client, tenant, ownerCell, standbyCell string) uint64 {
	t.Helper()
	ctx := testutil.Context(t, 30*time.Second)
	var tseq uint64
	testutil.Eventually(t, 20*time.Second, func() error {
		own, _, err := cc.GetTenant(ctx, ownerCell, tenant)
		if err != nil {
			return err
		}
		sb, repl, err := cc.GetTenant(ctx, standbyCell, tenant)
		if err != nil {
			return err
		}
		applied := max(sb.GetTseq(), repl.GetAppliedTseq())
		if applied != own.GetTseq() {
			return fmt.Errorf("standby applied %d of %d", applied, own.GetTseq())
		}
		tseq = applied
		return nil
	})
	return tseq
}

// dataClient is a ContextService client of one node, for tenant.
type dataClient struct {
	cs     contextv1.ContextServiceClient
	tenant string
}

func dialData(t *testing.T, addr, tenant string) dataClient {
	t.Helper()
	conn, err := dial.New(addr, dial.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return dataClient{cs: contextv1.NewContextServiceClient(conn), tenant: tenant}
}

func (d dataClient) ctx(t *testing.T) context.Context {
	return tenantmd.Outgoing(testutil.Context(t, 10*time.Second), d.tenant, 0)
}

func (d dataClient) append(t *testing.T, id string) error {
	_, err := d.cs.Append(d.ctx(t), &contextv1.AppendRequest{ContextId: "chat", RequestId: id,
		Entries: []*contextv1.Entry{{Role: "user", Content: &contextv1.Entry_Text{Text: id}}}})
	return rpcerr.FromStatus(err)
}

// readAt reads the context at consistency c.
func (d dataClient) readAt(t *testing.T, c contextv1.Consistency) error {
	_, err := d.cs.Read(d.ctx(t), &contextv1.ReadRequest{ContextId: "chat", Start: &contextv1.ReadRequest_Tail{Tail: 1},
		ReadOptions: &contextv1.ReadOptions{Consistency: c}})
	return rpcerr.FromStatus(err)
}

func (d dataClient) entries(t *testing.T) ([]string, error) {
	rd, err := d.cs.Read(d.ctx(t), &contextv1.ReadRequest{ContextId: "chat", Start: &contextv1.ReadRequest_Tail{Tail: 1000}})
	if err != nil {
		return nil, rpcerr.FromStatus(err)
	}
	var out []string
	for _, e := range rd.GetEntries() {
		out = append(out, e.GetText())
	}
	return out, nil
}

func waitFailoverState(t *testing.T, cl cpv1.ControlPlaneServiceClient, id string, want ...cpv1.FailoverState) *cpv1.Failover {
	t.Helper()
	var fo *cpv1.Failover
	testutil.Eventually(t, 30*time.Second, func() error {
		resp, err := cl.GetFailover(testutil.Context(t, 5*time.Second), &cpv1.GetFailoverRequest{Id: id})
		if err != nil {
			return err
		}
		fo = resp.GetFailover()
		for _, w := range want {
			if fo.GetState() == w {
				return nil
			}
		}
		return fmt.Errorf("failover %s is %s (%s %s)", id, fo.GetState(), fo.GetErrorReason(), fo.GetErrorMessage())
	})
	return fo
}

// A planned switchover of a tenant with data: the standby becomes the
// owner at epoch 2 with every acknowledged write, the old owner is fenced
// (it refuses writes), nothing is lost.
func TestSwitchoverRealCells(t *testing.T) {
	if testing.Short() {
		t.Skip("starts etcd, a control plane and two cells")
	}
	env, cl, st := failoverEnv(t)
	use1 := env.CreateCell(t, "us", "use1", 1)
	euw1 := env.CreateCell(t, "eu", "euw1", 1)
	cc := cellclient.New(st, dial.DefaultConfig(), testutil.Logger(t))
	defer cc.Close()
	placeWithStandby(t, cl, cc, "acme", "use1", "euw1")
	ctx := testutil.Context(t, 60*time.Second)

	owner := dialData(t, use1[0].GRPCAddr(), "acme")
	if _, err := owner.cs.CreateContext(owner.ctx(t), &contextv1.CreateContextRequest{ContextId: "chat"}); err != nil {
		t.Fatal(err)
	}
	_, start, err := changesOn(t, use1[0].GRPCAddr(), "acme", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for i := range 5 {
		id := fmt.Sprint("w", i)
		if err := owner.append(t, id); err != nil {
			t.Fatal(err)
		}
		want = append(want, id)
	}
	// A subscriber's cursor at the third append, taken on the old owner.
	oldLog := logAfter(t, use1[0].GRPCAddr(), "acme", start.GetTseq())
	seen, _, err := changesOn(t, use1[0].GRPCAddr(), "acme", start, oldLog[len(oldLog)-1].GetTseq())
	if err != nil {
		t.Fatal(err)
	}
	checkAgainstLog(t, seen, oldLog)
	mid := seen[2].GetCursor()

	resp, err := cl.Failover(ctx, &cpv1.FailoverRequest{Tenant: "acme", Kind: cpv1.FailoverKind_FAILOVER_KIND_SWITCHOVER})
	if err != nil {
		t.Fatal(err)
	}
	fo := waitFailoverState(t, cl, resp.GetFailovers()[0].GetId(), cpv1.FailoverState_FAILOVER_STATE_DONE)
	if fo.GetLostEvents() != 0 || fo.GetPromotedTseq() < fo.GetOldOwnerTseq() || fo.GetTimeToPromote() == nil {
		t.Fatalf("switchover record %v", fo)
	}
	tn, err := cl.GetTenant(ctx, &cpv1.GetTenantRequest{Id: "acme"})
	if err != nil {
		t.Fatal(err)
	}
	if p := tn.GetTenant(); p.GetCell() != "euw1" || p.GetStandbyCell() != "use1" || p.GetEpoch() != 2 || p.GetCuttingOver() {
		t.Fatalf("placement %v", p)
	}
	newOwner := dialData(t, euw1[0].GRPCAddr(), "acme")
	got, err := newOwner.entries(t)
	if err != nil || strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("entries on the new owner: %v (%v), want %v", got, err, want)
	}
	if err := newOwner.append(t, "after"); err != nil {
		t.Fatalf("write to the new owner: %v", err)
	}
	// The subscriber resumes on the new owner from its cursor: the same
	// history (tseqs and times), so nothing is lost or repeated.
	newLog := logAfter(t, euw1[0].GRPCAddr(), "acme", mid.GetTseq())
	resumed, _, err := changesOn(t, euw1[0].GRPCAddr(), "acme", mid, newLog[len(newLog)-1].GetTseq())
	if err != nil {
		t.Fatalf("resuming after a switchover: %v", err)
	}
	checkAgainstLog(t, resumed, newLog)
	if n := len(resumed); n < 3 || resumed[0].GetFirstSeq() != 4 {
		t.Fatalf("resumed with %v, want the appends of seqs 4, 5 and 6", resumed)
	}
	// The old owner takes no write for the tenant any more (FENCED, or
	// already the new owner's STANDBY).
	if err := owner.append(t, "stale"); !errors.Is(err, cperr.ErrWrongCell) {
		t.Fatalf("write to the old owner: %v, want WRONG_CELL", err)
	}
	info, _, err := cc.GetTenant(ctx, "use1", "acme")
	if err != nil || info.GetEpoch() != 2 || (info.GetRole() != cellv1.Role_ROLE_FENCED && info.GetRole() != cellv1.Role_ROLE_STANDBY) {
		t.Fatalf("old owner's record %v (%v)", info, err)
	}
}

// partitionableNode starts the one node of cell behind two proxies: its
// registry (etcd) connection, and the gRPC address it advertises (which
// the control plane and other cells' sinks use). The test still reaches
// the node at its own address, as a client in its region would.
func partitionableNode(t *testing.T, env *cptest.Env, cl cpv1.ControlPlaneServiceClient, region, cell string) (node *cells.Node, etcdProxy, grpcProxy *faultnet.Proxy) {
	t.Helper()
	ctx := testutil.Context(t, 60*time.Second)
	if _, err := cl.CreateRegion(ctx, &cpv1.CreateRegionRequest{Name: region}); err != nil && !errors.Is(rpcerr.FromStatus(err), cperr.ErrAlreadyExists) {
		t.Fatal(err)
	}
	if _, err := cl.CreateCell(ctx, &cpv1.CreateCellRequest{Id: cell, Region: region, ExpectedMembers: 1}); err != nil {
		t.Fatal(err)
	}
	etcdProxy = faultnet.Start(t, strings.TrimPrefix(env.Endpoints[0], "http://"))
	ecfg := etcdtopo.DefaultConfig()
	ecfg.Endpoints = []string{"http://" + etcdProxy.Addr()}
	ecfg.DialTimeout = 2 * time.Second
	reg, err := etcdtopo.Dial(ctx, ecfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = reg.Close() })

	cfg := cells.DefaultConfig()
	cfg.NodeID, cfg.CellID = cell+"-n1", cell
	cfg.DataDir = filepath.Join(t.TempDir(), cfg.NodeID)
	cfg.RaftListener, cfg.GRPCListener, cfg.HTTPListener = testutil.Listen(t), testutil.Listen(t), testutil.Listen(t)
	grpcProxy = faultnet.Start(t, cfg.GRPCListener.Addr().String())
	cfg.Store.GRPCAdvertise = grpcProxy.Addr()
	cfg.Registry = reg
	cfg.RegistryTTL = time.Second
	cfg.AuthorityTTL, cfg.AuthorityDriftMargin = 2*time.Second, 500*time.Millisecond
	cfg.ShutdownTimeout = 5 * time.Second
	cfg.Logger = testutil.Logger(t).With("node", cfg.NodeID)
	node, err = cells.Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = node.Close() })
	testutil.Eventually(t, 30*time.Second, func() error {
		resp, err := cl.GetCell(ctx, &cpv1.GetCellRequest{Id: cell})
		if err != nil {
			return err
		}
		if h := resp.GetCell().GetHealth(); h != cpv1.CellHealth_CELL_HEALTH_HEALTHY {
			return fmt.Errorf("cell %s is %s", cell, h)
		}
		return nil
	})
	return node, etcdProxy, grpcProxy
}

// An emergency promotion. The owner cell's node is cut off from etcd and
// from everyone that finds it through the registry (the control plane,
// the standby's sink) by two TCP proxies; the test keeps talking to it
// directly. Its leader stops acknowledging writes before etcd deletes its
// authority key; the promotion waits for that; the standby is promoted
// with what it had. When the old owner comes back, it is FENCED and
// reports, and the lost events are exactly the writes the test saw
// acknowledged by the old owner after the standby's last applied event.
func TestEmergencyPromotionRealCells(t *testing.T) {
	if testing.Short() {
		t.Skip("starts etcd, a control plane and two cells")
	}
	env, cl, st := failoverEnv(t)
	old, etcdProxy, grpcProxy := partitionableNode(t, env, cl, "us", "use1")
	euw1 := env.CreateCell(t, "eu", "euw1", 1)
	cc := cellclient.New(st, dial.DefaultConfig(), testutil.Logger(t))
	defer cc.Close()
	placeWithStandby(t, cl, cc, "acme", "use1", "euw1")
	ctx := testutil.Context(t, 90*time.Second)

	owner := dialData(t, old.GRPCAddr(), "acme")
	if _, err := owner.cs.CreateContext(owner.ctx(t), &contextv1.CreateContextRequest{ContextId: "chat"}); err != nil {
		t.Fatal(err)
	}
	var replicated []string
	for i := range 5 {
		id := fmt.Sprint("w", i)
		if err := owner.append(t, id); err != nil {
			t.Fatal(err)
		}
		replicated = append(replicated, id)
	}
	applied := caughtUp(t, cc, "acme", "use1", "euw1")

	// The standby's stream is cut; the owner still acknowledges writes.
	grpcProxy.Cut()
	acked := 0
	for i := range 3 {
		if err := owner.append(t, fmt.Sprint("lost", i)); err != nil {
			t.Fatalf("write %d to the owner before it is cut off from etcd: %v", i, err)
		}
		acked++
	}

	// Watch the old cell's authority key from the control plane's side.
	page, err := st.List(ctx, topo.CellAuthorityKey("use1"), topo.ListOptions{})
	if err != nil || len(page.KVs) != 1 {
		t.Fatalf("authority key of use1: %v (%d keys)", err, len(page.KVs))
	}
	wctx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	deleted := make(chan time.Time, 1)
	go func() {
		for resp := range st.Watch(wctx, topo.CellAuthorityKey("use1"), page.Revision+1) {
			for _, ev := range resp.Events {
				if ev.Type == topo.EventDelete {
					deleted <- time.Now()
					return
				}
			}
		}
	}()

	etcdProxy.Cut()
	cutAt := time.Now()
	resp, err := cl.Failover(ctx, &cpv1.FailoverRequest{Tenant: "acme", Kind: cpv1.FailoverKind_FAILOVER_KIND_PROMOTE})
	if err != nil {
		t.Fatal(err)
	}
	id := resp.GetFailovers()[0].GetId()
	var invalidAt time.Time
	testutil.Eventually(t, 10*time.Second, func() error {
		if old.Authority().Valid() {
			return errors.New("the cut-off leader is still valid")
		}
		invalidAt = time.Now()
		return nil
	})
	// Refused from now on (not even proposed: no tseq is spent).
	if err := owner.append(t, "refused"); !errors.Is(err, cperr.ErrAuthorityLeaseExpired) {
		t.Fatalf("write to the cut-off owner: %v, want AUTHORITY_LEASE_EXPIRED", err)
	}
	// So are LEADER reads, like linearizable ones (M2); STALE reads are
	// still served (static stability, docs/reliability.md).
	for _, c := range []contextv1.Consistency{contextv1.Consistency_CONSISTENCY_LINEARIZABLE, contextv1.Consistency_CONSISTENCY_LEADER} {
		if err := owner.readAt(t, c); !errors.Is(err, cperr.ErrAuthorityLeaseExpired) {
			t.Fatalf("%v read at the cut-off owner: %v, want AUTHORITY_LEASE_EXPIRED", c, err)
		}
	}
	if err := owner.readAt(t, contextv1.Consistency_CONSISTENCY_STALE); err != nil {
		t.Fatalf("STALE read at the cut-off owner: %v", err)
	}
	fo := waitFailoverState(t, cl, id, cpv1.FailoverState_FAILOVER_STATE_AWAITING_OLD_OWNER)
	var deletedAt time.Time
	select {
	case deletedAt = <-deleted:
	case <-ctx.Done():
		t.Fatal("the authority key of the cut-off cell was not deleted")
	}
	promotedAt := fo.GetPromoteTime().AsTime()
	t.Logf("after the cut: invalid %s, authority key deleted %s, promoted %s", invalidAt.Sub(cutAt), deletedAt.Sub(cutAt), promotedAt.Sub(cutAt))
	if !invalidAt.Before(deletedAt) || !deletedAt.Before(promotedAt) {
		t.Fatalf("want the old leader invalid (%s) before its key expires (%s) before the promotion (%s)", invalidAt, deletedAt, promotedAt)
	}
	if fo.GetPromotedTseq() != applied {
		t.Fatalf("promoted at tseq %d, want the standby's last applied %d", fo.GetPromotedTseq(), applied)
	}
	tn, err := cl.GetTenant(ctx, &cpv1.GetTenantRequest{Id: "acme"})
	if err != nil {
		t.Fatal(err)
	}
	if p := tn.GetTenant(); p.GetCell() != "euw1" || p.GetStandbyCell() != "" || p.GetEpoch() != 2 || p.GetCuttingOver() || p.GetOperationId() != "" {
		t.Fatalf("placement after the promotion: %v", p)
	}
	newOwner := dialData(t, euw1[0].GRPCAddr(), "acme")
	if got, err := newOwner.entries(t); err != nil || strings.Join(got, ",") != strings.Join(replicated, ",") {
		t.Fatalf("entries on the promoted standby: %v (%v), want %v", got, err, replicated)
	}
	if err := newOwner.append(t, "new"); err != nil {
		t.Fatalf("write to the promoted standby: %v", err)
	}
	// A subscriber that saw a lost write holds a cursor whose tseq the
	// promoted cell reused for another change: CURSOR_EXPIRED, never the
	// new change passed off as the next one. One at the promoted tseq
	// (history both cells share) resumes.
	lostLog := logAfter(t, old.GRPCAddr(), "acme", applied)
	if len(lostLog) == 0 {
		t.Fatal("the old owner logged no lost write")
	}
	lostCur := &contextv1.ChangeCursor{Tseq: lostLog[0].GetTseq(), TimeUnixNano: lostLog[0].GetTimeUnixNano()}
	_, _, err = changesOn(t, euw1[0].GRPCAddr(), "acme", lostCur, lostCur.GetTseq())
	wantCursorExpired(t, err)
	lastLost := lostLog[len(lostLog)-1]
	_, _, err = changesOn(t, euw1[0].GRPCAddr(), "acme", &contextv1.ChangeCursor{Tseq: lastLost.GetTseq(), TimeUnixNano: lastLost.GetTimeUnixNano()}, lastLost.GetTseq())
	wantCursorExpired(t, err)
	shared := logAfter(t, euw1[0].GRPCAddr(), "acme", applied-1)[0]
	if _, _, err := changesOn(t, euw1[0].GRPCAddr(), "acme", &contextv1.ChangeCursor{Tseq: shared.GetTseq(), TimeUnixNano: shared.GetTimeUnixNano()}, applied+1); err != nil {
		t.Fatalf("resuming from the promoted tseq: %v", err)
	}

	// The old cell comes back: FENCED before it takes its authority again.
	etcdProxy.Heal()
	grpcProxy.Heal()
	fo = waitFailoverState(t, cl, id, cpv1.FailoverState_FAILOVER_STATE_DONE)
	if fo.GetLostEvents() != uint64(acked) || fo.GetOldOwnerTseq() != fo.GetPromotedTseq()+uint64(acked) {
		t.Fatalf("record %v: want %d lost events (the writes acknowledged after the standby's last applied tseq)", fo, acked)
	}
	if err := owner.append(t, "stale"); !errors.Is(err, cperr.ErrWrongCell) {
		t.Fatalf("write to the fenced old owner: %v, want WRONG_CELL", err)
	}
	// The lost writes are kept on the old owner for inspection.
	conn, err := dial.New(old.GRPCAddr(), dial.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ch, err := cellv1.NewCellServiceClient(conn).ListChanges(ctx, &cellv1.ListChangesRequest{Tenant: "acme", AfterTseq: fo.GetPromotedTseq()})
	if err != nil {
		t.Fatal(err)
	}
	var lost []string
	for _, ev := range ch.GetEvents() {
		if a := ev.GetCommand().GetAppend(); a != nil {
			lost = append(lost, a.GetEntries()[0].GetText())
		}
	}
	if strings.Join(lost, ",") != "lost0,lost1,lost2" || ch.GetTenant().GetRole() != cellv1.Role_ROLE_FENCED {
		t.Fatalf("old owner's changes after tseq %d: %v (role %s), want the 3 lost writes", fo.GetPromotedTseq(), lost, ch.GetTenant().GetRole())
	}
}
