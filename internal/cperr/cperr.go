// Package cperr defines cellplane's domain errors: one typed error that
// carries a stable reason from the error contract (docs/design.md §9), a message
// safe to show a caller, metadata, and field violations.
//
// Every component returns these errors; the gRPC edge translates them to
// statuses in exactly one table (internal/rpcerr). Callers test reasons
// with errors.Is against the sentinels below, never by comparing strings:
//
//	if errors.Is(err, cperr.ErrNotLeader) { ... }
//	var e *cperr.Error
//	if errors.As(err, &e) { leader := e.Metadata[cperr.MetaLeader] }
package cperr

import (
	"fmt"
	"slices"
	"strings"
	"time"
)

// Reason is a stable, machine-readable error reason (google.rpc.ErrorInfo.reason).
type Reason string

// The reasons of the error contract.
const (
	InvalidArgument       Reason = "INVALID_ARGUMENT"
	TenantNotFound        Reason = "TENANT_NOT_FOUND"
	ContextNotFound       Reason = "CONTEXT_NOT_FOUND"
	KeyNotFound           Reason = "KEY_NOT_FOUND"
	AlreadyExists         Reason = "ALREADY_EXISTS"
	RevisionMismatch      Reason = "REVISION_MISMATCH"
	SequenceMismatch      Reason = "SEQUENCE_MISMATCH"
	NotLeader             Reason = "NOT_LEADER"
	WrongCell             Reason = "WRONG_CELL"
	StaleEpoch            Reason = "STALE_EPOCH"
	TenantMoving          Reason = "TENANT_MOVING"
	CellUnavailable       Reason = "CELL_UNAVAILABLE"
	AuthorityLeaseExpired Reason = "AUTHORITY_LEASE_EXPIRED"
	StalenessExceeded     Reason = "STALENESS_EXCEEDED"
	RateLimited           Reason = "RATE_LIMITED"
	QuotaExceeded         Reason = "QUOTA_EXCEEDED"
	Unauthenticated       Reason = "UNAUTHENTICATED"
	PermissionDenied      Reason = "PERMISSION_DENIED"
	Internal              Reason = "INTERNAL"

	// Control plane.
	RegionNotFound          Reason = "REGION_NOT_FOUND"
	CellNotFound            Reason = "CELL_NOT_FOUND"
	APIKeyNotFound          Reason = "API_KEY_NOT_FOUND"
	NoCapacity              Reason = "NO_CAPACITY"              // no ACTIVE cell of the region has room
	CellNotActive           Reason = "CELL_NOT_ACTIVE"          // an explicit cell is cordoned, draining or down
	TenantBusy              Reason = "TENANT_BUSY"              // another workflow of the tenant is running
	ControlPlaneUnavailable Reason = "CONTROLPLANE_UNAVAILABLE" // etcd unreachable (+ RetryInfo)

	// Replication, moves, failover.
	ChangesTrimmed     Reason = "CHANGES_TRIMMED"      // the change log no longer holds the events after the asked tseq: re-bootstrap from an export
	MoveNotFound       Reason = "MOVE_NOT_FOUND"       // no move with that id
	FailoverNotFound   Reason = "FAILOVER_NOT_FOUND"   // no failover with that id
	MoveNotCancellable Reason = "MOVE_NOT_CANCELLABLE" // the move fenced its source (or ended): it can no longer be cancelled
	NoStandby          Reason = "NO_STANDBY"           // failover of a tenant without a (bootstrapped) standby

	// Subscriptions.
	CursorExpired Reason = "CURSOR_EXPIRED" // a change cursor the server cannot resume from (trimmed, or its history was lost by a promotion): re-read, then resume from metadata current_cursor

	// Declarative management (Terraform): guarded deletes.
	RegionNotEmpty    Reason = "REGION_NOT_EMPTY"   // delete of a region that cells or tenants still name (metadata: cells, tenants)
	CellNotEmpty      Reason = "CELL_NOT_EMPTY"     // delete of a cell that still holds tenants, standbys, moves, failovers or registered nodes (metadata: tenants, nodes, operations)
	DeletionProtected Reason = "DELETION_PROTECTED" // delete of a tenant whose deletion_protection is on
	RequestIDReused   Reason = "REQUEST_ID_REUSED"  // a request_id already used by a different request (CreateTenant, StartMove, Failover)

	// Zero trust: identities and authorisation.
	ReplicationEventRejected Reason = "REPLICATION_EVENT_REJECTED" // a standby refused a batch of its source's change events (another tenant's command, a forbidden op, a malformed or out-of-order event): nothing of it was applied
	CredentialsStale         Reason = "CREDENTIALS_STALE"          // the server's view of API keys (or revoked tokens) is older than its staleness bound: it refuses them rather than honour a possibly revoked one

	// Capacity.
	StorageFull Reason = "STORAGE_FULL" // the cell's free disk space is below its watermark (or a disk returned ENOSPC): new writes are refused, reads, deletes and moves out keep working
)

