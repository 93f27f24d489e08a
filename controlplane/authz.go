package controlplane

import (
	"context"
	"errors"
	"log/slog"
	"slices"

	"google.golang.org/grpc"

	"github.com/cellplane/cellplane/internal/cperr"
	"github.com/cellplane/cellplane/internal/pki"
	cpv1 "github.com/cellplane/cellplane/proto/cellplane/controlplane/v1"
)

// Access says who may call one method of the control plane's gRPC server
// (finding C3 in docs/security.md). An operator with role admin may call every
// method of the table; the other identities only what their Access names.
type Access struct {
	// ReadOnly: operators with role read-only may call it too (it only
	// reads the cluster's state).
	ReadOnly bool
	// Kinds are the component or client kinds that may call it besides
	// operators: the callers the code shows (a node, router or worker
	// started with --controlplane asks GetRegistry where etcd is).
	Kinds []pki.Kind
	// AnyIdentity: every identity of the cluster may call it (health
	// checks).
	AnyIdentity bool
}

// Accesses of the table.
var (
	adminOnly = Access{}
	readOnly  = Access{ReadOnly: true}
)

// method is the full gRPC method name of a ControlPlaneService RPC.
func method(name string) string {
	return "/" + cpv1.ControlPlaneService_ServiceDesc.ServiceName + "/" + name
}

// Policy returns the authorisation table of the control plane's gRPC
// server: full method name → who may call it. Every ControlPlaneService
// RPC is in it (a test checks); a method not in it is refused to
// everyone. It is enforced only when the server serves mutual TLS
// (Config.TLS): without TLS there is no identity to authorise.
func Policy() map[string]Access {
	return map[string]Access{
		// Reads: any operator.
		method("GetStatus"):         readOnly,
		method("ListRegions"):       readOnly,
		method("GetCell"):           readOnly,
		method("ListCells"):         readOnly,
		method("GetTenant"):         readOnly,
		method("ListTenants"):       readOnly,
		method("ListApiKeys"):       readOnly, // ids and descriptions, never secrets
		method("GetMove"):           readOnly,
		method("ListMoves"):         readOnly,
		method("GetFailover"):       readOnly,
		method("ListFailovers"):     readOnly,
		method("GetFailoverPolicy"): readOnly,
		// Audit records: a read (who did what), for auditors too.
		method("ListTenantAudit"): readOnly,
		// Where etcd is: operators, and the components started with
		// --controlplane instead of --etcd-endpoints (cmd/cellplane
		// registry.go askRegistry: `cellplane cell`, `router`, `worker`).
		method("GetRegistry"): {ReadOnly: true, Kinds: []pki.Kind{pki.KindNode, pki.KindRouter, pki.KindWorker}},

		// Changes: admin operators only.
		method("CreateRegion"):      adminOnly,
		method("UpdateRegion"):      adminOnly,
		method("DeleteRegion"):      adminOnly,
		method("CreateCell"):        adminOnly,
		method("UpdateCell"):        adminOnly,
		method("DeleteCell"):        adminOnly,
		method("CordonCell"):        adminOnly,
		method("UncordonCell"):      adminOnly,
		method("CreateTenant"):      adminOnly,
		method("UpdateTenant"):      adminOnly,
		method("DeleteTenant"):      adminOnly,
		method("CreateApiKey"):      adminOnly,
		method("RevokeApiKey"):      adminOnly,
		method("RevokeToken"):       adminOnly,
		method("SetStandby"):        adminOnly,
		method("ClearStandby"):      adminOnly,
		method("StartMove"):         adminOnly,
		method("CancelMove"):        adminOnly,
		method("DrainCell"):         adminOnly,
		method("Failover"):          adminOnly,
		method("SetFailoverPolicy"): adminOnly,
		// Erasure deletes data: admin operators only.
		method("EraseSubject"): adminOnly,

		// The other services of the same server.
		"/grpc.health.v1.Health/Check":                                   {AnyIdentity: true},
		"/grpc.health.v1.Health/Watch":                                   {AnyIdentity: true},
		"/grpc.health.v1.Health/List":                                    {AnyIdentity: true},
		"/grpc.reflection.v1.ServerReflection/ServerReflectionInfo":      readOnly,
		"/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo": readOnly,
	}
}

// Allows reports whether a may be called by id.
func (a Access) Allows(id pki.Identity) bool {
	switch {
	case a.AnyIdentity:
		return true
	case id.Kind == pki.KindOperator:
		return id.Role == pki.RoleAdmin || a.ReadOnly && id.Role == pki.RoleReadOnly
	default:
		return slices.Contains(a.Kinds, id.Kind)
	}
}

// authorizer is the one interceptor (unary and stream) that authorises
// every call of the server by its caller's verified identity against the
// policy. It runs before any handler: a refused call writes nothing.
type authorizer struct {
	policy map[string]Access
	log    *slog.Logger
}

func newAuthorizer(log *slog.Logger) *authorizer {
	return &authorizer{policy: Policy(), log: log}
}

// check returns nil when the peer of ctx may call fullMethod, else a
// cperr UNAUTHENTICATED (no valid identity) or PERMISSION_DENIED error.
func (a *authorizer) check(ctx context.Context, fullMethod string) error {
	id, err := pki.PeerIdentity(ctx)
	if err != nil {
		a.log.WarnContext(ctx, "control plane call refused: no valid client identity", "grpc.method", fullMethod, "err", err)
		var ce *cperr.Error
		if errors.As(err, &ce) {
			return ce
		}
		return cperr.New(cperr.Unauthenticated, "no valid client certificate")
	}
	access, ok := a.policy[fullMethod]
	if ok && access.Allows(id) {
		return nil
	}
	a.log.WarnContext(ctx, "control plane call refused", "grpc.method", fullMethod, "peer_identity", id.String())
	return cperr.New(cperr.PermissionDenied, "%s may not call %s", id, fullMethod).
		With("identity", id.String()).With("method", fullMethod)
}

// Unary is the unary half of the interceptor.
func (a *authorizer) Unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	if err := a.check(ctx, info.FullMethod); err != nil {
		return nil, err
	}
	return h(ctx, req)
}

// Stream is the stream half of the interceptor.
func (a *authorizer) Stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	if err := a.check(ss.Context(), info.FullMethod); err != nil {
		return err
	}
	return h(srv, ss)
}
