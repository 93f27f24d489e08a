package store

import (
	"errors"
	"fmt"
	"maps"
	"strconv"
	"testing"
	"time"

	"github.com/cellplane/cellplane/internal/cperr"
	cellv1 "github.com/cellplane/cellplane/proto/cellplane/cell/v1"
	contextv1 "github.com/cellplane/cellplane/proto/cellplane/context/v1"
	"github.com/cockroachdb/pebble/v2"
	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

const (
	owner   = cellv1.Role_ROLE_OWNER
	standby = cellv1.Role_ROLE_STANDBY
	fenced  = cellv1.Role_ROLE_FENCED
)

// ownedBy returns the setup that makes tenant OWNER at epoch 1 (tseq 1).
func ownedBy(tenant string) *cellv1.Command { return setTenant(tenant, owner, 1) }

// cmds is shorthand for a setup list.
func cmds(c ...*cellv1.Command) []*cellv1.Command { return c }

// opCase is one command applied after a setup. A case with a reason must
// be rejected with exactly that reason and metadata and write nothing; a
// case without one must succeed and is checked by check.
type opCase struct {
	name   string
	setup  []*cellv1.Command
	cmd    *cellv1.Command
	reason cperr.Reason
	meta   map[string]string
	check  func(t *testing.T, h *fsmHarness, res *cellv1.CommandResult)
}

func runOpCases(t *testing.T, cases []opCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := newFSM(t)
			for _, c := range tc.setup {
				h.mustApply(c)
			}
			before := h.dump(false)
			tenant := tc.cmd.GetTenant()
			tseqBefore := h.record(tenant).GetTseq()
			res := h.applyOne(tc.cmd)
			if tc.reason != "" {
				if got := reasonOf(res); got != string(tc.reason) {
					t.Fatalf("reason = %q (%s), want %s", got, res.GetError().GetMessage(), tc.reason)
				}
				if got := res.GetError().GetMetadata(); !maps.Equal(got, tc.meta) {
					t.Errorf("metadata = %v, want %v", got, tc.meta)
				}
				if res.GetError().GetMessage() == "" {
					t.Errorf("rejection without a message")
				}
				if res.GetTseq() != 0 || res.GetResult() != nil || res.GetDeduplicated() {
					t.Errorf("rejected result carries data: %v", res)
				}
				if d := diffDumps(before, h.dump(false)); d != "" {
					t.Errorf("rejected command wrote: %s", d)
				}
			} else {
				if e := res.GetError(); e != nil {
					t.Fatalf("rejected: %s %s %v", e.GetReason(), e.GetMessage(), e.GetMetadata())
				}
				if tc.check != nil {
					tc.check(t, h, res)
				}
			}
			if tc.reason != "" && h.record(tenant).GetTseq() != tseqBefore {
				t.Errorf("tseq moved from %d to %d on a rejection", tseqBefore, h.record(tenant).GetTseq())
			}
			checkState(t, h.f)
		})
	}
}

// wantTseq checks a mutation got the tseq after the setup's and that the
// change log's newest event is this command.
func wantTseq(t *testing.T, h *fsmHarness, res *cellv1.CommandResult, cmd *cellv1.Command, want uint64) {
	t.Helper()
	if res.GetTseq() != want {
		t.Errorf("result tseq = %d, want %d", res.GetTseq(), want)
	}
	rec := h.record(cmd.GetTenant())
	if rec.GetTseq() != want {
		t.Errorf("record tseq = %d, want %d", rec.GetTseq(), want)
	}
	h.tenant(cmd.GetTenant(), func(v *TenantView) {
		evs, err := v.Changes(want-1, 10)
		if err != nil || len(evs) != 1 {
			t.Fatalf("Changes(%d) = %v, %v", want-1, evs, err)
		}
		if !proto.Equal(evs[0].GetCommand(), cmd) || evs[0].GetTseq() != want || evs[0].GetTimeUnixNano() != cmd.GetTimeUnixNano() {
			t.Errorf("change event = %v, want command %v at tseq %d", evs[0], cmd, want)
		}
		if !proto.Equal(evs[0].GetResult(), res) {
			t.Errorf("change event result = %v, want %v", evs[0].GetResult(), res)
		}
	})
}

func ts(nanos int64) time.Time { return time.Unix(0, nanos) }

func TestFSMContexts(t *testing.T) {
	labelled := createContext("acme", "c1")
	labelled.GetCreateContext().Labels = map[string]string{"k": "v"}
	del := deleteContext("acme", "c1")
	runOpCases(t, []opCase{
		{
			name: "create", setup: cmds(ownedBy("acme")), cmd: labelled,
			check: func(t *testing.T, h *fsmHarness, res *cellv1.CommandResult) {
				c := res.GetContext()
				if c.GetContextId() != "c1" || c.GetLabels()["k"] != "v" || !c.GetCreateTime().AsTime().Equal(ts(labelled.GetTimeUnixNano())) ||
					!c.GetUpdateTime().AsTime().Equal(ts(labelled.GetTimeUnixNano())) || c.GetLastSeq() != 0 {
					t.Errorf("result context = %v", c)
				}
				h.tenant("acme", func(v *TenantView) {
					got, err := v.Context("c1")
					if err != nil || !proto.Equal(got, c) {
						t.Errorf("stored context = %v, %v; want %v", got, err, c)
					}
					if u := v.Info().GetUsage(); u.GetContexts() != 1 {
						t.Errorf("usage = %v", u)
					}
				})
				wantTseq(t, h, res, labelled, 2)
			},
		},
		{name: "create taken id", setup: cmds(ownedBy("acme"), createContext("acme", "c1")), cmd: createContext("acme", "c1"), reason: cperr.AlreadyExists},
		{name: "create without id", setup: cmds(ownedBy("acme")), cmd: createContext("acme", ""), reason: cperr.InvalidArgument},
		{name: "create without tenant", setup: cmds(ownedBy("acme")), cmd: createContext("", "c1"), reason: cperr.InvalidArgument},
		{name: "delete missing", setup: cmds(ownedBy("acme"), createContext("acme", "c2")), cmd: deleteContext("acme", "c1"), reason: cperr.ContextNotFound},
		{
			name: "delete",
			setup: cmds(ownedBy("acme"), createContext("acme", "c1"), createContext("acme", "c1.x"), createContext("acme", "c"),
				appendText("acme", "c1", "", "one", "two"), appendText("acme", "c1.x", "", "other"), appendText("acme", "c", "", "third"),
				putMemory("acme", "m", "vv")),
			cmd: del,
			check: func(t *testing.T, h *fsmHarness, res *cellv1.CommandResult) {
				if res.GetResult() != nil {
					t.Errorf("result = %v", res)
				}
				p := entryPrefix("acme", "c1")
				if left := dumpRange(t, h.f, p, prefixEnd(p), false); len(left) != 0 {
					t.Errorf("%d entries left", len(left))
				}
				h.tenant("acme", func(v *TenantView) {
					if _, err := v.Context("c1"); !errors.Is(err, cperr.ErrContextNotFound) {
						t.Errorf("Context(c1) err = %v", err)
					}
					if _, err := v.Entries("c1", 0, 10, 1<<20); !errors.Is(err, cperr.ErrContextNotFound) {
						t.Errorf("Entries(c1) err = %v", err)
					}
					// Contexts whose ids extend or precede c1 keep their entries.
					for id, want := range map[string]string{"c1.x": "other", "c": "third"} {
						es, err := v.Entries(id, 0, 10, 1<<20)
						if err != nil || len(es) != 1 || es[0].GetText() != want {
							t.Errorf("Entries(%s) = %v, %v", id, es, err)
						}
					}
					u := v.Info().GetUsage()
					wantBytes := uint64(len("user")*2+len("other")+len("third")) + uint64(len("m")+len("vv"))
					if u.GetContexts() != 2 || u.GetEntries() != 2 || u.GetBytes() != wantBytes || u.GetMemoryKeys() != 1 {
						t.Errorf("usage = %v, want 2 contexts, 2 entries, %d bytes", u, wantBytes)
					}
				})
				wantTseq(t, h, res, del, 9)
			},
		},
	})
}

