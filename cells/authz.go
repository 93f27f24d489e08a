package cells

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"

	"github.com/cellplane/cellplane/internal/auth"
	"github.com/cellplane/cellplane/internal/cperr"
	"github.com/cellplane/cellplane/internal/pki"
	"github.com/cellplane/cellplane/internal/ratelimit"
	"github.com/cellplane/cellplane/internal/tenantmd"
	"github.com/cellplane/cellplane/internal/tenanttoken"
	cellv1 "github.com/cellplane/cellplane/proto/cellplane/cell/v1"
	contextv1 "github.com/cellplane/cellplane/proto/cellplane/context/v1"
	replicationv1 "github.com/cellplane/cellplane/proto/cellplane/replication/v1"
)

// Access says who may call one method of a cell node's gRPC server
// (findings C1 and C2 in docs/security.md). It is enforced only when the node
// serves mutual TLS (Config.TLS): without TLS there is no identity.
type Access struct {
	// Kinds may call it: any identity of these kinds of the cluster.
	Kinds []pki.Kind
	// CellNodes: the nodes of this node's cell (same region and cell) may
	// call it.
	CellNodes bool
	// SelfOnly restricts CellNodes to the node the request names
	// (NodeInfo.node_id of AddVoter, AddNonVoter, RegisterNode): a node
	// joins and registers itself, never another node.
	SelfOnly bool
	// Operators are the operator roles that may call it.
	Operators []pki.Role
	// Forwardable: a node of this cell forwarding the call to its leader
	// (x-cellplane-forwarded) may call it. The forwarding node authorised
	// the original caller against this same table before forwarding.
	Forwardable bool
	// AnyIdentity: every identity of the cluster may call it (health).
	AnyIdentity bool
	// Token: a caller without a certificate, or with a client/<tenant>
	// certificate, may call it with a valid router-minted tenant token for
	// this cell (x-cellplane-token; internal/tenanttoken), for the token's
	// tenant and epoch only (the smart client's direct path).
	Token bool
}

// The accesses of the table.
var (
	// ContextService: the data path. The router and stand-alone MCP
	// workers vouch for the tenant they authenticated; nodes of the cell
	// forward to their leader and serve their own MCP worker over a
	// self-connection. Clients and operators go through the router.
	// A tenant's own program may call it directly with a tenant token
	// that a router minted for the tenant it authenticated.
	dataPath = Access{Kinds: []pki.Kind{pki.KindRouter, pki.KindWorker}, CellNodes: true, Token: true}
	// CellService calls of the control plane (cellclient: SetTenant,
	// GetTenant, DeleteTenant; ListTenants for the same reconciliation).
	controlPlane = Access{Kinds: []pki.Kind{pki.KindControlPlane}, Forwardable: true}
	// Membership changes: the control plane, or the node joining itself.
	selfOrControlPlane = Access{Kinds: []pki.Kind{pki.KindControlPlane}, CellNodes: true, SelfOnly: true, Forwardable: true}
	// ReplicationService and AckReplica: the standby cells' sinks (nodes
	// of any cell of the cluster).
	peerCells = Access{Kinds: []pki.Kind{pki.KindNode}}
)

func cellMethod(name string) string {
	return "/" + cellv1.CellService_ServiceDesc.ServiceName + "/" + name
}

func contextMethod(name string) string {
	return "/" + contextv1.ContextService_ServiceDesc.ServiceName + "/" + name
}

func replicationMethod(name string) string {
	return "/" + replicationv1.ReplicationService_ServiceDesc.ServiceName + "/" + name
}

