package storetest

import (
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/cellplane/cellplane/cells/store"
	"github.com/cellplane/cellplane/internal/histcheck"
	"github.com/cellplane/cellplane/internal/retry"
)

// TestLinearizableHistory records concurrent appends and linearizable
// reads while leadership moves (a transfer, then a leader kill) and checks
// the history with porcupine. Every operation is retried until it succeeds
// (appends with the same request id), so each has a known result; its
// interval spans all its attempts.
func TestLinearizableHistory(t *testing.T) { linearizableHistory(t, Options{}) }

// TestLinearizableHistoryLeaseReads is TestLinearizableHistory with
// lease-based linearizable reads.
func TestLinearizableHistoryLeaseReads(t *testing.T) {
	linearizableHistory(t, Options{Config: leaseReads})
}

func linearizableHistory(t *testing.T, opts Options) {
	c := NewCluster(t, 3, opts)
	mustCreate(t, c, "acme", "c")
	const clients, opsPerClient = 4, 60
	history := histcheck.New()
	var wg sync.WaitGroup
	ctx := testCtx(t, 60*time.Second)
	var progress sync.WaitGroup
	progress.Add(clients)
	for cl := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(cl), 7))
			for i := range opsPerClient {
				if i == opsPerClient/3 {
					progress.Done()
				}
				call := history.Now()
				if rng.IntN(2) == 0 {
					v := fmt.Sprintf("c%d-%d", cl, i)
					res, err := c.Propose(ctx, appendCmd("acme", "c", v, v))
					if err != nil {
						t.Errorf("append %s: %v", v, err)
						return
					}
					history.Append(cl, "c", v, call, history.Now(), res.GetAppend().GetFirstSeq(), histcheck.OK)
				} else {
					vals, err := linearizableRead(t, c)
					if err != nil {
						t.Errorf("read: %v", err)
						return
					}
					history.Read(cl, "c", call, history.Now(), vals)
				}
			}
		}()
	}
	// Move leadership twice while the clients run.
	progress.Wait()
	leader := c.Leader()
	if _, err := leader.S().TransferLeadership(ctx, ""); err != nil {
		t.Logf("transfer: %v", err)
	}
	c.Kill(c.Leader().Index)
	wg.Wait()
	if t.Failed() {
		return
	}
	ops := history.Operations()
	if err := histcheck.Check(ops, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d operations linearizable across a transfer and a leader kill", len(ops))
}

// linearizableRead reads the context from the current leader, retrying
// on leadership errors.
func linearizableRead(t *testing.T, c *Cluster) ([]string, error) {
	deadline := time.Now().Add(30 * time.Second)
	for {
		for _, n := range c.Running() {
			s := n.S()
			if s == nil || !s.IsLeader() {
				continue
			}
			vals, err := texts(t, s, "acme", "c", store.ReadOptions{})
			if err == nil {
				return vals, nil
			}
			if !retry.Resend(retry.Idempotent, err) {
				return nil, err
			}
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("no leader served the read in time")
		}
		time.Sleep(5 * time.Millisecond)
	}
}
