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

	"github.com/cellplane/cellplane/controlplane/controller"
	"github.com/cellplane/cellplane/controlplane/intent"
	"github.com/cellplane/cellplane/internal/cperr"
	"github.com/cellplane/cellplane/internal/testutil"
	cpv1 "github.com/cellplane/cellplane/proto/cellplane/controlplane/v1"
)

// A move of a tenant with data: the placement flips to the target at
// epoch + 1, the loads follow, the target applied everything up to the
// fence before it became OWNER, the source's copy goes after the grace
// period, and no two cells ever owned the tenant.
func TestMoveFlipsPlacement(t *testing.T) {
	e := newMoveEnv(t)
	// The leader waits for the test to read the placement the intent wrote
	// (on fake cells the whole move can otherwise end before that read).
	release := make(chan struct{})
	e.start(t, "c1", controller.TestingKnobs{BeforeMoveStep: func(ctx context.Context, _ *cpv1.Move) error {
		select {
		case <-release:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}})
	e.create(t, "acme", "a")
	e.cells.write(t, "acme", 5) // tseq 1 (owner) + 5
	ctx := testutil.Context(t, 10*time.Second)

	mv, plan, err := intent.StartMove(ctx, e.st, intent.MoveRequest{Tenant: "acme", Target: "b"})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(mv.GetId(), "acme-") || mv.GetSourceCell() != "a" || mv.GetSourceEpoch() != 1 || len(plan) < 6 {
		t.Fatalf("move %v plan %q", mv, plan)
	}
	if got := e.tenant(t, "acme").GetOperationId(); got != mv.GetId() {
		t.Fatalf("placement operation_id = %q, want the move", got)
	}
	close(release)
	done := e.waitMove(t, mv.GetId(), cpv1.MoveState_MOVE_STATE_DONE)

	tn := e.tenant(t, "acme")
	if tn.GetCell() != "b" || tn.GetEpoch() != 2 || tn.GetCuttingOver() || tn.GetOperationId() != "" {
		t.Fatalf("placement after the move: %v", tn)
	}
	if got := e.loads(t, "a", "b"); got != "a=0 b=1" {
		t.Fatalf("loads %s", got)
	}
	if done.GetFenceTseq() != 7 || done.GetTargetTseq() < 7 || done.GetCopiedBytes() != 500 {
		t.Errorf("fence tseq %d, target tseq %d, copied %d: want 7, >= 7, 500", done.GetFenceTseq(), done.GetTargetTseq(), done.GetCopiedBytes())
	}
	if done.GetFenceTime() == nil || done.GetFlipTime() == nil || done.GetFlipTime().AsTime().Before(done.GetFenceTime().AsTime()) ||
		done.GetCleanupAfter().AsTime().Before(done.GetFlipTime().AsTime()) {
		t.Errorf("times: fence %v flip %v cleanup %v", done.GetFenceTime(), done.GetFlipTime(), done.GetCleanupAfter())
	}
	if got := strings.Join(e.cells.roles("acme"), " "); got != "b:OWNER@2" {
		t.Fatalf("cells hold %s, want only b:OWNER@2 (the source's copy deleted)", got)
	}
	e.cells.checkNoViolation(t)
	if e.cells.changeCount("a/acme/ROLE_FENCED/2/false") != 1 || e.cells.changeCount("b/acme/ROLE_OWNER/2/false") != 1 {
		t.Errorf("fence or ownership applied more than once: %v", e.cells.changes)
	}
	// The next move is allowed, and goes back.
	mv2, _, err := intent.StartMove(ctx, e.st, intent.MoveRequest{Tenant: "acme", Target: "a"})
	if err != nil {
		t.Fatal(err)
	}
	e.waitMove(t, mv2.GetId(), cpv1.MoveState_MOVE_STATE_DONE)
	if tn := e.tenant(t, "acme"); tn.GetCell() != "a" || tn.GetEpoch() != 3 {
		t.Fatalf("placement after moving back: %v", tn)
	}
	e.cells.checkNoViolation(t)
}

// A controller killed before it acts on each state of a move is replaced;
// the new leader finishes the move. At every kill, at most one cell owns
// the tenant; the loads end exact and the source was fenced once.
func TestMoveKilledBeforeEachStepNewLeaderFinishes(t *testing.T) {
	states := []cpv1.MoveState{
		cpv1.MoveState_MOVE_STATE_PREPARING,
		cpv1.MoveState_MOVE_STATE_COPYING,
		cpv1.MoveState_MOVE_STATE_CATCHING_UP,
		cpv1.MoveState_MOVE_STATE_FENCING,
		cpv1.MoveState_MOVE_STATE_CUTTING_OVER,
		cpv1.MoveState_MOVE_STATE_CLEANING_UP,
	}
	for _, killAt := range states {
		t.Run(intent.MoveStateName(killAt), func(t *testing.T) {
			e := newMoveEnv(t)
			_, stopSetup := e.start(t, "setup", controller.TestingKnobs{})
			e.create(t, "acme", "a")
			e.cells.write(t, "acme", 3)
			stopSetup()

			reached := make(chan []string, 1)
			var once sync.Once
			knob := func(_ context.Context, mv *cpv1.Move) error {
				if mv.GetState() == killAt {
					once.Do(func() { reached <- e.cells.roles("acme") })
					return errors.New("killed")
				}
				return nil
			}
			_, stopFirst := e.start(t, "first", controller.TestingKnobs{BeforeMoveStep: knob})
			ctx := testutil.Context(t, 15*time.Second)
			mv, _, err := intent.StartMove(ctx, e.st, intent.MoveRequest{Tenant: "acme", Target: "b"})
			if err != nil {
				t.Fatal(err)
			}
			select {
			case roles := <-reached:
				if n := countOwners(roles); n > 1 {
					t.Fatalf("at %s: %v", killAt, roles)
				}
			case <-ctx.Done():
				t.Fatal("the move never reached the state")
			}
			stopFirst() // the process dies here

			e.start(t, "second", controller.TestingKnobs{})
			e.waitMove(t, mv.GetId(), cpv1.MoveState_MOVE_STATE_DONE)
			if tn := e.tenant(t, "acme"); tn.GetCell() != "b" || tn.GetEpoch() != 2 || tn.GetOperationId() != "" || tn.GetCuttingOver() {
				t.Fatalf("placement %v", tn)
			}
			if got := e.loads(t, "a", "b"); got != "a=0 b=1" {
				t.Fatalf("loads %s (a step counted twice?)", got)
			}
			if got := strings.Join(e.cells.roles("acme"), " "); got != "b:OWNER@2" {
				t.Fatalf("cells hold %s", got)
			}
			e.cells.checkNoViolation(t)
			if n := e.cells.changeCount("a/acme/ROLE_FENCED/2/false"); n != 1 {
				t.Fatalf("source fenced %d times", n)
			}
		})
	}
}

func countOwners(roles []string) int {
	n := 0
	for _, r := range roles {
		if strings.Contains(r, ":OWNER@") {
			n++
		}
	}
	return n
}

// A cancel before the fence removes the target's copy and leaves the
// tenant where it was; cancelling again is a no-op, and the tenant can
// move again.
func TestCancelBeforeFence(t *testing.T) {
	e := newMoveEnv(t)
	e.start(t, "c1", controller.TestingKnobs{})
	e.create(t, "acme", "a")
	e.cells.set(func(f *fleet) { f.noBootstrap = true }) // the copy never ends
	ctx := testutil.Context(t, 10*time.Second)
	mv, _, err := intent.StartMove(ctx, e.st, intent.MoveRequest{Tenant: "acme", Target: "b"})
	if err != nil {
		t.Fatal(err)
	}
	e.waitMove(t, mv.GetId(), cpv1.MoveState_MOVE_STATE_COPYING)
	if got := e.loads(t, "a", "b"); got != "a=1 b=1" {
		t.Fatalf("loads while copying: %s", got)
	}
	if _, err := intent.CancelMove(ctx, e.st, mv.GetId()); err != nil {
		t.Fatal(err)
	}
	e.waitMove(t, mv.GetId(), cpv1.MoveState_MOVE_STATE_CANCELLED)
	if got := strings.Join(e.cells.roles("acme"), " "); got != "a:OWNER@1" {
		t.Fatalf("cells hold %s, want the target's copy removed", got)
	}
	if tn := e.tenant(t, "acme"); tn.GetCell() != "a" || tn.GetEpoch() != 1 || tn.GetOperationId() != "" {
		t.Fatalf("placement %v", tn)
	}
	if got := e.loads(t, "a", "b"); got != "a=1 b=0" {
		t.Fatalf("loads %s", got)
	}
	if again, err := intent.CancelMove(ctx, e.st, mv.GetId()); err != nil || again.GetState() != cpv1.MoveState_MOVE_STATE_CANCELLED {
		t.Fatalf("second cancel: %v %v", again, err)
	}
	e.cells.set(func(f *fleet) { f.noBootstrap = false })
	mv2, _, err := intent.StartMove(ctx, e.st, intent.MoveRequest{Tenant: "acme", Target: "c"})
	if err != nil {
		t.Fatal(err)
	}
	e.waitMove(t, mv2.GetId(), cpv1.MoveState_MOVE_STATE_DONE)
	e.cells.checkNoViolation(t)
}

// From the fence on, a move cannot be cancelled; it finishes.
func TestCancelAfterFenceIsRefused(t *testing.T) {
	e := newMoveEnv(t)
	release := make(chan struct{})
	at := make(chan struct{})
	var once sync.Once
	e.start(t, "c1", controller.TestingKnobs{BeforeMoveStep: func(ctx context.Context, mv *cpv1.Move) error {
		if mv.GetState() == cpv1.MoveState_MOVE_STATE_CUTTING_OVER {
			once.Do(func() { close(at) })
			select {
			case <-release:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		return nil
	}})
	e.create(t, "acme", "a")
	ctx := testutil.Context(t, 10*time.Second)
	mv, _, err := intent.StartMove(ctx, e.st, intent.MoveRequest{Tenant: "acme", Target: "b"})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-at:
	case <-ctx.Done():
		t.Fatal("never reached CUTTING_OVER")
	}
	if tn := e.tenant(t, "acme"); !tn.GetCuttingOver() {
		t.Errorf("placement not held (cutting_over) after the fence: %v", tn)
	}
	if _, err := intent.CancelMove(ctx, e.st, mv.GetId()); !errors.Is(err, cperr.ErrMoveNotCancellable) {
		t.Fatalf("cancel after the fence: %v, want MOVE_NOT_CANCELLABLE", err)
	}
	close(release)
	done := e.waitMove(t, mv.GetId(), cpv1.MoveState_MOVE_STATE_DONE)
	if done.GetCancelRequested() {
		t.Fatal("cancel_requested recorded after the fence")
	}
	if _, err := intent.CancelMove(ctx, e.st, mv.GetId()); !errors.Is(err, cperr.ErrMoveNotCancellable) {
		t.Fatalf("cancel of a finished move: %v", err)
	}
	if _, err := intent.CancelMove(ctx, e.st, "nope-00000000"); !errors.Is(err, cperr.ErrMoveNotFound) {
		t.Fatalf("cancel of no move: %v", err)
	}
}

// A move whose target does not copy in time fails and is undone.
func TestMoveTimeoutUndoes(t *testing.T) {
	e := newMoveEnv(t)
	e.start(t, "c1", controller.TestingKnobs{}, func(m *controller.MoveConfig) { m.CopyTimeout = 100 * time.Millisecond })
	e.create(t, "acme", "a")
	e.cells.set(func(f *fleet) { f.noBootstrap = true })
	ctx := testutil.Context(t, 10*time.Second)
	mv, _, err := intent.StartMove(ctx, e.st, intent.MoveRequest{Tenant: "acme", Target: "b"})
	if err != nil {
		t.Fatal(err)
	}
	failed := e.waitMove(t, mv.GetId(), cpv1.MoveState_MOVE_STATE_FAILED)
	if failed.GetErrorReason() != string(cperr.CellUnavailable) || !strings.Contains(failed.GetErrorMessage(), "COPYING") {
		t.Errorf("error %s: %s", failed.GetErrorReason(), failed.GetErrorMessage())
	}
	if got := strings.Join(e.cells.roles("acme"), " "); got != "a:OWNER@1" {
		t.Fatalf("cells hold %s", got)
	}
	if got := e.loads(t, "a", "b"); got != "a=1 b=0" {
		t.Fatalf("loads %s", got)
	}
	if tn := e.tenant(t, "acme"); tn.GetOperationId() != "" {
		t.Fatalf("placement still held: %v", tn)
	}
}

// A target that is down before the fence: the move fails after its
// timeout; the tenant is released even though the copy could not be
// removed (said in the move's error).
func TestMoveTargetDownFailsAndReleases(t *testing.T) {
	e := newMoveEnv(t)
	e.start(t, "c1", controller.TestingKnobs{}, func(m *controller.MoveConfig) {
		m.PrepareTimeout = 100 * time.Millisecond
	})
	e.create(t, "acme", "a")
	e.cells.set(func(f *fleet) { f.down["b"] = true })
	ctx := testutil.Context(t, 10*time.Second)
	mv, _, err := intent.StartMove(ctx, e.st, intent.MoveRequest{Tenant: "acme", Target: "b"})
	if err != nil {
		t.Fatal(err)
	}
	failed := e.waitMove(t, mv.GetId(), cpv1.MoveState_MOVE_STATE_FAILED)
	if !strings.Contains(failed.GetErrorMessage(), "could not be removed") {
		t.Errorf("error message %q", failed.GetErrorMessage())
	}
	if tn := e.tenant(t, "acme"); tn.GetOperationId() != "" || tn.GetCell() != "a" {
		t.Fatalf("placement %v", tn)
	}
	if got := e.loads(t, "a", "b"); got != "a=1 b=0" {
		t.Fatalf("loads %s", got)
	}
}

func TestStartMoveValidation(t *testing.T) {
	e := newMoveEnv(t)
	e.start(t, "c1", controller.TestingKnobs{})
	e.create(t, "acme", "a")
	e.create(t, "busy", "a")
	ctx := testutil.Context(t, 10*time.Second)
	if _, err := intent.SetStandby(ctx, e.st, "acme", "eu", "e1"); err != nil {
		t.Fatal(err)
	}
	cordoned := activeCell("d", "us", 0)
	cordoned.State = cpv1.CellState_CELL_STATE_CORDONED
	seedCells(t, e.st, cordoned, func() *cpv1.Cell { c := activeCell("full", "us", 1); return c }())
	e.create(t, "filler", "full")
	e.cells.set(func(f *fleet) { f.noBootstrap = true })
	if _, _, err := intent.StartMove(ctx, e.st, intent.MoveRequest{Tenant: "busy", Target: "b"}); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name   string
		req    intent.MoveRequest
		reason *cperr.Error
	}{
		{"unknown tenant", intent.MoveRequest{Tenant: "nope", Target: "b"}, cperr.ErrTenantNotFound},
		{"to its owner", intent.MoveRequest{Tenant: "acme", Target: "a"}, cperr.ErrInvalidArgument},
		{"to its standby", intent.MoveRequest{Tenant: "acme", Target: "e1"}, cperr.ErrInvalidArgument},
		{"to its standby's region", intent.MoveRequest{Tenant: "acme", Target: "e2"}, cperr.ErrInvalidArgument},
		{"unknown cell", intent.MoveRequest{Tenant: "acme", Target: "zz"}, cperr.ErrCellNotFound},
		{"cordoned cell", intent.MoveRequest{Tenant: "acme", Target: "d"}, cperr.ErrCellNotActive},
		{"full cell", intent.MoveRequest{Tenant: "acme", Target: "full"}, cperr.ErrNoCapacity},
		{"already moving", intent.MoveRequest{Tenant: "busy", Target: "c"}, cperr.ErrTenantBusy},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := intent.StartMove(ctx, e.st, tt.req)
			if !errors.Is(err, tt.reason) {
				t.Fatalf("StartMove(%+v) = %v, want %s", tt.req, err, tt.reason.Reason)
			}
		})
	}
	t.Run("dry run records nothing", func(t *testing.T) {
		before := e.moveKeys(t)
		mv, plan, err := intent.StartMove(ctx, e.st, intent.MoveRequest{Tenant: "acme", Target: "b", DryRun: true})
		if err != nil {
			t.Fatal(err)
		}
		if mv.GetId() != "" || mv.GetTargetCell() != "b" || len(plan) != 8 || !strings.Contains(strings.Join(plan, "\n"), "FENCED at epoch 2") {
			t.Fatalf("dry run: %v\n%s", mv, strings.Join(plan, "\n"))
		}
		if e.moveKeys(t) != before || e.tenant(t, "acme").GetOperationId() != "" || load(t, e.st, "b") != 1 {
			t.Fatal("a dry run recorded something")
		}
	})
	t.Run("delete refused while moving", func(t *testing.T) {
		if err := intent.StartDelete(ctx, e.st, "busy"); !errors.Is(err, cperr.ErrTenantBusy) {
			t.Fatalf("delete during a move: %v", err)
		}
	})
}

