// Package topo is the control plane's view of its consistent store (etcd):
// a small, context-first Store interface — versioned get/create/update/
// delete, multi-key transactions with conditions, paginated lists pinned to
// one revision, watches from a revision, leased sessions and elections —
// and the cellplane keyspace on top of it (keys.go).
//
// Implementations live in sibling packages: etcdtopo (clientv3; the real
// thing, embedded or external etcd) and memtopo (in memory, with errors
// injectable per operation and key, for unit tests). topotest.Run is the
// one conformance suite both pass.
//
// No etcd type appears here: callers depend on this package only, so the
// router, the controller and the cell registrar never see clientv3.
//
//	kv, err := st.Get(ctx, topo.TenantKey("acme"))
//	if errors.Is(err, topo.ErrNotFound) { ... }
//	_, err = st.Txn(ctx,
//		[]topo.Cond{topo.IfVersion(lead.Key(), lead.Version())}, // still the leader
//		[]topo.Op{topo.Put(topo.TenantKey("acme"), b)})
package topo
