// Package provider is cellplane's Terraform provider (terraform-plugin-
// framework, protocol 6), served by cmd/terraform-provider-cellplane.
//
// It manages what the control plane's ControlPlaneService lets it manage
// safely:
//
//   - cellplane_region (name, description): create, read, import by name.
//     Changing the description needs UpdateRegion and destroying needs
//     DeleteRegion; until the control plane has them (seams.go) those
//     plans fail with a diagnostic that says so.
//   - cellplane_tenant (id, home_region, standby_region, limits,
//     deletion_protection, timeouts): create blocks until the tenant is
//     ACTIVE and its standby STREAMING; destroy waits until the data is
//     gone. deletion_protection (default true) is the control plane's
//     Tenant.deletion_protection: sent at create, changed in place
//     (UpdateTenant over the version read, setProtection), read back on
//     refresh, so protection turned off or on outside Terraform (cellctl
//     tenant update --deletion-protection) is drift and the plan sets it
//     back. While true a destroy is refused at PLAN time, before anything
//     else is destroyed; a destroy that reaches a tenant protected since
//     the refresh is refused by the control plane (DELETION_PROTECTED, on
//     deletion_protection) and deletes nothing. An import takes the
//     control plane's value (a configuration that differs plans an
//     update). id and
//     home_region are immutable: a change is a plan-time error, never a
//     replace (a replace deletes the tenant's data). standby_region is the
//     DR partner of home_region, not where the standby is now: a planned
//     switchover (the owner in the DR region, the standby at home) is not
//     drift; an emergency promotion (no standby) plans a new standby in
//     the pair's region that is not the owner's. placement_cell places
//     the tenant at create and a change moves it live (StartMove, waited
//     until DONE); it is the placement Terraform asked for, never read
//     back, so a move or failover outside Terraform is not drift. Live
//     placement (cell, epoch, lag) lives in the cellplane_tenant data
//     source only. Creates and moves carry request ids derived from the
//     request (ops.go), so an apply after a timed-out or killed one
//     resumes the same operation instead of starting a second.
//   - cellplane_cell (id, region, expected_members, capacity, state,
//     wait_for_healthy, timeouts; cell.go): id, region and
//     expected_members are immutable (plan-time error); capacity and state
//     change in place (UpdateCell, DrainCell; DRAINING waits until the
//     drain is done, and a drain cut off by the update timeout is waited
//     for again by the next apply: drainPendingKey). A live DRAINING or DOWN state is kept in the plan
//     whatever the configuration says (cellStatePlan, with a warning): an
//     apply never ends an operator's drain and never fights a DOWN cell,
//     and the plan stays empty. Destroy is DeleteCell (CELL_NOT_EMPTY:
//     nothing destroyed).
//   - cellplane_failover_policy (failover_policy.go): the singleton
//     automatic-promotion policy, import id "default"; writes are guarded
//     by the version last read (private state → expected_version);
//     destroy disables automatic promotion.
//   - cellplane_api_key (tenant, description; computed sensitive secret),
//     imported as <tenant>/<key_id>.
//   - data sources cellplane_status, cellplane_region(s), cellplane_cell(s),
//     cellplane_tenant(s), cellplane_registry, cellplane_moves,
//     cellplane_failovers (datasources.go, datasources_live.go).
//
// The connection settings resolve exactly like cellctl's
// (client.ResolveControlPlaneTarget): endpoint, else
// CELLPLANE_CONTROLPLANE, else the client configuration file
// (config_file, else CELLPLANE_CONFIG), else 127.0.0.1:7000; the TLS
// material from the provider block, else the file. Long operations (tenant
// create, delete, moves, standby changes) share a bound of
// max_concurrent_operations whatever Terraform's -parallelism.
package provider
