package store

import (
	"fmt"

	"github.com/cellplane/cellplane/internal/cperr"
	"math/rand/v2"
	"testing"

	cellv1 "github.com/cellplane/cellplane/proto/cellplane/cell/v1"
	contextv1 "github.com/cellplane/cellplane/proto/cellplane/context/v1"
	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"
)

// TestApplyShortcutsAgree applies the same random history (creates, appends
// with and without an expected seq and with request ids that come back
// within and after a small dedup window, context and tenant deletes, a
// standby's imports that overwrite and range-delete context heads, and its
// promotion) to a state machine with a tiny context-head cache (so that it
// evicts all the time) and a dedup filter for one tenant at a time, and to
// one without either, several entries per ApplyBatch,
// with restarts and snapshot restores in between: the results and the
// whole state must be identical after every batch. Without the cache's
// invalidation on deletes, range deletes or restore, it is not; nor with
// an event encoding that differs from proto's; nor with a dedup filter that
// misses a command's new id, keeps no generation for scanned ids, or is not
// dropped on a tenant delete or an import.
func TestApplyShortcutsAgree(t *testing.T) {
	for seed := range uint64(4) {
		t.Run(fmt.Sprint("seed ", seed), func(t *testing.T) {
			// A dedup window of 8 ids: ids are forgotten all the time; one
			// tenant's dedup filter at a time: filters are dropped and
			// rebuilt all the time.
			cached := newFSM(t, func(c *fsmConfig) { c.headCache, c.dedupFilter, c.dedupMaxIDs = 3, 400, 8 })
			plain := newFSM(t, func(c *fsmConfig) { c.headCache, c.dedupFilter, c.dedupMaxIDs, c.reencode = 0, 0, 8, true })
			if cached.f.heads == nil || plain.f.heads != nil || cached.f.dedup == nil || plain.f.dedup != nil {
				t.Fatal("harness: cache not on/off as configured")
			}
			rng := rand.New(rand.NewPCG(seed, 16))
			var snap []byte
			for step := range 400 {
				switch r := rng.IntN(100); {
				case r < 3:
					snap = takeSnapshot(t, plain)
				case r < 5 && snap != nil:
					for _, h := range []*fsmHarness{cached, plain} {
						if err := restore(t, h, snap); err != nil {
							t.Fatalf("step %d: restore: %v", step, err)
						}
						h.index = h.f.applied.Load()
					}
				case r < 7:
					cached.reopen()
				}
				var la, lb []*raft.Log // several entries per ApplyBatch
				for range 1 + rng.IntN(4) {
					var cs []*cellv1.Command
					for range 1 + rng.IntN(4) {
						cs = append(cs, randomHeadCommand(rng))
					}
					for _, c := range cs {
						cached.stamp(c) // the same time on both
					}
					la = append(la, cached.entry(cloneAll(cs)...))
					lb = append(lb, plain.entry(cloneAll(cs)...))
				}
				ra, rb := cached.applyLogs(la...), plain.applyLogs(lb...)
				for i := range ra {
					if len(ra[i].results) != len(rb[i].results) {
						t.Fatalf("step %d: %d vs %d results", step, len(ra[i].results), len(rb[i].results))
					}
					for j := range ra[i].results {
						if !proto.Equal(ra[i].results[j], rb[i].results[j]) {
							t.Fatalf("step %d: result %d.%d differs:\ncached %v\nplain  %v", step, i, j, ra[i].results[j], rb[i].results[j])
						}
					}
				}
				if d := diffDumps(plain.dump(true), cached.dump(true)); d != "" {
					t.Fatalf("step %d: states differ: %s", step, d)
				}
			}
			if len(cached.fatal)+len(plain.fatal) != 0 {
				t.Fatalf("stopped: %v %v", cached.fatal, plain.fatal)
			}
		})
	}
}

func randomHeadCommand(rng *rand.Rand) *cellv1.Command {
	ctxs := []string{"c1", "c2", "c3", "x"}
	id := ctxs[rng.IntN(len(ctxs))]
	switch r := rng.IntN(100); {
	case r < 40:
		return appendText("acme", id, fmt.Sprint("r", rng.IntN(50)), "entry")
	case r < 50:
		return appendExpect("acme", id, uint64(rng.IntN(8)), "expected")
	case r < 62:
		return createContext("acme", id)
	case r < 68:
		return deleteContext("acme", id)
	case r < 70:
		return deleteTenant("acme")
	case r < 78:
		return ownedBy("acme")
	case r < 82:
		return standbyOf("sby", "src", 1, false)
	case r < 88:
		v, _ := marshalOpts.Marshal(&contextv1.Context{ContextId: id, LastSeq: uint64(rng.IntN(9)), EntryCount: 1})
		return importChunk("sby", "src", rng.IntN(2) == 0, []*cellv1.KeyValue{{Key: append([]byte{kindContext}, id...), Value: v}}, nil)
	case r < 92:
		return setTenant("sby", owner, 2)
	case r < 94:
		return appendText("sby", id, fmt.Sprint("s", rng.IntN(30)), "promoted")
	case r < 96:
		return eraseCmd("acme", kindContextID, id)
	default:
		return createContext("sby", id)
	}
}

func cloneAll(cs []*cellv1.Command) []*cellv1.Command {
	out := make([]*cellv1.Command, len(cs))
	for i, c := range cs {
		out[i] = proto.Clone(c).(*cellv1.Command)
	}
	return out
}

// TestEventBytesMatchMarshal: the change event and dedup record built from
// the command's and result's bytes are byte for byte what proto's
// deterministic encoding of the messages gives, so replicas that splice and
// replicas that encode store the same state.
func TestEventBytesMatchMarshal(t *testing.T) {
	results := []*cellv1.CommandResult{
		{},
		{Tseq: 7, Deduplicated: true},
		{Tseq: 1 << 40, Result: &cellv1.CommandResult_Append{Append: &contextv1.AppendResponse{FirstSeq: 3, LastSeq: 9}}},
		reject(cperr.Invalid(cperr.FieldViolation{Field: "tenant", Description: "required"}).With(cperr.MetaTenant, "acme")),
	}
	for ci, c := range fuzzSeedCommands() {
		raw, err := marshalOpts.Marshal(c)
		if err != nil {
			t.Fatal(err)
		}
		for ri, res := range results {
			resBytes, err := marshalOpts.Marshal(res)
			if err != nil {
				t.Fatal(err)
			}
			for _, tseq := range []uint64{0, 1, 300, 1 << 62} {
				for _, at := range []int64{0, 1, -5, testT0} {
					want, _ := marshalOpts.Marshal(&cellv1.ChangeEvent{Tseq: tseq, TimeUnixNano: at, Command: c, Result: res})
					if got := eventBytes(tseq, at, raw, resBytes); string(got) != string(want) {
						t.Fatalf("command %d result %d tseq %d time %d: event bytes differ from proto's", ci, ri, tseq, at)
					}
					want, _ = marshalOpts.Marshal(&cellv1.DedupRecord{Tseq: tseq, Result: res, TimeUnixNano: at})
					if got := dedupBytes(tseq, resBytes, at); string(got) != string(want) {
						t.Fatalf("result %d tseq %d time %d: dedup bytes differ from proto's", ri, tseq, at)
					}
				}
			}
		}
	}
}
