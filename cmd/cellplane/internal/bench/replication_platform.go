package bench

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"google.golang.org/grpc"

	"github.com/cellplane/cellplane/cells"
	"github.com/cellplane/cellplane/controlplane/controller"
	"github.com/cellplane/cellplane/internal/dial"
	"github.com/cellplane/cellplane/internal/pki"
	"github.com/cellplane/cellplane/internal/rpcerr"
	"github.com/cellplane/cellplane/internal/tenantmd"
	"github.com/cellplane/cellplane/platform"
	cellv1 "github.com/cellplane/cellplane/proto/cellplane/cell/v1"
	contextv1 "github.com/cellplane/cellplane/proto/cellplane/context/v1"
	cpv1 "github.com/cellplane/cellplane/proto/cellplane/controlplane/v1"
)

// benchCluster is the platform's name: its dev CA's cluster.
const benchCluster = "bench"

// platformOptions configures startPlatform.
type platformOptions struct {
	Logger *slog.Logger
	// Controller adjusts the controller's configuration (moves, failover).
	Controller func(*controller.Config)
	// Insecure starts the platform without mutual TLS (the mtls
	// scenario's baseline); every other scenario runs with it.
	Insecure bool
}

// startPlatform starts the whole system in this process, as the
// replication, move and failover scenarios need it (package platform):
// etcd embedded in one control-plane replica (fsync on: the control
// plane's writes are on the measured paths) and a router (auth off: the
// tenant comes from x-cellplane-tenant). The scenario adds cells with
// AddCell; their nodes run without an MCP worker, and closing one is a
// kill (no leadership hand-over).
func startPlatform(ctx context.Context, root string, opts platformOptions, _ progress) (*platform.Platform, error) {
	cfg := platform.DefaultConfig()
	cfg.Name = benchCluster
	cfg.DataDir = root
	cfg.Regions, cfg.CellsPerRegion = nil, 0
	cfg.Node.ShutdownTimeout = 0
	cfg.Node.RegistryTTL = 2 * time.Second
	cfg.Node.MCPDisabled = true
	cfg.Controller = controller.DefaultConfig()
	cfg.Controller.SessionTTL = 2 * time.Second
	cfg.Controller.RetryMin = 20 * time.Millisecond
	cfg.Controller.RetryMax = time.Second
	if opts.Controller != nil {
		opts.Controller(&cfg.Controller)
	}
	cfg.ShutdownTimeout = 5 * time.Second
	cfg.Logger = opts.Logger
	cfg.MutualTLS = !opts.Insecure // every internal hop on mutual TLS, as in production
	pf, err := platform.Start(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	return pf, nil
}

// leaderConnAs returns a connection to cell's leader presenting the
// platform's certificate of id's kind (with mutual TLS): the control
// plane's for CellService (tenant state), the router's for ContextService
// (the bench's writers call the owner directly, as a router does). Close
// it with the returned function. Without mutual TLS it is the platform's
// own connection (closed by the platform).
func leaderConnAs(ctx context.Context, pf *platform.Platform, cell *platform.Cell, kind pki.Kind) (*grpc.ClientConn, func(), error) {
	if pf.CertsDir() == "" {
		conn, err := cell.LeaderConn(ctx)
		return conn, func() {}, err
	}
	l, err := cell.WaitLeader(ctx, 1<<62)
	if err != nil {
		return nil, nil, err
	}
	var id pki.Identity
	switch kind {
	case pki.KindControlPlane:
		id = pki.ControlPlaneIdentity(benchCluster, benchCluster+"-cp")
	case pki.KindRouter:
		id = pki.RouterIdentity(benchCluster, benchCluster+"-router")
	default:
		return nil, nil, fmt.Errorf("bench: no platform certificate of kind %s", kind)
	}
	src, err := pki.NewSource(pki.DirConfig(pf.CertsDir(), id.FileName()))
	if err != nil {
		return nil, nil, fmt.Errorf("bench: %w", err)
	}
	dc := dial.DefaultConfig()
	dc.Credentials = pki.ClientCredentials(src, pki.ExpectKinds(pki.KindNode))
	conn, err := dial.New(l.Info().GRPC, dc)
	if err != nil {
		return nil, nil, fmt.Errorf("bench: %w", err)
	}
	return conn, func() { _ = conn.Close() }, nil
}

// addCell adds a cell of members nodes to pf; opt adjusts each node's
// configuration.
func addCell(ctx context.Context, pf *platform.Platform, region, id string, members int, opt func(*cells.Config)) (*platform.Cell, error) {
	c, err := pf.AddCell(ctx, platform.CellSpec{Region: region, ID: id, Nodes: members, Configure: opt})
	if err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	return c, nil
}

// createTenant creates tenant id on cell (a standby in standbyRegion when
// not empty) with limits no step reaches.
func createTenant(ctx context.Context, pf *platform.Platform, id, region, cell, standbyRegion string) (*cpv1.Tenant, error) {
	resp, err := pf.Admin().CreateTenant(ctx, &cpv1.CreateTenantRequest{
		Id: id, HomeRegion: region, Cell: cell, StandbyRegion: standbyRegion,
		Limits: &cpv1.TenantLimits{Rate: 1e6, Burst: 1 << 30},
	})
	if err != nil {
		return nil, fmt.Errorf("bench: create tenant %s: %w", id, rpcerr.FromStatus(err))
	}
	return resp.GetTenant(), nil
}

// waitStandby waits until tenant's standby on cell is bootstrapped and
// streaming, and returns its replication status.
func waitStandby(ctx context.Context, pf *platform.Platform, cell *platform.Cell, tenant string, timeout time.Duration) (*cellv1.ReplicationStatus, error) {
	wctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var st *cellv1.ReplicationStatus
	err := poll(wctx, func() error {
		conn, closeConn, err := leaderConnAs(wctx, pf, cell, pki.KindControlPlane)
		if err != nil {
			return err
		}
		defer closeConn()
		resp, err := cellv1.NewCellServiceClient(conn).GetTenant(wctx, &cellv1.GetTenantRequest{Tenant: tenant})
		if err != nil {
			return err
		}
		st = resp.GetReplication()
		if resp.GetTenant().GetRole() != cellv1.Role_ROLE_STANDBY || !resp.GetTenant().GetBootstrapped() || st.GetState() != "STREAMING" {
			return fmt.Errorf("standby of %s on %s: %s, bootstrapped %v, replication %v", tenant, cell.ID(),
				resp.GetTenant().GetRole(), resp.GetTenant().GetBootstrapped(), st)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	return st, nil
}

// waitRouted waits until the router routes tenant to a cell with a known
// leader.
func waitRouted(ctx context.Context, pf *platform.Platform, tenant string) error {
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	return poll(wctx, func() error {
		t := pf.Router().Table()
		r, ok := t.Lookup(tenant)
		if !t.Loaded() || !ok {
			return fmt.Errorf("router: tenant %s not routable yet", tenant)
		}
		if c, ok := t.Cell(r.Cell); !ok || c.LeaderGRPC == "" {
			return fmt.Errorf("router: no leader for cell %s", r.Cell)
		}
		return nil
	})
}

// routerData is a ContextService client through the router.
func routerData(pf *platform.Platform) contextv1.ContextServiceClient {
	return contextv1.NewContextServiceClient(pf.RouterConn())
}

// asTenant is ctx with the tenant's metadata.
func asTenant(ctx context.Context, tenant string) context.Context {
	return tenantmd.Outgoing(ctx, tenant, 0)
}
