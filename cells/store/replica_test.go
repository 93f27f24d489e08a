package store

import (
	"errors"
	"sync/atomic"
	"testing"

	"github.com/cellplane/cellplane/internal/cperr"
	cellv1 "github.com/cellplane/cellplane/proto/cellplane/cell/v1"
	contextv1 "github.com/cellplane/cellplane/proto/cellplane/context/v1"
)

func standbyOf(tenant, source string, epoch uint64, resume bool) *cellv1.Command {
	return &cellv1.Command{Tenant: tenant, Op: &cellv1.Command_SetTenant{SetTenant: &cellv1.SetTenantOp{
		Role: cellv1.Role_ROLE_STANDBY, Epoch: epoch, SourceCell: source, Resume: resume}}}
}

func importChunk(tenant, source string, first bool, pairs []*cellv1.KeyValue, rec *cellv1.TenantRecord) *cellv1.Command {
	return &cellv1.Command{Tenant: tenant, Op: &cellv1.Command_ImportTenant{ImportTenant: &cellv1.ImportTenantOp{
		First: first, Pairs: pairs, Record: rec, SourceCell: source}}}
}

func applyEvents(tenant string, evs []*cellv1.ChangeEvent) *cellv1.Command {
	return &cellv1.Command{Tenant: tenant, Op: &cellv1.Command_ApplyChanges{ApplyChanges: &cellv1.ApplyChangesOp{Events: evs}}}
}

// changesAfter reads a tenant's change events after tseq from s.
func changesAfter(t *testing.T, s *Store, tenant string, after uint64) []*cellv1.ChangeEvent {
	t.Helper()
	var evs []*cellv1.ChangeEvent
	if err := s.ReadReplica(tenant, func(v *TenantView) error {
		var err error
		evs, err = v.Changes(after, 1000)
		return err
	}); err != nil {
		t.Fatalf("changes after %d: %v", after, err)
	}
	return evs
}

// bootstrap exports tenant from src into dst (already STANDBY of "src")
// in small chunks and returns the exported record.
func bootstrap(t *testing.T, src, dst *Store, tenant string) *cellv1.TenantRecord {
	t.Helper()
	first, chunks := true, 0
	var rec *cellv1.TenantRecord
	err := src.ExportTenant(testCtx(t), tenant, 64, func(c ExportChunk) error {
		chunks++
		mustPropose(t, dst, importChunk(tenant, "src", first, c.Pairs, c.Record))
		first = false
		rec = c.Record
		return nil
	})
	if err != nil {
		t.Fatalf("export: %v", err)
	}
	if chunks < 2 {
		t.Fatalf("export came in %d chunk(s); the test wants several", chunks)
	}
	return rec
}

