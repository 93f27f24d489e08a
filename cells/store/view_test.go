package store

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/cellplane/cellplane/internal/cperr"
	cellv1 "github.com/cellplane/cellplane/proto/cellplane/cell/v1"
	contextv1 "github.com/cellplane/cellplane/proto/cellplane/context/v1"
	"github.com/cockroachdb/pebble/v2"
)

func contextIDs(cs []*contextv1.Context) []string {
	var ids []string
	for _, c := range cs {
		ids = append(ids, c.GetContextId())
	}
	return ids
}

func memoryKeys(ms []*contextv1.MemoryItem) []string {
	var keys []string
	for _, m := range ms {
		keys = append(keys, m.GetKey())
	}
	return keys
}

func TestViewListContexts(t *testing.T) {
	h := newFSM(t)
	h.mustApply(ownedBy("t"))
	h.mustApply(ownedBy("t.x")) // a tenant whose id extends this one's
	h.mustApply(createContext("t.x", "a1"))
	// Byte order: "a" < "a.b" < "a0" < "ab" < "b" < "c".
	for _, id := range []string{"c", "ab", "a", "b", "a0", "a.b"} {
		h.mustApply(createContext("t", id))
	}
	all := []string{"a", "a.b", "a0", "ab", "b", "c"}
	cases := []struct {
		after string
		limit int
		want  []string
		more  bool
	}{
		{"", 100, all, false},
		{"", 6, all, false},
		{"", 5, all[:5], true},
		{"", 2, []string{"a", "a.b"}, true},
		{"a", 2, []string{"a.b", "a0"}, true},
		{"a.b", 2, []string{"a0", "ab"}, true},
		{"ab", 2, []string{"b", "c"}, false},
		{"aa", 1, []string{"ab"}, true}, // a cursor that is no id
		{"c", 2, nil, false},
		{"zzz", 2, nil, false},
		{"", 0, nil, true},
	}
	h.tenant("t", func(v *TenantView) {
		for _, tc := range cases {
			cs, more, err := v.ListContexts(tc.after, tc.limit)
			if err != nil || !slices.Equal(contextIDs(cs), tc.want) || more != tc.more {
				t.Errorf("ListContexts(%q, %d) = %v, %v, %v; want %v, %v", tc.after, tc.limit, contextIDs(cs), more, err, tc.want, tc.more)
			}
		}
		// Paging through with the last id as cursor yields every id once.
		var got []string
		for after, pages := "", 0; ; pages++ {
			cs, more, err := v.ListContexts(after, 4)
			if err != nil || pages > 10 {
				t.Fatalf("paging: %v after %d pages", err, pages)
			}
			got = append(got, contextIDs(cs)...)
			if !more {
				break
			}
			after = cs[len(cs)-1].GetContextId()
		}
		if !slices.Equal(got, all) {
			t.Errorf("paged ids = %v", got)
		}
	})
	h.tenant("t.x", func(v *TenantView) {
		if cs, more, _ := v.ListContexts("", 10); !slices.Equal(contextIDs(cs), []string{"a1"}) || more {
			t.Errorf("t.x contexts = %v, %v", contextIDs(cs), more)
		}
	})
}

