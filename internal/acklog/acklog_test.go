package acklog

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func rec(node string, epoch, term uint64, before, after int64) Record {
	return Record{Node: node, Tenant: "acme", Epoch: epoch, Term: term, Index: uint64(after), Before: before, After: after}
}

// TestCheck: correct records pass; each planted violation is reported.
func TestCheck(t *testing.T) {
	for _, tc := range []struct {
		name string
		recs []Record
		want []string // substrings of the errors, in order; none: passes
	}{
		{"one leader", []Record{rec("n1", 1, 2, 10, 20), rec("n1", 1, 2, 15, 30)}, nil},
		{"a leader change", []Record{rec("n1", 1, 2, 10, 20), rec("n2", 1, 3, 25, 40), rec("n2", 1, 3, 30, 50)}, nil},
		// A deposed leader answers late a write it appended before the
		// election: its Before is early, so it is not a second owner.
		{"a late answer", []Record{rec("n1", 1, 2, 10, 100), rec("n2", 1, 3, 25, 40)}, nil},
		{"intervals touching the boundary", []Record{rec("n1", 1, 2, 10, 20), rec("n2", 1, 3, 11, 30)}, nil},
		{"a move", []Record{rec("n1", 1, 5, 10, 20), rec("m1", 2, 1, 30, 40)}, nil},
		{"the old leader appends after the new one acknowledged",
			[]Record{rec("n1", 1, 2, 10, 20), rec("n2", 1, 3, 25, 40), rec("n1", 1, 2, 45, 60)},
			[]string{"two writable owners at once: n1 (epoch 1 term 2) appended"}},
		{"an earlier term appends after a later one, not adjacent",
			[]Record{rec("n1", 1, 2, 50, 60), rec("n2", 1, 3, 5, 8), rec("n3", 1, 4, 20, 30)},
			[]string{"n1 (epoch 1 term 2)", "n1 (epoch 1 term 2)"}},
		{"two leaders in one term", []Record{rec("n1", 1, 2, 10, 20), rec("n2", 1, 2, 25, 40)}, []string{"2 nodes acknowledged writes"}},
		{"the old owner after the move",
			[]Record{rec("n1", 1, 5, 10, 20), rec("m1", 2, 1, 30, 40), rec("n1", 1, 5, 45, 50)},
			[]string{"n1 (epoch 1 term 5) appended"}},
		{"epochs go down on a node", []Record{rec("n1", 2, 2, 10, 20), rec("n1", 1, 3, 25, 40)}, []string{"", "epochs went down"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			errs := Check(tc.recs)
			if len(errs) != len(tc.want) {
				t.Fatalf("got %d errors %v, want %d", len(errs), errs, len(tc.want))
			}
			for i, w := range tc.want {
				if !strings.Contains(errs[i].Error(), w) {
					t.Errorf("error %d: %v, want it to contain %q", i, errs[i], w)
				}
			}
		})
	}
}

// TestWriteParse: records written by several writers (a SIGKILL tearing
// the last line of one) are read back; malformed lines are refused.
func TestWriteParse(t *testing.T) {
	dir := t.TempDir()
	w1, err := OpenDir(dir, "n1")
	if err != nil {
		t.Fatal(err)
	}
	w2, err := OpenDir(dir, "n2")
	if err != nil {
		t.Fatal(err)
	}
	a := Now()
	w1.Write(Record{Tenant: "acme", Epoch: 1, Term: 2, Index: 7, Before: a, After: Now()})
	w2.Write(Record{Tenant: "acme", Epoch: 1, Term: 3, Index: 9, Before: Now(), After: Now()})
	for _, w := range []*Writer{w1, w2} {
		if err := w.Err(); err != nil {
			t.Fatal(err)
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
	}
	// A torn last line.
	f, err := os.OpenFile(filepath.Join(dir, "n2"+Suffix), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString(`{"node":"n2","ten`); err != nil {
		t.Fatal(err)
	}
	f.Close()
	recs, err := ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 2 || recs[0].Node != "n1" || recs[1].Node != "n2" || recs[0].Index != 7 || recs[0].Before > recs[0].After {
		t.Fatalf("read back %+v", recs)
	}
	if errs := Check(recs); len(errs) != 0 {
		t.Fatal(errs)
	}
	for _, bad := range []string{
		"{}\n",
		`{"node":"n1","tenant":"acme","epoch":1,"term":1,"before":5,"after":4}` + "\n",
		`{"node":"n1","tenant":"acme","epoch":1,"term":1,"extra":1}` + "\n",
		"not json\n",
		strings.Repeat("x", MaxLine+1) + "\n",
	} {
		if _, err := Parse(strings.NewReader(bad)); err == nil {
			t.Errorf("Parse(%.40q) accepted", bad)
		}
	}
}

// TestNowIsShared: the clock is CLOCK_MONOTONIC (Linux), not this
// process's own: it is far from zero at the start of a test process.
func TestNowIsShared(t *testing.T) {
	a, b := Now(), Now()
	if a <= 0 || b < a {
		t.Fatalf("Now: %d then %d", a, b)
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(`{"node":"n1","tenant":"acme","epoch":1,"term":2,"index":3,"before":4,"after":5}` + "\n"))
	f.Add([]byte("{}\n{"))
	f.Fuzz(func(t *testing.T, data []byte) {
		recs, err := Parse(bytes.NewReader(data))
		if err != nil {
			return
		}
		for _, r := range recs {
			if r.Node == "" || r.Tenant == "" || r.Before > r.After {
				t.Fatalf("accepted %+v", r)
			}
		}
		_ = Check(recs)
	})
}
