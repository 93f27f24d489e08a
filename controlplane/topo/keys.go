package topo

import "strings"

// Prefix is the root of cellplane's keyspace in etcd. Store keys are
// relative to it; etcdtopo prepends it.
const Prefix = "/cellplane/v1/"

// The keyspace (values are cellplane.controlplane.v1 protobufs; see
// docs/controlplane.md for every key):
//
//	regions/<r>                  Region
//	cells/<c>                    Cell
//	cells/<c>/load               CellLoad        (controller, same txn as placements)
//	cells/<c>/bootstrap          CellBootstrap   (first node to see enough members)
//	cells/<c>/leader             CellLeader      (leased, the cell's Raft leader)
//	cells/<c>/nodes/<n>          Node            (leased, each node)
//	cells/<c>/authority          CellAuthority   (leased, the cell leader may acknowledge writes)
//	cells/<c>/fence/<t>          CellFence       (emergency promotion: the cell must fence t)
//	tenants/<t>                  Tenant          (placement)
//	tenants/<t>/keys/<id>        ApiKey          (hashed)
//	tenants/<t>/revoked/<id>     RevokedToken    (JWT revocation list)
//	workflows/<id>               Workflow        (durable controller workflows)
//	moves/<id>                   Move            (tenant moves)
//	failovers/<id>               Failover        (switchovers and promotions)
//	drains/<c>                   DrainCellRequest (cells being drained)
//	controller/leader/<lease>    ControllerLeader (election)
//	tokenkeys/public/<kid>       TokenPublicKey  (tenant-token verification keys: nodes, workers, routers read)
//	tokenkeys/private/<kid>      TokenPrivateKey (tenant-token signing keys: the control plane and routers only)
const (
	RegionsPrefix   = "regions/"
	CellsPrefix     = "cells/"
	TenantsPrefix   = "tenants/"
	WorkflowsPrefix = "workflows/"
	MovesPrefix     = "moves/"
	FailoversPrefix = "failovers/"
	// DrainsPrefix holds one record per cell being drained. The record is
	// the DrainCellRequest that started the drain (the concurrency asked
	// for); a CellDrain message would say it better at the next keyspace
	// change.
	DrainsPrefix = "drains/"
	// ControllerElection is the election name of controller replicas.
	ControllerElection = "controller/leader"
	// TokenKeysPrefix holds the tenant-token keys (controlplane/tokenkeys).
	// Its two halves are separate prefixes so that etcd RBAC can give the
	// private one to the control plane and routers only.
	TokenKeysPrefix        = "tokenkeys/"
	TokenPublicKeysPrefix  = TokenKeysPrefix + "public/"
	TokenPrivateKeysPrefix = TokenKeysPrefix + "private/"
	// RevisionProbePrefix is a range nothing is ever stored under: a List
	// of it is a cheap linearizable read of the store's current revision
	// (routers and MCP workers use it to prove their watches caught up).
	RevisionProbePrefix = "revision-probe/"
	// FailoverPolicyKey holds the automatic promotion policy
	// (FailoverPolicy); absent: the controller's flags apply.
	FailoverPolicyKey = "policies/failover"
)

// TokenPublicKeyKey is tokenkeys/public/<kid>.
func TokenPublicKeyKey(kid string) string { return TokenPublicKeysPrefix + kid }

// TokenPrivateKeyKey is tokenkeys/private/<kid>.
func TokenPrivateKeyKey(kid string) string { return TokenPrivateKeysPrefix + kid }

// RegionKey is regions/<r>.
func RegionKey(r string) string { return RegionsPrefix + r }

// CellKey is cells/<c>.
func CellKey(c string) string { return CellsPrefix + c }

// CellLoadKey is cells/<c>/load.
func CellLoadKey(c string) string { return CellsPrefix + c + "/load" }

// CellBootstrapKey is cells/<c>/bootstrap.
func CellBootstrapKey(c string) string { return CellsPrefix + c + "/bootstrap" }

// CellLeaderKey is cells/<c>/leader.
func CellLeaderKey(c string) string { return CellsPrefix + c + "/leader" }

// CellFormedKey is cells/<c>/formed: written (never leased, never
// deleted by cellplane) by the cell leader before the first authority of
// each term, so it exists before the cell acknowledges any write. A node of the cell with no Raft state that finds it must not
// bootstrap the cell again (H1).
func CellFormedKey(c string) string { return CellsPrefix + c + "/formed" }

// CellNodesPrefix is cells/<c>/nodes/.
func CellNodesPrefix(c string) string { return CellsPrefix + c + "/nodes/" }

// CellNodeKey is cells/<c>/nodes/<n>.
func CellNodeKey(c, n string) string { return CellNodesPrefix(c) + n }

// CellAuthorityKey is cells/<c>/authority.
func CellAuthorityKey(c string) string { return CellsPrefix + c + "/authority" }

// CellFencePrefix is cells/<c>/fence/.
func CellFencePrefix(c string) string { return CellsPrefix + c + "/fence/" }

// CellFenceKey is cells/<c>/fence/<t>.
func CellFenceKey(c, t string) string { return CellFencePrefix(c) + t }

// MoveKey is moves/<id>.
func MoveKey(id string) string { return MovesPrefix + id }

// FailoverKey is failovers/<id>.
func FailoverKey(id string) string { return FailoversPrefix + id }

// DrainKey is drains/<c>.
func DrainKey(c string) string { return DrainsPrefix + c }

// TenantKey is tenants/<t>.
func TenantKey(t string) string { return TenantsPrefix + t }