func TestViewListMemory(t *testing.T) {
	h := newFSM(t)
	h.mustApply(ownedBy("t"))
	h.mustApply(ownedBy("u"))
	h.mustApply(putMemory("u", "a", "other tenant"))
	keys := []string{"b/x", "a/c", "abc", "a", "ab", "b", "a/b", "é", "a~"}
	for _, k := range keys {
		h.mustApply(putMemory("t", k, "v:"+k))
	}
	all := slices.Clone(keys)
	slices.Sort(all) // a a/b a/c ab abc a~ b b/x é
	cases := []struct {
		prefix, after string
		limit         int
		want          []string
		more          bool
	}{
		{"", "", 100, all, false},
		{"", "", 3, []string{"a", "a/b", "a/c"}, true},
		{"", "abc", 100, []string{"a~", "b", "b/x", "é"}, false},
		{"a", "", 100, []string{"a", "a/b", "a/c", "ab", "abc", "a~"}, false},
		{"a", "", 2, []string{"a", "a/b"}, true},
		{"a", "a/b", 2, []string{"a/c", "ab"}, true},
		{"a", "ab", 2, []string{"abc", "a~"}, false},
		{"a", "abc", 1, []string{"a~"}, false}, // the next key, "b", has another prefix
		{"ab", "", 100, []string{"ab", "abc"}, false},
		{"ab", "ab", 1, []string{"abc"}, false},
		{"a/", "", 100, []string{"a/b", "a/c"}, false},
		{"abc", "", 100, []string{"abc"}, false},
		{"abcd", "", 100, nil, false},
		{"zz", "", 100, nil, false},
		{"b", "a", 100, []string{"b", "b/x"}, false}, // cursor before the prefix
		{"b", "b", 100, []string{"b/x"}, false},      // cursor = the prefix itself
		{"a", "b", 100, nil, false},                  // cursor past the prefix
		{"a", "zzz", 100, nil, false},                // cursor far past the prefix
		{"", "é", 100, nil, false},                   // cursor at the last key
		{"\xc3", "", 100, []string{"é"}, false},      // prefix of a multi-byte key
		{"a", "", 0, nil, true},                      // limit 0: nothing, but more exist
		{"a~", "", 100, []string{"a~"}, false},
	}
	h.tenant("t", func(v *TenantView) {
		for _, tc := range cases {
			var ms []*contextv1.MemoryItem
			var more bool
			var err error
			func() {
				defer func() {
					if r := recover(); r != nil {
						t.Errorf("ListMemory(%q, %q, %d) panicked: %v", tc.prefix, tc.after, tc.limit, r)
					}
				}()
				ms, more, err = v.ListMemory(tc.prefix, tc.after, tc.limit, false)
			}()
			if err != nil || !slices.Equal(memoryKeys(ms), tc.want) || more != tc.more {
				t.Errorf("ListMemory(%q, %q, %d) = %q, %v, %v; want %q, %v", tc.prefix, tc.after, tc.limit, memoryKeys(ms), more, err, tc.want, tc.more)
			}
			for _, m := range ms {
				if string(m.GetValue()) != "v:"+m.GetKey() || m.GetRevision() == 0 {
					t.Errorf("item %q = %v", m.GetKey(), m)
				}
			}
		}
		ms, _, err := v.ListMemory("a", "", 100, true)
		if err != nil || len(ms) != 6 {
			t.Fatalf("keys only: %v, %v", ms, err)
		}
		for _, m := range ms {
			if m.GetValue() != nil || m.GetRevision() == 0 || m.GetKey() == "" {
				t.Errorf("keys-only item = %v", m)
			}
		}
	})
}

func TestViewListTenants(t *testing.T) {
	h := newFSM(t)
	h.apply(setTenant("b", owner, 1), setTenant("ab", standby, 2), setTenant("a.b", fenced, 3), setTenant("a", owner, 4), createContext("a", "c"))
	h.mustApply(registerNode("n1", "x")) // another key space, not a tenant
	cases := []struct {
		after string
		limit int
		want  []string
		more  bool
	}{
		{"", 10, []string{"a", "a.b", "ab", "b"}, false},
		{"", 2, []string{"a", "a.b"}, true},
		{"a", 2, []string{"a.b", "ab"}, true},
		{"a.b", 2, []string{"ab", "b"}, false},
		{"b", 2, nil, false},
		{"", 0, nil, true},
	}
	h.cell(func(v *CellView) {
		for _, tc := range cases {
			infos, more, err := v.ListTenants(tc.after, tc.limit)
			var ids []string
			for _, i := range infos {
				ids = append(ids, i.GetTenant())
			}
			if err != nil || !slices.Equal(ids, tc.want) || more != tc.more {
				t.Errorf("ListTenants(%q, %d) = %v, %v, %v; want %v, %v", tc.after, tc.limit, ids, more, err, tc.want, tc.more)
			}
		}
		infos, _, _ := v.ListTenants("", 10)
		want := map[string][3]uint64{"a": {uint64(owner), 4, 2}, "a.b": {uint64(fenced), 3, 1}, "ab": {uint64(standby), 2, 0}, "b": {uint64(owner), 1, 1}}
		for _, i := range infos {
			w := want[i.GetTenant()]
			if uint64(i.GetRole()) != w[0] || i.GetEpoch() != w[1] || i.GetTseq() != w[2] {
				t.Errorf("info %v, want role/epoch/tseq %v", i, w)
			}
		}
		if infos[0].GetUsage().GetContexts() != 1 {
			t.Errorf("usage of a = %v", infos[0].GetUsage())
		}
	})
}

