package tenantmd

import (
	"context"
	"strconv"
	"strings"

	"github.com/cellplane/cellplane/internal/cperr"
	"github.com/cellplane/cellplane/internal/ids"
	"google.golang.org/grpc/metadata"
)

// Metadata keys (gRPC metadata keys are lower case).
const (
	// TenantKey names the tenant of a call. Required on ContextService.
	TenantKey = "x-cellplane-tenant"
	// EpochKey pins a call to an ownership epoch of the tenant (decimal;
	// absent or 0 means "current").
	EpochKey = "x-cellplane-epoch"
	// NoForwardKey asks a follower to answer NOT_LEADER (with the leader's
	// address) instead of forwarding the call to the leader. The router
	// sets it: it prefers to follow the hint itself.
	NoForwardKey = "x-cellplane-no-forward"
	// ForwardedKey marks a call forwarded by a cell member. A forwarded
	// call is never forwarded again, so forwarding cannot loop.
	ForwardedKey = "x-cellplane-forwarded"
	// TokenKey carries a router-minted tenant token (internal/tenanttoken)
	// on the smart client's direct calls to a cell serving mutual TLS.
	TokenKey = "x-cellplane-token"
	// PrincipalKey names who the call is made for inside its tenant (an
	// API key's principal, a JWT's subject), as authenticated by the edge
	// (router, MCP worker) or bound by a tenant token. Only a caller the
	// cell trusts to have authenticated it may set it: the cell's
	// authoriser replaces it on token calls, and the router never passes a
	// client's own value on.
	PrincipalKey = "x-cellplane-principal"
	// OriginKey names the surface a mutation came through, for the audit
	// record: "grpc:<method>" or "mcp:<tool>".
	OriginKey = "x-cellplane-origin"
	// AdminKey marks a call whose credential the edge found to hold the
	// tenant admin scope ("true"), for the cell's admin-only tenant
	// methods (ContextService.ReadAudit). Set only by the router after
	// authentication; a client's own value is dropped, and the cell's
	// authoriser drops it on tenant-token calls.
	AdminKey = "x-cellplane-admin"
	// ScopesKey carries the scopes the edge (router, MCP worker) found the
	// caller's credential to hold, space-separated (auth.Scopes.String),
	// for cell methods whose answer depends on more than their own scope
	// (WatchChanges sends memory changes only to memory:read). Set only by
	// an edge after authentication; a client's own value is dropped, and
	// the cell's authoriser sets it to auth.DefaultScopes on tenant-token
	// calls (a token is minted only for credentials holding those). Absent on a
	// call from a component's own identity (a router's or worker's cache):
	// such a caller is not limited by scopes.
	ScopesKey = "x-cellplane-scopes"
)

// CallerScopes returns the ScopesKey value of an incoming call; ok is
// false when it is absent (or given more than once, which no edge does).
func CallerScopes(ctx context.Context) (scopes string, ok bool) {
	md, _ := metadata.FromIncomingContext(ctx)
	v := md.Get(ScopesKey)
	if len(v) != 1 {
		return "", false
	}
	return v[0], true
}

// WithScopes returns ctx with ScopesKey set on outgoing metadata to
// scopes (space-separated). Only an edge that authenticated the caller
// calls it.
func WithScopes(ctx context.Context, scopes string) context.Context {
	md, _ := metadata.FromOutgoingContext(ctx)
	md = md.Copy()
	md.Set(ScopesKey, scopes)
	return metadata.NewOutgoingContext(ctx, md)
}

// IsAdmin reports whether an incoming call carries AdminKey "true" once.
func IsAdmin(ctx context.Context) bool {
	md, _ := metadata.FromIncomingContext(ctx)
	return single(md, AdminKey) == "true"
}

// Caller returns the principal and origin of an incoming call ("" when
// absent or given more than once).
func Caller(ctx context.Context) (principal, origin string) {
	md, _ := metadata.FromIncomingContext(ctx)
	return single(md, PrincipalKey), single(md, OriginKey)
}

func single(md metadata.MD, key string) string {
	if vs := md.Get(key); len(vs) == 1 {
		return vs[0]
	}
	return ""
}

// MaxTenantLen bounds tenant ids; the rule is package ids'.
const MaxTenantLen = ids.MaxLen

