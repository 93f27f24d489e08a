// Package platform assembles the whole platform on one machine: a control
// plane replica with etcd embedded, regions × cells × nodes (real Raft on
// disk over loopback TCP, an MCP worker in every node unless the node
// template disables it) and one router. It is the one builder behind
// `cellplane dev`, the bench scenarios that need the whole system
// (replication, moves, failover) and the chaos tests.
//
// Nodes run in this process or, with Config.MultiProcess, each as a child
// process of the cellplane binary (`cellplane cell …`), so that one can be
// killed like any process. In process, a node can be killed the way a
// process dies (Node.Kill) and restarted as the same Raft member
// (Node.Restart); cells can be added at any time (AddCell).
//
// Everything lives under Config.DataDir. Started again on the same dir
// with the same fixed addresses, the platform comes back with every
// tenant and all data.
//
// With Config.MutualTLS every internal hop runs with mutual TLS: a dev CA
// and one certificate per component in <DataDir>/certs (reused on a
// restart), the admin operator's for the platform's own connections, and
// <DataDir>/client.yaml for cellctl (Description.ClientConfig). The
// router's front door stays plaintext (docs/security.md, "cellplane dev
// with mutual TLS"). RotateCA, ReissueCerts and FinishCARotation rotate
// that CA and every leaf while the platform serves; TLSStates shows what
// each in-process component presents and trusts (docs/security.md,
// "Rotation under load").
//
// TestingKnobs is one bundle of test hooks that reaches every component
// the platform builds in this process.
//
//	cfg := platform.DefaultConfig()
//	cfg.DataDir = dir
//	cfg.Regions, cfg.CellsPerRegion, cfg.NodesPerCell = []string{"us-east"}, 1, 3
//	cfg.TestingKnobs.Controller.BeforeStep = func(ctx context.Context, wf *cpv1.Workflow) error { … }
//	p, err := platform.Start(ctx, cfg)
//	if err != nil {
//		return err
//	}
//	defer p.Close()
//	_, err = p.Admin().CreateTenant(ctx, &cpv1.CreateTenantRequest{Id: "acme", HomeRegion: "us-east"})
//	data := contextv1.NewContextServiceClient(p.RouterConn())
//	// … tenantmd.Outgoing(ctx, "acme", 0) names the tenant (Auth "none").
//	leader, err := p.Cell("us-east-a").WaitLeader(ctx, 0)
//	leader.Kill()
//	err = leader.Restart(ctx)
package platform
