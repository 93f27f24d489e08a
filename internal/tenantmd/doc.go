// Package tenantmd is the gRPC metadata contract of cellplane's data API:
// which tenant a call is for, the ownership epoch it is pinned to, and the
// flags that control forwarding between the members of a cell.
//
// The tenant is never taken from a request payload. Servers read it (and
// the optional epoch) with FromIncoming; clients, the router and
// forwarding members set them with Outgoing:
//
//	// client side
//	ctx = tenantmd.Outgoing(ctx, "acme", 0)
//	ctx = tenantmd.WithNoForward(ctx) // answer NOT_LEADER instead of forwarding
//
//	// server side
//	tenant, epoch, err := tenantmd.FromIncoming(ctx) // err: cperr INVALID_ARGUMENT
//	if tenantmd.Forwarded(ctx) || tenantmd.NoForward(ctx) { ... }
package tenantmd
