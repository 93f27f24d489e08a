package storetest

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cellplane/cellplane/cells/store"
	"github.com/cellplane/cellplane/internal/cperr"
	"github.com/cellplane/cellplane/internal/testutil"
	cellv1 "github.com/cellplane/cellplane/proto/cellplane/cell/v1"
	contextv1 "github.com/cellplane/cellplane/proto/cellplane/context/v1"
)

// writeLoad runs sequential writers, each appending to its own context and
// retrying a write with the same request id until it is acknowledged.
type writeLoad struct {
	c      *Cluster
	tenant string
	stop   atomic.Bool
	wg     sync.WaitGroup
	mu     sync.Mutex
	acked  map[string][]string // context → acknowledged texts, in order
	count  atomic.Int64
	lastAt atomic.Int64 // unix nanos of the latest ack
	errs   []error
}

func startWriteLoad(t *testing.T, c *Cluster, tenant string, writers int) *writeLoad {
	w := &writeLoad{c: c, tenant: tenant, acked: map[string][]string{}}
	ctx := testCtx(t, 60*time.Second)
	for i := range writers {
		ctxID := fmt.Sprintf("w%d", i)
		w.wg.Add(1)
		go func() {
			defer w.wg.Done()
			for n := 0; !w.stop.Load(); n++ {
				text := fmt.Sprintf("%s-%d", ctxID, n)
				res, err := c.Propose(ctx, appendCmd(tenant, ctxID, text, text))
				if err != nil {
					w.mu.Lock()
					w.errs = append(w.errs, fmt.Errorf("%s: %w", text, err))
					w.mu.Unlock()
					return
				}
				if got := res.GetAppend().GetFirstSeq(); got != uint64(n+1) {
					w.mu.Lock()
					w.errs = append(w.errs, fmt.Errorf("%s got seq %d, want %d", text, got, n+1))
					w.mu.Unlock()
					return
				}
				w.mu.Lock()
				w.acked[ctxID] = append(w.acked[ctxID], text)
				w.mu.Unlock()
				w.count.Add(1)
				w.lastAt.Store(time.Now().UnixNano())
			}
		}()
	}
	return w
}

func (w *writeLoad) waitAcks(t *testing.T, n int64) {
	t.Helper()
	testutil.Eventually(t, 30*time.Second, func() error {
		if err := w.err(); err != nil {
			t.Fatal(err)
		}
		if got := w.count.Load(); got < n {
			return fmt.Errorf("%d acknowledged writes, want %d", got, n)
		}
		return nil
	})
}

func (w *writeLoad) err() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return errors.Join(w.errs...)
}

func (w *writeLoad) finish(t *testing.T) {
	t.Helper()
	w.stop.Store(true)
	w.wg.Wait()
	if err := w.err(); err != nil {
		t.Fatal(err)
	}
}

// TestLeaderKilledUnderWriteLoad: writes resume on a new leader and no
// acknowledged write is lost or applied twice (retries reuse request ids).
func TestLeaderKilledUnderWriteLoad(t *testing.T) {
	c := NewCluster(t, 3)
	const writers = 4
	var ids []string
	for i := range writers {
		ids = append(ids, fmt.Sprintf("w%d", i))
	}
	mustCreate(t, c, "acme", ids...)
	w := startWriteLoad(t, c, "acme", writers)
	w.waitAcks(t, 200)

	old := c.Leader()
	killedAt := time.Now()
	before := w.count.Load()
	c.Kill(old.Index)
	w.waitAcks(t, before+200)
	newLeader := c.Leader()
	if newLeader.Index == old.Index {
		t.Fatalf("leader did not change")
	}
	w.finish(t)
	t.Logf("writes resumed after the leader kill; %d acknowledged in total (kill at +%v)", w.count.Load(), time.Since(killedAt).Round(time.Millisecond))

	c.Restart(old.Index)
	for _, id := range ids {
		checkAllNodes(t, c, "acme", id, w.acked[id])
	}
}

// TestFollowerRestartCatchesUp: a follower that was down while writes
// happened catches up after restart.
func TestFollowerRestartCatchesUp(t *testing.T) {
	testFollowerRestartCatchesUp(t, NewCluster(t, 3))
}

