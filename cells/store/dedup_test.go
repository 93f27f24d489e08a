package store

import (
	"fmt"
	"testing"
	"time"

	"github.com/cellplane/cellplane/internal/cperr"
	cellv1 "github.com/cellplane/cellplane/proto/cellplane/cell/v1"
	"google.golang.org/protobuf/proto"
)

// dedupSettings is the cell_settings command for a dedup window of w
// (0: count only, as cells configured before the time window) and maxIDs.
func dedupSettings(w time.Duration, maxIDs uint64) *cellv1.Command {
	return &cellv1.Command{Op: &cellv1.Command_CellSettings{CellSettings: &cellv1.CellSettings{DedupWindow: maxIDs, DedupWindowNanos: int64(w)}}}
}

// applyAt applies c stamped at command time at (the harness's clock moves
// there: later commands are stamped after it).
func (h *fsmHarness) applyAt(at int64, c *cellv1.Command) *cellv1.CommandResult {
	h.t.Helper()
	c.TimeUnixNano, h.now = at, at
	return h.applyOne(c)
}

// fillIDs applies n appends with fresh request ids prefix0..prefix(n-1),
// 500 to a log entry (1 ms of command time apart).
func fillIDs(h *fsmHarness, tenant, prefix string, n int) {
	h.t.Helper()
	for i := 0; i < n; {
		var cmds []*cellv1.Command
		for ; i < n && len(cmds) < 500; i++ {
			cmds = append(cmds, appendText(tenant, "c", fmt.Sprintf("%s%d", prefix, i), "x"))
		}
		for _, r := range h.apply(cmds...) {
			if r.GetError() != nil || r.GetDeduplicated() {
				h.t.Fatalf("fill %s: %v", prefix, r)
			}
		}
	}
}

// TestFSMDedupRetryHorizon (finding M3): a retry within the time window is
// answered with the first result however many other ids the tenant saw
// since; the count-only window of 10 000 ids (the settings before the time
// window, and what every cell had) forgets it after about 10 s at 1 000
// writes/s and applies the retry twice.
func TestFSMDedupRetryHorizon(t *testing.T) {
	for _, tc := range []struct {
		name      string
		settings  *cellv1.Command
		wantDedup bool
	}{
		{"time window (the defaults)", dedupSettings(defaultDedupWindow, defaultDedupMaxIDs), true},
		{"count only, 10 000 ids (before M3)", dedupSettings(0, 10000), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newFSM(t)
			h.mustApply(tc.settings)
			h.mustApply(ownedBy("acme"))
			h.mustApply(createContext("acme", "c"))
			first := h.mustApply(appendText("acme", "c", "retried", "once"))
			fillIDs(h, "acme", "other", 11000) // 11 s of writes at 1 000/s
			r := h.mustApply(appendText("acme", "c", "retried", "once"))
			if r.GetDeduplicated() != tc.wantDedup {
				t.Fatalf("retry after 11 000 other ids: deduplicated %v, want %v (%v)", r.GetDeduplicated(), tc.wantDedup, r)
			}
			if tc.wantDedup && r.GetAppend().GetFirstSeq() != first.GetAppend().GetFirstSeq() {
				t.Errorf("retry answered %v, want the first result %v", r, first)
			}
			checkState(t, h.f)
		})
	}
}

// TestFSMDedupTimeWindow: an id is remembered exactly DedupWindow of
// command time, then forgotten (an expired record is not answered even
// before it is evicted); an id that comes back after it expired is
// remembered anew for a full window, and evicting its old queue slot does
// not forget it early.
func TestFSMDedupTimeWindow(t *testing.T) {
	const w = time.Second
	h := newFSM(t)
	h.mustApply(dedupSettings(w, 1000))
	h.mustApply(ownedBy("acme"))
	h.mustApply(createContext("acme", "c"))
	t0 := h.now + int64(time.Millisecond)
	h.applyAt(t0, appendText("acme", "c", "r0", "x"))
	if r := h.applyAt(t0+int64(w), appendText("acme", "c", "r0", "x")); !r.GetDeduplicated() {
		t.Fatalf("retry at exactly the window: %v, want deduplicated", r)
	}
	again := h.applyAt(t0+int64(w)+1, appendText("acme", "c", "r0", "x"))
	if again.GetDeduplicated() || again.GetError() != nil {
		t.Fatalf("retry past the window: %v, want applied again", again)
	}
	t1 := h.now
	if r := h.mustApply(appendText("acme", "c", "r0", "x")); !r.GetDeduplicated() || r.GetTseq() != again.GetTseq() {
		t.Fatalf("retry of the renewed id: %v, want its second result", r)
	}
	// Past w + w/16 of the oldest slot (the first r0), eviction runs: it
	// must stop at that slot, whose record is the renewed one.
	h.applyAt(t1+int64(w)-int64(time.Millisecond), appendText("acme", "c", "late", "x"))
	checkState(t, h.f)
	if r := h.mustApply(appendText("acme", "c", "r0", "x")); !r.GetDeduplicated() {
		t.Fatalf("renewed r0 forgotten early (with its expired queue slot): %v", r)
	}
	// Much later every old id is gone from the state, not only ignored.
	h.applyAt(t1+3*int64(w), appendText("acme", "c", "later", "x"))
	checkState(t, h.f)
	if rec := h.record("acme"); rec.GetDedupNext()-rec.GetDedupFirst() != 1 {
		t.Errorf("dedup window [%d, %d), want only the last id", rec.GetDedupFirst(), rec.GetDedupNext())
	}
}

