// Package routing is the global router's in-memory routing table (DESIGN
// §6): tenant → owner cell, epoch and limits; cell → leader and live
// nodes; API key → tenant and secret hash.
//
// # Static stability
//
// Requests never wait on etcd. Lookup, Cell and APIKey read memory only;
// Lookup is O(1) and allocates nothing. The table is filled in the
// background and keeps serving its last state whatever etcd does:
//
//   - Start loads the local snapshot file (if any) before returning, so a
//     router restarted while etcd is down routes at once (Loaded true,
//     Revision and Age from the snapshot).
//   - In the background it lists tenants/ and cells/ (topo.Scan: etcd's
//     RangeStream, every chunk at the first one's revision R, without the
//     per-page count of the remaining keys that made a paged load
//     quadratic; List pages pinned to R on a store without it), builds a
//     complete new view
//     and swaps it in with one atomic pointer store: readers see the old
//     view or the new one, never a half-built one.
//   - It then watches tenants/ and cells/ from R+1 and applies the events
//     in order: tenants in place in a sharded map (one RWMutex per shard,
//     held only for the map access), cells copy-on-write (a CellRoute is
//     immutable once published).
//   - When a watch fails — ErrCompacted because history was compacted, or
//     any other error — the table reloads with a fresh List (retrying with
//     exponential backoff between RetryMin and RetryMax while the old view
//     keeps serving) and counts the reload
//     (cellplane_router_table_reloads_total). A compaction of a running
//     watch is not an error: the reload starts at once; other failures
//     (and a watch compacted before its first response) wait a backoff.
//     Full loads that fail (etcd down, ErrCompacted between pages) retry
//     with backoff.
//   - Refresh re-reads one tenant now (the router calls it on WRONG_CELL or
//     STALE_EPOCH). Each entry carries its key's version, so a Refresh
//     answer never overwrites a newer watch event and vice versa.
//
// # Cutovers
//
// A placement record with cutting_over set (a move or failover between
// the fence of the old owner and the flip of the placement) routes as
// usual, with Route.CuttingOver true: neither cell takes the tenant's calls
// meanwhile, and callers hold them. WaitChange(ctx, tenant, seen) waits
// until the tenant's cell, epoch or cutover flag differs from seen (the
// flip clears the flag in the same etcd write that names the new owner).
// Waiters sleep on a channel that the table closes after every applied
// watch batch of tenants/, every full load and every Refresh that changed
// an entry; it is made only when somebody waits, so the table pays nothing
// for it otherwise. cellplane_router_table_tenants_cutting_over counts the
// records with the flag.
//
// # Memory
//
// A tenant costs its id string plus a 24-byte entry (version, epoch, an
// index into an interned cell-id table, an index into interned limits,
// the state, a flags byte for cutting_over that fills what was padding)
// in a Go map: about 80 bytes at 200k tenants (see
// BenchmarkMemory), so 1M tenants take about 80 MB. Interned values are
// dropped at the next full load.
//
// # Snapshot
//
// With Config.SnapshotPath set, the table is written at most every
// SnapshotInterval and only if it changed, and once more by Close. The
// file is written atomically (temporary file in the same directory, fsync,
// rename, fsync of the directory). Format (little-endian):
//
//	"CPROUTE\n" | version uint32 (2) | payload length uint64 | payload | CRC-32C of all before
//
// The payload holds the revision, the write time, the interned cell ids
// and limits, every tenant record (any state, with its flags), every API
// key (revoked ones marked) and every cell with its leader and nodes (see
// snapshot.go). Version 1 files (no flags: nothing cutting over) are still
// read. A missing, truncated, corrupt or other-version file is ignored
// with a warning; the table then starts empty and waits for etcd. Events may land
// while a snapshot is taken, so its entries are at least as new as its
// revision; a snapshot only serves until the next full load and the watch
// never resumes from it.
//
// # Usage
//
//	cfg := routing.DefaultConfig()
//	cfg.SnapshotPath = "/var/lib/cellplane/router.snap"
//	cfg.Logger = logger
//	table, err := routing.Start(ctx, store, cfg)
//	if err != nil {
//		return err
//	}
//	defer table.Close()
//	reg.MustRegister(table.Collectors()...)
//
//	route, ok := table.Lookup(tenant)
//	if !ok {
//		return status.Error(codes.NotFound, "unknown tenant")
//	}
//	cell, _ := table.Cell(route.Cell)
//	// forward to cell.LeaderGRPC with x-cellplane-epoch: route.Epoch
package routing