// Policy returns the authorisation table of a cell node's gRPC server:
// full method name → who may call it. Every RPC of CellService,
// ContextService and ReplicationService is in it (a test checks); a
// method not in it is refused to everyone. docs/security.md mirrors it
// (a test checks).
func Policy() map[string]Access {
	p := map[string]Access{
		// CellService: the control plane's tenant placement
		// (controlplane/cellclient).
		cellMethod("SetTenant"):    controlPlane,
		cellMethod("GetTenant"):    controlPlane,
		cellMethod("ListTenants"):  controlPlane,
		cellMethod("DeleteTenant"): controlPlane,
		// The change log: the control plane and admin operators
		// (`cellctl failover changes` reads it from the cell directly).
		cellMethod("ListChanges"): {Kinds: []pki.Kind{pki.KindControlPlane}, Operators: []pki.Role{pki.RoleAdmin}, Forwardable: true},
		// Audit records: the control plane (cellctl tenant audit) and admin
		// operators. Erasure: the control plane only, which reports where
		// the erase was applied (cellctl tenant erase, admin operators).
		cellMethod("ListAudit"):    {Kinds: []pki.Kind{pki.KindControlPlane}, Operators: []pki.Role{pki.RoleAdmin}, Forwardable: true},
		cellMethod("EraseSubject"): controlPlane,
		// The replica floor: the standby cell's sink (replication/sink.go).
		cellMethod("AckReplica"): peerCells,
		// Status: components and operators.
		cellMethod("GetStatus"): {Kinds: []pki.Kind{pki.KindControlPlane, pki.KindNode}, Operators: pki.Roles(), Forwardable: true},
		// Membership: a node joins itself (cells/membership.go join:
		// AddVoter through --join); the control plane may change it.
		cellMethod("AddVoter"):    selfOrControlPlane,
		cellMethod("AddNonVoter"): selfOrControlPlane,
		// Removing a member or moving leadership: the control plane only.
		cellMethod("RemoveServer"):       controlPlane,
		cellMethod("TransferLeadership"): controlPlane,
		// Registration: a follower registers its own addresses with the
		// leader (cells/membership.go ensureRegistered), never another
		// node's (finding C5).
		cellMethod("RegisterNode"): {CellNodes: true, SelfOnly: true, Forwardable: true},

		// ReplicationService: standby cells' sinks.
		replicationMethod("StreamChanges"): peerCells,
		replicationMethod("ExportTenant"):  peerCells,

		// Health: every identity of the cluster; reflection: components
		// and operators.
		"/grpc.health.v1.Health/Check":                                   {AnyIdentity: true},
		"/grpc.health.v1.Health/Watch":                                   {AnyIdentity: true},
		"/grpc.health.v1.Health/List":                                    {AnyIdentity: true},
		"/grpc.reflection.v1.ServerReflection/ServerReflectionInfo":      reflectionAccess,
		"/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo": reflectionAccess,
	}
	for _, m := range contextv1.ContextService_ServiceDesc.Methods {
		p[contextMethod(m.MethodName)] = dataPath
	}
	for _, m := range contextv1.ContextService_ServiceDesc.Streams {
		p[contextMethod(m.StreamName)] = dataPath
	}
	return p
}

var reflectionAccess = Access{Kinds: []pki.Kind{pki.KindNode, pki.KindRouter, pki.KindControlPlane, pki.KindWorker}, Operators: pki.Roles()}

// Allows reports whether id may call a method with access a on the node
// self. requestNode is the node id the request names ("" when none);
// forwarded whether the call carries the forwarded mark.
func (a Access) Allows(self, id pki.Identity, requestNode string, forwarded bool) bool {
	sameCell := id.Kind == pki.KindNode && id.Cluster == self.Cluster && id.Region == self.Region && id.Cell == self.Cell
	switch {
	case a.AnyIdentity:
		return true
	case forwarded && a.Forwardable && sameCell:
		return true
	case slices.Contains(a.Kinds, id.Kind):
		return true
	case a.CellNodes && sameCell:
		return !a.SelfOnly || requestNode == id.Node
	case id.Kind == pki.KindOperator:
		return slices.Contains(a.Operators, id.Role)
	}
	return false
}

// Describe says who a may call, as docs/security.md's table does.
func (a Access) Describe() string {
	if a.AnyIdentity {
		return "any identity of the cluster"
	}
	var who []string
	for _, k := range a.Kinds {
		who = append(who, string(k))
	}
	if a.CellNodes {
		s := "nodes of this cell"
		if a.SelfOnly {
			s += " (only for themselves)"
		}
		who = append(who, s)
	}
	for _, r := range a.Operators {
		who = append(who, "operator "+string(r))
	}
	if a.Forwardable {
		who = append(who, "forwarded by a node of this cell")
	}
	if a.Token {
		who = append(who, "a tenant token for this cell (its tenant only)")
	}
	return strings.Join(who, "; ")
}

// requestNode returns the node id a membership request names.
func requestNode(req any) string {
	if r, ok := req.(interface{ GetNode() *cellv1.NodeInfo }); ok {
		return r.GetNode().GetNodeId()
	}
	return ""
}

// authorizer is the one interceptor (unary and stream) that authorises
// every call of the node's gRPC server by its caller's verified identity
// against Policy, or, for a method open to tokens, by a router-minted
// tenant token. It runs before any handler: a refused call writes
// nothing.
type authorizer struct {
	src    *pki.Source // this node's identity (its cell)
	policy map[string]Access
	keys   tenanttoken.KeySet // the token keys; nil: no token is accepted
	tokens tenanttoken.Config
	now    func() time.Time
	log    *slog.Logger
	// limit is the per-tenant limiter of the calls authorised by a
	// tenant token (nil: none): see directLimiter.
	limit *ratelimit.Limiter
}

