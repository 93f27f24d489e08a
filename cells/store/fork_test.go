package store

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/cellplane/cellplane/internal/cperr"
	cellv1 "github.com/cellplane/cellplane/proto/cellplane/cell/v1"
	contextv1 "github.com/cellplane/cellplane/proto/cellplane/context/v1"
	"github.com/cockroachdb/pebble/v2"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
)

func forkCmd(tenant, src string, at uint64, id string) *cellv1.Command {
	return &cellv1.Command{Tenant: tenant, Op: &cellv1.Command_ForkContext{ForkContext: &contextv1.ForkRequest{ContextId: src, AtSeq: at, NewContextId: id}}}
}

// viewAt runs fn on a view of the tenant whose read time is now (0: hides
// nothing expired).
func (h *fsmHarness) viewAt(tenant string, now int64, fn func(v *TenantView)) {
	h.t.Helper()
	err := h.f.view(func(r pebble.Reader) error {
		rec, err := getRecord(r, tenant)
		if err != nil || rec == nil {
			return fmt.Errorf("tenant %q: %v", tenant, err)
		}
		fn(&TenantView{r: r, tenant: tenant, rec: rec, now: now})
		return nil
	})
	if err != nil {
		h.t.Fatal(err)
	}
}

// texts reads a context's entries' texts through the stitched read path
// (nil and the error when it cannot be read).
func (h *fsmHarness) texts(tenant, id string) ([]string, error) {
	var out []string
	var rerr error
	h.viewAt(tenant, h.now, func(v *TenantView) {
		es, err := v.Entries(id, 1, 1<<30, 1<<40)
		if err != nil {
			rerr = err
			return
		}
		for i, e := range es {
			if e.GetSeq() != uint64(i)+1 {
				rerr = fmt.Errorf("entry %d has seq %d", i, e.GetSeq())
				return
			}
			out = append(out, e.GetText())
		}
	})
	return out, rerr
}

func (h *fsmHarness) mustTexts(tenant, id string) []string {
	h.t.Helper()
	out, err := h.texts(tenant, id)
	if err != nil {
		h.t.Fatalf("read %s/%s: %v", tenant, id, err)
	}
	return out
}

func eq(a, b []string) bool { return fmt.Sprint(a) == fmt.Sprint(b) }

