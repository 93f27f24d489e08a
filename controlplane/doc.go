// Package controlplane runs one control-plane replica: it embeds a
// single-member etcd in its data dir (or dials an external cluster), runs
// the controller (an etcd election picks the leader; every workflow write
// is guarded by the leadership key) and serves
// cellplane.controlplane.v1.ControlPlaneService over gRPC (with health and
// reflection) plus /metrics, /healthz and /readyz over HTTP.
//
// The parts live in sub-packages: topo (the etcd abstraction and keyspace,
// with etcdtopo and memtopo), catalog (typed records, cell health),
// placement (the policy), controller (election and durable workflows), api
// (the gRPC service), cellclient (calls to cells), apikey (tenant keys),
// etcdserver (the embedded etcd). DESIGN.md states the invariants.
//
// With Config.TLS (a pki.Source of a controlplane identity) the gRPC
// server serves mutual TLS only and one interceptor (unary and stream)
// authorises every call by the caller's certificate against one table,
// Policy (authz.go): admin operators everything, read-only operators the
// reads, components only what they call (GetRegistry). Without it the API
// is unauthenticated, and Start logs a warning.
//
// With TLS and an embedded etcd, the replica restarts the member in place
// when the CAs of its bundle change (etcdca.go: etcd loads its CA bundle
// only at start), so a CA rotation needs no restart of the replica.
//
//	cfg := controlplane.DefaultConfig()
//	cfg.DataDir = "data/cp"
//	cp, err := controlplane.Start(ctx, cfg)
//	...
//	defer cp.Close()
package controlplane
