package mcpauth

import (
	"testing"
	"time"
)

func TestLRU(t *testing.T) {
	c := newLRU[int](2)
	steps := []struct {
		op      string // put or get
		key     string
		val     int
		want    int  // get: the value
		ok      bool // get: found; put: evicted
		wantLen int
	}{
		{"put", "a", 1, 0, false, 1},
		{"put", "b", 2, 0, false, 2},
		{"get", "a", 0, 1, true, 2}, // b is now the least recently used
		{"put", "c", 3, 0, true, 2}, // evicts b only
		{"get", "b", 0, 0, false, 2},
		{"get", "a", 0, 1, true, 2},
		{"get", "c", 0, 3, true, 2},
		{"put", "c", 4, 0, false, 2}, // an update evicts nothing
		{"get", "c", 0, 4, true, 2},
	}
	for i, s := range steps {
		switch s.op {
		case "put":
			if ev := c.put(s.key, s.val); ev != s.ok {
				t.Fatalf("step %d: put(%s) evicted %v, want %v", i, s.key, ev, s.ok)
			}
		case "get":
			if v, ok := c.get(s.key); ok != s.ok || v != s.want {
				t.Fatalf("step %d: get(%s) = %d %v, want %d %v", i, s.key, v, ok, s.want, s.ok)
			}
		}
		if c.len() != s.wantLen {
			t.Fatalf("step %d: len %d, want %d", i, c.len(), s.wantLen)
		}
	}
	c.remove("a")
	if _, ok := c.get("a"); ok || c.len() != 1 {
		t.Fatalf("after remove: len %d", c.len())
	}
}

func TestBucket(t *testing.T) {
	t0 := time.Unix(1000, 0)
	b := newBucket(2, 3) // 2/s, burst 3
	tests := []struct {
		at       time.Duration
		ok       bool
		wantWait time.Duration
	}{
		{0, true, 0},
		{0, true, 0},
		{0, true, 0},
		{0, false, 500 * time.Millisecond},
		{250 * time.Millisecond, false, 250 * time.Millisecond},
		{500 * time.Millisecond, true, 0},
		{10 * time.Second, true, 0}, // refilled to the burst, not beyond
		{10 * time.Second, true, 0},
		{10 * time.Second, true, 0},
		{10 * time.Second, false, 500 * time.Millisecond},
	}
	for i, tc := range tests {
		ok, wait := b.take(t0.Add(tc.at))
		if ok != tc.ok || (wait-tc.wantWait).Abs() > time.Millisecond {
			t.Fatalf("step %d at %v: take = %v %v, want %v %v", i, tc.at, ok, wait, tc.ok, tc.wantWait)
		}
	}
}
