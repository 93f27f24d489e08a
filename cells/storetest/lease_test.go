package storetest

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cellplane/cellplane/cells/store"
	"github.com/cellplane/cellplane/internal/histcheck"
	"github.com/cellplane/cellplane/internal/retry"
	"github.com/cellplane/cellplane/internal/testutil"
)

// leaseReads turns lease-based linearizable reads on.
func leaseReads(cfg *store.Config) { cfg.Raft.LeaseReads = true }

// waitLease waits until n's leader lease holds.
func waitLease(t *testing.T, n *Node) {
	t.Helper()
	testutil.Eventually(t, 10*time.Second, func() error {
		if d := n.S().LeaseRemaining(); d <= 0 {
			return fmt.Errorf("%s holds no lease", n.ID)
		}
		return nil
	})
}

// TestLeaseHeldByTheLeaderOnly: the leader's lease holds once it has led
// for a lease period (heartbeats keep it), followers hold none, and reads
// are served.
func TestLeaseHeldByTheLeaderOnly(t *testing.T) {
	c := NewCluster(t, 3, Options{Config: leaseReads})
	mustCreate(t, c, "acme", "c")
	l := c.Leader()
	waitLease(t, l)
	if d, most := l.S().LeaseRemaining(), TestConfig().Raft.HeartbeatTimeout; d > most {
		t.Errorf("lease remaining %v exceeds the heartbeat timeout %v", d, most)
	}
	for _, i := range c.Others(l.Index) {
		if d := c.Nodes[i].S().LeaseRemaining(); d != 0 {
			t.Errorf("follower %s holds a lease (%v)", c.Nodes[i].ID, d)
		}
	}
	if _, err := texts(t, l.S(), "acme", "c", store.ReadOptions{}); err != nil {
		t.Fatalf("linearizable read under the lease: %v", err)
	}
}

// TestLeaseRefusedOnceTransferStarts: a leadership transfer lets the new
// leader be elected by votes that ignore stickiness, so the lease ends
// when the transfer starts and stays off for the rest of the term, even
// when the transfer fails and this node keeps leading with a quorum that
// acknowledges its heartbeats.
func TestLeaseRefusedOnceTransferStarts(t *testing.T) {
	c := NewCluster(t, 3, Options{Config: leaseReads})
	mustCreate(t, c, "acme", "c")
	l := c.Leader()
	waitLease(t, l)
	others := c.Others(l.Index)
	target, other := c.Nodes[others[0]], c.Nodes[others[1]]
	c.Partition([]int{l.Index, other.Index}) // the target is cut off: the transfer cannot complete
	term, ready := l.S().LeaderTerm()
	if !ready {
		t.Fatal("the leader is not ready")
	}
	ctx := testCtx(t, 30*time.Second)
	if _, err := l.S().TransferLeadership(ctx, target.ID); err == nil {
		t.Fatal("a transfer to a member cut off from the leader succeeded")
	}
	if now, ok := l.S().LeaderTerm(); !ok || now != term {
		t.Skipf("leadership moved anyway (term %d → %d, leading %v)", term, now, ok)
	}
	// Heartbeats to the other follower go on; the lease must not come back.
	for range 5 {
		if d := l.S().LeaseRemaining(); d != 0 {
			t.Fatalf("lease of %v after a transfer started in this term", d)
		}
		if err := retry.Sleep(ctx, 50*time.Millisecond); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := texts(t, l.S(), "acme", "c", store.ReadOptions{}); err != nil {
		t.Fatalf("linearizable read by a quorum round after the failed transfer: %v", err)
	}
	// A leader of a later term holds a lease again.
	c.Heal()
	if _, err := l.S().TransferLeadership(ctx, other.ID); err != nil {
		t.Fatalf("transfer after healing: %v", err)
	}
	waitLease(t, c.Leader())
}

// TestLeaseReadsPartitionedLeader: the leader is cut off while it holds
// a lease and is read from all along; the other two elect a leader and
// commit appends. Every read the old leader served must be linearizable
// with those appends (porcupine), so it serves none once the new leader
// could have committed.
func TestLeaseReadsPartitionedLeader(t *testing.T) {
	c := NewCluster(t, 3, Options{Config: leaseReads})
	mustCreate(t, c, "acme", "c")
	ctx := testCtx(t, 60*time.Second)
	history := histcheck.New()
	write := func(s *store.Store, v string) error {
		call := history.Now()
		res, err := s.Propose(ctx, appendCmd("acme", "c", v, v))
		if err != nil {
			return err
		}
		history.Append(1, "c", v, call, history.Now(), res.GetAppend().GetFirstSeq(), histcheck.OK)
		return nil
	}
	old := c.Leader()
	if err := write(old.S(), "before"); err != nil {
		t.Fatal(err)
	}
	waitLease(t, old)

	var stop atomic.Bool
	var served atomic.Int64
	var lastServed atomic.Int64 // when the last read served began (unix nanos)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for !stop.Load() {
			call := history.Now()
			vals, err := texts(t, old.S(), "acme", "c", store.ReadOptions{})
			if err == nil {
				history.Read(0, "c", call, history.Now(), vals)
				served.Add(1)
				lastServed.Store(call.UnixNano())
			}
			if retry.Sleep(ctx, time.Millisecond) != nil {
				return
			}
		}
	}()
	c.Isolate(old.Index)
	isolated := time.Now()

	// The other two elect a leader and commit.
	var leader *store.Store
	testutil.Eventually(t, 20*time.Second, func() error {
		for _, i := range c.Others(old.Index) {
			if s := c.Nodes[i].S(); s.IsLeader() {
				if _, ok := s.LeaderTerm(); ok {
					leader = s
					return nil
				}
			}
		}
		return errors.New("no new leader yet")
	})
	var firstCommit time.Time
	for i := range 5 {
		if err := write(leader, fmt.Sprint("after-", i)); err != nil {
			t.Fatalf("append on the new leader: %v", err)
		}
		if i == 0 {
			firstCommit = time.Now()
		}
	}
	// Keep reading the old leader a while after the new one committed.
	if err := retry.Sleep(ctx, 3*TestConfig().Raft.HeartbeatTimeout); err != nil {
		t.Fatal(err)
	}
	stop.Store(true)
	wg.Wait()
	if d := old.S().LeaseRemaining(); d != 0 {
		t.Errorf("the cut-off leader still holds a lease of %v", d)
	}
	if last := time.Unix(0, lastServed.Load()); served.Load() > 0 && last.After(firstCommit) {
		t.Errorf("the cut-off leader served a read begun %v after it was cut off, after the new leader committed (%v)", last.Sub(isolated), firstCommit.Sub(isolated))
	}
	if err := histcheck.Check(history.Operations(), 30*time.Second); err != nil {
		t.Fatal(err)
	}
	t.Logf("the cut-off leader served %d reads, the last begun %v after it was cut off; the new leader committed %v after",
		served.Load(), time.Unix(0, lastServed.Load()).Sub(isolated), firstCommit.Sub(isolated))
}
