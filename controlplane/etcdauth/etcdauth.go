package etcdauth

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/cellplane/cellplane/controlplane/topo"
	"github.com/cellplane/cellplane/controlplane/topo/etcdtopo"
	"github.com/cellplane/cellplane/internal/pki"
)

// TokenKeysPrivatePrefix holds the routers' tenant-token signing keys
// (relative to the prefix; topo.TokenPrivateKeysPrefix): the control plane
// writes them, routers read them, nodes and workers must not.
const TokenKeysPrivatePrefix = topo.TokenPrivateKeysPrefix

// RootRole is etcd's built-in administrator role.
const RootRole = etcdtopo.RootRole

// ErrNoAccess is returned for an identity that gets no etcd user
// (operators, tenant clients: they use the control plane's API).
var ErrNoAccess = errors.New("etcdauth: this identity has no etcd access")

// Range is one key range of a role, relative to the keyspace prefix.
type Range struct {
	// Key is the first key. End is the end of the range (excluded); "" is
	// the key alone, and EndOfPrefix is the end of the whole keyspace.
	Key, End string
	// Prefix: every key beginning with Key (End unused).
	Prefix bool
	// Write: read and write; otherwise read only.
	Write bool
}

// EndOfPrefix as a Range.End is the end of the keyspace (the prefix's
// range end).
const EndOfPrefix = "\xff"

// abs returns the etcd key and range end of r under prefix.
func (r Range) abs(prefix string) (key, end string) {
	key = prefix + r.Key
	switch {
	case r.Prefix:
		end = prefixEnd(key)
	case r.End == EndOfPrefix:
		end = prefixEnd(prefix)
	case r.End != "":
		end = prefix + r.End
	}
	return key, end
}

// String renders r relative to the prefix, for the docs:
// "cells/c1/nodes/*", "cells/c1/leader", "[start, tokenkeys/private/)",
// "[tokenkeys/private0, end)".
func (r Range) String() string {
	switch {
	case r.Prefix:
		return r.Key + "*"
	case r.End == "":
		return r.Key
	}
	from, to := r.Key, r.End
	if from == "" {
		from = "start"
	}
	if to == EndOfPrefix {
		to = "end"
	}
	return "[" + from + ", " + to + ")"
}

// Role is an etcd role: its name and ranges.
type Role struct {
	Name   string
	Root   bool // etcd's root role; Ranges empty
	Ranges []Range
}

// readAll is the whole keyspace, read only.
func readAll() []Range { return []Range{{Key: "", End: EndOfPrefix}} }

// readAllButPrivateKeys is the keyspace except TokenKeysPrivatePrefix,
// read only: the ranges before and after it ('0' follows '/').
func readAllButPrivateKeys() []Range {
	return []Range{
		{Key: "", End: TokenKeysPrivatePrefix},
		{Key: strings.TrimSuffix(TokenKeysPrivatePrefix, "/") + "0", End: EndOfPrefix},
	}
}

// RoleFor returns the role of id's etcd user under prefix (the table of
// the package comment). Role names carry the prefix, so two keyspaces on
// one etcd do not share roles.
func RoleFor(id pki.Identity, prefix string) (Role, error) {
	base := strings.Trim(prefix, "/") + "/"
	switch id.Kind {
	case pki.KindControlPlane:
		return Role{Name: RootRole, Root: true}, nil
	case pki.KindRouter:
		return Role{Name: base + "router", Ranges: readAll()}, nil
	case pki.KindWorker:
		return Role{Name: base + "worker", Ranges: readAllButPrivateKeys()}, nil
	case pki.KindNode:
		c := id.Cell
		return Role{Name: base + "node/" + c, Ranges: append(readAllButPrivateKeys(),
			Range{Key: topo.CellNodesPrefix(c), Prefix: true, Write: true},
			Range{Key: topo.CellLeaderKey(c), Write: true},
			Range{Key: topo.CellBootstrapKey(c), Write: true},
			Range{Key: topo.CellAuthorityKey(c), Write: true},
			Range{Key: topo.CellFormedKey(c), Write: true},
			Range{Key: topo.CellFencePrefix(c), Prefix: true, Write: true},
		)}, nil
	}
	return Role{}, fmt.Errorf("%w: %s", ErrNoAccess, id.Kind)
}

// prefixEnd is the end of the range of keys beginning with p (etcd's
// clientv3.GetPrefixRangeEnd): p with its last byte below 0xff
// incremented and what follows dropped; "\x00" (to the end of the
// keyspace) when every byte is 0xff.
func prefixEnd(p string) string {
	b := []byte(p)
	for i := len(b) - 1; i >= 0; i-- {
		if b[i] < 0xff {
			b[i]++
			return string(b[:i+1])
		}
	}
	return "\x00"
}

// UserName is id's etcd user: its certificate's common name.
func UserName(id pki.Identity) string { return id.FileName() }

// Bootstrap enables etcd authentication with admin (the control plane's
// user, its certificate's common name) as a root user; a no-op when
// authentication is on already. st must be admin's connection.
func Bootstrap(ctx context.Context, st *etcdtopo.Store, admin string) error {
	if err := st.EnableAuth(ctx, admin); err != nil {
		return fmt.Errorf("etcdauth: %w", err)
	}
	return nil
}

// Provisioner creates the etcd users and roles of identities, as root.
type Provisioner struct {
	st     *etcdtopo.Store
	prefix string

	mu   sync.Mutex
	done map[string]bool // users ensured by this process
}

// NewProvisioner returns a Provisioner on st (a root user's connection)
// for the keyspace under prefix.
func NewProvisioner(st *etcdtopo.Store, prefix string) *Provisioner {
	return &Provisioner{st: st, prefix: prefix, done: map[string]bool{}}
}

// Ensure makes id's etcd user exist with its role (RoleFor), the role's
// permissions exactly its ranges. It is idempotent, and cheap after the
// first success for an identity in this process. Operators and clients
// get ErrNoAccess.
func (p *Provisioner) Ensure(ctx context.Context, id pki.Identity) error {
	if err := id.Validate(); err != nil {
		return err
	}
	role, err := RoleFor(id, p.prefix)
	if err != nil {
		return err
	}
	user := UserName(id)
	p.mu.Lock()
	defer p.mu.Unlock() // provisioning is rare: one at a time
	if p.done[user] {
		return nil
	}
	if !role.Root {
		perms := make([]etcdtopo.Perm, 0, len(role.Ranges))
		for _, r := range role.Ranges {
			k, e := r.abs(p.prefix)
			perms = append(perms, etcdtopo.Perm{Key: k, End: e, Write: r.Write})
		}
		if err := p.st.EnsureRole(ctx, role.Name, perms); err != nil {
			return fmt.Errorf("etcdauth: role %s: %w", role.Name, err)
		}
	}
	if err := p.st.EnsureUser(ctx, user, role.Name); err != nil {
		return fmt.Errorf("etcdauth: user %s: %w", user, err)
	}
	p.done[user] = true
	return nil
}
