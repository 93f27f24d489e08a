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
//	cfg := controlplane.DefaultConfig()
//	cfg.DataDir = "data/cp"
//	cp, err := controlplane.Start(ctx, cfg)
//	...
//	defer cp.Close()
package controlplane
