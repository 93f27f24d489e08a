package replication_test

import (
	"context"
	"fmt"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"

	"github.com/cellplane/cellplane/cells"
	"github.com/cellplane/cellplane/controlplane/cptest"
	"github.com/cellplane/cellplane/internal/tenantmd"
	"github.com/cellplane/cellplane/internal/testutil"
	cellv1 "github.com/cellplane/cellplane/proto/cellplane/cell/v1"
	contextv1 "github.com/cellplane/cellplane/proto/cellplane/context/v1"
)

// steer is a dialer for the standby's replication connections that
// reaches only the source members it allows; narrowing it closes the
// connections to the others, so that the sink's next stream lands where
// the test wants.
type steer struct {
	mu      sync.Mutex
	allowed []string // nil: every member
	conns   map[net.Conn]string
}

func (s *steer) dial(ctx context.Context, addr string) (net.Conn, error) {
	s.mu.Lock()
	ok := s.allowed == nil || slices.Contains(s.allowed, addr)
	s.mu.Unlock()
	if !ok {
		return nil, fmt.Errorf("steer: %s not allowed", addr)
	}
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conns == nil {
		s.conns = map[net.Conn]string{}
	}
	s.conns[c] = addr
	return c, nil
}

// only allows addrs (none: every member) and closes the other connections.
func (s *steer) only(addrs ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.allowed = addrs
	if len(addrs) == 0 {
		s.allowed = nil
		return
	}
	for c, a := range s.conns {
		if !slices.Contains(addrs, a) {
			_ = c.Close()
			delete(s.conns, c)
		}
	}
}

