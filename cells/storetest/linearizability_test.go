package storetest

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
	"github.com/cellplane/cellplane/cells/store"
	"github.com/cellplane/cellplane/internal/retry"
)

// A porcupine model of one context: appends return the seq they got,
// linearizable reads return every entry.
type linInput struct {
	append bool
	value  string
}

type linOutput struct {
	seq    uint64 // appends
	values string // reads: the texts joined with ","
}

var contextModel = porcupine.Model{
	Init: func() any { return "" },
	Step: func(state, input, output any) (bool, any) {
		st, in, out := state.(string), input.(linInput), output.(linOutput)
		if in.append {
			next := st + in.value + ","
			return out.seq == uint64(strings.Count(next, ",")), next
		}
		return out.values == st, st
	},
	DescribeOperation: func(input, output any) string {
		in, out := input.(linInput), output.(linOutput)
		if in.append {
			return fmt.Sprintf("append(%s) → %d", in.value, out.seq)
		}
		return fmt.Sprintf("read() → %d entries", strings.Count(out.values, ","))
	},
}

// TestLinearizableHistory records concurrent appends and linearizable
// reads while leadership moves (a transfer, then a leader kill) and checks
// the history with porcupine. Every operation is retried until it succeeds
// (appends with the same request id), so each has a known result; its
// interval spans all its attempts.
func TestLinearizableHistory(t *testing.T) {
	c := NewCluster(t, 3)
	mustCreate(t, c, "acme", "c")
	const clients, opsPerClient = 4, 60
	start := time.Now()
	var mu sync.Mutex
	var history []porcupine.Operation
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
				call := time.Since(start).Nanoseconds()
				var in linInput
				var out linOutput
				if rng.IntN(2) == 0 {
					in = linInput{append: true, value: fmt.Sprintf("c%d-%d", cl, i)}
					res, err := c.Propose(ctx, appendCmd("acme", "c", in.value, in.value))
					if err != nil {
						t.Errorf("append %s: %v", in.value, err)
						return
					}
					out.seq = res.GetAppend().GetFirstSeq()
				} else {
					vals, err := linearizableRead(t, c)
					if err != nil {
						t.Errorf("read: %v", err)
						return
					}
					out.values = vals
				}
				ret := time.Since(start).Nanoseconds()
				mu.Lock()
				history = append(history, porcupine.Operation{ClientId: cl, Input: in, Call: call, Output: out, Return: ret})
				mu.Unlock()
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
	res := porcupine.CheckOperationsTimeout(contextModel, history, 30*time.Second)
	if res != porcupine.Ok {
		t.Fatalf("history of %d operations is not linearizable (%v)", len(history), res)
	}
	t.Logf("%d operations linearizable across a transfer and a leader kill", len(history))
}

// linearizableRead reads the context from the current leader, retrying
// on leadership errors.
func linearizableRead(t *testing.T, c *Cluster) (string, error) {
	deadline := time.Now().Add(30 * time.Second)
	for {
		for _, n := range c.Running() {
			s := n.S()
			if s == nil || !s.IsLeader() {
				continue
			}
			vals, err := texts(t, s, "acme", "c", store.ReadOptions{})
			if err == nil {
				if len(vals) == 0 {
					return "", nil
				}
				return strings.Join(vals, ",") + ",", nil
			}
			if !retry.Resend(retry.Idempotent, err) {
				return "", err
			}
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("no leader served the read in time")
		}
		time.Sleep(5 * time.Millisecond)
	}
}