func TestFSMAppend(t *testing.T) {
	base := cmds(ownedBy("acme"), createContext("acme", "c1"))
	two := append(cmds(), append(base, appendText("acme", "c1", "", "a", "b"))...)

	rich := &cellv1.Command{Tenant: "acme", Op: &cellv1.Command_Append{Append: &contextv1.AppendRequest{ContextId: "c1", Entries: []*contextv1.Entry{
		{Role: "user", Content: &contextv1.Entry_Text{Text: "hello"}, Metadata: map[string]string{"lang": "en"}, Seq: 99},
		{Role: "tool", Content: &contextv1.Entry_Data{Data: []byte{0, 1, 2}}},
		{Role: "system"},
	}}}}
	runOpCases(t, []opCase{
		{name: "missing context", setup: base, cmd: appendText("acme", "nope", "", "x"), reason: cperr.ContextNotFound},
		{name: "no entries", setup: base, cmd: appendText("acme", "c1", ""), reason: cperr.InvalidArgument},
		{name: "expected_seq behind", setup: two, cmd: appendExpect("acme", "c1", 1, "x"), reason: cperr.SequenceMismatch, meta: map[string]string{cperr.MetaLastSeq: "2"}},
		{name: "expected_seq ahead", setup: two, cmd: appendExpect("acme", "c1", 3, "x"), reason: cperr.SequenceMismatch, meta: map[string]string{cperr.MetaLastSeq: "2"}},
		{name: "expected_seq 0 on a non-empty context", setup: two, cmd: appendExpect("acme", "c1", 0, "x"), reason: cperr.SequenceMismatch, meta: map[string]string{cperr.MetaLastSeq: "2"}},
		{
			name: "expected_seq 0 on an empty context", setup: base, cmd: appendExpect("acme", "c1", 0, "x"),
			check: func(t *testing.T, h *fsmHarness, res *cellv1.CommandResult) {
				if a := res.GetAppend(); a.GetFirstSeq() != 1 || a.GetLastSeq() != 1 {
					t.Errorf("append = %v", a)
				}
			},
		},
		{
			name: "expected_seq matches", setup: two, cmd: appendExpect("acme", "c1", 2, "x", "y"),
			check: func(t *testing.T, h *fsmHarness, res *cellv1.CommandResult) {
				if a := res.GetAppend(); a.GetFirstSeq() != 3 || a.GetLastSeq() != 4 {
					t.Errorf("append = %v", a)
				}
			},
		},
		{
			name: "entries, seqs and accounting", setup: two, cmd: rich,
			check: func(t *testing.T, h *fsmHarness, res *cellv1.CommandResult) {
				if a := res.GetAppend(); a.GetFirstSeq() != 3 || a.GetLastSeq() != 5 {
					t.Errorf("append = %v", a)
				}
				at := ts(rich.GetTimeUnixNano())
				h.tenant("acme", func(v *TenantView) {
					es, err := v.Entries("c1", 3, 10, 1<<20)
					if err != nil || len(es) != 3 {
						t.Fatalf("entries = %v, %v", es, err)
					}
					for i, e := range es {
						if e.GetSeq() != uint64(3+i) || !e.GetCreateTime().AsTime().Equal(at) || e.GetRole() != rich.GetAppend().GetEntries()[i].GetRole() {
							t.Errorf("entry %d = %v", i, e)
						}
					}
					if es[0].GetText() != "hello" || es[0].GetMetadata()["lang"] != "en" || string(es[1].GetData()) != "\x00\x01\x02" || es[2].GetContent() != nil {
						t.Errorf("contents = %v", es)
					}
					size := EntrySize(rich.GetAppend().GetEntries()[0]) + EntrySize(rich.GetAppend().GetEntries()[1]) + EntrySize(rich.GetAppend().GetEntries()[2])
					if size != uint64(len("user")+5+len("lang")+len("en")+len("tool")+3+len("system")) {
						t.Errorf("EntrySize sum = %d", size)
					}
					prior := uint64(2*len("user") + 2)
					c, _ := v.Context("c1")
					if c.GetLastSeq() != 5 || c.GetEntryCount() != 5 || c.GetSizeBytes() != prior+size || !c.GetUpdateTime().AsTime().Equal(at) ||
						c.GetCreateTime().AsTime().Equal(at) {
						t.Errorf("context = %v", c)
					}
					if u := v.Info().GetUsage(); u.GetEntries() != 5 || u.GetBytes() != prior+size {
						t.Errorf("usage = %v, want 5 entries, %d bytes", u, prior+size)
					}
				})
				wantTseq(t, h, res, rich, 4)
			},
		},
	})
}

func TestFSMAppendSeqsAcrossBatches(t *testing.T) {
	h := newFSM(t)
	h.mustApply(ownedBy("acme"))
	h.mustApply(createContext("acme", "c1"))
	// Several appends in one entry, then in separate entries, then several
	// entries in one ApplyBatch call.
	rs := h.apply(appendText("acme", "c1", "", "a"), appendText("acme", "c1", "", "b", "c"))
	want := [][2]uint64{{1, 1}, {2, 3}}
	rs = append(rs, h.mustApply(appendText("acme", "c1", "", "d")))
	want = append(want, [2]uint64{4, 4})
	for _, r := range h.applyLogs(h.entry(appendText("acme", "c1", "", "e", "f")), h.entry(appendText("acme", "c1", "", "g"))) {
		rs = append(rs, r.results...)
	}
	want = append(want, [2]uint64{5, 6}, [2]uint64{7, 7})
	for i, r := range rs {
		if a := r.GetAppend(); a.GetFirstSeq() != want[i][0] || a.GetLastSeq() != want[i][1] {
			t.Errorf("append %d = %v, want %v", i, a, want[i])
		}
	}
	h.tenant("acme", func(v *TenantView) {
		es, _ := v.Entries("c1", 0, 100, 1<<20)
		var text string
		for _, e := range es {
			text += e.GetText()
		}
		if text != "abcdefg" {
			t.Errorf("entries read %q", text)
		}
	})
	checkState(t, h.f)
}

func TestFSMMemory(t *testing.T) {
	base := cmds(ownedBy("acme"))
	withKey := cmds(ownedBy("acme"), putMemory("acme", "k", "old")) // k at revision 2
	put := putMemory("acme", "k", "value")
	update := putMemory("acme", "k", "newer!", 2)
	del := deleteMemory("acme", "k", 2)
	runOpCases(t, []opCase{
		{
			name: "put new", setup: base, cmd: put,
			check: func(t *testing.T, h *fsmHarness, res *cellv1.CommandResult) {
				if res.GetPutMemory().GetRevision() != 2 {
					t.Errorf("revision = %d, want the tseq 2", res.GetPutMemory().GetRevision())
				}
				h.tenant("acme", func(v *TenantView) {
					m, err := v.Memory("k")
					if err != nil || string(m.GetValue()) != "value" || m.GetRevision() != 2 || !m.GetCreateTime().AsTime().Equal(ts(put.GetTimeUnixNano())) {
						t.Errorf("item = %v, %v", m, err)
					}
					if u := v.Info().GetUsage(); u.GetMemoryKeys() != 1 || u.GetBytes() != uint64(len("k")+len("value")) {
						t.Errorf("usage = %v", u)
					}
				})
				wantTseq(t, h, res, put, 2)
			},
		},
		{name: "put expected 0 on a missing key", setup: base, cmd: putMemory("acme", "k", "v", 0), check: func(t *testing.T, h *fsmHarness, res *cellv1.CommandResult) {
			if res.GetPutMemory().GetRevision() != 2 {
				t.Errorf("result = %v", res)
			}
		}},
		{name: "put expected 0 on an existing key", setup: withKey, cmd: putMemory("acme", "k", "v", 0), reason: cperr.RevisionMismatch, meta: map[string]string{cperr.MetaRevision: "2"}},
		{name: "put wrong revision", setup: withKey, cmd: putMemory("acme", "k", "v", 7), reason: cperr.RevisionMismatch, meta: map[string]string{cperr.MetaRevision: "2"}},
		{name: "put revision on a missing key", setup: base, cmd: putMemory("acme", "k", "v", 3), reason: cperr.RevisionMismatch, meta: map[string]string{cperr.MetaRevision: "0"}},
		{name: "put without key", setup: base, cmd: putMemory("acme", "", "v"), reason: cperr.InvalidArgument},
		{
			name: "update with matching revision", setup: append(withKey, createContext("acme", "c")), cmd: update,
			check: func(t *testing.T, h *fsmHarness, res *cellv1.CommandResult) {
				if res.GetPutMemory().GetRevision() != 4 {
					t.Errorf("revision = %d, want the tseq 4", res.GetPutMemory().GetRevision())
				}
				h.tenant("acme", func(v *TenantView) {
					m, _ := v.Memory("k")
					created := ts(withKey[1].GetTimeUnixNano())
					if string(m.GetValue()) != "newer!" || m.GetRevision() != 4 || !m.GetCreateTime().AsTime().Equal(created) ||
						!m.GetUpdateTime().AsTime().Equal(ts(update.GetTimeUnixNano())) {
						t.Errorf("item = %v (created %v)", m, created)
					}
					if u := v.Info().GetUsage(); u.GetMemoryKeys() != 1 || u.GetBytes() != uint64(len("k")+len("newer!")) {
						t.Errorf("usage = %v", u)
					}
				})
				wantTseq(t, h, res, update, 4)
			},
		},
		{name: "delete missing", setup: base, cmd: deleteMemory("acme", "k"), reason: cperr.KeyNotFound},
		{name: "delete missing expecting 0", setup: base, cmd: deleteMemory("acme", "k", 0), reason: cperr.KeyNotFound},
		{name: "delete missing with a revision", setup: base, cmd: deleteMemory("acme", "k", 5), reason: cperr.RevisionMismatch, meta: map[string]string{cperr.MetaRevision: "0"}},
		{name: "delete wrong revision", setup: withKey, cmd: deleteMemory("acme", "k", 3), reason: cperr.RevisionMismatch, meta: map[string]string{cperr.MetaRevision: "2"}},
		{name: "delete expecting 0 on an existing key", setup: withKey, cmd: deleteMemory("acme", "k", 0), reason: cperr.RevisionMismatch, meta: map[string]string{cperr.MetaRevision: "2"}},
		{
			name: "delete with matching revision", setup: append(withKey, putMemory("acme", "k2", "x")), cmd: del,
			check: func(t *testing.T, h *fsmHarness, res *cellv1.CommandResult) {
				h.tenant("acme", func(v *TenantView) {
					if _, err := v.Memory("k"); !errors.Is(err, cperr.ErrKeyNotFound) {
						t.Errorf("Memory(k) err = %v", err)
					}
					if u := v.Info().GetUsage(); u.GetMemoryKeys() != 1 || u.GetBytes() != uint64(len("k2")+len("x")) {
						t.Errorf("usage = %v", u)
					}
				})
				wantTseq(t, h, res, del, 4)
			},
		},
		{name: "delete without revision", setup: withKey, cmd: deleteMemory("acme", "k"), check: func(t *testing.T, h *fsmHarness, res *cellv1.CommandResult) {
			if res.GetTseq() != 3 {
				t.Errorf("result = %v", res)
			}
		}},
	})
}