// reasons lists every reason above, in the order of the error contract.
// The tables keyed by reason (internal/rpcerr's codes and HTTP statuses,
// internal/retry's classes) are tested against it, so a new reason must be
// added here and then to each table.
var reasons = []Reason{
	InvalidArgument, TenantNotFound, ContextNotFound, KeyNotFound, AlreadyExists, RevisionMismatch,
	SequenceMismatch, NotLeader, WrongCell, StaleEpoch, TenantMoving, CellUnavailable,
	AuthorityLeaseExpired, StalenessExceeded, RateLimited, QuotaExceeded, Unauthenticated,
	PermissionDenied, Internal,

	RegionNotFound, CellNotFound, APIKeyNotFound, NoCapacity, CellNotActive, TenantBusy,
	ControlPlaneUnavailable,

	ChangesTrimmed, MoveNotFound, FailoverNotFound, MoveNotCancellable, NoStandby,

	CursorExpired,

	RegionNotEmpty, CellNotEmpty, DeletionProtected, RequestIDReused,

	ReplicationEventRejected, CredentialsStale,

	StorageFull,
}

// Reasons returns every reason of the error contract (a fresh slice).
func Reasons() []Reason { return append([]Reason(nil), reasons...) }

// Known reports whether r is a reason of the error contract.
func Known(r Reason) bool { return slices.Contains(reasons, r) }

// Metadata keys used with the reasons above.
const (
	MetaLeader         = "leader"          // NOT_LEADER: the leader's gRPC address, when known
	MetaLeaderID       = "leader_id"       // NOT_LEADER: the leader's node id, when known
	MetaEpoch          = "epoch"           // WRONG_CELL, STALE_EPOCH: the tenant's current epoch here
	MetaRole           = "role"            // WRONG_CELL: the tenant's role here
	MetaCell           = "cell"            // WRONG_CELL, STALE_EPOCH: the cell answering
	MetaTenant         = "tenant"          // tenant-scoped errors
	MetaLastSeq        = "last_seq"        // SEQUENCE_MISMATCH: the context's current last seq
	MetaRevision       = "revision"        // REVISION_MISMATCH: the key's current revision (0: absent)
	MetaLastContact    = "last_contact"    // STALENESS_EXCEEDED: time since the member heard from the leader
	MetaMaxStaleness   = "max_staleness"   // STALENESS_EXCEEDED: the bound asked for
	MetaTseq           = "tseq"            // REPLICATION_EVENT_REJECTED: the tseq of the first refused event
	MetaCredentialsAge = "credentials_age" // CREDENTIALS_STALE: how old the server's credential view is ("unknown": never synced)
	MetaToken          = "token"           // UNAUTHENTICATED: why a tenant token was refused (internal/tenanttoken)
	MetaQuota          = "quota"           // QUOTA_EXCEEDED, RATE_LIMITED: which limit (max_bytes, max_contexts, max_memory_keys, bytes_per_second, …)
	MetaLimit          = "limit"           // QUOTA_EXCEEDED: the limit's value
	MetaUsage          = "usage"           // QUOTA_EXCEEDED: the usage the write would have reached
	MetaNode           = "node"            // STORAGE_FULL: the node whose disk is below its watermark
	MetaFreeBytes      = "free_bytes"      // STORAGE_FULL: that node's free bytes when last checked
	MetaCells          = "cells"           // REGION_NOT_EMPTY: the cells left (comma-separated, at most 10, then "…")
	MetaTenants        = "tenants"         // REGION_NOT_EMPTY, CELL_NOT_EMPTY: the tenants left (same format)
	MetaNodes          = "nodes"           // CELL_NOT_EMPTY: the nodes still registered (same format)
	MetaOperations     = "operations"      // CELL_NOT_EMPTY: the moves and failovers that name the cell (same format)
	MetaOldestCursor   = "oldest_cursor"   // CURSOR_EXPIRED: the oldest cursor the server can resume from ("<tseq>.<time_unix_nano>"; absent when the change log holds nothing)
	MetaCurrentCursor  = "current_cursor"  // CURSOR_EXPIRED: the tenant's current position ("<tseq>.<time_unix_nano>"): re-read the state, then resume after it
)

// FieldViolation names one invalid request field (google.rpc.BadRequest).
type FieldViolation struct {
	Field       string
	Description string
}

// Error is a cellplane error. Its Message must be safe to return to a
// client: no internals, no stack traces, no secrets.
type Error struct {
	Reason     Reason
	Message    string
	Metadata   map[string]string
	Violations []FieldViolation
	// RetryAfter, when positive, tells the caller when a retry may succeed
	// (google.rpc.RetryInfo, HTTP Retry-After).
	RetryAfter time.Duration
}

