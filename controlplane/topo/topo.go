package topo

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Version is the revision at which a key was last written (etcd's
// ModRevision). Versions of one store grow monotonically across all keys.
// 0 means "the key does not exist" in conditions.
type Version int64

// Revision is a point in the store's history (etcd's cluster revision).
type Revision int64

// LeaseID identifies a lease; 0 is "no lease".
type LeaseID int64

// KV is one key with its value and metadata.
type KV struct {
	Key     string
	Value   []byte
	Version Version
	// Created is the revision that created the key (unchanged by updates).
	Created Version
	Lease   LeaseID
}

// CondKind is what a Cond checks.
type CondKind int

const (
	// CondVersion holds when the key's Version equals Cond.Version
	// (Version 0: the key must not exist).
	CondVersion CondKind = iota + 1
	// CondExists holds when the key exists (any version).
	CondExists
)

// Cond is a condition of a transaction.
type Cond struct {
	Kind    CondKind
	Key     string
	Version Version
}

// OpKind is what an Op does.
type OpKind int

const (
	// OpPut writes Value at Key (under Lease if non-zero).
	OpPut OpKind = iota + 1
	// OpDelete deletes Key (no error if absent).
	OpDelete
)

// Op is a write of a transaction.
type Op struct {
	Kind  OpKind
	Key   string
	Value []byte
	Lease LeaseID
}

// Put returns an OpPut.
func Put(key string, value []byte) Op { return Op{Kind: OpPut, Key: key, Value: value} }

// PutLeased returns an OpPut bound to a lease.
func PutLeased(key string, value []byte, lease LeaseID) Op {
	return Op{Kind: OpPut, Key: key, Value: value, Lease: lease}
}

// Del returns an OpDelete.
func Del(key string) Op { return Op{Kind: OpDelete, Key: key} }

// IfVersion returns a CondVersion (v == 0: key must not exist).
func IfVersion(key string, v Version) Cond { return Cond{Kind: CondVersion, Key: key, Version: v} }

// IfAbsent returns a condition that key does not exist.
func IfAbsent(key string) Cond { return Cond{Kind: CondVersion, Key: key} }

// IfExists returns a CondExists.
func IfExists(key string) Cond { return Cond{Kind: CondExists, Key: key} }

// ListOptions page through a prefix.
type ListOptions struct {
	// After: only keys strictly greater than this one (the previous page's
	// last key). Empty: from the start of the prefix.
	After string
	// Limit is the page size; 0 means DefaultListLimit.
	Limit int
	// Revision pins the read to a past revision so that every page of one
	// listing sees one snapshot (0: the current revision; the first page's
	// answer says which one that was).
	Revision Revision
	// KeysOnly omits values.
	KeysOnly bool
}

// DefaultListLimit is the page size of a List without a Limit.
const DefaultListLimit = 1000

// ListResult is one page.
type ListResult struct {
	KVs []KV
	// More reports that keys remain after the last one returned.
	More bool
	// Revision is the revision the page was read at: pass it back in
	// ListOptions.Revision for the next page, and watch from Revision+1
	// to follow changes after a complete listing.
	Revision Revision
}

// EventType is the kind of a watch event.
type EventType int

const (
	// EventPut is a create or an update.
	EventPut EventType = iota + 1
	// EventDelete is a delete (explicit or by lease expiry). KV has Key
	// and Version (the deleting revision) only.
	EventDelete
)

// Event is one change seen by a watch.
type Event struct {
	Type EventType
	KV   KV
}

// WatchResponse is one batch of events, in revision order. Err is set on
// the last response of a watch that failed: ErrCompacted (reload with a
// List, then watch from its revision) or another error; the channel is
// closed after it. A response with neither events nor Err is a progress
// notification (the answer to Store.RequestProgress): every change under
// the prefix up to Revision has been delivered. Consumers that only wait
// for changes may treat it as a spurious wake-up.
type WatchResponse struct {
	Events   []Event
	Revision Revision
	Err      error
}

// Session is a lease kept alive in the background until Close or loss.
type Session interface {
	// Lease is the session's lease, for PutLeased.
	Lease() LeaseID
	// Done is closed when the lease is lost (expired, revoked, or the store
	// became unreachable for longer than the TTL) or the session closed.
	Done() <-chan struct{}
	// Close revokes the lease (deleting every key attached to it).
	Close() error
}

// Leaser is implemented by stores that hand out bare leases: granted
// without a background keep-alive and renewed one request at a time, so
// that the caller knows when each renewal was sent (the cell authority
// anchors its validity on that; cells/registry). A lease that nobody
// renews expires TTL after its last renewal.
type Leaser interface {
	// Grant grants a lease of ttl (rounded up to whole seconds).
	Grant(ctx context.Context, ttl time.Duration) (LeaseID, error)
	// KeepAliveOnce renews the lease once and returns the TTL it was
	// renewed for; ErrNotFound if the lease expired or was revoked.
	KeepAliveOnce(ctx context.Context, id LeaseID) (time.Duration, error)
	// Revoke revokes the lease, deleting its keys; ErrNotFound if it
	// expired or was revoked already.
	Revoke(ctx context.Context, id LeaseID) error
}

// Leadership is a won election.
type Leadership interface {
	// Key is the leader's key; Version is its version. A write guarded by
	// IfVersion(Key(), Version()) succeeds only while this leadership holds.
	Key() string
	Version() Version
	// Done is closed when leadership is lost (the session ended or the key
	// was deleted).
	Done() <-chan struct{}
	// Resign gives leadership up.
	Resign(ctx context.Context) error
}

// Store is the only way cellplane code reads and writes etcd. Every method
// is context-first and returns the sentinels below (wrapped), never a
// foreign error type. Keys are relative to the store's prefix.
type Store interface {
	// Get returns the key or ErrNotFound.
	Get(ctx context.Context, key string) (KV, error)
	// Create writes a new key; ErrExists if it exists.
	Create(ctx context.Context, key string, value []byte) (Version, error)
	// Update overwrites key if its version is expect; ErrVersionMismatch
	// otherwise (ErrNotFound if it does not exist). expect 0 is ErrInvalid:
	// use Create, or Txn for an unconditional put.
	Update(ctx context.Context, key string, value []byte, expect Version) (Version, error)
	// Delete removes key if its version is expect (0: any version);
	// ErrNotFound if absent, ErrVersionMismatch on a version mismatch.
	Delete(ctx context.Context, key string, expect Version) error
	// Txn applies ops atomically if every cond holds; otherwise it writes
	// nothing and returns a *CondError (errors.Is ErrConditionFailed).
	// It returns the revision of the write.
	Txn(ctx context.Context, conds []Cond, ops []Op) (Revision, error)
	// List returns one page of the keys under prefix, in key order.
	// ErrCompacted if opts.Revision was compacted away.
	List(ctx context.Context, prefix string, opts ListOptions) (ListResult, error)
	// Watch streams changes under prefix from revision from (0: from now)
	// until ctx ends. A from older than the compaction point yields one
	// response with ErrCompacted. "From now" is registered asynchronously
	// by etcd: to miss nothing, watch from a List's Revision+1.
	Watch(ctx context.Context, prefix string, from Revision) <-chan WatchResponse
	// RequestProgress asks every open watch of this store to send a
	// progress notification once it has delivered every change up to the
	// store's current revision (a response with no events: see
	// WatchResponse). It is how a watcher proves that a quiet watch is
	// still connected and caught up; it returns once the request is sent,
	// and a watch that is reconnecting answers only after it caught up.
	RequestProgress(ctx context.Context) error
	// NewSession grants a lease of ttl and keeps it alive.
	NewSession(ctx context.Context, ttl time.Duration) (Session, error)
	// Campaign blocks until this session leads election name (or ctx ends),
	// then returns the leadership. value is published as the leader's value.
	Campaign(ctx context.Context, s Session, name string, value []byte) (Leadership, error)
	// Leader returns the current leader of election name, or ErrNotFound.
	Leader(ctx context.Context, name string) (KV, error)
	// Close releases the client (not sessions' leases: close those first).
	Close() error
}

// Sentinels. Implementations wrap them; callers use errors.Is.
var (
	// ErrNotFound: the key (or the election leader) does not exist.
	ErrNotFound = errors.New("topo: not found")
	// ErrExists: Create of an existing key.
	ErrExists = errors.New("topo: already exists")
	// ErrVersionMismatch: Update/Delete with a stale version.
	ErrVersionMismatch = errors.New("topo: version mismatch")
	// ErrConditionFailed: a Txn condition did not hold (see CondError).
	ErrConditionFailed = errors.New("topo: condition failed")
	// ErrCompacted: a List or Watch asked for a compacted revision.
	ErrCompacted = errors.New("topo: revision compacted")
	// ErrUnavailable: the store could not be reached in time.
	ErrUnavailable = errors.New("topo: store unavailable")
	// ErrClosed: the store or session was closed.
	ErrClosed = errors.New("topo: closed")
	// ErrInvalid: a malformed call (empty key, bad TTL, too many ops).
	ErrInvalid = errors.New("topo: invalid request")
	// ErrPermissionDenied: the store refused the caller's identity this
	// key or range (etcd RBAC: a router writing, a node writing another
	// cell's keys), or knows no user of that identity. Retrying does not
	// help.
	ErrPermissionDenied = errors.New("topo: permission denied")
)

// CondError says which condition of a Txn failed.
type CondError struct {
	// Index into the conds passed to Txn.
	Index int
	Cond  Cond
	// Actual is the key's version at the time (0: absent).
	Actual Version
}

func (e *CondError) Error() string {
	return fmt.Sprintf("topo: condition %d failed on %q (version %d, want %d)", e.Index, e.Cond.Key, e.Actual, e.Cond.Version)
}

// Is makes errors.Is(err, ErrConditionFailed) true.
func (e *CondError) Is(target error) bool { return target == ErrConditionFailed }