func TestFSMSetTenant(t *testing.T) {
	at := func(role cellv1.Role, epoch uint64) []*cellv1.Command { return cmds(setTenant("acme", role, epoch)) }
	epochMeta := func(e uint64) map[string]string { return map[string]string{cperr.MetaEpoch: strconv.FormatUint(e, 10)} }
	changes := func(role cellv1.Role, epoch, tseq uint64) func(*testing.T, *fsmHarness, *cellv1.CommandResult) {
		return func(t *testing.T, h *fsmHarness, res *cellv1.CommandResult) {
			info := res.GetTenant()
			resTseq := tseq // the tseq of the change event
			if role == standby {
				resTseq = 0 // no event
			}
			if info.GetTenant() != "acme" || info.GetRole() != role || info.GetEpoch() != epoch || info.GetTseq() != tseq || res.GetTseq() != resTseq {
				t.Errorf("result = %v, want %v@%d tseq %d", res, role, epoch, tseq)
			}
			rec := h.record("acme")
			if rec.GetRole() != role || rec.GetEpoch() != epoch || rec.GetTseq() != tseq {
				t.Errorf("record = %v", rec)
			}
		}
	}
	var cases []opCase
	// Becoming STANDBY is this cell's bookkeeping: no tseq (a standby's
	// tseq is its source's).
	first := func(role cellv1.Role) uint64 {
		if role == standby {
			return 0
		}
		return 1
	}
	for _, role := range []cellv1.Role{owner, standby, fenced} {
		cases = append(cases, opCase{name: "new tenant " + role.String(), cmd: setTenant("acme", role, 1), check: changes(role, 1, first(role))})
		cases = append(cases, opCase{name: "new tenant at a high epoch " + role.String(), cmd: setTenant("acme", role, 42), check: changes(role, 42, first(role))})
	}
	cases = append(cases,
		opCase{name: "new tenant epoch 0", cmd: setTenant("acme", owner, 0), reason: cperr.InvalidArgument},
		opCase{name: "existing tenant epoch 0", setup: at(owner, 3), cmd: setTenant("acme", owner, 0), reason: cperr.InvalidArgument},
		opCase{name: "role unspecified", setup: at(owner, 3), cmd: setTenant("acme", cellv1.Role_ROLE_UNSPECIFIED, 4), reason: cperr.InvalidArgument},
		opCase{name: "no tenant", cmd: setTenant("", owner, 1), reason: cperr.InvalidArgument},
		opCase{name: "lower epoch", setup: at(owner, 3), cmd: setTenant("acme", owner, 2), reason: cperr.StaleEpoch, meta: epochMeta(3)},
		opCase{name: "lower epoch demotion", setup: at(owner, 3), cmd: setTenant("acme", fenced, 2), reason: cperr.StaleEpoch, meta: epochMeta(3)},
		opCase{name: "same epoch OWNER from STANDBY", setup: at(standby, 3), cmd: setTenant("acme", owner, 3), reason: cperr.StaleEpoch, meta: epochMeta(3)},
		opCase{name: "same epoch OWNER from FENCED", setup: at(fenced, 3), cmd: setTenant("acme", owner, 3), reason: cperr.StaleEpoch, meta: epochMeta(3)},
		opCase{name: "same epoch STANDBY from FENCED", setup: at(fenced, 3), cmd: setTenant("acme", standby, 3), check: changes(standby, 3, 1)},
		opCase{name: "same epoch OWNER to STANDBY", setup: at(owner, 3), cmd: setTenant("acme", standby, 3), check: changes(standby, 3, 1)},
		opCase{name: "same epoch OWNER to FENCED", setup: at(owner, 3), cmd: setTenant("acme", fenced, 3), check: changes(fenced, 3, 2)},
		opCase{name: "same epoch STANDBY to FENCED", setup: at(standby, 3), cmd: setTenant("acme", fenced, 3), check: changes(fenced, 3, 1)},
		opCase{name: "higher epoch FENCED to OWNER", setup: at(fenced, 3), cmd: setTenant("acme", owner, 4), check: changes(owner, 4, 2)},
		opCase{name: "higher epoch STANDBY to OWNER", setup: at(standby, 3), cmd: setTenant("acme", owner, 9), check: changes(owner, 9, 1)},
		opCase{name: "higher epoch OWNER to OWNER", setup: at(owner, 3), cmd: setTenant("acme", owner, 4), check: changes(owner, 4, 2)},
		opCase{name: "higher epoch OWNER to STANDBY", setup: at(owner, 3), cmd: setTenant("acme", standby, 4), check: changes(standby, 4, 1)},
		opCase{name: "STANDBY needs a source", cmd: &cellv1.Command{Tenant: "acme", Op: &cellv1.Command_SetTenant{SetTenant: &cellv1.SetTenantOp{Role: standby, Epoch: 1}}}, reason: cperr.InvalidArgument},
	)
	for _, role := range []cellv1.Role{owner, standby, fenced} {
		cases = append(cases, opCase{
			name: "same epoch same role " + role.String(), setup: cmds(setTenant("acme", role, 3), setTenant("other", owner, 1)), cmd: setTenant("acme", role, 3),
			check: func(t *testing.T, h *fsmHarness, res *cellv1.CommandResult) {
				// Idempotent: the current info, no new tseq, nothing written.
				if info := res.GetTenant(); res.GetTseq() != 0 || info.GetRole() != role || info.GetEpoch() != 3 || info.GetTseq() != first(role) {
					t.Errorf("result = %v", res)
				}
				if rec := h.record("acme"); rec.GetTseq() != first(role) || rec.GetChangelogCount() != first(role) {
					t.Errorf("record = %v", rec)
				}
			},
		})
	}
	runOpCases(t, cases)
}

// TestFSMSetTenantIdempotentWritesNothing: re-asserting the current role
// and epoch changes no key.
func TestFSMSetTenantIdempotentWritesNothing(t *testing.T) {
	h := newFSM(t)
	h.mustApply(setTenant("acme", owner, 3))
	before := h.dump(false)
	h.mustApply(setTenant("acme", owner, 3))
	h.mustApply(withReq(setTenant("acme", owner, 3), "r1"))
	if d := diffDumps(before, h.dump(false)); d != "" {
		t.Errorf("idempotent set_tenant wrote: %s", d)
	}
}

func TestFSMDeleteTenant(t *testing.T) {
	populate := func(tenant string) []*cellv1.Command {
		return cmds(ownedBy(tenant), createContext(tenant, "c"), appendText(tenant, "c", "r1", "x"),
			putMemory(tenant, "k", "v"), withReq(putMemory(tenant, "k2", "v"), "r2"))
	}
	var setup []*cellv1.Command
	for _, tn := range []string{"a", "a.b", "ab", "a-", "A", "acme"} {
		setup = append(setup, populate(tn)...)
	}
	runOpCases(t, []opCase{
		{name: "missing", setup: populate("acme"), cmd: deleteTenant("nope"), reason: cperr.TenantNotFound},
		{name: "no tenant", cmd: deleteTenant(""), reason: cperr.InvalidArgument},
		{
			name: "delete", setup: setup, cmd: deleteTenant("a"),
			check: func(t *testing.T, h *fsmHarness, res *cellv1.CommandResult) {
				if res.GetTseq() != 0 || res.GetResult() != nil {
					t.Errorf("result = %v", res)
				}
				if left := dumpRange(t, h.f, tenantPrefix("a"), tenantEnd("a"), false); len(left) != 0 {
					t.Errorf("%d keys of the tenant left, first %q", len(left), left[0].k)
				}
				if h.record("a") != nil {
					t.Errorf("record left")
				}
				if n := h.f.tenantCount(); n != 5 {
					t.Errorf("tenant count = %d, want 5", n)
				}
				for _, tn := range []string{"a.b", "ab", "a-", "A", "acme"} {
					if keys := dumpRange(t, h.f, tenantPrefix(tn), tenantEnd(tn), false); len(keys) != 26 { // 13 + 5 audit records + 8 keyword index keys (3 documents: postings, forward entries, 2 class counters)
						t.Errorf("tenant %s has %d keys, want 26", tn, len(keys))
					}
				}
				// The tenant is gone: its writes are refused, it can come back.
				if r := h.applyOne(createContext("a", "c")); reasonOf(r) != string(cperr.WrongCell) {
					t.Errorf("write after delete = %v", r)
				}
				h.mustApply(ownedBy("a"))
				h.tenant("a", func(v *TenantView) {
					if cs, _, _ := v.ListContexts("", 10); len(cs) != 0 {
						t.Errorf("contexts after re-creation: %v", cs)
					}
					if u := v.Info().GetUsage(); u.GetContexts() != 0 || u.GetBytes() != 0 {
						t.Errorf("usage after re-creation = %v", u)
					}
				})
				// A remembered request id of the old tenant is forgotten.
				h.mustApply(createContext("a", "c"))
				if r := h.mustApply(withReq(putMemory("a", "k2", "v"), "r2")); r.GetDeduplicated() {
					t.Errorf("request id survived the tenant's deletion: %v", r)
				}
			},
		},
	})
}

