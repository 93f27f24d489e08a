// Package cells runs one node of a cell: the Raft-replicated context store
// (cells/store) behind a gRPC server and an HTTP server.
//
// A node serves, on its gRPC address:
//
//   - cellplane.context.v1.ContextService, the public data API, and
//     cellplane.cell.v1.CellService, the internal and admin API
//     (cells/service); followers forward writes and linearizable reads to
//     the leader;
//   - grpc.health.v1 (SERVING while the store knows a leader, NOT_SERVING
//     once shutdown starts) and server reflection (for grpcurl).
//
// Every call passes, from outermost to innermost: a slog logging
// interceptor (one line per finished call, Debug unless the call failed
// for a bad reason), Prometheus metrics, panic recovery (INTERNAL, stack
// logged, never sent) and the internal/rpcerr error table: the chain every
// cellplane server shares (internal/serve.NewGRPCServer).
//
// On its HTTP address it serves /metrics (a registry owned by the node, so
// several nodes can share a process), /healthz (200 while the node and its
// store run) and /readyz (200 once the store knows a leader and has applied
// entries; a JSON body says why not, and reports storage_full and
// free_bytes: a node below its free-space watermark stays ready, it serves
// reads), and the MCP worker. With Config.TLS
// that port serves mutual TLS only and authorises every request by the
// caller's identity (mcp.HTTPPolicy: MCP from routers, the monitoring
// pages from components and operators).
//
// Membership: Config.Bootstrap forms a new cell; Config.Join adds the node
// to an existing one through any member (CellService.AddVoter, forwarded
// to the leader). Either way, once a leader is known, the node makes sure
// its addresses are registered in the cell state (CellService.RegisterNode
// on the leader; the leader registers itself), so that peers can forward
// to it and report it. The leader accepts a registration only for a
// member of the Raft configuration, with its Raft address there and its
// gRPC/HTTP addresses on that host (docs/cell.md, "Registration rule").
//
// Control plane: with Config.Registry (a controlplane/topo store, etcd) the
// node also registers in the control plane's registry under a leased key
// and, while it leads, publishes its cell's leader key (cells/registry).
// A new node (no Raft state in its data dir) given neither Bootstrap nor
// Join then waits for the control plane to create its cell (Config.CellID)
// and for enough nodes to register, and bootstraps or joins the cell as
// the registry's bootstrap record says. Close unregisters it. Without a
// Registry the node is standalone.
//
// No Raft amnesia (H1): a node whose data dir lost its Raft state never
// comes back under the Raft id its peers counted votes and
// acknowledgements from. When its cell is formed (registry.CellFormed) it
// joins as a new incarnation (store.IdentityFile): added as a non-voter
// in place of its old incarnation, promoted once caught up, in the
// background so the node stays visible while it waits; a new incarnation
// restarted before its promotion finishes the join (whether or not its
// log holds its own add). A node told to
// Bootstrap without a registry whose dir kept only its identity refuses
// (ErrLostRaftState). A cell that lost a majority's data elects no leader
// until store.UnsafeRecover (`cellplane cell unsafe-recover`).
//
// Close is graceful: health goes NOT_SERVING, new calls are refused, open
// Watch streams end with UNAVAILABLE (clients resume elsewhere), running
// calls drain for up to Config.ShutdownTimeout, a leader hands leadership
// to a peer, and the store closes. When the store fails by itself (an
// unknown command, a storage error), the node stops and Done/Err report it.
//
// Usage (see cmd/cellplane for the command line):
//
//	cfg := cells.DefaultConfig()
//	cfg.NodeID = "n1"
//	cfg.DataDir = "/var/lib/cellplane/n1"
//	cfg.RaftAddr, cfg.GRPCAddr, cfg.HTTPAddr = "10.0.0.1:7210", "10.0.0.1:7211", "10.0.0.1:7212"
//	cfg.Bootstrap = []store.Peer{{ID: "n1", Addr: "10.0.0.1:7210"}, {ID: "n2", Addr: "10.0.0.2:7210"}, {ID: "n3", Addr: "10.0.0.3:7210"}}
//	cfg.Logger = logger
//	node, err := cells.Start(ctx, cfg)
//	if err != nil {
//		return err // a taken port is a *cells.ListenError
//	}
//	defer node.Close()
//	select {
//	case <-ctx.Done(): // SIGTERM
//	case <-node.Done():
//		return node.Err() // the store failed
//	}
//	return nil
//
// With Config.TLS (a node identity, pki.Source), the Raft transport and
// the gRPC port serve mutual TLS only, every gRPC call is authorised by
// its caller's identity against Policy (authz.go: one table, one
// interceptor), and the node's own connections present its identity
// (docs/security.md, "Cell gRPC (C1, C2)"). A caller without a
// certificate completes the handshake but may call only ContextService,
// with a router-minted tenant token for this cell, for the token's tenant
// and epoch (the smart client's direct path; the keys come from the
// Registry, controlplane/tokenkeys; docs/security.md, "Tenant tokens").
// Without TLS everything is plaintext and unauthenticated, and the node
// says so at start.
//
// Tests and benchmarks pass pre-opened listeners (Config.RaftListener,
// GRPCListener, HTTPListener) on 127.0.0.1:0 and read the bound addresses
// back with RaftAddr, GRPCAddr and HTTPAddr. Tests reach the store's and
// the authority keeper's hooks through Config.TestingKnobs.
package cells