func testFollowerRestartCatchesUp(t *testing.T, c *Cluster) {
	mustCreate(t, c, "acme", "w0")
	leader := c.Leader()
	follower := c.Others(leader.Index)[0]
	c.Kill(follower)
	w := startWriteLoad(t, c, "acme", 1)
	w.waitAcks(t, 100)
	w.finish(t)
	c.Restart(follower)
	checkAllNodes(t, c, "acme", "w0", w.acked["w0"])
}

// TestSnapshotRestore: after a snapshot the log is truncated, and a node
// that lost its disk is rebuilt from the snapshot plus the log's tail.
func TestSnapshotRestore(t *testing.T) {
	c := NewCluster(t, 3, Options{Config: func(cfg *store.Config) {
		cfg.Raft.TrailingLogs = 10
		cfg.Raft.SnapshotThreshold = 1 << 40 // only explicit snapshots
	}})
	mustCreate(t, c, "acme", "w0")
	w := startWriteLoad(t, c, "acme", 1)
	w.waitAcks(t, 150)
	w.finish(t)

	leader := c.Leader()
	victim := c.Others(leader.Index)[0]
	c.Kill(victim)
	c.Wipe(victim)
	if err := leader.S().Snapshot(); err != nil {
		t.Fatalf("snapshot: %v", err)
	}
	if first := leader.S().Status().FirstLogIndex; first <= 1 {
		t.Fatalf("log not truncated after snapshot: first index %d", first)
	}
	// More writes after the snapshot: the wiped node needs snapshot + tail.
	for i := range 20 {
		text := fmt.Sprintf("tail-%d", i)
		if _, err := c.Propose(testCtx(t, 20*time.Second), appendCmd("acme", "w0", text, text)); err != nil {
			t.Fatal(err)
		}
		w.acked["w0"] = append(w.acked["w0"], text)
	}
	// The wiped node comes back as a new member, never under its old Raft
	// id (H1): the leader removes the old incarnation, and the new one
	// catches up from the snapshot and the tail before it votes.
	old := c.Nodes[victim].ID
	c.RestartAsNew(victim)
	checkAllNodes(t, c, "acme", "w0", w.acked["w0"])
	st := c.Leader().S().Status()
	voters := 0
	for _, m := range st.Members {
		if m.RaftID == old {
			t.Fatalf("the old incarnation %s is still a member: %+v", old, st.Members)
		}
		if m.Voter {
			voters++
		}
	}
	if voters != 3 || !c.Nodes[victim].S().Status().Voter {
		t.Fatalf("members %+v: want 3 voters, the new incarnation among them", st.Members)
	}
}

// TestRestartDoesNotReapply: a whole cell restarted from disk resumes from
// its persisted state: no entry is applied a second time.
func TestRestartDoesNotReapply(t *testing.T) {
	var mu sync.Mutex
	applied := map[string]uint64{} // node → highest index applied before the restart
	restarted := atomic.Bool{}
	var reapplied []string
	c := NewCluster(t, 3)
	c.opts.Config = func(cfg *store.Config) {
		id := cfg.NodeID
		cfg.TestingKnobs.OnApply = func(idx uint64) {
			mu.Lock()
			defer mu.Unlock()
			if !restarted.Load() {
				applied[id] = max(applied[id], idx)
				return
			}
			if idx <= applied[id] {
				reapplied = append(reapplied, fmt.Sprintf("%s:%d", id, idx))
			}
		}
	}
	// Restart once so every node runs with the knob.
	for i := range c.Nodes {
		c.Kill(i)
	}
	for i := range c.Nodes {
		c.Restart(i)
	}
	c.Leader()
	mustCreate(t, c, "acme", "w0", "w1")
	w := startWriteLoad(t, c, "acme", 2)
	w.waitAcks(t, 100)
	w.finish(t)
	c.WaitConverged()

	restarted.Store(true)
	for i := range c.Nodes {
		c.Kill(i)
	}
	for i := range c.Nodes {
		c.Restart(i)
	}
	checkAllNodes(t, c, "acme", "w0", w.acked["w0"])
	checkAllNodes(t, c, "acme", "w1", w.acked["w1"])
	mu.Lock()
	defer mu.Unlock()
	if len(reapplied) > 0 {
		t.Fatalf("entries applied again after restart: %v", reapplied)
	}
}

