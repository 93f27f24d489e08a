package cells

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"strings"

	"google.golang.org/grpc"

	"github.com/cellplane/cellplane/internal/cperr"
	"github.com/cellplane/cellplane/internal/pki"
	"github.com/cellplane/cellplane/internal/tenantmd"
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
}

// The accesses of the table.
var (
	// ContextService: the data path. The router and stand-alone MCP
	// workers vouch for the tenant they authenticated; nodes of the cell
	// forward to their leader and serve their own MCP worker over a
	// self-connection. Clients and operators go through the router.
	dataPath = Access{Kinds: []pki.Kind{pki.KindRouter, pki.KindWorker}, CellNodes: true}
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
// against Policy. It runs before any handler: a refused call writes
// nothing.
type authorizer struct {
	src    *pki.Source // this node's identity (its cell)
	policy map[string]Access
	log    *slog.Logger
}

func newAuthorizer(src *pki.Source, log *slog.Logger) *authorizer {
	return &authorizer{src: src, policy: Policy(), log: log}
}

// check returns nil when the peer of ctx may call fullMethod with req
// (nil for a stream), else a cperr UNAUTHENTICATED (no valid identity) or
// PERMISSION_DENIED error.
func (a *authorizer) check(ctx context.Context, fullMethod string, req any) error {
	id, err := pki.PeerIdentity(ctx)
	if err != nil {
		a.log.WarnContext(ctx, "cell call refused: no valid client identity", "grpc.method", fullMethod, "err", err)
		var ce *cperr.Error
		if errors.As(err, &ce) {
			return ce
		}
		return cperr.New(cperr.Unauthenticated, "no valid client certificate")
	}
	access, ok := a.policy[fullMethod]
	if ok && access.Allows(a.src.Identity(), id, requestNode(req), tenantmd.Forwarded(ctx)) {
		return nil
	}
	a.log.WarnContext(ctx, "cell call refused", "grpc.method", fullMethod, "peer_identity", id.String())
	return cperr.New(cperr.PermissionDenied, "%s may not call %s", id, fullMethod).
		With("identity", id.String()).With("method", fullMethod)
}

// Unary is the unary half of the interceptor.
func (a *authorizer) Unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	if err := a.check(ctx, info.FullMethod, req); err != nil {
		return nil, err
	}
	return h(ctx, req)
}

// Stream is the stream half of the interceptor.
func (a *authorizer) Stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	if err := a.check(ss.Context(), info.FullMethod, nil); err != nil {
		return err
	}
	return h(srv, ss)
}