// TestReplicaFollowsSourceExactly: a standby bootstrapped from an export
// taken mid-way, then fed the change stream up to and including the
// source's fence, holds byte for byte the source's tenant range (data,
// change log, dedup window); promoted, it serves the same entries and
// answers a retried request id with the source's first result.
func TestReplicaFollowsSourceExactly(t *testing.T) {
	src, dst := openSingle(t, ""), openSingle(t, "")
	setOwner(t, src, "acme", 1)
	mustPropose(t, src, createContext("acme", "c"))
	var firstAppend *cellv1.CommandResult
	for i, id := range []string{"r1", "r2", "r3", "r4", "r5"} {
		res := mustPropose(t, src, appendText("acme", "c", id, "hello", id))
		if i == 0 {
			firstAppend = res
		}
	}
	mustPropose(t, src, putMemory("acme", "k", "v1"))
	mustPropose(t, dst, standbyOf("acme", "src", 1, false))

	rec := bootstrap(t, src, dst, "acme")
	if got := mustRecord(t, dst, "acme"); !got.GetBootstrapped() || got.GetTseq() != rec.GetTseq() {
		t.Fatalf("after import: %v, want bootstrapped at tseq %d", got, rec.GetTseq())
	}

	// Writes after the export reach the standby through the stream.
	mustPropose(t, src, appendText("acme", "c", "r6", "after export"))
	mustPropose(t, src, deleteMemory("acme", "k"))
	mustPropose(t, src, putMemory("acme", "k2", "v2"))
	evs := changesAfter(t, src, "acme", rec.GetTseq())
	mustPropose(t, dst, applyEvents("acme", evs[:2]))
	mustPropose(t, dst, applyEvents("acme", evs)) // overlapping: the first two are skipped

	fence := mustPropose(t, src, setTenant("acme", fenced, 2))
	mustPropose(t, dst, applyEvents("acme", changesAfter(t, src, "acme", mustRecord(t, dst, "acme").GetTseq())))
	if got := mustRecord(t, dst, "acme").GetTseq(); got != fence.GetTseq() {
		t.Fatalf("standby tseq %d, fence tseq %d", got, fence.GetTseq())
	}
	if d := diffDumps(dumpRange(t, src.fsm, tenantPrefix("acme"), tenantEnd("acme"), false),
		dumpRange(t, dst.fsm, tenantPrefix("acme"), tenantEnd("acme"), false)); d != "" {
		t.Fatalf("standby differs from its source: %s", d)
	}
	// The dedup window's bookkeeping moved with it (import, then events).
	if s, d := mustRecord(t, src, "acme"), mustRecord(t, dst, "acme"); s.GetDedupFirstTimeUnixNano() == 0 || s.GetDedupFirst() != d.GetDedupFirst() ||
		s.GetDedupNext() != d.GetDedupNext() || s.GetDedupFirstTimeUnixNano() != d.GetDedupFirstTimeUnixNano() {
		t.Fatalf("standby dedup window [%d, %d) from %d, source [%d, %d) from %d", d.GetDedupFirst(), d.GetDedupNext(), d.GetDedupFirstTimeUnixNano(),
			s.GetDedupFirst(), s.GetDedupNext(), s.GetDedupFirstTimeUnixNano())
	}

	// Promoted: same entries, same dedup answers, tseq continues.
	promoted := mustPropose(t, dst, setTenant("acme", owner, 2))
	if promoted.GetTseq() != fence.GetTseq()+1 {
		t.Errorf("promotion tseq %d, want %d", promoted.GetTseq(), fence.GetTseq()+1)
	}
	if b := readAll(t, dst, "acme", "c"); len(b) != 11 || b[10].GetText() != "after export" {
		t.Fatalf("promoted entries = %v, want the source's 11", b)
	}
	retry := mustPropose(t, dst, appendText("acme", "c", "r1", "hello", "r1"))
	if !retry.GetDeduplicated() || retry.GetAppend().GetFirstSeq() != firstAppend.GetAppend().GetFirstSeq() {
		t.Errorf("retried r1 on the promoted cell = %v, want the source's first answer %v", retry, firstAppend)
	}
	res := mustPropose(t, dst, appendText("acme", "c", "r7", "new owner"))
	if res.GetAppend().GetFirstSeq() != 12 {
		t.Errorf("first new append = %v, want seq 12", res)
	}
	// The fenced source refuses writes.
	if _, err := src.Propose(testCtx(t), appendText("acme", "c", "r8", "x")); !errors.Is(err, cperr.ErrWrongCell) {
		t.Errorf("write to the fenced source: %v, want WRONG_CELL", err)
	}
}

func mustRecord(t *testing.T, s *Store, tenant string) *cellv1.TenantRecord {
	t.Helper()
	var rec *cellv1.TenantRecord
	if err := s.ReadReplica(tenant, func(v *TenantView) error { rec = v.Record(); return nil }); err != nil {
		t.Fatalf("record of %s: %v", tenant, err)
	}
	return rec
}

