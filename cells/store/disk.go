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
	// CheckInterval is how often free space is read (one statfs call),
	// and how often the leader asks its members for theirs.
	CheckInterval time.Duration
	// PeerStaleAfter is how long the leader keeps a member's report that
	// it could not renew (NotePeerDisk): a member that stopped answering
	// (down, partitioned, too slow) no longer counts as full after this
	// long, so a dead member never wedges the cell's writes. 0: members'
	// reports are not used (only this node's own disk counts).
	PeerStaleAfter time.Duration
}

// DefaultDiskConfig returns the default watermark: 1 GiB or 5 % free,
// checked every 5 s (a node writing at 100 MB/s fills 500 MB between two
// checks, well inside the 1 GiB headroom); a member's report is kept 20 s
// (four polls) when it cannot be renewed.
func DefaultDiskConfig() DiskConfig {
	return DiskConfig{MinFreeBytes: 1 << 30, MinFreePercent: 5, CheckInterval: 5 * time.Second, PeerStaleAfter: 20 * time.Second}
}

func (c DiskConfig) validate() error {
	var errs []error
	if c.MinFreePercent < 0 || c.MinFreePercent >= 100 || c.MinFreePercent != c.MinFreePercent {
		errs = append(errs, fmt.Errorf("MinFreePercent %v is not in [0, 100)", c.MinFreePercent))
	}
	if c.CheckInterval < time.Millisecond {
		errs = append(errs, fmt.Errorf("CheckInterval %v is below 1ms", c.CheckInterval))
	}
	if c.PeerStaleAfter != 0 && c.PeerStaleAfter < c.CheckInterval {
		errs = append(errs, fmt.Errorf("PeerStaleAfter %v is below CheckInterval %v (0 turns members' reports off)", c.PeerStaleAfter, c.CheckInterval))
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
	case *cellv1.Command_CreateContext, *cellv1.Command_Append, *cellv1.Command_PutMemory, *cellv1.Command_ForkContext, *cellv1.Command_CompactContext,
		*cellv1.Command_ImportTenant, *cellv1.Command_ApplyChanges:
		return true
	}
	return false
}

// PeerDisk is a member's free-space report as the leader received it.
type PeerDisk struct {
	Full      bool
	FreeBytes uint64
	// At is when the leader received it (this node's clock).
	At time.Time
}

// NotePeerDisk records a member's free-space report (the leader polls its
// members' GetStatus: cells/diskpeers.go). While a fresh report (younger
// than DiskConfig.PeerStaleAfter) says the member is full, this node, as
// leader, refuses new writes with STORAGE_FULL naming that member: the
// replicas hold the same data, and a follower that runs out of space first
// would fall behind and leave the cell one failure from losing its quorum.
func (s *Store) NotePeerDisk(node string, full bool, free uint64) {
	if node == s.cfg.NodeID {
		return
	}
	s.peerDiskMu.Lock()
	defer s.peerDiskMu.Unlock()
	if s.peerDisk == nil {
		s.peerDisk = map[string]PeerDisk{}
	}
	prev, known := s.peerDisk[node]
	s.peerDisk[node] = PeerDisk{Full: full, FreeBytes: free, At: time.Now()}
	if full != prev.Full && (known || full) {
		if full {
			s.log.Error("a member's free disk space is below its watermark: the cell refuses new writes (STORAGE_FULL) until space is freed on it",
				"member", node, "free_bytes", free)
		} else {
			s.log.Info("a member's free disk space is above its watermark again", "member", node, "free_bytes", free)
		}
	}
}

// PeerDisks returns the members' last free-space reports (by node id).
func (s *Store) PeerDisks() map[string]PeerDisk {
	s.peerDiskMu.Lock()
	defer s.peerDiskMu.Unlock()
	out := make(map[string]PeerDisk, len(s.peerDisk))
	for k, v := range s.peerDisk {
		out[k] = v
	}
	return out
}

// fullPeer returns a member whose fresh report says it is full, if any
// (the smallest node id, so that the answer is stable).
func (s *Store) fullPeer(now time.Time) (node string, r PeerDisk, ok bool) {
	if s.cfg.Disk.PeerStaleAfter <= 0 {
		return "", PeerDisk{}, false
	}
	s.peerDiskMu.Lock()
	defer s.peerDiskMu.Unlock()
	for id, p := range s.peerDisk {
		if !p.Full || now.Sub(p.At) > s.cfg.Disk.PeerStaleAfter {
			continue
		}
		if !ok || id < node {
			node, r, ok = id, p, true
		}
	}
	return node, r, ok
}

// checkDiskRoom refuses a command that adds data while this node, or a
// member that reported it recently (NotePeerDisk), is below its free-space
// watermark.
func (s *Store) checkDiskRoom(c *cellv1.Command) error {
	if !fillsDisk(c) {
		return nil
	}
	if st := s.DiskStatus(); st.Full {
		s.metrics.storageFullRefusals.Inc()
		return storageFull(s.cfg.NodeID, st.FreeBytes, fmt.Sprintf("node %s has %d bytes free, below its watermark (%d bytes or %v%%): new writes are refused until space is freed; reads and deletes work",
			s.cfg.NodeID, st.FreeBytes, s.cfg.Disk.MinFreeBytes, s.cfg.Disk.MinFreePercent))
	}
	if node, p, ok := s.fullPeer(time.Now()); ok {
		s.metrics.storageFullRefusals.Inc()
		return storageFull(node, p.FreeBytes, fmt.Sprintf("member %s of this cell has %d bytes free, below its watermark: new writes are refused until space is freed on it; reads and deletes work",
			node, p.FreeBytes))
	}
	return nil
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
