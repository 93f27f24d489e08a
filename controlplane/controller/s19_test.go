package controller_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cellplane/cellplane/controlplane/controller"
	"github.com/cellplane/cellplane/controlplane/intent"
	"github.com/cellplane/cellplane/internal/histcheck"
	"github.com/cellplane/cellplane/internal/testutil"
	cellv1 "github.com/cellplane/cellplane/proto/cellplane/cell/v1"
	cpv1 "github.com/cellplane/cellplane/proto/cellplane/controlplane/v1"
)

// killPoint is where the controller leader dies during a failover: before
// it acts on a recorded state (begun tells FENCING before and after the
// epoch was chosen), or right after a cell call succeeded, before etcd
// recorded it.
type killPoint struct {
	kind   cpv1.FailoverKind
	before cpv1.FailoverState
	begun  bool
	after  string // "fence" or "owner"
}

func (k killPoint) String() string {
	kind := strings.ToLower(intent.FailoverKindName(k.kind))
	if k.after != "" {
		return kind + "/after-" + k.after + "-call"
	}
	s := "before-" + strings.ToLower(intent.FailoverStateName(k.before))
	if k.before == cpv1.FailoverState_FAILOVER_STATE_FENCING && k.begun {
		s += "-call"
	}
	return kind + "/" + s
}

// sampleOwners checks, until the returned stop, that at most one of cells
// holds tenant as OWNER at any instant and that no cell's epoch goes down
// (histcheck.OwnerSampler over the cells' GetTenant).
func sampleOwners(t *testing.T, e *realEnv, tenant string, cells ...string) (stop func()) {
	s := &histcheck.OwnerSampler{Cells: cells, Every: 3 * time.Millisecond,
		Read: func(ctx context.Context, cell string) (cellv1.Role, uint64, bool) {
			rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			defer cancel()
			info, _, err := e.cells.GetTenant(rctx, cell, tenant)
			return info.GetRole(), info.GetEpoch(), err == nil
		}}
	done := s.Start(testutil.Context(t, 10*time.Minute))
	return func() {
		problems, samples := done()
		for _, p := range problems {
			t.Error(p)
		}
		t.Logf("%d owner samples", samples)
	}
}

// TestS19PromotionKilledAtEveryStep (scenario S19): the controller leader
// dies at every step of a failover — switchovers and emergency promotions,
// before each recorded state and right after each cell call (the cell
// acted, etcd does not know yet) — and its successor finishes the
// failover. Throughout (sampled every few ms), at most one cell holds the
// tenant as OWNER and no cell's epoch goes down; each failover ends DONE
// with the placement one epoch higher on the other cell, which is OWNER
// at that epoch, and the data is there. The owner cell has 3 nodes; the
// failovers alternate between us-a and eu-a (an emergency promotion's old
// owner is made the standby again before the next one).
func TestS19PromotionKilledAtEveryStep(t *testing.T) {
	if testing.Short() {
		t.Skip("starts etcd, control-plane replicas and 5 cell nodes")
	}
	const (
		sw = cpv1.FailoverKind_FAILOVER_KIND_SWITCHOVER
		pr = cpv1.FailoverKind_FAILOVER_KIND_PROMOTE
	)
	points := []killPoint{
		{kind: sw, before: cpv1.FailoverState_FAILOVER_STATE_FENCING},
		{kind: sw, before: cpv1.FailoverState_FAILOVER_STATE_FENCING, begun: true},
		{kind: sw, after: "fence"},
		{kind: sw, before: cpv1.FailoverState_FAILOVER_STATE_PROMOTING},
		{kind: sw, after: "owner"},
		{kind: pr, before: cpv1.FailoverState_FAILOVER_STATE_FENCING},
		{kind: pr, before: cpv1.FailoverState_FAILOVER_STATE_WAITING_LEASE},
		{kind: pr, before: cpv1.FailoverState_FAILOVER_STATE_PROMOTING},
		{kind: pr, after: "owner"},
		// AWAITING_OLD_OWNER is reached only when the old owner has not
		// reported its fence by the flip, i.e. it is cut off: a live owner
		// reports first (TestEmergencyPromotionRealCells covers the cut-off
		// owner, without a kill).
	}
	e := newRealEnv(t)
	const tenant = "flip"
	e.create(t, tenant, "us-a", "eu")
	e.writeKeys(t, tenant, "us-a", 10)
	defer sampleOwners(t, e, tenant, "us-a", "eu-a")()

	from, to, epoch := "us-a", "eu-a", uint64(1)
	for _, kp := range points {
		t.Run(kp.String(), func(t *testing.T) {
			ctx := testutil.Context(t, 60*time.Second)
			e.readyStandby(t, tenant, to, from)
			reached := make(chan struct{})
			var once sync.Once
			kill := func() error {
				once.Do(func() { close(reached) })
				return errors.New("killed")
			}
			k := e.takeOver(t, controller.TestingKnobs{
				BeforeFailoverStep: func(_ context.Context, fo *cpv1.Failover) error {
					if kp.after == "" && fo.GetState() == kp.before && (kp.before != cpv1.FailoverState_FAILOVER_STATE_FENCING || (fo.GetNewEpoch() > 0) == kp.begun) {
						return kill()
					}
					return nil
				},
				AfterFailoverCall: func(_ context.Context, _ *cpv1.Failover, call string) error {
					if call == kp.after {
						return kill()
					}
					return nil
				},
			})
			resp, err := e.api(t).Failover(ctx, &cpv1.FailoverRequest{Tenant: tenant, Kind: kp.kind})
			if err != nil {
				t.Fatal(err)
			}
			id := resp.GetFailovers()[0].GetId()
			killed := true
			testutil.Eventually(t, 30*time.Second, func() error {
				select {
				case <-reached:
					return nil
				default:
				}
				// A promotion whose old owner reported before the flip
				// finishes without AWAITING_OLD_OWNER.
				if r, err := e.api(t).GetFailover(ctx, &cpv1.GetFailoverRequest{Id: id}); err == nil && r.GetFailover().GetState() == cpv1.FailoverState_FAILOVER_STATE_DONE {
					killed = false
					return nil
				}
				return errors.New("the failover has not reached the kill point")
			})
			if !killed {
				t.Logf("the failover finished without passing %s", kp)
			}
			e.close(k) // the successor takes over
			fo := waitFailoverState(t, e.api(t), id, cpv1.FailoverState_FAILOVER_STATE_DONE)
			if fo.GetNewEpoch() != epoch+1 || fo.GetOldEpoch() != epoch {
				t.Errorf("failover epochs %d → %d, want %d → %d", fo.GetOldEpoch(), fo.GetNewEpoch(), epoch, epoch+1)
			}
			tn, err := e.api(t).GetTenant(ctx, &cpv1.GetTenantRequest{Id: tenant})
			if err != nil {
				t.Fatal(err)
			}
			if p := tn.GetTenant(); p.GetCell() != to || p.GetEpoch() != epoch+1 || p.GetCuttingOver() || p.GetOperationId() != "" {
				t.Fatalf("placement %v, want %s at epoch %d", p, to, epoch+1)
			}
			if got := e.records(t, tenant, to); len(got) != 1 || got[0] != fmt.Sprintf("%s:OWNER@%d", to, epoch+1) {
				t.Fatalf("new owner's record %v", got)
			}
			e.checkKeys(t, tenant, to, 10)
			from, to, epoch = to, from, epoch+1
		})
		if t.Failed() {
			return
		}
	}
}

