package store

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/cellplane/cellplane/internal/cperr"
	cellv1 "github.com/cellplane/cellplane/proto/cellplane/cell/v1"
)

// quotaSettings is the cell_settings command with a default tenant quota.
func quotaSettings(q *cellv1.TenantQuota) *cellv1.Command {
	return &cellv1.Command{Op: &cellv1.Command_CellSettings{CellSettings: &cellv1.CellSettings{DedupWindow: 100, TenantQuota: q}}}
}

// ownerWithQuota makes tenant OWNER at epoch with its own quota q.
func ownerWithQuota(tenant string, epoch uint64, q *cellv1.TenantQuota) *cellv1.Command {
	c := setTenant(tenant, owner, epoch)
	c.GetSetTenant().Quota = q
	return c
}

// wantQuota fails unless res was refused QUOTA_EXCEEDED on limit.
func wantQuota(t *testing.T, res *cellv1.CommandResult, limit string) {
	t.Helper()
	e := res.GetError()
	if e.GetReason() != string(cperr.QuotaExceeded) || e.GetMetadata()[cperr.MetaQuota] != limit || e.GetMetadata()[cperr.MetaTenant] == "" ||
		e.GetMetadata()[cperr.MetaLimit] == "" || !strings.Contains(e.GetMessage(), limit) {
		t.Fatalf("result %v, want QUOTA_EXCEEDED on %s with tenant, limit and usage", res, limit)
	}
}