func newAuthorizer(src *pki.Source, keys tenanttoken.KeySet, tokens tenanttoken.Config, log *slog.Logger) *authorizer {
	return &authorizer{src: src, policy: Policy(), keys: keys, tokens: tokens, now: time.Now, log: log}
}

// check returns the context to run the call with when the peer of ctx
// may call fullMethod with req (nil for a stream), else a cperr
// UNAUTHENTICATED (no valid identity or token) or PERMISSION_DENIED
// error. A call authorised by a token runs with its tenant and epoch
// metadata set from the token.
func (a *authorizer) check(ctx context.Context, fullMethod string, req any) (context.Context, error) {
	access, known := a.policy[fullMethod]
	id, err := pki.PeerIdentity(ctx)
	switch {
	case err != nil && errors.Is(err, pki.ErrNoCertificate) && known && access.Token:
		return a.checkToken(ctx, fullMethod, nil)
	case err != nil:
		a.log.WarnContext(ctx, "cell call refused: no valid client identity", "grpc.method", fullMethod, "err", err)
		var ce *cperr.Error
		if errors.As(err, &ce) {
			return nil, ce
		}
		return nil, cperr.New(cperr.Unauthenticated, "no valid client certificate")
	case id.Kind == pki.KindClient && known && access.Token && hasToken(ctx):
		return a.checkToken(ctx, fullMethod, &id)
	}
	if known && access.Allows(a.src.Identity(), id, requestNode(req), tenantmd.Forwarded(ctx)) {
		return ctx, nil
	}
	a.log.WarnContext(ctx, "cell call refused", "grpc.method", fullMethod, "peer_identity", id.String())
	return nil, cperr.New(cperr.PermissionDenied, "%s may not call %s", id, fullMethod).
		With("identity", id.String()).With("method", fullMethod)
}

// hasToken reports whether the call carries a tenant token.
func hasToken(ctx context.Context) bool {
	md, _ := metadata.FromIncomingContext(ctx)
	return len(md.Get(tenantmd.TokenKey)) > 0
}

// checkToken authorises a call by its tenant token: valid (signature by
// a key in etcd, cluster, lifetime, not expired), for this cell, for the
// client certificate's tenant if there is one, and matching any tenant or
// epoch the call names. The call then runs for the token's tenant at the
// token's epoch: the store refuses it (STALE_EPOCH, WRONG_CELL) unless
// that is the tenant's current epoch as OWNER here, so a token minted
// before a move or a failover is dead.
func (a *authorizer) checkToken(ctx context.Context, fullMethod string, client *pki.Identity) (context.Context, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	refuse := func(err error, why string) (context.Context, error) {
		a.log.WarnContext(ctx, "cell call refused: tenant token", "grpc.method", fullMethod, "why", why, "err", err)
		return nil, err
	}
	toks := md.Get(tenantmd.TokenKey)
	switch {
	case len(toks) == 0:
		return refuse(cperr.New(cperr.Unauthenticated, "a client certificate of the cluster or a tenant token (%s) is required", tenantmd.TokenKey).
			With(cperr.MetaToken, "missing"), "missing")
	case len(toks) > 1:
		return refuse(cperr.New(cperr.Unauthenticated, "%s must be given once", tenantmd.TokenKey).With(cperr.MetaToken, "malformed"), "repeated")
	case a.keys == nil:
		return refuse(cperr.New(cperr.Unauthenticated, "this node accepts no tenant tokens (it has no registry to read the keys from)").
			With(cperr.MetaToken, "unknown_key"), "no keys")
	}
	self := a.src.Identity()
	claims, err := tenanttoken.Verify(a.tokens, a.keys, toks[0], self.Cluster, a.now())
	if err != nil {
		return refuse(err, "invalid")
	}
	denied := func(format string, args ...any) (context.Context, error) {
		return refuse(cperr.New(cperr.PermissionDenied, format, args...).With(cperr.MetaTenant, claims.Tenant).With("method", fullMethod), "mismatch")
	}
	if claims.Cell != self.Cell {
		return denied("the tenant token is for cell %s, not %s", claims.Cell, self.Cell)
	}
	if client != nil && client.Tenant != claims.Tenant {
		return denied("the client certificate is for tenant %s, the token for another", client.Tenant)
	}
	if ts := md.Get(tenantmd.TenantKey); len(ts) > 1 || len(ts) == 1 && ts[0] != claims.Tenant {
		return denied("%s does not name the token's tenant", tenantmd.TenantKey)
	}
	if es := md.Get(tenantmd.EpochKey); len(es) > 1 || len(es) == 1 && es[0] != strconv.FormatUint(claims.Epoch, 10) && es[0] != "0" {
		return denied("%s is not the token's epoch", tenantmd.EpochKey)
	}
	// Tokens are minted only for credentials holding the default scopes
	// and carry none: a method needing more (admin) is the router's.
	if need, ok := auth.RequiredScope(fullMethod); ok && !auth.DefaultScopes.Has(need) {
		return denied("%s needs the %s scope, which a tenant token does not carry; call through the router", fullMethod, need)
	}
	out := md.Copy()
	out.Set(tenantmd.TenantKey, claims.Tenant)
	out.Set(tenantmd.EpochKey, strconv.FormatUint(claims.Epoch, 10))
	// Only a node of this cell forwards; the token is not needed past here.
	out.Delete(tenantmd.ForwardedKey)
	out.Delete(tenantmd.TokenKey)
	// The principal is the token's (the router authenticated it), never a
	// value the direct caller sent; a token without one acts as the tenant.
	out.Delete(tenantmd.PrincipalKey)
	out.Delete(tenantmd.OriginKey)
	out.Delete(tenantmd.AdminKey) // tokens grant no admin scope
	// A token is minted only for credentials holding the default scopes:
	// the call holds those, never what the direct caller claims.
	out.Set(tenantmd.ScopesKey, auth.DefaultScopes.String())
	if claims.Principal != "" {
		out.Set(tenantmd.PrincipalKey, claims.Principal)
	}
	ctx = context.WithValue(ctx, directTenantKey{}, claims.Tenant)
	return metadata.NewIncomingContext(ctx, out), nil
}

