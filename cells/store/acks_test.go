package store

import (
	"context"
	"sync"
	"testing"
)

// ackTape is a TestingKnobs.Acks that keeps what it is told.
type ackTape struct {
	mu   sync.Mutex
	now  int64
	acks []Ack
}

func (a *ackTape) Now() int64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.now++
	return a.now
}

func (a *ackTape) Acked(k Ack) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.acks = append(a.acks, k)
}

// TestAcksKnob: the leader tells TestingKnobs.Acks of every client write
// it acknowledges as the owner — tenant, epoch, the entry's term and
// index, Before ≤ After — and of nothing else (cell operations, refused
// writes).
func TestAcksKnob(t *testing.T) {
	tape := &ackTape{}
	s := openSingle(t, "", func(c *Config) { c.TestingKnobs.Acks = tape })
	setOwner(t, s, "acme", 3)
	mustPropose(t, s, createContext("acme", "c"))
	mustPropose(t, s, appendText("acme", "c", "r1", "hello"))
	// A write with a stale epoch is refused: no acknowledgement.
	stale := appendText("acme", "c", "r2", "no")
	stale.Epoch = 2
	if _, err := s.Propose(context.Background(), stale); err == nil {
		t.Fatal("a write at a stale epoch was accepted")
	}
	// The same request id again: acknowledged again (deduplicated).
	if _, err := s.Propose(context.Background(), appendText("acme", "c", "r1", "hello")); err != nil {
		t.Fatal(err)
	}
	tape.mu.Lock()
	defer tape.mu.Unlock()
	if len(tape.acks) != 3 { // create, append, its retry; not the set_tenant nor the refusal
		t.Fatalf("acks %+v, want 3", tape.acks)
	}
	term := s.raft.CurrentTerm()
	var prev uint64
	for _, a := range tape.acks {
		if a.Tenant != "acme" || a.Epoch != 3 || a.Term != term || a.Index <= prev || a.Before == 0 || a.Before >= a.After {
			t.Errorf("ack %+v (term %d, previous index %d)", a, term, prev)
		}
		prev = a.Index
	}
}
