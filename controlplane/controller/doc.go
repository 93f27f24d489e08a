// Package controller is the control plane's leader-elected driver of
// durable workflows. Every control-plane replica runs a Controller; the
// replicas campaign in etcd (topo.ControllerElection) and the one elected
// drives, until it loses its lease, every recorded workflow to its end:
//
//   - tenant creates and deletes (workflow.go, over workflows/<id>);
//   - live moves of a tenant to another cell (move*.go, over moves/<id>);
//   - cell drains, as moves out of a DRAINING cell (drain.go, drains/<c>);
//   - standbys: each placement's standby cell kept a STANDBY of the owner
//     (standby.go, a reconciler over tenants/);
//   - switchovers and emergency promotions (failover*.go, failovers/<id>);
//   - the automatic promotion policy, which records emergency promotions
//     for the tenants of a cell unhealthy for long enough (autopolicy.go).
//
// How it fits: the API (package api) only records intents, through package
// intent, in one etcd transaction each; it never calls the driver. The
// leader watches the records (list, then watch: loops.go), drives each one
// step by step, records every step in a transaction guarded by its
// election key (runner.commit: a deposed leader writes nothing), and calls
// cells through the Cells interface (package cellclient) with request ids
// derived from the workflow, so that a new leader resumes each workflow at
// its recorded step and repeats cell calls harmlessly. Records are read and
// decoded through package catalog.
//
//	cc := cellclient.New(st, logger)
//	cfg := controller.DefaultConfig()
//	cfg.ID, cfg.Advertise = "cp-1", "10.0.0.5:7000"
//	ctl, err := controller.New(st, cc, cfg) // a nil Cells is an error
//	if err != nil {
//		return err
//	}
//	go ctl.Run(ctx) // campaigns, leads while elected; returns when ctx ends
//	// ... ctl.IsLeader(), ctl.Collectors() for Prometheus
package controller
