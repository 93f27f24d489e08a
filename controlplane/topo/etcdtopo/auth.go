package etcdtopo

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// etcd's built-in administrator role, and the user etcd requires before
// authentication can be enabled.
const (
	RootRole = "root"
	RootUser = "root"
)

// Perm is one permission of an etcd role: the absolute keys [Key, End)
// (End "" is Key alone), read only or read and write. Roles are
// allow-only.
type Perm struct {
	Key, End string
	Write    bool
}

// EnableAuth turns etcd authentication on, with admin (the caller's
// certificate common name) as a root user, and is a no-op when it is on
// already. The store must be admin's connection (its certificate): before
// auth is on anyone may do this; after, only root. Users have no password:
// with client-certificate authentication a client presenting a
// certificate and no user name is the user named by its common name.
func (s *Store) EnableAuth(ctx context.Context, admin string) error {
	st, err := s.cli.AuthStatus(ctx)
	if err != nil {
		return s.mapErr(ctx, "auth status", err)
	}
	if st.Enabled {
		// admin must be root: a replica that is not cannot provision.
		if _, err := s.cli.UserGet(ctx, admin); err != nil {
			return fmt.Errorf("etcdtopo: authentication is on and %q cannot administer it (grant it the root role): %w", admin, s.mapErr(ctx, "get user", err))
		}
		return nil
	}
	for _, u := range []string{RootUser, admin} {
		if err := s.EnsureUser(ctx, u, RootRole); err != nil {
			return err
		}
	}
	if _, err := s.cli.AuthEnable(ctx); err != nil {
		return s.mapErr(ctx, "enable authentication", err)
	}
	return nil
}

// EnsureUser creates user (no password) if missing and grants it role if
// it lacks it. It reads first: etcd logs a refused add at Warn.
func (s *Store) EnsureUser(ctx context.Context, user, role string) error {
	got, err := s.cli.UserGet(ctx, user)
	switch {
	case errors.Is(err, rpctypes.ErrUserNotFound):
		if _, err := s.cli.UserAddWithOptions(ctx, user, "", &clientv3.UserAddOptions{NoPassword: true}); err != nil && !errors.Is(err, rpctypes.ErrUserAlreadyExist) {
			return s.mapErr(ctx, "add user "+user, err)
		}
	case err != nil:
		return s.mapErr(ctx, "get user "+user, err)
	case slices.Contains(got.Roles, role):
		return nil
	}
	if _, err := s.cli.UserGrantRole(ctx, user, role); err != nil {
		return s.mapErr(ctx, "grant role "+role+" to "+user, err)
	}
	return nil
}

// EnsureRole creates role if missing and sets its permissions to exactly
// perms (granting the missing ones, revoking the others).
func (s *Store) EnsureRole(ctx context.Context, role string, perms []Perm) error {
	got, err := s.cli.RoleGet(ctx, role)
	if errors.Is(err, rpctypes.ErrRoleNotFound) {
		if _, err := s.cli.RoleAdd(ctx, role); err != nil && !errors.Is(err, rpctypes.ErrRoleAlreadyExist) {
			return s.mapErr(ctx, "add role "+role, err)
		}
		got, err = s.cli.RoleGet(ctx, role)
	}
	if err != nil {
		return s.mapErr(ctx, "get role "+role, err)
	}
	typ := func(p Perm) clientv3.PermissionType {
		if p.Write {
			return clientv3.PermissionType(clientv3.PermReadWrite)
		}
		return clientv3.PermissionType(clientv3.PermRead)
	}
	have := map[[2]string]clientv3.PermissionType{}
	for _, gp := range got.Perm {
		have[[2]string{string(gp.Key), string(gp.RangeEnd)}] = clientv3.PermissionType(gp.PermType)
	}
	want := map[[2]string]clientv3.PermissionType{}
	for _, p := range perms {
		want[[2]string{p.Key, p.End}] = typ(p)
	}
	for k, t := range have {
		if w, ok := want[k]; ok && w == t {
			continue
		}
		if _, ok := want[k]; ok {
			continue // granted again below with the wanted type
		}
		if _, err := s.cli.RoleRevokePermission(ctx, role, k[0], k[1]); err != nil && !errors.Is(err, rpctypes.ErrPermissionNotGranted) {
			return s.mapErr(ctx, fmt.Sprintf("revoke %q..%q from role %s", k[0], k[1], role), err)
		}
	}
	for _, p := range perms {
		k := [2]string{p.Key, p.End}
		if t, ok := have[k]; ok && t == typ(p) {
			continue
		}
		if _, err := s.cli.RoleGrantPermission(ctx, role, p.Key, p.End, typ(p)); err != nil {
			return s.mapErr(ctx, fmt.Sprintf("grant %q..%q to role %s", p.Key, p.End, role), err)
		}
	}
	return nil
}