func TestFSMFork(t *testing.T) {
	h := newFSM(t)
	h.mustApply(setTenant("acme", owner, 1))
	h.mustApply(createContext("acme", "p"))
	h.mustApply(appendText("acme", "p", "", "a", "b", "c", "d"))

	for _, tc := range []struct {
		name   string
		cmd    *cellv1.Command
		reason string
		last   uint64
	}{
		{"at a seq", forkCmd("acme", "p", 2, "f"), "", 2},
		{"at the head (0)", forkCmd("acme", "p", 0, "head"), "", 4},
		{"at the last seq", forkCmd("acme", "p", 4, "last"), "", 4},
		{"past the end", forkCmd("acme", "p", 5, "x1"), string(cperr.SequenceMismatch), 0},
		{"missing source", forkCmd("acme", "nope", 1, "x2"), string(cperr.ContextNotFound), 0},
		{"taken id", forkCmd("acme", "p", 1, "f"), string(cperr.AlreadyExists), 0},
		{"no new id", forkCmd("acme", "p", 1, ""), string(cperr.InvalidArgument), 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := h.dump(false)
			res := h.applyOne(tc.cmd)
			if got := reasonOf(res); got != tc.reason {
				t.Fatalf("reason %q, want %q (%v)", got, tc.reason, res)
			}
			if tc.reason != "" {
				if d := diffDumps(before, h.dump(false)); d != "" {
					t.Fatalf("a rejected fork wrote: %s", d)
				}
				return
			}
			if c := res.GetContext(); c.GetLastSeq() != tc.last || c.GetParentContextId() != "p" || c.GetParentSeq() != tc.last || c.GetEntryCount() != 0 {
				t.Fatalf("fork = %v", c)
			}
		})
	}
	checkState(t, h.f)

	// The fork continues its own seqs; the source's later appends stay out.
	h.mustApply(appendText("acme", "f", "", "F3"))
	h.mustApply(appendText("acme", "p", "", "e"))
	if got := h.mustTexts("acme", "f"); !eq(got, []string{"a", "b", "F3"}) {
		t.Fatalf("fork reads %v", got)
	}
	// A fork of the fork, below and above the first fork's seq.
	h.mustApply(forkCmd("acme", "f", 3, "ff"))
	h.mustApply(forkCmd("acme", "f", 1, "f1"))
	h.mustApply(appendText("acme", "ff", "", "FF4"))
	if got := h.mustTexts("acme", "ff"); !eq(got, []string{"a", "b", "F3", "FF4"}) {
		t.Fatalf("fork of fork reads %v", got)
	}
	if got := h.mustTexts("acme", "f1"); !eq(got, []string{"a"}) {
		t.Fatalf("fork at 1 reads %v", got)
	}
	// Newest first, across spans.
	var rev []string
	h.viewAt("acme", h.now, func(v *TenantView) {
		if err := v.EachEntryReverse("ff", 100, func(raw []byte) (bool, error) {
			var e contextv1.Entry
			err := proto.Unmarshal(raw, &e)
			rev = append(rev, e.GetText())
			return true, err
		}); err != nil {
			t.Fatal(err)
		}
	})
	if !eq(rev, []string{"FF4", "F3", "b", "a"}) {
		t.Fatalf("reverse read %v", rev)
	}

	// Exactly once: the same request id answers the first fork.
	first := h.mustApply(withReq(forkCmd("acme", "p", 1, "once"), "rq"))
	again := h.mustApply(withReq(forkCmd("acme", "p", 1, "once"), "rq"))
	if !again.GetDeduplicated() || again.GetTseq() != first.GetTseq() {
		t.Fatalf("retried fork = %v, want the first answer %v", again, first)
	}

	// Deleting the source keeps what the forks read.
	h.mustApply(deleteContext("acme", "p"))
	if _, err := h.texts("acme", "p"); !errors.Is(err, cperr.ErrContextNotFound) {
		t.Fatalf("deleted source reads: %v", err)
	}
	if got := h.mustTexts("acme", "ff"); !eq(got, []string{"a", "b", "F3", "FF4"}) {
		t.Fatalf("after the source's delete the fork reads %v", got)
	}
	if r := reasonOf(h.applyOne(createContext("acme", "p"))); r != string(cperr.AlreadyExists) {
		t.Fatalf("re-creating a deleted id forks still read: %q", r)
	}
	if r := reasonOf(h.applyOne(forkCmd("acme", "p", 1, "x3"))); r != string(cperr.ContextNotFound) {
		t.Fatalf("forking a deleted source: %q", r)
	}
	h.viewAt("acme", h.now, func(v *TenantView) {
		cs, _, err := v.ListContexts("", 100)
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range cs {
			if c.GetContextId() == "p" {
				t.Fatal("a deleted source is listed")
			}
		}
	})
	checkState(t, h.f)

	// Restart: replayed state reads alike.
	h.reopen()
	if got := h.mustTexts("acme", "ff"); !eq(got, []string{"a", "b", "F3", "FF4"}) {
		t.Fatalf("after a restart the fork reads %v", got)
	}

	// Removing the last forks removes the source's entries, up the chain.
	for _, id := range []string{"head", "last", "once", "f1", "ff"} {
		h.mustApply(deleteContext("acme", id))
	}
	if got := h.mustTexts("acme", "f"); !eq(got, []string{"a", "b", "F3"}) {
		t.Fatalf("f reads %v", got)
	}
	h.mustApply(deleteContext("acme", "f"))
	checkState(t, h.f)
	h.tenant("acme", func(v *TenantView) {
		if u := v.Info().GetUsage(); u.GetContexts() != 0 || u.GetEntries() != 0 || u.GetBytes() != 0 {
			t.Fatalf("usage after every delete: %v", u)
		}
	})
	if got := dumpRange(t, h.f, entryPrefix("acme", "p"), prefixEnd(entryPrefix("acme", "p")), false); len(got) != 0 {
		t.Fatalf("the source's entries outlived its forks: %d keys", len(got))
	}
	h.mustApply(createContext("acme", "p")) // the id is free again
}

