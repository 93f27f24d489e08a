// Package forward is the router's transparent gRPC forwarding of
// tenant-routed services (today cellplane.context.v1.ContextService) to the
// cell that owns the tenant (docs/design.md §6). Calls travel as raw frames: the
// forwarder never decodes a payload, and it needs no change when the
// service's messages change. It does not even copy one: a frame keeps the
// reference-counted buffers gRPC read it into and hands them to the other
// connection (Frame, codecV2).
//
// Wiring:
//
//	fwd, err := forward.New(cfg, resolver, auth.TenantOf)
//	srv := grpc.NewServer(forward.ServerOption(), grpc.UnknownServiceHandler(fwd.Handler()),
//		grpc.MaxRecvMsgSize(cfg.MaxMsgBytes))
//	reg.MustRegister(fwd.Collectors()...)
//	defer fwd.Close()
//
// ServerOption forces the forwarder's codec (the zero-copy CodecV2 form of
// Codec) on the router's server: it passes *Frame values through and
// encodes anything else as protobuf, so the router's own services
// (RouterService, health) work next to the forwarded ones. No codec is
// registered globally. The per-call metrics are resolved once per method
// (and per cell and code on first use), so a call does no label lookup.
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
//   - WRONG_CELL / STALE_EPOCH: retry with the table's route if it changed
//     since the call started; otherwise Resolver.Refresh the tenant and
//     retry once with the new target (a second one is returned to the
//     caller).
//   - TENANT_MOVING: keep retrying with backoff for up to MovingHold, then
//     UNAVAILABLE TENANT_MOVING with RetryInfo.
//   - WRONG_CELL, STALE_EPOCH or TENANT_MOVING while the tenant's placement
//     says it is cutting over (looked up again, or re-read by Refresh when
//     the table had not seen the cutover yet): hold the call (below).
//   - CELL_UNAVAILABLE, AUTHORITY_LEASE_EXPIRED, STALENESS_EXCEEDED or a
//     connection failure: try the next member (then re-resolve and start
//     over).
//   - Anything else is the answer (RATE_LIMITED and the like included: the
//     client waits those out).
//
// The classes are internal/retry's (retry.ClassOf); so is the rule of what
// a write may retry (below).
//
// The first MaxRetries retries are immediate (they follow new information);
// later ones back off exponentially with full jitter (RetryBackoff up to
// MaxRetryBackoff),
// and every trip through all members backs off, so that a call rides out a
// leader election. Retries stop at FailoverHold after the first failure
// and never go past the call's deadline: a backoff that would end after the
// deadline is not started.
//
// # Cutovers: a pause, not errors
//
// A move or failover marks the placement cutting_over right before it
// fences the old owner, and clears the flag in the same etcd transaction
// that names the new owner at epoch + 1. In between, the old owner is
// FENCED and the new one STANDBY: both refuse the tenant's calls with
// WRONG_CELL. So a call whose Target says CuttingOver is not sent at all:
// it is held in Resolver.WaitChange until the placement changes, then
// forwarded to the new owner (with the new epoch). A call that was already
// refused because the table lagged (the router had not seen the flag yet)
// finds the flag through Refresh and is held the same way. The hold costs
// no etcd traffic: the table's watch releases every held call of the
// tenant at once. A hold is bounded by MovingHold (shared with the
// TENANT_MOVING retries of the call) and by the call's deadline; when
// MovingHold runs out the call fails with UNAVAILABLE TENANT_MOVING and
// RetryInfo (UnavailableRetryAfter). The hold happens before any frame is
// sent, so it is the same for every method, streaming ones included.
// Metrics: cellplane_router_forward_held_total{trigger} (cutting_over: the
// route said so; refused: a cell refused the call during the cutover) and
// cellplane_router_forward_hold_duration_seconds{outcome} (released,
// expired, canceled, gone). Holds are logged at debug.
//
// # Backend connections
//
// The forwarder keeps one *grpc.ClientConn per backend address (a pool
// keyed by address only), opened on first use with Config.Dial (mutual
// TLS with the router's identity when the router has one) and shared by
// every call and stream to that address; a connection idle for
// IdleConnTimeout is closed. The TLS handshake is therefore paid once per
// backend, not per call. cellplane_router_backend_handshakes_total{result}
// counts the handshakes (ok, error): under steady load it stays at one
// per backend, and a count that rises with the calls means connections
// are being re-established (a test holds it at one per backend across
// many concurrent calls).
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
// A write without a request id is therefore not retried after an
// ambiguous failure (retry.Mutating): the forwarder walks the frame's
// top-level fields to see whether request_id is set, and decodes nothing
// else. Reads are always safe to retry. Across a cutover the same holds: the new owner
// applied the old one's changes up to the fence, request ids included, so
// a write retried there after an ambiguous answer from the old owner is
// still applied once.
package forward
