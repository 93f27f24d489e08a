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

	"github.com/cellplane/cellplane/controlplane"
	"github.com/cellplane/cellplane/controlplane/catalog"
	"github.com/cellplane/cellplane/controlplane/cellclient"
	"github.com/cellplane/cellplane/controlplane/controller"
	"github.com/cellplane/cellplane/controlplane/cptest"
	"github.com/cellplane/cellplane/controlplane/intent"
	"github.com/cellplane/cellplane/controlplane/topo"
	"github.com/cellplane/cellplane/internal/cperr"
	"github.com/cellplane/cellplane/internal/dial"
	"github.com/cellplane/cellplane/internal/retry"
	"github.com/cellplane/cellplane/internal/rpcerr"
	"github.com/cellplane/cellplane/internal/tenantmd"
	"github.com/cellplane/cellplane/internal/testutil"
	cellv1 "github.com/cellplane/cellplane/proto/cellplane/cell/v1"
	contextv1 "github.com/cellplane/cellplane/proto/cellplane/context/v1"
	cpv1 "github.com/cellplane/cellplane/proto/cellplane/controlplane/v1"
)

// realEnv is etcd, control-plane replicas with fast move settings, and
// real cells: us-a (3 nodes), us-b and eu-a (1 node each).
type realEnv struct {
	env   *cptest.Env
	st    topo.Store
	cells *cellclient.Client
	live  []*controlplane.Server // replicas not closed yet
	n     int
	// top is the test that owns the environment: replicas started by a
	// subtest live on after it.
	top *testing.T
}

func newRealEnv(t *testing.T) *realEnv {
	t.Helper()
	env := cptest.New(t)
	var wg sync.WaitGroup
	for _, c := range []struct {
		region, cell string
		members      int
	}{{"us", "us-a", 3}, {"us", "us-b", 1}, {"eu", "eu-a", 1}} {
		wg.Add(1)
		go func() { defer wg.Done(); env.CreateCell(t, c.region, c.cell, c.members) }()
	}
	wg.Wait()
	e := &realEnv{env: env, st: env.Store(t), live: env.Replicas, top: t}
	e.cells = cellclient.New(e.st, dial.DefaultConfig(), testutil.Logger(t))
	t.Cleanup(func() { _ = e.cells.Close() })
	// From here on, replicas with fast move settings lead.
	e.takeOver(t, controller.TestingKnobs{})
	return e
}

// fastMoves are the test's move settings.
func fastMoves(knobs controller.TestingKnobs) func(*controlplane.Config) {
	return func(c *controlplane.Config) {
		m := &c.Controller.Moves
		m.PollInterval = 20 * time.Millisecond
		m.CleanupGrace = 200 * time.Millisecond
		m.HousekeepingInterval = 200 * time.Millisecond
		m.DrainInterval = 100 * time.Millisecond
		m.StandbyResyncInterval = 500 * time.Millisecond
		c.Controller.TestingKnobs = knobs
	}
}

// takeOver starts a replica with knobs and a plain one after it, then
// closes the older ones: the knob replica leads (it campaigned first),
// the plain one is its successor when the test closes it.
func (e *realEnv) takeOver(t *testing.T, knobs controller.TestingKnobs) (withKnobs *controlplane.Server) {
	t.Helper()
	e.n++
	k := e.env.AddReplica(e.top, fmt.Sprintf("k%d", e.n), fastMoves(knobs))
	e.waitCandidates(t, len(e.live)+1) // k campaigns before p
	p := e.env.AddReplica(e.top, fmt.Sprintf("p%d", e.n), fastMoves(controller.TestingKnobs{}))
	e.waitCandidates(t, len(e.live)+2)
	for _, old := range e.live {
		_ = old.Close()
	}
	e.live = []*controlplane.Server{k, p}
	testutil.Eventually(t, 10*time.Second, func() error {
		if !k.IsLeader() {
			return errors.New("the new replica does not lead yet")
		}
		return nil
	})
	return k
}

// close closes a replica (as if it died).
func (e *realEnv) close(s *controlplane.Server) {
	_ = s.Close()
	e.live = slices.DeleteFunc(e.live, func(x *controlplane.Server) bool { return x == s })
}