// TestStandbyNeverStepsBackOnALaggingMember: the standby streams from a
// three-node source cell; one follower's apply is stalled (a store
// testing knob), so it falls behind the standby. When the standby's
// stream then lands on that follower, the follower answers "this member
// lags, retry elsewhere" (CELL_UNAVAILABLE) instead of CHANGES_TRIMMED:
// the standby neither bootstraps again nor steps back (its tseq, polled
// throughout, never decreases), and it follows the owner again once it
// reaches another member. On the old code the follower answered
// CHANGES_TRIMMED, the standby re-bootstrapped from that follower's
// export and its tseq went back (the known issue of 2026-12-07).
func TestStandbyNeverStepsBackOnALaggingMember(t *testing.T) {
	env := cptest.New(t)
	var stalled atomic.Value // node id whose apply is stalled
	stalled.Store("")
	gate := make(chan struct{})
	var releaseOnce sync.Once
	release := func() { releaseOnce.Do(func() { close(gate) }) }
	srcNodes := env.CreateCell(t, "us-east", "east-a", 3, func(c *cells.Config) {
		id := c.NodeID
		c.TestingKnobs.Store.OnApply = func(uint64) {
			if stalled.Load() == id {
				<-gate
			}
		}
	})
	t.Cleanup(release) // before the nodes close (cleanups run last first)
	st := &steer{}
	dst := env.CreateCell(t, "eu-west", "west-a", 1, func(c *cells.Config) {
		c.ReplicationDialOptions = append(c.ReplicationDialOptions, grpc.WithContextDialer(st.dial),
			grpc.WithConnectParams(grpc.ConnectParams{Backoff: backoff.Config{BaseDelay: 20 * time.Millisecond, Multiplier: 1.6, MaxDelay: 200 * time.Millisecond}, MinConnectTimeout: time.Second}))
		c.Replication.RetryMax = 200 * time.Millisecond
	})[0]
	ctx := testutil.Context(t, 90*time.Second)
	srcConn := dial(t, srcNodes[0].GRPCAddr())
	srcCell, srcData := cellv1.NewCellServiceClient(srcConn), contextv1.NewContextServiceClient(srcConn)
	dstCell := cellv1.NewCellServiceClient(dial(t, dst.GRPCAddr()))

	setRole(t, ctx, srcCell, cellv1.Role_ROLE_OWNER, 1, "")
	if _, err := srcData.CreateContext(tenantmd.Outgoing(ctx, "acme", 0), &contextv1.CreateContextRequest{ContextId: "chat"}); err != nil {
		t.Fatal(err)
	}
	write(t, ctx, srcData, 0, 20)
	setRole(t, ctx, dstCell, cellv1.Role_ROLE_STANDBY, 1, "east-a")
	tseq := func() uint64 {
		resp, err := srcCell.GetTenant(ctx, &cellv1.GetTenantRequest{Tenant: "acme"})
		if err != nil {
			t.Fatal(err)
		}
		return resp.GetTenant().GetTseq()
	}
	caughtUp(t, ctx, dstCell, tseq())

	// Watch the standby's tseq from now on: it must never go down.
	var (
		mu       sync.Mutex
		maxSeen  uint64
		wentBack []string
		sawLag   bool
	)
	wctx, stopWatch := context.WithCancel(ctx)
	var watch sync.WaitGroup
	watch.Add(1)
	go func() {
		defer watch.Done()
		tick := time.NewTicker(2 * time.Millisecond)
		defer tick.Stop()
		for wctx.Err() == nil {
			resp, err := dstCell.GetTenant(wctx, &cellv1.GetTenantRequest{Tenant: "acme"})
			if err == nil {
				got := resp.GetTenant().GetTseq()
				mu.Lock()
				if got < maxSeen {
					wentBack = append(wentBack, fmt.Sprintf("%d after %d (%v)", got, maxSeen, resp.GetReplication()))
				}
				maxSeen = max(maxSeen, got)
				if resp.GetReplication().GetState() == "RETRYING" {
					sawLag = true
				}
				mu.Unlock()
			}
			select {
			case <-wctx.Done():
			case <-tick.C:
			}
		}
	}()

	// Stall a follower's apply, write on, and let the standby follow
	// through the other two members.
	var lagging *cells.Node
	var others []string
	for _, n := range srcNodes {
		if !n.Store().IsLeader() && lagging == nil {
			lagging = n
			continue
		}
		others = append(others, n.GRPCAddr())
	}
	stalled.Store(lagging.Info().GetNodeId())
	st.only(others...)
	write(t, ctx, srcData, 20, 40)
	caughtUp(t, ctx, dstCell, tseq())

	// Only the lagging follower is reachable now: the standby, ahead of
	// it, must wait rather than bootstrap from it.
	answered := func() float64 {
		return testutil.MetricSum(t, nil, "http://"+lagging.HTTPAddr()+"/metrics", "cellplane_replication_source_lagging_total") +
			testutil.MetricSum(t, nil, "http://"+lagging.HTTPAddr()+"/metrics", "cellplane_replication_source_trimmed_total")
	}
	before := answered()
	st.only(lagging.GRPCAddr())
	testutil.Eventually(t, 20*time.Second, func() error {
		// The lagging member answered the standby's stream (old code:
		// trimmed; now: lagging).
		n := answered() - before
		mu.Lock()
		defer mu.Unlock()
		if n < 1 || !sawLag {
			return fmt.Errorf("the lagging member has not answered the standby yet (%v, retried %v)", n, sawLag)
		}
		return nil
	})
	resp, err := dstCell.GetTenant(ctx, &cellv1.GetTenantRequest{Tenant: "acme"})
	if err != nil {
		t.Fatal(err)
	}
	if b := resp.GetReplication().GetBootstraps(); b != 1 || !resp.GetTenant().GetBootstrapped() {
		t.Errorf("on the lagging member: %v, %v; want no second bootstrap", resp.GetTenant(), resp.GetReplication())
	}

	// Heal: the follower catches up, every member is reachable, and the
	// standby follows the owner again with no bootstrap in between.
	release()
	st.only()
	write(t, ctx, srcData, 40, 50)
	final := caughtUp(t, ctx, dstCell, tseq())
	stopWatch()
	watch.Wait()
	if final.GetBootstraps() != 1 {
		t.Errorf("final status %v: want exactly one bootstrap (the first)", final)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(wentBack) > 0 {
		t.Fatalf("the standby's tseq went back: %v", wentBack)
	}
}

// TestStandbyBeyondTheLeaderBootstraps: the other side of the rule. A
// standby re-pointed (keeping its data) at a source whose leader is behind
// it — a different history, as after a promotion of another copy — gets
// CHANGES_TRIMMED from that leader once it is caught up to its commit
// index (the standby diverged), bootstraps from the new source and ends
// with exactly its history.
func TestStandbyBeyondTheLeaderBootstraps(t *testing.T) {
	p := newPair(t)
	ctx := testutil.Context(t, 90*time.Second)
	setRole(t, ctx, p.srcCell, cellv1.Role_ROLE_OWNER, 1, "")
	if _, err := p.srcData.CreateContext(tenantmd.Outgoing(ctx, "acme", 0), &contextv1.CreateContextRequest{ContextId: "chat"}); err != nil {
		t.Fatal(err)
	}
	write(t, ctx, p.srcData, 0, 30)
	setRole(t, ctx, p.dstCell, cellv1.Role_ROLE_STANDBY, 1, "east-a")
	caughtUp(t, ctx, p.dstCell, p.srcTseq(t, ctx))

	// Another owner of acme, with a shorter history, in a third cell.
	other := p.env.CreateCell(t, "us-west", "west-b", 1)[0]
	oc := dial(t, other.GRPCAddr())
	otherCell, otherData := cellv1.NewCellServiceClient(oc), contextv1.NewContextServiceClient(oc)
	setRole(t, ctx, otherCell, cellv1.Role_ROLE_OWNER, 1, "")
	if _, err := otherData.CreateContext(tenantmd.Outgoing(ctx, "acme", 0), &contextv1.CreateContextRequest{ContextId: "chat"}); err != nil {
		t.Fatal(err)
	}
	write(t, ctx, otherData, 100, 105)
	if _, err := p.dstCell.SetTenant(ctx, &cellv1.SetTenantRequest{Tenant: "acme", Role: cellv1.Role_ROLE_STANDBY, Epoch: 1, SourceCell: "west-b", Resume: true}); err != nil {
		t.Fatal(err)
	}
	resp, err := otherCell.GetTenant(ctx, &cellv1.GetTenantRequest{Tenant: "acme"})
	if err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 30*time.Second, func() error {
		r, err := p.dstCell.GetTenant(ctx, &cellv1.GetTenantRequest{Tenant: "acme"})
		if err != nil {
			return err
		}
		if st := r.GetReplication(); st.GetBootstraps() < 1 || !r.GetTenant().GetBootstrapped() || r.GetTenant().GetTseq() != resp.GetTenant().GetTseq() ||
			r.GetTenant().GetUsage().GetEntries() != 5 || st.GetSourceCell() != "west-b" {
			return fmt.Errorf("standby %v, %v; want west-b's history at tseq %d", r.GetTenant(), st, resp.GetTenant().GetTseq())
		}
		return nil
	})
}
