package store

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	cellv1 "github.com/cellplane/cellplane/proto/cellplane/cell/v1"
	contextv1 "github.com/cellplane/cellplane/proto/cellplane/context/v1"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
)

// keywordProblems checks a tenant's keyword index against its keys (raw:
// every key relative to the tenant prefix): each forward entry names a
// stored document and lists exactly the postings that exist (tf and
// length agree), and the class counters are the sums of the forward
// entries. stateProblems runs it for every tenant.
func keywordProblems(raw map[string][]byte) []string {
	var probs []string
	bad := func(format string, args ...any) { probs = append(probs, fmt.Sprintf(format, args...)) }
	want := map[string]bool{}
	stats := map[byte]keywordStats{}
	for k, fwd := range raw {
		if k[0] != kindForward {
			continue
		}
		doc := k[1:]
		if _, ok := raw[doc]; !ok || (doc[0] != kindEntry && doc[0] != kindMemory && doc[0] != kindPrincipalMemory) {
			bad("forward entry of missing document %q", doc)
		}
		length, n := binary.Uvarint(fwd)
		if n <= 0 {
			bad("forward entry %q is malformed", doc)
			continue
		}
		var sum uint64
		for b := fwd[n:]; len(b) > 0; {
			l, w := binary.Uvarint(b)
			if w <= 0 || uint64(len(b)-w) < l {
				bad("forward entry %q is malformed", doc)
				break
			}
			term := string(b[w : w+int(l)])
			b = b[w+int(l):]
			tf, w := binary.Uvarint(b)
			if w <= 0 {
				bad("forward entry %q is malformed", doc)
				break
			}
			b = b[w:]
			sum += tf
			pk := string(kindPosting) + term + "\x00" + doc
			want[pk] = true
			v, ok := raw[pk]
			if !ok {
				bad("posting %q of %q is missing", term, doc)
				continue
			}
			ptf, w1 := binary.Uvarint(v)
			pdl, w2 := binary.Uvarint(v[max(w1, 0):])
			if w1 <= 0 || w2 <= 0 || ptf != tf || pdl != length {
				bad("posting %q of %q holds tf %d length %d; forward says %d, %d", term, doc, ptf, pdl, tf, length)
			}
		}
		if sum != length {
			bad("forward entry %q: length %d, term frequencies sum to %d", doc, length, sum)
		}
		s := stats[docClass([]byte(doc))]
		s.docs++
		s.length += length
		stats[docClass([]byte(doc))] = s
	}
	for k := range raw {
		if k[0] == kindPosting && !want[k] {
			bad("posting %q is listed by no forward entry", k)
		}
	}
	for _, class := range []byte{classEntry, classMemory} {
		v, ok := raw[string([]byte{kindKeywordStats, class})]
		got := decodeKeywordStats(v)
		if ok != (stats[class].docs > 0) || got != stats[class] {
			bad("class %c counters %+v (stored %v); forward entries sum to %+v", class, got, ok, stats[class])
		}
	}
	return probs
}

func TestTokenizer(t *testing.T) {
	for _, tc := range []struct {
		in       string
		terms    uint32
		bytes    uint32
		want     []string
		wantLen  int
		comments string
	}{
		{in: "Hello, World! hello", want: []string{"hello", "world", "hello"}},
		{in: "naïve CAFÉ Straße 42nd", want: []string{"naïve", "café", "straße", "42nd"}},
		{in: "a\x00b\xffc", want: []string{"a", "b", "c"}},
		{in: "ΑΘΗΝΑ über", want: []string{"αθηνα", "über"}},
		{in: "snake_case kebab-case", want: []string{"snake", "case", "kebab", "case"}},
		{in: "one two three four", terms: 2, want: []string{"one", "two"}},
		{in: "abcdefghij éé", bytes: 4, want: []string{"abcd", "éé"}},
		{in: "ééé", bytes: 5, want: []string{"éé"}},
		{in: "  ...  ", want: nil},
	} {
		var got []string
		n := newTokenizer(tc.terms, max(tc.bytes, 0)).each(tc.in, func(term []byte) { got = append(got, string(term)) })
		if !slices.Equal(got, tc.want) || n != len(tc.want) {
			t.Errorf("tokenize(%q) = %q (%d), want %q", tc.in, got, n, tc.want)
		}
	}
}