// FromIncoming returns the tenant and epoch of an incoming call. The
// tenant is required and must be a valid id; the epoch is optional. Both
// must be given at most once. Errors are cperr INVALID_ARGUMENT with a
// field violation naming the metadata key.
func FromIncoming(ctx context.Context) (tenant string, epoch uint64, err error) {
	md, _ := metadata.FromIncomingContext(ctx)
	return Parse(md)
}

// Parse is FromIncoming on metadata already extracted.
func Parse(md metadata.MD) (tenant string, epoch uint64, err error) {
	var vs []cperr.FieldViolation
	ts := md.Get(TenantKey)
	switch {
	case len(ts) == 0 || (len(ts) == 1 && ts[0] == ""):
		vs = append(vs, cperr.FieldViolation{Field: TenantKey, Description: "metadata is required; " + ids.Rule(MaxTenantLen)})
	case len(ts) > 1:
		vs = append(vs, cperr.FieldViolation{Field: TenantKey, Description: "metadata must be given once"})
	default:
		if v, bad := ids.Violation(TenantKey, ts[0], MaxTenantLen); bad {
			vs = append(vs, v)
		} else {
			tenant = ts[0]
		}
	}
	switch es := md.Get(EpochKey); {
	case len(es) > 1:
		vs = append(vs, cperr.FieldViolation{Field: EpochKey, Description: "metadata must be given once"})
	case len(es) == 1:
		e, perr := parseEpoch(es[0])
		if perr != nil {
			vs = append(vs, cperr.FieldViolation{Field: EpochKey, Description: "must be a decimal unsigned 64-bit integer"})
		}
		epoch = e
	}
	if len(vs) > 0 {
		return "", 0, cperr.Invalid(vs...)
	}
	return tenant, epoch, nil
}

// parseEpoch accepts plain decimal digits only (no sign, no spaces).
func parseEpoch(s string) (uint64, error) {
	if s == "" || strings.TrimLeft(s, "0123456789") != "" {
		return 0, strconv.ErrSyntax
	}
	return strconv.ParseUint(s, 10, 64)
}

// NoForward reports whether the caller asked not to be forwarded.
func NoForward(ctx context.Context) bool { return flag(ctx, NoForwardKey) }

// Forwarded reports whether the call was forwarded by a cell member.
func Forwarded(ctx context.Context) bool { return flag(ctx, ForwardedKey) }

// flag is true when the key is present with a value other than "",
// "0" or "false": presence is what matters, and a sender cannot be
// expected to agree on one spelling of true.
func flag(ctx context.Context, key string) bool {
	md, _ := metadata.FromIncomingContext(ctx)
	for _, v := range md.Get(key) {
		switch strings.ToLower(strings.TrimSpace(v)) {
		case "", "0", "false":
		default:
			return true
		}
	}
	return false
}

// Outgoing returns ctx with the tenant (and the epoch, when not 0) set on
// outgoing metadata, replacing any earlier values of those keys.
func Outgoing(ctx context.Context, tenant string, epoch uint64) context.Context {
	md, _ := metadata.FromOutgoingContext(ctx)
	md = md.Copy()
	md.Set(TenantKey, tenant)
	if epoch != 0 {
		md.Set(EpochKey, strconv.FormatUint(epoch, 10))
	} else {
		md.Delete(EpochKey)
	}
	return metadata.NewOutgoingContext(ctx, md)
}

// WithCaller returns ctx with the principal and origin set on outgoing
// metadata (an empty value removes the key). Only an edge that
// authenticated the principal (router, MCP worker) calls it.
func WithCaller(ctx context.Context, principal, origin string) context.Context {
	md, _ := metadata.FromOutgoingContext(ctx)
	md = md.Copy()
	for k, v := range map[string]string{PrincipalKey: principal, OriginKey: origin} {
		if v == "" {
			md.Delete(k)
		} else {
			md.Set(k, v)
		}
	}
	return metadata.NewOutgoingContext(ctx, md)
}

// WithNoForward returns ctx with NoForwardKey set on outgoing metadata.
func WithNoForward(ctx context.Context) context.Context {
	return metadata.AppendToOutgoingContext(ctx, NoForwardKey, "true")
}

// WithForwarded returns ctx with ForwardedKey set on outgoing metadata.
func WithForwarded(ctx context.Context) context.Context {
	return metadata.AppendToOutgoingContext(ctx, ForwardedKey, "true")
}
