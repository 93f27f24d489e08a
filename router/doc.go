// Package router runs a global router: a stateless process that maps each
// tenant to its cell from an in-memory routing table fed by an etcd watch
// (package routing), and forwards tenant-routed gRPC calls (package
// forward) and MCP HTTP requests (package mcpproxy) to that cell, after
// authentication (package auth) and per-tenant rate limiting (package
// ratelimit). It also serves cellplane.router.v1.RouterService.Lookup for
// smart clients (package client).
//
// The router is statically stable: requests never wait on etcd. It starts
// from its local snapshot when etcd is unreachable, and keeps routing on
// its last table while etcd is down. Routers run side by side with no
// coordination. DESIGN.md states the invariants.
//
// With Config.TLS (a certificate and key) both public ports serve TLS 1.2+
// — gRPC over h2, MCP and the HTTP endpoints over HTTPS — with the
// certificate reloaded from disk when it changes; without, they are
// plaintext and Start logs a Warn.
//
//	cfg := router.DefaultConfig()
//	cfg.EtcdEndpoints = []string{"http://127.0.0.1:7379"}
//	cfg.TLS.CertFile, cfg.TLS.KeyFile = "front.crt", "front.key" // optional
//	r, err := router.Start(ctx, cfg)
//	...
//	defer r.Close()
package router