func FuzzTokenizer(f *testing.F) {
	for _, s := range []string{"", "Hello World", "naïve ΑΘΗΝΑ 42", "a\x00b\xff", strings.Repeat("x", 100)} {
		f.Add(s, uint32(3), uint32(8))
	}
	f.Fuzz(func(t *testing.T, s string, maxTerms, maxBytes uint32) {
		maxTerms, maxBytes = maxTerms%64, maxBytes%80
		if maxBytes > 0 && maxBytes < utf8.UTFMax {
			maxBytes = utf8.UTFMax
		}
		tok := newTokenizer(maxTerms, maxBytes)
		var a, b []string
		n := tok.each(s, func(term []byte) { a = append(a, string(term)) })
		tok.each(s, func(term []byte) { b = append(b, string(term)) })
		if !slices.Equal(a, b) || n != len(a) || n > tok.maxTerms {
			t.Fatalf("not deterministic or over bounds: %q vs %q (%d)", a, b, n)
		}
		for _, term := range a {
			if term == "" || len(term) > tok.maxBytes || !utf8.ValidString(term) || strings.IndexByte(term, 0) >= 0 {
				t.Fatalf("bad term %q of %q", term, s)
			}
			// A term tokenizes to itself: queries find what was indexed.
			var again []string
			tok.each(term, func(x []byte) { again = append(again, string(x)) })
			if len(again) != 1 || again[0] != term {
				t.Fatalf("term %q tokenizes to %q", term, again)
			}
		}
		_, tf, length := tok.terms(s)
		sum := 0
		for _, c := range tf {
			sum += int(c)
		}
		if sum != length || length != n {
			t.Fatalf("terms: sum %d length %d each %d", sum, length, n)
		}
	})
}

// searchEntries runs a keyword search over the harness's tenant acme and
// returns "ctx/seq" of the hits, best first.
func searchEntries(t *testing.T, h *fsmHarness, q string, matchAll bool, ids ...string) []string {
	t.Helper()
	var out []string
	h.tenant("acme", func(v *TenantView) {
		v.now = h.now
		res, err := v.KeywordEntries(KeywordQuery{Text: q, MatchAll: matchAll, Limit: 10}, ids, nil)
		if err != nil {
			t.Fatal(err)
		}
		for _, hit := range res.Entries {
			out = append(out, fmt.Sprintf("%s/%d", hit.ContextID, hit.Entry.GetSeq()))
		}
	})
	return out
}

func searchMemory(t *testing.T, h *fsmHarness, principal, q string) []string {
	t.Helper()
	var out []string
	h.tenant("acme", func(v *TenantView) {
		v.now = h.now
		res, err := v.KeywordMemory(KeywordQuery{Text: q, Limit: 10}, principal, "", nil)
		if err != nil {
			t.Fatal(err)
		}
		for _, hit := range res.Memory {
			out = append(out, hit.Item.GetKey())
		}
	})
	return out
}

// TestKeywordRelevance: known documents, expected BM25 order.
func TestKeywordRelevance(t *testing.T) {
	h := newFSM(t)
	h.mustApply(setTenant("acme", owner, 1))
	h.mustApply(createContext("acme", "c1"))
	h.mustApply(createContext("acme", "c2"))
	h.mustApply(appendText("acme", "c1", "",
		"the cat sat on the mat",                 // c1/1
		"dogs and cats are pets",                 // c1/2
		"the quick brown fox jumps over the dog", // c1/3
		"cat cat cat: a story about a cat",       // c1/4
		"nothing to see here",                    // c1/5
	))
	h.mustApply(appendText("acme", "c2", "",
		"a brown dog and a brown cat", // c2/1
		"quantum chromodynamics lecture notes on gluons and the strong force in physics", // c2/2
	))
	for _, tc := range []struct {
		q        string
		matchAll bool
		ids      []string
		want     []string
	}{
		{q: "cat", want: []string{"c1/4", "c1/1", "c2/1"}},               // tf, then the shorter document
		{q: "CAT!", want: []string{"c1/4", "c1/1", "c2/1"}},              // same terms after tokenizing
		{q: "brown dog", want: []string{"c2/1", "c1/3"}},                 // both terms, tf 2 beats tf 1
		{q: "brown cat", matchAll: true, want: []string{"c2/1"}},         // AND
		{q: "brown cat", want: []string{"c2/1", "c1/4", "c1/3", "c1/1"}}, // rarer "brown" outweighs "cat"
		{q: "cat", ids: []string{"c2"}, want: []string{"c2/1"}},          // restricted to a context
		{q: "gluons", want: []string{"c2/2"}},
		{q: "unicorn", want: nil},
		{q: "...", want: nil},
	} {
		if got := searchEntries(t, h, tc.q, tc.matchAll, tc.ids...); !slices.Equal(got, tc.want) {
			t.Errorf("search %q (all %v, ids %v) = %v, want %v", tc.q, tc.matchAll, tc.ids, got, tc.want)
		}
	}
	checkState(t, h.f)

	// Restart: the index is state.
	h.reopen()
	if got := searchEntries(t, h, "cat", false); !slices.Equal(got, []string{"c1/4", "c1/1", "c2/1"}) {
		t.Errorf("after restart: %v", got)
	}
}

