// Package etcdtopo is the topo.Store on etcd, through clientv3: versions
// are ModRevisions, transactions are etcd txns (with a Get per condition in
// the else branch, so a failure says which condition failed and why),
// lists are ranges pinned to a revision, watches require a leader (a
// partitioned member ends the watch instead of going silent), sessions
// are leases kept alive by concurrency.Session, and elections are
// concurrency.Election. Keys are relative to the store's prefix
// (topo.Prefix by default); no etcd type leaves the package except New's
// argument.
//
//	st, err := etcdtopo.Dial(ctx, etcdtopo.Config{
//		Endpoints:   []string{"http://127.0.0.1:7379"},
//		DialTimeout: 5 * time.Second,
//	})
//	if errors.Is(err, topo.ErrUnavailable) { ... nobody answered ... }
//	defer st.Close()
//	v, err := st.Create(ctx, topo.TenantKey("acme"), b)
//
// Errors are mapped to the topo sentinels: compaction to ErrCompacted,
// unreachable or leaderless clusters and client-side deadlines to
// ErrUnavailable (but a caller's own ended ctx yields its ctx.Err()),
// malformed requests (too many ops, duplicate keys) to ErrInvalid, etcd's
// refusals of the caller's identity (RBAC, no such user) to
// ErrPermissionDenied.
//
// A read (Get, List, an election's reads) whose connection broke under it
// (UNAVAILABLE or CANCELLED while neither the caller nor the store is
// done: a member restarting, as the control plane's embedded etcd does
// when its CA bundle changes) is sent again, up to 4 tries with
// internal/retry's backoff; etcd's client already waits for a connection
// and retries what it could not send. Writes are not resent.
//
// TLS: Config.Identity (a component's pki.Source: its certificate,
// reloaded on rotation, is its etcd user with client-certificate auth) or
// CertFile/KeyFile/CAFile for an external etcd with certificates of its
// own. https endpoints need one of them and http endpoints take neither:
// no plaintext fallback. EnableAuth, EnsureRole and EnsureUser are the
// control plane's provisioning calls (controlplane/etcdauth).
package etcdtopo
