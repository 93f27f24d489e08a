// Package faults is the fault suite on 3-node cells whose nodes are child
// processes (docs/reliability.md, "Fault suite"): nodes killed with
// SIGKILL and restarted on their data, paused with SIGSTOP, their Raft
// links cut symmetrically or one way, flapping on a seeded schedule,
// slowed and lossy, a client's answers dropped, a far-behind follower
// made to install a snapshot, leadership moved under load, data dirs
// wiped (a follower, a quorum: H1's new incarnations, `cellplane cell
// unsafe-recover` run as a child command), a node replaced under faults.
//
// The harness (harness_test.go) builds the cellplane binary once
// (TestMain), starts the platform (embedded etcd, a control-plane replica,
// a router) in the test process with mutual TLS, and the cell's three
// nodes as `cellplane cell` processes (platform.Config.MultiProcess). Each
// node dials each peer's Raft address through a faultnet proxy of its own
// (--raft-route), so every directed link can be cut, blackholed one way,
// delayed or made lossy. Clients run through the router for the whole
// scenario: appends to several contexts, linearizable reads, memory
// compare-and-set puts and gets, writes retried with their request ids
// and kept as "maybe" when their outcome stays unknown.
//
// After the faults heal, every scenario checks: the replicas' state
// digests are equal at one applied index (CellService.GetStatus with
// state_digest), the history is linearizable (internal/histcheck,
// porcupine partitioned by context and key), every acknowledged append is
// in the final state exactly once at its seq and nothing else is, no
// client call failed outside the error contract, no two nodes claimed
// leadership in one term (a monitor polls every node's status), and at
// most one writable owner at every instant: the nodes record every write
// they acknowledge (CELLPLANE_ACK_LOG, internal/acklog, with
// CLOCK_MONOTONIC readings shared by the processes) and acklog.Check
// finds no owner (epoch, term) that appended a write after a later owner
// acknowledged one.
//
// The default `go test` runs the fast scenarios (S1, S2 wiped follower,
// S5, S9, S11) once;
// the others skip naming `make chaos`, which runs them all with seeds:
//
//	make chaos SEED=42 COUNT=5 PHASE=3s RUN=TestS7
//
// CELLPLANE_CHAOS_ALL, CELLPLANE_CHAOS_SEED, CELLPLANE_CHAOS_COUNT and
// CELLPLANE_CHAOS_PHASE are what make chaos sets. Every failure names its
// seed and the directory of the node logs. Linux only (SIGSTOP); skipped
// with -short.
package faults