// TestKeywordRemovals: deletes, overwrites, expiry, forks and erasure
// leave no postings behind (checkState verifies the index whole).
func TestKeywordRemovals(t *testing.T) {
	h := newFSM(t)
	h.mustApply(setTenant("acme", owner, 1))
	h.mustApply(createContext("acme", "p"))
	h.mustApply(appendText("acme", "p", "", "zebra one", "zebra two"))
	h.mustApply(forkCmd("acme", "p", 1, "f"))
	h.mustApply(appendText("acme", "f", "", "zebra fork"))
	if got := searchEntries(t, h, "zebra", false); len(got) != 3 {
		t.Fatalf("before: %v", got)
	}
	// A deleted source forks still read: its entries stay stored (and
	// indexed) but are not found; the fork's own are.
	h.mustApply(deleteContext("acme", "p"))
	if got := searchEntries(t, h, "zebra", false); !slices.Equal(got, []string{"f/2"}) {
		t.Fatalf("after deleting the fork source: %v", got)
	}
	checkState(t, h.f)
	h.mustApply(deleteContext("acme", "f")) // last fork: the source's entries go too
	if got := searchEntries(t, h, "zebra", false); got != nil {
		t.Fatalf("after deleting the fork: %v", got)
	}
	checkState(t, h.f)
	h.tenant("acme", func(v *TenantView) {
		if n := countKind(t, h, kindPosting) + countKind(t, h, kindForward) + countKind(t, h, kindKeywordStats); n != 0 {
			t.Errorf("%d keyword keys left with no documents", n)
		}
	})

	// Memory: overwrite, binary value, delete, expiry.
	h.mustApply(putMemory("acme", "k1", "apple banana"))
	h.mustApply(putMemory("acme", "k1", "cherry"))
	h.mustApply(putMemory("acme", "k2", "apple"))
	h.mustApply(putMemory("acme", "bin", "apple \xff\xfe"))
	if got := searchMemory(t, h, "", "apple"); !slices.Equal(got, []string{"k2"}) {
		t.Fatalf("apple = %v", got)
	}
	if got := searchMemory(t, h, "", "cherry"); !slices.Equal(got, []string{"k1"}) {
		t.Fatalf("cherry = %v", got)
	}
	h.mustApply(deleteMemory("acme", "k2"))
	short := putMemory("acme", "k3", "durian")
	short.GetPutMemory().Ttl = durationpb.New(time.Millisecond)
	h.mustApply(short)
	h.now += int64(time.Second)
	if got := searchMemory(t, h, "", "durian"); got != nil {
		t.Fatalf("expired key found: %v", got)
	}
	h.mustApply(&cellv1.Command{Tenant: "acme", Op: &cellv1.Command_ExpireSweep{ExpireSweep: &cellv1.ExpireSweepOp{}}})
	if got := searchMemory(t, h, "", "apple durian"); got != nil {
		t.Fatalf("after delete and sweep: %v", got)
	}
	checkState(t, h.f)

	// Erasure of a principal removes its contexts' and memory's postings.
	h.mustApply(as("alice", createContext("acme", "ca")))
	h.mustApply(as("alice", appendText("acme", "ca", "", "secretword alpha")))
	h.mustApply(as("alice", putMemory("acme", "m", "secretword beta")))
	h.mustApply(as("bob", putMemory("acme", "m", "public gamma")))
	h.mustApply(eraseCmd("acme", kindPrincipal, "alice"))
	if got := searchEntries(t, h, "secretword", false); got != nil {
		t.Fatalf("erased entries found: %v", got)
	}
	if got := searchMemory(t, h, "alice", "secretword"); got != nil {
		t.Fatalf("erased memory found: %v", got)
	}
	for _, kv := range dumpRange(t, h.f, tenantPrefix("acme"), tenantEnd("acme"), false) {
		if strings.Contains(kv.k, "secretword") || strings.Contains(kv.v, "secretword") {
			t.Fatalf("erased term still stored at %q", kv.k)
		}
	}
	checkState(t, h.f)
}

