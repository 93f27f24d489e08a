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
	NodeID string
	// RaftID is this node's Raft server id (see IdentityFile).
	RaftID string
	// Member and Voter say whether the Raft configuration holds this
	// node's incarnation, and with a vote. A node that came back without
	// its data is no member until the cell adds it (H1).
	Member, Voter bool
	State         string // Leader, Follower, Candidate, Shutdown
	Term          uint64
	// LeaderID is the leader's node id; LeaderRaftID its Raft server id.
	LeaderID     string
	LeaderRaftID string
	LeaderAddr   string // Raft address of the leader
	CommitIndex  uint64
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
	// ID is the member's node id; RaftID its Raft server id (the node id,
	// or the node id and an incarnation: see IdentityFile). During a
	// replacement two members may have the same ID.
	ID       string
	RaftID   string
	RaftAddr string
	Voter    bool
	Leader   bool
	// Info holds the addresses the member registered, if it did.
	Info *cellv1.NodeInfo
}

// ErrDataLoss is returned by Open when the node's own data cannot rebuild
// its state: its snapshots are corrupt (or gone) and its Raft log no longer
// holds the entries they covered. The node refuses to start rather than
// serve a state that diverges from its cell's; it must rejoin as a new
// member (docs/reliability.md).
var ErrDataLoss = errors.New("store: local data lost or corrupt (DATA_LOSS)")

// ErrChangesTrimmed is returned by TenantView.Changes when the change log
// no longer holds the events right after the requested tseq.
var ErrChangesTrimmed = errors.New("store: change log trimmed past the requested tseq")