func TestFSMTenantCount(t *testing.T) {
	h := newFSM(t)
	count := func(want uint64) {
		t.Helper()
		if n := h.f.tenantCount(); n != want {
			t.Errorf("tenant count = %d, want %d", n, want)
		}
		checkState(t, h.f)
	}
	count(0)
	h.apply(ownedBy("a"), ownedBy("b"), setTenant("c", standby, 1))
	count(3)
	h.mustApply(setTenant("a", fenced, 1))
	count(3)
	h.mustApply(deleteTenant("a"))
	count(2)
	// Deleted and re-created in one entry; created and deleted in one entry.
	h.apply(deleteTenant("b"), ownedBy("b"), ownedBy("d"), deleteTenant("d"))
	count(2)
	h.applyOne(deleteTenant("d"))
	count(2)
	h.apply(deleteTenant("b"), deleteTenant("c"))
	count(0)
}

func TestFSMCellOps(t *testing.T) {
	reg := registerNode("n1", "10.0.0.1:9000")
	runOpCases(t, []opCase{
		{
			name: "register node", cmd: reg,
			check: func(t *testing.T, h *fsmHarness, res *cellv1.CommandResult) {
				if res.GetTseq() != 0 {
					t.Errorf("result = %v", res)
				}
				n, err := h.f.node("n1")
				if err != nil || !proto.Equal(n, reg.GetRegisterNode()) {
					t.Errorf("node = %v, %v", n, err)
				}
				// Re-registering replaces the addresses.
				h.mustApply(registerNode("n1", "10.0.0.2:9000"))
				if n, _ := h.f.node("n1"); n.GetGrpcAddr() != "10.0.0.2:9000" {
					t.Errorf("node after re-registration = %v", n)
				}
			},
		},
		{name: "register node without id", cmd: registerNode("", "x"), reason: cperr.InvalidArgument},
		{
			name: "noop", setup: cmds(ownedBy("acme")), cmd: noop(),
			check: func(t *testing.T, h *fsmHarness, res *cellv1.CommandResult) {
				if !proto.Equal(res, &cellv1.CommandResult{}) {
					t.Errorf("result = %v", res)
				}
			},
		},
	})
	// A noop writes nothing but the applied index.
	h := newFSM(t)
	h.mustApply(ownedBy("acme"))
	before := h.dump(false)
	h.mustApply(noop())
	if d := diffDumps(before, h.dump(false)); d != "" {
		t.Errorf("noop wrote: %s", d)
	}
	if h.f.applied.Load() != h.index {
		t.Errorf("applied = %d, want %d", h.f.applied.Load(), h.index)
	}
}

// ownerOps returns one command of each OWNER-only operation on tenant
// "acme" that would succeed against admissionSetup.
func ownerOps() map[string]func() *cellv1.Command {
	return map[string]func() *cellv1.Command{
		"create_context": func() *cellv1.Command { return createContext("acme", "new") },
		"delete_context": func() *cellv1.Command { return deleteContext("acme", "c1") },
		"append":         func() *cellv1.Command { return appendText("acme", "c1", "", "x") },
		"put_memory":     func() *cellv1.Command { return putMemory("acme", "k", "v2") },
		"delete_memory":  func() *cellv1.Command { return deleteMemory("acme", "k") },
	}
}

func admissionSetup(final ...*cellv1.Command) []*cellv1.Command {
	return append(cmds(setTenant("acme", owner, 3), createContext("acme", "c1"), putMemory("acme", "k", "v")), final...)
}

func TestFSMAdmission(t *testing.T) {
	var cases []opCase
	for name, mk := range ownerOps() {
		cases = append(cases,
			opCase{name: name + "/unknown tenant", setup: cmds(ownedBy("other")), cmd: withEpoch(mk(), 0), reason: cperr.WrongCell, meta: map[string]string{cperr.MetaRole: "NONE"}},
			opCase{name: name + "/standby", setup: admissionSetup(setTenant("acme", standby, 4)), cmd: mk(), reason: cperr.WrongCell,
				meta: map[string]string{cperr.MetaRole: "ROLE_STANDBY", cperr.MetaEpoch: "4"}},
			opCase{name: name + "/fenced", setup: admissionSetup(setTenant("acme", fenced, 5)), cmd: withEpoch(mk(), 5), reason: cperr.WrongCell,
				meta: map[string]string{cperr.MetaRole: "ROLE_FENCED", cperr.MetaEpoch: "5"}},
			opCase{name: name + "/older epoch", setup: admissionSetup(), cmd: withEpoch(mk(), 2), reason: cperr.StaleEpoch, meta: map[string]string{cperr.MetaEpoch: "3"}},
			opCase{name: name + "/newer epoch", setup: admissionSetup(), cmd: withEpoch(mk(), 4), reason: cperr.StaleEpoch, meta: map[string]string{cperr.MetaEpoch: "3"}},
			opCase{name: name + "/matching epoch", setup: admissionSetup(), cmd: withEpoch(mk(), 3), check: func(t *testing.T, h *fsmHarness, res *cellv1.CommandResult) {
				if res.GetTseq() != 4 {
					t.Errorf("result = %v", res)
				}
			}},
			opCase{name: name + "/epoch 0 is current", setup: admissionSetup(), cmd: withEpoch(mk(), 0), check: func(t *testing.T, h *fsmHarness, res *cellv1.CommandResult) {
				if res.GetTseq() != 4 {
					t.Errorf("result = %v", res)
				}
			}},
		)
	}
	// Admission comes before the operation's own checks.
	cases = append(cases, opCase{name: "fenced beats not found", setup: admissionSetup(setTenant("acme", fenced, 3)), cmd: deleteContext("acme", "nope"),
		reason: cperr.WrongCell, meta: map[string]string{cperr.MetaRole: "ROLE_FENCED", cperr.MetaEpoch: "3"}})
	// set_tenant and delete_tenant are not subject to admission.
	cases = append(cases,
		opCase{name: "set_tenant on a fenced tenant at any request epoch", setup: cmds(setTenant("acme", fenced, 3)), cmd: withEpoch(setTenant("acme", owner, 4), 1),
			check: func(t *testing.T, h *fsmHarness, res *cellv1.CommandResult) {}},
		opCase{name: "delete_tenant on a standby", setup: cmds(setTenant("acme", standby, 3)), cmd: withEpoch(deleteTenant("acme"), 9),
			check: func(t *testing.T, h *fsmHarness, res *cellv1.CommandResult) {}},
	)
	runOpCases(t, cases)
}