// Error implements error.
func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(string(e.Reason))
	if e.Message != "" {
		b.WriteString(": ")
		b.WriteString(e.Message)
	}
	for _, v := range e.Violations {
		fmt.Fprintf(&b, "; %s: %s", v.Field, v.Description)
	}
	return b.String()
}

// Is reports whether target is a sentinel (an *Error without message)
// with the same reason, so that errors.Is(err, cperr.ErrNotLeader) works
// for every NOT_LEADER error whatever its message and metadata.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Message == "" && t.Reason == e.Reason
}

// Sentinels for errors.Is. Do not return them directly when a message or
// metadata can say more; use New.
var (
	ErrInvalidArgument       = &Error{Reason: InvalidArgument}
	ErrTenantNotFound        = &Error{Reason: TenantNotFound}
	ErrContextNotFound       = &Error{Reason: ContextNotFound}
	ErrKeyNotFound           = &Error{Reason: KeyNotFound}
	ErrAlreadyExists         = &Error{Reason: AlreadyExists}
	ErrRevisionMismatch      = &Error{Reason: RevisionMismatch}
	ErrSequenceMismatch      = &Error{Reason: SequenceMismatch}
	ErrNotLeader             = &Error{Reason: NotLeader}
	ErrWrongCell             = &Error{Reason: WrongCell}
	ErrStaleEpoch            = &Error{Reason: StaleEpoch}
	ErrTenantMoving          = &Error{Reason: TenantMoving}
	ErrCellUnavailable       = &Error{Reason: CellUnavailable}
	ErrAuthorityLeaseExpired = &Error{Reason: AuthorityLeaseExpired}
	ErrStalenessExceeded     = &Error{Reason: StalenessExceeded}
	ErrRateLimited           = &Error{Reason: RateLimited}
	ErrQuotaExceeded         = &Error{Reason: QuotaExceeded}
	ErrUnauthenticated       = &Error{Reason: Unauthenticated}
	ErrPermissionDenied      = &Error{Reason: PermissionDenied}
	ErrInternal              = &Error{Reason: Internal}

	ErrRegionNotFound          = &Error{Reason: RegionNotFound}
	ErrCellNotFound            = &Error{Reason: CellNotFound}
	ErrAPIKeyNotFound          = &Error{Reason: APIKeyNotFound}
	ErrNoCapacity              = &Error{Reason: NoCapacity}
	ErrCellNotActive           = &Error{Reason: CellNotActive}
	ErrTenantBusy              = &Error{Reason: TenantBusy}
	ErrControlPlaneUnavailable = &Error{Reason: ControlPlaneUnavailable}

	ErrChangesTrimmed     = &Error{Reason: ChangesTrimmed}
	ErrMoveNotFound       = &Error{Reason: MoveNotFound}
	ErrFailoverNotFound   = &Error{Reason: FailoverNotFound}
	ErrMoveNotCancellable = &Error{Reason: MoveNotCancellable}
	ErrNoStandby          = &Error{Reason: NoStandby}

	ErrCursorExpired = &Error{Reason: CursorExpired}

	ErrRegionNotEmpty    = &Error{Reason: RegionNotEmpty}
	ErrCellNotEmpty      = &Error{Reason: CellNotEmpty}
	ErrDeletionProtected = &Error{Reason: DeletionProtected}
	ErrRequestIDReused   = &Error{Reason: RequestIDReused}

	ErrReplicationEventRejected = &Error{Reason: ReplicationEventRejected}

	ErrStorageFull = &Error{Reason: StorageFull}
)

// New returns an error with a reason and a formatted message.
func New(r Reason, format string, args ...any) *Error {
	return &Error{Reason: r, Message: fmt.Sprintf(format, args...)}
}

// With returns e with one more metadata key. It mutates and returns e, for
// chaining on a freshly made error.
func (e *Error) With(key, value string) *Error {
	if e.Metadata == nil {
		e.Metadata = make(map[string]string, 2)
	}
	e.Metadata[key] = value
	return e
}

// WithRetryAfter sets RetryAfter and returns e.
func (e *Error) WithRetryAfter(d time.Duration) *Error {
	e.RetryAfter = d
	return e
}

// Invalid returns an INVALID_ARGUMENT error listing field violations.
func Invalid(violations ...FieldViolation) *Error {
	msg := "invalid request"
	if len(violations) == 1 {
		msg = "invalid " + violations[0].Field
	}
	return &Error{Reason: InvalidArgument, Message: msg, Violations: violations}
}

// ReasonOf returns the reason of err if it is (or wraps) an *Error, else "".
func ReasonOf(err error) Reason {
	if e, ok := asError(err); ok {
		return e.Reason
	}
	return ""
}

func asError(err error) (*Error, bool) {
	for err != nil {
		if e, ok := err.(*Error); ok {
			return e, true
		}
		u, ok := err.(interface{ Unwrap() error })
		if !ok {
			return nil, false
		}
		err = u.Unwrap()
	}
	return nil, false
}