// TestFSMDedupCountBound: the count bounds space without forgetting ids
// younger than the window: a client write with a new id is refused
// (QUOTA_EXCEEDED, nothing written), retries, writes without an id and
// control commands still go through, and once the oldest ages out new ids
// are accepted again.
func TestFSMDedupCountBound(t *testing.T) {
	const w = time.Minute
	h := newFSM(t)
	h.mustApply(dedupSettings(w, 4))
	h.mustApply(ownedBy("acme"))
	h.mustApply(createContext("acme", "c"))
	t0 := h.now + int64(time.Millisecond)
	h.applyAt(t0, appendText("acme", "c", "r0", "x"))
	h.applyAt(t0+int64(w/2), appendText("acme", "c", "r1", "x"))
	for _, id := range []string{"r2", "r3"} {
		h.mustApply(appendText("acme", "c", id, "x"))
	}
	before := h.record("acme")
	r := h.applyOne(appendText("acme", "c", "r4", "x"))
	if r.GetError().GetReason() != string(cperr.QuotaExceeded) || r.GetError().GetMetadata()[cperr.MetaTenant] != "acme" {
		t.Fatalf("new id with 4 young ids remembered: %v, want QUOTA_EXCEEDED", r)
	}
	if after := h.record("acme"); !proto.Equal(before, after) {
		t.Fatalf("a refused write changed the record: %v -> %v", before, after)
	}
	if r := h.mustApply(appendText("acme", "c", "r0", "x")); !r.GetDeduplicated() {
		t.Errorf("retry of the oldest id while full: %v", r)
	}
	h.mustApply(appendText("acme", "c", "", "no id")) // remembers nothing: not refused
	// A control command is never refused: it may use the slack.
	h.mustApply(withReq(setTenant("acme", owner, 2), "control"))
	checkState(t, h.f)
	// r0 ages out: a new id is accepted, and r0 is what is forgotten.
	h.applyAt(t0+int64(w)+1, withEpoch(appendText("acme", "c", "r5", "x"), 2))
	if rec := h.record("acme"); rec.GetDedupNext()-rec.GetDedupFirst() > 5 {
		t.Errorf("dedup window [%d, %d), want at most 4 ids + the slack of 1", rec.GetDedupFirst(), rec.GetDedupNext())
	}
	// r0 is forgotten: a new id again, refused while r1..r3 are young.
	for _, tc := range []struct {
		id   string
		want bool
	}{{"r0", false}, {"r1", true}, {"r3", true}, {"control", true}, {"r5", true}} {
		id, want := tc.id, tc.want
		c := withEpoch(appendText("acme", "c", id, "x"), 2)
		if id == "control" {
			c = withReq(setTenant("acme", owner, 2), id)
		}
		r := h.applyOne(c)
		if r.GetError() != nil && r.GetError().GetReason() != string(cperr.QuotaExceeded) {
			t.Fatalf("%s: %v", id, r)
		}
		if r.GetDeduplicated() != want {
			t.Errorf("%s: deduplicated %v, want %v (%v)", id, r.GetDeduplicated(), want, r)
		}
	}
	checkState(t, h.f)
}

// dedupLog is a log that crosses every dedup path: settings, refusals,
// expiry, renewal, eviction by age and by count.
func dedupLog(t0 int64) []*cellv1.Command {
	ms := int64(time.Millisecond)
	at := func(d int64, c *cellv1.Command) *cellv1.Command { c.TimeUnixNano = t0 + d; return c }
	log := []*cellv1.Command{at(0, dedupSettings(50*time.Millisecond, 8)), at(1*ms, ownedBy("acme")), at(2*ms, createContext("acme", "c"))}
	for i := range 200 {
		id := fmt.Sprintf("r%d", i%23)
		if i%7 == 0 {
			id = ""
		}
		log = append(log, at(int64(3+i)*ms, appendText("acme", "c", id, "x")))
	}
	return log
}

