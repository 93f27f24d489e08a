// Package catalog reads and writes the control plane's records in the topo
// store as typed protobufs: the one place that knows which message lives at
// which key (topo/keys.go, NewRecord) and how a cell's registry entries
// assemble into a cell's live status and health. Nobody else decodes raw
// values: the controller, the intent API, the cells' registry and the
// routers all read records through it.
//
// Each record kind has its own file with typed helpers (in the manner of
// vitess go/vt/topo: keyspace.go, shard.go): tenants.go, keys.go (API
// keys), cells.go (cells, their load and bootstrap), nodes.go, leaders.go,
// authority.go, fences.go, regions.go, workflows.go, moves.go,
// failovers.go, drains.go. The generic pieces are in catalog.go: Get,
// GetRecord, List, ListRecords (every record of a kind at one revision),
// DecodeEvent and DecodePut (watch events), Encode, and StoreError, which
// maps topo errors to the error contract at the API boundary.
//
//	cells, err := catalog.Cells(ctx, st)       // every cell with load, leader, nodes
//	t, v, err := catalog.GetTenant(ctx, st, "acme")
//	moves, rev, err := catalog.ListMoves(ctx, st) // oldest first, with versions
//	for resp := range st.Watch(ctx, topo.MovesPrefix, rev+1) {
//		for _, ev := range resp.Events {
//			mv, ok, err := catalog.MoveEvent(ev)
//			...
//		}
//	}
package catalog
