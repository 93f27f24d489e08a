package rpcerr

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/cellplane/cellplane/internal/cperr"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// The error contract, docs/design.md §9: every reason and its code.
func TestCodeTable(t *testing.T) {
	tests := []struct {
		reason cperr.Reason
		code   codes.Code
	}{
		{cperr.InvalidArgument, codes.InvalidArgument},
		{cperr.TenantNotFound, codes.NotFound},
		{cperr.ContextNotFound, codes.NotFound},
		{cperr.KeyNotFound, codes.NotFound},
		{cperr.AlreadyExists, codes.AlreadyExists},
		{cperr.RevisionMismatch, codes.Aborted},
		{cperr.SequenceMismatch, codes.Aborted},
		{cperr.NotLeader, codes.Unavailable},
		{cperr.WrongCell, codes.FailedPrecondition},
		{cperr.StaleEpoch, codes.FailedPrecondition},
		{cperr.TenantMoving, codes.Unavailable},
		{cperr.CellUnavailable, codes.Unavailable},
		{cperr.AuthorityLeaseExpired, codes.Unavailable},
		{cperr.StalenessExceeded, codes.Unavailable},
		{cperr.RateLimited, codes.ResourceExhausted},
		{cperr.QuotaExceeded, codes.ResourceExhausted},
		{cperr.Unauthenticated, codes.Unauthenticated},
		{cperr.PermissionDenied, codes.PermissionDenied},
		{cperr.Internal, codes.Internal},
		{cperr.RegionNotFound, codes.NotFound},
		{cperr.CellNotFound, codes.NotFound},
		{cperr.APIKeyNotFound, codes.NotFound},
		{cperr.NoCapacity, codes.FailedPrecondition},
		{cperr.CellNotActive, codes.FailedPrecondition},
		{cperr.TenantBusy, codes.FailedPrecondition},
		{cperr.ControlPlaneUnavailable, codes.Unavailable},
		{cperr.ChangesTrimmed, codes.FailedPrecondition},
		{cperr.MoveNotFound, codes.NotFound},
		{cperr.FailoverNotFound, codes.NotFound},
		{cperr.MoveNotCancellable, codes.FailedPrecondition},
		{cperr.NoStandby, codes.FailedPrecondition},
		{cperr.CursorExpired, codes.OutOfRange},
		{cperr.RegionNotEmpty, codes.FailedPrecondition},
		{cperr.CellNotEmpty, codes.FailedPrecondition},
		{cperr.DeletionProtected, codes.FailedPrecondition},
		{cperr.RequestIDReused, codes.InvalidArgument},
		{cperr.ReplicationEventRejected, codes.InvalidArgument},
		{cperr.CredentialsStale, codes.Unavailable},
		{cperr.StorageFull, codes.ResourceExhausted},
		{"SOMETHING_NEW", codes.Internal},
	}
	if len(tests)-1 != len(codeOf) {
		t.Fatalf("the table has %d reasons, this test %d: keep them in step", len(codeOf), len(tests)-1)
	}
	for _, tc := range tests {
		t.Run(string(tc.reason), func(t *testing.T) {
			err := ToStatus(cperr.New(tc.reason, "m"))
			st := status.Convert(err)
			if st.Code() != tc.code {
				t.Fatalf("code = %v, want %v", st.Code(), tc.code)
			}
			info := errorInfo(t, st)
			if info.GetReason() != string(tc.reason) || info.GetDomain() != Domain {
				t.Fatalf("ErrorInfo = %v", info)
			}
			back := FromStatus(err)
			if !errors.Is(back, &cperr.Error{Reason: tc.reason}) {
				t.Fatalf("FromStatus(%v) = %v, not %s", err, back, tc.reason)
			}
		})
	}
}

func errorInfo(t *testing.T, st *status.Status) *errdetails.ErrorInfo {
	t.Helper()
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok {
			return info
		}
	}
	t.Fatalf("no ErrorInfo in %v", st)
	return nil
}

// Details survive the round trip: metadata, field violations, retry delay.
func TestDetailsRoundTrip(t *testing.T) {
	in := cperr.Invalid(
		cperr.FieldViolation{Field: "entries[3].content", Description: "too large"},
		cperr.FieldViolation{Field: "context_id", Description: "required"},
	)
	in.With(cperr.MetaTenant, "acme").WithRetryAfter(250 * time.Millisecond)
	err := ToStatus(in)
	st := status.Convert(err)
	var br *errdetails.BadRequest
	var ri *errdetails.RetryInfo
	for _, d := range st.Details() {
		switch d := d.(type) {
		case *errdetails.BadRequest:
			br = d
		case *errdetails.RetryInfo:
			ri = d
		}
	}
	if br == nil || len(br.GetFieldViolations()) != 2 || br.GetFieldViolations()[0].GetField() != "entries[3].content" {
		t.Fatalf("BadRequest = %v", br)
	}
	if ri == nil || ri.GetRetryDelay().AsDuration() != 250*time.Millisecond {
		t.Fatalf("RetryInfo = %v", ri)
	}
	var out *cperr.Error
	if !errors.As(FromStatus(err), &out) {
		t.Fatalf("FromStatus did not give a *cperr.Error")
	}
	if out.Metadata[cperr.MetaTenant] != "acme" || len(out.Violations) != 2 || out.RetryAfter != 250*time.Millisecond || out.Message != in.Message {
		t.Fatalf("round trip = %+v, want %+v", out, in)
	}
}

