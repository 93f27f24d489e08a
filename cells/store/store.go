package store

import (
	"context"

	cellv1 "github.com/cellplane/cellplane/proto/cellplane/cell/v1"
	contextv1 "github.com/cellplane/cellplane/proto/cellplane/context/v1"
)

// Store is one node's replica of a cell: Raft (raft-wal log, file
// snapshots, TCP transport) in front of a Pebble state machine.
type Store struct{}

// Open opens (or creates) the node's data dir, starts Raft and, when
// cfg.Bootstrap is set and there is no Raft state yet, bootstraps the cell.
func Open(cfg Config) (*Store, error) { panic("store: not implemented yet") }

// Close stops Raft and closes the state. It does not remove the node from
// the cell.
func (s *Store) Close() error { panic("store: not implemented yet") }

// Propose replicates cmd through Raft (group-committed with concurrent
// proposals) and returns the state machine's result. It fills in the
// command's version and timestamp. A command the state machine rejected
// returns its *cperr.Error (WRONG_CELL, STALE_EPOCH, SEQUENCE_MISMATCH, …);
// on a follower it returns NOT_LEADER with the leader in the metadata.
// A context that ends before the result is known returns the context's
// error: the command may still be applied (retry with the same request_id).
func (s *Store) Propose(ctx context.Context, cmd *cellv1.Command) (*cellv1.CommandResult, error) {
	panic("store: not implemented yet")
}

// ReadTenant runs fn on a consistent read-only view of one tenant after
// establishing the consistency asked for (LINEARIZABLE: leadership confirmed
// by a quorum, shared by concurrent readers, and applied ≥ the commit index
// seen; LEADER: leader's local state; STALE: any member within its staleness
// bound). The tenant must be OWNER here at epoch (0: any) or the read fails
// with WRONG_CELL / STALE_EPOCH. fn must not keep the view.
func (s *Store) ReadTenant(ctx context.Context, tenant string, epoch uint64, opts ReadOptions, fn func(*TenantView) error) error {
	panic("store: not implemented yet")
}

// ReadCell runs fn on a consistent read-only view of the whole cell.
func (s *Store) ReadCell(ctx context.Context, opts ReadOptions, fn func(*CellView) error) error {
	panic("store: not implemented yet")
}

// WaitTenant blocks until the tenant's tseq on this node is above
// afterTseq, or ctx ends.
func (s *Store) WaitTenant(ctx context.Context, tenant string, afterTseq uint64) error {
	panic("store: not implemented yet")
}

// IsLeader reports whether this node is the Raft leader.
func (s *Store) IsLeader() bool { panic("store: not implemented yet") }

// Leader returns the leader's node id and its registered addresses (nil
// when unknown or not registered yet).
func (s *Store) Leader() (id string, info *cellv1.NodeInfo) { panic("store: not implemented yet") }

// Status reports this node's view of the cell.
func (s *Store) Status() Status { panic("store: not implemented yet") }

// AddVoter adds a voting member (leader only).
func (s *Store) AddVoter(ctx context.Context, id, raftAddr string) error {
	panic("store: not implemented yet")
}

// AddNonVoter adds a non-voting member (leader only).
func (s *Store) AddNonVoter(ctx context.Context, id, raftAddr string) error {
	panic("store: not implemented yet")
}

// RemoveServer removes a member (leader only).
func (s *Store) RemoveServer(ctx context.Context, id string) error {
	panic("store: not implemented yet")
}

// TransferLeadership hands leadership to id (or the most up-to-date
// follower when id is empty) and returns the new leader's id.
func (s *Store) TransferLeadership(ctx context.Context, id string) (string, error) {
	panic("store: not implemented yet")
}

// Snapshot takes a Raft snapshot now and truncates the log.
func (s *Store) Snapshot() error { panic("store: not implemented yet") }

// Done is closed when the store stopped by itself because it cannot go on
// safely (an unknown non-ignorable command, a storage failure); Err then
// says why.
func (s *Store) Done() <-chan struct{} { panic("store: not implemented yet") }

// Err returns why the store stopped, or nil.
func (s *Store) Err() error { panic("store: not implemented yet") }

// TenantView is a read-only view of one tenant at one point in time.
type TenantView struct{}

// Info returns the tenant's role, epoch, tseq and usage.
func (v *TenantView) Info() *cellv1.TenantInfo { panic("store: not implemented yet") }

// Context returns a context's metadata or CONTEXT_NOT_FOUND.
func (v *TenantView) Context(id string) (*contextv1.Context, error) {
	panic("store: not implemented yet")
}

// ListContexts returns up to limit contexts with ids after `after`, in id
// order, and whether more exist.
func (v *TenantView) ListContexts(after string, limit int) ([]*contextv1.Context, bool, error) {
	panic("store: not implemented yet")
}

// Entries returns entries of a context from fromSeq on (1 = first), at most
// maxEntries and about maxBytes (at least one when any exists).
// CONTEXT_NOT_FOUND when the context does not exist.
func (v *TenantView) Entries(id string, fromSeq uint64, maxEntries int, maxBytes uint64) ([]*contextv1.Entry, error) {
	panic("store: not implemented yet")
}

// Memory returns a memory item or KEY_NOT_FOUND.
func (v *TenantView) Memory(key string) (*contextv1.MemoryItem, error) {
	panic("store: not implemented yet")
}

// ListMemory returns up to limit items whose key has prefix and sorts
// after `after`, in key order, and whether more exist.
func (v *TenantView) ListMemory(prefix, after string, limit int, keysOnly bool) ([]*contextv1.MemoryItem, bool, error) {
	panic("store: not implemented yet")
}

// Changes returns up to limit change-log events with tseq > afterTseq. When
// events after afterTseq were already trimmed it returns ErrChangesTrimmed.
func (v *TenantView) Changes(afterTseq uint64, limit int) ([]*cellv1.ChangeEvent, error) {
	panic("store: not implemented yet")
}

// CellView is a read-only view of the whole cell at one point in time.
type CellView struct{}

// Tenant returns a tenant's info in any role, or TENANT_NOT_FOUND.
func (v *CellView) Tenant(tenant string) (*cellv1.TenantInfo, error) {
	panic("store: not implemented yet")
}

// ListTenants returns up to limit tenants after `after`, in id order, and
// whether more exist.
func (v *CellView) ListTenants(after string, limit int) ([]*cellv1.TenantInfo, bool, error) {
	panic("store: not implemented yet")
}

// Nodes returns the registered node infos.
func (v *CellView) Nodes() ([]*cellv1.NodeInfo, error) { panic("store: not implemented yet") }