// TestRetriedRequestAppliesOnce: the same request id proposed again (also
// after a leader change) returns the first result and appends once.
func TestRetriedRequestAppliesOnce(t *testing.T) {
	c := NewCluster(t, 3)
	mustCreate(t, c, "acme", "c")
	ctx := testCtx(t, 20*time.Second)
	first, err := c.Propose(ctx, appendCmd("acme", "c", "req-1", "hello"))
	if err != nil {
		t.Fatal(err)
	}
	leader := c.Leader()
	if _, err := leader.S().TransferLeadership(ctx, ""); err != nil {
		t.Fatalf("transfer: %v", err)
	}
	again, err := c.Propose(ctx, appendCmd("acme", "c", "req-1", "hello"))
	if err != nil {
		t.Fatal(err)
	}
	if !again.GetDeduplicated() || again.GetAppend().GetFirstSeq() != first.GetAppend().GetFirstSeq() || again.GetTseq() != first.GetTseq() {
		t.Fatalf("retry = %v, first = %v", again, first)
	}
	checkAllNodes(t, c, "acme", "c", []string{"hello"})
}

// TestFencing: role and epoch changes through Raft gate writes and reads.
func TestFencing(t *testing.T) {
	c := NewCluster(t, 3)
	mustCreate(t, c, "acme", "c")
	ctx := testCtx(t, 20*time.Second)
	leader := c.Leader().S()

	withEpoch := func(cmd *cellv1.Command, e uint64) *cellv1.Command { cmd.Epoch = e; return cmd }
	if _, err := leader.Propose(ctx, withEpoch(appendCmd("acme", "c", "", "e1"), 1)); err != nil {
		t.Fatalf("append at the right epoch: %v", err)
	}
	_, err := leader.Propose(ctx, withEpoch(appendCmd("acme", "c", "", "e2"), 2))
	assertReason(t, err, cperr.ErrStaleEpoch, "1")

	// Fence: epoch 2, role FENCED. Writes and reads are refused with the epoch.
	if err := setTenant(t, c, "acme", cellv1.Role_ROLE_FENCED, 2); err != nil {
		t.Fatal(err)
	}
	_, err = leader.Propose(ctx, appendCmd("acme", "c", "", "after-fence"))
	assertReason(t, err, cperr.ErrWrongCell, "2")
	_, err = texts(t, leader, "acme", "c", store.ReadOptions{})
	assertReason(t, err, cperr.ErrWrongCell, "2")

	// Epochs never go down, and OWNER needs a new epoch.
	assertReason(t, setTenant(t, c, "acme", cellv1.Role_ROLE_OWNER, 1), cperr.ErrStaleEpoch, "2")
	assertReason(t, setTenant(t, c, "acme", cellv1.Role_ROLE_OWNER, 2), cperr.ErrStaleEpoch, "2")
	if err := setTenant(t, c, "acme", cellv1.Role_ROLE_OWNER, 3); err != nil {
		t.Fatalf("owner at a new epoch: %v", err)
	}
	if _, err := leader.Propose(ctx, withEpoch(appendCmd("acme", "c", "", "e3"), 3)); err != nil {
		t.Fatalf("append at epoch 3: %v", err)
	}
	_, err = leader.Propose(ctx, appendCmd("nobody", "c", "", "x"))
	assertReason(t, err, cperr.ErrWrongCell, "")
	checkAllNodes(t, c, "acme", "c", []string{"e1", "e3"})
}

func assertReason(t *testing.T, err error, want *cperr.Error, epoch string) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Fatalf("err = %v, want %s", err, want.Reason)
	}
	var e *cperr.Error
	errors.As(err, &e)
	if epoch != "" && e.Metadata[cperr.MetaEpoch] != epoch {
		t.Fatalf("epoch metadata = %q, want %q (%v)", e.Metadata[cperr.MetaEpoch], epoch, err)
	}
}

