package pki

import (
	"fmt"
	"strings"

	"github.com/cellplane/cellplane/internal/ids"
)

// Kind is what an identity names: a component of the platform or a person
// or program that calls it.
type Kind string

// The kinds of identity, each with its URI path (after spiffe://<cluster>).
const (
	KindNode         Kind = "node"         // /region/<r>/cell/<c>/node/<n>: a cell node
	KindRouter       Kind = "router"       // /router/<id>
	KindControlPlane Kind = "controlplane" // /controlplane/<id>
	KindWorker       Kind = "worker"       // /worker/<id>: an MCP worker
	KindOperator     Kind = "operator"     // /operator/<role>/<name>: a person or tool running cellctl
	KindClient       Kind = "client"       // /client/<tenant>: a program acting for one tenant
)

// Kinds lists every kind, in the order above.
func Kinds() []Kind {
	return []Kind{KindNode, KindRouter, KindControlPlane, KindWorker, KindOperator, KindClient}
}

// Component reports whether k is a platform component (it serves and
// dials, so its certificate is good for both server and client auth), as
// opposed to an operator or a client (client auth only).
func (k Kind) Component() bool {
	switch k {
	case KindNode, KindRouter, KindControlPlane, KindWorker:
		return true
	}
	return false
}

// Role is an operator's role. It is part of the operator's URI, so the CA
// that signs the certificate decides it, and changing it means a new
// certificate.
type Role string

// The operator roles.
const (
	RoleAdmin    Role = "admin"     // may change the cluster (create keys, delete, promote, drain)
	RoleReadOnly Role = "read-only" // may read the cluster's state
)

// Roles lists every role.
func Roles() []Role { return []Role{RoleAdmin, RoleReadOnly} }

// Scheme is the URI scheme of identities.
const Scheme = "spiffe"

// Identity is who holds a certificate, as carried in its one URI SAN:
//
//	spiffe://<cluster>/region/<region>/cell/<cell>/node/<node>
//	spiffe://<cluster>/router/<id>
//	spiffe://<cluster>/controlplane/<id>
//	spiffe://<cluster>/worker/<id>
//	spiffe://<cluster>/operator/<role>/<name>   (role: admin or read-only)
//	spiffe://<cluster>/client/<tenant>
//
// The cluster is the SPIFFE trust domain: one CA (or two during a CA
// rotation) per cluster. Every component is an id of the platform's one id
// rule (internal/ids), except "." and "..", which a URI path would resolve
// away. Only the fields of the Kind are set; the others are empty.
type Identity struct {
	Cluster string
	Kind    Kind
	Region  string // node
	Cell    string // node
	Node    string // node
	ID      string // router, controlplane, worker: its id; operator: its name
	Role    Role   // operator
	Tenant  string // client
}

// The constructors below build an identity of each kind; Validate checks it.

// NodeIdentity returns the identity of a cell node.
func NodeIdentity(cluster, region, cell, node string) Identity {
	return Identity{Cluster: cluster, Kind: KindNode, Region: region, Cell: cell, Node: node}
}

// RouterIdentity returns the identity of a router.
func RouterIdentity(cluster, id string) Identity {
	return Identity{Cluster: cluster, Kind: KindRouter, ID: id}
}

// ControlPlaneIdentity returns the identity of a control plane member.
func ControlPlaneIdentity(cluster, id string) Identity {
	return Identity{Cluster: cluster, Kind: KindControlPlane, ID: id}
}

// WorkerIdentity returns the identity of an MCP worker.
func WorkerIdentity(cluster, id string) Identity {
	return Identity{Cluster: cluster, Kind: KindWorker, ID: id}
}

// OperatorIdentity returns the identity of an operator with a role.
func OperatorIdentity(cluster string, role Role, name string) Identity {
	return Identity{Cluster: cluster, Kind: KindOperator, Role: role, ID: name}
}

// ClientIdentity returns the identity of a program acting for one tenant.
func ClientIdentity(cluster, tenant string) Identity {
	return Identity{Cluster: cluster, Kind: KindClient, Tenant: tenant}
}

// String returns the identity's URI. It is meaningful only for a valid
// identity.
func (id Identity) String() string {
	var b strings.Builder
	b.WriteString(Scheme + "://")
	b.WriteString(id.Cluster)
	for _, seg := range id.segments() {
		b.WriteByte('/')
		b.WriteString(seg)
	}
	return b.String()
}

// segments returns the URI path segments of id.
func (id Identity) segments() []string {
	switch id.Kind {
	case KindNode:
		return []string{"region", id.Region, "cell", id.Cell, "node", id.Node}
	case KindRouter, KindControlPlane, KindWorker:
		return []string{string(id.Kind), id.ID}
	case KindOperator:
		return []string{string(id.Kind), string(id.Role), id.ID}
	case KindClient:
		return []string{string(id.Kind), id.Tenant}
	}
	return []string{string(id.Kind)}
}

