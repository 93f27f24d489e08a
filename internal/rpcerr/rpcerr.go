// Package rpcerr is the one table that maps cellplane errors (internal/cperr)
// to gRPC statuses and back. Servers map errors once, at their edge, with
// the interceptors here; clients turn statuses back into *cperr.Error with
// FromStatus so that errors.Is works across the wire.
//
// Every status carries a google.rpc.ErrorInfo{reason, domain:
// "cellplane.dev", metadata}, plus BadRequest field violations and RetryInfo
// where they fit. Context cancellation and deadlines pass through as
// CANCELED and DEADLINE_EXCEEDED. Anything unexpected becomes INTERNAL with a
// generic message: internals never reach a client, and codes.Unknown is
// never produced.
//
// The same table gives the HTTP status of a reason (HTTPStatus, for the MCP
// endpoints), and IsTransport is the one rule that a gRPC UNAVAILABLE
// without cellplane ErrorInfo is a transport failure (CELL_UNAVAILABLE).
package rpcerr

import (
	"context"
	"errors"
	"net/http"

	"github.com/cellplane/cellplane/internal/cperr"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/protoadapt"
	"google.golang.org/protobuf/types/known/durationpb"
)

// Domain is the ErrorInfo domain of every cellplane error.
const Domain = "cellplane.dev"

// codeOf is the error contract's reason → code table (docs/design.md §9).
var codeOf = map[cperr.Reason]codes.Code{
	cperr.InvalidArgument:       codes.InvalidArgument,
	cperr.TenantNotFound:        codes.NotFound,
	cperr.ContextNotFound:       codes.NotFound,
	cperr.KeyNotFound:           codes.NotFound,
	cperr.AlreadyExists:         codes.AlreadyExists,
	cperr.RevisionMismatch:      codes.Aborted,
	cperr.SequenceMismatch:      codes.Aborted,
	cperr.NotLeader:             codes.Unavailable,
	cperr.WrongCell:             codes.FailedPrecondition,
	cperr.StaleEpoch:            codes.FailedPrecondition,
	cperr.TenantMoving:          codes.Unavailable,
	cperr.CellUnavailable:       codes.Unavailable,
	cperr.AuthorityLeaseExpired: codes.Unavailable,
	cperr.StalenessExceeded:     codes.Unavailable,
	cperr.RateLimited:           codes.ResourceExhausted,
	cperr.QuotaExceeded:         codes.ResourceExhausted,
	cperr.Unauthenticated:       codes.Unauthenticated,
	cperr.PermissionDenied:      codes.PermissionDenied,
	cperr.Internal:              codes.Internal,

	cperr.RegionNotFound:          codes.NotFound,
	cperr.CellNotFound:            codes.NotFound,
	cperr.APIKeyNotFound:          codes.NotFound,
	cperr.NoCapacity:              codes.FailedPrecondition,
	cperr.CellNotActive:           codes.FailedPrecondition,
	cperr.TenantBusy:              codes.FailedPrecondition,
	cperr.ControlPlaneUnavailable: codes.Unavailable,

	cperr.ChangesTrimmed:     codes.FailedPrecondition,
	cperr.MoveNotFound:       codes.NotFound,
	cperr.FailoverNotFound:   codes.NotFound,
	cperr.MoveNotCancellable: codes.FailedPrecondition,
	cperr.NoStandby:          codes.FailedPrecondition,
	cperr.CursorExpired:      codes.OutOfRange,

	cperr.RegionNotEmpty:    codes.FailedPrecondition,
	cperr.CellNotEmpty:      codes.FailedPrecondition,
	cperr.DeletionProtected: codes.FailedPrecondition,
	cperr.RequestIDReused:   codes.InvalidArgument,

	cperr.ReplicationEventRejected: codes.InvalidArgument,
	cperr.CredentialsStale:         codes.Unavailable,

	cperr.StorageFull: codes.ResourceExhausted,
}

// Code returns the gRPC code of a reason (INTERNAL for an unknown one).
func Code(r cperr.Reason) codes.Code {
	if c, ok := codeOf[r]; ok {
		return c
	}
	return codes.Internal
}

// httpOf maps a gRPC code to the HTTP status of the same meaning (the
// mapping of google.rpc.Code), for the reasons' HTTP table.
var httpOf = map[codes.Code]int{
	codes.InvalidArgument:    http.StatusBadRequest,
	codes.NotFound:           http.StatusNotFound,
	codes.AlreadyExists:      http.StatusConflict,
	codes.Aborted:            http.StatusConflict,
	codes.FailedPrecondition: http.StatusBadRequest,
	codes.OutOfRange:         http.StatusBadRequest,
	codes.Unavailable:        http.StatusServiceUnavailable,
	codes.ResourceExhausted:  http.StatusTooManyRequests,
	codes.Unauthenticated:    http.StatusUnauthorized,
	codes.PermissionDenied:   http.StatusForbidden,
	codes.Internal:           http.StatusInternalServerError,
}

