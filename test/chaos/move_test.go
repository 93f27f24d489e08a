package chaos

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/cellplane/cellplane/cells/store"
	"github.com/cellplane/cellplane/controlplane/controller"
	"github.com/cellplane/cellplane/internal/testutil"
	"github.com/cellplane/cellplane/platform"
	cellv1 "github.com/cellplane/cellplane/proto/cellplane/cell/v1"
	cpv1 "github.com/cellplane/cellplane/proto/cellplane/controlplane/v1"
)

func fastMoves(c *controller.Config) {
	c.Moves.PollInterval = 20 * time.Millisecond
	c.Moves.CleanupGrace = 500 * time.Millisecond
	c.Moves.LagBound = 20
}

// moveAndWait starts a move of tenant to cell and waits until it is DONE.
func (p *harness) moveAndWait(t *testing.T, ctx context.Context, tenant, to string) *cpv1.Move {
	t.Helper()
	resp, err := p.cp.StartMove(ctx, &cpv1.StartMoveRequest{Tenant: tenant, TargetCell: to})
	if err != nil {
		t.Fatalf("start move to %s: %v", to, err)
	}
	id := resp.GetMove().GetId()
	var mv *cpv1.Move
	testutil.Eventually(t, 60*time.Second, func() error {
		r, err := p.cp.GetMove(ctx, &cpv1.GetMoveRequest{Id: id})
		if err != nil {
			return err
		}
		mv = r.GetMove()
		switch mv.GetState() {
		case cpv1.MoveState_MOVE_STATE_DONE:
			return nil
		case cpv1.MoveState_MOVE_STATE_FAILED, cpv1.MoveState_MOVE_STATE_CANCELLED:
			t.Fatalf("move %s ended %s: %s %s", id, mv.GetState(), mv.GetErrorReason(), mv.GetErrorMessage())
		}
		return fmt.Errorf("move %s is %s", id, mv.GetState())
	})
	return mv
}

// TestMoveUnderLoadIsLinearizable moves a tenant back and forth between
// two cells while clients append and read through the router. The history
// must be linearizable across the moves, no acknowledged append may be
// lost or doubled, no request may fail for good, and never may both cells
// hold the tenant as OWNER. It logs the client-visible write pause and the
// moves' fence-to-flip windows.
func TestMoveUnderLoadIsLinearizable(t *testing.T) {
	p := newPlatform(t, fastMoves)
	a := p.createCell(t, platform.CellSpec{Region: "us-east", ID: "east-a", Nodes: 1})[0]
	b := p.createCell(t, platform.CellSpec{Region: "us-east", ID: "east-b", Nodes: 1})[0]
	ctx := testutil.Context(t, 3*time.Minute)
	p.createTenant(t, ctx, "acme", "us-east", "east-a", "")

	// At most one OWNER at any time, sampled throughout.
	owners := make(chan error, 1)
	sctx, stopSampling := context.WithCancel(ctx)
	go func() {
		defer close(owners)
		for sctx.Err() == nil {
			n := 0
			for _, st := range []*store.Store{a.Store(), b.Store()} {
				if role(st, "acme") == cellv1.Role_ROLE_OWNER {
					n++
				}
			}
			if n > 1 {
				owners <- fmt.Errorf("both cells hold acme as OWNER")
				return
			}
			time.Sleep(2 * time.Millisecond)
		}
	}()

	lctx, stopLoad := context.WithCancel(ctx)
	l := newLoad(p.data, "acme")
	wait := l.run(lctx, 4)
	var pauses []time.Duration
	for i, to := range []string{"east-b", "east-a", "east-b"} {
		testutil.Eventually(t, 10*time.Second, func() error { // some load between moves
			l.mu.Lock()
			defer l.mu.Unlock()
			if len(l.acked) < 40*(i+1) {
				return fmt.Errorf("%d acks", len(l.acked))
			}
			return nil
		})
		mv := p.moveAndWait(t, ctx, "acme", to)
		pauses = append(pauses, mv.GetFlipTime().AsTime().Sub(mv.GetFenceTime().AsTime()))
	}
	stopLoad()
	wait()
	stopSampling()
	if err := <-owners; err != nil {
		t.Error(err)
	}
	gap := l.check(t, ctx)
	t.Logf("fence→flip per move: %v; longest client-visible gap between acks: %v", pauses, gap)
}

// role is the tenant's role in a node's applied state (UNSPECIFIED when
// the node does not hold it, or is closed).
func role(st *store.Store, tenant string) cellv1.Role {
	var r cellv1.Role
	_ = st.ReadReplica(tenant, func(v *store.TenantView) error {
		r = v.Record().GetRole()
		return nil
	})
	return r
}