func countKind(t *testing.T, h *fsmHarness, kind byte) int {
	p := tenantKey("acme", kind, 0)
	return len(dumpRange(t, h.f, p, prefixEnd(p), false))
}

// TestKeywordMemoryScopes: a principal's search never sees another's
// memory, nor the tenant's unless it asks for that scope.
func TestKeywordMemoryScopes(t *testing.T) {
	h := newFSM(t)
	h.mustApply(setTenant("acme", owner, 1))
	h.mustApply(as("alice", putMemory("acme", "k", "tulip alice")))
	h.mustApply(as("bob", putMemory("acme", "k", "tulip bob")))
	h.mustApply(as("alice", scoped(putMemory("acme", "shared", "tulip shared"), tenantScope)))
	for _, tc := range []struct {
		principal string
		want      []string
	}{{"alice", []string{"k"}}, {"bob", []string{"k"}}, {"", []string{"shared"}}, {"carol", nil}} {
		var vals []string
		h.tenant("acme", func(v *TenantView) {
			res, err := v.KeywordMemory(KeywordQuery{Text: "tulip", Limit: 10}, tc.principal, "", nil)
			if err != nil {
				t.Fatal(err)
			}
			for _, m := range res.Memory {
				vals = append(vals, string(m.Item.GetValue()))
			}
		})
		if len(vals) != len(tc.want) || (len(vals) == 1 && !strings.Contains(vals[0], map[string]string{"alice": "alice", "bob": "bob", "": "shared"}[tc.principal])) {
			t.Errorf("%q sees %q", tc.principal, vals)
		}
	}
	// A prefix restricts by key.
	h.tenant("acme", func(v *TenantView) {
		res, _ := v.KeywordMemory(KeywordQuery{Text: "tulip", Limit: 10}, "", "x", nil)
		if len(res.Memory) != 0 {
			t.Errorf("prefix x: %v", res.Memory)
		}
	})
}

// TestKeywordIndexOff: with the replicated setting off nothing is indexed
// (and documents indexed before still leave cleanly).
func TestKeywordIndexOff(t *testing.T) {
	h := newFSM(t)
	h.mustApply(setTenant("acme", owner, 1))
	h.mustApply(createContext("acme", "c"))
	h.mustApply(appendText("acme", "c", "", "indexed words"))
	h.mustApply(&cellv1.Command{Op: &cellv1.Command_CellSettings{CellSettings: &cellv1.CellSettings{KeywordIndexOff: true}}})
	h.mustApply(appendText("acme", "c", "", "unindexed words"))
	if got := searchEntries(t, h, "words", false); !slices.Equal(got, []string{"c/1"}) {
		t.Fatalf("with the index off: %v", got)
	}
	h.mustApply(deleteContext("acme", "c"))
	checkState(t, h.f)
	if n := countKind(t, h, kindPosting); n != 0 {
		t.Fatalf("%d postings left", n)
	}
}

// TestKeywordTruncated: the scan stops at MaxPostings and says so.
func TestKeywordTruncated(t *testing.T) {
	h := newFSM(t)
	h.mustApply(setTenant("acme", owner, 1))
	h.mustApply(createContext("acme", "c"))
	h.mustApply(appendText("acme", "c", "", "w a", "w b", "w c", "w d"))
	h.tenant("acme", func(v *TenantView) {
		res, err := v.KeywordEntries(KeywordQuery{Text: "w", Limit: 10, MaxPostings: 2}, nil, nil)
		if err != nil || !res.Truncated || len(res.Entries) != 2 {
			t.Fatalf("truncated search = %+v, %v", res, err)
		}
	})
}

