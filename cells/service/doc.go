// Package service implements a cell node's gRPC APIs over its store:
// cellplane.context.v1.ContextService (the public data API) and
// cellplane.cell.v1.CellService (tenant roles, membership, status).
//
// The tenant and epoch of a data call come from gRPC metadata
// (internal/tenantmd), never from the payload. Every request is validated
// against explicit limits (cells/validate) before anything is proposed, so
// a rejected request has no effect. Writes become one cellv1.Command
// proposed through Raft; reads run on a consistent view of the tenant.
//
// Leadership: a follower forwards writes and LINEARIZABLE/LEADER reads to
// the leader over a pooled connection, unless the caller set
// x-cellplane-no-forward or the call was already forwarded once; then it
// answers NOT_LEADER with the leader's address. Watch is served by any
// member from its own replica. The leader's address is used only when it
// is the registered address of the Raft leader and that record matches
// the Raft configuration; RegisterNode accepts only a member's own Raft
// address and gRPC/HTTP addresses on its host (registration.go, finding
// C5).
//
// Errors are cperr errors (or context errors); the node installs the
// internal/rpcerr interceptors that turn them into statuses.
//
// Usage:
//
//	cfg := service.DefaultConfig()
//	cfg.Node = &cellv1.NodeInfo{NodeId: "n1", RaftAddr: raftAddr, GrpcAddr: grpcAddr}
//	cfg.Logger = logger
//	svc, err := service.New(st, cfg) // st is a *store.Store
//	if err != nil { ... }
//	gs := grpc.NewServer(
//		grpc.ChainUnaryInterceptor(rpcerr.UnaryServerInterceptor()),
//		grpc.ChainStreamInterceptor(rpcerr.StreamServerInterceptor()),
//		grpc.MaxRecvMsgSize(cfg.Limits.MaxRequestBytes+64<<10),
//	)
//	svc.Register(gs)
//	go gs.Serve(lis)
//	...
//	svc.Close() // ends open watches and forwarding connections
//	gs.GracefulStop()
package service