// readyStandby makes standby the tenant's standby cell (if the placement
// has none, as after an emergency promotion) and waits until it is a
// bootstrapped STANDBY of owner that applied everything owner has.
func (e *realEnv) readyStandby(t *testing.T, tenant, standby, owner string) {
	t.Helper()
	ctx := testutil.Context(t, 60*time.Second)
	testutil.Eventually(t, 45*time.Second, func() error {
		tn, err := e.api(t).GetTenant(ctx, &cpv1.GetTenantRequest{Id: tenant})
		if err != nil {
			return err
		}
		if tn.GetTenant().GetStandbyCell() != standby {
			if _, err := e.api(t).SetStandby(ctx, &cpv1.SetStandbyRequest{Tenant: tenant, Cell: standby}); err != nil {
				return fmt.Errorf("set standby %s: %w", standby, err)
			}
			return fmt.Errorf("standby cell is %q", tn.GetTenant().GetStandbyCell())
		}
		own, _, err := e.cells.GetTenant(ctx, owner, tenant)
		if err != nil {
			return err
		}
		sb, repl, err := e.cells.GetTenant(ctx, standby, tenant)
		if err != nil {
			return err
		}
		if sb.GetRole() != cellv1.Role_ROLE_STANDBY || !sb.GetBootstrapped() || sb.GetSourceCell() != owner || sb.GetEpoch() != own.GetEpoch() {
			return fmt.Errorf("standby record %v", sb)
		}
		if max(sb.GetTseq(), repl.GetAppliedTseq()) < own.GetTseq() {
			return fmt.Errorf("standby applied %d of %d", max(sb.GetTseq(), repl.GetAppliedTseq()), own.GetTseq())
		}
		return nil
	})
}

// testRealKilledAfterCall (scenario S19, moves): the controller leader
// dies right after each cell call of a move — the target made STANDBY,
// the source fenced, the target made OWNER, the source's copy deleted —
// before etcd records the step; the successor repeats the call (same
// request id) and finishes the move. Sampled throughout, at most one OWNER
// and no epoch going down; at the end the target is OWNER at the next
// epoch with the data.
func testRealKilledAfterCall(t *testing.T, e *realEnv) {
	const tenant = "bounce-call"
	e.create(t, tenant, "us-a", "")
	e.writeKeys(t, tenant, "us-a", 10)
	defer sampleOwners(t, e, tenant, "us-a", "us-b")()
	from, to, epoch := "us-a", "us-b", uint64(1)
	for _, call := range []string{"standby", "fence", "owner", "cleanup"} {
		t.Run(call, func(t *testing.T) {
			reached := make(chan struct{})
			var once sync.Once
			k := e.takeOver(t, controller.TestingKnobs{AfterMoveCall: func(_ context.Context, _ *cpv1.Move, c string) error {
				if c != call {
					return nil
				}
				once.Do(func() { close(reached) })
				return errors.New("killed")
			}})
			ctx := testutil.Context(t, 60*time.Second)
			mv, _, err := intent.StartMove(ctx, e.st, intent.MoveRequest{Tenant: tenant, Target: to})
			if err != nil {
				t.Fatal(err)
			}
			select {
			case <-reached:
			case <-ctx.Done():
				t.Fatal("the move never made the call")
			}
			e.close(k) // the successor takes over
			e.waitMove(t, mv.GetId(), cpv1.MoveState_MOVE_STATE_DONE)
			want := fmt.Sprintf("%s:OWNER@%d", to, epoch+1)
			if got := strings.Join(e.records(t, tenant, from, to), " "); got != want {
				t.Fatalf("records %s, want %s", got, want)
			}
			e.checkKeys(t, tenant, to, 10)
			from, to, epoch = to, from, epoch+1
		})
		if t.Failed() {
			return
		}
	}
}
