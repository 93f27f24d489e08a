package chaos

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cellplane/cellplane/cells/store"
	"github.com/cellplane/cellplane/controlplane/controller"
	"github.com/cellplane/cellplane/internal/faultnet"
	"github.com/cellplane/cellplane/internal/histcheck"
	"github.com/cellplane/cellplane/internal/testutil"
	cellv1 "github.com/cellplane/cellplane/proto/cellplane/cell/v1"
	cpv1 "github.com/cellplane/cellplane/proto/cellplane/controlplane/v1"
)

// recordOf is a tenant's role and epoch in a store's replica (ok false
// when the store does not hold it).
func recordOf(st *store.Store, tenant string) (cellv1.Role, uint64, bool) {
	var r cellv1.Role
	var e uint64
	err := st.ReadReplica(tenant, func(v *store.TenantView) error {
		r, e = v.Record().GetRole(), v.Record().GetEpoch()
		return nil
	})
	return r, e, err == nil
}

// partitioner cuts a cell's links to the control plane (its etcd client
// and the gRPC address the controller, the router and other cells use)
// when a move of the tenant reaches a state, and heals them after a
// while.
type partitioner struct {
	mu      sync.Mutex
	proxies map[string][]*faultnet.Proxy // cell → its links
	armed   *cut
	cuts    []string
}

type cut struct {
	cell  string
	state cpv1.MoveState
	d     time.Duration
	done  chan struct{} // closed when healed
}

// arm makes the next move step in state (of a move out of cell) cut cell
// for d; wait on the returned channel for the heal.
func (p *partitioner) arm(cell string, state cpv1.MoveState, d time.Duration) <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	c := &cut{cell: cell, state: state, d: d, done: make(chan struct{})}
	p.armed = c
	return c.done
}

// beforeMoveStep is the controller knob.
func (p *partitioner) beforeMoveStep(_ context.Context, mv *cpv1.Move) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	c := p.armed
	// The first step at or after the armed state (a move may pass a state
	// without a step of its own, e.g. a copy already done).
	if c == nil || mv.GetState() < c.state || mv.GetState() > cpv1.MoveState_MOVE_STATE_CLEANING_UP || mv.GetSourceCell() != c.cell {
		return nil
	}
	p.armed = nil
	for _, px := range p.proxies[c.cell] {
		px.Cut()
	}
	p.cuts = append(p.cuts, fmt.Sprintf("%s cut at %s (armed for %s) for %v", c.cell, mv.GetState(), c.state, c.d))
	time.AfterFunc(c.d, func() {
		for _, px := range p.proxies[c.cell] {
			px.Heal()
		}
		close(c.done)
	})
	return nil
}

// healedOrNot waits for an armed cut's heal; a cut that never fired (the
// move ended before a step at or after its state) is disarmed and logged.
func (p *partitioner) healedOrNot(t *testing.T, healed <-chan struct{}, d time.Duration) (fired bool) {
	t.Helper()
	timer := time.NewTimer(d + 10*time.Second)
	defer timer.Stop()
	select {
	case <-healed:
		return true
	case <-timer.C:
	}
	p.mu.Lock()
	fired = p.armed == nil
	p.armed = nil
	p.mu.Unlock()
	if fired {
		t.Fatal("a cut fired but never healed")
	}
	t.Logf("the move ended before the armed cut fired")
	return false
}

// waitMoveEnd waits until move id ends (DONE, FAILED or CANCELLED).
func (p *harness) waitMoveEnd(t *testing.T, ctx context.Context, id string) *cpv1.Move {
	t.Helper()
	var mv *cpv1.Move
	testutil.Eventually(t, 60*time.Second, func() error {
		r, err := p.cp.GetMove(ctx, &cpv1.GetMoveRequest{Id: id})
		if err != nil {
			return err
		}
		mv = r.GetMove()
		switch mv.GetState() {
		case cpv1.MoveState_MOVE_STATE_DONE, cpv1.MoveState_MOVE_STATE_FAILED, cpv1.MoveState_MOVE_STATE_CANCELLED:
			return nil
		}
		return fmt.Errorf("move %s is %s", id, mv.GetState())
	})
	return mv
}

