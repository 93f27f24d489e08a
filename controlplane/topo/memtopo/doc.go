// Package memtopo is an in-memory topo.Store for unit tests: the same
// semantics as etcdtopo (one global revision counter, versions are
// revisions, history for watches and pinned lists until Compact, leases,
// elections where the lowest create revision under name/ wins) and
// injectable faults per operation and key prefix.
//
//	st := memtopo.New()
//	defer st.Close()
//	st.Fail(memtopo.OpUpdate, topo.TenantsPrefix, topo.ErrUnavailable)
//	_, err := st.Update(ctx, topo.TenantKey("acme"), b, v) // errors.Is(err, topo.ErrUnavailable)
//	st.Clear()
//
// Leases: a session's keep-alive runs in memory and cannot fail, so a
// lease only ends by Session.Close, by ExpireLease (which simulates an
// expiry without sleeping) or by Close of the store.
//
// Watches: events are queued per watcher so writers never block; a
// watcher more than Options.MaxWatchBacklog events behind is ended with
// ErrCompacted, like an etcd watcher whose start revision was compacted:
// the caller reloads with List and watches again.
package memtopo
