// Package router will hold the global router: the tenant → cell routing
// table fed by an etcd watch, transparent gRPC forwarding, auth and rate
// limits (DESIGN §6). It is built by the router issue; nothing is here yet.
package router
