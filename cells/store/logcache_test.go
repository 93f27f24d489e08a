package store

import (
	"errors"
	"testing"

	"github.com/hashicorp/raft"
)

// countingLog is an in-memory log store that counts GetLog calls and can
// fail StoreLogs.
type countingLog struct {
	*raft.InmemStore
	gets     int
	storeErr error
}

func (c *countingLog) GetLog(idx uint64, l *raft.Log) error {
	c.gets++
	return c.InmemStore.GetLog(idx, l)
}

func (c *countingLog) StoreLogs(logs []*raft.Log) error {
	if c.storeErr != nil {
		return c.storeErr
	}
	return c.InmemStore.StoreLogs(logs)
}

func (c *countingLog) StoreLog(l *raft.Log) error { return c.StoreLogs([]*raft.Log{l}) }

func TestLogCache(t *testing.T) {
	entries := func(term uint64, idx ...uint64) []*raft.Log {
		var out []*raft.Log
		for _, i := range idx {
			out = append(out, &raft.Log{Index: i, Term: term, Type: raft.LogCommand, Data: []byte{byte(i), byte(term)}})
		}
		return out
	}
	get := func(t *testing.T, c *logCache, idx uint64) raft.Log {
		t.Helper()
		var l raft.Log
		if err := c.GetLog(idx, &l); err != nil {
			t.Fatalf("GetLog(%d): %v", idx, err)
		}
		return l
	}
	tests := []struct {
		name string
		run  func(t *testing.T, inner *countingLog, c *logCache)
	}{
		{"stored entries are served from memory", func(t *testing.T, inner *countingLog, c *logCache) {
			if err := c.StoreLogs(entries(1, 1, 2, 3)); err != nil {
				t.Fatal(err)
			}
			for i := uint64(1); i <= 3; i++ {
				if l := get(t, c, i); l.Index != i || l.Term != 1 {
					t.Fatalf("GetLog(%d) = %d/%d", i, l.Index, l.Term)
				}
			}
			if inner.gets != 0 {
				t.Fatalf("inner store read %d times, want 0", inner.gets)
			}
		}},
		{"evicted entries come from the store", func(t *testing.T, inner *countingLog, c *logCache) {
			if err := c.StoreLogs(entries(1, 1, 2, 3, 4, 5, 6)); err != nil { // ring of 4: 1 and 2 evicted
				t.Fatal(err)
			}
			if l := get(t, c, 1); l.Index != 1 {
				t.Fatalf("GetLog(1) = %d", l.Index)
			}
			if inner.gets != 1 {
				t.Fatalf("inner store read %d times, want 1", inner.gets)
			}
		}},
		{"a failed store caches nothing and keeps its error", func(t *testing.T, inner *countingLog, c *logCache) {
			inner.storeErr = errNoSpaceTest
			if err := c.StoreLogs(entries(1, 1)); !errors.Is(err, errNoSpaceTest) {
				t.Fatalf("StoreLogs = %v, want the inner error unchanged", err)
			}
			var l raft.Log
			if err := c.GetLog(1, &l); !errors.Is(err, raft.ErrLogNotFound) {
				t.Fatalf("GetLog after a failed store = %v, want ErrLogNotFound", err)
			}
		}},
		{"a truncated suffix is not served", func(t *testing.T, inner *countingLog, c *logCache) {
			if err := c.StoreLogs(entries(1, 1, 2, 3)); err != nil {
				t.Fatal(err)
			}
			if err := c.DeleteRange(2, 3); err != nil { // a follower drops a conflicting suffix
				t.Fatal(err)
			}
			var l raft.Log
			if err := c.GetLog(3, &l); !errors.Is(err, raft.ErrLogNotFound) {
				t.Fatalf("GetLog(3) after DeleteRange = %v (term %d), want ErrLogNotFound", err, l.Term)
			}
			if err := c.StoreLogs(entries(2, 2)); err != nil {
				t.Fatal(err)
			}
			if l := get(t, c, 2); l.Term != 2 {
				t.Fatalf("GetLog(2) term %d, want the new entry's 2", l.Term)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			inner := &countingLog{InmemStore: raft.NewInmemStore()}
			tt.run(t, inner, newLogCache(inner, 4))
		})
	}
}

var errNoSpaceTest = errors.New("no space left on device")
