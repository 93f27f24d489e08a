package store

import (
	"errors"
	"fmt"
	"strconv"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/cellplane/cellplane/internal/cperr"
	cellv1 "github.com/cellplane/cellplane/proto/cellplane/cell/v1"
)

func TestDiskConfigBelow(t *testing.T) {
	for _, tc := range []struct {
		cfg         DiskConfig
		free, total uint64
		want        bool
	}{
		{DiskConfig{MinFreeBytes: 100}, 99, 1000, true},
		{DiskConfig{MinFreeBytes: 100}, 100, 1000, false},
		{DiskConfig{MinFreePercent: 5}, 49, 1000, true},
		{DiskConfig{MinFreePercent: 5}, 50, 1000, false},
		{DiskConfig{MinFreeBytes: 10, MinFreePercent: 5}, 40, 1000, true}, // either bound
		{DiskConfig{MinFreeBytes: 100, MinFreePercent: 5}, 60, 100, true},
		{DiskConfig{}, 0, 1000, false},                  // no bound
		{DiskConfig{MinFreePercent: 5}, 0, 0, false},    // unknown total: the percent bound cannot say
		{DiskConfig{MinFreeBytes: 1}, 0, 0, true},       // nothing free
		{DefaultDiskConfig(), 2 << 30, 100 << 30, true}, // 2 %
	} {
		if got := tc.cfg.below(tc.free, tc.total); got != tc.want {
			t.Errorf("%+v below(%d, %d) = %v, want %v", tc.cfg, tc.free, tc.total, got, tc.want)
		}
	}
}

func TestDiskConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  DiskConfig
		ok   bool
	}{
		{"default", DefaultDiskConfig(), true},
		{"negative percent", DiskConfig{MinFreePercent: -1, CheckInterval: time.Second}, false},
		{"100 percent", DiskConfig{MinFreePercent: 100, CheckInterval: time.Second}, false},
		{"no interval", DiskConfig{MinFreeBytes: 1}, false},
		{"peer reports off", DiskConfig{CheckInterval: time.Second}, true},
		{"stale before a poll", DiskConfig{CheckInterval: time.Second, PeerStaleAfter: time.Millisecond}, false},
	} {
		if err := tc.cfg.validate(); (err == nil) != tc.ok {
			t.Errorf("%s: validate = %v, want ok %v", tc.name, err, tc.ok)
		}
	}
}

// fakeDisk is a DiskSpace whose free bytes a test sets; fail makes the
// check return an error.
type fakeDisk struct {
	free  atomic.Uint64
	fail  atomic.Bool
	total uint64
}

func (d *fakeDisk) Space(string) (uint64, uint64, error) {
	if d.fail.Load() {
		return 0, 0, errors.New("statfs: injected failure")
	}
	return d.free.Load(), d.total, nil
}

