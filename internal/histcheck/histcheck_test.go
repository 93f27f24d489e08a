package histcheck

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
)

// sim is a correct linearizable store of contexts and memory keys driven
// by seeded clients, whose recorded history a bug can then corrupt.
type sim struct {
	h     *History
	t     time.Time
	lists map[string][]string
	mem   map[string]struct {
		v   string
		rev uint64
	}
	rev uint64
}

func newSim() *sim {
	h := New()
	return &sim{h: h, t: h.start, lists: map[string][]string{}, mem: map[string]struct {
		v   string
		rev uint64
	}{}}
}

// tick advances the simulated clock.
func (s *sim) tick() time.Time { s.t = s.t.Add(time.Millisecond); return s.t }

// run records n sequential-but-overlapping operations from clients over
// two contexts and two memory keys; every fifth append is ambiguous
// (applied or not, at random).
func (s *sim) run(seed uint64, n int) {
	rng := rand.New(rand.NewPCG(seed, 1))
	ctxs, keys := []string{"a", "b"}, []string{"x", "y"}
	for i := range n {
		client := rng.IntN(3)
		call := s.tick()
		switch rng.IntN(4) {
		case 0:
			c := ctxs[rng.IntN(2)]
			v := fmt.Sprintf("%s-%d", c, i)
			if i%5 == 4 {
				if rng.IntN(2) == 0 {
					s.lists[c] = append(s.lists[c], v)
				}
				s.h.Append(client, c, v, call, s.tick(), 0, Ambiguous)
				continue
			}
			s.lists[c] = append(s.lists[c], v)
			s.h.Append(client, c, v, call, s.tick(), uint64(len(s.lists[c])), OK)
		case 1:
			c := ctxs[rng.IntN(2)]
			s.h.Read(client, c, call, s.tick(), s.lists[c])
		case 2:
			k := keys[rng.IntN(2)]
			cur, ok := s.mem[k]
			exp := cur.rev
			if rng.IntN(3) == 0 {
				exp++ // a stale expectation: refused
			}
			v := fmt.Sprintf("%s-%d", k, i)
			if (ok && exp == cur.rev) || (!ok && exp == 0) {
				s.rev++
				s.mem[k] = struct {
					v   string
					rev uint64
				}{v, s.rev}
				s.h.Put(client, k, v, &exp, call, s.tick(), s.rev, OK)
			} else {
				s.h.Put(client, k, v, &exp, call, s.tick(), 0, Refused)
			}
		case 3:
			k := keys[rng.IntN(2)]
			cur, ok := s.mem[k]
			s.h.Get(client, k, call, s.tick(), cur.v, cur.rev, ok)
		}
	}
}

func (s *sim) final() map[string][]string {
	out := map[string][]string{}
	for k, v := range s.lists {
		out[k] = slices.Clone(v)
	}
	for _, c := range []string{"a", "b"} {
		if _, ok := out[c]; !ok {
			out[c] = nil
		}
	}
	return out
}

// TestCorrectHistoriesPass: seeded correct histories, ambiguous appends
// included, pass both checks.
func TestCorrectHistoriesPass(t *testing.T) {
	for seed := range uint64(20) {
		s := newSim()
		s.run(seed, 300)
		if err := Check(s.h.Operations(), 10*time.Second); err != nil {
			t.Fatalf("seed %d: %v", seed, err)
		}
		if errs := CheckFinal(s.h.Operations(), s.final()); len(errs) > 0 {
			t.Fatalf("seed %d: %v", seed, errors.Join(errs...))
		}
	}
}

