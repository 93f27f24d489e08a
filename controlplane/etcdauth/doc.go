// Package etcdauth is etcd's authorisation for cellplane's components:
// which key ranges each kind of identity may read and write (Ranges, the
// one table), and the provisioning that makes etcd enforce it (Bootstrap,
// Provisioner.Ensure).
//
// etcd runs with client-certificate authentication: with etcd auth
// enabled, a client that presents a certificate and no user name is the
// etcd user named by the certificate's common name, which `cellplane
// cert` sets to the identity's file name (router.r1, node.eu.c1.n1, …).
// Each identity's user gets one role:
//
//   - controlplane: etcd's root role (it writes placements, workflows,
//     users and roles);
//   - router: read-only on the whole keyspace (it mints tenant tokens, so
//     it reads tokenkeys/private/);
//   - worker: read-only on the keyspace except tokenkeys/private/;
//   - node: as worker, plus read-write on its own cell's registry keys
//     (cells/<c>/nodes/, leader, bootstrap, authority, formed, fence/) and nothing
//     of another cell's;
//   - operators and tenant clients: no etcd access (they go through the
//     control plane's API).
//
// etcd permissions are allow-only key ranges, so "everything except
// tokenkeys/private/" is two ranges around it.
//
// The control plane, as root, enables authentication on its first start
// (Bootstrap: a root user, its own user with the root role, auth on;
// idempotent) and creates a component's user and role when the component
// asks it where etcd is (ControlPlaneService.GetRegistry, authenticated by
// the caller's mutual-TLS identity), before the component connects. The
// etcd calls themselves are etcdtopo.Store's (EnableAuth, EnsureRole,
// EnsureUser): the etcd client stays in etcdtopo. docs/security.md "etcd
// (mutual TLS and RBAC)" has the table (a test keeps it RoleFor's).
package etcdauth
