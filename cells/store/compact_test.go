package store

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/cellplane/cellplane/internal/cperr"
	"github.com/cellplane/cellplane/internal/tokens"
	cellv1 "github.com/cellplane/cellplane/proto/cellplane/cell/v1"
	contextv1 "github.com/cellplane/cellplane/proto/cellplane/context/v1"
	"google.golang.org/protobuf/proto"
)

func compact(tenant, id string, upTo uint64, summary string) *cellv1.Command {
	return &cellv1.Command{Tenant: tenant, Op: &cellv1.Command_CompactContext{CompactContext: &contextv1.CompactRequest{
		ContextId: id, UpToSeq: upTo, Summary: summary}}}
}

func createWithEncoding(tenant, id, enc string) *cellv1.Command {
	c := createContext(tenant, id)
	c.GetCreateContext().TokenEncoding = enc
	return c
}

// stampedAppend is an append as the cell service proposes it: each
// entry's count stamped, with the encoding it was counted in.
func stampedAppend(tenant, id, enc string, counts []uint32, texts ...string) *cellv1.Command {
	c := appendText(tenant, id, "", texts...)
	c.GetAppend().TokenEncoding = enc
	for i, e := range c.GetAppend().GetEntries() {
		e.TokenCount = counts[i]
	}
	return c
}

// readCtx reads a context through ReadContext on the harness's state.
func readCtx(t *testing.T, h *fsmHarness, id string, q ReadQuery) *contextv1.ReadResponse {
	t.Helper()
	var out *contextv1.ReadResponse
	h.tenant("acme", func(v *TenantView) {
		c, err := v.Context(id)
		if err != nil {
			t.Fatalf("context %s: %v", id, err)
		}
		if out, err = v.ReadContext(c, q); err != nil {
			t.Fatalf("read %s: %v", id, err)
		}
	})
	return out
}

func seqs(es []*contextv1.Entry) []uint64 {
	var out []uint64
	for _, e := range es {
		out = append(out, e.GetSeq())
	}
	return out
}

var all = ReadQuery{MaxEntries: 1 << 30, MaxBytes: 1 << 62}

// TestFSMTokenCounts: entries keep the proposer's counts when it counted
// in the context's encoding, and are counted in apply otherwise; the
// context totals them; the encoding is the create's.
func TestFSMTokenCounts(t *testing.T) {
	base := cmds(ownedBy("acme"), createWithEncoding("acme", "c1", "cl100k_base"))
	runOpCases(t, []opCase{
		{name: "stamped in the context's encoding: kept", setup: base,
			cmd: stampedAppend("acme", "c1", "cl100k_base", []uint32{7, 0}, "hello world", ""),
			check: func(t *testing.T, h *fsmHarness, _ *cellv1.CommandResult) {
				r := readCtx(t, h, "c1", all)
				if r.GetEntries()[0].GetTokenCount() != 7 || r.GetTotalTokens() != 7 || r.GetTokenEncoding() != "cl100k_base" {
					t.Fatalf("read %v", r)
				}
			}},
		{name: "stamped in another encoding: counted in apply", setup: base,
			cmd: stampedAppend("acme", "c1", "o200k_base", []uint32{99}, "supercalifragilistic"),
			check: func(t *testing.T, h *fsmHarness, _ *cellv1.CommandResult) {
				want := tokens.Text("cl100k_base", "supercalifragilistic")
				if r := readCtx(t, h, "c1", all); r.GetEntries()[0].GetTokenCount() != want || r.GetTotalTokens() != uint64(want) {
					t.Fatalf("read %v, want %d tokens", r, want)
				}
			}},
		{name: "not stamped: counted in apply", setup: base,
			cmd: appendText("acme", "c1", "", "hello world", "hello"),
			check: func(t *testing.T, h *fsmHarness, _ *cellv1.CommandResult) {
				if r := readCtx(t, h, "c1", all); r.GetTotalTokens() != 3 || r.GetTokensReturned() != 3 {
					t.Fatalf("read %v, want 3 tokens", r)
				}
			}},
		{name: "no encoding at create: the default", setup: cmds(ownedBy("acme"), createContext("acme", "c2")),
			cmd: appendText("acme", "c2", "", "hello world"),
			check: func(t *testing.T, h *fsmHarness, _ *cellv1.CommandResult) {
				if r := readCtx(t, h, "c2", all); r.GetTokenEncoding() != tokens.Default || r.GetTotalTokens() != 2 {
					t.Fatalf("read %v", r)
				}
			}},
	})
}

