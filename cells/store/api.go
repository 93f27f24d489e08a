package store

import (
	"errors"
	"time"

	cellv1 "github.com/cellplane/cellplane/proto/cellplane/cell/v1"
	contextv1 "github.com/cellplane/cellplane/proto/cellplane/context/v1"
)

// Peer is a voting member used to bootstrap a new cell.
type Peer struct {
	ID   string // node id, unique in the cell
	Addr string // Raft address (host:port)
}

// ReadOptions choose a read's consistency (docs/design.md §4).
type ReadOptions struct {
	Consistency  contextv1.Consistency
	MaxStaleness time.Duration
	// IgnoreAuthority serves a LEADER (or LINEARIZABLE) read even while
	// the authority gate says no. It is for the cell's own machinery reading its own state
	// (the replication sink, whose proposals are control commands and not
	// gated either), never for client reads: a client's LEADER read at a
	// cell without its authority lease gets AUTHORITY_LEASE_EXPIRED.
	IgnoreAuthority bool
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