func TestViewEntries(t *testing.T) {
	h := newFSM(t)
	h.mustApply(ownedBy("t"))
	h.mustApply(createContext("t", "c"))
	h.mustApply(createContext("t", "c.2"))
	h.mustApply(createContext("t", "empty"))
	texts := []string{"one", "two-two", "three-three-three", strings.Repeat("four", 100), "five"}
	h.mustApply(appendText("t", "c", "", texts[:2]...))
	h.mustApply(appendText("t", "c", "", texts[2:]...))
	h.mustApply(appendText("t", "c.2", "", "other"))

	h.tenant("t", func(v *TenantView) {
		all, err := v.Entries("c", 0, 100, 1<<20)
		if err != nil || len(all) != 5 {
			t.Fatalf("all entries = %v, %v", all, err)
		}
		size := make([]uint64, len(all))
		for i, e := range all {
			b, _ := marshalOpts.Marshal(e)
			size[i] = uint64(len(b))
			if e.GetSeq() != uint64(i+1) || e.GetText() != texts[i] {
				t.Errorf("entry %d = %v", i, e)
			}
		}
		seqs := func(es []*contextv1.Entry) []uint64 {
			var out []uint64
			for _, e := range es {
				out = append(out, e.GetSeq())
			}
			return out
		}
		cases := []struct {
			name     string
			from     uint64
			max      int
			maxBytes uint64
			want     []uint64
		}{
			{"from 0 is the start", 0, 100, 1 << 20, []uint64{1, 2, 3, 4, 5}},
			{"from 1", 1, 100, 1 << 20, []uint64{1, 2, 3, 4, 5}},
			{"from the middle", 3, 100, 1 << 20, []uint64{3, 4, 5}},
			{"from the last", 5, 100, 1 << 20, []uint64{5}},
			{"past the end", 6, 100, 1 << 20, nil},
			{"far past the end", 1 << 62, 100, 1 << 20, nil},
			{"max entries", 2, 2, 1 << 20, []uint64{2, 3}},
			{"max entries 1", 0, 1, 1 << 20, []uint64{1}},
			{"tiny max bytes returns one", 1, 100, 1, []uint64{1}},
			{"zero max bytes returns one", 4, 100, 0, []uint64{4}},
			{"max bytes exactly two", 1, 100, size[0] + size[1], []uint64{1, 2}},
			{"max bytes just under two", 1, 100, size[0] + size[1] - 1, []uint64{1}},
			{"one large entry alone", 4, 100, 10, []uint64{4}},
			{"stops before a large entry", 3, 100, size[2] + 10, []uint64{3}},
		}
		for _, tc := range cases {
			es, err := v.Entries("c", tc.from, tc.max, tc.maxBytes)
			if err != nil || !slices.Equal(seqs(es), tc.want) {
				t.Errorf("%s: Entries(c, %d, %d, %d) = %v, %v; want %v", tc.name, tc.from, tc.max, tc.maxBytes, seqs(es), err, tc.want)
			}
		}
		if es, err := v.Entries("empty", 0, 10, 100); err != nil || len(es) != 0 {
			t.Errorf("empty context = %v, %v", es, err)
		}
		if es, err := v.Entries("c.2", 0, 10, 100); err != nil || len(es) != 1 || es[0].GetText() != "other" {
			t.Errorf("c.2 = %v, %v", es, err)
		}
		if _, err := v.Entries("nope", 0, 10, 100); !errors.Is(err, cperr.ErrContextNotFound) {
			t.Errorf("missing context err = %v", err)
		}
		if _, err := v.Context("nope"); !errors.Is(err, cperr.ErrContextNotFound) {
			t.Errorf("Context(nope) err = %v", err)
		}
		if _, err := v.Memory("nope"); !errors.Is(err, cperr.ErrKeyNotFound) {
			t.Errorf("Memory(nope) err = %v", err)
		}
	})
}

func TestViewChanges(t *testing.T) {
	tseqs := func(evs []*cellv1.ChangeEvent) []uint64 {
		var out []uint64
		for _, e := range evs {
			out = append(out, e.GetTseq())
		}
		return out
	}
	t.Run("full log", func(t *testing.T) {
		h := newFSM(t)
		h.mustApply(ownedBy("t"))
		for _, k := range []string{"a", "b", "c", "d"} {
			h.mustApply(putMemory("t", k, "v"))
		}
		h.tenant("t", func(v *TenantView) {
			cases := []struct {
				after uint64
				limit int
				want  []uint64
			}{
				{0, 100, []uint64{1, 2, 3, 4, 5}},
				{0, 2, []uint64{1, 2}},
				{3, 100, []uint64{4, 5}},
				{4, 1, []uint64{5}},
				{5, 100, nil},
				{6, 100, nil},
				{1 << 62, 100, nil},
			}
			for _, tc := range cases {
				evs, err := v.Changes(tc.after, tc.limit)
				if err != nil || !slices.Equal(tseqs(evs), tc.want) {
					t.Errorf("Changes(%d, %d) = %v, %v; want %v", tc.after, tc.limit, tseqs(evs), err, tc.want)
				}
			}
		})
	})
	t.Run("trimmed", func(t *testing.T) {
		h := newFSM(t, func(c *fsmConfig) { c.changelog.MaxEvents = 2 })
		h.mustApply(ownedBy("t"))
		for _, k := range []string{"a", "b", "c", "d"} {
			h.mustApply(putMemory("t", k, "v"))
		}
		h.tenant("t", func(v *TenantView) {
			for _, after := range []uint64{0, 1, 2} {
				if evs, err := v.Changes(after, 100); !errors.Is(err, ErrChangesTrimmed) {
					t.Errorf("Changes(%d) = %v, %v; want ErrChangesTrimmed", after, tseqs(evs), err)
				}
			}
			if evs, err := v.Changes(3, 100); err != nil || !slices.Equal(tseqs(evs), []uint64{4, 5}) {
				t.Errorf("Changes(3) = %v, %v", tseqs(evs), err)
			}
			if evs, err := v.Changes(5, 100); err != nil || evs != nil {
				t.Errorf("Changes(5) = %v, %v", tseqs(evs), err)
			}
		})
	})
}