// TestFSMDedupReplicasAgree: replicas with different local configs, fed
// the same log, answer every command alike (dedup hits, refusals) and hold
// identical state: the window is measured with command times only.
func TestFSMDedupReplicasAgree(t *testing.T) {
	a := newFSM(t, func(c *fsmConfig) { c.dedupMaxIDs, c.dedupWindow = 3, time.Hour })
	b := newFSM(t, func(c *fsmConfig) { c.dedupMaxIDs, c.dedupWindow = 1000, time.Millisecond })
	var answers [2][]string
	var dedups, refusals int
	for _, c := range dedupLog(testT0) {
		for i, h := range []*fsmHarness{a, b} {
			r := h.applyOne(proto.Clone(c).(*cellv1.Command))
			answers[i] = append(answers[i], fmt.Sprint(r.GetDeduplicated(), r.GetTseq(), r.GetError().GetReason()))
			if i == 0 && r.GetDeduplicated() {
				dedups++
			}
			if i == 0 && r.GetError().GetReason() == string(cperr.QuotaExceeded) {
				refusals++
			}
		}
	}
	if dedups == 0 || refusals == 0 {
		t.Fatalf("the log exercised %d dedup hits and %d refusals; want some of each", dedups, refusals)
	}
	for i := range answers[0] {
		if answers[0][i] != answers[1][i] {
			t.Fatalf("command %d answered %s and %s", i, answers[0][i], answers[1][i])
		}
	}
	if d := diffDumps(a.dump(true), b.dump(true)); d != "" {
		t.Errorf("replicas diverged: %s", d)
	}
	checkState(t, a.f)
}

// TestFSMDedupSnapshotRoundTrip: the time window survives a snapshot
// restore: a restored replica continues exactly like its source, answering
// retries within the window and forgetting past it.
func TestFSMDedupSnapshotRoundTrip(t *testing.T) {
	log := dedupLog(testT0)
	src := newFSM(t)
	for _, c := range log[:100] {
		src.applyOne(proto.Clone(c).(*cellv1.Command))
	}
	data := takeSnapshot(t, src)
	dst := newFSM(t)
	if err := restore(t, dst, data); err != nil {
		t.Fatalf("Restore: %v", err)
	}
	if rec := dst.record("acme"); rec.GetDedupFirstTimeUnixNano() == 0 || rec.GetDedupFirstTimeUnixNano() != src.record("acme").GetDedupFirstTimeUnixNano() {
		t.Fatalf("restored dedup_first_time %d, source %d", rec.GetDedupFirstTimeUnixNano(), src.record("acme").GetDedupFirstTimeUnixNano())
	}
	dst.index = src.index
	for i, c := range log[100:] {
		rs, rd := src.applyOne(proto.Clone(c).(*cellv1.Command)), dst.applyOne(proto.Clone(c).(*cellv1.Command))
		if !proto.Equal(rs, rd) {
			t.Fatalf("command %d after the snapshot: source %v, restored %v", 100+i, rs, rd)
		}
	}
	if d := diffDumps(src.dump(true), dst.dump(true)); d != "" {
		t.Errorf("states diverge after the snapshot: %s", d)
	}
	checkState(t, dst.f)
}

// TestFSMDedupLegacyRecords: ids recorded before records had a time (a
// cell upgraded while clients retry) are not taken for expired: they are
// dated by the tenant's first write under the time window and remembered a
// full window from then.
func TestFSMDedupLegacyRecords(t *testing.T) {
	const w = time.Minute
	h := newFSM(t)
	h.mustApply(dedupSettings(0, 100)) // count only, as before
	h.mustApply(ownedBy("acme"))
	h.mustApply(createContext("acme", "c"))
	for _, id := range []string{"r0", "r1"} {
		h.mustApply(appendText("acme", "c", id, "x"))
	}
	// Strip the times, as the previous version wrote them.
	strip := func(key []byte, m proto.Message, clear func()) {
		v, closer, err := h.f.db.Get(key)
		if err != nil {
			t.Fatal(err)
		}
		err = proto.Unmarshal(v, m)
		closer.Close()
		if err != nil {
			t.Fatal(err)
		}
		clear()
		b, _ := proto.Marshal(m)
		if err := h.f.db.Set(key, b, nil); err != nil {
			t.Fatal(err)
		}
	}
	for _, id := range []string{"r0", "r1"} {
		var d cellv1.DedupRecord
		strip(dedupKey("acme", id), &d, func() { d.TimeUnixNano = 0 })
	}
	var rec cellv1.TenantRecord
	strip(recordKey("acme"), &rec, func() { rec.DedupFirstTimeUnixNano = 0 })
	h.reopen()

	h.mustApply(dedupSettings(w, 100)) // the upgraded leader's settings
	upgraded := h.now + int64(time.Hour)
	if r := h.applyAt(upgraded, appendText("acme", "c", "r0", "x")); !r.GetDeduplicated() {
		t.Fatalf("legacy r0 after the upgrade: %v, want deduplicated", r)
	}
	h.applyAt(upgraded+1, appendText("acme", "c", "new", "x")) // dates the legacy ids
	if r := h.applyAt(upgraded+int64(w), appendText("acme", "c", "r1", "x")); !r.GetDeduplicated() {
		t.Fatalf("legacy r1 a window after the upgrade: %v, want deduplicated", r)
	}
	if r := h.applyAt(upgraded+2*int64(w), appendText("acme", "c", "r1", "x")); r.GetDeduplicated() {
		t.Fatalf("legacy r1 two windows after the upgrade: %v, want forgotten", r)
	}
	checkState(t, h.f)
}
