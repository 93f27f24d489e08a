package store

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"log/slog"
	"testing"
	"time"

	cellv1 "github.com/cellplane/cellplane/proto/cellplane/cell/v1"
	contextv1 "github.com/cellplane/cellplane/proto/cellplane/context/v1"
	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	"google.golang.org/protobuf/proto"
)

// validTestID is the edge's id rule: 1..128 of [A-Za-z0-9._-].
func validTestID(s string) bool {
	if len(s) == 0 || len(s) > 128 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// fuzzSeedCommands is one command of every kind, valid or not, for seeds.
func fuzzSeedCommands() []*cellv1.Command {
	rich := appendText("acme", "c1", "r9", "a", "b")
	rich.GetAppend().Entries[0].Metadata = map[string]string{"k": "v"}
	rich.GetAppend().Entries = append(rich.GetAppend().Entries, &contextv1.Entry{Role: "tool", Content: &contextv1.Entry_Data{Data: []byte{0, 0xff}}})
	cs := []*cellv1.Command{
		ownedBy("acme"), ownedBy("other"), setTenant("acme", standby, 1), setTenant("acme", owner, 2), setTenant("acme", fenced, 0),
		createContext("acme", "c2"), createContext("acme", "c1"), createContext("acme", ""), createContext("nope", "c"),
		deleteContext("acme", "c1"), deleteContext("acme", "zz"),
		appendText("acme", "c1", "", "x"), appendText("acme", "c1", "r1", "dup"), rich, appendExpect("acme", "c1", 1, "y"), appendExpect("acme", "c1", 9, "y"),
		putMemory("acme", "k", "v"), putMemory("acme", "k", "v", 0), putMemory("acme", "k2", "v", 2), putMemory("acme", "", "v"),
		deleteMemory("acme", "k"), deleteMemory("acme", "k", 3), deleteMemory("acme", "zz", 0),
		deleteTenant("acme"), deleteTenant("other"), deleteTenant("nope"),
		registerNode("n2", "x:1"), registerNode("", "x"), noop(),
		withEpoch(createContext("acme", "c3"), 7), withReq(putMemory("acme", "k", "w"), "r1"),
		unknownOp("acme", true), unknownOp("acme", false), futureVersion(noop(), false), {Tenant: "acme"},
		quotaSettings(&cellv1.TenantQuota{MaxBytes: 16, MaxContexts: 1, MaxMemoryKeys: 1}), ownerWithQuota("acme", 1, &cellv1.TenantQuota{MaxBytes: 1 << 20}),
		ownerWithQuota("acme", 1, &cellv1.TenantQuota{}),
		eraseCmd("acme", kindContextID, "c1"), eraseCmd("acme", kindPrincipal, "alice"), withReq(eraseCmd("acme", kindPrincipal, ""), "r1"),
		{Tenant: "acme", Op: &cellv1.Command_EraseSubject{EraseSubject: &cellv1.EraseSubjectOp{ErasedOp: "append", ErasedAtTseq: 3}}},
		{Op: &cellv1.Command_CellSettings{CellSettings: &cellv1.CellSettings{KeywordIndexOff: true, DedupWindow: 100}}},
		{Op: &cellv1.Command_CellSettings{CellSettings: &cellv1.CellSettings{DedupWindow: 100, KeywordMaxTerms: 1}}},
		{Tenant: "acme", Op: &cellv1.Command_ReindexKeywords{ReindexKeywords: &cellv1.ReindexKeywordsOp{MaxDocs: 1}}},
		{Tenant: "acme", Op: &cellv1.Command_ReindexKeywords{ReindexKeywords: &cellv1.ReindexKeywordsOp{After: []byte("e"), MaxDocs: 2}}},
	}
	for i, c := range cs {
		if c.Version == 0 {
			c.Version = commandVersion
		}
		c.TimeUnixNano = testT0 + int64(i)*1e9
	}
	return cs
}

// fuzzSetup is the state every FuzzApplyBatch input starts from.
func fuzzSetup() []*cellv1.Command {
	return []*cellv1.Command{
		ownedBy("acme"), setTenant("sby", standby, 3), createContext("acme", "c1"),
		appendText("acme", "c1", "r1", "hello"), putMemory("acme", "k", "v"), registerNode("n1", "a:1"),
	}
}

func quietFSM(t testing.TB, mutate ...func(*fsmConfig)) *fsmHarness {
	return newFSM(t, append([]func(*fsmConfig){func(c *fsmConfig) {
		c.log = slog.New(slog.DiscardHandler)
		c.dedupMaxIDs, c.dedupWindow = 4, 3*time.Millisecond
		c.changelog = ChangeLogConfig{MaxEvents: 6, MaxBytes: 2000, RetentionAge: 5e9}
		c.tenantQuota = TenantQuota{MaxBytes: 64, MaxContexts: 3, MaxMemoryKeys: 3} // small: the fuzzer meets the quotas
	}}, mutate...)...)
}

// FuzzApplyBatch feeds arbitrary bytes to the state machine as a log
// entry: it must never panic, and either answer every command of the entry
// (leaving consistent bookkeeping) or stop cleanly without writing it.
func FuzzApplyBatch(f *testing.F) {
	cs := fuzzSeedCommands()
	for _, c := range cs {
		f.Add(encodeBatch(f, c))
	}
	f.Add(encodeBatch(f, cs...))
	f.Add(encodeBatch(f, cs[5], cs[11], cs[12], cs[12], cs[16], cs[20], cs[23], cs[0], cs[5]))
	f.Add(encodeBatch(f, cs[23], cs[0], cs[5], cs[11]))
	f.Add([]byte{})
	f.Add([]byte{0x0a, 0x00})
	f.Add([]byte{0x0a, 0x05, 0x01})
	f.Add([]byte("\xff\xff\xff\xff"))

	setup := fuzzSetup()
	f.Fuzz(func(t *testing.T, data []byte) {
		h := quietFSM(t)
		for _, c := range setup {
			c := proto.Clone(c).(*cellv1.Command)
			if r := h.applyOne(c); r.GetError() != nil {
				t.Fatalf("setup rejected: %v", r)
			}
		}
		before, applied := h.dump(true), h.f.applied.Load()

		resp := h.applyLogs(h.rawEntry(data))[0]
		if resp == nil {
			t.Fatalf("no response for a command entry")
		}
		cmds, decErr := decodeBatch(data)
		if decErr == nil {
			decErr = checkKnown(cmds)
		}
		if resp.err != nil {
			if !errors.Is(resp.err, errStopped) || decErr == nil || len(h.fatal) != 1 || !h.f.stopped.Load() {
				t.Fatalf("stopped with %v (decode %v, fatal %v)", resp.err, decErr, h.fatal)
			}
			if h.f.applied.Load() != applied {
				t.Errorf("applied moved to %d on a stop", h.f.applied.Load())
			}
			if d := diffDumps(before, h.dump(true)); d != "" {
				t.Errorf("stopped entry wrote: %s", d)
			}
			if r := h.applyLogs(h.entry(noop()))[0]; r == nil || !errors.Is(r.err, errStopped) {
				t.Errorf("entry after stop = %+v", r)
			}
			return
		}
		if decErr != nil {
			t.Fatalf("entry the checks refuse (%v) was applied", decErr)
		}
		if len(resp.results) != len(cmds) || len(h.fatal) != 0 || h.f.applied.Load() != h.index {
			t.Fatalf("%d results for %d commands, fatal %v, applied %d", len(resp.results), len(cmds), h.fatal, h.f.applied.Load())
		}
		valid := true
		for i, r := range resp.results {
			if r == nil {
				t.Fatalf("result %d is nil", i)
			}
			if e := r.GetError(); e != nil && (e.GetReason() == "" || r.GetTseq() != 0 || r.GetResult() != nil) {
				t.Errorf("result %d: malformed rejection %v", i, r)
			}
			c := cmds[i]
			if c.GetTenant() != "" && !validTestID(c.GetTenant()) {
				valid = false
			}
			if id := c.GetCreateContext().GetContextId(); id != "" && !validTestID(id) {
				valid = false
			}
		}
		if valid {
			checkState(t, h.f)
		}
		// The machine goes on.
		if r := h.applyLogs(h.entry(noop()))[0]; r == nil || r.err != nil {
			t.Errorf("entry after the fuzzed one = %+v", r)
		}
	})
}

// FuzzCommandDecode: decoding and vetting arbitrary entries never panics,
// what decodes re-encodes to the same commands, and checkKnown accepts
// only commands the dispatch table can apply or skip.
func FuzzCommandDecode(f *testing.F) {
	cs := fuzzSeedCommands()
	for _, c := range cs {
		f.Add(encodeBatch(f, c))
	}
	f.Add(encodeBatch(f, cs...))
	f.Add([]byte{})
	f.Add([]byte{0x0a, 0x03, 0x08, 0x01, 0x10})
	f.Fuzz(func(t *testing.T, data []byte) {
		cmds, err := decodeBatch(data)
		// decodeBatch walks the batch itself: it must agree with proto.
		var pb cellv1.CommandBatch
		if perr := proto.Unmarshal(data, &pb); (perr == nil) != (err == nil) {
			t.Fatalf("decodeBatch error %v, proto.Unmarshal error %v", err, perr)
		} else if err == nil {
			if len(pb.GetCommands()) != len(cmds) {
				t.Fatalf("decodeBatch: %d commands, proto.Unmarshal %d", len(cmds), len(pb.GetCommands()))
			}
			for i := range cmds {
				if !proto.Equal(cmds[i], pb.GetCommands()[i]) {
					t.Fatalf("command %d: decodeBatch %v, proto.Unmarshal %v", i, cmds[i], pb.GetCommands()[i])
				}
			}
		}
		if err != nil {
			return
		}
		known := checkKnown(cmds)
		if known != nil && !errors.Is(known, errUnknownCommand) {
			t.Errorf("checkKnown error %v does not wrap errUnknownCommand", known)
		}
		for i, c := range cmds {
			spec, ok := lookupOp(c)
			name := opName(c)
			if ok != (name != "unknown") || (ok && spec.name != name) {
				t.Errorf("command %d: lookupOp %v/%q, opName %q", i, ok, spec.name, name)
			}
			if known == nil && !c.GetIgnorable() && (!ok || c.GetVersion() > commandVersion) {
				t.Errorf("command %d accepted by checkKnown: %v", i, c)
			}
		}
		again, err := decodeBatch(encodeBatch(t, cmds...))
		if err != nil || len(again) != len(cmds) {
			t.Fatalf("re-decode: %d commands, %v", len(again), err)
		}
		for i := range cmds {
			if !proto.Equal(cmds[i], again[i]) {
				t.Errorf("command %d changed in a round trip: %v → %v", i, cmds[i], again[i])
			}
		}
	})
}

// parseTestSnapshot is an independent reader of the snapshot format:
// the records and applied index, and whether the stream is well formed
// with a correct checksum.
func parseTestSnapshot(data []byte) (applied uint64, records map[string]string, ok bool) {
	head := len(snapMagic) + 8
	if len(data) < head || !bytes.Equal(data[:len(snapMagic)], snapMagic) {
		return 0, nil, false
	}
	applied = binary.BigEndian.Uint64(data[len(snapMagic):head])
	records = map[string]string{}
	p := head
	field := func() ([]byte, bool) {
		n, w := binary.Uvarint(data[p:])
		if w <= 0 || n > uint64(len(data)-p-w) {
			return nil, false
		}
		p += w
		b := data[p : p+int(n)]
		p += int(n)
		return b, true
	}
	for {
		k, ok := field()
		if !ok {
			return 0, nil, false
		}
		if len(k) == 0 {
			break
		}
		v, ok := field()
		if !ok {
			return 0, nil, false
		}
		records[string(k)] = string(v)
	}
	if len(data)-p < 4 {
		return 0, nil, false
	}
	if crc32.Checksum(data[:p], crcTable) != binary.BigEndian.Uint32(data[p:]) {
		return 0, nil, false
	}
	return applied, records, true
}

// FuzzSnapshotRead: readSnapshot never panics, succeeds exactly on
// well-formed streams with a correct checksum, and then loads exactly
// their records.
func FuzzSnapshotRead(f *testing.F) {
	// Small seeds keep the fuzzer's minimization fast.
	h := quietFSM(f)
	h.mustApply(ownedBy("a"))
	h.mustApply(createContext("a", "c"))
	h.mustApply(appendText("a", "c", "r1", "hi"))
	good := takeSnapshot(f, h)
	empty := takeSnapshot(f, quietFSM(f))
	f.Add(good)
	f.Add(empty)
	f.Add(good[:len(good)/2])
	f.Add(good[:len(good)-4])
	f.Add(good[:len(snapMagic)+8])
	f.Add([]byte{})
	f.Add(append(bytes.Clone(empty), "trailing"...))
	flipped := bytes.Clone(good)
	flipped[len(flipped)/2] ^= 1
	f.Add(flipped)
	// A valid stream with one record, easy to mutate.
	small := append(bytes.Clone(snapMagic), 0, 0, 0, 0, 0, 0, 0, 7, 1, 'k', 2, 'v', 'v', 0)
	small = binary.BigEndian.AppendUint32(small, crc32.Checksum(small, crcTable))
	f.Add(small)

	// One database for all inputs (opening Pebble per input is slow); it
	// is emptied after each input, so every input starts from nothing.
	db, err := pebble.Open("db", &pebble.Options{FS: vfs.NewMem(), Logger: pebbleLogger{slog.New(slog.DiscardHandler)}})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { db.Close() })
	contents := func(t *testing.T) map[string]string {
		got := map[string]string{}
		it, err := db.NewIter(nil)
		if err != nil {
			t.Fatal(err)
		}
		for ok := it.First(); ok; ok = it.Next() {
			got[string(it.Key())] = string(it.Value())
		}
		if err := it.Close(); err != nil {
			t.Fatal(err)
		}
		return got
	}

	f.Fuzz(func(t *testing.T, data []byte) {
		if n := len(contents(t)); n != 0 {
			t.Fatalf("database not empty at the start: %d keys", n)
		}
		applied, err := readSnapshot(bytes.NewReader(data), db)
		got := contents(t)
		defer func() {
			b := db.NewBatch()
			for k := range got {
				_ = b.Delete([]byte(k), nil)
			}
			if err := b.Commit(pebble.NoSync); err != nil {
				t.Fatal(err)
			}
		}()
		wantApplied, records, ok := parseTestSnapshot(data)
		if (err == nil) != ok {
			t.Fatalf("readSnapshot err = %v; the stream is well formed: %v", err, ok)
		}
		if err != nil {
			if !errors.Is(err, errCorruptSnapshot) {
				t.Errorf("error %v is not errCorruptSnapshot", err)
			}
			return
		}
		if applied != wantApplied {
			t.Errorf("applied = %d, want %d", applied, wantApplied)
		}
		if len(got) != len(records) {
			t.Fatalf("loaded %d keys, stream has %d", len(got), len(records))
		}
		for k, v := range records {
			if got[k] != v {
				t.Errorf("key %q = %q, want %q", k, got[k], v)
			}
		}
	})
}