// TenantKeysPrefix is tenants/<t>/keys/.
func TenantKeysPrefix(t string) string { return TenantsPrefix + t + "/keys/" }

// APIKeyKey is tenants/<t>/keys/<id>.
func APIKeyKey(t, id string) string { return TenantKeysPrefix(t) + id }

// TenantRevokedPrefix is tenants/<t>/revoked/: the tenant's JWT
// revocation list.
func TenantRevokedPrefix(t string) string { return TenantsPrefix + t + "/revoked/" }

// RevokedTokenKey is tenants/<t>/revoked/<id> (id: catalog.RevokedTokenID).
func RevokedTokenKey(t, id string) string { return TenantRevokedPrefix(t) + id }

// WorkflowKey is workflows/<id>.
func WorkflowKey(id string) string { return WorkflowsPrefix + id }

// KeyKind classifies a key of the keyspace.
type KeyKind int

// Key kinds returned by ParseKey.
const (
	KindUnknown KeyKind = iota
	KindRegion
	KindCell
	KindCellLoad
	KindCellBootstrap
	KindCellLeader
	KindCellNode
	KindTenant
	KindAPIKey
	KindWorkflow
	KindCellAuthority
	KindCellFence
	KindMove
	KindFailover
	KindDrain
	KindTokenPublicKey
	KindTokenPrivateKey
	KindRevokedToken
	KindFailoverPolicy
)

// ParsedKey is a key split into its parts.
type ParsedKey struct {
	Kind KeyKind
	// Region, Cell, Tenant, Workflow: the id the key is about.
	ID string
	// Sub is the second id: the node of a CellNode, the key id of an APIKey.
	Sub string
}

// ParseKey classifies a relative key. Ids never contain '/', so the split
// is unambiguous; anything else is KindUnknown.
func ParseKey(key string) ParsedKey {
	switch {
	case key == FailoverPolicyKey:
		return ParsedKey{Kind: KindFailoverPolicy}
	case strings.HasPrefix(key, RegionsPrefix):
		if id := key[len(RegionsPrefix):]; id != "" && !strings.Contains(id, "/") {
			return ParsedKey{Kind: KindRegion, ID: id}
		}
	case strings.HasPrefix(key, WorkflowsPrefix):
		if id := key[len(WorkflowsPrefix):]; id != "" && !strings.Contains(id, "/") {
			return ParsedKey{Kind: KindWorkflow, ID: id}
		}
	case strings.HasPrefix(key, MovesPrefix):
		if id := key[len(MovesPrefix):]; id != "" && !strings.Contains(id, "/") {
			return ParsedKey{Kind: KindMove, ID: id}
		}
	case strings.HasPrefix(key, FailoversPrefix):
		if id := key[len(FailoversPrefix):]; id != "" && !strings.Contains(id, "/") {
			return ParsedKey{Kind: KindFailover, ID: id}
		}
	case strings.HasPrefix(key, TokenPublicKeysPrefix):
		if id := key[len(TokenPublicKeysPrefix):]; id != "" && !strings.Contains(id, "/") {
			return ParsedKey{Kind: KindTokenPublicKey, ID: id}
		}
	case strings.HasPrefix(key, TokenPrivateKeysPrefix):
		if id := key[len(TokenPrivateKeysPrefix):]; id != "" && !strings.Contains(id, "/") {
			return ParsedKey{Kind: KindTokenPrivateKey, ID: id}
		}
	case strings.HasPrefix(key, DrainsPrefix):
		if id := key[len(DrainsPrefix):]; id != "" && !strings.Contains(id, "/") {
			return ParsedKey{Kind: KindDrain, ID: id}
		}
	case strings.HasPrefix(key, CellsPrefix):
		parts := strings.Split(key[len(CellsPrefix):], "/")
		if parts[0] == "" {
			break
		}
		switch {
		case len(parts) == 1:
			return ParsedKey{Kind: KindCell, ID: parts[0]}
		case len(parts) == 2 && parts[1] == "load":
			return ParsedKey{Kind: KindCellLoad, ID: parts[0]}
		case len(parts) == 2 && parts[1] == "bootstrap":
			return ParsedKey{Kind: KindCellBootstrap, ID: parts[0]}
		case len(parts) == 2 && parts[1] == "leader":
			return ParsedKey{Kind: KindCellLeader, ID: parts[0]}
		case len(parts) == 2 && parts[1] == "authority":
			return ParsedKey{Kind: KindCellAuthority, ID: parts[0]}
		case len(parts) == 3 && parts[1] == "fence" && parts[2] != "":
			return ParsedKey{Kind: KindCellFence, ID: parts[0], Sub: parts[2]}
		case len(parts) == 3 && parts[1] == "nodes" && parts[2] != "":
			return ParsedKey{Kind: KindCellNode, ID: parts[0], Sub: parts[2]}
		}
	case strings.HasPrefix(key, TenantsPrefix):
		parts := strings.Split(key[len(TenantsPrefix):], "/")
		if parts[0] == "" {
			break
		}
		switch {
		case len(parts) == 1:
			return ParsedKey{Kind: KindTenant, ID: parts[0]}
		case len(parts) == 3 && parts[1] == "keys" && parts[2] != "":
			return ParsedKey{Kind: KindAPIKey, ID: parts[0], Sub: parts[2]}
		case len(parts) == 3 && parts[1] == "revoked" && parts[2] != "":
			return ParsedKey{Kind: KindRevokedToken, ID: parts[0], Sub: parts[2]}
		}
	}
	return ParsedKey{Kind: KindUnknown}
}
