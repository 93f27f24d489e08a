// Package intent records what an operator (through the control-plane API)
// asks the platform to do: create or delete a tenant, move it, drain a
// cell, give a tenant a standby or clear it, fail a tenant over. Each call
// validates the request against the records in the topo store and writes
// the intent (a workflow, move or failover record, the placement's
// operation_id, the cell's load) in one transaction, so a tenant has at
// most one operation at a time. Any control-plane replica may record an
// intent; the elected controller leader (package controller) then drives
// it to its end, and the Wait functions here follow the records until it
// has.
//
// Recording and driving are separate packages so that the API depends on
// the small recording half only: api → intent ← controller. Files are
// named by what they record: tenants.go, moves.go, drains.go, standbys.go,
// failovers.go.
//
//	if err := intent.StartCreate(ctx, st, &cpv1.Tenant{Id: "acme", HomeRegion: "us-east"}, ""); err != nil {
//		return err
//	}
//	t, err := intent.WaitCreate(ctx, st, "acme") // the leader placed it
//
//	mv, plan, err := intent.StartMove(ctx, st, intent.MoveRequest{Tenant: "acme", Target: "use1-b"})
package intent