// toID maps arbitrary bytes onto a valid id (1..128 of [A-Za-z0-9._-]).
func toID(s string) string {
	const charset = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-"
	if len(s) == 0 {
		return "a"
	}
	b := []byte(s[:min(len(s), 128)])
	for i := range b {
		b[i] = charset[int(b[i])%len(charset)]
	}
	return string(b)
}

func inRange(k, lower, upper []byte) bool {
	return bytes.Compare(k, lower) >= 0 && (upper == nil || bytes.Compare(k, upper) < 0)
}

// FuzzKeys: with ids of the allowed charset, a tenant's keys stay inside
// its own range and never fall in another tenant's; a context's entries
// stay in its own range; sequence numbers sort numerically; the pagination
// cursors and prefix ends bound what they should.
func FuzzKeys(f *testing.F) {
	f.Add("a", "ab", "c", "c.1", "k", uint64(1), uint64(2))
	f.Add("a", "a.b", "c", "c-", "", uint64(255), uint64(256))
	f.Add("a", "a-", "x", "x_", "\x00\xff", uint64(0), uint64(1<<63))
	f.Add("A", "a", "Z", "z", "\xff\xff", uint64(1<<56), uint64(1<<8))
	f.Add("t", "t", "c", "c", "m", uint64(7), uint64(7))
	f.Fuzz(func(t *testing.T, rawA, rawB, rawCtxA, rawCtxB, key string, seq1, seq2 uint64) {
		a, b, ca, cb := toID(rawA), toID(rawB), toID(rawCtxA), toID(rawCtxB)
		lo, hi := tenantPrefix(a), tenantEnd(a)
		if bytes.Compare(lo, hi) >= 0 {
			t.Fatalf("empty range for %q", a)
		}
		keys := map[string][]byte{
			"context":      contextKey(a, ca),
			"entryPrefix":  entryPrefix(a, ca),
			"entry":        entryKey(a, ca, seq1),
			"memory":       memoryKey(a, key),
			"change":       changeKey(a, seq1),
			"dedup":        dedupKey(a, key),
			"dedupQueue":   dedupQueueKey(a, seq1),
			"tenantPrefix": lo,
		}
		for name, k := range keys {
			if !inRange(k, lo, hi) {
				t.Errorf("%s key %q of tenant %q is outside [%q, %q)", name, k, a, lo, hi)
			}
			if a != b && inRange(k, tenantPrefix(b), tenantEnd(b)) {
				t.Errorf("%s key %q of tenant %q is inside tenant %q's range", name, k, a, b)
			}
		}
		if a != b && !(bytes.Compare(hi, tenantPrefix(b)) <= 0 || bytes.Compare(tenantEnd(b), lo) <= 0) {
			t.Errorf("ranges of %q and %q overlap", a, b)
		}
		for _, k := range [][]byte{recordKey(a), nodeKey(a), keyApplied, keyTenantCount} {
			if inRange(k, tenantPrefix(b), tenantEnd(b)) || inRange(k, lo, hi) {
				t.Errorf("key %q is inside a tenant range", k)
			}
		}
		if (a == b) != bytes.Equal(recordKey(a), recordKey(b)) {
			t.Errorf("record keys of %q and %q", a, b)
		}

		// Listing ranges.
		cp := tenantKey(a, kindContext, 0)
		if !inRange(contextKey(a, ca), cp, prefixEnd(cp)) {
			t.Errorf("context key outside the listing range")
		}
		mp := tenantKey(a, kindMemory, 0)
		if !inRange(memoryKey(a, key), mp, prefixEnd(mp)) {
			t.Errorf("memory key outside the listing range")
		}
		if ca < cb && bytes.Compare(contextKey(a, cb), after(cp, ca)) < 0 {
			t.Errorf("cursor after %q skips past %q", ca, cb)
		}
		if bytes.Compare(after(cp, ca), contextKey(a, ca)) <= 0 {
			t.Errorf("cursor after %q does not skip it", ca)
		}

		// Entries of one context.
		ep := entryPrefix(a, ca)
		if !inRange(entryKey(a, ca, seq2), ep, prefixEnd(ep)) {
			t.Errorf("entry outside its context's range")
		}
		if ca != cb {
			if inRange(entryKey(a, cb, seq2), ep, prefixEnd(ep)) || inRange(entryKey(a, ca, seq1), entryPrefix(a, cb), prefixEnd(entryPrefix(a, cb))) {
				t.Errorf("entries of %q and %q share a range", ca, cb)
			}
		}
		order := func(name string, k1, k2 []byte) {
			if c := bytes.Compare(k1, k2); (c < 0) != (seq1 < seq2) || (c == 0) != (seq1 == seq2) {
				t.Errorf("%s keys sort %d for seqs %d, %d", name, c, seq1, seq2)
			}
		}
		order("entry", entryKey(a, ca, seq1), entryKey(a, ca, seq2))
		order("change", changeKey(a, seq1), changeKey(a, seq2))
		order("dedup queue", dedupQueueKey(a, seq1), dedupQueueKey(a, seq2))

		// prefixEnd bounds every extension of its prefix.
		p := []byte(key)
		if end := prefixEnd(p); end != nil {
			if bytes.Compare(end, p) <= 0 || bytes.Compare(append(bytes.Clone(p), 0xff, 0xff), end) >= 0 {
				t.Errorf("prefixEnd(%q) = %q", p, end)
			}
		} else if len(bytes.Trim(p, "\xff")) != 0 {
			t.Errorf("prefixEnd(%q) = nil", p)
		}
	})
}
