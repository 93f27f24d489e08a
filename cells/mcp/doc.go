// Package mcp is the MCP worker: it serves each tenant's contexts and
// memory as Model Context Protocol tools over Streamable HTTP, at
// /t/<tenant>/mcp. The servers that mount it (a cell node, a stand-alone
// worker) serve their HTTP port over mutual TLS when they have an
// identity, with ServerTLSConfig, and guard every handler with Authorize
// against HTTPPolicy (access.go): MCP from routers only.
//
//	w, err := mcp.New(mcp.DefaultConfig(), cellConn, authn) // authn nil: no authentication
//	mux.Handle("/", w.Handler())
//	reg.MustRegister(w.Collectors()...)
//
// # Statelessness
//
// The worker keeps no state between requests, but for 2025-era sessions
// (below). It runs the go-sdk's Streamable HTTP handler in stateless mode
// with one sdk.Server built in New: no Mcp-Session-Id, GET and DELETE
// without a session id answer 405, and every tool call
// is one or two ContextService calls to the cell (any member: members
// forward writes to the leader), with x-cellplane-tenant set to the URL's
// tenant. Any worker serves any request, and a worker killed mid-call
// loses nothing: the caller retries elsewhere. Writes carry a request id,
// so the worker's own retries of a transient failure (NOT_LEADER,
// CELL_UNAVAILABLE, ...) within Config.CallTimeout apply once;
// context_append and context_compact take the caller's request_id and
// derive the backend id from it deterministically (tenant-wide dedup,
// namespaced by tool, principal and context), so a retry through another
// worker applies once too.
//
// 2025-era sessions (legacy.go): an initialize naming a protocol version
// before 2026-07-28, and every request carrying an Mcp-Session-Id (GET:
// the session's SSE stream; DELETE: its end), go to a second, stateful
// SDK handler whose getServer builds a fresh sdk.Server per session (the
// same tools, resources and middleware, registered through onServers),
// so that resources/subscribe has a stream to notify on and
// ResourceUpdated reaches that session alone. A session is bound to the
// tenant and principal that opened it (another caller presenting its id
// gets 404, like an unknown id), held in memory on this worker only (the
// router pins its requests here: router/mcpproxy), and capped:
// Config.MaxSessions per worker (an initialize beyond it: 429
// QUOTA_EXCEEDED), Config.MaxSubscriptionsPerSession, and the SDK's idle
// SessionTimeout (Config.SessionIdleTimeout). It is lost with the worker;
// the client initializes again and catches up with changes_read.
//
// context_read's result text is a one-line summary (the entries are in
// structuredContent only, on both the SDK and the fast path); a read that
// names no bound returns the newest Config.DefaultReadBytes of entries.
// Cacheable results are marked private (cacheable).
//
// # Subscriptions
//
// subscriptions/listen (2026-07-28) is served by any worker, statelessly
// too: serveMCP recognises a listen request and serves it with an SDK
// server of its own (subscribe.go), whose only session is the listen's,
// so that ResourceUpdated reaches that listener alone (never another
// principal's listen of the same URI on this worker). Its
// SubscribeHandler opens one ContextService.WatchChanges for the caller
// (principal and scopes in the metadata, so the cell filters) from the
// cursor in the listen's _meta "cellplane/cursor" (or from now), and a
// goroutine sends notifications/resources/updated per change and
// subscribed URI once the acknowledgement is out, with the change's
// cursor in _meta. URIs carry the tenant (cellplane://t/<tenant>/...; a
// URI of another tenant than the URL's is refused). The listen ends with
// the cell's stream (tenant moved, node closing): the client listens
// again, through any worker, from its last cursor. The go-sdk client's
// Subscribe cannot send listen _meta: such clients resume with the
// changes_read tool (a long poll after a cursor).
//
// A 2025-era session's resources/subscribe (SubscribeHandler of the
// session's server) starts, once per session, a follower of the cell's
// WatchChanges for the caller (principal and scopes, as a listen's) from
// now, which calls the session server's ResourceUpdated per change and
// subscribed URI (with the listen's _meta) on the session's standalone
// SSE stream; the last unsubscribe, DELETE, the idle timeout or
// Worker.Close stop it, and the cell's stream ending ends the session
// (the client initializes again). URI parsing (parseSubURI), the
// change-to-URI mapping (changeURIs) and the _meta (changeMeta) are the
// listen's. Outside a session resources/subscribe is refused, pointing to
// subscriptions/listen and changes_read.
//
// # Handles and principals
//
// A context id is a handle bound to the tenant (the store is per tenant,
// so another tenant's id is simply not found). With an Authenticator, the
// principal it returns is written in the reserved label
// "cellplane.principal" by context_create, and every other context_* call
// (and the cellplane://contexts/{id} resource) first reads the context and
// answers CONTEXT_NOT_FOUND, with the same text as for a missing context,
// when the label differs: possessing a handle is not authorization.
// context_list shows only the principal's contexts, read through the
// store's index by creator (ListContexts created_by_caller); its labels
// and label_selector filters are evaluated by the cell within that index,
// so a filter never reaches another principal's contexts. Labels
// starting with "cellplane." are refused in input (context and memory
// labels, and the keys of list filters) and removed from output. Memory is the principal's own unless a call says scope
// "tenant" (the cell scopes it by the principal the worker sends).
// Without an Authenticator the principal is "" and no check applies.
//
// # Scopes
//
// Each tool needs one scope (ToolScopes): a caller whose scopes lack it
// is refused with PERMISSION_DENIED before anything is called, and the
// tool is left out of its tools/list (a receiving middleware). Every
// mutating tool takes request_id, derived per tool, principal and target
// like context_append's, and context_append takes expected_seq.
//
// The tenant, principal and scopes reach the tool handlers as request
// headers (X-Cellplane-Tenant, X-Cellplane-Principal, X-Cellplane-Scopes)
// that the wrapper sets after authentication, having deleted any
// client-sent copies; the handlers read them from sdk.RequestExtra.Header.
//
// # Errors
//
// Tool failures are tool errors (isError results) whose text is
// "REASON: message" with a reason of the error contract (docs/design.md §9), e.g.
// "CONTEXT_NOT_FOUND: context chat-9 does not exist" or
// "REVISION_MISMATCH: ...": backend statuses go through rpcerr.FromStatus;
// timeouts and unreachable cells become CELL_UNAVAILABLE; anything else
// INTERNAL (logged at Error, its text not passed on). Protocol errors are
// what the MCP spec prescribes, and HTTP-level refusals by the wrapper are
// JSON {"error":{"reason","message"}} like the router's: 404 (malformed
// tenant id), 405 (not POST), 403 (Origin not allowed, PERMISSION_DENIED),
// 413 (body over MaxBodyBytes), 401 with WWW-Authenticate carrying
// resource_metadata (RFC 9728; the document is served at
// /.well-known/oauth-protected-resource/t/<tenant>/mcp), 429 with
// Retry-After when the Authenticator says RATE_LIMITED.
//
// # The public URL
//
// A tenant's MCP URL, Config.PublicURL + "/t/<tenant>/mcp", is the
// audience handed to the Authenticator and the RFC 9728 "resource". It is
// configured, never taken from the Host header: the client chooses Host,
// and could then choose the audience its token is checked against.
//
// # Protocol eras
//
// One endpoint serves the stateless 2026-07-28 protocol (server/discover,
// per-request _meta) and the initialize-handshake versions 2025-11-25,
// 2025-06-18 and 2025-03-26 (an initialize opens a session; requests
// without one are served statelessly, as the spec allows).
// An Mcp-Protocol-Version header naming another version is refused with
// 400; for 2026-07-28 requests the SDK also checks that the header matches
// the request's _meta protocol version (400, JSON-RPC -32020 otherwise).
//
// # The tools/call fast path
//
// The SDK's stateless handler builds a ServerSession, with a jsonrpc2
// connection and its goroutines, for every request, and decodes the
// message twice. With Config.FastToolCalls (the default; flag
// --fast-tool-calls, --mcp-fast-tool-calls on cells) the worker serves a
// single JSON-RPC tools/call POST itself, after the same authentication
// and checks: one decode, the SDK's schema validation, the same tool
// function (metrics, logs, error mapping), and the response the SDK would
// write (status, headers, bytes). Whatever it cannot answer exactly like
// the SDK (initialize, lists, resources, notifications, batches, unknown
// tools, arguments the schema refuses, unexpected headers or _meta, an
// unreadable body) goes to the SDK unchanged. TestFastPathMatchesSDK holds
// the two paths byte-equal.
package mcp