func TestFSMDedup(t *testing.T) {
	t.Run("retry returns the first result", func(t *testing.T) {
		h := newFSM(t)
		h.mustApply(ownedBy("acme"))
		h.mustApply(createContext("acme", "c1"))
		first := h.mustApply(appendText("acme", "c1", "r1", "a", "b"))
		before := h.dump(false)
		for _, retry := range []*cellv1.Command{appendText("acme", "c1", "r1", "a", "b"), appendText("acme", "c1", "r1", "different")} {
			res := h.mustApply(retry)
			if !res.GetDeduplicated() || res.GetTseq() != first.GetTseq() || !proto.Equal(res.GetAppend(), first.GetAppend()) {
				t.Errorf("retry = %v, first %v", res, first)
			}
		}
		if d := diffDumps(before, h.dump(false)); d != "" {
			t.Errorf("retry wrote: %s", d)
		}
		// In one entry with the first attempt.
		rs := h.apply(appendText("acme", "c1", "r2", "c"), appendText("acme", "c1", "r2", "c"))
		if rs[0].GetDeduplicated() || !rs[1].GetDeduplicated() || rs[1].GetAppend().GetFirstSeq() != 3 || rs[1].GetTseq() != rs[0].GetTseq() {
			t.Errorf("same-entry retry = %v, %v", rs[0], rs[1])
		}
		h.tenant("acme", func(v *TenantView) {
			if c, _ := v.Context("c1"); c.GetLastSeq() != 3 {
				t.Errorf("last seq = %d, want 3", c.GetLastSeq())
			}
		})
		checkState(t, h.f)
	})
	t.Run("every mutation", func(t *testing.T) {
		for name, mk := range ownerOps() {
			t.Run(name, func(t *testing.T) {
				h := newFSM(t)
				for _, c := range admissionSetup() {
					h.mustApply(c)
				}
				first := h.mustApply(withReq(mk(), "r"))
				before := h.dump(false)
				again := h.mustApply(withReq(mk(), "r"))
				want := proto.Clone(first).(*cellv1.CommandResult)
				want.Deduplicated = true
				if !proto.Equal(again, want) {
					t.Errorf("retry = %v, want %v", again, want)
				}
				if d := diffDumps(before, h.dump(false)); d != "" {
					t.Errorf("retry wrote: %s", d)
				}
			})
		}
		h := newFSM(t)
		first := h.mustApply(withReq(setTenant("acme", owner, 1), "r"))
		if again := h.mustApply(withReq(setTenant("acme", owner, 2), "r")); !again.GetDeduplicated() || again.GetTseq() != first.GetTseq() {
			t.Errorf("set_tenant retry = %v", again)
		}
		if rec := h.record("acme"); rec.GetEpoch() != 1 {
			t.Errorf("retried set_tenant applied: %v", rec)
		}
	})
	t.Run("only successful mutations are remembered", func(t *testing.T) {
		h := newFSM(t)
		h.mustApply(ownedBy("acme"))
		h.mustApply(createContext("acme", "c1"))
		bad := withReq(appendExpect("acme", "c1", 5, "x"), "r1")
		if r := h.applyOne(bad); reasonOf(r) != string(cperr.SequenceMismatch) {
			t.Fatalf("first attempt = %v", r)
		}
		if r := h.mustApply(withReq(appendExpect("acme", "c1", 0, "x"), "r1")); r.GetDeduplicated() || r.GetAppend().GetFirstSeq() != 1 {
			t.Errorf("retry after a rejection = %v", r)
		}
		// A rejected retry of an applied id still answers the first result.
		if r := h.applyOne(withReq(appendExpect("acme", "c1", 9, "x"), "r1")); !r.GetDeduplicated() {
			t.Errorf("dedup hit = %v", r)
		}
	})
	t.Run("tenants have separate windows", func(t *testing.T) {
		h := newFSM(t)
		h.apply(ownedBy("a"), ownedBy("b"), createContext("a", "c"), createContext("b", "c"))
		h.mustApply(appendText("a", "c", "r1", "x"))
		if r := h.mustApply(appendText("b", "c", "r1", "x")); r.GetDeduplicated() {
			t.Errorf("request id crossed tenants: %v", r)
		}
	})
	t.Run("window eviction", func(t *testing.T) {
		h := newFSM(t, func(c *fsmConfig) { c.dedupMaxIDs = 3 })
		h.mustApply(ownedBy("acme"))
		h.mustApply(createContext("acme", "c"))
		for i := 1; i <= 4; i++ {
			h.mustApply(appendText("acme", "c", fmt.Sprintf("r%d", i), "x"))
		}
		checkState(t, h.f)
		// r1 was evicted: it applies again (and now r2 is the oldest, evicted).
		if r := h.mustApply(appendText("acme", "c", "r1", "x")); r.GetDeduplicated() || r.GetAppend().GetFirstSeq() != 5 {
			t.Errorf("evicted r1 = %v", r)
		}
		for _, id := range []string{"r3", "r4", "r1"} {
			if r := h.mustApply(appendText("acme", "c", id, "x")); !r.GetDeduplicated() {
				t.Errorf("%s in the window was applied again: %v", id, r)
			}
		}
		if r := h.mustApply(appendText("acme", "c", "r2", "x")); r.GetDeduplicated() {
			t.Errorf("evicted r2 = %v", r)
		}
		if rec := h.record("acme"); rec.GetDedupNext()-rec.GetDedupFirst() != 3 {
			t.Errorf("window [%d, %d)", rec.GetDedupFirst(), rec.GetDedupNext())
		}
		checkState(t, h.f)
	})
	t.Run("disabled", func(t *testing.T) {
		h := newFSM(t, func(c *fsmConfig) { c.dedupMaxIDs = 0 })
		h.mustApply(ownedBy("acme"))
		h.mustApply(createContext("acme", "c"))
		h.mustApply(appendText("acme", "c", "r1", "x"))
		if r := h.mustApply(appendText("acme", "c", "r1", "x")); r.GetDeduplicated() || r.GetAppend().GetFirstSeq() != 2 {
			t.Errorf("retry with dedup disabled = %v", r)
		}
		checkState(t, h.f)
	})
	t.Run("no request id", func(t *testing.T) {
		h := newFSM(t)
		h.mustApply(ownedBy("acme"))
		h.mustApply(createContext("acme", "c"))
		h.mustApply(appendText("acme", "c", "", "x"))
		if r := h.mustApply(appendText("acme", "c", "", "x")); r.GetDeduplicated() {
			t.Errorf("empty request id deduplicated: %v", r)
		}
		if p := tenantKey("acme", kindDedup, 0); len(dumpRange(t, h.f, p, prefixEnd(p), false)) != 0 {
			t.Errorf("dedup records for empty request ids")
		}
	})
}

// TestFSMTseqAndChangeLog: every successful tenant mutation takes exactly
// the next tseq, rejections and non-mutations none, and the change log
// holds every event in order.
func TestFSMTseqAndChangeLog(t *testing.T) {
	h := newFSM(t)
	type step struct {
		cmd    *cellv1.Command
		mutate bool
	}
	var steps []step
	add := func(mutate bool, c ...*cellv1.Command) {
		for _, cmd := range c {
			steps = append(steps, step{cmd, mutate})
		}
	}
	add(true, ownedBy("acme"), createContext("acme", "c"))
	add(false, createContext("acme", "c"), appendExpect("acme", "c", 7, "x"), deleteMemory("acme", "nope"))
	add(true, appendText("acme", "c", "r1", "x"), putMemory("acme", "k", "v"))
	add(false, appendText("acme", "c", "r1", "x"), setTenant("acme", owner, 1), noop(), registerNode("n1", "a"))
	add(true, ownedBy("other"), setTenant("acme", owner, 2), deleteMemory("acme", "k"), deleteContext("acme", "c"))
	add(false, withEpoch(createContext("acme", "d"), 1))
	add(false, setTenant("acme", standby, 2))
	add(false, createContext("acme", "d"))

	var tseq uint64
	var applied []*cellv1.Command
	// Feed the steps in entries of 1, 2 and 3 commands.
	for i, n := 0, 1; i < len(steps); i, n = i+n, n%3+1 {
		batch := steps[i:min(i+n, len(steps))]
		var cs []*cellv1.Command
		for _, s := range batch {
			cs = append(cs, s.cmd)
		}
		rs := h.apply(cs...)
		for j, s := range batch {
			if s.cmd.GetTenant() != "acme" {
				continue
			}
			if s.mutate {
				tseq++
				applied = append(applied, s.cmd)
				if rs[j].GetTseq() != tseq || rs[j].GetError() != nil {
					t.Errorf("%s: result %v, want tseq %d", opName(s.cmd), rs[j], tseq)
				}
			} else if rs[j].GetTseq() != 0 && !rs[j].GetDeduplicated() {
				t.Errorf("%s: result %v took a tseq", opName(s.cmd), rs[j])
			}
		}
	}
	if rec := h.record("acme"); rec.GetTseq() != tseq || rec.GetChangelogFirstTseq() != 1 || rec.GetChangelogCount() != tseq {
		t.Errorf("record = %v, want tseq %d and a full change log", rec, tseq)
	}
	h.tenant("acme", func(v *TenantView) {
		evs, err := v.Changes(0, 100)
		if err != nil || len(evs) != len(applied) {
			t.Fatalf("Changes = %d events, %v; want %d", len(evs), err, len(applied))
		}
		for i, ev := range evs {
			if ev.GetTseq() != uint64(i+1) || !proto.Equal(ev.GetCommand(), applied[i]) || ev.GetTimeUnixNano() != applied[i].GetTimeUnixNano() || ev.GetResult().GetTseq() != ev.GetTseq() {
				t.Errorf("event %d = %v, want %v", i, ev, applied[i])
			}
		}
	})
	checkState(t, h.f)
}