// TestForkReadEqualsCopy is the property: a stitched fork reads exactly as
// a context holding a copy of the source's prefix and the fork's own
// entries would, over random appends, fork points, chains and deletes.
func TestForkReadEqualsCopy(t *testing.T) {
	for seed := range uint64(8) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, 17))
			h := newFSM(t)
			h.mustApply(setTenant("acme", owner, 1))
			model := map[string][]string{}
			var live []string
			n := 0
			newID := func() string { n++; return fmt.Sprintf("c%d", n) }
			for step := range 300 {
				switch op := rng.IntN(10); {
				case len(live) == 0 || op == 0:
					id := newID()
					h.mustApply(createContext("acme", id))
					model[id], live = nil, append(live, id)
				case op <= 5:
					id := live[rng.IntN(len(live))]
					k := 1 + rng.IntN(3)
					texts := make([]string, k)
					for i := range texts {
						texts[i] = fmt.Sprintf("%s-%d-%d", id, step, i)
					}
					h.mustApply(appendText("acme", id, "", texts...))
					model[id] = append(model[id], texts...)
				case op <= 8:
					src := live[rng.IntN(len(live))]
					at := uint64(rng.IntN(len(model[src]) + 1))
					id := newID()
					h.mustApply(forkCmd("acme", src, at, id))
					if at == 0 {
						at = uint64(len(model[src]))
					}
					model[id], live = append([]string(nil), model[src][:at]...), append(live, id)
				default:
					i := rng.IntN(len(live))
					h.mustApply(deleteContext("acme", live[i]))
					delete(model, live[i])
					live = append(live[:i], live[i+1:]...)
				}
			}
			for _, id := range live {
				if got := h.mustTexts("acme", id); !eq(got, model[id]) {
					t.Fatalf("%s reads %v, a copy holds %v", id, got, model[id])
				}
			}
			checkState(t, h.f)
		})
	}
}

