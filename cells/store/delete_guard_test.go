package store

import (
	"testing"

	"github.com/cellplane/cellplane/internal/cperr"
	cellv1 "github.com/cellplane/cellplane/proto/cellplane/cell/v1"
)

// TestFSMDeleteTenantGuard: a guarded delete (M1) applies only when the
// tenant's role and epoch here are the ones it expects; otherwise it is
// refused with WRONG_CELL (role) or STALE_EPOCH (epoch) and writes nothing
// (runOpCases checks that a refusal leaves the store byte for byte).
func TestFSMDeleteTenantGuard(t *testing.T) {
	withData := func(setup ...*cellv1.Command) []*cellv1.Command {
		return append(cmds(ownedBy("acme"), createContext("acme", "c"), appendText("acme", "c", "r1", "x"),
			withReq(putMemory("acme", "k", "v"), "r2")), setup...)
	}
	deleted := func(t *testing.T, h *fsmHarness, _ *cellv1.CommandResult) {
		t.Helper()
		if h.record("acme") != nil {
			t.Errorf("record left")
		}
		if left := dumpRange(t, h.f, tenantPrefix("acme"), tenantEnd("acme"), false); len(left) != 0 {
			t.Errorf("%d keys of the tenant left", len(left))
		}
	}
	// ownedBy makes acme OWNER at epoch 1.
	fencedAt2 := withData(setTenant("acme", fenced, 2))
	ownerAt3 := withData(setTenant("acme", fenced, 2), setTenant("acme", owner, 3)) // moved away, then back
	standbyAt2 := cmds(setTenant("acme", standby, 2))
	runOpCases(t, []opCase{
		{name: "role and epoch match", setup: fencedAt2, cmd: guardedDeleteTenant("acme", 2, fenced), check: deleted},
		{name: "one of several roles", setup: standbyAt2, cmd: guardedDeleteTenant("acme", 0, standby, fenced), check: deleted},
		{name: "epoch only", setup: withData(), cmd: guardedDeleteTenant("acme", 1), check: deleted},
		{name: "unguarded (log entries from before the guard)", setup: ownerAt3, cmd: deleteTenant("acme"), check: deleted},
		{name: "wrong role: moved back as OWNER at a higher epoch", setup: ownerAt3, cmd: guardedDeleteTenant("acme", 2, fenced),
			reason: cperr.WrongCell, meta: map[string]string{cperr.MetaRole: "ROLE_OWNER", cperr.MetaEpoch: "3"}},
		{name: "wrong role, epoch matches", setup: withData(), cmd: guardedDeleteTenant("acme", 1, fenced, standby),
			reason: cperr.WrongCell, meta: map[string]string{cperr.MetaRole: "ROLE_OWNER", cperr.MetaEpoch: "1"}},
		{name: "stale epoch, role matches", setup: withData(setTenant("acme", fenced, 4)), cmd: guardedDeleteTenant("acme", 2, fenced),
			reason: cperr.StaleEpoch, meta: map[string]string{cperr.MetaEpoch: "4"}},
		{name: "epoch ahead of the tenant's", setup: fencedAt2, cmd: guardedDeleteTenant("acme", 3, fenced),
			reason: cperr.StaleEpoch, meta: map[string]string{cperr.MetaEpoch: "2"}},
		{name: "absent tenant", setup: withData(), cmd: guardedDeleteTenant("nope", 2, fenced), reason: cperr.TenantNotFound},
	})
}

// TestFSMDeleteTenantGuardRetry: a stray retry of a delete that was
// applied (its dedup record went with the tenant) cannot delete the tenant
// once it is back at another epoch or role.
func TestFSMDeleteTenantGuardRetry(t *testing.T) {
	h := newFSM(t)
	h.mustApply(ownedBy("acme"))
	h.mustApply(setTenant("acme", fenced, 2))
	del := withReq(guardedDeleteTenant("acme", 2, fenced), "move-1.cleanup")
	h.mustApply(del)
	h.mustApply(setTenant("acme", standby, 3)) // comes back as a standby, then owner
	h.mustApply(setTenant("acme", owner, 4))
	h.mustApply(createContext("acme", "c"))
	before := h.dump(false)
	if r := h.applyOne(del); reasonOf(r) != string(cperr.WrongCell) {
		t.Fatalf("retried delete = %v, want WRONG_CELL", r)
	}
	if d := diffDumps(before, h.dump(false)); d != "" {
		t.Errorf("refused retry wrote: %s", d)
	}
}
