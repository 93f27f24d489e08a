package store

import (
	"slices"
	"testing"

	"github.com/cellplane/cellplane/internal/cperr"
	cellv1 "github.com/cellplane/cellplane/proto/cellplane/cell/v1"
	contextv1 "github.com/cellplane/cellplane/proto/cellplane/context/v1"
)

// as stamps c with the principal it was made for (what the cell service
// does from the router's or the MCP worker's metadata).
func as(principal string, c *cellv1.Command) *cellv1.Command { c.Principal = principal; return c }

func scoped(c *cellv1.Command, s contextv1.MemoryScope) *cellv1.Command {
	switch {
	case c.GetPutMemory() != nil:
		c.GetPutMemory().Scope = s
	case c.GetDeleteMemory() != nil:
		c.GetDeleteMemory().Scope = s
	}
	return c
}

const tenantScope = contextv1.MemoryScope_MEMORY_SCOPE_TENANT

// memoryOf reads key from principal's memory ("": the tenant's); "" when
// absent.
func memoryOf(t *testing.T, h *fsmHarness, principal, key string) string {
	t.Helper()
	var out string
	h.tenant("acme", func(v *TenantView) {
		m, err := v.MemoryOf(principal, key)
		if err != nil && cperr.ReasonOf(err) != cperr.KeyNotFound {
			t.Fatalf("memory %s/%s: %v", principal, key, err)
		}
		out = string(m.GetValue())
	})
	return out
}

func owned(t *testing.T, h *fsmHarness, principal string) []string {
	t.Helper()
	var ids []string
	h.tenant("acme", func(v *TenantView) {
		cs, _, err := v.ListOwnedContexts(principal, "", 100)
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range cs {
			ids = append(ids, c.GetContextId())
		}
	})
	return ids
}

// TestFSMMemoryScopes: memory is the principal's own by default, the
// tenant's with scope TENANT (or without a principal); one principal's
// writes, deletes and compare-and-sets never reach another's key of the
// same name; memory written before principals existed is the tenant
// scope's.
func TestFSMMemoryScopes(t *testing.T) {
	h := newFSM(t)
	h.mustApply(ownedBy("acme"))
	h.mustApply(putMemory("acme", "k", "legacy")) // no principal: tenant scope (pre-principal data)
	h.mustApply(as("key:alice", putMemory("acme", "k", "alice's")))
	h.mustApply(as("jwt:bob", putMemory("acme", "k", "bob's")))
	h.mustApply(as("key:alice", scoped(putMemory("acme", "shared", "team"), tenantScope)))

	for _, tc := range []struct{ principal, key, want string }{
		{"", "k", "legacy"}, {"key:alice", "k", "alice's"}, {"jwt:bob", "k", "bob's"},
		{"", "shared", "team"}, {"key:alice", "shared", ""}, {"key:al", "k", ""},
	} {
		if got := memoryOf(t, h, tc.principal, tc.key); got != tc.want {
			t.Errorf("memory of %q, key %q = %q, want %q", tc.principal, tc.key, got, tc.want)
		}
	}
	// Bob's compare-and-set sees his own revision, not alice's.
	var aliceRev uint64
	h.tenant("acme", func(v *TenantView) { m, _ := v.MemoryOf("key:alice", "k"); aliceRev = m.GetRevision() })
	if r := h.applyOne(as("jwt:bob", putMemory("acme", "k", "x", aliceRev))); reasonOf(r) != string(cperr.RevisionMismatch) {
		t.Errorf("bob's CAS at alice's revision: %v, want REVISION_MISMATCH", r)
	}
	// Bob deletes his key: alice's and the tenant's stay.
	h.mustApply(as("jwt:bob", deleteMemory("acme", "k")))
	if r := h.applyOne(as("jwt:bob", deleteMemory("acme", "k"))); reasonOf(r) != string(cperr.KeyNotFound) {
		t.Errorf("bob deletes twice: %v", r)
	}
	if memoryOf(t, h, "key:alice", "k") != "alice's" || memoryOf(t, h, "", "k") != "legacy" {
		t.Error("bob's delete reached another scope")
	}
	// Listing is per scope.
	h.tenant("acme", func(v *TenantView) {
		items, _, err := v.ListMemoryOf("key:alice", "", "", 10, true)
		if err != nil || len(items) != 1 || items[0].GetKey() != "k" {
			t.Errorf("alice's list = %v, %v", items, err)
		}
		items, _, _ = v.ListMemory("", "", 10, true)
		if len(items) != 2 {
			t.Errorf("tenant list = %v, want k and shared", items)
		}
		if u := v.Info().GetUsage(); u.GetMemoryKeys() != 3 {
			t.Errorf("usage %v, want 3 keys (tenant k, shared, alice's k)", u)
		}
	})
	checkState(t, h.f)
	before := h.dump(true)
	h.reopen()
	if d := diffDumps(before, h.dump(true)); d != "" {
		t.Errorf("reopen changed the state: %s", d)
	}
}

