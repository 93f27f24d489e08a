package store

import (
	"log/slog"
	"testing"
	"time"
)

// TestCellClock: the proposer clock follows the wall clock while it agrees
// with the trusted reference within ClockMaxStep, ignores it beyond, never
// goes backwards, and trusts an applied command only when the node's own
// clock agreed with it (finding M8).
func TestCellClock(t *testing.T) {
	const step = time.Minute
	type action struct {
		offset  time.Duration // wall clock offset from real time, from now on
		observe time.Duration // when non-zero: an applied command stamped real time + observe
		want    time.Duration // the issued time, relative to real time (±1 s)
	}
	cases := []struct {
		name string
		acts []action
	}{
		{"no reference: the wall clock", []action{{offset: 3 * time.Hour, want: 3 * time.Hour}}},
		{"small step followed", []action{{want: 0}, {offset: 30 * time.Second, want: 30 * time.Second}}},
		{"day step ignored", []action{{want: 0}, {offset: 24 * time.Hour, want: 0}, {offset: 48 * time.Hour, want: 0}}},
		{"step back: floored, never backwards", []action{{want: 0}, {offset: -time.Hour, want: 0}}},
		{"clock returns: followed again", []action{{want: 0}, {offset: 24 * time.Hour, want: 0}, {offset: 0, want: 0}, {offset: 20 * time.Second, want: 20 * time.Second}}},
		// A follower that applied a live command keeps that reference
		// when its clock steps later, and leads with it.
		{"follower reference survives its step", []action{{observe: time.Nanosecond, offset: 0, want: -1}, {offset: 24 * time.Hour, want: 0}}},
		// A node whose clock is already off does not trust what it
		// applies (it cannot tell a stale command from its own error): it
		// keeps the floor only.
		{"untrusted command: floor only", []action{{offset: 24 * time.Hour, observe: 48 * time.Hour, want: -1}, {want: 48 * time.Hour}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var offset time.Duration
			c := newCellClock(func() time.Time { return time.Now().Add(offset).Round(0) }, step, slog.New(slog.DiscardHandler))
			for i, a := range tc.acts {
				offset = a.offset
				if a.observe != 0 {
					c.observe(time.Now().Add(a.observe).UnixNano())
				}
				if a.want == -1 {
					continue
				}
				got := time.Duration(c.now() - time.Now().UnixNano())
				if d := got - a.want; d > time.Second || d < -time.Second {
					t.Fatalf("action %d: issued real time %+v, want %+v", i, got, a.want)
				}
			}
		})
	}
}

// TestClockPeekMovesNothing: a read's time (peek) follows now()'s rules
// but takes no reference and raises no floor.
func TestClockPeekMovesNothing(t *testing.T) {
	wall := time.Unix(1_000_000, 0)
	c := newCellClock(func() time.Time { return wall }, time.Minute, slog.New(slog.DiscardHandler))
	if got := c.peek(); got != wall.UnixNano() {
		t.Fatalf("peek without a reference = %d, want the wall clock", got)
	}
	if c.refTime != 0 || c.floor != 0 {
		t.Fatalf("peek moved the clock: ref %d floor %d", c.refTime, c.floor)
	}
	c.observe(wall.UnixNano())
	wall = wall.Add(24 * time.Hour) // a step
	if got := c.peek(); got >= wall.UnixNano() {
		t.Fatalf("peek followed a stepped wall clock: %d", got)
	}
}