func TestViewCell(t *testing.T) {
	h := newFSM(t)
	h.apply(setTenant("own", owner, 2), setTenant("sby", standby, 3), setTenant("fen", fenced, 4), createContext("own", "c"))
	h.mustApply(registerNode("n2", "b:1"))
	h.mustApply(registerNode("n1", "a:1"))
	h.mustApply(registerNode("n10", "c:1"))
	h.cell(func(v *CellView) {
		for tenant, want := range map[string]*cellv1.TenantInfo{
			"own": {Tenant: "own", Role: owner, Epoch: 2, Tseq: 2},
			"sby": {Tenant: "sby", Role: standby, Epoch: 3, Tseq: 0},
			"fen": {Tenant: "fen", Role: fenced, Epoch: 4, Tseq: 1},
		} {
			info, err := v.Tenant(tenant)
			if err != nil || info.GetRole() != want.GetRole() || info.GetEpoch() != want.GetEpoch() || info.GetTseq() != want.GetTseq() ||
				info.GetTenant() != tenant || info.GetChangelogCount() != want.GetTseq() || info.GetChangelogFirstTseq() != min(want.GetTseq(), 1) {
				t.Errorf("Tenant(%s) = %v, %v; want %v", tenant, info, err, want)
			}
		}
		if info, _ := v.Tenant("own"); info.GetUsage().GetContexts() != 1 {
			t.Errorf("usage = %v", info.GetUsage())
		}
		if _, err := v.Tenant("nope"); !errors.Is(err, cperr.ErrTenantNotFound) {
			t.Errorf("Tenant(nope) err = %v", err)
		}
		if _, err := v.Tenant("ow"); !errors.Is(err, cperr.ErrTenantNotFound) {
			t.Errorf("Tenant(ow) err = %v", err)
		}
		nodes, err := v.Nodes()
		var ids []string
		for _, n := range nodes {
			ids = append(ids, n.GetNodeId())
		}
		if err != nil || !slices.Equal(ids, []string{"n1", "n10", "n2"}) || nodes[0].GetGrpcAddr() != "a:1" {
			t.Errorf("Nodes = %v, %v", nodes, err)
		}
	})
	h.tenant("own", func(v *TenantView) {
		if info := v.Info(); info.GetTenant() != "own" || info.GetEpoch() != 2 || info.GetUsage().GetContexts() != 1 {
			t.Errorf("Info = %v", info)
		}
	})
	// An empty cell.
	e := newFSM(t)
	e.cell(func(v *CellView) {
		if ns, err := v.Nodes(); err != nil || len(ns) != 0 {
			t.Errorf("Nodes = %v, %v", ns, err)
		}
		if ts, more, err := v.ListTenants("", 10); err != nil || len(ts) != 0 || more {
			t.Errorf("ListTenants = %v, %v, %v", ts, more, err)
		}
	})
}

// TestViewClosed: a view of a closed state machine fails cleanly.
func TestViewClosed(t *testing.T) {
	h := newFSM(t)
	if err := h.f.close(); err != nil {
		t.Fatal(err)
	}
	err := h.f.view(func(pebble.Reader) error { return nil })
	if !errors.Is(err, cperr.ErrCellUnavailable) {
		t.Errorf("view of a closed fsm = %v", err)
	}
	if r := h.applyLogs(h.entry(noop()))[0]; r == nil || !errors.Is(r.err, errStopped) {
		t.Errorf("apply on a closed fsm = %+v", r)
	}
	h.f = nil // closed already
}