// TestPartitionedLeader: a leader cut off from the majority can neither
// acknowledge writes nor serve linearizable reads; the majority elects a
// new leader; after healing, every node converges on the majority's log.
func TestPartitionedLeader(t *testing.T) {
	testPartitionedLeader(t, NewCluster(t, 3))
}

func testPartitionedLeader(t *testing.T, c *Cluster) {
	mustCreate(t, c, "acme", "c")
	old := c.Leader()
	c.Isolate(old.Index)

	ctx := testCtx(t, 3*time.Second)
	if res, err := old.S().Propose(ctx, appendCmd("acme", "c", "minority", "minority")); err == nil {
		t.Fatalf("isolated leader acknowledged a write: %v", res)
	}
	if _, err := texts(t, old.S(), "acme", "c", store.ReadOptions{}); err == nil {
		t.Fatalf("isolated leader served a linearizable read")
	}
	var newLeader *Node
	testutil.Eventually(t, 20*time.Second, func() error {
		for _, i := range c.Others(old.Index) {
			if s := c.Nodes[i].S(); s.IsLeader() {
				newLeader = c.Nodes[i]
				return nil
			}
		}
		return errors.New("no leader in the majority")
	})
	if _, err := newLeader.S().Propose(testCtx(t, 20*time.Second), appendCmd("acme", "c", "majority", "majority")); err != nil {
		t.Fatalf("majority write: %v", err)
	}
	c.Heal()
	checkAllNodes(t, c, "acme", "c", []string{"majority"})
}

// TestStaleReadBound: a follower that lost the leader refuses STALE reads
// past the bound, and serves them again once it hears from the leader.
func TestStaleReadBound(t *testing.T) {
	c := NewCluster(t, 3)
	mustCreate(t, c, "acme", "c")
	leader := c.Leader()
	f := c.Nodes[c.Others(leader.Index)[0]]
	bounded := store.ReadOptions{Consistency: contextv1.Consistency_CONSISTENCY_STALE, MaxStaleness: 100 * time.Millisecond}
	testutil.Eventually(t, 10*time.Second, func() error { _, err := texts(t, f.S(), "acme", "c", bounded); return err })

	c.Isolate(f.Index)
	testutil.Eventually(t, 10*time.Second, func() error {
		_, err := texts(t, f.S(), "acme", "c", bounded)
		if errors.Is(err, cperr.ErrStalenessExceeded) {
			return nil
		}
		return fmt.Errorf("stale read on an isolated follower: err = %v", err)
	})
	// A LINEARIZABLE read on a follower is NOT_LEADER (or no leader known).
	if _, err := texts(t, f.S(), "acme", "c", store.ReadOptions{}); !errors.Is(err, cperr.ErrNotLeader) && !errors.Is(err, cperr.ErrCellUnavailable) {
		t.Fatalf("linearizable read on follower: %v", err)
	}
	c.Heal()
	testutil.Eventually(t, 10*time.Second, func() error { _, err := texts(t, f.S(), "acme", "c", bounded); return err })
}

// TestSettingsAreReplicated: nodes configured with different dedup windows
// (time and count) all apply the leader's, so their states cannot diverge.
func TestSettingsAreReplicated(t *testing.T) {
	ids := map[string]int{"n1": 11, "n2": 22, "n3": 33}
	c := NewCluster(t, 3, Options{Config: func(cfg *store.Config) {
		cfg.DedupMaxIDs = ids[cfg.NodeID]
		cfg.DedupWindow = time.Duration(ids[cfg.NodeID]) * time.Minute
	}})
	leader := c.Leader()
	want := uint64(ids[leader.ID])
	c.WaitConverged()
	for _, n := range c.Running() {
		testutil.Eventually(t, 10*time.Second, func() error {
			var got uint64
			var window time.Duration
			err := n.S().ReadCell(testCtx(t, 5*time.Second), stale, func(v *store.CellView) error {
				st, err := v.Settings()
				got, window = st.GetDedupWindow(), time.Duration(st.GetDedupWindowNanos())
				return err
			})
			if err != nil || got != want || window != time.Duration(want)*time.Minute {
				return fmt.Errorf("%s: dedup window %v and %d ids (err %v), want the leader's %v and %d", n.ID, window, got, err, time.Duration(want)*time.Minute, want)
			}
			return nil
		})
	}
}

