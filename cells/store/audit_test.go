package store

import (
	"bytes"
	"testing"

	cellv1 "github.com/cellplane/cellplane/proto/cellplane/cell/v1"
	"google.golang.org/protobuf/proto"
)

// by stamps a command with the principal and origin the service sets.
func by(c *cellv1.Command, principal, origin string) *cellv1.Command {
	c.Principal, c.Origin = principal, origin
	return c
}

func labelled(tenant, id, principal string) *cellv1.Command {
	c := createContext(tenant, id)
	c.GetCreateContext().Labels = map[string]string{PrincipalLabel: principal}
	return c
}

func eraseCmd(tenant string, kind cellv1.EraseSubjectOp_Kind, subject string) *cellv1.Command {
	return &cellv1.Command{Tenant: tenant, Op: &cellv1.Command_EraseSubject{EraseSubject: &cellv1.EraseSubjectOp{
		Kind: kind, SubjectSha256: SubjectDigest(tenant, kind, subject)}}}
}

const (
	kindPrincipal = cellv1.EraseSubjectOp_KIND_PRINCIPAL
	kindContextID = cellv1.EraseSubjectOp_KIND_CONTEXT
)

// auditOf reads every audit record of a tenant from the harness.
func (h *fsmHarness) auditOf(tenant string) []*cellv1.AuditRecord {
	h.t.Helper()
	var out []*cellv1.AuditRecord
	h.tenant(tenant, func(v *TenantView) {
		recs, _, err := v.Audit(AuditQuery{Limit: 1 << 20})
		if err != nil {
			h.t.Fatal(err)
		}
		out = recs
	})
	return out
}

// TestAuditRecordPerMutation: every tenant mutation, whatever its op,
// writes one record at its tseq with the command's principal, origin,
// request id, time and target; rejections and reads write none.
func TestAuditRecordPerMutation(t *testing.T) {
	cases := []struct {
		name string
		cmd  *cellv1.Command
		want *cellv1.AuditRecord // tseq and time filled in by the test
	}{
		{"create", withReq(by(createContext("acme", "c2"), "alice", "grpc:/cellplane.context.v1.ContextService/CreateContext"), "r1"),
			&cellv1.AuditRecord{Principal: "alice", Origin: "grpc:/cellplane.context.v1.ContextService/CreateContext", RequestId: "r1", Op: "create_context", ContextId: "c2"}},
		{"append", by(appendText("acme", "c", "r2", "x"), "bob", "mcp:context_append"),
			&cellv1.AuditRecord{Principal: "bob", Origin: "mcp:context_append", RequestId: "r2", Op: "append", ContextId: "c"}},
		{"put memory", by(putMemory("acme", "k", "v"), "alice", "mcp:memory_put"),
			&cellv1.AuditRecord{Principal: "alice", Origin: "mcp:memory_put", Op: "put_memory", MemoryKey: "k"}},
		{"delete memory", by(scoped(deleteMemory("acme", "k0"), tenantScope), "alice", "grpc:x"),
			&cellv1.AuditRecord{Principal: "alice", Origin: "grpc:x", Op: "delete_memory", MemoryKey: "k0"}},
		{"delete context", by(deleteContext("acme", "c"), "carol", "grpc:y"),
			&cellv1.AuditRecord{Principal: "carol", Origin: "grpc:y", Op: "delete_context", ContextId: "c"}},
		{"fence", setTenant("acme", fenced, 2), &cellv1.AuditRecord{Op: "set_tenant"}},
		{"erase", by(eraseCmd("acme", kindContextID, "nothing"), "admin", "controlplane"),
			&cellv1.AuditRecord{Principal: "admin", Origin: "controlplane", Op: "erase_subject", EraseKind: kindContextID,
				EraseSubjectSha256: SubjectDigest("acme", kindContextID, "nothing"), Erased: &cellv1.EraseSubjectResult{}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := newFSM(t)
			h.mustApply(ownedBy("acme"))
			h.mustApply(createContext("acme", "c"))
			h.mustApply(putMemory("acme", "k0", "v"))
			before := len(h.auditOf("acme"))
			res := h.mustApply(tc.cmd)
			h.applyOne(deleteContext("acme", "nope")) // rejected (missing, or fenced): no record
			recs := h.auditOf("acme")
			if len(recs) != before+1 {
				t.Fatalf("%d records after one mutation, want %d", len(recs), before+1)
			}
			tc.want.Tseq, tc.want.TimeUnixNano = res.GetTseq(), tc.cmd.GetTimeUnixNano()
			if got := recs[len(recs)-1]; !proto.Equal(tc.want, got) {
				t.Errorf("record %v, want %v", got, tc.want)
			}
			checkState(t, h.f)
			// A restart keeps the mutation and its record; replaying the
			// same log on an empty state writes the same bytes.
			dump := h.dump(false)
			h.reopen()
			if d := diffDumps(dump, h.dump(false)); d != "" {
				t.Errorf("after restart: %s", d)
			}
		})
	}
}