// TestReplicaRejections: replication commands refuse what would corrupt a
// standby, and a rejected one writes nothing.
func TestReplicaRejections(t *testing.T) {
	src := newFSM(t)
	src.mustApply(ownedBy("acme"))
	src.mustApply(createContext("acme", "c"))
	src.mustApply(appendText("acme", "c", "r1", "x"))
	var evs []*cellv1.ChangeEvent
	src.tenant("acme", func(v *TenantView) {
		evs, _ = v.Changes(0, 100)
	})
	if len(evs) != 3 {
		t.Fatalf("source has %d events, want 3", len(evs))
	}
	boot := &cellv1.TenantRecord{}
	tests := []struct {
		name   string
		setup  []*cellv1.Command
		cmd    *cellv1.Command
		reason cperr.Reason
	}{
		{"apply to an unknown tenant", nil, applyEvents("acme", evs), cperr.TenantNotFound},
		{"apply to an owner", cmds(ownedBy("acme")), applyEvents("acme", evs), cperr.WrongCell},
		{"apply before bootstrap", cmds(standbyOf("acme", "src", 1, false)), applyEvents("acme", evs), cperr.ChangesTrimmed},
		{"apply with a gap", cmds(standbyOf("acme", "src", 1, false), importChunk("acme", "src", true, nil, boot)), applyEvents("acme", evs[1:]), cperr.ChangesTrimmed},
		{"import from another source", cmds(standbyOf("acme", "src", 1, false)), importChunk("acme", "other", true, nil, boot), cperr.StaleEpoch},
		{"import into an owner", cmds(ownedBy("acme")), importChunk("acme", "src", true, nil, boot), cperr.WrongCell},
		{"ack on a standby", cmds(standbyOf("acme", "src", 1, false)), &cellv1.Command{Tenant: "acme", Op: &cellv1.Command_ReplicaAck{ReplicaAck: &cellv1.ReplicaAckOp{Tseq: 1}}}, cperr.WrongCell},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newFSM(t)
			for _, c := range tc.setup {
				h.mustApply(c)
			}
			before := h.dump(false)
			res := h.applyOne(tc.cmd)
			if reasonOf(res) != string(tc.reason) {
				t.Fatalf("reason = %q, want %s (%v)", reasonOf(res), tc.reason, res)
			}
			if d := diffDumps(before, h.dump(false)); d != "" {
				t.Errorf("rejected command wrote: %s", d)
			}
		})
	}
}

// TestReplicaStandbyResume: a standby re-pointed at another source keeps
// its data only when told to resume; an old owner made standby keeps its
// data only with resume.
func TestReplicaStandbyResume(t *testing.T) {
	tests := []struct {
		name  string
		setup []*cellv1.Command
		cmd   *cellv1.Command
		want  bool // bootstrapped after cmd
	}{
		{"new standby", nil, standbyOf("acme", "a", 1, false), false},
		{"same source again", cmds(standbyOf("acme", "a", 1, false), importChunk("acme", "a", true, nil, &cellv1.TenantRecord{})), standbyOf("acme", "a", 2, false), true},
		{"new source without resume", cmds(standbyOf("acme", "a", 1, false), importChunk("acme", "a", true, nil, &cellv1.TenantRecord{})), standbyOf("acme", "b", 2, false), false},
		{"new source with resume", cmds(standbyOf("acme", "a", 1, false), importChunk("acme", "a", true, nil, &cellv1.TenantRecord{})), standbyOf("acme", "b", 2, true), true},
		{"resume of a standby never bootstrapped", cmds(standbyOf("acme", "a", 1, false)), standbyOf("acme", "b", 2, true), false},
		{"fenced old owner with resume", cmds(ownedBy("acme"), setTenant("acme", fenced, 2)), standbyOf("acme", "b", 2, true), true},
		{"fenced old owner without resume", cmds(ownedBy("acme"), setTenant("acme", fenced, 2)), standbyOf("acme", "b", 2, false), false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newFSM(t)
			for _, c := range tc.setup {
				h.mustApply(c)
			}
			h.mustApply(tc.cmd)
			if rec := h.record("acme"); rec.GetBootstrapped() != tc.want || rec.GetSourceCell() != tc.cmd.GetSetTenant().GetSourceCell() {
				t.Errorf("record = %v, want bootstrapped=%v", rec, tc.want)
			}
		})
	}
}