// FileName is the base name of the certificate and key files of id in a
// certs directory (<name>.crt, <name>.key), and the certificate's subject
// common name (which etcd's client-certificate auth takes as the user):
// node.<region>.<cell>.<node>, router.<id>, controlplane.<id>, worker.<id>,
// operator.<name>, client.<tenant>.
func (id Identity) FileName() string {
	switch id.Kind {
	case KindNode:
		return "node." + id.Region + "." + id.Cell + "." + id.Node
	case KindRouter, KindControlPlane, KindWorker:
		return string(id.Kind) + "." + id.ID
	case KindOperator:
		return "operator." + id.ID
	case KindClient:
		return "client." + id.Tenant
	}
	return string(id.Kind)
}

// Validate reports whether id is a well-formed identity: a known kind,
// every field of the kind a valid id, no field of another kind set. Its
// errors wrap ErrBadIdentity.
func (id Identity) Validate() error {
	check := func(field, v string) error {
		if !segmentOK(v) {
			return fmt.Errorf("%w: %s %q %s", ErrBadIdentity, field, v, ids.Rule(ids.MaxLen))
		}
		return nil
	}
	if err := check("cluster", id.Cluster); err != nil {
		return err
	}
	want := Identity{Cluster: id.Cluster, Kind: id.Kind}
	var fields [][2]string
	switch id.Kind {
	case KindNode:
		want.Region, want.Cell, want.Node = id.Region, id.Cell, id.Node
		fields = [][2]string{{"region", id.Region}, {"cell", id.Cell}, {"node", id.Node}}
	case KindRouter, KindControlPlane, KindWorker:
		want.ID = id.ID
		fields = [][2]string{{"id", id.ID}}
	case KindOperator:
		if id.Role != RoleAdmin && id.Role != RoleReadOnly {
			return fmt.Errorf("%w: operator role %q: want %s or %s", ErrBadIdentity, id.Role, RoleAdmin, RoleReadOnly)
		}
		want.Role, want.ID = id.Role, id.ID
		fields = [][2]string{{"name", id.ID}}
	case KindClient:
		want.Tenant = id.Tenant
		fields = [][2]string{{"tenant", id.Tenant}}
	default:
		return fmt.Errorf("%w: unknown kind %q", ErrBadIdentity, id.Kind)
	}
	for _, f := range fields {
		if err := check(f[0], f[1]); err != nil {
			return err
		}
	}
	if id != want {
		return fmt.Errorf("%w: a %s identity sets fields of another kind", ErrBadIdentity, id.Kind)
	}
	return nil
}

// segmentOK reports whether s may be a component of an identity URI.
func segmentOK(s string) bool {
	return ids.Valid(s, ids.MaxLen) && s != "." && s != ".."
}

// ParseIdentity parses an identity URI. It accepts only the canonical
// form that String returns (no port, user, query, fragment, escapes,
// trailing or doubled slashes), so one identity has one spelling and a
// policy comparing strings cannot be fooled. Its errors wrap
// ErrBadIdentity.
func ParseIdentity(uri string) (Identity, error) {
	rest, ok := strings.CutPrefix(uri, Scheme+"://")
	if !ok {
		return Identity{}, fmt.Errorf("%w: %q does not start with %s://", ErrBadIdentity, trunc(uri), Scheme)
	}
	segs := strings.Split(rest, "/")
	id := Identity{Cluster: segs[0]}
	segs = segs[1:]
	switch {
	case len(segs) == 6 && segs[0] == "region" && segs[2] == "cell" && segs[4] == "node":
		id.Kind, id.Region, id.Cell, id.Node = KindNode, segs[1], segs[3], segs[5]
	case len(segs) == 2 && (segs[0] == string(KindRouter) || segs[0] == string(KindControlPlane) || segs[0] == string(KindWorker)):
		id.Kind, id.ID = Kind(segs[0]), segs[1]
	case len(segs) == 3 && segs[0] == string(KindOperator):
		id.Kind, id.Role, id.ID = KindOperator, Role(segs[1]), segs[2]
	case len(segs) == 2 && segs[0] == string(KindClient):
		id.Kind, id.Tenant = KindClient, segs[1]
	default:
		return Identity{}, fmt.Errorf("%w: %q has no known identity path", ErrBadIdentity, trunc(uri))
	}
	if err := id.Validate(); err != nil {
		return Identity{}, err
	}
	return id, nil
}

// trunc bounds what an error echoes of an untrusted URI.
func trunc(s string) string {
	const max = 200
	if len(s) > max {
		return s[:max] + "…"
	}
	return s
}