// TestAuditSameBatchReplay: a state that lost its last applied entries
// (a crash before Pebble synced) replays them from the Raft log and ends
// with each mutation and its record together, identical to a state that
// never crashed.
func TestAuditSameBatchReplay(t *testing.T) {
	h := newFSM(t)
	var logs [][]*cellv1.Command
	logs = append(logs, []*cellv1.Command{ownedBy("acme")}, []*cellv1.Command{by(createContext("acme", "c"), "a", "o")})
	for range 5 {
		logs = append(logs, []*cellv1.Command{by(appendText("acme", "c", "", "x"), "a", "o"), by(putMemory("acme", "k", "v"), "b", "o")})
	}
	var entries []*cellv1.CommandBatch
	for _, l := range logs {
		h.apply(l...)
		entries = append(entries, &cellv1.CommandBatch{Commands: l})
	}
	want := h.dump(false)

	// A second state applies a prefix, "crashes" (reopen), and replays the
	// rest: at every point, every tseq has its event and its record.
	r := newFSM(t)
	for i, b := range entries {
		cmds := make([]*cellv1.Command, len(b.GetCommands()))
		for j, c := range b.GetCommands() {
			cmds[j] = proto.Clone(c).(*cellv1.Command) // stamped already: same time
		}
		r.apply(cmds...)
		if i == 3 {
			r.reopen()
		}
		checkState(t, r.f)
	}
	if d := diffDumps(want, r.dump(false)); d != "" {
		t.Fatalf("replayed state differs: %s", d)
	}
}

// TestAuditTrimmed: the audit log stays within its count and age bounds
// (in chunks), contiguous and ending at the tenant's tseq.
func TestAuditTrimmed(t *testing.T) {
	for _, tc := range []struct {
		name     string
		settings *cellv1.CellSettings
		most     int
	}{
		{"count", &cellv1.CellSettings{DedupWindow: 100, AuditMaxRecords: 32}, 32 + 2},
		{"age", &cellv1.CellSettings{DedupWindow: 100, AuditRetentionNanos: 50e6}, 50 + 50/16 + 2}, // a command per ms
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newFSM(t)
			h.mustApply(&cellv1.Command{Op: &cellv1.Command_CellSettings{CellSettings: tc.settings}})
			h.mustApply(ownedBy("acme"))
			h.mustApply(createContext("acme", "c"))
			for i := range 300 {
				h.mustApply(appendText("acme", "c", "", "x"))
				if n := int(h.record("acme").GetAuditCount()); n > tc.most {
					t.Fatalf("after %d appends: %d audit records, at most %d wanted", i+1, n, tc.most)
				}
			}
			checkState(t, h.f)
			if recs := h.auditOf("acme"); len(recs) < 16 || recs[len(recs)-1].GetTseq() != h.record("acme").GetTseq() {
				t.Fatalf("%d records kept, last %v", len(recs), recs[len(recs)-1])
			}
		})
	}
}

