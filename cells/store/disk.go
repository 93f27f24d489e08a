package store

import (
	"errors"
	"fmt"
	"strconv"
	"syscall"
	"time"

	"github.com/cellplane/cellplane/internal/cperr"
	cellv1 "github.com/cellplane/cellplane/proto/cellplane/cell/v1"
)

// DiskConfig is a node's free-space watermark (finding H4). The node
// checks the filesystem of its DataDir every CheckInterval; while the free
// space is below MinFreeBytes or below MinFreePercent of the filesystem,
// the node, as leader, refuses new writes (create_context, append,
// put_memory, and the imports and change events of a tenant moving or
// replicating in) with RESOURCE_EXHAUSTED reason STORAGE_FULL before they
// are proposed. Reads, deletes, DeleteTenant, role changes and moves out
// (exports and change streams, which only read) keep working, so an
// operator can free space or move tenants away. A check fires as soon as
// either bound is crossed; 0 disables a bound.
type DiskConfig struct {
	MinFreeBytes   uint64
	MinFreePercent float64
	// CheckInterval is how often free space is read (one statfs call).
	CheckInterval time.Duration
}

// DefaultDiskConfig returns the default watermark: 1 GiB or 5 % free,
// checked every 5 s (a node writing at 100 MB/s fills 500 MB between two
// checks, well inside the 1 GiB headroom).
func DefaultDiskConfig() DiskConfig {
	return DiskConfig{MinFreeBytes: 1 << 30, MinFreePercent: 5, CheckInterval: 5 * time.Second}
}

func (c DiskConfig) validate() error {
	var errs []error
	if c.MinFreePercent < 0 || c.MinFreePercent >= 100 || c.MinFreePercent != c.MinFreePercent {
		errs = append(errs, fmt.Errorf("MinFreePercent %v is not in [0, 100)", c.MinFreePercent))
	}
	if c.CheckInterval < time.Millisecond {
		errs = append(errs, fmt.Errorf("CheckInterval %v is below 1ms", c.CheckInterval))
	}
	return errors.Join(errs...)
}

// below reports whether free of total bytes is under the watermark.
func (c DiskConfig) below(free, total uint64) bool {
	if c.MinFreeBytes > 0 && free < c.MinFreeBytes {
		return true
	}
	return c.MinFreePercent > 0 && total > 0 && float64(free) < float64(total)*c.MinFreePercent/100
}

// DiskSpace reports the free bytes (available to this process) and the
// total bytes of the filesystem holding dir. The production one is
// statfs(2); tests fake it (TestingKnobs.DiskSpace) to cross the watermark
// or fail on purpose.
type DiskSpace interface {
	Space(dir string) (free, total uint64, err error)
}

// DiskStatus is the last free-space check of a node.
type DiskStatus struct {
	// Full: the node is below its watermark (it refuses new writes as
	// leader).
	Full        bool
	FreeBytes   uint64
	TotalBytes  uint64
	CheckedAt   time.Time
	Err         error // the last check's error (the previous result stands)
	Unsupported bool  // no free-space check on this platform: never Full
	// NoSpace: the Raft log returned ENOSPC since the last check; the node
	// counts as full until the next check decides again (so that a stream
	// of writes does not make it step down once per write).
	NoSpace bool
}

// DiskStatus returns the last free-space check.
func (s *Store) DiskStatus() DiskStatus {
	if p := s.disk.Load(); p != nil {
		return *p
	}
	return DiskStatus{}
}

// checkDisk reads the free space once and updates DiskStatus. A failed
// read keeps the previous verdict (a flapping statfs must not flip the
// cell read-only and back).
func (s *Store) checkDisk() {
	free, total, err := s.space.Space(s.cfg.DataDir)
	prev := s.DiskStatus()
	st := DiskStatus{CheckedAt: time.Now()}
	switch {
	case errors.Is(err, errDiskSpaceUnsupported):
		st.Unsupported = true
	case err != nil:
		st = prev
		st.Err, st.CheckedAt = err, time.Now()
		s.metrics.diskCheckErrors.Inc()
		s.log.Warn("free-space check failed; keeping the last verdict", "dir", s.cfg.DataDir, "err", err, "storage_full", prev.Full)
	default:
		st.FreeBytes, st.TotalBytes, st.Full = free, total, s.cfg.Disk.below(free, total)
	}
	s.disk.Store(&st)
	if st.Full != prev.Full {
		if st.Full {
			s.log.Error("free disk space below the watermark: this node refuses new writes as leader (STORAGE_FULL) until space is freed",
				"dir", s.cfg.DataDir, "free_bytes", st.FreeBytes, "total_bytes", st.TotalBytes,
				"min_free_bytes", s.cfg.Disk.MinFreeBytes, "min_free_percent", s.cfg.Disk.MinFreePercent)
		} else {
			s.log.Info("free disk space above the watermark again: writes accepted", "dir", s.cfg.DataDir, "free_bytes", st.FreeBytes)
		}
	}
}

// noteNoSpace marks the node full after its Raft log returned ENOSPC,
// until the next free-space check.
func (s *Store) noteNoSpace() {
	st := s.DiskStatus()
	st.Full, st.NoSpace = true, true
	s.disk.Store(&st)
}

// runDiskMonitor checks free space every Disk.CheckInterval.
func (s *Store) runDiskMonitor() {
	defer s.workers.Done()
	t := time.NewTicker(s.cfg.Disk.CheckInterval)
	defer t.Stop()
	for {
		select {
		case <-s.closing:
			return
		case <-t.C:
			s.checkDisk()
		}
	}
}

// fillsDisk reports the operations a full disk refuses: those that add
// data. Deletes, role changes, acks and cell bookkeeping always pass.
func fillsDisk(c *cellv1.Command) bool {
	switch c.GetOp().(type) {
	case *cellv1.Command_CreateContext, *cellv1.Command_Append, *cellv1.Command_PutMemory,
		*cellv1.Command_ImportTenant, *cellv1.Command_ApplyChanges:
		return true
	}
	return false
}

// checkDiskRoom refuses a command that adds data while this node is below
// its free-space watermark.
func (s *Store) checkDiskRoom(c *cellv1.Command) error {
	if !fillsDisk(c) {
		return nil
	}
	st := s.DiskStatus()
	if !st.Full {
		return nil
	}
	s.metrics.storageFullRefusals.Inc()
	return storageFull(s.cfg.NodeID, st.FreeBytes, fmt.Sprintf("node %s has %d bytes free, below its watermark (%d bytes or %v%%): new writes are refused until space is freed; reads and deletes work",
		s.cfg.NodeID, st.FreeBytes, s.cfg.Disk.MinFreeBytes, s.cfg.Disk.MinFreePercent))
}

func storageFull(node string, free uint64, msg string) *cperr.Error {
	e := cperr.New(cperr.StorageFull, "%s", msg).With(cperr.MetaNode, node)
	if free > 0 {
		e.With(cperr.MetaFreeBytes, strconv.FormatUint(free, 10))
	}
	return e
}

// isNoSpace reports a "no space left" storage error.
func isNoSpace(err error) bool {
	return errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT)
}

var errDiskSpaceUnsupported = errors.New("no free-space check on this platform")
