package retry

import (
	"context"
	"errors"
	"time"

	"github.com/cellplane/cellplane/internal/cperr"
	"github.com/cellplane/cellplane/internal/rpcerr"
)

// Class says how a caller may retry a failure.
type Class uint8

const (
	// RetryNo: the caller must change something (or the server failed for
	// a bad reason); the same request fails again.
	RetryNo Class = iota
	// RetryElsewhere: NOT_LEADER, CELL_UNAVAILABLE, AUTHORITY_LEASE_EXPIRED,
	// STALENESS_EXCEEDED and transport failures: try another member (or
	// the same one a little later), with the same request id.
	RetryElsewhere
	// RetryRefresh: WRONG_CELL, STALE_EPOCH: the caller's route is out of
	// date; look the tenant up again, then retry.
	RetryRefresh
	// RetryLater: TENANT_MOVING, RATE_LIMITED, TENANT_BUSY,
	// CONTROLPLANE_UNAVAILABLE: the same request succeeds after a while;
	// wait the error's RetryAfter (at least the backoff).
	RetryLater
)

func (c Class) String() string {
	switch c {
	case RetryNo:
		return "no"
	case RetryElsewhere:
		return "elsewhere"
	case RetryRefresh:
		return "refresh"
	case RetryLater:
		return "later"
	}
	return "unknown"
}

// rule is the retry advice of one reason.
type rule struct {
	class Class
	// unapplied: the server refused the request before applying anything,
	// so even a call without a request id may be sent again.
	unapplied bool
}

// rules is the error contract's retry advice, one entry per reason
// (cperr.Reasons; the test fails for a reason without one).
var rules = map[cperr.Reason]rule{
	cperr.InvalidArgument:  {RetryNo, false},
	cperr.TenantNotFound:   {RetryNo, false},
	cperr.ContextNotFound:  {RetryNo, false},
	cperr.KeyNotFound:      {RetryNo, false},
	cperr.AlreadyExists:    {RetryNo, false},
	cperr.RevisionMismatch: {RetryNo, false},
	cperr.SequenceMismatch: {RetryNo, false},
	// Raft refused to append: never applied.
	cperr.NotLeader:  {RetryElsewhere, true},
	cperr.WrongCell:  {RetryRefresh, true},
	cperr.StaleEpoch: {RetryRefresh, true},
	// Refused while the placement changes.
	cperr.TenantMoving: {RetryLater, true},
	// Unknown outcome (a timeout, leadership lost in flight): retry only
	// with the same request id.
	cperr.CellUnavailable: {RetryElsewhere, false},
	// A write applied while the lease lapsed is not acknowledged.
	cperr.AuthorityLeaseExpired: {RetryElsewhere, false},
	// One member is out of touch, not the cell (docs/errors.md): another
	// member (or the leader) serves the read now.
	cperr.StalenessExceeded: {RetryElsewhere, true},
	cperr.RateLimited:       {RetryLater, true},
	cperr.QuotaExceeded:     {RetryNo, false},
	// The disk stays full until an operator frees space: refused before
	// anything was proposed, but the same write fails again until then.
	cperr.StorageFull:      {RetryNo, true},
	cperr.Unauthenticated:  {RetryNo, false},
	cperr.PermissionDenied: {RetryNo, false},
	cperr.Internal:         {RetryNo, false},

	cperr.RegionNotFound: {RetryNo, false},
	cperr.CellNotFound:   {RetryNo, false},
	cperr.APIKeyNotFound: {RetryNo, false},
	cperr.NoCapacity:     {RetryNo, false},
	cperr.CellNotActive:  {RetryNo, false},
	// Another workflow of the tenant runs: refused, retry when it ends.
	cperr.TenantBusy: {RetryLater, true},
	// etcd unreachable: a write may have reached it.
	cperr.ControlPlaneUnavailable: {RetryLater, false},

	cperr.ChangesTrimmed:     {RetryNo, false},
	cperr.MoveNotFound:       {RetryNo, false},
	cperr.FailoverNotFound:   {RetryNo, false},
	cperr.MoveNotCancellable: {RetryNo, false},
	cperr.NoStandby:          {RetryNo, false},
	cperr.CursorExpired:      {RetryNo, false},
	// Refused before anything was written; the same call fails until an
	// operator empties the region or cell, or turns protection off.
	cperr.RegionNotEmpty:    {RetryNo, true},
	cperr.CellNotEmpty:      {RetryNo, true},
	cperr.DeletionProtected: {RetryNo, true},
	// The id names another request: nothing was started.
	cperr.RequestIDReused: {RetryNo, true},
	// The source sent what no standby may apply: the same events are
	// refused again (the sink waits long and reports it, docs/security.md).
	cperr.ReplicationEventRejected: {RetryNo, false},
	// Refused at the front door before anything was forwarded: another
	// router (or this one once its watch catches up) may answer.
	cperr.CredentialsStale: {RetryElsewhere, true},
}

// Unsent marks err as the failure of a call that never reached a server
// (no connection or stream could be opened), so nothing was applied:
// Allowed then lets even a Mutating call retry it. Errors, classes and
// messages are otherwise those of err.
func Unsent(err error) error {
	if err == nil {
		return nil
	}
	return &unsent{err}
}

type unsent struct{ err error }

func (u *unsent) Error() string { return u.err.Error() }
func (u *unsent) Unwrap() error { return u.err }

// ruleOf returns the advice for err: by reason for a cellplane error
// (after rpcerr.FromStatus for a status), CELL_UNAVAILABLE's for a
// transport failure, RetryNo for context errors and anything else.
func ruleOf(err error) rule {
	if err == nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return rule{}
	}
	r := rule{}
	if rpcerr.IsTransport(err) {
		r = rules[cperr.CellUnavailable]
	} else if reason := cperr.ReasonOf(rpcerr.FromStatus(err)); reason != "" {
		r = rules[reason]
	}
	var u *unsent
	if r.class != RetryNo && errors.As(err, &u) {
		r.unapplied = true
	}
	return r
}

// ClassOf says how a caller may retry err. err may be a *cperr.Error or a
// status error from a cellplane server; context errors are RetryNo.
func ClassOf(err error) Class { return ruleOf(err).class }

// Kind is what a call does to the server's state, which decides the
// failures it may retry.
type Kind uint8

const (
	// Immutable: a read; retrying cannot change anything.
	Immutable Kind = iota
	// Idempotent: a write that carries a request id, so the server applies
	// it at most once however often it is sent.
	Idempotent
	// Mutating: a write without a request id; it is retried only when the
	// error says no server applied it.
	Mutating
)

// Allowed reports whether a call of kind k that failed with err may be
// tried again (by the policy; the caller's limits come on top).
func Allowed(k Kind, err error) bool {
	r := ruleOf(err)
	if r.class == RetryNo {
		return false
	}
	return k != Mutating || r.unapplied
}

// Resend reports whether a call of kind k that failed with err may be sent
// again as it is: Allowed, and not a stale route (RetryRefresh) that the
// caller must look up again first. It is what Do retries.
func Resend(k Kind, err error) bool {
	return Allowed(k, err) && ClassOf(err) != RetryRefresh
}

// RetryAfter returns the delay err asks for (google.rpc.RetryInfo), or 0.
func RetryAfter(err error) time.Duration {
	var ce *cperr.Error
	if errors.As(rpcerr.FromStatus(err), &ce) {
		return ce.RetryAfter
	}
	return 0
}
