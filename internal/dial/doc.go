// Package dial is the one way a cellplane component, tool or client opens
// a gRPC client connection to another. Every process builds one Config —
// transport credentials, keepalive, client interceptors, a default service
// config — and every connection it opens goes through New or a Pool made
// from it, so securing the process's outgoing connections (mTLS) is a
// change in one place.
//
// A nil Config.Credentials means plaintext: the platform's default is a
// trusted network and loopback tests. Options a single caller needs on top
// (message-size limits, flow-control windows, a resolver, a test dialer)
// travel in ExtraOptions, which come last and so override the rest.
//
// A Pool keeps one *grpc.ClientConn per target for callers that reach a
// changing set of peers (the members of a cell, a cell's leader); it never
// evicts, so it suits sets that stay small. Callers that must close idle
// connections keep their own bookkeeping and open each one with New.
//
//	cfg := dial.DefaultConfig()
//	cfg.Credentials = creds // nil: plaintext
//	if err := cfg.Validate(); err != nil { ... }
//
//	conn, err := dial.New("127.0.0.1:7000", cfg)
//	if err != nil { ... }
//	defer conn.Close()
//
//	pool := dial.NewPool(cfg)
//	defer pool.Close()
//	cc, err := pool.Get(leaderAddr) // the same conn for the same address
//
// The package imports no cellplane component; components import it.
package dial
