package store

import (
	"log/slog"
	"sync"
	"time"
)

// cellClock gives the timestamps a leader puts on the commands it
// proposes (Command.time_unix_nano). Those timestamps drive replicated
// decisions in the state machine: change-log age retention and the dedup
// window (finding M8). Reading the wall clock directly would let one
// node's clock step — hours or days forward — trim that much change log
// and forget that many request ids for every tenant the node writes.
//
// So the clock follows the wall clock only while it agrees with a trusted
// reference advanced by the monotonic clock (which wall-clock steps do not
// move):
//
//   - A reference is a (cell time, monotonic instant) pair. A node takes
//     one from every timestamp it issues as leader and from every command
//     it applies whose time is within MaxStep of its own wall clock (its
//     clock agreed with the cell's then: a live command, a sane clock).
//   - At a proposal the estimate is reference + monotonic time since. The
//     wall clock is used when it is within MaxStep of the estimate (normal
//     operation, NTP slewing and small steps) and becomes the new
//     reference; otherwise the estimate is used and the wall clock ignored.
//   - Without a reference (a node that has not yet applied a command its
//     clock agreed with since it started) the wall clock is used, floored
//     at the newest applied command time.
//   - Timestamps never go backwards on one node (floored at the newest
//     issued or applied time).
//
// A forward step of a leader's wall clock therefore changes nothing, and
// neither does a leadership change to a follower whose clock stepped after
// it last followed the cell. What remains is in docs/reliability.md
// (## Clocks).
type cellClock struct {
	wall    func() time.Time // the wall clock (TestingKnobs.WallClock or time.Now)
	maxStep time.Duration
	log     *slog.Logger

	mu      sync.Mutex
	floor   int64     // newest time issued or applied
	refTime int64     // the reference's cell time (unix nanos); 0: none
	refMono time.Time // the reference's monotonic instant (time.Now, never the knob)
	warned  bool      // the wall clock disagreed; logged once until it agrees again
}

func newCellClock(wall func() time.Time, maxStep time.Duration, log *slog.Logger) *cellClock {
	if wall == nil {
		wall = time.Now
	}
	return &cellClock{wall: wall, maxStep: maxStep, log: log}
}

// now returns the timestamp for a command proposed now.
func (c *cellClock) now() int64 {
	mono := time.Now()
	w := c.wall().UnixNano()
	c.mu.Lock()
	defer c.mu.Unlock()
	t := w
	if c.refTime != 0 {
		est := c.refTime + int64(mono.Sub(c.refMono))
		if d := w - est; d > int64(c.maxStep) || d < -int64(c.maxStep) {
			t = est
			if !c.warned {
				c.warned = true
				c.log.Warn("wall clock disagrees with the cell clock; following the monotonic clock",
					"skew", time.Duration(d), "max_step", c.maxStep)
			}
		} else if c.warned {
			c.warned = false
			c.log.Info("wall clock agrees with the cell clock again", "skew", time.Duration(d))
		}
	} else if c.floor != 0 && w-c.floor > int64(c.maxStep) { // once: now() takes a reference below
		// The residual case (docs/reliability.md, ## Clocks): nothing to
		// check the wall clock against. Either the cell was idle that
		// long, or this node's clock is ahead.
		c.log.Warn("no trusted cell clock reference: stamping from the wall clock, ahead of the newest applied command",
			"ahead", time.Duration(w-c.floor), "max_step", c.maxStep)
	}
	t = max(t, c.floor)
	c.floor = t
	c.refTime, c.refMono = t, mono
	return t
}

// peek is the time now() would give, without taking it: no reference
// and no floor change, so reads (expiry checks, retention.go) never move
// the clock a leader stamps commands with (a follower's stepped wall
// clock must not become its reference through a read).
func (c *cellClock) peek() int64 {
	mono := time.Now()
	w := c.wall().UnixNano()
	c.mu.Lock()
	defer c.mu.Unlock()
	t := w
	if c.refTime != 0 {
		if est := c.refTime + int64(mono.Sub(c.refMono)); w-est > int64(c.maxStep) || est-w > int64(c.maxStep) {
			t = est
		}
	}
	return max(t, c.floor)
}

// observe records the newest command time of an applied batch.
func (c *cellClock) observe(t int64) {
	if t == 0 {
		return
	}
	mono := time.Now()
	w := c.wall().UnixNano()
	c.mu.Lock()
	defer c.mu.Unlock()
	c.floor = max(c.floor, t)
	if d := w - t; d <= int64(c.maxStep) && d >= -int64(c.maxStep) {
		// Our clock agrees with the cell's: a trusted reference. On the
		// leader, an applied command is a little older than the reference
		// its proposal took; keep the newer one.
		if c.refTime == 0 || t > c.refTime+int64(mono.Sub(c.refMono)) {
			c.refTime, c.refMono = t, mono
		}
	}
}