// TestFSMContextOwnerIndex: a context created for a principal carries it
// in the reserved label (a client's own value replaced) and is in the
// principal's index until deleted.
func TestFSMContextOwnerIndex(t *testing.T) {
	h := newFSM(t)
	h.mustApply(ownedBy("acme"))
	spoof := createContext("acme", "b1")
	spoof.GetCreateContext().Labels = map[string]string{PrincipalLabel: "key:alice", "app": "x"}
	for _, c := range []*cellv1.Command{
		as("key:alice", createContext("acme", "a2")),
		as("key:alice", createContext("acme", "a1")),
		as("jwt:bob", spoof),
		createContext("acme", "anon"),
	} {
		h.mustApply(c)
	}
	if got := owned(t, h, "key:alice"); !slices.Equal(got, []string{"a1", "a2"}) {
		t.Errorf("alice owns %v", got)
	}
	if got := owned(t, h, "jwt:bob"); !slices.Equal(got, []string{"b1"}) {
		t.Errorf("bob owns %v", got)
	}
	h.tenant("acme", func(v *TenantView) {
		c, _ := v.Context("b1")
		if c.GetLabels()[PrincipalLabel] != "jwt:bob" || c.GetLabels()["app"] != "x" {
			t.Errorf("b1 labels %v: the creator must replace a client's owner label", c.GetLabels())
		}
		cs, more, _ := v.ListOwnedContexts("key:alice", "a1", 1)
		if len(cs) != 1 || cs[0].GetContextId() != "a2" || more {
			t.Errorf("page after a1 = %v, more %v", cs, more)
		}
	})
	h.mustApply(as("jwt:bob", deleteContext("acme", "a1")))
	if got := owned(t, h, "key:alice"); !slices.Equal(got, []string{"a2"}) {
		t.Errorf("after delete alice owns %v", got)
	}
	checkState(t, h.f)
}

// TestPrincipalsMoveAndStandby: principal memory and the owner index
// reach a standby both through an export (a move, a bootstrap) and
// through the change stream, byte for byte.
func TestPrincipalsMoveAndStandby(t *testing.T) {
	src, dst := openSingle(t, ""), openSingle(t, "")
	setOwner(t, src, "acme", 1)
	mustPropose(t, src, as("key:alice", createContext("acme", "a")))
	for _, k := range []string{"k1", "k2", "k3", "k4"} {
		mustPropose(t, src, as("key:alice", putMemory("acme", k, "alice")))
		mustPropose(t, src, as("jwt:bob", putMemory("acme", k, "bob")))
	}
	mustPropose(t, dst, standbyOf("acme", "src", 1, false))
	rec := bootstrap(t, src, dst, "acme")

	mustPropose(t, src, as("jwt:bob", createContext("acme", "b")))
	mustPropose(t, src, as("jwt:bob", deleteMemory("acme", "k1")))
	mustPropose(t, src, as("key:alice", scoped(putMemory("acme", "t", "shared"), tenantScope)))
	mustPropose(t, dst, applyEvents("acme", changesAfter(t, src, "acme", rec.GetTseq())))
	if d := diffDumps(dumpRange(t, src.fsm, tenantPrefix("acme"), tenantEnd("acme"), false),
		dumpRange(t, dst.fsm, tenantPrefix("acme"), tenantEnd("acme"), false)); d != "" {
		t.Fatalf("standby differs from its source: %s", d)
	}
	if err := dst.ReadReplica("acme", func(v *TenantView) error {
		if m, err := v.MemoryOf("jwt:bob", "k2"); err != nil || string(m.GetValue()) != "bob" {
			t.Errorf("bob's k2 on the standby: %v, %v", m, err)
		}
		if _, err := v.MemoryOf("jwt:bob", "k1"); cperr.ReasonOf(err) != cperr.KeyNotFound {
			t.Errorf("bob's deleted k1 on the standby: %v", err)
		}
		cs, _, err := v.ListOwnedContexts("jwt:bob", "", 10)
		if err != nil || len(cs) != 1 || cs[0].GetContextId() != "b" {
			t.Errorf("bob's contexts on the standby: %v, %v", cs, err)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}
