// Package e2e is cellplane's end-to-end suite: it builds the real
// binaries (cmd/cellplane and cmd/cellctl), starts the whole platform on
// this machine with `cellplane dev --multiprocess` (embedded etcd, the
// control plane, the router, two regions with one 3-node cell each, every
// node its own process) on free loopback ports, and drives it only
// through its public interfaces, as an operator and a user would.
//
// What it proves:
//
//   - `cellplane dev` comes up: the ready banner on stdout, dev.json with
//     every address and every node's pid, the demo tenant.
//   - The admin CLI works against it: `cellctl tenant create`, `tenant
//     list -o json`, `tenant get`, `cell get`, `status`.
//   - The data API works through the router (auth none: the tenant comes
//     from x-cellplane-tenant): CreateContext, idempotent Append with
//     request ids, Read, memory compare-and-set (ABORTED
//     REVISION_MISMATCH), Watch receiving a new entry.
//   - The smart Go client (package client) and MCP (go-sdk client at
//     http://<router>/t/<tenant>/mcp: context_append, context_read) work.
//   - Killing the tenant's cell leader process (kill -9) under a write
//     load loses no acknowledged append and duplicates none (every append
//     carries a request id and is retried with it until acknowledged), and
//     writes resume; the longest pause between acknowledgements is logged.
//   - SIGTERM stops the platform with exit code 0 and leaves no node
//     process behind; starting it again on the same data directory brings
//     back every tenant, context entry and memory key.
//   - With --auth apikey --demo (TestDevAPIKeyAndRestartKilled), the demo
//     key from dev.json opens gRPC, the Go client and MCP through the
//     router, and calls without it (or with a wrong one) are refused; with
//     --restart-killed, a node killed with kill -9 comes back as a new
//     process (new pid in dev.json, /readyz ready) with its data.
//
// Ports: every flag gets a loopback port from one contiguous free range
// outside the kernel's ephemeral port range, so that no outgoing
// connection takes one of them while the platform restarts; the same
// ports are used again after the restart (the nodes' addresses are in the
// registry).
//
// Run it (under a minute on an idle 2-core machine, building included; it
// needs the Go toolchain on PATH):
//
//	go test ./test/e2e -v
//
// `go test -short ./...` skips it. On failure the test prints the tail of
// `cellplane dev`'s stderr and of the log files found in its data
// directory.
package e2e