func TestFSMChangeLogTrim(t *testing.T) {
	const n = 20
	mutations := func(h *fsmHarness, step time.Duration) {
		h.mustApply(ownedBy("acme"))
		for i := 2; i <= n; i++ {
			c := putMemory("acme", "k", fmt.Sprintf("value-%02d", i))
			h.now += int64(step)
			c.TimeUnixNano = h.now
			h.mustApply(c)
		}
	}
	kept := func(t *testing.T, h *fsmHarness) (first, count uint64) {
		t.Helper()
		checkState(t, h.f)
		rec := h.record("acme")
		if rec.GetTseq() != n {
			t.Fatalf("tseq = %d", rec.GetTseq())
		}
		h.tenant("acme", func(v *TenantView) {
			if rec.GetChangelogFirstTseq() > 1 {
				if _, err := v.Changes(rec.GetChangelogFirstTseq()-2, 100); !errors.Is(err, ErrChangesTrimmed) {
					t.Errorf("Changes before the log = %v", err)
				}
			}
			evs, err := v.Changes(rec.GetChangelogFirstTseq()-1, 100)
			if err != nil || uint64(len(evs)) != rec.GetChangelogCount() || evs[len(evs)-1].GetTseq() != n {
				t.Errorf("Changes from the first kept = %d events, %v", len(evs), err)
			}
		})
		return rec.GetChangelogFirstTseq(), rec.GetChangelogCount()
	}
	t.Run("MaxEvents", func(t *testing.T) {
		h := newFSM(t, func(c *fsmConfig) { c.changelog.MaxEvents = 5 })
		mutations(h, time.Second)
		if first, count := kept(t, h); first != n-4 || count != 5 {
			t.Errorf("kept [%d, +%d), want the last 5", first, count)
		}
	})
	t.Run("MaxBytes", func(t *testing.T) {
		// Find the size of one put event, then allow three and a half.
		probe := newFSM(t)
		mutations(probe, time.Second)
		size := probe.record("acme").GetChangelogBytes() / n // set_tenant's event is close enough
		h := newFSM(t, func(c *fsmConfig) { c.changelog.MaxBytes = size*7/2 + 1 })
		mutations(h, time.Second)
		first, count := kept(t, h)
		if rec := h.record("acme"); rec.GetChangelogBytes() > size*7/2+1 || count != 3 || first != n-2 {
			t.Errorf("kept [%d, +%d) of %d bytes, want the last 3 within %d", first, count, rec.GetChangelogBytes(), size*7/2+1)
		}
	})
	t.Run("MaxBytes keeps the newest event", func(t *testing.T) {
		h := newFSM(t, func(c *fsmConfig) { c.changelog.MaxBytes = 1 })
		mutations(h, time.Second)
		if first, count := kept(t, h); first != n || count != 1 {
			t.Errorf("kept [%d, +%d), want the newest only", first, count)
		}
	})
	t.Run("RetentionAge", func(t *testing.T) {
		h := newFSM(t, func(c *fsmConfig) { c.changelog.RetentionAge = 3 * time.Second })
		mutations(h, time.Second)
		// Events at seconds 1..19 after the first; now is second 19: the
		// ones at most 3 s old stay (16, 17, 18, 19 → tseq 17..20).
		if first, count := kept(t, h); first != n-3 || count != 4 {
			t.Errorf("kept [%d, +%d), want tseq %d..%d", first, count, n-3, n)
		}
		// Long silence: the next mutation leaves only itself.
		c := putMemory("acme", "k", "late")
		c.TimeUnixNano = h.now + int64(time.Hour)
		h.mustApply(c)
		if rec := h.record("acme"); rec.GetChangelogCount() != 1 || rec.GetChangelogFirstTseq() != n+1 {
			t.Errorf("after an hour: %v", rec)
		}
		checkState(t, h.f)
	})
	t.Run("unbounded", func(t *testing.T) {
		h := newFSM(t)
		mutations(h, time.Hour)
		if first, count := kept(t, h); first != 1 || count != n {
			t.Errorf("kept [%d, +%d)", first, count)
		}
	})
}

// TestFSMTenantIsolation: tenants whose ids prefix one another, with
// contexts and keys whose ids prefix one another, never see each other.
func TestFSMTenantIsolation(t *testing.T) {
	h := newFSM(t)
	tenants := []string{"a", "ab", "a.b", "a-", "a_b", "b"}
	for _, tn := range tenants {
		h.mustApply(ownedBy(tn))
		for _, id := range []string{"c", "c1", "c.1", tn} {
			h.mustApply(createContext(tn, id))
			h.mustApply(appendText(tn, id, "", tn+"/"+id))
			h.mustApply(putMemory(tn, id, tn))
		}
	}
	for _, tn := range tenants {
		h.tenant(tn, func(v *TenantView) {
			cs, more, err := v.ListContexts("", 100)
			if err != nil || more || len(cs) != 4 {
				t.Errorf("%s: ListContexts = %d, %v, %v", tn, len(cs), more, err)
			}
			for _, c := range cs {
				es, err := v.Entries(c.GetContextId(), 0, 100, 1<<20)
				if err != nil || len(es) != 1 || es[0].GetText() != tn+"/"+c.GetContextId() {
					t.Errorf("%s/%s: entries = %v, %v", tn, c.GetContextId(), es, err)
				}
			}
			for _, prefix := range []string{"", "c", "a", tn} {
				ms, _, err := v.ListMemory(prefix, "", 100, false)
				if err != nil {
					t.Fatal(err)
				}
				for _, m := range ms {
					if string(m.GetValue()) != tn {
						t.Errorf("%s: ListMemory(%q) returned %q of tenant %q", tn, prefix, m.GetKey(), m.GetValue())
					}
				}
			}
			if evs, err := v.Changes(0, 1000); err != nil || len(evs) != 13 {
				t.Errorf("%s: %d change events, %v", tn, len(evs), err)
			} else {
				for _, ev := range evs {
					if ev.GetCommand().GetTenant() != tn {
						t.Errorf("%s: change event of %s", tn, ev.GetCommand().GetTenant())
					}
				}
			}
		})
	}
	h.cell(func(v *CellView) {
		ts, more, err := v.ListTenants("", 100)
		if err != nil || more || len(ts) != len(tenants) {
			t.Errorf("ListTenants = %v, %v, %v", ts, more, err)
		}
	})
	checkState(t, h.f)
}

func TestFSMSkipsAppliedEntries(t *testing.T) {
	h := newFSM(t)
	e1 := h.entry(ownedBy("acme"))
	e2 := h.entry(createContext("acme", "c"))
	e3 := h.entry(appendText("acme", "c", "", "x"))
	h.applyLogs(e1, e2, e3)
	if h.f.applied.Load() != 3 {
		t.Fatalf("applied = %d", h.f.applied.Load())
	}
	before := h.dump(true)
	h.applied = nil
	resps := h.applyLogs(e2, e3)
	if resps[0] != nil || resps[1] != nil || len(h.applied) != 0 {
		t.Errorf("re-delivered entries were applied: %v, onApply %v", resps, h.applied)
	}
	if d := diffDumps(before, h.dump(true)); d != "" {
		t.Errorf("re-delivered entries wrote: %s", d)
	}
	// A batch that straddles the applied index applies only the new part.
	e4 := h.entry(appendText("acme", "c", "", "y"))
	resps = h.applyLogs(e3, e4)
	if resps[0] != nil || resps[1] == nil || resps[1].results[0].GetAppend().GetFirstSeq() != 2 || len(h.applied) != 1 || h.applied[0] != 4 {
		t.Errorf("straddling batch: %v, onApply %v", resps, h.applied)
	}
	// After a restart the persisted index says what is applied.
	h.reopen()
	if h.f.applied.Load() != 4 {
		t.Fatalf("applied after reopen = %d, want 4", h.f.applied.Load())
	}
	before = h.dump(true)
	h.applied = nil
	h.applyLogs(e1, e2, e3, e4)
	if d := diffDumps(before, h.dump(true)); d != "" || len(h.applied) != 0 {
		t.Errorf("replay after reopen wrote %s, onApply %v", d, h.applied)
	}
	checkState(t, h.f)
}

func TestFSMNonCommandEntries(t *testing.T) {
	h := newFSM(t)
	h.mustApply(ownedBy("acme"))
	before := h.dump(false)
	h.index++
	resps := h.applyLogs(&raft.Log{Index: h.index, Term: 2, Type: raft.LogConfiguration, Data: []byte("whatever")})
	if resps[0] != nil || h.f.applied.Load() != h.index || len(h.fatal) != 0 {
		t.Errorf("configuration entry: resp %v applied %d fatal %v", resps[0], h.f.applied.Load(), h.fatal)
	}
	if d := diffDumps(before, h.dump(false)); d != "" {
		t.Errorf("configuration entry wrote: %s", d)
	}
	h.mustApply(createContext("acme", "c"))
}

// unknownOp returns a command carrying an operation this node does not
// know (field 99, as a newer node would write it).
func unknownOp(tenant string, ignorable bool) *cellv1.Command {
	c := &cellv1.Command{Version: commandVersion, Tenant: tenant, Ignorable: ignorable}
	b := protowire.AppendTag(nil, 99, protowire.BytesType)
	b = protowire.AppendBytes(b, []byte("future op"))
	c.ProtoReflect().SetUnknown(b)
	return c
}

// futureVersion returns a known operation at a newer command version.
func futureVersion(c *cellv1.Command, ignorable bool) *cellv1.Command {
	c.Version = commandVersion + 1
	c.Ignorable = ignorable
	return c
}

