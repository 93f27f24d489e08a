package etcdauth

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"

	"go.etcd.io/etcd/api/v3/authpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/cellplane/cellplane/controlplane/topo"
	"github.com/cellplane/cellplane/internal/pki"
)

// TokenKeysPrivatePrefix holds the routers' tenant-token signing keys
// (relative to the prefix): the control plane writes them, routers read
// them, nodes and workers must not.
const TokenKeysPrivatePrefix = "tokenkeys/private/"

// RootRole and RootUser are etcd's built-in administrator role and the
// user etcd requires before authentication can be enabled.
const (
	RootRole = "root"
	RootUser = "root"
)

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
		end = clientv3.GetPrefixRangeEnd(key)
	case r.End == EndOfPrefix:
		end = clientv3.GetPrefixRangeEnd(prefix)
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
			Range{Key: topo.CellFencePrefix(c), Prefix: true, Write: true},
		)}, nil
	}
	return Role{}, fmt.Errorf("%w: %s", ErrNoAccess, id.Kind)
}

// UserName is id's etcd user: its certificate's common name.
func UserName(id pki.Identity) string { return id.FileName() }

// Bootstrap enables etcd authentication with admin (the control plane's
// user, its certificate's common name) as a root user, and is a no-op
// when authentication is already on. cli must be admin's connection (its
// certificate): before auth is on anyone may do this; after, only root.
func Bootstrap(ctx context.Context, cli *clientv3.Client, admin string) error {
	st, err := cli.AuthStatus(ctx)
	if err != nil {
		return fmt.Errorf("etcdauth: auth status: %w", err)
	}
	if st.Enabled {
		// Check that admin is root: a replica whose user is not cannot
		// provision anyone.
		if _, err := cli.UserGet(ctx, admin); err != nil {
			return fmt.Errorf("etcdauth: etcd authentication is on and %q cannot administer it (grant it the root role): %w", admin, err)
		}
		return nil
	}
	for _, u := range []string{RootUser, admin} {
		if err := ensureUser(ctx, cli, u, RootRole); err != nil {
			return err
		}
	}
	if _, err := cli.AuthEnable(ctx); err != nil {
		return fmt.Errorf("etcdauth: enable authentication: %w", err)
	}
	return nil
}

// ensureUser creates user (no password: certificate only) and grants it
// role; both steps are no-ops when done before.
func ensureUser(ctx context.Context, cli *clientv3.Client, user, role string) error {
	// Read first: etcd logs a failed add at Warn.
	got, err := cli.UserGet(ctx, user)
	switch {
	case errors.Is(err, rpctypes.ErrUserNotFound):
		if _, err := cli.UserAddWithOptions(ctx, user, "", &clientv3.UserAddOptions{NoPassword: true}); err != nil && !errors.Is(err, rpctypes.ErrUserAlreadyExist) {
			return fmt.Errorf("etcdauth: add user %s: %w", user, err)
		}
	case err != nil:
		return fmt.Errorf("etcdauth: get user %s: %w", user, err)
	case slices.Contains(got.Roles, role):
		return nil
	}
	if _, err := cli.UserGrantRole(ctx, user, role); err != nil {
		return fmt.Errorf("etcdauth: grant role %s to %s: %w", role, user, err)
	}
	return nil
}

// Provisioner creates the etcd users and roles of identities, as root.
type Provisioner struct {
	cli    *clientv3.Client
	prefix string

	mu   sync.Mutex
	done map[string]bool // users ensured by this process
}

// NewProvisioner returns a Provisioner on cli (a root user's connection)
// for the keyspace under prefix.
func NewProvisioner(cli *clientv3.Client, prefix string) *Provisioner {
	return &Provisioner{cli: cli, prefix: prefix, done: map[string]bool{}}
}

// Ensure makes id's etcd user exist with its role (RoleFor), the role's
// permissions exactly its ranges. It is idempotent and cheap after the
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
		if err := p.ensureRole(ctx, role); err != nil {
			return err
		}
	}
	if err := ensureUser(ctx, p.cli, user, role.Name); err != nil {
		return err
	}
	p.done[user] = true
	return nil
}

// perm is an etcd permission in comparable form.
type perm struct {
	key, end string
	typ      clientv3.PermissionType
}

// ensureRole creates role if missing and sets its permissions to exactly
// its ranges.
func (p *Provisioner) ensureRole(ctx context.Context, role Role) error {
	if _, err := p.cli.RoleGet(ctx, role.Name); errors.Is(err, rpctypes.ErrRoleNotFound) {
		if _, err := p.cli.RoleAdd(ctx, role.Name); err != nil && !errors.Is(err, rpctypes.ErrRoleAlreadyExist) {
			return fmt.Errorf("etcdauth: add role %s: %w", role.Name, err)
		}
	}
	var want []perm
	for _, r := range role.Ranges {
		k, e := r.abs(p.prefix)
		t := clientv3.PermissionType(clientv3.PermRead)
		if r.Write {
			t = clientv3.PermissionType(clientv3.PermReadWrite)
		}
		want = append(want, perm{k, e, t})
	}
	got, err := p.cli.RoleGet(ctx, role.Name)
	if err != nil {
		return fmt.Errorf("etcdauth: get role %s: %w", role.Name, err)
	}
	for _, gp := range got.Perm {
		have := perm{string(gp.Key), string(gp.RangeEnd), clientv3.PermissionType(gp.PermType)}
		if slices.Contains(want, have) {
			continue
		}
		if _, err := p.cli.RoleRevokePermission(ctx, role.Name, have.key, have.end); err != nil && !errors.Is(err, rpctypes.ErrPermissionNotGranted) {
			return fmt.Errorf("etcdauth: revoke %q..%q from role %s: %w", have.key, have.end, role.Name, err)
		}
	}
	for _, w := range want {
		if slices.ContainsFunc(got.Perm, func(gp *authpb.Permission) bool {
			return string(gp.Key) == w.key && string(gp.RangeEnd) == w.end && clientv3.PermissionType(gp.PermType) == w.typ
		}) {
			continue
		}
		if _, err := p.cli.RoleGrantPermission(ctx, role.Name, w.key, w.end, w.typ); err != nil {
			return fmt.Errorf("etcdauth: grant %q..%q to role %s: %w", w.key, w.end, role.Name, err)
		}
	}
	return nil
}
