// Package histcheck records what clients saw of a store under faults and
// checks it: linearizability with porcupine over several contexts and
// memory keys at once (the model is partitioned by key), with ambiguous
// writes kept as "maybe" (their outcome unknown: Return = MaxInt64 and a
// non-deterministic step that allows applied and not applied), and the
// exact checks porcupine does not make cheaply: every acknowledged append
// is in the final state exactly once at its seq, nothing appears that no
// client wrote, and no value appears twice (the effect of a retried
// request id applied twice).
//
// Values must be unique per write (client and sequence number in it), so
// that a final state names the writes it holds. Only linearizable reads
// belong in a History.
//
//	h := histcheck.New()
//	call := h.Now()
//	resp, err := c.Append(ctx, req)
//	h.Append(client, "chat", value, call, h.Now(), resp.GetFirstSeq(), histcheck.Outcome(err))
//	...
//	if err := histcheck.Check(h.Operations(), 30*time.Second); err != nil { t.Fatal(err) }
//	for _, err := range histcheck.CheckFinal(h.Operations(), final) { t.Error(err) }
//
// The package's tests feed it seeded bad histories (a stale read, a lost
// acknowledged append, a duplicate, a reorder, a lost CAS) and require it
// to report each one.
package histcheck

import (
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/anishathalye/porcupine"
)

// Kind is an operation kind.
type Kind uint8

// The operations a History records.
const (
	// Append adds one entry (Value) to the context Key; Output.Seq is its seq.
	Append Kind = iota + 1
	// Read reads the whole context Key; Output.Values is every entry.
	Read
	// Put writes Value to the memory key Key, a compare-and-set when
	// Input.CAS (Expected is the revision the key must have; 0: absent).
	Put
	// Get reads the memory key Key.
	Get
)

// Result is what a client learned of a write.
type Result uint8

const (
	// OK: acknowledged.
	OK Result = iota
	// Refused: a definite refusal (a CAS whose expected revision did not
	// match); nothing was applied.
	Refused
	// Ambiguous: the client does not know (timed out, connection lost,
	// UNAVAILABLE after sending): it may or may not have been applied.
	Ambiguous
)

// Input is an operation's request.
type Input struct {
	Kind     Kind
	Key      string // a context (Append, Read) or a memory key (Put, Get)
	Value    string // Append, Put
	CAS      bool   // Put: compare-and-set on Expected
	Expected uint64
}

// Output is an operation's answer.
type Output struct {
	Result Result
	Seq    uint64   // Append
	Values []string // Read: every entry of the context, in order
	// Get: the value and revision (Found false: absent); Put: Rev is the
	// new revision.
	Value string
	Rev   uint64
	Found bool
}

// History is a concurrent recorder of operations; times come from one
// monotonic clock (Now).
type History struct {
	start time.Time
	mu    sync.Mutex
	ops   []porcupine.Operation
}

// New starts a history; its clock starts now.
func New() *History { return &History{start: time.Now()} }

// Now is a time on the history's clock (for Call and Return).
func (h *History) Now() time.Time { return time.Now() }

func (h *History) add(client int, in Input, out Output, call, ret time.Time) {
	op := porcupine.Operation{ClientId: client, Input: in, Output: out,
		Call: call.Sub(h.start).Nanoseconds(), Return: ret.Sub(h.start).Nanoseconds()}
	if out.Result == Ambiguous {
		op.Return = math.MaxInt64 // it may take effect at any time after Call
	}
	h.mu.Lock()
	h.ops = append(h.ops, op)
	h.mu.Unlock()
}

// Append records an append of value to context key.
func (h *History) Append(client int, key, value string, call, ret time.Time, seq uint64, r Result) {
	h.add(client, Input{Kind: Append, Key: key, Value: value}, Output{Result: r, Seq: seq}, call, ret)
}

// Read records a successful linearizable read of every entry of key
// (failed reads are not recorded: they change nothing).
func (h *History) Read(client int, key string, call, ret time.Time, values []string) {
	h.add(client, Input{Kind: Read, Key: key}, Output{Values: slices.Clone(values)}, call, ret)
}

// Put records a write of value to memory key; expected, when not nil, makes
// it a compare-and-set. rev is the new revision when r is OK.
func (h *History) Put(client int, key, value string, expected *uint64, call, ret time.Time, rev uint64, r Result) {
	in := Input{Kind: Put, Key: key, Value: value}
	if expected != nil {
		in.CAS, in.Expected = true, *expected
	}
	h.add(client, in, Output{Result: r, Rev: rev}, call, ret)
}

