// Package replication moves a tenant's data between cells (docs/design.md §8).
//
// Source (source.go) serves ReplicationService on every cell node:
// StreamChanges streams a tenant's committed change events in tseq order
// from the node's applied state (bounded messages, gRPC flow control,
// heartbeats with the source's head when idle, resumable from any tseq the
// change log still holds; CHANGES_TRIMMED otherwise), and ExportTenant
// streams a consistent snapshot of the tenant's data range in chunks, from
// the leader after a read barrier. A member behind the standby's position
// answers CELL_UNAVAILABLE ("retry on another member"), never
// CHANGES_TRIMMED: only the leader, caught up to its commit index, can
// tell that a standby diverged (DESIGN.md "What a source member serves").
//
// Sink (sink.go) runs on the standby cell's Raft leader: one stream per
// STANDBY tenant. It bootstraps the tenant from an export when it is not
// bootstrapped, then applies the stream through the standby cell's own
// Raft (the store's apply_changes: idempotent by tseq, refusing gaps),
// coalescing what it received and keeping several applies in flight in
// tseq order (SinkConfig.MaxInflightApplies), acknowledges its applied
// tseq to the source off the apply path (which then keeps the change log
// the standby still needs), re-bootstraps when the source answers
// CHANGES_TRIMMED, and restarts with backoff on any other failure. It
// follows leaders on both sides: the source is reached through any member
// (members forward what needs their leader), and a new standby leader's
// sink resumes from the replicated applied tseq. Lag per tenant (events
// and seconds) is answered by CellService.GetTenant on the standby's
// leader; the metrics export it aggregated over the node's standby
// tenants, with no tenant label unless MetricsConfig.TenantLabels is set
// (/metrics is not authenticated: see MetricsConfig).
//
// The controller decides which cell is a tenant's standby (and re-points
// standbys after moves and switchovers); moves and failovers use the same
// streams (controlplane/controller).
package replication