// TestFSMQuotas (H4): the state machine refuses a client write that would
// take the tenant above its bytes, contexts or memory keys quota, writes
// nothing of it (a multi-entry append included), and always lets deletes
// and shrinking writes through, even over the quota.
func TestFSMQuotas(t *testing.T) {
	q := &cellv1.TenantQuota{MaxBytes: 40, MaxContexts: 2, MaxMemoryKeys: 2}
	for _, tc := range []struct {
		name string
		run  func(t *testing.T, h *fsmHarness)
	}{
		{"contexts", func(t *testing.T, h *fsmHarness) {
			h.mustApply(createContext("acme", "c2"))
			wantQuota(t, h.applyOne(createContext("acme", "c3")), "max_contexts")
			h.mustApply(deleteContext("acme", "c2"))
			h.mustApply(createContext("acme", "c3"))
		}},
		{"bytes: a multi-entry append is refused whole", func(t *testing.T, h *fsmHarness) {
			h.mustApply(appendText("acme", "c", "", "0123456789")) // 4 + 10 bytes
			before := h.dump(false)
			// 3 × 14 bytes: the first entry would fit, the batch does not.
			wantQuota(t, h.applyOne(appendText("acme", "c", "r1", "0123456789", "0123456789", "0123456789")), "max_bytes")
			if d := diffDumps(before, h.dump(false)); d != "" {
				t.Fatalf("a refused append wrote: %s", d)
			}
			if u := h.record("acme").GetUsage(); u.GetBytes() != 14 || u.GetEntries() != 1 {
				t.Fatalf("usage %v after the refusal, want 14 bytes in 1 entry", u)
			}
			// The request id was not remembered: the same id passes once
			// it fits.
			h.mustApply(appendText("acme", "c", "r1", "0123456789"))
		}},
		{"memory keys and bytes", func(t *testing.T, h *fsmHarness) {
			h.mustApply(putMemory("acme", "k1", "v"))
			h.mustApply(putMemory("acme", "k2", "v"))
			wantQuota(t, h.applyOne(putMemory("acme", "k3", "v")), "max_memory_keys")
			h.mustApply(putMemory("acme", "k1", "vvvvvvvvvvvvvvvvvv"))                                       // grows to 20 bytes: fits 40
			wantQuota(t, h.applyOne(putMemory("acme", "k2", "vvvvvvvvvvvvvvvvvvvvvvvvvvvvvv")), "max_bytes") // 32 more
			h.mustApply(deleteMemory("acme", "k2"))
			h.mustApply(putMemory("acme", "k3", "v"))
		}},
		{"over the quota: deletes and shrinking writes pass", func(t *testing.T, h *fsmHarness) {
			h.mustApply(putMemory("acme", "k", "0123456789012345678901234567890123")) // 35 bytes
			h.mustApply(quotaSettings(&cellv1.TenantQuota{MaxBytes: 10, MaxContexts: 1, MaxMemoryKeys: 1}))
			wantQuota(t, h.applyOne(appendText("acme", "c", "", "x")), "max_bytes")
			h.mustApply(putMemory("acme", "k", "0123")) // shrinks: passes over the quota
			h.mustApply(appendText("acme", "c", "", "x"))
			h.mustApply(deleteContext("acme", "c"))
			h.mustApply(deleteMemory("acme", "k"))
			h.mustApply(deleteTenant("acme"))
		}},
		{"a tenant's own quota overrides the cell's, field by field", func(t *testing.T, h *fsmHarness) {
			res := h.mustApply(ownerWithQuota("acme", 1, &cellv1.TenantQuota{MaxContexts: 3})) // same role and epoch: only the quota changes
			if res.GetTseq() == 0 || res.GetTenant().GetQuota().GetMaxContexts() != 3 {
				t.Fatalf("quota change %v, want a logged mutation reporting the quota", res)
			}
			h.mustApply(createContext("acme", "c2"))
			h.mustApply(createContext("acme", "c3"))
			wantQuota(t, h.applyOne(createContext("acme", "c4")), "max_contexts")
			wantQuota(t, h.applyOne(appendText("acme", "c", "", strings.Repeat("x", 40))), "max_bytes") // the cell's 40 still applies
			h.mustApply(setTenant("other", owner, 1))
			h.mustApply(createContext("other", "c1"))
			h.mustApply(createContext("other", "c2"))
			wantQuota(t, h.applyOne(createContext("other", "c3")), "max_contexts")
			// All fields 0: back to the cell's default.
			h.mustApply(ownerWithQuota("acme", 1, &cellv1.TenantQuota{}))
			if h.record("acme").GetQuota() != nil {
				t.Fatalf("quota %v, want none of its own", h.record("acme").GetQuota())
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newFSM(t)
			h.mustApply(quotaSettings(q))
			h.mustApply(setTenant("acme", owner, 1))
			h.mustApply(createContext("acme", "c"))
			tc.run(t, h)
			checkState(t, h.f)
			if len(h.fatal) > 0 {
				t.Fatalf("state machine stopped: %v", h.fatal)
			}
		})
	}
}

// TestFSMQuotaBatch (H4): in one Raft entry, a refused command writes
// nothing while the commands around it apply, and every replica decides
// alike (two state machines given the same entries end up identical).
func TestFSMQuotaBatch(t *testing.T) {
	var dumps [][]kv
	for range 2 {
		h := newFSM(t)
		h.mustApply(quotaSettings(&cellv1.TenantQuota{MaxBytes: 30}))
		h.mustApply(setTenant("acme", owner, 1))
		h.mustApply(createContext("acme", "c"))
		res := h.apply(
			appendText("acme", "c", "a", "0123456789"),             // 14
			appendText("acme", "c", "b", "0123456789", "01234567"), // 26 more: over 30
			putMemory("acme", "k", "0123456789"),                   // 11
		)
		if reasonOf(res[0]) != "" || reasonOf(res[2]) != "" {
			t.Fatalf("results %v, want the first and the last applied", res)
		}
		wantQuota(t, res[1], "max_bytes")
		if u := h.record("acme").GetUsage(); u.GetBytes() != 25 || u.GetEntries() != 1 || u.GetMemoryKeys() != 1 {
			t.Fatalf("usage %v, want 25 bytes, 1 entry, 1 key", u)
		}
		checkState(t, h.f)
		dumps = append(dumps, h.dump(true))
	}
	if d := diffDumps(dumps[0], dumps[1]); d != "" {
		t.Fatalf("replicas differ: %s", d)
	}
}

// TestFSMQuotaStandby (H4): a standby applies its source's events whatever
// its own quota (the owner enforced it; refusing would make the standby
// diverge), takes the source's per-tenant quota with them, and, promoted,
// enforces it on new writes while deletes pass.
func TestFSMQuotaStandby(t *testing.T) {
	src := newFSM(t) // no quota at the source cell
	src.mustApply(setTenant("acme", owner, 1))
	for _, id := range []string{"c1", "c2", "c3"} {
		src.mustApply(createContext("acme", id))
	}
	src.mustApply(ownerWithQuota("acme", 1, &cellv1.TenantQuota{MaxMemoryKeys: 1}))
	src.mustApply(putMemory("acme", "k", "v"))

	dst := newFSM(t)
	dst.mustApply(quotaSettings(&cellv1.TenantQuota{MaxContexts: 1}))
	dst.mustApply(standbyOf("acme", "src", 1, false))
	dst.mustApply(importChunk("acme", "src", true, nil, &cellv1.TenantRecord{}))
	var evs []*cellv1.ChangeEvent
	src.tenant("acme", func(v *TenantView) {
		var err error
		if evs, err = v.Changes(0, 100); err != nil {
			t.Fatal(err)
		}
	})
	if res := dst.mustApply(applyEvents("acme", evs)); res.GetTseq() != src.record("acme").GetTseq() {
		t.Fatalf("standby at tseq %d, source at %d", res.GetTseq(), src.record("acme").GetTseq())
	}
	rec := dst.record("acme")
	if !rec.GetBootstrapped() || rec.GetUsage().GetContexts() != 3 || rec.GetQuota().GetMaxMemoryKeys() != 1 {
		t.Fatalf("standby record %v, want all 3 contexts applied over its quota, and the source's quota", rec)
	}
	dst.mustApply(setTenant("acme", owner, 2))
	wantQuota(t, dst.applyOne(createContext("acme", "c4")), "max_contexts")
	wantQuota(t, dst.applyOne(putMemory("acme", "k2", "v")), "max_memory_keys")
	dst.mustApply(deleteContext("acme", "c1"))
	checkState(t, dst.f)
}

// TestProposeQuotaError: a client sees the quota refusal as a typed error.
func TestProposeQuotaError(t *testing.T) {
	s := openSingle(t, "", func(c *Config) { c.TenantQuota = TenantQuota{MaxContexts: 1} })
	setOwner(t, s, "acme", 1)
	waitFor(t, 10*time.Second, func() bool {
		return s.fsm.settings.Load().GetTenantQuota().GetMaxContexts() == 1
	})
	mustPropose(t, s, createContext("acme", "c1"))
	_, err := s.Propose(testCtx(t), createContext("acme", "c2"))
	var ce *cperr.Error
	if !errors.Is(err, cperr.ErrQuotaExceeded) || !errors.As(err, &ce) || ce.Metadata[cperr.MetaQuota] != "max_contexts" || ce.Metadata[cperr.MetaLimit] != "1" || ce.Metadata[cperr.MetaUsage] != "2" {
		t.Fatalf("err %v, want QUOTA_EXCEEDED max_contexts limit 1 usage 2", err)
	}
}