func TestFSMUnknownCommandStops(t *testing.T) {
	cases := []struct {
		name string
		bad  func(h *fsmHarness) *raft.Log
	}{
		{"unknown operation", func(h *fsmHarness) *raft.Log {
			return h.entry(createContext("acme", "c2"), unknownOp("acme", false))
		}},
		{"newer version", func(h *fsmHarness) *raft.Log {
			return h.entry(createContext("acme", "c2"), futureVersion(createContext("acme", "c3"), false))
		}},
		{"no operation", func(h *fsmHarness) *raft.Log {
			return h.entry(createContext("acme", "c2"), &cellv1.Command{Tenant: "acme"})
		}},
		{"undecodable entry", func(h *fsmHarness) *raft.Log { return h.rawEntry([]byte{0x0a, 0x05, 0x01}) }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := newFSM(t)
			h.mustApply(ownedBy("acme"))
			ok := h.entry(createContext("acme", "c1"))
			bad := tc.bad(h)
			after := h.entry(createContext("acme", "c4"))
			resps := h.applyLogs(ok, bad, after)
			if resps[0] == nil || resps[0].err != nil || reasonOf(resps[0].results[0]) != "" {
				t.Errorf("entry before the bad one: %+v", resps[0])
			}
			for i := 1; i < 3; i++ {
				if resps[i] == nil || !errors.Is(resps[i].err, errStopped) || resps[i].results != nil {
					t.Errorf("entry %d: %+v, want errStopped", i, resps[i])
				}
			}
			if len(h.fatal) != 1 {
				t.Fatalf("onFatal called %d times", len(h.fatal))
			}
			if tc.name != "undecodable entry" && !errors.Is(h.fatal[0], errUnknownCommand) {
				t.Errorf("fatal error = %v, want errUnknownCommand", h.fatal[0])
			}
			if got := h.f.applied.Load(); got != ok.Index {
				t.Errorf("applied = %d, want %d (before the bad entry)", got, ok.Index)
			}
			// The entry before is committed; nothing of the bad entry or after.
			h.tenant("acme", func(v *TenantView) {
				cs, _, _ := v.ListContexts("", 10)
				if len(cs) != 1 || cs[0].GetContextId() != "c1" {
					t.Errorf("contexts = %v, want only c1", cs)
				}
			})
			// Stopped for good.
			if r := h.applyLogs(h.entry(noop()))[0]; r == nil || !errors.Is(r.err, errStopped) {
				t.Errorf("entry after stop = %+v", r)
			}
			if len(h.fatal) != 1 {
				t.Errorf("onFatal called again")
			}
			// The persisted index is before the bad entry: a fixed node
			// resumes from it.
			h.reopen()
			if got := h.f.applied.Load(); got != ok.Index {
				t.Errorf("applied after reopen = %d, want %d", got, ok.Index)
			}
			checkState(t, h.f)
		})
	}
}

func TestFSMBadCommandFirstInBatch(t *testing.T) {
	h := newFSM(t)
	h.mustApply(ownedBy("acme"))
	before := h.dump(true)
	resps := h.applyLogs(h.entry(unknownOp("acme", false)), h.entry(noop()))
	for i, r := range resps {
		if r == nil || !errors.Is(r.err, errStopped) {
			t.Errorf("resp %d = %+v", i, r)
		}
	}
	if d := diffDumps(before, h.dump(true)); d != "" {
		t.Errorf("stopped batch wrote: %s", d)
	}
}

func TestFSMIgnorableCommandSkipped(t *testing.T) {
	cases := []struct {
		name string
		cmd  func() *cellv1.Command
	}{
		{"unknown operation", func() *cellv1.Command { return unknownOp("acme", true) }},
		// A newer version is as unknown as a newer operation: skipped
		// when ignorable, even if this node knows an operation by that
		// field number.
		{"newer version of a known operation", func() *cellv1.Command { return futureVersion(createContext("acme", "future"), true) }},
		{"no operation", func() *cellv1.Command { return &cellv1.Command{Tenant: "acme", Ignorable: true} }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := newFSM(t)
			h.mustApply(ownedBy("acme"))
			rs := h.apply(tc.cmd(), createContext("acme", "c1"))
			if !proto.Equal(rs[0], &cellv1.CommandResult{}) {
				t.Errorf("ignorable result = %v, want empty", rs[0])
			}
			if rs[1].GetTseq() != 2 {
				t.Errorf("next command = %v, want tseq 2", rs[1])
			}
			h.tenant("acme", func(v *TenantView) {
				cs, _, _ := v.ListContexts("", 10)
				if len(cs) != 1 || cs[0].GetContextId() != "c1" {
					t.Errorf("contexts = %v, want only c1", cs)
				}
			})
			if len(h.fatal) != 0 || h.f.stopped.Load() {
				t.Errorf("machine stopped: %v", h.fatal)
			}
			h.mustApply(noop())
			checkState(t, h.f)
		})
	}
}

// TestFSMResultIsItsOwn: a command's result describes the state right
// after that command, even when later commands of the same entry change
// the tenant further.
func TestFSMResultIsItsOwn(t *testing.T) {
	h := newFSM(t)
	rs := h.apply(ownedBy("acme"), createContext("acme", "c1"), putMemory("acme", "k", "v"))
	info := rs[0].GetTenant()
	if info.GetTseq() != 1 || info.GetUsage().GetContexts() != 0 || info.GetUsage().GetMemoryKeys() != 0 {
		t.Errorf("set_tenant result = %v, want tseq 1 and no usage yet", info)
	}
	// The change log holds the same result as the answer.
	h.tenant("acme", func(v *TenantView) {
		evs, _ := v.Changes(0, 1)
		if len(evs) != 1 || !proto.Equal(evs[0].GetResult(), rs[0]) {
			t.Errorf("change event result = %v, answer %v", evs[0].GetResult(), rs[0])
		}
	})
}

func TestFSMReopenKeepsState(t *testing.T) {
	h := newFSM(t)
	h.mustApply(ownedBy("acme"))
	h.mustApply(createContext("acme", "c"))
	h.mustApply(appendText("acme", "c", "r1", "x"))
	before := h.dump(true)
	h.reopen()
	if d := diffDumps(before, h.dump(true)); d != "" {
		t.Errorf("reopen changed the state: %s", d)
	}
	if r := h.mustApply(appendText("acme", "c", "r1", "x")); !r.GetDeduplicated() {
		t.Errorf("dedup lost across reopen: %v", r)
	}
}

// TestProposeRefusesCommandsTheCellCannotApply: a command without a known
// operation (or of a newer version) that is not ignorable stops every
// replica that applies it. Propose must refuse it before it reaches the
// log, so that a caller's mistake cannot take the whole cell down.
func TestProposeRefusesCommandsTheCellCannotApply(t *testing.T) {
	s := openSingle(t, "")
	setOwner(t, s, "acme", 1)
	for name, c := range map[string]*cellv1.Command{
		"no operation":   {Tenant: "acme"},
		"newer version":  {Tenant: "acme", Version: commandVersion + 1, Op: &cellv1.Command_Noop{Noop: &cellv1.NoopOp{}}},
		"unknown fields": unknownOp("acme", false),
	} {
		_, err := s.Propose(testCtx(t), c)
		if !errors.Is(err, cperr.ErrInvalidArgument) {
			t.Errorf("%s: Propose = %v, want INVALID_ARGUMENT", name, err)
		}
		select {
		case <-s.Done():
			t.Fatalf("%s: the store stopped: %v", name, s.Err())
		default:
		}
	}
	mustPropose(t, s, createContext("acme", "c1"))
}

// TestFSMStorageFailureStops: a state the machine cannot read (here a
// corrupt tenant record) stops it; nothing of the apply batch is
// committed, not even the entries before the failing one.
func TestFSMStorageFailureStops(t *testing.T) {
	h := newFSM(t)
	h.mustApply(ownedBy("good"))
	h.mustApply(ownedBy("acme"))
	if err := h.f.db.Set(recordKey("acme"), []byte{0xff, 0xff}, pebble.Sync); err != nil {
		t.Fatal(err)
	}
	before, applied := h.dump(true), h.f.applied.Load()
	resps := h.applyLogs(h.entry(createContext("good", "c")), h.entry(createContext("acme", "c")), h.entry(noop()))
	for i, r := range resps {
		if r == nil || !errors.Is(r.err, errStopped) {
			t.Errorf("resp %d = %+v, want errStopped", i, r)
		}
	}
	if len(h.fatal) != 1 || !h.f.stopped.Load() {
		t.Errorf("fatal = %v, stopped %v", h.fatal, h.f.stopped.Load())
	}
	if d := diffDumps(before, h.dump(true)); d != "" || h.f.applied.Load() != applied {
		t.Errorf("failed batch committed: applied %d (was %d), %s", h.f.applied.Load(), applied, d)
	}
}

// TestFSMApplySingle: raft.FSM's Apply is ApplyBatch of one entry.
func TestFSMApplySingle(t *testing.T) {
	h := newFSM(t)
	r, ok := h.f.Apply(h.entry(ownedBy("acme"))).(*batchResponse)
	if !ok || r.err != nil || len(r.results) != 1 || r.results[0].GetTseq() != 1 || h.f.applied.Load() != h.index {
		t.Errorf("Apply = %+v", r)
	}
}