// TestFSMCompact: the compact_context op's rejections (nothing written)
// and successes, nesting, reads with and without raw, delete.
func TestFSMCompact(t *testing.T) {
	base := cmds(ownedBy("acme"), createContext("acme", "c1"), appendText("acme", "c1", "", "one", "two", "three", "four", "five"))
	once := append(cmds(), append(base, compact("acme", "c1", 2, "first two"))...)
	runOpCases(t, []opCase{
		{name: "missing context", setup: base, cmd: compact("acme", "nope", 1, "s"), reason: cperr.ContextNotFound},
		{name: "up_to_seq 0", setup: base, cmd: compact("acme", "c1", 0, "s"), reason: cperr.InvalidArgument},
		{name: "past last_seq", setup: base, cmd: compact("acme", "c1", 6, "s"), reason: cperr.InvalidArgument},
		{name: "not past the last compaction", setup: once, cmd: compact("acme", "c1", 2, "again"), reason: cperr.InvalidArgument},
		{name: "below the last compaction", setup: once, cmd: compact("acme", "c1", 1, "less"), reason: cperr.InvalidArgument},
		{name: "not owner", setup: cmds(setTenant("acme", fenced, 1)), cmd: compact("acme", "c1", 1, "s"), reason: cperr.WrongCell, meta: map[string]string{cperr.MetaRole: "ROLE_FENCED", cperr.MetaEpoch: "1"}},
		{name: "first", setup: base, cmd: compact("acme", "c1", 2, "first two"),
			check: func(t *testing.T, h *fsmHarness, res *cellv1.CommandResult) {
				if res.GetTseq() != 4 {
					t.Errorf("tseq %d, want 4", res.GetTseq())
				}
				s := res.GetCompact().GetSummary()
				if s.GetUpToSeq() != 2 || s.GetFromSeq() != 1 || s.GetText() != "first two" || s.GetTokenCount() != tokens.Text("", "first two") ||
					res.GetCompact().GetContext().GetCompactedSeq() != 2 {
					t.Fatalf("result %v", res)
				}
				r := readCtx(t, h, "c1", all)
				if !proto.Equal(r.GetSummary(), s) || fmt.Sprint(seqs(r.GetEntries())) != "[3 4 5]" || r.GetNextSeq() != 6 {
					t.Fatalf("read %v", r)
				}
				if r.GetTokensReturned() != uint64(s.GetTokenCount())+3 {
					t.Errorf("tokens returned %d", r.GetTokensReturned())
				}
				raw := all
				raw.Raw = true
				if r := readCtx(t, h, "c1", raw); r.GetSummary() != nil || len(r.GetEntries()) != 5 {
					t.Fatalf("raw read %v", r)
				}
				from4 := all
				from4.FromSeq = 4
				if r := readCtx(t, h, "c1", from4); r.GetSummary() != nil || fmt.Sprint(seqs(r.GetEntries())) != "[4 5]" {
					t.Fatalf("read from 4 %v", r)
				}
			}},
		{name: "nested: a later summary covers the earlier", setup: once, cmd: compact("acme", "c1", 4, "first four"),
			check: func(t *testing.T, h *fsmHarness, res *cellv1.CommandResult) {
				r := readCtx(t, h, "c1", all)
				if r.GetSummary().GetText() != "first four" || r.GetSummary().GetUpToSeq() != 4 || fmt.Sprint(seqs(r.GetEntries())) != "[5]" {
					t.Fatalf("read %v", r)
				}
				from2 := all
				from2.FromSeq = 2 // inside both ranges: the newest summary stands in
				if r := readCtx(t, h, "c1", from2); r.GetSummary().GetUpToSeq() != 4 {
					t.Fatalf("read from 2 %v", r)
				}
				h.tenant("acme", func(v *TenantView) {
					if s, err := v.Summary("c1", 2); err != nil || s.GetText() != "first two" {
						t.Fatalf("the earlier summary: %v, %v", s, err)
					}
				})
			}},
		{name: "all entries", setup: once, cmd: compact("acme", "c1", 5, "everything"),
			check: func(t *testing.T, h *fsmHarness, res *cellv1.CommandResult) {
				if r := readCtx(t, h, "c1", all); r.GetSummary().GetUpToSeq() != 5 || len(r.GetEntries()) != 0 || r.GetNextSeq() != 6 {
					t.Fatalf("read %v", r)
				}
			}},
		{name: "delete removes summaries", setup: once, cmd: deleteContext("acme", "c1"),
			check: func(t *testing.T, h *fsmHarness, res *cellv1.CommandResult) {
				for _, kv := range h.dump(false) {
					if strings.Contains(kv.k, "\x00o") {
						t.Fatalf("summary key left: %q", kv.k)
					}
				}
			}},
	})
}

