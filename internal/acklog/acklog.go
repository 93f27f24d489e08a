// Package acklog is the server-side record of acknowledged writes that
// the fault suite checks invariant I5 with (at most one writable owner of
// a tenant at every instant; docs/reliability.md "Fault suite").
//
// A node started with CELLPLANE_ACK_LOG=<dir> (`cellplane cell`, tests
// only) appends one line per client write it acknowledged as the tenant's
// owner to <dir>/<node-id>.acks.log: its node id, the tenant, the tenant's epoch, the
// Raft term and index of the entry, and two readings of CLOCK_MONOTONIC —
// a clock every process of one machine shares (Go's monotonic reading of
// time.Now is per process): Before, just before the entry was handed to
// Raft (at most when the leader appended it to its log), and After, when
// the write was acknowledged. Each line is one write(2) to a file opened
// O_APPEND, so a SIGKILL loses at most the line being written.
//
// # The invariant (Check)
//
// A tenant's writable owner is the pair (epoch, term): the cell that owns
// the tenant at that epoch, and that cell's Raft leader in that term.
// Owners are ordered by epoch, then term. For two acknowledged writes E of
// owner K and F of a later owner K' > K, Check requires
//
//	E.Before < F.After
//
// Why it holds in a correct system: in one cell, E was appended by the
// leader of term T and acknowledged, so a quorum stored it in term T; the
// leader of T' > T was elected by a quorum, which overlaps it, and a node
// stores no term-T entry after voting in T'; F was appended after that
// election. So E's append precedes F's append, and Before ≤ append ≤
// After. Across epochs, the old owner is fenced (or its authority lapses)
// before the new owner admits writes. A leader that acknowledges late
// (it was paused between commit and answer) keeps its early Before: late
// answers are not a second owner. Two owners that accept writes at the
// same time (a split brain, an elected empty node, a zombie that appends
// after it was deposed and still commits) make some E.Before > F.After.
// Check also requires that one owner is one node (two nodes acknowledging
// in one epoch and term are two leaders of one term, I7 from the server's
// side) and that each node's epochs never go down.
package acklog

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sync"
)

// Env names the variable that makes `cellplane cell` write the log: a
// directory, where node <id> appends to <id>.acks.log (outside the node's
// data dir, so that a test that wipes the dir keeps what it acknowledged).
const Env = "CELLPLANE_ACK_LOG"

// Suffix ends every log's name in the directory of Env.
const Suffix = ".acks.log"

// OpenDir opens node's log in dir (OpenDir(dir, id) appends to
// dir/<id>.acks.log), creating dir.
func OpenDir(dir, node string) (*Writer, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	return Open(filepath.Join(dir, node+Suffix), node)
}

// ReadDir reads every log of dir.
func ReadDir(dir string) ([]Record, error) {
	paths, err := filepath.Glob(filepath.Join(dir, "*"+Suffix))
	if err != nil {
		return nil, err
	}
	var out []Record
	for _, p := range paths {
		recs, err := ReadFile(p)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", p, err)
		}
		out = append(out, recs...)
	}
	return out, nil
}

// Record is one acknowledged write.
type Record struct {
	Node   string `json:"node"` // the acknowledging node's id
	Tenant string `json:"tenant"`
	Epoch  uint64 `json:"epoch"`
	Term   uint64 `json:"term"`
	Index  uint64 `json:"index"`
	// Before and After are CLOCK_MONOTONIC nanoseconds (see the package
	// doc).
	Before int64 `json:"before"`
	After  int64 `json:"after"`
}

// MaxLine bounds one line of the log.
const MaxLine = 4096

// Writer appends records to a file, one write(2) each.
type Writer struct {
	node string
	mu   sync.Mutex
	f    *os.File
	err  error
}

// Open opens (creating) the log at path for node's records.
func Open(path, node string) (*Writer, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	return &Writer{node: node, f: f}, nil
}

// Now reads the machine-wide monotonic clock.
func (w *Writer) Now() int64 { return Now() }

// Write appends r (its Node set to the writer's). The first failure is
// kept (Err) and later records are dropped: the log then is incomplete,
// which the test reading it sees.
func (w *Writer) Write(r Record) {
	r.Node = w.node
	b, err := json.Marshal(r)
	if err != nil {
		return
	}
	b = append(b, '\n')
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err != nil {
		return
	}
	if _, err := w.f.Write(b); err != nil {
		w.err = err
	}
}

// Err is the first write failure.
func (w *Writer) Err() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.err
}

// Close closes the file.
func (w *Writer) Close() error { return w.f.Close() }

// Parse reads a log. A last line without its newline (the process was
// killed while writing it) is ignored; any other malformed line is an
// error.
func Parse(r io.Reader) ([]Record, error) {
	var out []Record
	br := bufio.NewReaderSize(r, MaxLine)
	for n := 1; ; n++ {
		line, err := br.ReadSlice('\n')
		switch {
		case errors.Is(err, io.EOF):
			return out, nil // a torn last line, or none
		case errors.Is(err, bufio.ErrBufferFull):
			return nil, fmt.Errorf("acklog: line %d longer than %d bytes", n, MaxLine)
		case err != nil:
			return nil, err
		}
		var rec Record
		dec := json.NewDecoder(bytes.NewReader(line))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&rec); err != nil {
			return nil, fmt.Errorf("acklog: line %d: %w", n, err)
		}
		if rec.Node == "" || rec.Tenant == "" || rec.Epoch == 0 || rec.Term == 0 || rec.Before > rec.After {
			return nil, fmt.Errorf("acklog: line %d: incomplete or inconsistent record", n)
		}
		out = append(out, rec)
	}
}

