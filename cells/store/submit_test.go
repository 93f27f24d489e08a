package store

import (
	"fmt"
	"testing"
)

// Commands one goroutine submits without waiting enter the log in
// submission order, across many Raft entries in flight: the i-th append
// gets sequence number i, and Wait returns each one's own result.
func TestSubmitKeepsOrder(t *testing.T) {
	s := openSingle(t, "", func(c *Config) {
		c.MaxBatchCommands = 3 // many entries, several in flight
		c.MaxInflightBatches = 4
	})
	setOwner(t, s, "acme", 1)
	mustPropose(t, s, createContext("acme", "c1"))
	ctx := testCtx(t)
	const n = 200
	pending := make([]*Pending, n)
	for i := range pending {
		p, err := s.Submit(ctx, appendText("acme", "c1", fmt.Sprintf("r%d", i), fmt.Sprintf("e%d", i)))
		if err != nil {
			t.Fatalf("submit %d: %v", i, err)
		}
		pending[i] = p
	}
	for i, p := range pending {
		res, err := p.Wait(ctx)
		if err != nil {
			t.Fatalf("wait %d: %v", i, err)
		}
		if got := res.GetAppend().GetFirstSeq(); got != uint64(i+1) {
			t.Fatalf("append %d got seq %d, want %d (submission order)", i, got, i+1)
		}
	}
	got := readAll(t, s, "acme", "c1")
	for i, e := range got {
		if want := fmt.Sprintf("e%d", i); e.GetText() != want {
			t.Fatalf("entry %d = %q, want %q", i+1, e.GetText(), want)
		}
	}
	if len(got) != n {
		t.Fatalf("%d entries, want %d", len(got), n)
	}
}
