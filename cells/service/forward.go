package service

import (
	"context"
	"errors"
	"maps"
	"slices"

	"github.com/cellplane/cellplane/cells/validate"
	"github.com/cellplane/cellplane/internal/cperr"
	"github.com/cellplane/cellplane/internal/dial"
	"github.com/cellplane/cellplane/internal/rpcerr"
	"github.com/cellplane/cellplane/internal/tenantmd"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// forward runs local; when it fails with NOT_LEADER it either returns
// that error (the caller asked not to be forwarded, or the call already
// was) or runs remote against the leader. The leader's errors come back
// as cperr errors, so the rpcerr interceptor reproduces its status.
func forward[T any](ctx context.Context, c *core, local func() (T, error), remote func(context.Context, *grpc.ClientConn) (T, error)) (T, error) {
	var zero T
	out, err := local()
	if err == nil || !errors.Is(err, cperr.ErrNotLeader) {
		return out, err
	}
	addr, err := c.leaderAddr(ctx, err)
	if err != nil {
		return zero, err
	}
	cc, err := c.pool.Get(addr)
	if err != nil {
		if errors.Is(err, dial.ErrPoolClosed) {
			return zero, cperr.New(cperr.CellUnavailable, "node is shutting down")
		}
		return zero, cperr.New(cperr.CellUnavailable, "the cell leader's address is unusable")
	}
	c.log.Debug("forwarding to leader", "leader", addr)
	out, err = remote(forwardedContext(ctx), cc)
	if err != nil {
		return zero, c.fromLeader(addr, err)
	}
	return out, nil
}

// leaderAddr decides what to do with a NOT_LEADER error: it returns the
// leader's gRPC address to forward to, or the error to answer with.
func (c *core) leaderAddr(ctx context.Context, notLeader error) (string, error) {
	ce := &cperr.Error{Reason: cperr.NotLeader}
	errors.As(notLeader, &ce)
	leaderID, info := c.st.Leader()
	addr := info.GetGrpcAddr()
	if addr == "" {
		addr = ce.Metadata[cperr.MetaLeader]
	}
	if tenantmd.NoForward(ctx) || tenantmd.Forwarded(ctx) {
		// Answer with the hint, filling in what the store left out.
		out := &cperr.Error{Reason: cperr.NotLeader, Message: ce.Message, Metadata: maps.Clone(ce.Metadata), RetryAfter: ce.RetryAfter}
		if out.Message == "" {
			out.Message = "this node is not the leader"
		}
		if addr != "" && out.Metadata[cperr.MetaLeader] == "" {
			out.With(cperr.MetaLeader, addr)
		}
		if leaderID != "" && out.Metadata[cperr.MetaLeaderID] == "" {
			out.With(cperr.MetaLeaderID, leaderID)
		}
		return "", out
	}
	switch {
	case addr == "":
		return "", c.unavailable("no known leader")
	case leaderID == c.node.GetNodeId() || addr == c.node.GetGrpcAddr():
		// The store's idea of the leader is this node while it refuses to
		// lead: an election is in progress. Forwarding would loop.
		return "", c.unavailable("leadership is changing")
	case !c.leaderIsMember(leaderID, addr):
		// Never forward to an address that is not the registered address
		// of the Raft leader (finding C5, see registration.go).
		c.log.Warn("not forwarding to a leader address that is not a member's", "leader_id", leaderID, "leader_addr", addr)
		return "", c.unavailable("the cell leader's address is not a member's")
	}
	return addr, nil
}

// forwardedContext carries the caller's tenant, epoch, principal and
// origin (as this node's authoriser left them) to the leader, marked as
// forwarded so that the leader never forwards it again. The caller's
// deadline travels with ctx.
func forwardedContext(ctx context.Context) context.Context {
	in, _ := metadata.FromIncomingContext(ctx)
	out := metadata.MD{}
	for _, k := range []string{tenantmd.TenantKey, tenantmd.EpochKey, tenantmd.PrincipalKey, tenantmd.OriginKey, tenantmd.AdminKey, tenantmd.ScopesKey} {
		if v := in.Get(k); len(v) > 0 {
			out[k] = slices.Clone(v)
		}
	}
	out.Set(tenantmd.ForwardedKey, "true")
	return metadata.NewOutgoingContext(ctx, out)
}

// fromLeader converts an error of a forwarded call: cellplane statuses
// and context errors come back as they were; a transport failure is
// CELL_UNAVAILABLE; anything else is INTERNAL.
func (c *core) fromLeader(addr string, err error) error {
	e := rpcerr.FromStatus(err)
	var ce *cperr.Error
	if errors.As(e, &ce) || errors.Is(e, context.Canceled) || errors.Is(e, context.DeadlineExceeded) {
		return e
	}
	if rpcerr.IsTransport(err) {
		c.log.Warn("leader unreachable", "leader", addr, "err", err)
		return c.unavailable("the cell leader is unreachable")
	}
	c.log.Error("forwarded call failed", "leader", addr, "err", err)
	return cperr.New(cperr.Internal, "internal error")
}

// tenantCall is the shape of every tenant-scoped unary RPC: the tenant and
// epoch come from the metadata, the request is validated (nothing reaches
// the store otherwise), then it is served here or forwarded to the leader.
func tenantCall[Req, Resp any](ctx context.Context, c *core, req Req, check func(validate.Limits, Req) error,
	local func(tenant string, epoch uint64) (Resp, error), remote func(context.Context, *grpc.ClientConn) (Resp, error)) (Resp, error) {
	var zero Resp
	tenant, epoch, err := tenantmd.FromIncoming(ctx)
	if err != nil {
		return zero, err
	}
	if err := check(c.lim, req); err != nil {
		return zero, err
	}
	return forward(ctx, c, func() (Resp, error) { return local(tenant, epoch) }, remote)
}

// relayCursor runs a read forwarded to the leader and passes the read
// cursor of the leader's answer (tenantmd.TseqKey) on to this call's
// caller, so a forwarded read is as cacheable as a local one.
func relayCursor[T any](ctx context.Context, call func(grpc.CallOption) (T, error)) (T, error) {
	var md metadata.MD
	out, err := call(grpc.Header(&md))
	if err == nil {
		if tseq, at, exp, ok := tenantmd.ReadCursor(md); ok {
			tenantmd.SetReadCursor(ctx, tseq, at, exp)
		}
	}
	return out, err
}

// expireNanos is an expire_time as the read cursor's expiry (0: none).
func expireNanos(t *timestamppb.Timestamp) int64 {
	if t == nil {
		return 0
	}
	return t.AsTime().UnixNano()
}