// Finished moves are kept up to HistoryMax, then the oldest go.
func TestMoveHistoryIsBounded(t *testing.T) {
	e := newMoveEnv(t)
	e.start(t, "c1", controller.TestingKnobs{}, func(m *controller.MoveConfig) { m.HistoryMax = 2 })
	e.create(t, "acme", "a")
	ctx := testutil.Context(t, 15*time.Second)
	var ids []string
	for _, to := range []string{"b", "a", "b"} {
		mv, _, err := intent.StartMove(ctx, e.st, intent.MoveRequest{Tenant: "acme", Target: to})
		if err != nil {
			t.Fatal(err)
		}
		e.waitMove(t, mv.GetId(), cpv1.MoveState_MOVE_STATE_DONE)
		ids = append(ids, mv.GetId())
	}
	testutil.Eventually(t, 5*time.Second, func() error {
		all, err := intent.ListMoves(ctx, e.st, intent.MoveFilter{All: true})
		if err != nil {
			return err
		}
		var got []string
		for _, mv := range all {
			got = append(got, mv.GetId())
		}
		if !slices.Equal(got, ids[1:]) {
			return fmt.Errorf("kept %v, want %v", got, ids[1:])
		}
		return nil
	})
	if active, err := intent.ListMoves(ctx, e.st, intent.MoveFilter{}); err != nil || len(active) != 0 {
		t.Fatalf("active moves %v %v", active, err)
	}
}