// TestS18MoveWithTheSourceCutFromTheControlPlane (scenario S18): a tenant
// under load through the router moves between two cells whose every link
// to the control plane (etcd, and the gRPC address the controller, the
// router and the other cell use) goes through proxies. The source is cut
// off (1) from the start of the move through the copy, longer than the
// copy timeout: the move rolls
// back (FAILED, the tenant stays OWNER at its epoch on the source); (1b)
// once the copy started, 3 s: it completes or rolls back; (2) at
// the fence, across the routing flip; (3) at the flip itself (the other
// direction). Each of (2) and (3) completes once healed. Throughout: never
// two OWNERs, no cell's epoch goes down; at the end the history of appends
// and linearizable reads is linearizable (porcupine), no acknowledged
// append is lost or doubled, no request failed for good, and the
// placement's epoch went up by one per completed move.
func TestS18MoveWithTheSourceCutFromTheControlPlane(t *testing.T) {
	if raceEnabled && os.Getenv("CELLPLANE_CHAOS_ALL") == "" {
		t.Skip("about 30 s of fault windows: the default `go test` run covers it; the -race pass skips it to keep CI within budget (CELLPLANE_CHAOS_ALL=1, as make chaos sets, runs it under -race too)")
	}
	part := &partitioner{proxies: map[string][]*faultnet.Proxy{}}
	p := newPlatform(t, fastMoves, func(c *controller.Config) {
		c.Moves.CopyTimeout = 3 * time.Second
		c.TestingKnobs.BeforeMoveStep = part.beforeMoveStep
	})
	a, aLinks := isolatedCell(t, p, "us-east", "east-a")
	b, bLinks := isolatedCell(t, p, "us-east", "east-b")
	part.mu.Lock()
	part.proxies["east-a"], part.proxies["east-b"] = aLinks, bLinks
	part.mu.Unlock()
	ctx := testutil.Context(t, 3*time.Minute)
	p.createTenant(t, ctx, "acme", "us-east", "east-a", "")

	stores := map[string]*store.Store{"east-a": a.Store(), "east-b": b.Store()}
	owners := &histcheck.OwnerSampler{Cells: []string{"east-a", "east-b"},
		Read: func(_ context.Context, cell string) (cellv1.Role, uint64, bool) {
			return recordOf(stores[cell], "acme")
		}}
	stopWatch := owners.Start(ctx)
	lctx, stopLoad := context.WithCancel(ctx)
	l := newLoad(p.data, "acme")
	wait := l.run(lctx, 4)
	ackCount := func() int {
		l.mu.Lock()
		defer l.mu.Unlock()
		return len(l.acked)
	}
	acks := func(n int) {
		t.Helper()
		testutil.Eventually(t, 30*time.Second, func() error {
			l.mu.Lock()
			defer l.mu.Unlock()
			if len(l.acked) < n {
				return fmt.Errorf("%d acks, want %d", len(l.acked), n)
			}
			return nil
		})
	}
	placement := func() *cpv1.Tenant {
		t.Helper()
		r, err := p.cp.GetTenant(ctx, &cpv1.GetTenantRequest{Id: "acme"})
		if err != nil {
			t.Fatal(err)
		}
		return r.GetTenant()
	}
	start := func(to string) string {
		t.Helper()
		r, err := p.cp.StartMove(ctx, &cpv1.StartMoveRequest{Tenant: "acme", TargetCell: to})
		if err != nil {
			t.Fatalf("start move to %s: %v", to, err)
		}
		return r.GetMove().GetId()
	}
	acks(30)

	// (1) Cut from the start of the move (the target then bootstraps
	// from the source: the copy), past the copy timeout: rolled back.
	healed := part.arm("east-a", cpv1.MoveState_MOVE_STATE_PREPARING, 5*time.Second)
	mv := p.waitMoveEnd(t, ctx, start("east-b"))
	part.healedOrNot(t, healed, 5*time.Second)
	if mv.GetState() == cpv1.MoveState_MOVE_STATE_DONE {
		t.Logf("the move finished its copy before the cut took effect")
	} else if pl := placement(); pl.GetCell() != "east-a" || pl.GetEpoch() != 1 || pl.GetOperationId() != "" {
		t.Fatalf("after the rolled-back move (%s %s): placement %v", mv.GetState(), mv.GetErrorReason(), pl)
	}
	t.Logf("move 1 (source cut from the start through the copy): %s %s", mv.GetState(), mv.GetErrorReason())
	other := func(c string) string {
		if c == "east-a" {
			return "east-b"
		}
		return "east-a"
	}
	n := ackCount()
	acks(n + 30)

	// (1b) Cut once the copy has started (the target may have imported
	// the export already; then it is cut from the stream it catches up
	// with): completes after the heal, or rolls back past CopyTimeout.
	from, epoch := placement().GetCell(), placement().GetEpoch()
	healed = part.arm(from, cpv1.MoveState_MOVE_STATE_COPYING, 3*time.Second)
	mv = p.waitMoveEnd(t, ctx, start(other(from)))
	part.healedOrNot(t, healed, 3*time.Second)
	switch pl := placement(); mv.GetState() {
	case cpv1.MoveState_MOVE_STATE_DONE:
		if pl.GetCell() != other(from) || pl.GetEpoch() != epoch+1 {
			t.Fatalf("after move 1b (DONE): placement %v", pl)
		}
	default:
		if pl.GetCell() != from || pl.GetEpoch() != epoch || pl.GetOperationId() != "" {
			t.Fatalf("after move 1b (%s): placement %v", mv.GetState(), pl)
		}
	}
	t.Logf("move 1b (source cut during the copy): %s %s", mv.GetState(), mv.GetErrorReason())
	from = placement().GetCell()
	to := other(from)
	n = ackCount()
	acks(n + 30)

	// (2) Cut at the fence, across the flip: completes once healed.
	epoch = placement().GetEpoch()
	mv = moveWithCut(t, func() firedMove {
		healed := part.arm(from, cpv1.MoveState_MOVE_STATE_FENCING, 3*time.Second)
		mv := p.waitMoveEnd(t, ctx, start(to))
		return mvIfFired(mv, part.healedOrNot(t, healed, 3*time.Second))
	})
	if mv.GetState() != cpv1.MoveState_MOVE_STATE_DONE {
		t.Fatalf("move 2 (cut at the fence) ended %s: %s %s", mv.GetState(), mv.GetErrorReason(), mv.GetErrorMessage())
	}
	if pl := placement(); pl.GetCell() != to || pl.GetEpoch() != epoch+1 {
		t.Fatalf("after move 2: placement %v, want %s at epoch %d", pl, to, epoch+1)
	}
	from, to = to, from
	n = ackCount()
	acks(n + 30)

	// (3) Cut at the flip itself: completes once healed.
	epoch = placement().GetEpoch()
	mv = moveWithCut(t, func() firedMove {
		healed := part.arm(from, cpv1.MoveState_MOVE_STATE_CUTTING_OVER, 3*time.Second)
		mv := p.waitMoveEnd(t, ctx, start(to))
		return mvIfFired(mv, part.healedOrNot(t, healed, 3*time.Second))
	})
	if mv.GetState() != cpv1.MoveState_MOVE_STATE_DONE {
		t.Fatalf("move 3 (cut at the flip) ended %s: %s %s", mv.GetState(), mv.GetErrorReason(), mv.GetErrorMessage())
	}
	if pl := placement(); pl.GetCell() != to || pl.GetEpoch() != epoch+1 {
		t.Fatalf("after move 3: placement %v, want %s at epoch %d", pl, to, epoch+1)
	}
	n = ackCount()
	acks(n + 20)
	stopLoad()
	wait()
	if problems, _ := stopWatch(); len(problems) > 0 {
		t.Errorf("invariant I5: %v", problems)
	}
	part.mu.Lock()
	t.Logf("cuts: %s", strings.Join(part.cuts, "; "))
	part.mu.Unlock()
	l.check(t, ctx)
}

// firedMove is a move's end and whether its armed cut fired.
type firedMove struct {
	mv    *cpv1.Move
	fired bool
}

func mvIfFired(mv *cpv1.Move, fired bool) firedMove { return firedMove{mv: mv, fired: fired} }

// moveWithCut runs a move whose cut is armed at a step after the copy,
// again (at most 3 times) when the move failed before its cut fired: the
// platform's CopyTimeout is 3 s for step (1)'s rollback, which a copy on
// a loaded CI machine can outrun; such an attempt tests nothing of the
// cut and changes nothing (a failed move rolls back).
func moveWithCut(t *testing.T, attempt func() firedMove) *cpv1.Move {
	t.Helper()
	for i := 1; ; i++ {
		r := attempt()
		if r.fired || r.mv.GetState() == cpv1.MoveState_MOVE_STATE_DONE || i == 3 {
			return r.mv
		}
		t.Logf("attempt %d ended %s (%s) before its cut fired: again", i, r.mv.GetState(), r.mv.GetErrorMessage())
	}
}