func TestFSMRetention(t *testing.T) {
	h := newFSM(t)
	h.mustApply(setTenant("acme", owner, 1))
	ttl := func(c *cellv1.Command, d time.Duration) *cellv1.Command {
		switch op := c.GetOp().(type) {
		case *cellv1.Command_CreateContext:
			op.CreateContext.Ttl = durationpb.New(d)
		case *cellv1.Command_PutMemory:
			op.PutMemory.Ttl = durationpb.New(d)
		case *cellv1.Command_ForkContext:
			op.ForkContext.Ttl = durationpb.New(d)
		}
		return c
	}
	res := h.mustApply(ttl(createContext("acme", "short"), time.Second))
	if got, want := res.GetContext().GetExpireTime().AsTime().UnixNano(), h.now+int64(time.Second); got != want {
		t.Fatalf("expire_time %d, want the command's time + ttl %d", got, want)
	}
	h.mustApply(appendText("acme", "short", "", "a", "b"))
	h.mustApply(forkCmd("acme", "short", 2, "kept")) // no expiry of its own
	h.mustApply(ttl(putMemory("acme", "k", "v"), time.Second))
	h.mustApply(putMemory("acme", "forever", "v"))

	h.now += int64(2 * time.Second) // past the expiry, no sweep yet
	if _, err := h.texts("acme", "short"); !errors.Is(err, cperr.ErrContextNotFound) {
		t.Fatalf("expired context reads: %v", err)
	}
	h.viewAt("acme", h.now, func(v *TenantView) {
		if _, err := v.Memory("k"); !errors.Is(err, cperr.ErrKeyNotFound) {
			t.Fatalf("expired key reads: %v", err)
		}
		items, _, _ := v.ListMemory("", "", 10, true)
		if len(items) != 1 || items[0].GetKey() != "forever" {
			t.Fatalf("listed memory %v", items)
		}
	})
	if r := reasonOf(h.applyOne(appendText("acme", "short", "", "late"))); r != string(cperr.ContextNotFound) {
		t.Fatalf("append to an expired context: %q", r)
	}
	if r := reasonOf(h.applyOne(putMemory("acme", "k", "again", 1))); r != string(cperr.RevisionMismatch) {
		t.Fatalf("compare-and-set on an expired key against its old revision: %q", r)
	}

	sweep := h.mustApply(&cellv1.Command{Tenant: "acme", Op: &cellv1.Command_ExpireSweep{ExpireSweep: &cellv1.ExpireSweepOp{MaxItems: 1}}})
	if sw := sweep.GetExpireSweep(); sw.GetContexts()+sw.GetMemoryKeys() != 1 || !sw.GetMore() || sweep.GetTseq() == 0 {
		t.Fatalf("first sweep (batch 1) = %v", sweep)
	}
	sweep = h.mustApply(&cellv1.Command{Tenant: "acme", Op: &cellv1.Command_ExpireSweep{ExpireSweep: &cellv1.ExpireSweepOp{}}})
	if sw := sweep.GetExpireSweep(); sw.GetMore() {
		t.Fatalf("second sweep = %v", sweep)
	}
	checkState(t, h.f)
	// The expired source's prefix stays for its fork.
	if got := h.mustTexts("acme", "kept"); !eq(got, []string{"a", "b"}) {
		t.Fatalf("fork of an expired source reads %v", got)
	}
	empty := h.mustApply(&cellv1.Command{Tenant: "acme", Op: &cellv1.Command_ExpireSweep{ExpireSweep: &cellv1.ExpireSweepOp{}}})
	if empty.GetTseq() != 0 {
		t.Fatalf("a sweep with nothing due got tseq %d", empty.GetTseq())
	}

	// Tenant default retention (its own quota) applies to writes without one.
	h.mustApply(&cellv1.Command{Tenant: "acme", Op: &cellv1.Command_SetTenant{SetTenant: &cellv1.SetTenantOp{Role: owner, Epoch: 1,
		Quota: &cellv1.TenantQuota{DefaultRetentionNanos: int64(time.Hour)}}}})
	res = h.mustApply(createContext("acme", "dflt"))
	if got := res.GetContext().GetExpireTime(); got == nil || got.AsTime().UnixNano() != h.now+int64(time.Hour) {
		t.Fatalf("default retention expiry %v", got)
	}
	put := h.mustApply(putMemory("acme", "m", "v"))
	if put.GetPutMemory().GetExpireTime() == nil {
		t.Fatalf("put under a default retention = %v", put)
	}
	// An explicit expiry wins over the default.
	res = h.mustApply(ttl(createContext("acme", "own"), time.Minute))
	if got := res.GetContext().GetExpireTime().AsTime().UnixNano(); got != h.now+int64(time.Minute) {
		t.Fatalf("own ttl under a default: %d", got)
	}
	// An expired id may be created anew.
	h.now += int64(2 * time.Hour)
	h.mustApply(createContext("acme", "own"))
	checkState(t, h.f)
	h.reopen()
	checkState(t, h.f)
}

