package storetest

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/cellplane/cellplane/cells/store"
)

// skewedClocks gives each node a wall clock with its own offset, which a
// test steps (the monotonic clock is the runtime's and does not move).
type skewedClocks struct {
	mu     sync.Mutex
	offset map[string]time.Duration
}

func (c *skewedClocks) step(node string, d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.offset[node] += d
}

func (c *skewedClocks) wall(node string) func() time.Time {
	return func() time.Time {
		c.mu.Lock()
		d := c.offset[node]
		c.mu.Unlock()
		return time.Now().Add(d).Round(0) // a wall reading only
	}
}

// firstChange returns the oldest tseq still in the tenant's change log on
// node s, and checks a Watch resuming after tseq `after` still can.
func changesFrom(t *testing.T, s *store.Store, tenant string, after uint64) (first uint64, err error) {
	t.Helper()
	err = s.ReadTenant(testCtx(t, 10*time.Second), tenant, 0, stale, func(v *store.TenantView) error {
		evs, err := v.Changes(after, 1<<20)
		if len(evs) > 0 {
			first = evs[0].GetTseq()
		}
		return err
	})
	return first, err
}

// TestClockStepDoesNotTrimChangeLog is finding M8 (S23): the leader's
// wall clock steps a day forward, then leadership moves to a follower
// whose clock also stepped. The cell's change-log age retention (1 h here)
// and dedup window must not see the step: every tenant's log still
// resumes from its first event, and a retry of a request id from before
// the step is still answered from the dedup record, not applied again.
// Before the fix (the leader stamped commands with its wall clock) the
// first write after the step trimmed the log to its newest event.
func TestClockStepDoesNotTrimChangeLog(t *testing.T) {
	clocks := &skewedClocks{offset: map[string]time.Duration{}}
	c := NewCluster(t, 3, Options{Config: func(cfg *store.Config) {
		cfg.ChangeLog.RetentionAge = time.Hour
		cfg.TestingKnobs.WallClock = clocks.wall(cfg.NodeID)
	}})
	tenants := []string{"t1", "t2"}
	for _, tn := range tenants {
		mustCreate(t, c, tn, "c1")
	}
	write := func(tn, req, text string) {
		t.Helper()
		res, err := c.Propose(testCtx(t, 20*time.Second), appendCmd(tn, "c1", req, text))
		if err != nil {
			t.Fatalf("append %s/%s: %v", tn, req, err)
		}
		if res.GetDeduplicated() {
			t.Fatalf("append %s/%s: deduplicated, want applied", tn, req)
		}
	}
	for i := range 5 {
		for _, tn := range tenants {
			write(tn, fmt.Sprintf("before-%d", i), fmt.Sprintf("before-%d", i))
		}
	}
	check := func(when string) {
		t.Helper()
		c.WaitConverged()
		for _, n := range c.Running() {
			for _, tn := range tenants {
				first, err := changesFrom(t, n.S(), tn, 0)
				if errors.Is(err, store.ErrChangesTrimmed) || err == nil && first != 1 {
					t.Fatalf("%s: %s: %s's change log was trimmed by the clock step (first tseq %d, err %v)", when, n.ID, tn, first, err)
				}
				if err != nil {
					t.Fatalf("%s: %s: changes: %v", when, n.ID, err)
				}
			}
		}
		// The retry of a request id from before the step is deduplicated.
		res, err := c.Propose(testCtx(t, 20*time.Second), appendCmd("t1", "c1", "before-0", "before-0"))
		if err != nil || !res.GetDeduplicated() {
			t.Fatalf("%s: retry of before-0: deduplicated=%v err=%v, want the first result", when, res.GetDeduplicated(), err)
		}
	}

	// 1. The leader's clock steps a day forward.
	leader := c.Leader()
	clocks.step(leader.ID, 25*time.Hour)
	for i := range 5 {
		for _, tn := range tenants {
			write(tn, fmt.Sprintf("after-leader-step-%d", i), "x")
		}
	}
	check("leader stepped")

	// 2. Every clock steps; leadership moves to a follower.
	for _, n := range c.Nodes {
		if n != leader {
			clocks.step(n.ID, 25*time.Hour)
		}
	}
	for _, tn := range tenants {
		write(tn, "after-all-step", "x") // followers apply commands their clock now disagrees with
	}
	if _, err := leader.S().TransferLeadership(testCtx(t, 20*time.Second), ""); err != nil {
		t.Fatalf("transfer leadership: %v", err)
	}
	if l := c.Leader(); l == leader {
		t.Fatalf("leadership did not move")
	}
	for i := range 5 {
		for _, tn := range tenants {
			write(tn, fmt.Sprintf("after-transfer-%d", i), "x")
		}
	}
	check("leadership moved to a stepped follower")
}