// TestFSMCompactDedupAndReplay: a compaction with a request id applies
// once; after a restart the state (counts, summaries) is as it was, and a
// second replica fed the same log holds the same bytes.
func TestFSMCompactDedupAndReplay(t *testing.T) {
	log := cmds(ownedBy("acme"), createWithEncoding("acme", "c1", "cl100k_base"),
		stampedAppend("acme", "c1", "cl100k_base", []uint32{5, 6}, "a", "b"),
		withReq(compact("acme", "c1", 1, "a summary"), "k1"))
	h, other := newFSM(t), newFSM(t)
	for _, c := range log {
		h.mustApply(proto.Clone(c).(*cellv1.Command))
		other.mustApply(proto.Clone(c).(*cellv1.Command))
	}
	again := h.mustApply(withReq(compact("acme", "c1", 2, "different"), "k1"))
	if !again.GetDeduplicated() || again.GetCompact().GetSummary().GetUpToSeq() != 1 {
		t.Fatalf("retried request id: %v", again)
	}
	other.mustApply(withReq(compact("acme", "c1", 2, "different"), "k1"))
	before := h.dump(false)
	h.reopen()
	if d := diffDumps(before, h.dump(false)); d != "" {
		t.Fatalf("state changed across a restart: %s", d)
	}
	if d := diffDumps(h.dump(false), other.dump(false)); d != "" {
		t.Fatalf("replicas differ: %s", d)
	}
	r := readCtx(t, h, "c1", all)
	if r.GetSummary().GetText() != "a summary" || r.GetTotalTokens() != 11 || fmt.Sprint(seqs(r.GetEntries())) != "[2]" {
		t.Fatalf("after restart: %v", r)
	}
	checkState(t, h.f)
}