// HTTPStatus returns the HTTP status of a reason (for the MCP endpoints),
// derived from its gRPC code so that the two tables cannot disagree: 500
// for an unknown reason.
func HTTPStatus(r cperr.Reason) int {
	if s, ok := httpOf[Code(r)]; ok {
		return s
	}
	return http.StatusInternalServerError
}

// IsTransport reports a transport failure: a gRPC UNAVAILABLE that carries
// no cellplane ErrorInfo, so no cellplane server answered (the connection
// could not be made or broke). Callers report it as CELL_UNAVAILABLE; this
// is the one place that says so.
func IsTransport(err error) bool {
	s, ok := status.FromError(err)
	if !ok || s.Code() != codes.Unavailable {
		return false
	}
	for _, d := range s.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok && info.GetDomain() == Domain {
			return false
		}
	}
	return true
}

// ToStatus converts err to a gRPC status error. A status error that came
// from another cellplane server (a forwarded call) is passed through as is.
func ToStatus(err error) error {
	if err == nil {
		return nil
	}
	var ce *cperr.Error
	switch {
	case errors.As(err, &ce):
		return statusOf(ce).Err()
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, "request canceled")
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, "deadline exceeded")
	}
	if s, ok := status.FromError(err); ok && s.Code() != codes.Unknown {
		return s.Err()
	}
	return statusOf(&cperr.Error{Reason: cperr.Internal, Message: "internal error"}).Err()
}

func statusOf(e *cperr.Error) *status.Status {
	msg := e.Message
	if msg == "" {
		msg = string(e.Reason)
	}
	st := status.New(Code(e.Reason), msg)
	ds := []protoadapt.MessageV1{&errdetails.ErrorInfo{Reason: string(e.Reason), Domain: Domain, Metadata: e.Metadata}}
	if len(e.Violations) > 0 {
		br := &errdetails.BadRequest{}
		for _, v := range e.Violations {
			br.FieldViolations = append(br.FieldViolations, &errdetails.BadRequest_FieldViolation{Field: v.Field, Description: v.Description})
		}
		ds = append(ds, br)
	}
	if e.RetryAfter > 0 {
		ds = append(ds, &errdetails.RetryInfo{RetryDelay: durationpb.New(e.RetryAfter)})
	}
	if v := quotaViolation(e, msg); v != nil {
		ds = append(ds, &errdetails.QuotaFailure{Violations: []*errdetails.QuotaFailure_Violation{v}})
	}
	withDetails, err := st.WithDetails(ds...)
	if err != nil {
		return st
	}
	return withDetails
}

// quotaViolation is the google.rpc.QuotaFailure violation of a quota or
// capacity error: the subject is "tenant:<id>" (QUOTA_EXCEEDED,
// RATE_LIMITED) or "node:<id>" (STORAGE_FULL), the description the message
// (it names the limit and the figures).
func quotaViolation(e *cperr.Error, msg string) *errdetails.QuotaFailure_Violation {
	switch e.Reason {
	case cperr.QuotaExceeded, cperr.RateLimited:
		subject := "tenant"
		if t := e.Metadata[cperr.MetaTenant]; t != "" {
			subject = "tenant:" + t
		}
		return &errdetails.QuotaFailure_Violation{Subject: subject, Description: msg}
	case cperr.StorageFull:
		subject := "node"
		if n := e.Metadata[cperr.MetaNode]; n != "" {
			subject = "node:" + n
		}
		return &errdetails.QuotaFailure_Violation{Subject: subject, Description: msg}
	}
	return nil
}

// FromStatus turns a status error from a cellplane server back into a
// *cperr.Error (reason, message, metadata, violations, retry delay). Errors
// without cellplane ErrorInfo are returned unchanged; CANCELED and
// DEADLINE_EXCEEDED become the context errors.
func FromStatus(err error) error {
	if err == nil {
		return nil
	}
	s, ok := status.FromError(err)
	if !ok {
		return err
	}
	switch s.Code() {
	case codes.Canceled:
		return context.Canceled
	case codes.DeadlineExceeded:
		return context.DeadlineExceeded
	}
	var out *cperr.Error
	for _, d := range s.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok && info.GetDomain() == Domain {
			out = &cperr.Error{Reason: cperr.Reason(info.GetReason()), Message: s.Message(), Metadata: info.GetMetadata()}
		}
	}
	if out == nil {
		return err
	}
	for _, d := range s.Details() {
		switch d := d.(type) {
		case *errdetails.BadRequest:
			for _, v := range d.GetFieldViolations() {
				out.Violations = append(out.Violations, cperr.FieldViolation{Field: v.GetField(), Description: v.GetDescription()})
			}
		case *errdetails.RetryInfo:
			out.RetryAfter = d.GetRetryDelay().AsDuration()
		}
	}
	return out
}

// UnaryServerInterceptor maps handler errors with ToStatus.
func UnaryServerInterceptor() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		resp, err := handler(ctx, req)
		if err != nil {
			return nil, ToStatus(err)
		}
		return resp, nil
	}
}

// StreamServerInterceptor maps handler errors with ToStatus.
func StreamServerInterceptor() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		return ToStatus(handler(srv, ss))
	}
}