func TestEventTime(t *testing.T) {
	for _, at := range []int64{0, 1, testT0, -5} {
		ev := &cellv1.ChangeEvent{Tseq: 1 << 40, TimeUnixNano: at, Command: createContext("a", "b"), Result: &cellv1.CommandResult{Tseq: 3}}
		b, err := marshalOpts.Marshal(ev)
		if err != nil {
			t.Fatal(err)
		}
		if got := eventTime(b); got != at {
			t.Errorf("eventTime = %d, want %d", got, at)
		}
	}
	for _, b := range [][]byte{nil, {0xff}, {0x08}, {0x12, 0x05}} {
		if got := eventTime(b); got != 0 {
			t.Errorf("eventTime(%x) = %d, want 0", b, got)
		}
	}
}

// TestFSMChangeLogRetentionEnabledLater: a node restarted with a
// retention age after running without one trims by the events' real times.
func TestFSMChangeLogRetentionEnabledLater(t *testing.T) {
	h := newFSM(t, func(c *fsmConfig) { c.changelog = ChangeLogConfig{MaxEvents: 3} })
	put := func(at time.Duration) {
		c := putMemory("acme", "k", at.String())
		c.TimeUnixNano = testT0 + int64(at)
		h.mustApply(c)
	}
	c := ownedBy("acme")
	c.TimeUnixNano = testT0
	h.mustApply(c)
	for i := range 9 {
		put(2*time.Hour + time.Duration(i)*time.Minute)
	}
	// Kept: the events at 2h6m, 2h7m, 2h8m (tseq 8..10).
	h.cfg.changelog = ChangeLogConfig{MaxEvents: 10, RetentionAge: time.Hour}
	h.reopen()
	checkState(t, h.f)
	put(2*time.Hour + 9*time.Minute)
	if rec := h.record("acme"); rec.GetChangelogFirstTseq() != 8 || rec.GetChangelogCount() != 4 {
		t.Errorf("change log [%d, +%d), want [8, +4): events minutes old were trimmed by a 1h retention", rec.GetChangelogFirstTseq(), rec.GetChangelogCount())
	}
}

// TestFSMReplicasWithDifferentConfigAgree: replicas apply the same log to
// the same state even when their node configs differ (a rolling config
// change). The dedup window and change-log bounds decide what the state
// machine writes, so they must not make replicas diverge.
// TestFSMReplicasWithDifferentConfigAgree: replicas whose local configs
// differ still write identical state, because the bounds that decide what
// is written are replicated (the leader's cell_settings command), not read
// from each node's config.
func TestFSMReplicasWithDifferentConfigAgree(t *testing.T) {
	a := newFSM(t, func(c *fsmConfig) { c.dedupMaxIDs = 100; c.changelog.MaxEvents = 50 })
	b := newFSM(t, func(c *fsmConfig) { c.dedupMaxIDs = 7 })
	settings := &cellv1.Command{Op: &cellv1.Command_CellSettings{CellSettings: &cellv1.CellSettings{DedupWindow: 2, ChangelogMaxEvents: 3}}}
	log := []*cellv1.Command{settings, ownedBy("acme"), createContext("acme", "c")}
	for _, id := range []string{"r1", "r2", "r3", "r1"} { // r1 retried after 2 others: evicted from a window of 2
		log = append(log, appendText("acme", "c", id, "x"))
	}
	for _, h := range []*fsmHarness{a, b} {
		for _, c := range log {
			h.mustApply(proto.Clone(c).(*cellv1.Command))
		}
	}
	if d := diffDumps(a.dump(true), b.dump(true)); d != "" {
		t.Errorf("replicas diverged: %s", d)
	}
	var last [2]uint64
	for i, h := range []*fsmHarness{a, b} {
		h.tenant("acme", func(v *TenantView) {
			c, _ := v.Context("c")
			last[i] = c.GetLastSeq()
		})
	}
	if last[0] != 4 || last[1] != 4 {
		t.Errorf("context c has %d and %d entries, want 4 on both (r1 was evicted from the window of 2)", last[0], last[1])
	}
}

// TestFSMDedupChunkedEviction: with a window of 64, ids are forgotten four
// at a time (DedupWindow/16), and never before 64 newer ids were seen.
func TestFSMDedupChunkedEviction(t *testing.T) {
	h := newFSM(t, func(c *fsmConfig) { c.dedupMaxIDs = 64 })
	h.mustApply(ownedBy("acme"))
	h.mustApply(createContext("acme", "c"))
	id := func(i int) string { return fmt.Sprintf("r%d", i) }
	for i := range 64 + 3 { // the queue may run 3 past the window
		h.mustApply(appendText("acme", "c", id(i), "x"))
	}
	if rec := h.record("acme"); rec.GetDedupFirst() != 0 || rec.GetDedupNext() != 67 {
		t.Fatalf("window [%d, %d), want [0, 67)", rec.GetDedupFirst(), rec.GetDedupNext())
	}
	if r := h.mustApply(appendText("acme", "c", id(0), "x")); !r.GetDeduplicated() {
		t.Fatalf("r0 forgotten before the queue ran a chunk past the window")
	}
	h.mustApply(appendText("acme", "c", id(67), "x")) // 68 ids: a chunk of 4 goes
	if rec := h.record("acme"); rec.GetDedupFirst() != 4 || rec.GetDedupNext() != 68 {
		t.Fatalf("window [%d, %d), want [4, 68)", rec.GetDedupFirst(), rec.GetDedupNext())
	}
	if r := h.mustApply(appendText("acme", "c", id(4), "x")); !r.GetDeduplicated() {
		t.Fatalf("r4 forgotten with the chunk before it")
	}
	for i := range 4 {
		if r := h.mustApply(appendText("acme", "c", id(i), "again")); r.GetDeduplicated() {
			t.Fatalf("%s still remembered after its chunk was evicted", id(i))
		}
	}
	checkState(t, h.f)
}

// TestFSMChangeLogTrimChunks: bounds of 16 and more are trimmed in chunks.
// The log never holds more than the bound plus a sixteenth, each soft trim
// brings it back to the bound exactly, the byte bound is never exceeded,
// and what stays is always the newest suffix, readable with Changes.
func TestFSMChangeLogTrimChunks(t *testing.T) {
	const n = 200
	for _, tc := range []struct {
		name string
		cfg  ChangeLogConfig
	}{
		{"MaxEvents", ChangeLogConfig{MaxEvents: 32}},
		{"MaxBytes", ChangeLogConfig{MaxBytes: 4000}},
		{"RetentionAge", ChangeLogConfig{RetentionAge: 32 * time.Second}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newFSM(t, func(c *fsmConfig) { c.changelog = tc.cfg })
			h.mustApply(ownedBy("acme"))
			trims := 0
			prevFirst := uint64(1)
			for i := 2; i <= n; i++ {
				c := putMemory("acme", "k", fmt.Sprintf("value-%03d", i))
				h.now += int64(time.Second)
				c.TimeUnixNano = h.now
				h.mustApply(c)
				rec := h.record("acme")
				first, count := rec.GetChangelogFirstTseq(), rec.GetChangelogCount()
				if first+count-1 != rec.GetTseq() {
					t.Fatalf("tseq %d: log [%d, +%d) is not the newest suffix", rec.GetTseq(), first, count)
				}
				switch {
				case tc.cfg.MaxEvents > 0 && count > tc.cfg.MaxEvents+tc.cfg.MaxEvents/16:
					t.Fatalf("tseq %d: %d events, bound %d + slack", rec.GetTseq(), count, tc.cfg.MaxEvents)
				case tc.cfg.MaxBytes > 0 && rec.GetChangelogBytes() > tc.cfg.MaxBytes:
					t.Fatalf("tseq %d: %d bytes over the hard bound %d", rec.GetTseq(), rec.GetChangelogBytes(), tc.cfg.MaxBytes)
				case tc.cfg.RetentionAge > 0 && h.now-rec.GetChangelogFirstTimeUnixNano() > int64(tc.cfg.RetentionAge+tc.cfg.RetentionAge/16):
					t.Fatalf("tseq %d: oldest event %v old", rec.GetTseq(), time.Duration(h.now-rec.GetChangelogFirstTimeUnixNano()))
				}
				if first != prevFirst {
					trims++
					if tc.cfg.MaxEvents > 0 && count != tc.cfg.MaxEvents {
						t.Fatalf("tseq %d: a trim left %d events, want the bound %d", rec.GetTseq(), count, tc.cfg.MaxEvents)
					}
					if first-prevFirst < 2 {
						t.Fatalf("tseq %d: trimmed %d event(s), want a chunk", rec.GetTseq(), first-prevFirst)
					}
				}
				prevFirst = first
			}
			if trims == 0 || trims > n/2 {
				t.Fatalf("%d trims in %d writes: want a few chunks", trims, n)
			}
			checkState(t, h.f)
			rec := h.record("acme")
			h.tenant("acme", func(v *TenantView) {
				evs, err := v.Changes(rec.GetChangelogFirstTseq()-1, 1000)
				if err != nil || uint64(len(evs)) != rec.GetChangelogCount() || evs[0].GetTseq() != rec.GetChangelogFirstTseq() {
					t.Fatalf("Changes = %d events, %v; record %v", len(evs), err, rec)
				}
				if _, err := v.Changes(rec.GetChangelogFirstTseq()-2, 10); !errors.Is(err, ErrChangesTrimmed) {
					t.Fatalf("Changes before the log = %v", err)
				}
			})
		})
	}
}
