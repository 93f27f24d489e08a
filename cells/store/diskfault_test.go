package store

import (
	"fmt"
	"io"
	"net"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/cellplane/cellplane/internal/retry"
	"github.com/cockroachdb/pebble/v2/vfs"
	walfs "github.com/hashicorp/raft-wal/fs"
	"github.com/hashicorp/raft-wal/types"
)

// dropFS is a raft-wal file system that remembers what was written to each
// file since its last Sync, so that crash can undo it: what a machine
// crash does to data the OS had not written back (S12). With lie set,
// Sync returns success without syncing (a disk whose fsync lies).
type dropFS struct {
	types.VFS
	lie bool

	mu       sync.Mutex
	crashing bool // Syncs are ignored from now on (the machine is going down)
	files    map[string]*dropFile
}

type undo struct {
	off int64
	old []byte
}

type dropFile struct {
	types.WritableFile
	fs      *dropFS
	pending []undo // unsynced writes, oldest first
}

func newDropFS(lie bool) *dropFS {
	return &dropFS{VFS: walfs.New(), lie: lie, files: map[string]*dropFile{}}
}

func (f *dropFS) track(dir, name string, w types.WritableFile) types.WritableFile {
	f.mu.Lock()
	defer f.mu.Unlock()
	key := filepath.Join(dir, name)
	df := f.files[key]
	if df == nil {
		df = &dropFile{fs: f}
		f.files[key] = df
	}
	df.WritableFile = w
	return df
}

func (f *dropFS) Create(dir, name string, size uint64) (types.WritableFile, error) {
	w, err := f.VFS.Create(dir, name, size)
	if err != nil {
		return nil, err
	}
	return f.track(dir, name, w), nil
}

func (f *dropFS) OpenWriter(dir, name string) (types.WritableFile, error) {
	w, err := f.VFS.OpenWriter(dir, name)
	if err != nil {
		return nil, err
	}
	return f.track(dir, name, w), nil
}

func (d *dropFile) WriteAt(p []byte, off int64) (int, error) {
	old := make([]byte, len(p))
	n, err := d.WritableFile.ReadAt(old, off)
	if err != nil && err != io.EOF {
		return 0, err
	}
	clear(old[n:]) // past the end: the crash leaves zeros (a preallocated file)
	d.fs.mu.Lock()
	d.pending = append(d.pending, undo{off: off, old: old})
	d.fs.mu.Unlock()
	return d.WritableFile.WriteAt(p, off)
}

func (d *dropFile) Sync() error {
	d.fs.mu.Lock()
	defer d.fs.mu.Unlock()
	if d.fs.crashing || d.fs.lie {
		return nil
	}
	if err := d.WritableFile.Sync(); err != nil {
		return err
	}
	d.pending = nil
	return nil
}

// crash undoes every unsynced write, newest first (call once the store
// is closed with beginCrash set, so its closing syncs did not count).
func (f *dropFS) crash() (undone int, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for key, df := range f.files {
		w, err := f.VFS.OpenWriter(filepath.Dir(key), filepath.Base(key))
		if err != nil {
			return undone, err
		}
		for i := len(df.pending) - 1; i >= 0; i-- {
			if _, err := w.WriteAt(df.pending[i].old, df.pending[i].off); err != nil {
				w.Close()
				return undone, err
			}
			undone++
		}
		df.pending = nil
		if err := w.Sync(); err != nil {
			w.Close()
			return undone, err
		}
		w.Close()
	}
	f.crashing = false
	return undone, nil
}

func (f *dropFS) beginCrash() {
	f.mu.Lock()
	f.crashing = true
	f.mu.Unlock()
}

// TestLostUnsyncedWrites is S12: a node writes, the machine "crashes"
// (everything the Raft log and the Pebble state had not synced is
// dropped), and the node restarts on what is left. With fsync honoured
// every acknowledged write survives (the Raft log is synced before an
// entry counts, the state is rebuilt from it); with an fsync that lies the
// same harness finds acknowledged writes gone, which shows it can tell.
func TestLostUnsyncedWrites(t *testing.T) {
	for _, lie := range []bool{false, true} {
		t.Run(fmt.Sprintf("fsync_lies=%v", lie), func(t *testing.T) {
			dir := t.TempDir()
			logFS := newDropFS(lie)
			stateFS := vfs.NewCrashableMem()
			s := openSingle(t, dir, func(c *Config) {
				c.TestingKnobs.LogFS = logFS
				c.TestingKnobs.StateFS = stateFS
			})
			setOwner(t, s, "t1", 1)
			mustPropose(t, s, createContext("t1", "c1"))
			const n = 30
			for i := range n {
				mustPropose(t, s, appendText("t1", "c1", fmt.Sprintf("r%d", i), fmt.Sprintf("e%d", i)))
			}

			// The crash: the store stops (its closing syncs ignored), then
			// whatever was not synced is gone.
			logFS.beginCrash()
			crashed := stateFS.CrashClone(vfs.CrashCloneCfg{}) // the state as synced so far
			if err := s.Close(); err != nil {
				t.Logf("close: %v", err)
			}
			undone, err := logFS.crash()
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("dropped %d unsynced log writes", undone)

			mutate := func(c *Config) {
				c.TestingKnobs.LogFS = logFS
				c.TestingKnobs.StateFS = crashed
			}
			if lie {
				// The log lost entries Raft counted as durable: the node
				// may refuse to start, fail to lead, or lead without them;
				// all three are the loss this harness must show.
				if msg := restartAfterLie(t, dir, n, mutate); msg != "" {
					t.Logf("fsync lies: %s", msg)
					return
				}
				t.Fatalf("fsync lies: all %d entries survived; the harness does not drop unsynced writes", n)
			}
			s2 := openSingle(t, dir, mutate)
			got := len(readAll(t, s2, "t1", "c1"))
			if got != n {
				t.Fatalf("fsync honoured: %d of %d acknowledged entries after the crash", got, n)
			}
			t.Logf("%d of %d acknowledged entries after the crash", got, n)
		})
	}
}

// restartAfterLie reopens the node after a crash that lost acknowledged
// log entries and says how the loss shows ("" if it does not).
func restartAfterLie(t *testing.T, dir string, n int, mutate func(*Config)) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.NodeID, cfg.RaftListener, cfg.DataDir = "n1", ln, dir
	cfg.Bootstrap = []Peer{{ID: "n1", Addr: ln.Addr().String()}}
	cfg.Raft.HeartbeatTimeout, cfg.Raft.ElectionTimeout, cfg.Raft.LeaderLeaseTimeout = 50*time.Millisecond, 50*time.Millisecond, 50*time.Millisecond
	cfg.Logger = testLogger(t)
	mutate(&cfg)
	s, err := Open(cfg)
	if err != nil {
		return fmt.Sprintf("the node does not start: %v", err)
	}
	defer s.Close()
	deadline := time.Now().Add(3 * time.Second)
	for !(s.IsLeader() && s.readyTerm.Load() == s.raft.CurrentTerm()) {
		if time.Now().After(deadline) {
			return "the node does not lead (its log lost entries it had voted and committed on)"
		}
		_ = retry.Sleep(testCtx(t), 10*time.Millisecond)
	}
	if got := len(readAll(t, s, "t1", "c1")); got != n {
		return fmt.Sprintf("%d of %d acknowledged entries after the crash", got, n)
	}
	return ""
}