func TestQuotaFailureOnResourceErrors(t *testing.T) {
	st := status.Convert(ToStatus(cperr.New(cperr.RateLimited, "slow down").With(cperr.MetaTenant, "acme").WithRetryAfter(time.Second)))
	found := false
	for _, d := range st.Details() {
		if q, ok := d.(*errdetails.QuotaFailure); ok && q.GetViolations()[0].GetSubject() == "tenant:acme" {
			found = true
		}
	}
	if !found {
		t.Fatalf("no QuotaFailure naming the tenant in %v", st.Details())
	}
}

// What is not a cellplane error: context errors pass through as their
// codes; anything else is INTERNAL with a message that reveals nothing.
func TestForeignErrors(t *testing.T) {
	tests := []struct {
		name    string
		err     error
		code    codes.Code
		message string
	}{
		{"canceled", context.Canceled, codes.Canceled, "request canceled"},
		{"deadline", fmt.Errorf("waiting: %w", context.DeadlineExceeded), codes.DeadlineExceeded, "deadline exceeded"},
		{"plain", errors.New("pebble: /var/lib/secret/path is corrupt"), codes.Internal, "internal error"},
		{"wrapped cperr", fmt.Errorf("ctx: %w", cperr.New(cperr.KeyNotFound, "memory key not found")), codes.NotFound, "memory key not found"},
		{"status passes", status.Error(codes.Unavailable, "downstream"), codes.Unavailable, "downstream"},
		{"unknown status", status.Error(codes.Unknown, "boom /etc/x"), codes.Internal, "internal error"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			st := status.Convert(ToStatus(tc.err))
			if st.Code() != tc.code || st.Message() != tc.message {
				t.Fatalf("got %v %q, want %v %q", st.Code(), st.Message(), tc.code, tc.message)
			}
		})
	}
	if ToStatus(nil) != nil || FromStatus(nil) != nil {
		t.Fatal("nil must map to nil")
	}
	if !errors.Is(FromStatus(status.Error(codes.Canceled, "x")), context.Canceled) ||
		!errors.Is(FromStatus(status.Error(codes.DeadlineExceeded, "x")), context.DeadlineExceeded) {
		t.Fatal("CANCELED / DEADLINE_EXCEEDED must come back as context errors")
	}
	plain := status.Error(codes.Unavailable, "no details")
	if FromStatus(plain) != plain {
		t.Fatal("a status without cellplane ErrorInfo must be returned unchanged")
	}
}

// TestEveryReasonHasACode: the gRPC table (and the HTTP statuses derived
// from it) covers the whole error contract.
func TestEveryReasonHasACode(t *testing.T) {
	for _, r := range cperr.Reasons() {
		if _, ok := codeOf[r]; !ok {
			t.Errorf("reason %s has no gRPC code", r)
		}
		if _, ok := httpOf[Code(r)]; !ok {
			t.Errorf("reason %s (code %s) has no HTTP status", r, Code(r))
		}
	}
}

func TestHTTPStatus(t *testing.T) {
	tests := []struct {
		reason cperr.Reason
		want   int
	}{
		{cperr.Unauthenticated, http.StatusUnauthorized},
		{cperr.PermissionDenied, http.StatusForbidden},
		{cperr.TenantNotFound, http.StatusNotFound},
		{cperr.RateLimited, http.StatusTooManyRequests},
		{cperr.QuotaExceeded, http.StatusTooManyRequests},
		{cperr.InvalidArgument, http.StatusBadRequest},
		{cperr.CellUnavailable, http.StatusServiceUnavailable},
		{cperr.TenantMoving, http.StatusServiceUnavailable},
		{cperr.NotLeader, http.StatusServiceUnavailable},
		{cperr.AuthorityLeaseExpired, http.StatusServiceUnavailable},
		{cperr.AlreadyExists, http.StatusConflict},
		{cperr.Internal, http.StatusInternalServerError},
		{"NO_SUCH_REASON", http.StatusInternalServerError},
	}
	for _, tc := range tests {
		if got := HTTPStatus(tc.reason); got != tc.want {
			t.Errorf("HTTPStatus(%s) = %d, want %d", tc.reason, got, tc.want)
		}
	}
}

func TestIsTransport(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{"nil", nil, false},
		{"connection refused", status.Error(codes.Unavailable, "connection refused"), true},
		{"wrapped", fmt.Errorf("call: %w", status.Error(codes.Unavailable, "transport is closing")), true},
		{"cellplane CELL_UNAVAILABLE", ToStatus(cperr.New(cperr.CellUnavailable, "down")), false},
		{"cellplane NOT_LEADER", ToStatus(cperr.New(cperr.NotLeader, "follower")), false},
		{"other code", status.Error(codes.Internal, "boom"), false},
		{"domain error", cperr.New(cperr.CellUnavailable, "down"), false},
		{"plain error", errors.New("x"), false},
		{"deadline", context.DeadlineExceeded, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := IsTransport(tc.err); got != tc.want {
				t.Fatalf("IsTransport(%v) = %v, want %v", tc.err, got, tc.want)
			}
		})
	}
}
