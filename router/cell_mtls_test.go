package router_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/cellplane/cellplane/cells"
	"github.com/cellplane/cellplane/controlplane"
	"github.com/cellplane/cellplane/controlplane/cptest"
	"github.com/cellplane/cellplane/controlplane/topo/topotest"
	cpdial "github.com/cellplane/cellplane/internal/dial"
	"github.com/cellplane/cellplane/internal/pki"
	"github.com/cellplane/cellplane/internal/testutil"
	cellv1 "github.com/cellplane/cellplane/proto/cellplane/cell/v1"
	contextv1 "github.com/cellplane/cellplane/proto/cellplane/context/v1"
	cpv1 "github.com/cellplane/cellplane/proto/cellplane/controlplane/v1"
	"github.com/cellplane/cellplane/router"
)

// certsDir is a cluster CA's directory holding certificates of any
// identity, issued on demand.
type certsDir struct {
	ca  *pki.CA
	dir string
}

func newCertsDir(t *testing.T) *certsDir {
	t.Helper()
	ca, err := pki.NewCA("test", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	d := &certsDir{ca: ca, dir: t.TempDir()}
	if err := pki.WriteCA(d.dir, ca, false); err != nil {
		t.Fatal(err)
	}
	return d
}

// source issues a certificate for id and returns a Source on it.
func (d *certsDir) source(t testing.TB, id pki.Identity) *pki.Source {
	t.Helper()
	leaf, err := d.ca.Issue(pki.LeafRequest{Identity: id, Hosts: []string{"127.0.0.1"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := pki.WriteLeaf(d.dir, id.FileName(), leaf, true); err != nil {
		t.Fatal(err)
	}
	src, err := pki.NewSource(pki.DirConfig(d.dir, id.FileName()))
	if err != nil {
		t.Fatal(err)
	}
	return src
}

// TestCellMutualTLSEndToEnd: a control plane, a 3-node cell and a router,
// all with identities of one cluster CA. The control plane's cell client
// places a tenant on the cell (SetTenant over mutual TLS, a control plane
// identity); a write through a router with its internal identity reaches
// the cell; a standby cell replicates it (node identities across cells); a
// router without an identity cannot reach the cell (no plaintext fallback).
func TestCellMutualTLSEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("starts etcd, a control plane, a 3-node cell and routers, all over mutual TLS")
	}
	d := newCertsDir(t)
	etcd := topotest.StartEtcdServer(t)
	env := &cptest.Env{Endpoints: etcd.Endpoints()}
	env.AddReplica(t, "cp1", func(c *controlplane.Config) { c.TLS = d.source(t, pki.ControlPlaneIdentity("test", "cp1")) })
	admin := dialPKI(t, env.Addr(), d.source(t, pki.OperatorIdentity("test", pki.RoleAdmin, "alice")), pki.KindControlPlane)
	adm := cpv1.NewControlPlaneServiceClient(admin)
	ctx := testutil.Context(t, 2*time.Minute)

	if _, err := adm.CreateRegion(ctx, &cpv1.CreateRegionRequest{Name: "us-east"}); err != nil {
		t.Fatal(err)
	}
	if _, err := adm.CreateCell(ctx, &cpv1.CreateCellRequest{Id: "c1", Region: "us-east", ExpectedMembers: 3}); err != nil {
		t.Fatal(err)
	}
	env.StartNodes(t, "c1", 3, func(c *cells.Config) {
		c.TLS = d.source(t, pki.NodeIdentity("test", "us-east", "c1", c.NodeID))
	})
	env.WaitHealthy(t, adm, "c1") // placement chooses only HEALTHY cells
	if _, err := adm.CreateTenant(ctx, &cpv1.CreateTenantRequest{Id: "acme", HomeRegion: "us-east"}); err != nil {
		t.Fatal(err)
	}
	key, err := adm.CreateApiKey(ctx, &cpv1.CreateApiKeyRequest{Tenant: "acme"})
	if err != nil {
		t.Fatal(err)
	}
	p := &platform{etcd: etcd, env: env, keys: map[string]string{"acme": key.GetSecret()}}

	// The control plane placed the tenant on the TLS cell.
	testutil.Eventually(t, 30*time.Second, func() error {
		resp, err := adm.GetTenant(ctx, &cpv1.GetTenantRequest{Id: "acme"})
		if err != nil {
			return err
		}
		if s := resp.GetTenant().GetState(); s != cpv1.TenantState_TENANT_STATE_ACTIVE {
			return fmt.Errorf("tenant acme is %s", s)
		}
		return nil
	})

	rsrc := d.source(t, pki.RouterIdentity("test", "r1"))
	r := p.startRouterWith(t, func(c *router.Config) { c.InternalTLS = rsrc })
	cs := contextv1.NewContextServiceClient(dial(t, r.GRPCAddr()))
	testutil.Eventually(t, 30*time.Second, func() error {
		_, err := cs.CreateContext(p.as(ctx, "acme"), &contextv1.CreateContextRequest{ContextId: "chat-1", RequestId: "c1"})
		return err
	})
	if _, err := cs.Append(p.as(ctx, "acme"), appendReq("chat-1", "over mutual TLS")); err != nil {
		t.Fatalf("append through the router: %v", err)
	}

	// A standby cell in another region replicates the tenant from the
	// owner cell: its sink streams and exports over mutual TLS with its
	// node identity (ReplicationService, AckReplica).
	if _, err := adm.CreateRegion(ctx, &cpv1.CreateRegionRequest{Name: "eu"}); err != nil {
		t.Fatal(err)
	}
	if _, err := adm.CreateCell(ctx, &cpv1.CreateCellRequest{Id: "e1", Region: "eu", ExpectedMembers: 1}); err != nil {
		t.Fatal(err)
	}
	standby := env.StartNodes(t, "e1", 1, func(c *cells.Config) {
		c.TLS = d.source(t, pki.NodeIdentity("test", "eu", "e1", c.NodeID))
	})
	testutil.Eventually(t, 30*time.Second, func() error {
		resp, err := adm.GetCell(ctx, &cpv1.GetCellRequest{Id: "e1"})
		if err != nil {
			return err
		}
		if h := resp.GetCell().GetHealth(); h != cpv1.CellHealth_CELL_HEALTH_HEALTHY {
			return fmt.Errorf("cell e1 is %s", h)
		}
		return nil
	})
	if _, err := adm.SetStandby(ctx, &cpv1.SetStandbyRequest{Tenant: "acme", Region: "eu"}); err != nil {
		t.Fatal(err)
	}
	cpsrc, err := pki.NewSource(pki.DirConfig(d.dir, pki.ControlPlaneIdentity("test", "cp1").FileName()))
	if err != nil {
		t.Fatal(err)
	}
	e1 := cellv1.NewCellServiceClient(dialPKI(t, standby[0].GRPCAddr(), cpsrc, pki.KindNode))
	testutil.Eventually(t, 30*time.Second, func() error {
		resp, err := e1.GetTenant(ctx, &cellv1.GetTenantRequest{Tenant: "acme"})
		if err != nil {
			return err
		}
		if !resp.GetTenant().GetBootstrapped() || resp.GetReplication().GetAppliedTseq() < 2 {
			return fmt.Errorf("standby e1: %v %v", resp.GetTenant(), resp.GetReplication())
		}
		return nil
	})

	// A router without an internal identity reaches nothing.
	plain := p.startRouterWith(t, nil)
	testutil.Eventually(t, 20*time.Second, func() error {
		if _, ok := plain.Table().Lookup("acme"); !ok {
			return errors.New("not routed yet")
		}
		return nil
	})
	pcs := contextv1.NewContextServiceClient(dial(t, plain.GRPCAddr()))
	cctx, cancel := context.WithTimeout(p.as(ctx, "acme"), 5*time.Second)
	defer cancel()
	if _, err := pcs.ListContexts(cctx, &contextv1.ListContextsRequest{}); err == nil {
		t.Fatal("a router without an internal identity reached a cell serving mutual TLS")
	}
}

func dialPKI(t *testing.T, addr string, src *pki.Source, peer pki.Kind) *grpc.ClientConn {
	t.Helper()
	cfg := cpdial.DefaultConfig()
	cfg.Credentials = pki.ClientCredentials(src, pki.ExpectKinds(peer))
	conn, err := cpdial.New(addr, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}
