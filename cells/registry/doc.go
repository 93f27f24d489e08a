// Package registry connects a cell node to the control plane's registry
// (etcd, through controlplane/topo): it registers the node under a leased
// key, publishes the cell's Raft leader, and forms a new cell's Raft group
// from the nodes that registered.
//
// Keys (relative to topo.Prefix; see controlplane/topo/keys.go):
//
//	cells/<c>             Cell           written by the control plane; expected_members
//	cells/<c>/nodes/<n>   Node           leased: one per running node (Registrar)
//	cells/<c>/leader      CellLeader     leased: the Raft leader's (Registrar)
//	cells/<c>/bootstrap   CellBootstrap  the first expected_members nodes (WaitBootstrap)
//	cells/<c>/authority   CellAuthority  leased: the leader may acknowledge writes (Authority)
//	cells/<c>/fence/<t>   CellFence      written by an emergency promotion; applied and reported by the leader
//
// A Registrar holds a session (a lease of Config.TTL kept alive by the
// topo store) and puts the node's record under it, so the record vanishes
// within a TTL of the node dying. When the session is lost (etcd was
// unreachable for longer than the TTL), the Registrar opens a new one and
// registers again, backing off between attempts. While the node's
// LeaderSource says it leads the cell, the Registrar publishes
// cells/<c>/leader under the same lease: it writes only when the key is
// absent, already its own, or names an older Raft term (a crashed leader's
// key is thereby replaced at once instead of after its TTL), and deletes
// it, only if still its own, when leadership is lost. Close deletes the
// leader key if it is this node's and revokes the lease, so the node's
// keys disappear at once.
//
// WaitBootstrap is how a new cell forms without a --bootstrap list: every
// node registers, then waits until the control plane has created
// cells/<c> and at least Cell.expected_members member nodes registered.
// The first node to see that writes cells/<c>/bootstrap (create-if-absent)
// with the expected_members registered nodes of lowest creation revision;
// every node then reads that record back, so all agree on one member list.
// A node listed bootstraps Raft with the list; a node not listed (a
// latecomer) joins the cell through a listed member's gRPC address.
//
// The Authority keeper (authority.go, fence.go) is the cell leader's
// authority lease: the node acknowledges writes only while its last
// renewal was sent less than TTL − DriftMargin ago, on its monotonic clock,
// and applies the fences of emergency promotions before it publishes or
// renews (see docs/failover.md). On etcd (a topo.Leaser) a renewal is one
// lease keep-alive — no etcd write, no revision — instead of a grant, a
// transaction and a revoke. cells.Start installs it as the store's
// write gate (store.SetAuthority).
//
// Usage (cells.Start does this when cells.Config.Registry is set):
//
//	self := &cpv1.Node{Id: "n1", Cell: "c1", Role: cpv1.NodeRole_NODE_ROLE_MEMBER,
//		RaftAddr: "10.0.0.1:7210", GrpcAddr: "10.0.0.1:7211", HttpAddr: "10.0.0.1:7212"}
//	cfg := registry.DefaultConfig()
//	cfg.Cell, cfg.Node, cfg.Logger = "c1", self, logger
//	reg, err := registry.Start(ctx, topoStore, cfg, leaderSource)
//	if err != nil {
//		return err
//	}
//	defer reg.Close()
//	members, err := registry.WaitBootstrap(ctx, topoStore, "c1", self, logger)
//	if err != nil {
//		return err
//	}
//	if registry.Contains(members, "n1") {
//		// bootstrap Raft with members' Raft addresses
//	} else {
//		// join through members[i].GrpcAddr
//	}
package registry