// Get records a successful linearizable read of memory key.
func (h *History) Get(client int, key string, call, ret time.Time, value string, rev uint64, found bool) {
	h.add(client, Input{Kind: Get, Key: key}, Output{Value: value, Rev: rev, Found: found}, call, ret)
}

// Operations returns a copy of the recorded operations.
func (h *History) Operations() []porcupine.Operation {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.ops)
}

// state is the model's state of one key: a context's entries (list, one
// "value\x00" per entry) or a memory key's value and revision (revKnown
// false after an ambiguous put: the revision it got is unknown until a
// read shows it).
type state struct {
	list     string
	value    string
	rev      uint64
	exists   bool
	revKnown bool
}

func step(st state, in Input, out Output) []any {
	switch in.Kind {
	case Append:
		next := st
		next.list += in.Value + "\x00"
		switch out.Result {
		case Ambiguous:
			return []any{st, next}
		case OK:
			if out.Seq == uint64(strings.Count(next.list, "\x00")) {
				return []any{next}
			}
		}
		return nil
	case Read:
		if joinEntries(out.Values) == st.list {
			return []any{st}
		}
		return nil
	case Put:
		matches := !in.CAS || (in.Expected == 0 && !st.exists) ||
			(in.Expected != 0 && st.exists && (!st.revKnown || st.rev == in.Expected))
		next := state{value: in.Value, rev: out.Rev, exists: true, revKnown: out.Result == OK}
		switch out.Result {
		case OK:
			if matches {
				return []any{next}
			}
		case Refused:
			mismatch := in.CAS && !(in.Expected == 0 && !st.exists) && !(st.exists && st.revKnown && st.rev == in.Expected)
			if mismatch {
				return []any{st}
			}
		case Ambiguous:
			if matches {
				return []any{st, next}
			}
			return []any{st}
		}
		return nil
	case Get:
		if !out.Found {
			if !st.exists {
				return []any{st}
			}
			return nil
		}
		if st.exists && st.value == out.Value && (!st.revKnown || st.rev == out.Rev) {
			st.rev, st.revKnown = out.Rev, true
			return []any{st}
		}
		return nil
	}
	return nil
}

func joinEntries(vs []string) string {
	var b strings.Builder
	for _, v := range vs {
		b.WriteString(v)
		b.WriteByte(0)
	}
	return b.String()
}

// Model is the porcupine model of contexts and memory keys, partitioned by
// key.
var Model = porcupine.NondeterministicModel{
	Partition: func(history []porcupine.Operation) [][]porcupine.Operation {
		by := map[string][]porcupine.Operation{}
		var keys []string
		for _, op := range history {
			in := op.Input.(Input)
			k := fmt.Sprintf("%d/%s", map[bool]int{true: 0, false: 1}[in.Kind == Append || in.Kind == Read], in.Key)
			if _, ok := by[k]; !ok {
				keys = append(keys, k)
			}
			by[k] = append(by[k], op)
		}
		slices.Sort(keys)
		out := make([][]porcupine.Operation, 0, len(keys))
		for _, k := range keys {
			out = append(out, by[k])
		}
		return out
	},
	Init: func() []any { return []any{state{}} },
	Step: func(s, in, out any) []any { return step(s.(state), in.(Input), out.(Output)) },
	DescribeOperation: func(in, out any) string {
		i, o := in.(Input), out.(Output)
		res := map[Result]string{OK: "", Refused: " refused", Ambiguous: " ?"}[o.Result]
		switch i.Kind {
		case Append:
			return fmt.Sprintf("append(%s, %s) → %d%s", i.Key, i.Value, o.Seq, res)
		case Read:
			return fmt.Sprintf("read(%s) → %d entries", i.Key, len(o.Values))
		case Put:
			if i.CAS {
				return fmt.Sprintf("cas(%s, %d, %s) → %d%s", i.Key, i.Expected, i.Value, o.Rev, res)
			}
			return fmt.Sprintf("put(%s, %s) → %d%s", i.Key, i.Value, o.Rev, res)
		default:
			return fmt.Sprintf("get(%s) → %q@%d found=%v", i.Key, o.Value, o.Rev, o.Found)
		}
	},
	DescribeState: func(s any) string {
		st := s.(state)
		if st.list != "" {
			return fmt.Sprintf("%d entries", strings.Count(st.list, "\x00"))
		}
		return fmt.Sprintf("%q@%d", st.value, st.rev)
	},
}

