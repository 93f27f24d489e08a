package controller_test

import (
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cellplane/cellplane/controlplane/controller"
	"github.com/cellplane/cellplane/controlplane/intent"
	"github.com/cellplane/cellplane/controlplane/topo"
	"github.com/cellplane/cellplane/controlplane/topo/memtopo"
	"github.com/cellplane/cellplane/internal/testutil"
	cellv1 "github.com/cellplane/cellplane/proto/cellplane/cell/v1"
	cpv1 "github.com/cellplane/cellplane/proto/cellplane/controlplane/v1"
)

// M1: a controller deposed between its placement read and the cleanup's
// delete resumes after the tenant moved away and back. The tenant moved
// a→b (epoch 2), then b→a (epoch 3, under the next leader); the old
// leader's late cleanup of the first move still targets a, and a refuses
// it (a holds the tenant as OWNER at 3, not FENCED at 2): a's data stays.
func TestStaleMoveCleanupCannotDeleteATenantThatCameBack(t *testing.T) {
	e := newMoveEnv(t)
	paused, resume := make(chan *cellv1.DeleteTenantRequest, 1), make(chan struct{})
	var once sync.Once
	e.cells.set(func(f *fleet) {
		f.beforeDelete = func(cell string, req *cellv1.DeleteTenantRequest) {
			if cell != "a" || !strings.HasSuffix(req.GetRequestId(), "cleanup") {
				return
			}
			first := false
			once.Do(func() { first = true })
			if first { // the old leader, past its placement read
				paused <- req
				<-resume
			}
		}
	})
	_, stopOld := e.start(t, "old", controller.TestingKnobs{})
	var released sync.Once
	release := func() { released.Do(func() { close(resume) }) }
	t.Cleanup(release) // before stopOld (cleanups run last first)
	leases := e.st.Leases()
	e.create(t, "acme", "a")
	e.cells.write(t, "acme", 5)
	ctx := testutil.Context(t, 20*time.Second)

	mv1, _, err := intent.StartMove(ctx, e.st, intent.MoveRequest{Tenant: "acme", Target: "b"})
	if err != nil {
		t.Fatal(err)
	}
	var stale *cellv1.DeleteTenantRequest
	select {
	case stale = <-paused:
	case <-ctx.Done():
		t.Fatal("the old leader never reached the cleanup's delete")
	}
	if stale.GetExpectedEpoch() != 2 || len(stale.GetAllowedRoles()) != 1 || stale.GetAllowedRoles()[0] != cellv1.Role_ROLE_FENCED || stale.GetForce() {
		t.Fatalf("cleanup delete %v: want a guard FENCED at epoch 2", stale)
	}

	// The old leader is deposed while its delete is on the way.
	e.st.Fail(memtopo.OpSession, "", topo.ErrUnavailable)
	for _, l := range leases {
		e.st.ExpireLease(l)
	}
	e.st.Clear()
	e.start(t, "new", controller.TestingKnobs{})
	e.waitMove(t, mv1.GetId(), cpv1.MoveState_MOVE_STATE_DONE)
	e.waitRoles(t, "acme", "b:OWNER@2")

	// The tenant comes back to a, at epoch 3, and writes there.
	mv2, _, err := intent.StartMove(ctx, e.st, intent.MoveRequest{Tenant: "acme", Target: "a"})
	if err != nil {
		t.Fatal(err)
	}
	e.waitMove(t, mv2.GetId(), cpv1.MoveState_MOVE_STATE_DONE)
	e.waitRoles(t, "acme", "a:OWNER@3")
	e.cells.write(t, "acme", 3)
	before := e.cells.roles("acme")

	// The old leader resumes: its delete reaches a and is refused.
	release()
	testutil.Eventually(t, 10*time.Second, func() error {
		var n int
		e.cells.set(func(f *fleet) { n = f.refused["a/acme"] })
		if n == 0 {
			return errString("the stale delete has not reached a yet")
		}
		return nil
	})
	stopOld()
	if got := e.cells.roles("acme"); strings.Join(got, " ") != "a:OWNER@3" || strings.Join(before, " ") != "a:OWNER@3" {
		t.Fatalf("cells holding acme: %v (before the stale delete %v), want a:OWNER@3", got, before)
	}
	var tseq uint64
	e.cells.set(func(f *fleet) { tseq = f.rec("a", "acme").tseq })
	if tseq == 0 {
		t.Fatalf("a's copy lost its history (tseq %d)", tseq)
	}
	if tn := e.tenant(t, "acme"); tn.GetCell() != "a" || tn.GetEpoch() != 3 {
		t.Fatalf("placement %v", tn)
	}
	e.cells.checkNoViolation(t)
}

type errString string

func (e errString) Error() string { return string(e) }
