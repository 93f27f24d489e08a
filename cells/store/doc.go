// Package store is one node's replica of a cell's context store:
// hashicorp/raft (raft-wal log and stable store, file snapshots, a TCP
// transport that is mutual TLS between nodes of the cell when Config.TLS
// is set) in front of a Pebble state machine that keeps every tenant's
// contexts, entries, memory, change log and idempotency window.
//
// Writes are cellv1.Command values. Propose group-commits concurrent
// commands into one Raft entry and returns each command's result; the state
// machine applies a command only when the tenant is OWNER here at the
// command's epoch, gives every tenant mutation the tenant's next tseq, logs
// it in the tenant's change log, and remembers its request id so a retry
// returns the first result. Reads run on a consistent Pebble snapshot after
// the consistency level asked for is established (LINEARIZABLE, LEADER,
// STALE). Raft, Pebble and raft-wal types never appear in the API.
//
//	cfg := store.DefaultConfig()
//	cfg.NodeID, cfg.RaftBind, cfg.DataDir = "n1", "127.0.0.1:7201", "/var/lib/cellplane/n1"
//	cfg.Bootstrap = []store.Peer{{ID: "n1", Addr: "127.0.0.1:7201"}, …}
//	s, err := store.Open(cfg)
//	…
//	res, err := s.Propose(ctx, &cellv1.Command{Tenant: "acme", RequestId: id, Op: …})
//	err = s.ReadTenant(ctx, "acme", 0, store.ReadOptions{}, func(v *store.TenantView) error {
//		entries, err := v.Entries("ctx-1", 1, 100, 1<<20)
//		…
//	})
//
// See DESIGN.md beside this file for the invariants and failure modes.
package store
