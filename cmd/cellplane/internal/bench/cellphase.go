package bench

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"

	"github.com/cellplane/cellplane/cells"
	"github.com/cellplane/cellplane/cells/store"
	"github.com/cellplane/cellplane/internal/dial"
	"github.com/cellplane/cellplane/internal/retry"
	cellv1 "github.com/cellplane/cellplane/proto/cellplane/cell/v1"
	contextv1 "github.com/cellplane/cellplane/proto/cellplane/context/v1"
)

// benchTenant is the tenant the cell phase writes as.
const benchTenant = "bench"

// runCellPhase starts a 3-node cell under dir and runs the write and read
// steps against it, filling res. The process's memory is watched from the
// cell's start to the end of its last step.
func runCellPhase(ctx context.Context, opts CellOptions, dir string, step func(string, int) Load, res *CellResults, p progress) error {
	res.VmHWMReset = ResetPeakRSS() == nil
	sampler := StartPeakSampler(50 * time.Millisecond)
	defer func() {
		if res.CellPeakRSSBytes == 0 {
			res.CellPeakRSSBytes, _ = sampler.Stop()
		}
	}()

	p.printf("starting a 3-node cell")
	t0 := time.Now()
	var mutate []func(*cells.Config)
	if opts.LeaseReads {
		res.LeaseReads = true
		mutate = append(mutate, func(c *cells.Config) { c.Store.Raft.LeaseReads = true })
	}
	cell, err := StartCell(ctx, dir, opts.Logger, mutate...)
	if err != nil {
		return err
	}
	defer func() {
		// The figures stand even if a node stops uncleanly: say so, do
		// not throw them away.
		if cerr := cell.Close(); cerr != nil {
			p.printf("warning: closing the cell: %v", cerr)
		}
	}()
	res.CellStartSec = time.Since(t0).Seconds()
	p.printf("  cell ready in %.2f s (leader %s)", res.CellStartSec, cell.Leader().GRPCAddr())

	termStart := cell.Term()
	defer func() {
		res.CellElections = cell.Term() - termStart
		res.CellLeaderMoved = cell.CurrentLeader() != cell.leader
	}()
	leader := contextv1.NewContextServiceClient(cell.Conn(cell.leader))
	follower := contextv1.NewContextServiceClient(cell.Conn((cell.leader + 1) % len(cell.nodes)))
	tctx := metadata.AppendToOutgoingContext(ctx, "x-cellplane-tenant", benchTenant)

	// One context per worker: appends never contend on a context's
	// sequence, only on the cell's log.
	maxConc := max(slicesMax(opts.Concurrency), opts.ReadConcurrency)
	ids := make([]string, maxConc)
	for i := range ids {
		ids[i] = fmt.Sprintf("bench-%03d", i)
	}
	if err := createContexts(tctx, leader, ids); err != nil {
		return err
	}

	// b. Writes.
	data := payload(opts.EntrySize)
	var reqs atomic.Uint64
	for _, c := range opts.Concurrency {
		r, err := Run(tctx, step("cell append", c), func(ctx context.Context, w int) error {
			_, err := leader.Append(ctx, &contextv1.AppendRequest{
				ContextId: ids[w],
				Entries:   []*contextv1.Entry{{Role: "user", Content: &contextv1.Entry_Data{Data: data}}},
				RequestId: fmt.Sprintf("append-%d", reqs.Add(1)),
			})
			return err
		})
		if err != nil {
			return err
		}
		p.result(r)
		res.Writes = append(res.Writes, r)
	}

	// c. Reads of the last entry of a context every worker wrote to.
	read := func(client contextv1.ContextServiceClient, c contextv1.Consistency) Op {
		return func(ctx context.Context, w int) error {
			_, err := client.Read(ctx, &contextv1.ReadRequest{
				ContextId:   ids[w%len(ids)],
				Start:       &contextv1.ReadRequest_Tail{Tail: 1},
				ReadOptions: &contextv1.ReadOptions{Consistency: c},
			})
			return err
		}
	}
	lin := contextv1.Consistency_CONSISTENCY_LINEARIZABLE
	stale := contextv1.Consistency_CONSISTENCY_STALE
	rc := opts.ReadConcurrency
	for _, s := range []struct {
		name string
		op   Op
	}{
		{readLinMax, read(leader, lin)},
		{readStaleLdr, read(leader, stale)},
		{readStaleFollw, read(follower, stale)},
	} {
		r, err := Run(tctx, step(s.name, rc), s.op)
		if err != nil {
			return err
		}
		p.result(r)
		res.Reads = append(res.Reads, r)
	}
	// Latency at half the linearizable maximum: open loop, so that a
	// stall shows as queueing instead of a slower request rate.
	half := step(readLinHalf, rc)
	half.Rate = res.Reads[0].OpsPerSec / 2
	r, err := Run(tctx, half, read(leader, lin))
	if err != nil {
		return err
	}
	p.result(r)
	res.Reads = append(res.Reads, r)

	res.CellPeakRSSBytes, _ = sampler.Stop()
	if m, err := ReadMemory(); err == nil {
		res.CellVmHWMBytes = m.Peak
	}
	return nil
}