// TestKeywordFollowsMovesAndStandbys: the index is in the tenant range, so
// an export (move, standby bootstrap) carries it, apply_changes writes it
// as the source did (the ranges are byte-identical), a promoted standby
// serves searches, and a snapshot restores it.
func TestKeywordFollowsMovesAndStandbys(t *testing.T) {
	src, dst := openSingle(t, ""), openSingle(t, "")
	setOwner(t, src, "acme", 1)
	mustPropose(t, src, createContext("acme", "c"))
	mustPropose(t, src, appendText("acme", "c", "r1", "orchid alpha", "orchid beta"))
	mustPropose(t, src, putMemory("acme", "m", "orchid memory"))
	mustPropose(t, dst, standbyOf("acme", "src", 1, false))
	rec := bootstrap(t, src, dst, "acme") // the export carries the index

	mustPropose(t, src, appendText("acme", "c", "r2", "orchid gamma"))
	mustPropose(t, src, putMemory("acme", "m", "lily"))
	mustPropose(t, src, createContext("acme", "d"))
	mustPropose(t, src, appendText("acme", "d", "r3", "orchid delta"))
	mustPropose(t, src, deleteContext("acme", "d"))
	mustPropose(t, dst, applyEvents("acme", changesAfter(t, src, "acme", rec.GetTseq())))
	if d := diffDumps(dumpRange(t, src.fsm, tenantPrefix("acme"), tenantEnd("acme"), false),
		dumpRange(t, dst.fsm, tenantPrefix("acme"), tenantEnd("acme"), false)); d != "" {
		t.Fatalf("standby differs from its source: %s", d)
	}
	checkState(t, dst.fsm)
	mustPropose(t, src, setTenant("acme", fenced, 2))
	mustPropose(t, dst, applyEvents("acme", changesAfter(t, src, "acme", mustRecord(t, dst, "acme").GetTseq())))
	mustPropose(t, dst, setTenant("acme", owner, 2))
	var got []string
	if err := dst.ReadTenant(testCtx(t), "acme", 0, ReadOptions{}, func(v *TenantView) error {
		res, err := v.KeywordEntries(KeywordQuery{Text: "orchid", Limit: 10}, nil, nil)
		for _, h := range res.Entries {
			got = append(got, h.Entry.GetText())
		}
		mres, _ := v.KeywordMemory(KeywordQuery{Text: "lily", Limit: 10}, "", "", nil)
		if len(mres.Memory) != 1 {
			t.Errorf("promoted standby: memory hits %v", mres.Memory)
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	slices.Sort(got)
	if !slices.Equal(got, []string{"orchid alpha", "orchid beta", "orchid gamma"}) {
		t.Fatalf("promoted standby finds %q", got)
	}
}

func TestKeywordSnapshot(t *testing.T) {
	src := newFSM(t)
	src.mustApply(setTenant("acme", owner, 1))
	src.mustApply(createContext("acme", "c"))
	src.mustApply(appendText("acme", "c", "", "violet"))
	data := takeSnapshot(t, src)
	dst := newFSM(t)
	if err := restore(t, dst, data); err != nil {
		t.Fatal(err)
	}
	if got := searchEntries(t, dst, "violet", false); !slices.Equal(got, []string{"c/1"}) {
		t.Fatalf("after snapshot install: %v", got)
	}
	if !bytes.Equal([]byte(fmt.Sprint(src.dump(false))), []byte(fmt.Sprint(dst.dump(false)))) {
		t.Fatal("restored state differs")
	}
}

var _ = contextv1.MemoryScope_MEMORY_SCOPE_TENANT

// TestKeywordReindex: documents written with the index off are indexed by
// reindex_keywords batches, resumable from the cursor, to exactly the
// index a cell indexing all along holds; a standby applying the source's
// batches ends byte-identical.
func TestKeywordReindex(t *testing.T) {
	write := func(h *fsmHarness) {
		h.mustApply(createContext("acme", "c"))
		h.mustApply(as("alice", putMemory("acme", "pm", "private plum")))
		h.mustApply(appendText("acme", "c", "", "alpha plum", "beta", "gamma plum plum"))
		h.mustApply(putMemory("acme", "k", "shared plum"))
		h.mustApply(putMemory("acme", "bin", "\xff\xfe"))
	}
	on := newFSM(t)
	on.mustApply(setTenant("acme", owner, 1))
	write(on)

	off := newFSM(t)
	off.mustApply(&cellv1.Command{Op: &cellv1.Command_CellSettings{CellSettings: &cellv1.CellSettings{KeywordIndexOff: true}}})
	off.mustApply(setTenant("acme", owner, 1))
	write(off)
	if got := searchEntries(t, off, "plum", false); got != nil {
		t.Fatalf("indexed while off: %v", got)
	}
	// While off, a rebuild indexes nothing.
	if r := off.mustApply(&cellv1.Command{Tenant: "acme", Op: &cellv1.Command_ReindexKeywords{ReindexKeywords: &cellv1.ReindexKeywordsOp{}}}).GetReindexKeywords(); r.GetIndexed() != 0 || len(r.GetNext()) != 0 {
		t.Fatalf("rebuild with the index off: %v", r)
	}
	off.mustApply(&cellv1.Command{Op: &cellv1.Command_CellSettings{CellSettings: &cellv1.CellSettings{}}})
	var cursor []byte
	batches, indexed := 0, uint32(0)
	for {
		r := off.mustApply(&cellv1.Command{Tenant: "acme", Op: &cellv1.Command_ReindexKeywords{ReindexKeywords: &cellv1.ReindexKeywordsOp{After: cursor, MaxDocs: 2}}}).GetReindexKeywords()
		batches++
		indexed += r.GetIndexed()
		if cursor = r.GetNext(); len(cursor) == 0 {
			break
		}
		if batches > 10 {
			t.Fatal("the rebuild does not end")
		}
	}
	if indexed != 5 || batches != 3 { // 6 documents, one binary; batches of 2
		t.Fatalf("indexed %d documents in %d batches", indexed, batches)
	}
	keyword := func(h *fsmHarness) []kv {
		var out []kv
		for _, kind := range []byte{kindPosting, kindForward, kindKeywordStats} {
			p := tenantKey("acme", kind, 0)
			out = append(out, dumpRange(t, h.f, p, prefixEnd(p), false)...)
		}
		return out
	}
	if d := diffDumps(keyword(on), keyword(off)); d != "" {
		t.Fatalf("rebuilt index differs from one kept all along: %s", d)
	}
	checkState(t, off.f)
	// A second rebuild writes no index key (and says what the first
	// did: the result depends on the data only, so that replicas whose
	// index differs still log the same event).
	before := keyword(off)
	if r := off.mustApply(&cellv1.Command{Tenant: "acme", Op: &cellv1.Command_ReindexKeywords{ReindexKeywords: &cellv1.ReindexKeywordsOp{}}}); r.GetReindexKeywords().GetIndexed() != 5 || r.GetTseq() == 0 {
		t.Fatalf("second rebuild: %v", r)
	}
	if d := diffDumps(before, keyword(off)); d != "" {
		t.Fatalf("second rebuild wrote: %s", d)
	}
}

// TestReindexKeywordsStore: the Store's driver, through Raft, and a
// standby applying the batches from the change log.
func TestReindexKeywordsStore(t *testing.T) {
	src, dst := openSingle(t, ""), openSingle(t, "")
	setOwner(t, src, "acme", 1)
	keywordOff := func(off bool) *cellv1.Command {
		st := proto.Clone(src.fsm.settings.Load()).(*cellv1.CellSettings)
		st.KeywordIndexOff = off
		return &cellv1.Command{Op: &cellv1.Command_CellSettings{CellSettings: st}}
	}
	mustPropose(t, src, keywordOff(true))
	mustPropose(t, src, createContext("acme", "c"))
	mustPropose(t, src, appendText("acme", "c", "r1", "kiwi one", "kiwi two"))
	mustPropose(t, dst, standbyOf("acme", "src", 1, false))
	rec := bootstrap(t, src, dst, "acme")
	mustPropose(t, src, keywordOff(false))
	n, next, err := src.ReindexKeywords(testCtx(t), "acme", 1, nil)
	if err != nil || n != 2 || next != nil {
		t.Fatalf("ReindexKeywords = %d, %q, %v", n, next, err)
	}
	mustPropose(t, dst, applyEvents("acme", changesAfter(t, src, "acme", rec.GetTseq())))
	if d := diffDumps(dumpRange(t, src.fsm, tenantPrefix("acme"), tenantEnd("acme"), false),
		dumpRange(t, dst.fsm, tenantPrefix("acme"), tenantEnd("acme"), false)); d != "" {
		t.Fatalf("standby differs from its source: %s", d)
	}
	checkState(t, dst.fsm)
}

// TestKeywordBudgetShared: a common word using up the scan budget does
// not starve a rarer one.
func TestKeywordBudgetShared(t *testing.T) {
	h := newFSM(t)
	h.mustApply(setTenant("acme", owner, 1))
	h.mustApply(createContext("acme", "c"))
	h.mustApply(appendText("acme", "c", "", "the a", "the b", "the c", "the d", "the e", "the rare"))
	h.tenant("acme", func(v *TenantView) {
		res, err := v.KeywordEntries(KeywordQuery{Text: "the rare", Limit: 1, MaxPostings: 4}, nil, nil)
		if err != nil || !res.Truncated || len(res.Entries) != 1 || res.Entries[0].Entry.GetText() != "the rare" {
			t.Fatalf("search = %+v, %v", res, err)
		}
	})
}