// TestAuditTravelsToStandbyAndMove: a standby bootstrapped from an export
// (a move's target does the same) and fed the change stream holds its
// source's audit records, byte for byte, with the source's tseq and time.
func TestAuditTravelsToStandbyAndMove(t *testing.T) {
	src, dst := openSingle(t, ""), openSingle(t, "")
	setOwner(t, src, "acme", 1)
	mustPropose(t, src, by(createContext("acme", "c"), "alice", "grpc:a"))
	for range 4 {
		mustPropose(t, src, by(appendText("acme", "c", "", "before"), "alice", "mcp:context_append"))
	}
	mustPropose(t, dst, standbyOf("acme", "src", 1, false))
	rec := bootstrap(t, src, dst, "acme") // the export: what a move imports
	mustPropose(t, src, by(putMemory("acme", "k", "v"), "bob", "mcp:memory_put"))
	mustPropose(t, src, by(appendText("acme", "c", "r9", "after"), "alice", "grpc:b"))
	mustPropose(t, dst, applyEvents("acme", changesAfter(t, src, "acme", rec.GetTseq())))

	list := func(s *Store) []*cellv1.AuditRecord {
		var out []*cellv1.AuditRecord
		if err := s.ReadReplica("acme", func(v *TenantView) error {
			var err error
			out, _, err = v.Audit(AuditQuery{Limit: 100})
			return err
		}); err != nil {
			t.Fatal(err)
		}
		return out
	}
	a, b := list(src), list(dst)
	if len(a) != 8 || a[7].GetPrincipal() != "alice" || a[7].GetRequestId() != "r9" || a[6].GetMemoryKey() != "k" || a[0].GetOp() != "set_tenant" {
		t.Fatalf("source records %v", a)
	}
	if len(a) != len(b) {
		t.Fatalf("standby has %d records, source %d", len(b), len(a))
	}
	for i := range a {
		if !proto.Equal(a[i], b[i]) {
			t.Fatalf("standby record %v, source's %v", b[i], a[i])
		}
	}
	if s, d := mustRecord(t, src, "acme"), mustRecord(t, dst, "acme"); s.GetAuditFirstTseq() != d.GetAuditFirstTseq() || s.GetAuditCount() != d.GetAuditCount() {
		t.Fatalf("audit bookkeeping: source %d+%d, standby %d+%d", s.GetAuditFirstTseq(), s.GetAuditCount(), d.GetAuditFirstTseq(), d.GetAuditCount())
	}
	// Filters.
	if err := src.ReadReplica("acme", func(v *TenantView) error {
		recs, _, err := v.Audit(AuditQuery{Limit: 100, Principal: "bob"})
		if len(recs) != 1 || recs[0].GetOp() != "put_memory" {
			t.Errorf("bob's records = %v", recs)
		}
		recs, next, err2 := v.Audit(AuditQuery{Limit: 2})
		if len(recs) != 2 || next != recs[1].GetTseq() {
			t.Errorf("page of 2: %v next %d", recs, next)
		}
		recs, _, _ = v.Audit(AuditQuery{Limit: 100, SinceUnixNano: a[6].GetTimeUnixNano()})
		if len(recs) != 2 {
			t.Errorf("since the memory put: %d records", len(recs))
		}
		if err == nil {
			err = err2
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
}

// tenantRangeHolds reports whether any key or value of the tenant's data
// range contains s.
func tenantRangeHolds(t *testing.T, f *fsm, tenant, s string) []string {
	t.Helper()
	var where []string
	for _, e := range dumpRange(t, f, tenantPrefix(tenant), tenantEnd(tenant), false) {
		if bytes.Contains([]byte(e.k), []byte(s)) || bytes.Contains([]byte(e.v), []byte(s)) {
			where = append(where, e.k)
		}
	}
	return where
}

// eraseFixture writes alice's and bob's data to acme on s: alice owns
// context "ctx-a" (labelled), wrote memory "mem-a", appended to bob's
// context with request ids; bob owns "ctx-b" and "mem-b". A plain delete
// of alice's second context "ctx-gone" leaves its events in the log.
func eraseFixture(t *testing.T, s *Store) {
	t.Helper()
	mustPropose(t, s, by(labelled("acme", "ctx-a", "alice"), "alice", "mcp:context_create"))
	mustPropose(t, s, by(labelled("acme", "ctx-b", "bob"), "bob", "mcp:context_create"))
	mustPropose(t, s, by(labelled("acme", "ctx-gone", "alice"), "alice", "mcp:context_create"))
	mustPropose(t, s, by(appendText("acme", "ctx-gone", "q1", "SECRET-GONE"), "alice", "mcp:context_append"))
	mustPropose(t, s, by(deleteContext("acme", "ctx-gone"), "alice", "mcp:context_delete"))
	mustPropose(t, s, by(appendText("acme", "ctx-a", "q2", "SECRET-A"), "alice", "mcp:context_append"))
	mustPropose(t, s, by(appendText("acme", "ctx-b", "q3", "bob-text"), "bob", "mcp:context_append"))
	mustPropose(t, s, by(putMemory("acme", "mem-a", "SECRET-MEM"), "alice", "mcp:memory_put"))
	mustPropose(t, s, by(putMemory("acme", "mem-b", "bob-mem"), "bob", "mcp:memory_put"))
}

// TestEraseSubject: an erase by principal or by context removes the data,
// the change-log events, the dedup records and the audit content, on the
// owner and on a standby that follows it (in sync, or lagging behind the
// erased writes); a retried erase is answered from its dedup record and
// a repeated one finds nothing more.
func TestEraseSubject(t *testing.T) {
	for _, tc := range []struct {
		name     string
		erase    *cellv1.Command
		gone     []string // strings nowhere in the tenant range afterwards
		kept     []string // strings still there
		contexts uint64
		keys     uint64
	}{
		{name: "principal", erase: eraseCmd("acme", kindPrincipal, "alice"),
			gone: []string{"alice", "SECRET-A", "SECRET-GONE", "SECRET-MEM", "ctx-a", "ctx-gone", "mem-a"},
			kept: []string{"bob", "bob-text", "bob-mem", "ctx-b", "mem-b"}, contexts: 1, keys: 1},
		{name: "context", erase: eraseCmd("acme", kindContextID, "ctx-gone"),
			gone: []string{"ctx-gone", "SECRET-GONE"},
			kept: []string{"alice", "SECRET-A", "SECRET-MEM", "bob-text"}},
	} {
		for _, lag := range []bool{false, true} {
			name := tc.name + "/in sync"
			if lag {
				name = tc.name + "/lagging standby"
			}
			t.Run(name, func(t *testing.T) {
				src, dst := openSingle(t, ""), openSingle(t, "")
				setOwner(t, src, "acme", 1)
				mustPropose(t, src, by(putMemory("acme", "pad", "p"), "bob", "x")) // the export needs a few keys
				mustPropose(t, src, by(putMemory("acme", "pad2", "p"), "bob", "x"))
				mustPropose(t, dst, standbyOf("acme", "src", 1, false))
				if !lag {
					eraseFixture(t, src)
				}
				rec := bootstrap(t, src, dst, "acme")
				if lag {
					eraseFixture(t, src)
				}
				for _, s := range tc.kept[:1] {
					if len(tenantRangeHolds(t, src.fsm, "acme", s)) == 0 {
						t.Fatalf("fixture: %q not stored", s)
					}
				}

				erase := proto.Clone(tc.erase).(*cellv1.Command)
				erase.RequestId, erase.Principal, erase.Origin = "erase-1", "operator", "controlplane:EraseSubject"
				res := mustPropose(t, src, erase)
				if res.GetError() != nil {
					t.Fatalf("erase: %v", res)
				}
				got := res.GetEraseSubject()
				if got.GetContextsDeleted() != tc.contexts || got.GetMemoryKeysDeleted() != tc.keys || got.GetEventsScrubbed() == 0 ||
					got.GetDedupRecordsScrubbed() == 0 || got.GetAuditRecordsRedacted() == 0 {
					t.Errorf("erase result %v, want %d contexts, %d keys and something scrubbed", got, tc.contexts, tc.keys)
				}
				mustPropose(t, dst, applyEvents("acme", changesAfter(t, src, "acme", rec.GetTseq())))
				if d := mustRecord(t, dst, "acme"); d.GetTseq() != res.GetTseq() || !d.GetBootstrapped() {
					t.Fatalf("standby at tseq %d (bootstrapped %v), erase at %d", d.GetTseq(), d.GetBootstrapped(), res.GetTseq())
				}
				for name, s := range map[string]*Store{"owner": src, "standby": dst} {
					for _, g := range tc.gone {
						if where := tenantRangeHolds(t, s.fsm, "acme", g); len(where) > 0 {
							t.Errorf("%s still holds %q at %q", name, g, where)
						}
					}
					for _, k := range tc.kept {
						if len(tenantRangeHolds(t, s.fsm, "acme", k)) == 0 {
							t.Errorf("%s lost %q", name, k)
						}
					}
					checkState(t, s.fsm)
				}
				if !lag {
					if d := diffDumps(dumpRange(t, src.fsm, tenantPrefix("acme"), tenantEnd("acme"), false),
						dumpRange(t, dst.fsm, tenantPrefix("acme"), tenantEnd("acme"), false)); d != "" {
						t.Errorf("standby differs from its source: %s", d)
					}
				}
				// The erase's audit record says an erase happened, and what.
				var last *cellv1.AuditRecord
				if err := src.ReadReplica("acme", func(v *TenantView) error {
					recs, _, err := v.Audit(AuditQuery{Limit: 1000})
					last = recs[len(recs)-1]
					return err
				}); err != nil {
					t.Fatal(err)
				}
				if last.GetOp() != "erase_subject" || last.GetPrincipal() != "operator" || !proto.Equal(last.GetErased(), got) {
					t.Errorf("erase's audit record %v", last)
				}

				// Retried: the first answer. Repeated: nothing more.
				retry := mustPropose(t, src, proto.Clone(erase).(*cellv1.Command))
				if !retry.GetDeduplicated() || !proto.Equal(retry.GetEraseSubject(), got) || retry.GetTseq() != res.GetTseq() {
					t.Errorf("retried erase = %v, want the first result", retry)
				}
				again := proto.Clone(tc.erase).(*cellv1.Command)
				res2 := mustPropose(t, src, again)
				if e := res2.GetEraseSubject(); e.GetContextsDeleted()+e.GetMemoryKeysDeleted()+e.GetEventsScrubbed()+e.GetDedupRecordsScrubbed()+e.GetAuditRecordsRedacted() != 0 {
					t.Errorf("second erase erased %v", e)
				}
				checkState(t, src.fsm)
			})
		}
	}
}

// TestEraseRejectsBadOps: an erase with no kind or a malformed digest is
// rejected and writes nothing; a placeholder applies nothing on an owner.
func TestEraseRejectsBadOps(t *testing.T) {
	h := newFSM(t)
	h.mustApply(ownedBy("acme"))
	h.mustApply(createContext("acme", "c"))
	before := h.dump(false)
	for _, op := range []*cellv1.EraseSubjectOp{
		{Kind: kindPrincipal, SubjectSha256: []byte("short")},
		{SubjectSha256: SubjectDigest("acme", kindPrincipal, "x")},
		{ErasedOp: "append", ErasedAtTseq: 3},
	} {
		res := h.applyOne(&cellv1.Command{Tenant: "acme", Op: &cellv1.Command_EraseSubject{EraseSubject: op}})
		if op.GetErasedOp() == "" && res.GetError() == nil {
			t.Errorf("%v applied: %v", op, res)
		}
		if res.GetTseq() != 0 {
			t.Errorf("%v got tseq %d", op, res.GetTseq())
		}
	}
	if d := diffDumps(before, h.dump(false)); d != "" {
		t.Errorf("rejected erases wrote: %s", d)
	}
}
