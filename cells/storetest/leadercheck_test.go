package storetest

import (
	"fmt"
	"testing"
	"time"

	"github.com/cellplane/cellplane/cells/store"
)

// TestLeaderCheck: after the leader stops, a follower's leader check
// (Raft.LeaderCheckInterval) stands it for election, the cell elects a
// new leader and takes writes; with the check off only Raft's own timer
// runs and the check never fires. No timing is asserted.
func TestLeaderCheck(t *testing.T) {
	for name, tc := range map[string]struct {
		interval time.Duration
		prompt   bool
	}{
		"on":  {interval: 20 * time.Millisecond, prompt: true},
		"off": {interval: 0, prompt: false},
	} {
		t.Run(name, func(t *testing.T) {
			c := NewCluster(t, 3, Options{Config: func(cfg *store.Config) {
				cfg.Raft.LeaderCheckInterval = tc.interval
			}})
			mustCreate(t, c, "acme", "w0")
			old := c.Leader()
			c.Kill(old.Index)
			leader := c.Leader()
			if leader.Index == old.Index {
				t.Fatal("leader did not change")
			}
			if _, err := c.Propose(testCtx(t, 20*time.Second), appendCmd("acme", "w0", "after", "after")); err != nil {
				t.Fatalf("write after the election: %v", err)
			}
			var prompt uint64
			for _, n := range c.Running() {
				prompt += n.S().PromptElections()
			}
			if (prompt > 0) != tc.prompt {
				t.Fatalf("prompt elections %d, want any: %v", prompt, tc.prompt)
			}
		})
	}
}

// TestLeaderCheckKeepsLeader: with a live leader under writes, the check
// never fires and the term does not change (the check only acts when the
// leader has been silent for the heartbeat timeout). The timeouts are
// generous so that a loaded machine does not starve the leader that long.
func TestLeaderCheckKeepsLeader(t *testing.T) {
	c := NewCluster(t, 3, Options{Config: func(cfg *store.Config) {
		cfg.Raft.HeartbeatTimeout = 2 * time.Second
		cfg.Raft.ElectionTimeout = 2 * time.Second
		cfg.Raft.LeaderLeaseTimeout = 2 * time.Second
		cfg.Raft.LeaderCheckInterval = 5 * time.Millisecond
	}})
	mustCreate(t, c, "acme", "w0")
	leader := c.Leader()
	term := leader.S().Status().Term
	end := time.Now().Add(3 * time.Second)
	for i := 0; time.Now().Before(end); i++ {
		id := fmt.Sprintf("r%d", i)
		if _, err := c.Propose(testCtx(t, 20*time.Second), appendCmd("acme", "w0", id, id)); err != nil {
			t.Fatalf("write %d: %v", i, err)
		}
	}
	for _, n := range c.Running() {
		if p := n.S().PromptElections(); p != 0 {
			t.Errorf("%s: %d prompt elections under a live leader", n.ID, p)
		}
	}
	if got := c.Leader(); got.Index != leader.Index || got.S().Status().Term != term {
		t.Fatalf("leader or term changed: %s term %d → %s term %d", leader.ID, term, got.ID, got.S().Status().Term)
	}
}