// TestBugsAreDetected is the checker's self-test: each seeded bug, planted
// in an otherwise correct history, is reported.
func TestBugsAreDetected(t *testing.T) {
	// find returns the index of the i-th operation matching f.
	find := func(ops []porcupine.Operation, f func(Input, Output) bool) int {
		for i, op := range ops {
			if f(op.Input.(Input), op.Output.(Output)) {
				return i
			}
		}
		return -1
	}
	bugs := []struct {
		name string
		// plant corrupts the history or the final state; false: the
		// history had no place for it (the seed is skipped).
		plant func(ops []porcupine.Operation, final map[string][]string) bool
		final bool // detected by CheckFinal (else by Check)
	}{
		{"stale read", func(ops []porcupine.Operation, _ map[string][]string) bool {
			// A read that misses the last entry acknowledged before it.
			acked := func(v string) bool {
				return find(ops, func(in Input, out Output) bool { return in.Kind == Append && in.Value == v && out.Result == OK }) >= 0
			}
			i := find(ops, func(in Input, out Output) bool {
				return in.Kind == Read && len(out.Values) > 1 && acked(out.Values[len(out.Values)-1])
			})
			if i < 0 {
				return false
			}
			out := ops[i].Output.(Output)
			out.Values = out.Values[:len(out.Values)-1]
			ops[i].Output = out
			return true
		}, false},
		{"stale get", func(ops []porcupine.Operation, _ map[string][]string) bool {
			// A get that returns the value before the last acknowledged put.
			for i, op := range ops {
				in, out := op.Input.(Input), op.Output.(Output)
				if in.Kind != Get || !out.Found {
					continue
				}
				for j := i - 1; j >= 0; j-- {
					pin, pout := ops[j].Input.(Input), ops[j].Output.(Output)
					if pin.Kind == Put && pin.Key == in.Key && pout.Result == OK && pout.Rev != out.Rev {
						continue
					}
					if pin.Kind == Put && pin.Key == in.Key && pout.Result == OK && pout.Rev == out.Rev {
						// Find an older put of that key.
						for k := j - 1; k >= 0; k-- {
							kin, kout := ops[k].Input.(Input), ops[k].Output.(Output)
							if kin.Kind == Put && kin.Key == in.Key && kout.Result == OK {
								out.Value, out.Rev = kin.Value, kout.Rev
								ops[i].Output = out
								return true
							}
						}
						break
					}
				}
			}
			return false
		}, false},
		{"lost acknowledged append", func(ops []porcupine.Operation, final map[string][]string) bool {
			for c, vs := range final {
				for i, v := range vs {
					j := find(ops, func(in Input, out Output) bool { return in.Kind == Append && in.Value == v && out.Result == OK })
					if j >= 0 {
						final[c] = slices.Delete(vs, i, i+1)
						return true
					}
				}
			}
			return false
		}, true},
		{"duplicate effect", func(_ []porcupine.Operation, final map[string][]string) bool {
			for c, vs := range final {
				if len(vs) > 0 {
					final[c] = append(vs, vs[0])
					return true
				}
			}
			return false
		}, true},
		{"reordered appends", func(ops []porcupine.Operation, _ map[string][]string) bool {
			// Two acknowledged appends to one context swap their seqs.
			for i, op := range ops {
				in, out := op.Input.(Input), op.Output.(Output)
				if in.Kind != Append || out.Result != OK {
					continue
				}
				j := find(ops[i+1:], func(in2 Input, out2 Output) bool {
					return in2.Kind == Append && in2.Key == in.Key && out2.Result == OK
				})
				if j < 0 {
					continue
				}
				j += i + 1
				o2 := ops[j].Output.(Output)
				out.Seq, o2.Seq = o2.Seq, out.Seq
				ops[i].Output, ops[j].Output = out, o2
				return true
			}
			return false
		}, false},
		{"phantom entry", func(_ []porcupine.Operation, final map[string][]string) bool {
			final["a"] = append(final["a"], "never-written")
			return true
		}, true},
	}
	for _, b := range bugs {
		t.Run(b.name, func(t *testing.T) {
			planted := 0
			for seed := range uint64(10) {
				s := newSim()
				s.run(seed, 200)
				ops, final := s.h.Operations(), s.final()
				if !b.plant(ops, final) {
					continue
				}
				planted++
				var detected bool
				if b.final {
					detected = len(CheckFinal(ops, final)) > 0
				} else {
					var nl *NotLinearizableError
					detected = errors.As(Check(ops, 10*time.Second), &nl)
				}
				if !detected {
					t.Errorf("seed %d: the %s was not detected", seed, b.name)
				}
			}
			if planted == 0 {
				t.Fatalf("no seed had a place for the %s", b.name)
			}
		})
	}
}

// TestAmbiguousIsMaybe: an ambiguous append may be in the final state or
// not, and reads may see it from its call on.
func TestAmbiguousIsMaybe(t *testing.T) {
	for _, applied := range []bool{false, true} {
		h := New()
		c0 := h.Now()
		h.Append(0, "a", "v1", c0, h.Now(), 0, Ambiguous)
		var final []string
		if applied {
			final = []string{"v1"}
		}
		c1 := h.Now()
		h.Read(1, "a", c1, h.Now(), final)
		if err := Check(h.Operations(), time.Second); err != nil {
			t.Fatalf("applied=%v: %v", applied, err)
		}
		if errs := CheckFinal(h.Operations(), map[string][]string{"a": final}); len(errs) > 0 {
			t.Fatalf("applied=%v: %v", applied, errs)
		}
	}
}