// directTenantKey marks the context of a call authorised by a tenant token
// (a direct caller, not a router, worker or node): its value is the
// token's tenant.
type directTenantKey struct{}

// admitDirect charges a call authorised by a tenant token to its tenant's
// buckets (H4: direct callers do not pass the router's limits): one
// request, and the request message's size when there is one (req nil: a
// stream, whose messages tokenStream charges as they arrive).
func (a *authorizer) admitDirect(ctx context.Context, req any) error {
	tenant, ok := ctx.Value(directTenantKey{}).(string)
	if !ok || a.limit == nil {
		return nil
	}
	if ok, wait := a.limit.Allow(tenant, 0, 0); !ok {
		return a.limit.Err(tenant, wait)
	}
	return a.admitDirectBytes(tenant, req)
}

// admitDirectBytes charges a request message's size to the tenant's byte
// bucket.
func (a *authorizer) admitDirectBytes(tenant string, msg any) error {
	m, ok := msg.(proto.Message)
	if !ok {
		return nil
	}
	n := proto.Size(m)
	if ok, wait := a.limit.AllowBytes(tenant, n, 0, 0); !ok {
		return a.limit.BytesErr(tenant, n, 0, 0, wait)
	}
	return nil
}

// Unary is the unary half of the interceptor.
func (a *authorizer) Unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	ctx, err := a.check(ctx, info.FullMethod, req)
	if err != nil {
		return nil, err
	}
	if err := a.admitDirect(ctx, req); err != nil {
		return nil, err
	}
	return h(ctx, req)
}

// Stream is the stream half of the interceptor. A stream authorised by a
// token lives on after the token expires (its tenant and epoch were
// checked at its start; a move ends it).
func (a *authorizer) Stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	ctx, err := a.check(ss.Context(), info.FullMethod, nil)
	if err != nil {
		return err
	}
	if err := a.admitDirect(ctx, nil); err != nil {
		return err
	}
	if ctx != ss.Context() {
		ts := &tokenStream{ServerStream: ss, ctx: ctx}
		if tenant, ok := ctx.Value(directTenantKey{}).(string); ok && a.limit != nil {
			ts.a, ts.tenant = a, tenant
		}
		ss = ts
	}
	return h(srv, ss)
}

// tokenStream is a ServerStream with another context; with a limiter (a),
// every request message it receives is charged to tenant's byte bucket.
type tokenStream struct {
	grpc.ServerStream
	ctx    context.Context
	a      *authorizer
	tenant string
}

func (s *tokenStream) Context() context.Context { return s.ctx }

func (s *tokenStream) RecvMsg(m any) error {
	if err := s.ServerStream.RecvMsg(m); err != nil || s.a == nil {
		return err
	}
	return s.a.admitDirectBytes(s.tenant, m)
}