// Check runs porcupine over ops within timeout. It fails on a
// non-linearizable history and on an undecided one (a timeout is not a
// pass); the error carries the LinearizationInfo (Illegal) so the caller
// can write a visualisation with porcupine.Visualize.
func Check(ops []porcupine.Operation, timeout time.Duration) error {
	m := Model.ToModel()
	res, info := porcupine.CheckOperationsVerbose(m, ops, timeout)
	switch res {
	case porcupine.Ok:
		return nil
	case porcupine.Illegal:
		return &NotLinearizableError{Ops: len(ops), Info: info}
	default:
		return fmt.Errorf("histcheck: linearizability of %d operations undecided within %v", len(ops), timeout)
	}
}

// NotLinearizableError reports a history porcupine found illegal.
type NotLinearizableError struct {
	Ops  int
	Info porcupine.LinearizationInfo
}

func (e *NotLinearizableError) Error() string {
	return fmt.Sprintf("histcheck: history of %d operations is not linearizable", e.Ops)
}

// CheckFinal compares ops with the final contents of each context (every
// entry, read after the faults healed, from each replica in turn): every
// acknowledged append is present exactly once at the seq it was
// acknowledged with; every present value was appended by some operation
// (acknowledged or ambiguous) to that context; no value is present twice.
// It returns every violation.
func CheckFinal(ops []porcupine.Operation, final map[string][]string) []error {
	type write struct {
		acked bool
		seq   uint64
	}
	writes := map[string]map[string]write{}
	for _, op := range ops {
		in, out := op.Input.(Input), op.Output.(Output)
		if in.Kind != Append {
			continue
		}
		if writes[in.Key] == nil {
			writes[in.Key] = map[string]write{}
		}
		if out.Result == OK {
			writes[in.Key][in.Value] = write{acked: true, seq: out.Seq}
		} else if _, ok := writes[in.Key][in.Value]; !ok {
			writes[in.Key][in.Value] = write{}
		}
	}
	var errs []error
	keys := make([]string, 0, len(writes))
	for k := range writes {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, key := range keys {
		entries, ok := final[key]
		if !ok {
			errs = append(errs, fmt.Errorf("context %s: no final state to check", key))
			continue
		}
		at := map[string]int{}
		for i, v := range entries {
			if prev, dup := at[v]; dup {
				errs = append(errs, fmt.Errorf("context %s: %q is at seq %d and %d (a duplicated effect)", key, v, prev+1, i+1))
				continue
			}
			at[v] = i
			if _, ok := writes[key][v]; !ok {
				errs = append(errs, fmt.Errorf("context %s: %q at seq %d was never written", key, v, i+1))
			}
		}
		vals := make([]string, 0, len(writes[key]))
		for v := range writes[key] {
			vals = append(vals, v)
		}
		slices.Sort(vals)
		for _, v := range vals {
			w := writes[key][v]
			if !w.acked {
				continue
			}
			i, ok := at[v]
			switch {
			case !ok:
				errs = append(errs, fmt.Errorf("context %s: acknowledged append %q (seq %d) is lost", key, v, w.seq))
			case uint64(i+1) != w.seq:
				errs = append(errs, fmt.Errorf("context %s: acknowledged append %q got seq %d but is at %d", key, v, w.seq, i+1))
			}
		}
	}
	return errs
}

// Summary counts a history's operations by kind and result, for logs.
func Summary(ops []porcupine.Operation) string {
	var appends, acked, ambiguous, reads, puts, gets int
	for _, op := range ops {
		in, out := op.Input.(Input), op.Output.(Output)
		switch in.Kind {
		case Append:
			appends++
		case Read:
			reads++
		case Put:
			puts++
		case Get:
			gets++
		}
		if out.Result == Ambiguous {
			ambiguous++
		} else if out.Result == OK && (in.Kind == Append || in.Kind == Put) {
			acked++
		}
	}
	return fmt.Sprintf("%d appends, %d puts (%d acknowledged, %d ambiguous), %d reads, %d gets", appends, puts, acked, ambiguous, reads, gets)
}
