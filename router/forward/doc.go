// Package forward is the router's transparent gRPC forwarding of
// tenant-routed services (today cellplane.context.v1.ContextService) to the
// cell that owns the tenant (DESIGN §6). Calls travel as raw frames: the
// forwarder never decodes a payload, so it costs a copy, not a parse, and
// it needs no change when the service's messages change.
//
// Wiring:
//
//	fwd, err := forward.New(cfg, resolver, auth.TenantOf)
//	srv := grpc.NewServer(forward.ServerOption(), grpc.UnknownServiceHandler(fwd.Handler()),
//		grpc.MaxRecvMsgSize(cfg.MaxMsgBytes))
//	reg.MustRegister(fwd.Collectors()...)
//	defer fwd.Close()
//
// ServerOption forces Codec on the router's server: it passes *Frame values
// through and encodes anything else as protobuf, so the router's own
// services (RouterService, health) work next to the forwarded ones. No
// codec is registered globally.
//
// # Per call
//
// The tenant comes from tenantOf (the auth layer; its error goes back as
// is). An unknown tenant is NOT_FOUND TENANT_NOT_FOUND. The caller's
// metadata is forwarded minus credentials ("authorization", "x-api-key")
// and transport headers, with x-cellplane-tenant set to the authorised
// tenant, x-cellplane-epoch set to the route's epoch (a client's own epoch
// is replaced), and x-cellplane-no-forward set, so that a member that is
// not the leader answers NOT_LEADER with the leader's address and the
// forwarder follows the hint itself. A call without a deadline gets
// Config.DefaultTimeout; deadlines and cancellation reach the cell through
// the backend call's context. Backend headers and trailers come back to the
// caller, and backend statuses pass through with their details (ErrorInfo,
// RetryInfo, ...). A transport failure of the backend connection is
// UNAVAILABLE CELL_UNAVAILABLE with RetryInfo.
//
// # Routing: leader unless the client says STALE
//
// Writes and LINEARIZABLE / LEADER reads go to the cell leader. Since the
// payload is not decoded, ReadOptions.consistency is invisible; a client
// that sends a STALE read adds the metadata hint
//
//	x-cellplane-consistency: stale
//
// and the forwarder sends the call to any healthy member (round-robin over
// Target.Members). The hint is only a routing preference: if it is put on a
// call a follower cannot serve, the follower answers NOT_LEADER and the call
// goes to the leader.
//
// # Retries
//
// A call with one request frame (unary, and server-streaming like Watch) is
// retried only while nothing of the response has reached the client; the
// request frame stays in memory to be sent again. After the first response
// frame (a Watch batch) the stream is relayed and a failure ends the call:
// Watch clients resume from the last seq they received. Calls with a client
// stream are proxied without retries. The rules:
//
//   - NOT_LEADER: retry at the hinted leader (metadata "leader"), which is
//     also remembered for the cell until the routing table names another
//     leader; without a hint, try the next member.
//   - WRONG_CELL / STALE_EPOCH: Resolver.Refresh the tenant and retry once
//     with the new target (a second one is returned to the caller).
//   - TENANT_MOVING: keep retrying with backoff for up to MovingHold, then
//     UNAVAILABLE TENANT_MOVING with RetryInfo.
//   - CELL_UNAVAILABLE, AUTHORITY_LEASE_EXPIRED or a connection failure:
//     try the next member (then re-resolve and start over).
//   - Anything else is the answer.
//
// The first MaxRetries retries are immediate (they follow new information);
// later ones back off exponentially (RetryBackoff up to MaxRetryBackoff),
// and every trip through all members backs off, so that a call rides out a
// leader election. Retries stop at FailoverHold after the first failure
// and never go past the call's deadline: a backoff that would end after the
// deadline is not started.
//
// # Why retrying is safe
//
// Most retried answers (NOT_LEADER, WRONG_CELL, STALE_EPOCH, TENANT_MOVING)
// are refusals: the cell did not apply the call. A connection failure or
// CELL_UNAVAILABLE after the request was sent is ambiguous, the write may
// have been applied. Writes of ContextService (CreateContext, Append,
// DeleteContext, PutMemory, DeleteMemory) carry a request_id that the cell
// deduplicates (a retried request id returns the first result), so
// re-sending the same frame, byte for byte, applies it at most once.
// Clients must set request ids for that guarantee; a write without one may
// be applied twice when a retry follows an ambiguous failure. Reads are
// always safe to retry.
package forward