func slicesMax(s []int) int {
	m := 0
	for _, v := range s {
		m = max(m, v)
	}
	return m
}

// createContexts creates the contexts, 16 at a time.
func createContexts(ctx context.Context, c contextv1.ContextServiceClient, ids []string) error {
	var next atomic.Int64
	var mu sync.Mutex
	var errs []error
	var wg sync.WaitGroup
	for range min(16, len(ids)) {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= len(ids) {
					return
				}
				_, err := c.CreateContext(ctx, &contextv1.CreateContextRequest{
					ContextId: ids[i],
					RequestId: "create-" + ids[i],
				})
				if err != nil && Code(err) != codes.AlreadyExists {
					mu.Lock()
					errs = append(errs, fmt.Errorf("create context %s: %w", ids[i], err))
					mu.Unlock()
					return
				}
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// Cell is a 3-node cell running in this process on loopback TCP and real
// disk, with tenant "bench" OWNER at epoch 1: the system under test of the
// cell scenario, reusable by scenarios that need a live cell.
type Cell struct {
	nodes  []*cells.Node
	conns  []*grpc.ClientConn
	leader int
}

// StartCell starts 3 nodes under dir (one subdirectory each) with default
// settings changed by mutate, waits for a leader and makes tenant "bench"
// OWNER at epoch 1 through CellService.SetTenant.
func StartCell(ctx context.Context, dir string, logger *slog.Logger, mutate ...func(*cells.Config)) (c *Cell, err error) {
	const size = 3
	startCtx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()

	type lis struct{ raft, grpc, http net.Listener }
	ls := make([]lis, size)
	peers := make([]store.Peer, size)
	closeAll := func() {
		for _, l := range ls {
			for _, x := range []net.Listener{l.raft, l.grpc, l.http} {
				if x != nil {
					x.Close()
				}
			}
		}
	}
	for i := range size {
		for _, p := range []*net.Listener{&ls[i].raft, &ls[i].grpc, &ls[i].http} {
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				closeAll()
				return nil, fmt.Errorf("bench: listen: %w", err)
			}
			*p = l
		}
		peers[i] = store.Peer{ID: fmt.Sprintf("n%d", i+1), Addr: ls[i].raft.Addr().String()}
	}

	c = &Cell{nodes: make([]*cells.Node, size)}
	defer func() {
		if err != nil {
			_ = c.Close()
		}
	}()
	errs := make([]error, size)
	var wg sync.WaitGroup
	for i := range size {
		cfg := cells.DefaultConfig()
		cfg.NodeID = peers[i].ID
		cfg.RaftListener, cfg.GRPCListener, cfg.HTTPListener = ls[i].raft, ls[i].grpc, ls[i].http
		cfg.DataDir = filepath.Join(dir, peers[i].ID)
		cfg.Bootstrap = peers
		cfg.Logger = logger
		cfg.ShutdownTimeout = 0
		for _, m := range mutate {
			m(&cfg)
		}
		wg.Go(func() { c.nodes[i], errs[i] = cells.Start(startCtx, cfg) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return c, fmt.Errorf("bench: start cell: %w", err)
	}
	for _, n := range c.nodes {
		conn, err := dial.New(n.GRPCAddr(), dial.DefaultConfig())
		if err != nil {
			return c, fmt.Errorf("bench: dial %s: %w", n.GRPCAddr(), err)
		}
		c.conns = append(c.conns, conn)
	}

	if err := c.waitLeader(startCtx); err != nil {
		return c, err
	}
	admin := cellv1.NewCellServiceClient(c.conns[c.leader])
	err = poll(startCtx, func() error {
		_, err := admin.SetTenant(startCtx, &cellv1.SetTenantRequest{
			Tenant:    benchTenant,
			Role:      cellv1.Role_ROLE_OWNER,
			Epoch:     1,
			RequestId: "bench-set-tenant",
		})
		if err != nil && Code(err) != codes.Unavailable {
			return retry.Permanent(err) // only a missing leader is worth waiting out
		}
		return err
	})
	if err != nil {
		return c, fmt.Errorf("bench: make tenant %s owner: %w", benchTenant, err)
	}
	return c, nil
}

// waitLeader waits until one node leads and every node knows it.
func (c *Cell) waitLeader(ctx context.Context) error {
	return poll(ctx, func() error {
		leader := -1
		for i, n := range c.nodes {
			if n.Store().IsLeader() {
				leader = i
			}
		}
		if leader < 0 {
			return errors.New("no leader yet")
		}
		want := c.nodes[leader].Store().Status().NodeID
		for _, n := range c.nodes {
			if id, _ := n.Store().Leader(); id != want {
				return fmt.Errorf("node %s does not know leader %s yet", n.Store().Status().NodeID, want)
			}
		}
		c.leader = leader
		return nil
	})
}

// poll calls fn every 20 ms until it succeeds, returns an error marked
// retry.Permanent, or ctx ends.
func poll(ctx context.Context, fn func() error) error {
	return retry.Poll(ctx, 20*time.Millisecond, fn)
}

// Term returns the highest Raft term any node has seen: it grows by one
// per election (won or not), so its growth over a run counts elections.
func (c *Cell) Term() uint64 {
	var t uint64
	for _, n := range c.nodes {
		if n != nil {
			t = max(t, n.Store().Status().Term)
		}
	}
	return t
}

// CurrentLeader returns the index of the node that leads now, -1 if none.
func (c *Cell) CurrentLeader() int {
	for i, n := range c.nodes {
		if n != nil && n.Store().IsLeader() {
			return i
		}
	}
	return -1
}

// Leader returns the node that led when the cell started.
func (c *Cell) Leader() *cells.Node { return c.nodes[c.leader] }

// Conn returns a client connection to node i.
func (c *Cell) Conn(i int) *grpc.ClientConn { return c.conns[i] }

// Close closes the connections and stops every node at once. The nodes
// run without a graceful shutdown phase (the data is thrown away), so no
// leader tries to hand leadership to a peer that is stopping too.
func (c *Cell) Close() error {
	var errs []error
	for _, conn := range c.conns {
		errs = append(errs, conn.Close())
	}
	c.conns = nil
	nodeErrs := make([]error, len(c.nodes))
	var wg sync.WaitGroup
	for i, n := range c.nodes {
		if n != nil {
			c.nodes[i] = nil
			wg.Go(func() { nodeErrs[i] = n.Close() })
		}
	}
	wg.Wait()
	return errors.Join(append(errs, nodeErrs...)...)
}