// TestReplicaKeepsCountsAndSummaries: a standby bootstrapped from an
// export (a move's path too) and fed the change stream holds the source's
// token counts, even counts it would not compute itself, and its
// summaries; promoted, it reads alike.
func TestReplicaKeepsCountsAndSummaries(t *testing.T) {
	src, dst := openSingle(t, ""), openSingle(t, "")
	setOwner(t, src, "acme", 1)
	mustPropose(t, src, createWithEncoding("acme", "c", "o200k_base"))
	for i := range 6 {
		// 1000+i is no tokenizer's count of "x": a standby that counted
		// again would differ.
		mustPropose(t, src, stampedAppend("acme", "c", "o200k_base", []uint32{uint32(1000 + i)}, "x"))
	}
	mustPropose(t, src, compact("acme", "c", 2, "exported summary"))
	mustPropose(t, dst, standbyOf("acme", "src", 1, false))
	rec := bootstrap(t, src, dst, "acme")
	mustPropose(t, src, stampedAppend("acme", "c", "o200k_base", []uint32{4242}, "streamed"))
	mustPropose(t, src, compact("acme", "c", 5, "streamed summary"))
	mustPropose(t, dst, applyEvents("acme", changesAfter(t, src, "acme", rec.GetTseq())))
	if d := diffDumps(dumpRange(t, src.fsm, tenantPrefix("acme"), tenantEnd("acme"), false),
		dumpRange(t, dst.fsm, tenantPrefix("acme"), tenantEnd("acme"), false)); d != "" {
		t.Fatalf("standby differs from its source: %s", d)
	}
	mustPropose(t, src, setTenant("acme", fenced, 2))
	mustPropose(t, dst, applyEvents("acme", changesAfter(t, src, "acme", mustRecord(t, dst, "acme").GetTseq())))
	mustPropose(t, dst, setTenant("acme", owner, 2))
	var r *contextv1.ReadResponse
	if err := dst.ReadTenant(testCtx(t), "acme", 0, ReadOptions{}, func(v *TenantView) error {
		c, err := v.Context("c")
		if err == nil {
			r, err = v.ReadContext(c, all)
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if r.GetSummary().GetText() != "streamed summary" || fmt.Sprint(seqs(r.GetEntries())) != "[6 7]" ||
		r.GetEntries()[0].GetTokenCount() != 1005 || r.GetEntries()[1].GetTokenCount() != 4242 ||
		r.GetTotalTokens() != 1000+1001+1002+1003+1004+1005+4242 {
		t.Fatalf("promoted standby reads %v", r)
	}
}

// TestBudgetedReadNeverExceedsBudget is a property test: over random
// contexts (random texts, counts and compactions) and random reads, a
// read with max_tokens returns at most that many tokens, counts them
// right, returns a contiguous run of entries that ends at the newest one
// it could, and a summary only when the read reaches into its range.
func TestBudgetedReadNeverExceedsBudget(t *testing.T) {
	rng := rand.New(rand.NewPCG(17, 1))
	words := []string{"the", "agent", "reads", "context", "🙂", "tokens", "budget", "日本語", "x", "  ", "\n", "supercalifragilistic"}
	text := func() string {
		var b strings.Builder
		for range rng.IntN(40) {
			b.WriteString(words[rng.IntN(len(words))])
			b.WriteByte(' ')
		}
		return b.String()
	}
	for round := range 12 {
		h := newFSM(t)
		h.mustApply(ownedBy("acme"))
		h.mustApply(createContext("acme", "c"))
		n := 1 + rng.IntN(60)
		for i := 0; i < n; {
			k := 1 + rng.IntN(4)
			var ts []string
			for range k {
				ts = append(ts, text())
			}
			h.mustApply(appendText("acme", "c", "", ts...))
			i += k
		}
		last := readCtx(t, h, "c", all).GetLastSeq()
		var compacted uint64
		for range rng.IntN(3) {
			if compacted >= last {
				break
			}
			compacted += 1 + uint64(rng.IntN(int(last-compacted)))
			h.mustApply(compact("acme", "c", compacted, text()))
		}
		raw := readCtx(t, h, "c", ReadQuery{MaxEntries: 1 << 30, MaxBytes: 1 << 62, Raw: true}).GetEntries()
		for range 200 {
			q := ReadQuery{MaxTokens: uint64(rng.IntN(400)), MaxEntries: 1 + rng.IntN(80), MaxBytes: uint64(1 + rng.IntN(4000)),
				FromSeq: uint64(rng.IntN(int(last) + 2)), Raw: rng.IntN(4) == 0}
			if q.MaxTokens == 0 {
				q.MaxTokens = 1
			}
			r := readCtx(t, h, "c", q)
			var sum uint64
			for i, e := range r.GetEntries() {
				sum += uint64(e.GetTokenCount())
				if i > 0 && e.GetSeq() != r.GetEntries()[i-1].GetSeq()+1 {
					t.Fatalf("round %d %+v: entries not contiguous: %v", round, q, seqs(r.GetEntries()))
				}
				if e.GetSeq() < max(q.FromSeq, 1) || (!q.Raw && e.GetSeq() <= compacted) {
					t.Fatalf("round %d %+v: entry %d outside the read (compacted %d)", round, q, e.GetSeq(), compacted)
				}
			}
			if s := r.GetSummary(); s != nil {
				sum += uint64(s.GetTokenCount())
				if q.Raw || max(q.FromSeq, 1) > s.GetUpToSeq() || s.GetUpToSeq() != compacted {
					t.Fatalf("round %d %+v: summary %v returned (compacted %d)", round, q, s, compacted)
				}
			}
			if sum > q.MaxTokens || sum != r.GetTokensReturned() {
				t.Fatalf("round %d %+v: %d tokens returned (reported %d), budget %d", round, q, sum, r.GetTokensReturned(), q.MaxTokens)
			}
			// The newest entry is returned whenever it alone fits the
			// budget left after the summary (caps allow at least one).
			lower := max(q.FromSeq, 1)
			if !q.Raw && compacted > 0 && lower <= compacted {
				lower = compacted + 1
			}
			if lower <= last {
				left := q.MaxTokens - min(q.MaxTokens, uint64(r.GetSummary().GetTokenCount()))
				newest := raw[last-1]
				if fits := uint64(newest.GetTokenCount()) <= left; fits != (len(r.GetEntries()) > 0 && r.GetEntries()[len(r.GetEntries())-1].GetSeq() == last) {
					t.Fatalf("round %d %+v: newest entry (%d tokens, %d left) fits=%v but read %v", round, q, newest.GetTokenCount(), left, fits, seqs(r.GetEntries()))
				}
			}
		}
	}
}

// TestForkReadsThroughTheBudget: a fork's budgeted and ranged reads stitch
// its source's prefix with its own entries, newest first within the
// budget, and count tokens in the source's encoding.
func TestForkReadsThroughTheBudget(t *testing.T) {
	h := newFSM(t)
	h.mustApply(ownedBy("acme"))
	h.mustApply(createContext("acme", "src"))
	for i := range 6 {
		h.mustApply(appendText("acme", "src", fmt.Sprint("s", i), fmt.Sprintf("source entry %d", i+1)))
	}
	h.mustApply(forkCmd("acme", "src", 4, "f"))
	for i := range 3 {
		h.mustApply(appendText("acme", "f", fmt.Sprint("f", i), fmt.Sprintf("fork entry %d", i+5)))
	}
	all := readCtx(t, h, "f", ReadQuery{MaxEntries: 100, MaxBytes: 1 << 20})
	if got := seqs(all.GetEntries()); fmt.Sprint(got) != "[1 2 3 4 5 6 7]" {
		t.Fatalf("fork read = %v, want the source's 1..4 then its own 5..7", got)
	}
	if all.GetEntries()[3].GetText() != "source entry 4" || all.GetEntries()[4].GetText() != "fork entry 5" {
		t.Fatalf("stitched entries: %v", all.GetEntries())
	}
	per := EntryTokens(all.GetTokenEncoding(), all.GetEntries()[0])
	budget := readCtx(t, h, "f", ReadQuery{MaxEntries: 100, MaxBytes: 1 << 20, MaxTokens: 5 * per})
	got := seqs(budget.GetEntries())
	if len(got) == 0 || got[len(got)-1] != 7 || budget.GetTokensReturned() > 5*per {
		t.Fatalf("budgeted fork read = %v (%d tokens of %d)", got, budget.GetTokensReturned(), 5*per)
	}
	if got[0] > 4 {
		t.Fatalf("budgeted fork read %v stops at the fork's own entries: the budget reaches into the source's", got)
	}
}