// TestForkAndRetentionFollowStandby: forks, deletes that keep a prefix and
// expiry sweeps reach a standby through an export (a move's or a standby's
// bootstrap) and the change log, byte for byte, and survive its promotion.
func TestForkAndRetentionFollowStandby(t *testing.T) {
	src, dst := openSingle(t, ""), openSingle(t, "")
	setOwner(t, src, "acme", 1)
	mustPropose(t, src, createContext("acme", "p"))
	mustPropose(t, src, appendText("acme", "p", "r1", "a", "b", "c"))
	mustPropose(t, src, withReq(forkCmd("acme", "p", 2, "f"), "fk1"))
	long := putMemory("acme", "long", "v")
	long.GetPutMemory().Ttl = durationpb.New(time.Hour)
	longExp := mustPropose(t, src, long).GetPutMemory().GetExpireTime()
	mustPropose(t, dst, standbyOf("acme", "src", 1, false))
	rec := bootstrap(t, src, dst, "acme") // the export carries the fork and the expiry

	mustPropose(t, src, appendText("acme", "f", "r2", "F3"))
	mustPropose(t, src, forkCmd("acme", "f", 3, "ff"))
	mustPropose(t, src, deleteContext("acme", "p"))
	short := createContext("acme", "short")
	short.GetCreateContext().Ttl = durationpb.New(time.Millisecond)
	mustPropose(t, src, short)
	mem := putMemory("acme", "k", "v")
	mem.GetPutMemory().Ttl = durationpb.New(time.Millisecond)
	mustPropose(t, src, mem)
	waitFor(t, 5*time.Second, func() bool {
		res := mustPropose(t, src, &cellv1.Command{Tenant: "acme", Op: &cellv1.Command_ExpireSweep{ExpireSweep: &cellv1.ExpireSweepOp{}}})
		return res.GetExpireSweep().GetContexts()+res.GetExpireSweep().GetMemoryKeys() > 0 || mustRecord(t, src, "acme").GetUsage().GetMemoryKeys() == 0
	})
	mustPropose(t, dst, applyEvents("acme", changesAfter(t, src, "acme", rec.GetTseq())))
	if d := diffDumps(dumpRange(t, src.fsm, tenantPrefix("acme"), tenantEnd("acme"), false),
		dumpRange(t, dst.fsm, tenantPrefix("acme"), tenantEnd("acme"), false)); d != "" {
		t.Fatalf("standby differs from its source: %s", d)
	}
	checkState(t, dst.fsm)

	mustPropose(t, src, setTenant("acme", fenced, 2))
	mustPropose(t, dst, applyEvents("acme", changesAfter(t, src, "acme", mustRecord(t, dst, "acme").GetTseq())))
	mustPropose(t, dst, setTenant("acme", owner, 2))
	if b := readAll(t, dst, "acme", "ff"); len(b) != 3 || b[0].GetText() != "a" || b[2].GetText() != "F3" {
		t.Fatalf("promoted standby reads the fork of a fork as %v", b)
	}
	if err := dst.ReadTenant(testCtx(t), "acme", 0, ReadOptions{}, func(v *TenantView) error {
		m, err := v.Memory("long")
		if err == nil && !proto.Equal(m.GetExpireTime(), longExp) {
			t.Errorf("promoted standby: expire_time %v, the source's %v", m.GetExpireTime(), longExp)
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	retry := mustPropose(t, dst, withReq(forkCmd("acme", "p", 2, "f"), "fk1"))
	if !retry.GetDeduplicated() {
		t.Fatalf("retried fork on the promoted standby = %v", retry)
	}
	if err := dst.ReadTenant(testCtx(t), "acme", 0, ReadOptions{}, func(v *TenantView) error {
		_, err := v.Context("short")
		return err
	}); !errors.Is(err, cperr.ErrContextNotFound) {
		t.Fatalf("expired context on the promoted standby: %v", err)
	}
}

// TestExpirySweeperOnLeader: the leader proposes the sweeps itself; the
// expired items leave the state (not only the reads), with a change-log
// event a standby would replay.
func TestExpirySweeperOnLeader(t *testing.T) {
	s := openSingle(t, "", func(c *Config) { c.Expiry.SweepInterval = 20 * time.Millisecond; c.Expiry.SweepBatch = 1 })
	setOwner(t, s, "acme", 1)
	for _, id := range []string{"a", "b", "c"} {
		c := createContext("acme", id)
		c.GetCreateContext().Ttl = durationpb.New(time.Millisecond)
		mustPropose(t, s, c)
	}
	mustPropose(t, s, createContext("acme", "keep"))
	waitFor(t, 10*time.Second, func() bool { return mustRecord(t, s, "acme").GetUsage().GetContexts() == 1 })
	var sweeps int
	for _, ev := range changesAfter(t, s, "acme", 0) {
		if ev.GetCommand().GetExpireSweep() != nil {
			sweeps++
		}
	}
	if sweeps < 3 {
		t.Fatalf("%d sweep events for 3 expired contexts at a batch of 1", sweeps)
	}
	checkState(t, s.fsm)
}