// TestStorageFullWatermark (H4, S13): below its free-space watermark the
// leader refuses writes that add data with STORAGE_FULL, before proposing
// them, while reads, deletes, role changes, DeleteTenant and exports keep
// working; a failed free-space check keeps the verdict; once space
// returns, writes are accepted again.
func TestStorageFullWatermark(t *testing.T) {
	disk := &fakeDisk{total: 1 << 20}
	disk.free.Store(1 << 20)
	s := openSingle(t, "", func(c *Config) {
		c.Disk = DiskConfig{MinFreeBytes: 64 << 10, CheckInterval: 5 * time.Millisecond}
		c.TestingKnobs.DiskSpace = disk
	})
	setOwner(t, s, "acme", 1)
	for _, id := range []string{"c1", "c2"} {
		mustPropose(t, s, createContext("acme", id))
	}
	mustPropose(t, s, appendText("acme", "c1", "", "before"))
	mustPropose(t, s, putMemory("acme", "k1", "v"))
	mustPropose(t, s, putMemory("acme", "k2", "v"))
	setOwner(t, s, "gone", 1)
	before := s.Status().LastLogIndex

	disk.free.Store(1000)
	waitFor(t, 10*time.Second, func() bool { return s.DiskStatus().Full })
	if st := s.DiskStatus(); st.FreeBytes != 1000 || st.TotalBytes != 1<<20 {
		t.Fatalf("disk status %+v", st)
	}

	for _, c := range []*cellv1.Command{
		createContext("acme", "c3"),
		appendText("acme", "c1", "r1", "after"),
		putMemory("acme", "k3", "v"),
		importChunk("acme", "src", true, nil, nil),
		applyEvents("acme", nil),
	} {
		_, err := s.Propose(testCtx(t), c)
		var ce *cperr.Error
		if !errors.Is(err, cperr.ErrStorageFull) || !errors.As(err, &ce) || ce.Metadata[cperr.MetaNode] != "n1" || ce.Metadata[cperr.MetaFreeBytes] != "1000" {
			t.Fatalf("%s while full: %v, want STORAGE_FULL naming the node and its free bytes", opName(c), err)
		}
	}
	if got := s.Status().LastLogIndex; got != before {
		t.Fatalf("the Raft log grew from %d to %d: refused writes were proposed", before, got)
	}
	// Reads, deletes, role changes and moves out work.
	if b := readAll(t, s, "acme", "c1"); len(b) != 1 {
		t.Fatalf("read while full: %v", b)
	}
	mustPropose(t, s, deleteMemory("acme", "k2"))
	mustPropose(t, s, deleteContext("acme", "c2"))
	mustPropose(t, s, deleteTenant("gone"))
	if err := s.ExportTenant(testCtx(t), "acme", 64, func(ExportChunk) error { return nil }); err != nil {
		t.Fatalf("export while full: %v", err)
	}
	mustPropose(t, s, setTenant("acme", fenced, 2))
	setOwner(t, s, "acme", 3)

	// A failing check keeps the verdict.
	disk.fail.Store(true)
	disk.free.Store(1 << 20)
	waitFor(t, 10*time.Second, func() bool { return s.DiskStatus().Err != nil })
	if !s.DiskStatus().Full {
		t.Fatalf("a failed check cleared the verdict: %+v", s.DiskStatus())
	}
	disk.fail.Store(false)
	waitFor(t, 10*time.Second, func() bool { return !s.DiskStatus().Full })
	mustPropose(t, s, appendText("acme", "c1", "r1", "after"))
	if b := readAll(t, s, "acme", "c1"); len(b) != 2 || b[1].GetText() != "after" {
		t.Fatalf("after space returned: %v", b)
	}
}

// faultSwitch is a LogStoreFault a test turns on and off.
type faultSwitch struct {
	err  atomic.Pointer[error]
	hits atomic.Int64
}

func (f *faultSwitch) set(err error) {
	if err == nil {
		f.err.Store(nil)
		return
	}
	f.err.Store(&err)
}

func (f *faultSwitch) fault(op string) error {
	if p := f.err.Load(); p != nil && op == "store_logs" {
		f.hits.Add(1)
		return fmt.Errorf("raft-wal: write segment: %w", *p)
	}
	return nil
}

