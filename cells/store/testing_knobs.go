package store

import (
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/hashicorp/raft-wal/types"
)

// TestingKnobs are hooks for tests only. The zero value is production.
type TestingKnobs struct {
	// InMemoryState keeps the Pebble state in memory (the Raft log and
	// snapshots still go to DataDir).
	InMemoryState bool
	// WallClock, when set, replaces time.Now as the wall clock the leader
	// stamps commands from (clock.go); the monotonic clock stays the
	// runtime's, as a stepped wall clock leaves it. Tests step it.
	WallClock func() time.Time
	// StateFS, when set, holds the Pebble state (at DataDir/state, or
	// "state" with InMemoryState) instead of the OS file system; LogFS
	// holds the Raft log's segment files (raft-wal's meta database stays
	// on the OS). Disk-fault tests inject through them (S12: a file system
	// that drops what was not synced when the test simulates a crash).
	StateFS vfs.FS
	LogFS   types.VFS
	// Network, when set, decides which Raft connections may be made; it
	// lets a test partition and heal nodes over real TCP.
	Network NetworkFilter
	// OnApply, when set, is called with the Raft index of every log entry
	// the state machine applies (not the ones it skips as already applied).
	OnApply func(index uint64)
	// ProposeUnchecked lets Propose pass commands this node does not know,
	// to simulate a proposal from a newer node, and skips the leader's
	// check of apply_changes events (as an older leader would propose
	// them; the state machine still checks, invariant 12).
	ProposeUnchecked bool
	// LogStoreFault, when set, is called before every write of the Raft
	// log store (op "store_logs" or "delete_range"); a non-nil error is
	// returned instead of writing (wrap syscall.ENOSPC or syscall.EIO to
	// simulate a full or failing disk, S13). The stable store (term and
	// vote) is not affected: hashicorp/raft panics when it cannot save them.
	LogStoreFault func(op string) error
	// StateStoreFault, when set, is called before every write operation
	// of the Pebble state store's filesystem (create, write, sync, rename,
	// remove, … of the file at path); a non-nil error is returned instead
	// (S13). The state machine cannot refuse a committed
	// entry: a failed state write stops the node (Done) with the state at
	// the last committed batch, and a restart re-applies from the log.
	StateStoreFault func(path string) error
	// DiskSpace, when set, replaces statfs(2) for the free-space watermark
	// (DiskConfig), so a test can cross it, or make the check fail.
	DiskSpace DiskSpace
	// Acks, when set, is told of every client write this node acknowledges
	// as the tenant's owner (the fault suite's server-side record of
	// invariant I5, internal/acklog; `cellplane cell` sets it from
	// CELLPLANE_ACK_LOG).
	Acks AckRecorder
}

// AckRecorder records acknowledged writes (TestingKnobs.Acks). Now is a
// clock shared by every process of the machine (CLOCK_MONOTONIC), read
// just before a batch of writes is handed to Raft and when one is
// acknowledged.
type AckRecorder interface {
	Now() int64
	Acked(Ack)
}

// Ack is one acknowledged client write.
type Ack struct {
	Tenant string
	// Epoch is the tenant's epoch the write was admitted at; Term and
	// Index the Raft entry that carried it.
	Epoch, Term, Index uint64
	// Before is AckRecorder.Now just before the entry was handed to Raft
	// (at most the time the leader appended it); After when the write was
	// acknowledged.
	Before, After int64
}

// NetworkFilter decides whether this node may talk to a peer's Raft
// address. Connections to a blocked peer fail to dial, and established
// ones are closed when Blocked starts returning true (checked on each use).
type NetworkFilter interface {
	Blocked(peerAddr string) bool
}