// TestReplicaFloorKeepsChanges: while a standby's floor is set, the count
// bound does not trim events it has not applied; the byte bound still does
// and counts it.
func TestReplicaFloorKeepsChanges(t *testing.T) {
	ack := func(tseq uint64) *cellv1.Command {
		return &cellv1.Command{Tenant: "acme", Op: &cellv1.Command_ReplicaAck{ReplicaAck: &cellv1.ReplicaAckOp{Tseq: tseq}}}
	}
	h := newFSM(t, func(c *fsmConfig) { c.changelog.MaxEvents = 3 })
	h.mustApply(ownedBy("acme"))
	h.mustApply(createContext("acme", "c"))
	h.mustApply(ack(2))
	for i := 0; i < 10; i++ {
		h.mustApply(appendText("acme", "c", "", "x"))
	}
	rec := h.record("acme")
	if rec.GetTseq() != 12 || rec.GetChangelogFirstTseq() != 3 || rec.GetReplicaForcedTrims() != 0 {
		t.Fatalf("with floor 2: record %v, want events 3..12 kept", rec)
	}
	h.mustApply(ack(10))
	h.mustApply(appendText("acme", "c", "", "x"))
	if rec := h.record("acme"); rec.GetChangelogFirstTseq() != 11 {
		t.Fatalf("with floor 10: first kept %d, want 11", rec.GetChangelogFirstTseq())
	}

	hard := newFSM(t, func(c *fsmConfig) { c.changelog.MaxBytes = 400 })
	hard.mustApply(ownedBy("acme"))
	hard.mustApply(createContext("acme", "c"))
	hard.mustApply(ack(1))
	for i := 0; i < 20; i++ {
		hard.mustApply(appendText("acme", "c", "", "some text to fill the log"))
	}
	if rec := hard.record("acme"); rec.GetChangelogFirstTseq() <= 2 || rec.GetReplicaForcedTrims() == 0 {
		t.Fatalf("byte bound: record %v, want forced trims past the floor", rec)
	}
}

type flagAuthority struct{ ok atomic.Bool }

func (a *flagAuthority) Valid() bool { return a.ok.Load() }

// TestAuthorityGate: without a valid authority lease the cell refuses
// client writes, linearizable and LEADER reads (retryably) but still takes
// control commands and stale reads; LEADER reads come back with the lease.
func TestAuthorityGate(t *testing.T) {
	s := openSingle(t, "")
	setOwner(t, s, "acme", 1)
	mustPropose(t, s, createContext("acme", "c"))
	a := &flagAuthority{}
	s.SetAuthority(a)
	_, err := s.Propose(testCtx(t), appendText("acme", "c", "r1", "x"))
	var ce *cperr.Error
	if !errors.As(err, &ce) || ce.Reason != cperr.AuthorityLeaseExpired || ce.RetryAfter <= 0 {
		t.Fatalf("write without authority: %v, want AUTHORITY_LEASE_EXPIRED with a retry delay", err)
	}
	if err := s.ReadTenant(testCtx(t), "acme", 0, ReadOptions{}, func(*TenantView) error { return nil }); !errors.Is(err, cperr.ErrAuthorityLeaseExpired) {
		t.Fatalf("linearizable read without authority: %v", err)
	}
	leader := ReadOptions{Consistency: contextv1.Consistency_CONSISTENCY_LEADER}
	err = s.ReadTenant(testCtx(t), "acme", 0, leader, func(*TenantView) error { return nil })
	if ce = nil; !errors.As(err, &ce) || ce.Reason != cperr.AuthorityLeaseExpired || ce.RetryAfter <= 0 {
		t.Fatalf("LEADER read without authority: %v, want AUTHORITY_LEASE_EXPIRED with a retry delay", err)
	}
	if err := s.ReadCell(testCtx(t), leader, func(*CellView) error { return nil }); !errors.Is(err, cperr.ErrAuthorityLeaseExpired) {
		t.Fatalf("LEADER cell read without authority: %v", err)
	}
	stale := ReadOptions{Consistency: contextv1.Consistency_CONSISTENCY_STALE}
	if err := s.ReadTenant(testCtx(t), "acme", 0, stale, func(*TenantView) error { return nil }); err != nil {
		t.Fatalf("stale read without authority: %v", err)
	}
	mustPropose(t, s, setTenant("acme", fenced, 2)) // control commands are not gated
	a.ok.Store(true)
	setOwner(t, s, "acme", 3)
	if err := s.ReadTenant(testCtx(t), "acme", 0, leader, func(*TenantView) error { return nil }); err != nil {
		t.Fatalf("LEADER read with authority: %v", err)
	}
	mustPropose(t, s, appendText("acme", "c", "r1", "x"))
	s.SetAuthority(nil)
	mustPropose(t, s, appendText("acme", "c", "r2", "x"))
}