// TestNewIncarnationCannotVoteAsOld: a follower that lost its disk comes
// back as a new incarnation at its old address, and the cell has not
// replaced it yet. It receives the RPCs addressed to its old incarnation
// and, with no configuration, grants votes; the transport must not count
// them as the old incarnation's (H1). The write W, acknowledged by the
// leader and that follower only, would otherwise be lost: the other
// follower, which never got W, would be elected with the new
// incarnation's vote.
func TestNewIncarnationCannotVoteAsOld(t *testing.T) {
	c := NewCluster(t, 3)
	mustCreate(t, c, "acme", "w0")
	leader := c.Leader()
	others := c.Others(leader.Index)
	f1, f2 := others[0], others[1]
	c.Isolate(f2) // f2 never gets W
	if _, err := c.Propose(testCtx(t, 20*time.Second), appendCmd("acme", "w0", "W", "W")); err != nil {
		t.Fatalf("write W with the leader and %s: %v", c.Nodes[f1].ID, err)
	}
	c.Kill(f1)
	c.Wipe(f1)
	c.Nodes[f1].NewIncarnation = true
	c.Restart(f1) // not replaced: the configuration still has its old id
	c.Kill(leader.Index)
	c.Heal()

	err := testutil.Poll(testCtx(t, 30*time.Second), 10*TestConfig().Raft.ElectionTimeout, func() error {
		for _, n := range c.Running() {
			if n.S().IsLeader() {
				return nil
			}
		}
		return errors.New("no leader")
	})
	if err == nil {
		t.Fatalf("a leader was elected by %s (no W) and the new incarnation of %s", c.Nodes[f2].ID, c.Nodes[f1].ID)
	}
	if st := c.Nodes[f1].S().Status(); st.Member {
		t.Fatalf("the new incarnation %s counts as a member", st.RaftID)
	}
}

// TestStateDigests: replicas that applied the same log have equal state
// digests at the same applied index; a follower cut off while the others
// write differs until it caught up after the heal.
func TestStateDigests(t *testing.T) {
	c := NewCluster(t, 3)
	mustCreate(t, c, "acme", "c")
	ctx := testCtx(t, 60*time.Second)
	write := func(n int, prefix string) {
		for i := range n {
			v := fmt.Sprintf("%s-%d", prefix, i)
			if _, err := c.Propose(ctx, appendCmd("acme", "c", v, v)); err != nil {
				t.Fatal(err)
			}
		}
	}
	digests := func() []store.Digest {
		var out []store.Digest
		for _, n := range c.Nodes {
			d, err := n.S().StateDigest()
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, d)
		}
		return out
	}
	equalDigests := func() error {
		ds := digests()
		for _, d := range ds[1:] {
			if d != ds[0] {
				return fmt.Errorf("digests differ: %+v", ds)
			}
		}
		return nil
	}
	write(20, "a")
	testutil.Eventually(t, 20*time.Second, equalDigests)
	before := digests()[0]
	if before.Keys == 0 || before.AppliedIndex == 0 {
		t.Fatalf("digest of a written state: %+v", before)
	}
	li := c.Leader().Index
	f := c.Others(li)[0]
	c.Isolate(f)
	write(10, "b")
	ld, err := c.Nodes[li].S().StateDigest()
	if err != nil {
		t.Fatal(err)
	}
	fd, err := c.Nodes[f].S().StateDigest()
	if err != nil {
		t.Fatal(err)
	}
	if ld == fd {
		t.Fatal("a follower cut off while the others wrote has the leader's digest")
	}
	c.Heal()
	testutil.Eventually(t, 20*time.Second, equalDigests)
	if after := digests()[0]; after.SHA256 == before.SHA256 || after.AppliedIndex <= before.AppliedIndex {
		t.Fatalf("digest did not move with the state: %+v → %+v", before, after)
	}
}