// ReadFile parses the log at path; a missing file is no records.
func ReadFile(path string) ([]Record, error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return Parse(f)
}

// owner is a tenant's writable owner: an epoch and a term.
type owner struct{ epoch, term uint64 }

func (o owner) less(p owner) bool {
	return o.epoch < p.epoch || (o.epoch == p.epoch && o.term < p.term)
}

// Check verifies invariant I5 over the records of every node (see the
// package doc) and returns every violation (at most a few per tenant).
func Check(recs []Record) []error {
	byTenant := map[string][]Record{}
	for _, r := range recs {
		byTenant[r.Tenant] = append(byTenant[r.Tenant], r)
	}
	tenants := make([]string, 0, len(byTenant))
	for t := range byTenant {
		tenants = append(tenants, t)
	}
	slices.Sort(tenants)
	var errs []error
	for _, t := range tenants {
		errs = append(errs, checkTenant(t, byTenant[t])...)
	}
	errs = append(errs, checkEpochsPerNode(recs)...)
	return errs
}

const maxErrorsPerTenant = 5

func checkTenant(tenant string, recs []Record) []error {
	type span struct {
		owner
		nodes      map[string]bool
		maxBefore  Record // the write appended last
		minAfter   Record // the write acknowledged first
		acks       int
		firstNodes []string
	}
	spans := map[owner]*span{}
	for _, r := range recs {
		k := owner{r.Epoch, r.Term}
		s := spans[k]
		if s == nil {
			s = &span{owner: k, nodes: map[string]bool{}, maxBefore: r, minAfter: r}
			spans[k] = s
		}
		if !s.nodes[r.Node] {
			s.firstNodes = append(s.firstNodes, r.Node)
		}
		s.nodes[r.Node] = true
		s.acks++
		if r.Before > s.maxBefore.Before {
			s.maxBefore = r
		}
		if r.After < s.minAfter.After {
			s.minAfter = r
		}
	}
	order := make([]*span, 0, len(spans))
	for _, s := range spans {
		order = append(order, s)
	}
	slices.SortFunc(order, func(a, b *span) int {
		switch {
		case a.less(b.owner):
			return -1
		case b.less(a.owner):
			return 1
		}
		return 0
	})
	var errs []error
	add := func(err error) {
		if len(errs) < maxErrorsPerTenant {
			errs = append(errs, err)
		}
	}
	var prev *span // the earlier owner whose last append is latest so far
	for _, s := range order {
		if len(s.nodes) > 1 {
			add(fmt.Errorf("I5: tenant %s: epoch %d term %d: %d nodes acknowledged writes (%v): two owners in one term", tenant, s.epoch, s.term, len(s.nodes), s.firstNodes))
		}
		if prev != nil && prev.maxBefore.Before >= s.minAfter.After {
			e, f := prev.maxBefore, s.minAfter
			add(fmt.Errorf("I5: tenant %s: two writable owners at once: %s (epoch %d term %d) appended index %d %v after %s (epoch %d term %d) acknowledged index %d",
				tenant, e.Node, e.Epoch, e.Term, e.Index, Duration(e.Before-f.After), f.Node, f.Epoch, f.Term, f.Index))
		}
		if prev == nil || s.maxBefore.Before > prev.maxBefore.Before {
			prev = s
		}
	}
	return errs
}

// checkEpochsPerNode: the epochs one node acknowledged at never go down
// (in the order it acknowledged).
func checkEpochsPerNode(recs []Record) []error {
	type key struct{ node, tenant string }
	by := map[key][]Record{}
	for _, r := range recs {
		k := key{r.Node, r.Tenant}
		by[k] = append(by[k], r)
	}
	keys := make([]key, 0, len(by))
	for k := range by {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b key) int {
		if c := cmpString(a.node, b.node); c != 0 {
			return c
		}
		return cmpString(a.tenant, b.tenant)
	})
	var errs []error
	for _, k := range keys {
		rs := by[k]
		slices.SortStableFunc(rs, func(a, b Record) int { return cmpInt(a.After, b.After) })
		for i := 1; i < len(rs); i++ {
			if rs[i].Epoch < rs[i-1].Epoch {
				errs = append(errs, fmt.Errorf("I5: node %s acknowledged tenant %s at epoch %d after epoch %d: epochs went down", k.node, k.tenant, rs[i].Epoch, rs[i-1].Epoch))
				break
			}
		}
	}
	return errs
}

func cmpString(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func cmpInt(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// Duration formats a difference of clock readings.
type Duration int64

func (d Duration) String() string { return fmt.Sprintf("%.3fms", float64(d)/1e6) }

// Summary describes records for logs: acknowledgements per owner.
func Summary(recs []Record) string {
	n := map[owner]int{}
	for _, r := range recs {
		n[owner{r.Epoch, r.Term}]++
	}
	keys := make([]owner, 0, len(n))
	for k := range n {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b owner) int {
		if a.less(b) {
			return -1
		}
		if b.less(a) {
			return 1
		}
		return 0
	})
	var b bytes.Buffer
	fmt.Fprintf(&b, "%d acknowledgements", len(recs))
	for _, k := range keys {
		fmt.Fprintf(&b, "; epoch %d term %d: %d", k.epoch, k.term, n[k])
	}
	return b.String()
}
