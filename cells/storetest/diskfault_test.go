package storetest

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cellplane/cellplane/cells/store"
	"github.com/prometheus/client_golang/prometheus"
)

// snapshotDirs returns a node's snapshot dirs, oldest first (by index).
func snapshotDirs(t *testing.T, n *Node) []string {
	t.Helper()
	root := filepath.Join(n.Dir, "snapshots", "snapshots")
	ents, err := os.ReadDir(root)
	if err != nil {
		t.Fatal(err)
	}
	var dirs []string
	for _, e := range ents {
		if e.IsDir() && !strings.HasSuffix(e.Name(), ".tmp") {
			dirs = append(dirs, filepath.Join(root, e.Name()))
		}
	}
	index := func(d string) uint64 { // <term>-<index>-<time>
		parts := strings.Split(filepath.Base(d), "-")
		i, _ := strconv.ParseUint(parts[1], 10, 64)
		return i
	}
	slices.SortFunc(dirs, func(a, b string) int { return int(index(a)) - int(index(b)) })
	return dirs
}

// flipByte flips one bit in the middle of a file.
func flipByte(t *testing.T, path string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 0x10
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestCorruptSnapshot is S14's snapshot half: a follower's newest
// snapshot is corrupted (a bit flipped) while it is down. The node must
// come back and converge when its own data can rebuild the state (its
// state is intact; or an older snapshot plus the log), and refuse to start
// with ErrDataLoss when it cannot (every snapshot corrupt, the state lost,
// the log truncated) — never serve a state with a hole in it. Before the
// fix a corrupt newest snapshot stopped the node from starting even with
// its state intact ("CRC mismatch"), and an older snapshot was never tried.
func TestCorruptSnapshot(t *testing.T) {
	cases := []struct {
		name         string
		trailingLogs uint64
		corruptAll   bool
		loseState    bool
		wantDataLoss bool
	}{
		{name: "newest corrupt, state intact", trailingLogs: 10240},
		{name: "newest corrupt, state lost: older snapshot and the log", trailingLogs: 10240, loseState: true},
		{name: "every snapshot corrupt, state lost, log truncated: refuses", trailingLogs: 2, corruptAll: true, loseState: true, wantDataLoss: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := NewCluster(t, 3, Options{Config: func(cfg *store.Config) { cfg.Raft.TrailingLogs = tc.trailingLogs }})
			mustCreate(t, c, "t1", "c1")
			var want []string
			write := func(from, to int) {
				t.Helper()
				for i := from; i < to; i++ {
					text := fmt.Sprintf("w-%d", i)
					if _, err := c.Propose(testCtx(t, 20*time.Second), appendCmd("t1", "c1", text, text)); err != nil {
						t.Fatalf("append %s: %v", text, err)
					}
					want = append(want, text)
				}
			}
			victim := (c.Leader().Index + 1) % 3
			snapshot := func() {
				t.Helper()
				c.WaitConverged()
				if err := c.Nodes[victim].S().Snapshot(); err != nil {
					t.Fatalf("snapshot: %v", err)
				}
			}
			write(0, 10)
			snapshot()
			write(10, 20)
			snapshot()
			write(20, 30)
			c.WaitConverged()
			c.Kill(victim)
			n := c.Nodes[victim]
			dirs := snapshotDirs(t, n)
			if len(dirs) < 2 {
				t.Fatalf("%d snapshots, want 2", len(dirs))
			}
			corrupt := dirs[len(dirs)-1:]
			if tc.corruptAll {
				corrupt = dirs
			}
			for _, d := range corrupt {
				flipByte(t, filepath.Join(d, "state.bin"))
			}
			if tc.loseState {
				if err := os.RemoveAll(filepath.Join(n.Dir, "state")); err != nil {
					t.Fatal(err)
				}
			}
			write(30, 40) // the cell goes on without it
			err := c.TryRestart(victim)
			if tc.wantDataLoss {
				if !errors.Is(err, store.ErrDataLoss) {
					t.Fatalf("restart: %v, want ErrDataLoss", err)
				}
				t.Logf("refused: %v", err)
				write(40, 45)
				checkAllNodes(t, c, "t1", "c1", want) // the two others
				return
			}
			if err != nil {
				t.Fatalf("restart: %v", err)
			}
			write(40, 45)
			checkAllNodes(t, c, "t1", "c1", want)
			if tc.loseState {
				moved, _ := os.ReadDir(filepath.Join(n.Dir, "snapshots-corrupt"))
				if len(moved) != 1 {
					t.Fatalf("%d snapshots moved aside, want the corrupt one", len(moved))
				}
				if got := counter(t, n.S(), "cellplane_store_corrupt_snapshots_total"); got != 1 {
					t.Fatalf("cellplane_store_corrupt_snapshots_total = %v, want 1", got)
				}
			}
		})
	}
}

// TestTornLogTail is S14's log half: the last Raft log segment of a node
// (the leader, then a follower) is torn — cut inside its last entries —
// while it is down. raft-wal drops the torn tail at open; the node catches
// up from the cell and every acknowledged write is on every node.
func TestTornLogTail(t *testing.T) {
	for _, leader := range []bool{true, false} {
		t.Run(fmt.Sprintf("leader=%v", leader), func(t *testing.T) {
			c := NewCluster(t, 3)
			mustCreate(t, c, "t1", "c1")
			var want []string
			write := func(from, to int) {
				t.Helper()
				for i := from; i < to; i++ {
					text := fmt.Sprintf("w-%d", i)
					if _, err := c.Propose(testCtx(t, 20*time.Second), appendCmd("t1", "c1", text, text)); err != nil {
						t.Fatalf("append %s: %v", text, err)
					}
					want = append(want, text)
				}
			}
			write(0, 30)
			c.WaitConverged()
			victim := c.Leader().Index
			if !leader {
				victim = (victim + 1) % 3
			}
			c.Kill(victim)
			n := c.Nodes[victim]
			segs, err := filepath.Glob(filepath.Join(n.Dir, "raft-wal", "*.wal"))
			if err != nil || len(segs) == 0 {
				t.Fatalf("no segments: %v", err)
			}
			slices.Sort(segs)
			last := segs[len(segs)-1]
			b, err := os.ReadFile(last)
			if err != nil {
				t.Fatal(err)
			}
			end := len(bytes.TrimRight(b, "\x00"))
			cut := max(end-150, end/2) // inside the last entries
			if err := os.Truncate(last, int64(cut)); err != nil {
				t.Fatal(err)
			}
			t.Logf("%s: %s torn from %d to %d bytes", n.ID, filepath.Base(last), end, cut)
			write(30, 40)
			if err := c.TryRestart(victim); err != nil {
				t.Fatalf("restart after a torn tail: %v", err)
			}
			write(40, 45)
			checkAllNodes(t, c, "t1", "c1", want)
		})
	}
}

// counter reads one of a store's counters.
func counter(t *testing.T, s *store.Store, name string) float64 {
	t.Helper()
	reg := prometheus.NewRegistry()
	reg.MustRegister(s.Collectors()...)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) == 1 {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}