// waitCandidates waits until n replicas campaign (the election is won in
// campaign order).
func (e *realEnv) waitCandidates(t *testing.T, n int) {
	t.Helper()
	testutil.Eventually(t, 10*time.Second, func() error {
		page, err := e.st.List(testutil.Context(t, 5*time.Second), topo.ControllerElection+"/", topo.ListOptions{KeysOnly: true})
		if err != nil {
			return err
		}
		if len(page.KVs) != n {
			return fmt.Errorf("%d replicas campaign, want %d", len(page.KVs), n)
		}
		return nil
	})
}

// api is a client of the replica that outlives the knob one.
func (e *realEnv) api(t *testing.T) cpv1.ControlPlaneServiceClient {
	return cptest.Dial(t, e.live[len(e.live)-1].GRPCAddr())
}

// leaderAddr is the gRPC address of a cell's leader.
func (e *realEnv) leaderAddr(t *testing.T, cell string) string {
	t.Helper()
	ci, err := catalog.Cell(testutil.Context(t, 5*time.Second), e.st, cell)
	if err != nil || ci.Leader == nil {
		t.Fatalf("cell %s leader: %v %v", cell, ci, err)
	}
	return ci.Leader.GetGrpcAddr()
}

// memory reads and writes a tenant's memory on a cell's leader.
func (e *realEnv) memory(t *testing.T, cell string) contextv1.ContextServiceClient {
	t.Helper()
	ci, err := catalog.Cell(testutil.Context(t, 5*time.Second), e.st, cell)
	if err != nil || ci.Leader == nil {
		t.Fatalf("cell %s leader: %v %v", cell, ci, err)
	}
	conn, err := dial.New(ci.Leader.GetGrpcAddr(), dial.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return contextv1.NewContextServiceClient(conn)
}

func (e *realEnv) writeKeys(t *testing.T, tenant, cell string, n int) {
	t.Helper()
	cl := e.memory(t, cell)
	ctx := tenantmd.Outgoing(testutil.Context(t, 10*time.Second), tenant, 0)
	for i := range n {
		if _, err := cl.PutMemory(ctx, &contextv1.PutMemoryRequest{Key: fmt.Sprintf("k%d", i), Value: []byte(fmt.Sprintf("v%d", i)), RequestId: fmt.Sprintf("%s-put-%d", tenant, i)}); err != nil {
			t.Fatalf("put %s k%d on %s: %v", tenant, i, cell, err)
		}
	}
}

func (e *realEnv) checkKeys(t *testing.T, tenant, cell string, n int) {
	t.Helper()
	cl := e.memory(t, cell)
	ctx := tenantmd.Outgoing(testutil.Context(t, 10*time.Second), tenant, 0)
	for i := range n {
		resp, err := cl.GetMemory(ctx, &contextv1.GetMemoryRequest{Key: fmt.Sprintf("k%d", i)})
		if err != nil {
			t.Fatalf("get %s k%d on %s: %v", tenant, i, cell, err)
		}
		if got := string(resp.GetItem().GetValue()); got != fmt.Sprintf("v%d", i) {
			t.Fatalf("%s k%d on %s = %q", tenant, i, cell, got)
		}
	}
}

// records returns "cell:ROLE@epoch" for each of cells that holds tenant.
func (e *realEnv) records(t *testing.T, tenant string, cells ...string) []string {
	t.Helper()
	var out []string
	for _, c := range cells {
		// A cell busy electing or slow under load answers with a
		// transient error: ask again until a deadline, so ERROR means the
		// cell kept failing, not that one call lost a race.
		var info *cellv1.TenantInfo
		var err error
		deadline := time.Now().Add(15 * time.Second)
		for {
			info, _, err = e.cells.GetTenant(testutil.Context(t, 5*time.Second), c, tenant)
			if err == nil || errors.Is(err, cperr.ErrTenantNotFound) || time.Now().After(deadline) {
				break
			}
			_ = retry.Sleep(context.Background(), 50*time.Millisecond)
		}
		switch {
		case errors.Is(err, cperr.ErrTenantNotFound):
		case err != nil:
			out = append(out, c+":ERROR")
		default:
			out = append(out, fmt.Sprintf("%s:%s@%d", c, trimRole(info.GetRole()), info.GetEpoch()))
		}
	}
	return out
}

func (e *realEnv) waitMove(t *testing.T, id string, want cpv1.MoveState) *cpv1.Move {
	t.Helper()
	var out *cpv1.Move
	testutil.Eventually(t, 30*time.Second, func() error {
		mv, _, err := intent.GetMove(testutil.Context(t, 5*time.Second), e.st, id)
		if err != nil {
			return err
		}
		if mv.GetState() != want {
			return fmt.Errorf("move %s is %s (%s %s), want %s", id, intent.MoveStateName(mv.GetState()), mv.GetErrorReason(), mv.GetErrorMessage(), intent.MoveStateName(want))
		}
		out = mv
		return nil
	})
	return out
}

func (e *realEnv) create(t *testing.T, id, cell, standbyRegion string) {
	t.Helper()
	region := strings.SplitN(cell, "-", 2)[0]
	if _, err := e.api(t).CreateTenant(testutil.Context(t, 30*time.Second), &cpv1.CreateTenantRequest{
		Id: id, HomeRegion: region, Cell: cell, StandbyRegion: standbyRegion,
	}); err != nil {
		t.Fatalf("create %s: %v", id, err)
	}
}

// TestRealCells runs standbys, moves, cancels, kills of the controller at
// every step of a move and a drain against real cells (shared by the
// subtests, which run in order).
func TestRealCells(t *testing.T) {
	if testing.Short() {
		t.Skip("starts etcd, control-plane replicas and 5 cell nodes")
	}
	e := newRealEnv(t)
	t.Run("standby gets the data", func(t *testing.T) { testRealStandby(t, e) })
	t.Run("move with data and standby", func(t *testing.T) { testRealMove(t, e) })
	t.Run("cancel before the fence", func(t *testing.T) { testRealCancel(t, e) })
	t.Run("controller killed at each step", func(t *testing.T) { testRealKilled(t, e) })
	t.Run("controller killed after each cell call (S19)", func(t *testing.T) { testRealKilledAfterCall(t, e) })
	t.Run("stale cleanup after a round trip", func(t *testing.T) { testRealStaleCleanup(t, e) })
	t.Run("drain", func(t *testing.T) { testRealDrain(t, e) })
	t.Run("max_bytes change reaches the cell", func(t *testing.T) { testRealQuota(t, e) })
	t.Run("default_retention reaches the cell", func(t *testing.T) { testRealRetention(t, e) })
}

// M1 with real cells and cellclient: the tenant moves us-a → us-b → us-a
// (OWNER at epoch 3); the first move's cleanup delete, sent again as a
// stale controller would (same request id, FENCED at epoch 2), is refused
// by us-a and its data stays. An unguarded delete is refused; a guarded
// delete of an absent tenant is success.
func testRealStaleCleanup(t *testing.T, e *realEnv) {
	e.create(t, "boomer", "us-a", "")
	e.writeKeys(t, "boomer", "us-a", 5)
	ctx := testutil.Context(t, 60*time.Second)
	var first string
	for _, target := range []string{"us-b", "us-a"} {
		resp, err := e.api(t).StartMove(ctx, &cpv1.StartMoveRequest{Tenant: "boomer", TargetCell: target})
		if err != nil {
			t.Fatalf("move to %s: %v", target, err)
		}
		e.waitMove(t, resp.GetMove().GetId(), cpv1.MoveState_MOVE_STATE_DONE)
		if first == "" {
			first = resp.GetMove().GetId()
		}
	}
	if got := strings.Join(e.records(t, "boomer", "us-a", "us-b"), " "); got != "us-a:OWNER@3" {
		t.Fatalf("records after the round trip: %s", got)
	}
	stale := &cellv1.DeleteTenantRequest{Tenant: "boomer", RequestId: first + ".cleanup", ExpectedEpoch: 2, AllowedRoles: []cellv1.Role{cellv1.Role_ROLE_FENCED}}
	err := e.cells.DeleteTenant(ctx, "us-a", stale)
	var ce *cperr.Error
	if !errors.As(err, &ce) || ce.Reason != cperr.WrongCell || ce.Metadata[cperr.MetaRole] != "ROLE_OWNER" || ce.Metadata[cperr.MetaEpoch] != "3" {
		t.Fatalf("stale cleanup delete = %v, want WRONG_CELL (OWNER at 3)", err)
	}
	err = e.cells.DeleteTenant(ctx, "us-a", &cellv1.DeleteTenantRequest{Tenant: "boomer", RequestId: "unguarded"})
	if !errors.Is(err, cperr.ErrInvalidArgument) {
		t.Fatalf("unguarded delete = %v, want INVALID_ARGUMENT", err)
	}
	e.checkKeys(t, "boomer", "us-a", 5)
	if got := strings.Join(e.records(t, "boomer", "us-a", "us-b"), " "); got != "us-a:OWNER@3" {
		t.Fatalf("records after the refused deletes: %s", got)
	}
	if err := e.cells.DeleteTenant(ctx, "us-b", stale); err != nil {
		t.Fatalf("guarded delete of an absent tenant: %v", err)
	}
}

// A tenant created with a standby region: its standby cell imports the
// data and streams; GetTenant reports the lag.
func testRealStandby(t *testing.T, e *realEnv) {
	e.create(t, "acme", "us-a", "eu")
	e.writeKeys(t, "acme", "us-a", 20)
	ctx := testutil.Context(t, 30*time.Second)
	var owner *cellv1.TenantInfo
	testutil.Eventually(t, 20*time.Second, func() error {
		var err error
		owner, _, err = e.cells.GetTenant(ctx, "us-a", "acme")
		if err != nil {
			return err
		}
		resp, err := e.api(t).GetTenant(ctx, &cpv1.GetTenantRequest{Id: "acme"})
		if err != nil {
			return err
		}
		r := resp.GetReplication()
		if resp.GetTenant().GetStandbyCell() != "eu-a" || r.GetStandbyCell() != "eu-a" || r.GetAppliedTseq() < owner.GetTseq() || r.GetLagEvents() != 0 {
			return fmt.Errorf("replication %v (owner tseq %d)", r, owner.GetTseq())
		}
		// Read at the standby cell in the same poll (the replication
		// status and the record are read at different instants).
		sb, _, err := e.cells.GetTenant(ctx, "eu-a", "acme")
		if err != nil {
			return err
		}
		if sb.GetRole() != cellv1.Role_ROLE_STANDBY || !sb.GetBootstrapped() || sb.GetSourceCell() != "us-a" ||
			sb.GetUsage().GetBytes() != owner.GetUsage().GetBytes() || sb.GetUsage().GetMemoryKeys() != 20 {
			return fmt.Errorf("standby record %v, owner %v", sb, owner)
		}
		return nil
	})
}

// A move of a tenant with data and a standby: the data is readable at the
// new owner, the old owner's copy is gone after the grace period, the
// epoch is +1 and the standby follows the new owner.
func testRealMove(t *testing.T, e *realEnv) {
	ctx := testutil.Context(t, 30*time.Second)
	// A subscriber's cursor, taken on the source before the move.
	_, before, err := changesOn(t, e.leaderAddr(t, "us-a"), "acme", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := e.api(t).StartMove(ctx, &cpv1.StartMoveRequest{Tenant: "acme", TargetCell: "us-b"})
	if err != nil {
		t.Fatal(err)
	}
	done := e.waitMove(t, resp.GetMove().GetId(), cpv1.MoveState_MOVE_STATE_DONE)
	if done.GetFenceTseq() == 0 || done.GetTargetTseq() < done.GetFenceTseq() || !done.GetFlipTime().AsTime().After(done.GetFenceTime().AsTime()) {
		t.Errorf("move record %v", done)
	}
	tn, _, err := catalog.GetTenant(ctx, e.st, "acme")
	if err != nil || tn.GetCell() != "us-b" || tn.GetEpoch() != 2 || tn.GetStandbyCell() != "eu-a" || tn.GetOperationId() != "" {
		t.Fatalf("placement %v %v", tn, err)
	}
	e.checkKeys(t, "acme", "us-b", 20)
	e.writeKeys(t, "acme", "us-b", 25) // the new owner takes writes
	// The cursor resumes on the new owner: the move carried the change
	// log over (same tseqs and times); the stream holds exactly its data
	// events.
	usB := e.leaderAddr(t, "us-b")
	moved := logAfter(t, usB, "acme", before.GetTseq())
	got, _, err := changesOn(t, usB, "acme", before, moved[len(moved)-1].GetTseq())
	if err != nil {
		t.Fatalf("resuming after the move: %v", err)
	}
	checkAgainstLog(t, got, moved)
	if len(got) == 0 {
		t.Fatal("no change streamed after the move")
	}
	testutil.Eventually(t, 20*time.Second, func() error {
		got := strings.Join(e.records(t, "acme", "us-a", "us-b", "eu-a"), " ")
		if got != "us-b:OWNER@2 eu-a:STANDBY@2" {
			return fmt.Errorf("records %s", got)
		}
		sb, repl, err := e.cells.GetTenant(ctx, "eu-a", "acme")
		if err != nil {
			return err
		}
		owner, _, err := e.cells.GetTenant(ctx, "us-b", "acme")
		if err != nil {
			return err
		}
		if sb.GetSourceCell() != "us-b" || repl.GetAppliedTseq() < owner.GetTseq() {
			return fmt.Errorf("standby %v %v, owner tseq %d", sb, repl, owner.GetTseq())
		}
		return nil
	})
	if got := loadOf(t, e.st, "us-a") + "," + loadOf(t, e.st, "us-b") + "," + loadOf(t, e.st, "eu-a"); got != "0,1,1" {
		t.Fatalf("loads us-a,us-b,eu-a = %s", got)
	}
}

func loadOf(t *testing.T, st topo.Store, cell string) string { return fmt.Sprint(load(t, st, cell)) }

// A move cancelled before the fence: the target's copy is removed, the
// tenant stays where it was, at its epoch.
func testRealCancel(t *testing.T, e *realEnv) {
	e.create(t, "cancel-me", "us-a", "")
	e.writeKeys(t, "cancel-me", "us-a", 5)
	release := make(chan struct{})
	held := make(chan string, 1)
	var once sync.Once
	e.takeOver(t, controller.TestingKnobs{BeforeMoveStep: func(ctx context.Context, mv *cpv1.Move) error {
		if mv.GetTenant() == "cancel-me" && mv.GetState() == cpv1.MoveState_MOVE_STATE_CATCHING_UP && !mv.GetCancelRequested() {
			once.Do(func() { held <- mv.GetId() })
			select {
			case <-release:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		return nil
	}})
	ctx := testutil.Context(t, 30*time.Second)
	if _, err := e.api(t).StartMove(ctx, &cpv1.StartMoveRequest{Tenant: "cancel-me", TargetCell: "us-b"}); err != nil {
		t.Fatal(err)
	}
	var id string
	select {
	case id = <-held:
	case <-ctx.Done():
		t.Fatal("the move never reached CATCHING_UP")
	}
	if got := strings.Join(e.records(t, "cancel-me", "us-a", "us-b"), " "); got != "us-a:OWNER@1 us-b:STANDBY@1" {
		t.Fatalf("records while catching up: %s", got)
	}
	if _, err := e.api(t).CancelMove(ctx, &cpv1.CancelMoveRequest{Id: id}); err != nil {
		t.Fatal(err)
	}
	close(release)
	e.waitMove(t, id, cpv1.MoveState_MOVE_STATE_CANCELLED)
	if got := strings.Join(e.records(t, "cancel-me", "us-a", "us-b"), " "); got != "us-a:OWNER@1" {
		t.Fatalf("records after the cancel: %s", got)
	}
	tn, _, err := catalog.GetTenant(ctx, e.st, "cancel-me")
	if err != nil || tn.GetCell() != "us-a" || tn.GetEpoch() != 1 || tn.GetOperationId() != "" {
		t.Fatalf("placement %v %v", tn, err)
	}
	e.checkKeys(t, "cancel-me", "us-a", 5)
}

// The controller leader is closed before it acts on each state of a
// move; its successor finishes the move. At each kill and at every later
// step, at most one of the two cells is OWNER.
func testRealKilled(t *testing.T, e *realEnv) {
	states := []cpv1.MoveState{
		cpv1.MoveState_MOVE_STATE_PREPARING,
		cpv1.MoveState_MOVE_STATE_COPYING,
		cpv1.MoveState_MOVE_STATE_CATCHING_UP,
		cpv1.MoveState_MOVE_STATE_FENCING,
		cpv1.MoveState_MOVE_STATE_CUTTING_OVER,
		cpv1.MoveState_MOVE_STATE_CLEANING_UP,
	}
	e.create(t, "bounce", "us-a", "")
	e.writeKeys(t, "bounce", "us-a", 10)
	from, to := "us-a", "us-b"
	for i, killAt := range states {
		t.Run(intent.MoveStateName(killAt), func(t *testing.T) {
			var mu sync.Mutex
			var seen []string
			reached := make(chan struct{})
			var once sync.Once
			k := e.takeOver(t, controller.TestingKnobs{BeforeMoveStep: func(ctx context.Context, mv *cpv1.Move) error {
				recs := e.records(t, "bounce", from, to)
				mu.Lock()
				seen = append(seen, intent.MoveStateName(mv.GetState())+" "+strings.Join(recs, " "))
				mu.Unlock()
				if mv.GetState() == killAt {
					once.Do(func() { close(reached) })
					return errors.New("killed")
				}
				return nil
			}})
			ctx := testutil.Context(t, 60*time.Second)
			mv, _, err := intent.StartMove(ctx, e.st, intent.MoveRequest{Tenant: "bounce", Target: to})
			if err != nil {
				t.Fatal(err)
			}
			select {
			case <-reached:
			case <-ctx.Done():
				t.Fatal("the move never reached the state")
			}
			e.close(k) // the successor takes over
			e.waitMove(t, mv.GetId(), cpv1.MoveState_MOVE_STATE_DONE)
			mu.Lock()
			for _, s := range seen {
				if strings.Count(s, ":OWNER@") > 1 {
					t.Errorf("two owners: %s", s)
				}
			}
			mu.Unlock()
			want := fmt.Sprintf("%s:OWNER@%d", to, i+2)
			if got := strings.Join(e.records(t, "bounce", from, to), " "); got != want {
				t.Fatalf("records %s, want %s", got, want)
			}
			e.checkKeys(t, "bounce", to, 10)
			from, to = to, from
		})
	}
}

// A drain moves every tenant of us-a to us-b.
func testRealDrain(t *testing.T, e *realEnv) {
	for i := range 3 {
		e.create(t, fmt.Sprintf("drained%d", i), "us-a", "")
	}
	ctx := testutil.Context(t, 60*time.Second)
	if _, err := e.api(t).DrainCell(ctx, &cpv1.DrainCellRequest{Cell: "us-a", Concurrency: 2}); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 45*time.Second, func() error {
		p, err := intent.GetDrainProgress(ctx, e.st, "us-a")
		if err != nil {
			return err
		}
		if p.Remaining != 0 || len(p.Moves) != 0 {
			return fmt.Errorf("%d tenants left on us-a, %d moves", p.Remaining, len(p.Moves))
		}
		return nil
	})
	for i := range 3 {
		id := fmt.Sprintf("drained%d", i)
		if got := strings.Join(e.records(t, id, "us-a", "us-b"), " "); got != "us-b:OWNER@2" {
			t.Errorf("%s: records %s", id, got)
		}
	}
	if _, err := e.api(t).CreateTenant(ctx, &cpv1.CreateTenantRequest{Id: "late", HomeRegion: "us", Cell: "us-a"}); !errors.Is(rpcerr.FromStatus(err), cperr.ErrCellNotActive) {
		t.Fatalf("create on a draining cell: %v", err)
	}
}