// TestLogStoreFaults (H4, S13): when the Raft log store of a one-node
// cell returns ENOSPC (or EIO), writes fail with a typed error
// (STORAGE_FULL, CELL_UNAVAILABLE), the node does not stop or crash, and
// once the disk works again it serves writes, with every acknowledged
// write kept.
func TestLogStoreFaults(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		want error
	}{
		{"ENOSPC", syscall.ENOSPC, cperr.ErrStorageFull},
		{"EIO", syscall.EIO, cperr.ErrCellUnavailable},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fs := &faultSwitch{}
			s := openSingle(t, "", func(c *Config) {
				c.TestingKnobs.LogStoreFault = fs.fault
				c.Disk.CheckInterval = 20 * time.Millisecond
			})
			setOwner(t, s, "acme", 1)
			mustPropose(t, s, createContext("acme", "c"))
			var acked []string
			for i := range 3 {
				text := "ok" + strconv.Itoa(i)
				mustPropose(t, s, appendText("acme", "c", text, text))
				acked = append(acked, text)
			}

			fs.set(tc.err)
			_, err := s.Propose(testCtx(t), appendText("acme", "c", "lost", "lost"))
			if !errors.Is(err, tc.want) {
				t.Fatalf("write on a failing log: %v, want %v", err, tc.want)
			}
			if full := s.DiskStatus().Full; full != (tc.err == syscall.ENOSPC) {
				t.Fatalf("after %v the node counts as full: %v", tc.err, full)
			}
			// The node keeps running (no crash, no stop), whatever Raft
			// does meanwhile (it steps down and tries again).
			waitFor(t, 10*time.Second, func() bool { return fs.hits.Load() >= 2 })
			select {
			case <-s.Done():
				t.Fatalf("the store stopped: %v", s.Err())
			default:
			}

			fs.set(nil)
			waitFor(t, 10*time.Second, func() bool { return s.IsLeader() })
			var res *cellv1.CommandResult
			waitFor(t, 10*time.Second, func() bool {
				res, err = s.Propose(testCtx(t), appendText("acme", "c", "after", "after"))
				return err == nil
			})
			acked = append(acked, "after")
			var got []string
			for _, e := range readAll(t, s, "acme", "c") {
				got = append(got, e.GetText())
			}
			if fmt.Sprint(got) != fmt.Sprint(acked) {
				t.Fatalf("entries %v, want the acknowledged %v (the refused write not applied)", got, acked)
			}
			if res.GetAppend().GetFirstSeq() != uint64(len(acked)) {
				t.Fatalf("append after recovery got seq %d, want %d", res.GetAppend().GetFirstSeq(), len(acked))
			}
		})
	}
}

// TestPeerDiskReports (H4): a fresh report of a full member makes the
// leader refuse data-adding writes with STORAGE_FULL naming that member,
// before the log; deletes pass; a report of room lifts it, and a full
// report that is not renewed stops counting after PeerStaleAfter.
func TestPeerDiskReports(t *testing.T) {
	s := openSingle(t, "", func(c *Config) {
		c.Disk = DiskConfig{MinFreeBytes: 1, CheckInterval: 5 * time.Millisecond, PeerStaleAfter: 300 * time.Millisecond}
	})
	setOwner(t, s, "acme", 1)
	mustPropose(t, s, createContext("acme", "c1"))
	mustPropose(t, s, putMemory("acme", "k", "v"))

	s.NotePeerDisk("n2", true, 4096)
	s.NotePeerDisk("n1", true, 1) // this node's own report is ignored
	before := s.Status().LastLogIndex
	_, err := s.Propose(testCtx(t), appendText("acme", "c1", "r1", "x"))
	var ce *cperr.Error
	if !errors.Is(err, cperr.ErrStorageFull) || !errors.As(err, &ce) || ce.Metadata[cperr.MetaNode] != "n2" || ce.Metadata[cperr.MetaFreeBytes] != "4096" {
		t.Fatalf("append with a full member: %v, want STORAGE_FULL naming n2 with 4096 bytes free", err)
	}
	if got := s.Status().LastLogIndex; got != before {
		t.Fatalf("the log grew from %d to %d", before, got)
	}
	mustPropose(t, s, deleteMemory("acme", "k"))
	s.NotePeerDisk("n2", false, 1<<30)
	mustPropose(t, s, appendText("acme", "c1", "r2", "room again"))

	// Full again, then silent: the report goes stale.
	s.NotePeerDisk("n2", true, 10)
	if _, err := s.Propose(testCtx(t), appendText("acme", "c1", "r3", "x")); !errors.Is(err, cperr.ErrStorageFull) {
		t.Fatalf("append with a full member: %v", err)
	}
	waitFor(t, 10*time.Second, func() bool {
		_, err := s.Propose(testCtx(t), appendText("acme", "c1", "r3", "after the report went stale"))
		return err == nil
	})
	if d := s.PeerDisks()["n2"]; !d.Full || d.FreeBytes != 10 {
		t.Fatalf("PeerDisks = %+v", s.PeerDisks())
	}
}