// After the fence a move only goes forward: with its target down it stays
// CUTTING_OVER (reporting the wait on the record, the placement held), and
// finishes once the target is back.
func TestMoveAfterFenceGoesForward(t *testing.T) {
	e := newMoveEnv(t)
	var once sync.Once
	e.start(t, "c1", controller.TestingKnobs{BeforeMoveStep: func(_ context.Context, mv *cpv1.Move) error {
		if mv.GetState() == cpv1.MoveState_MOVE_STATE_CUTTING_OVER {
			once.Do(func() { e.cells.set(func(f *fleet) { f.down["b"] = true }) })
		}
		return nil
	}}, func(m *controller.MoveConfig) { m.CutoverWarnAfter = 50 * time.Millisecond })
	e.create(t, "acme", "a")
	ctx := testutil.Context(t, 10*time.Second)
	mv, _, err := intent.StartMove(ctx, e.st, intent.MoveRequest{Tenant: "acme", Target: "b"})
	if err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 5*time.Second, func() error {
		got, _, err := intent.GetMove(ctx, e.st, mv.GetId())
		if err != nil {
			return err
		}
		if got.GetState() != cpv1.MoveState_MOVE_STATE_CUTTING_OVER || !strings.Contains(got.GetErrorMessage(), "CUTTING_OVER for") {
			return fmt.Errorf("move %s %q", got.GetState(), got.GetErrorMessage())
		}
		return nil
	})
	if tn := e.tenant(t, "acme"); !tn.GetCuttingOver() || tn.GetCell() != "a" {
		t.Fatalf("placement while stuck: %v", tn)
	}
	if got := strings.Join(e.cells.roles("acme"), " "); got != "a:FENCED@2 b:STANDBY@1" {
		t.Fatalf("cells while stuck: %s", got)
	}
	e.cells.set(func(f *fleet) { f.down["b"] = false })
	done := e.waitMove(t, mv.GetId(), cpv1.MoveState_MOVE_STATE_DONE)
	if done.GetErrorMessage() != "" {
		t.Errorf("error kept after the move finished: %q", done.GetErrorMessage())
	}
	if tn := e.tenant(t, "acme"); tn.GetCuttingOver() || tn.GetCell() != "b" || tn.GetEpoch() != 2 {
		t.Fatalf("placement %v", tn)
	}
	e.cells.checkNoViolation(t)
}
