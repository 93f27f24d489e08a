package store

import (
	"errors"
	"log/slog"
	"net"
	"time"

	cellv1 "github.com/cellplane/cellplane/proto/cellplane/cell/v1"
	contextv1 "github.com/cellplane/cellplane/proto/cellplane/context/v1"
)

// Peer is a voting member used to bootstrap a new cell.
type Peer struct {
	ID   string // node id, unique in the cell
	Addr string // Raft address (host:port)
}

// RaftConfig holds the Raft timing knobs. Defaults were chosen by
// measurement on a loaded 2-core machine (docs/benchmarks.md): fast failover
// without spurious elections.
type RaftConfig struct {
	HeartbeatTimeout   time.Duration
	ElectionTimeout    time.Duration
	LeaderLeaseTimeout time.Duration
	CommitTimeout      time.Duration
	// MaxAppendEntries caps log entries per AppendEntries RPC.
	MaxAppendEntries int
	// SnapshotInterval is how often Raft checks whether to snapshot;
	// SnapshotThreshold is how many new log entries trigger one;
	// TrailingLogs is how many entries stay in the log after a snapshot.
	SnapshotInterval  time.Duration
	SnapshotThreshold uint64
	TrailingLogs      uint64
	// SnapshotRetain is how many snapshots are kept on disk.
	SnapshotRetain int
}

// ChangeLogConfig bounds each tenant's change log. Trimming happens in the
// state machine, with the command's timestamp, so all replicas trim alike.
// Like DedupWindow, these bounds are replicated cell settings: the leader
// proposes its configured values, and every replica applies the cell's.
type ChangeLogConfig struct {
	// RetentionAge drops events older than this (0: keep by size only).
	RetentionAge time.Duration
	// MaxBytes and MaxEvents bound one tenant's log (0: unbounded).
	MaxBytes  uint64
	MaxEvents uint64
}

// Config configures a Store.
type Config struct {
	// NodeID is this node's id in the cell.
	NodeID string
	// RaftBind is the address the Raft transport listens on.
	RaftBind string
	// RaftListener, when set, is used instead of listening on RaftBind
	// (tests open listeners on port 0 first so that no port can be taken
	// between choosing and binding it). RaftAdvertise defaults to its address.
	RaftListener net.Listener
	// RaftAdvertise is the address peers dial; empty means RaftBind.
	RaftAdvertise string
	// GRPCAdvertise and HTTPAdvertise are this node's service addresses.
	// The store registers them in the cell state when it becomes leader, so
	// that followers can forward to it.
	GRPCAdvertise string
	HTTPAdvertise string
	// DataDir holds raft-wal/, snapshots/ and state/ (Pebble).
	DataDir string
	// Bootstrap, when non-empty and DataDir holds no Raft state, creates a
	// new cell with these voters (which must include this node).
	Bootstrap []Peer

	Raft RaftConfig
	// MaxBatchCommands and MaxBatchBytes bound one group-committed Raft
	// log entry.
	MaxBatchCommands int
	MaxBatchBytes    int
	// MaxInflightBatches bounds the Raft entries proposed but not yet
	// applied. While that many are in flight, new proposals wait and join
	// the next entry: the bound is what makes batches grow with load.
	MaxInflightBatches int
	// StateCacheBytes is Pebble's block cache; StateMemTableBytes its
	// memtable size. A memtable large enough to hold the recent dedup
	// windows and context heads keeps the apply path off the disk.
	StateCacheBytes    int64
	StateMemTableBytes uint64
	// DedupWindow is how many request ids per tenant are remembered at
	// least (the oldest are forgotten in chunks of DedupWindow/16).
	DedupWindow int
	ChangeLog   ChangeLogConfig
	// ApplyTimeout bounds a proposal when the caller's context has no
	// earlier deadline.
	ApplyTimeout time.Duration
	// DefaultMaxStaleness applies to STALE reads that name no bound.
	DefaultMaxStaleness time.Duration

	// Logger receives structured logs; nil means slog.Default().
	Logger       *slog.Logger
	TestingKnobs TestingKnobs
}

// ReadOptions choose a read's consistency (DESIGN §4).
type ReadOptions struct {
	Consistency  contextv1.Consistency
	MaxStaleness time.Duration
}

// Status is a node's view of the cell.
type Status struct {
	NodeID      string
	State       string // Leader, Follower, Candidate, Shutdown
	Term        uint64
	LeaderID    string
	LeaderAddr  string // Raft address of the leader
	CommitIndex uint64
	// AppliedIndex is the highest Raft index the state reflects (not
	// Raft's own applied index, which runs ahead of the state machine).
	AppliedIndex uint64
	LastLogIndex uint64
	// FirstLogIndex is the oldest entry still in the Raft log (it grows
	// when a snapshot lets the log be truncated).
	FirstLogIndex uint64
	LastContact   time.Duration
	Members       []Member
	Tenants       uint64
}

// Member is one server of the Raft configuration.
type Member struct {
	ID       string
	RaftAddr string
	Voter    bool
	Leader   bool
	// Info holds the addresses the member registered, if it did.
	Info *cellv1.NodeInfo
}

// ErrChangesTrimmed is returned by TenantView.Changes when the change log
// no longer holds the events right after the requested tseq.
var ErrChangesTrimmed = errors.New("store: change log trimmed past the requested tseq")
