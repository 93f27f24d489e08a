package platform_test

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/cellplane/cellplane/client"
	"github.com/cellplane/cellplane/controlplane/topo"
	"github.com/cellplane/cellplane/controlplane/topo/etcdtopo"
	"github.com/cellplane/cellplane/internal/cperr"
	"github.com/cellplane/cellplane/internal/dial"
	"github.com/cellplane/cellplane/internal/pki"
	"github.com/cellplane/cellplane/internal/rpcerr"
	"github.com/cellplane/cellplane/internal/tenantmd"
	"github.com/cellplane/cellplane/internal/testutil"
	"github.com/cellplane/cellplane/platform"
	cellv1 "github.com/cellplane/cellplane/proto/cellplane/cell/v1"
	contextv1 "github.com/cellplane/cellplane/proto/cellplane/context/v1"
	cpv1 "github.com/cellplane/cellplane/proto/cellplane/controlplane/v1"
)

// TestMutualTLS starts 1 region × 1 cell × 3 nodes in process with
// MutualTLS: a tenant created through the admin connection (the operator
// certificate) is written and read back through the router (whose calls
// into the cell present its identity); a plaintext connection to a node's
// gRPC port or to the control plane is refused; the client configuration
// file reaches the control plane.
func TestMutualTLS(t *testing.T) {
	cfg := platform.DefaultConfig()
	cfg.Name = "devtls"
	cfg.DataDir = t.TempDir()
	cfg.Regions, cfg.CellsPerRegion, cfg.NodesPerCell = []string{"us-east"}, 1, 3
	cfg.MutualTLS = true
	cfg.Node.MCPDisabled = true
	cfg.Node.RegistryTTL = time.Second
	cfg.Controller.RetryMin, cfg.Controller.RetryMax = 10*time.Millisecond, 200*time.Millisecond
	cfg.ShutdownTimeout = 5 * time.Second
	cfg.Logger = testutil.Logger(t)
	cfg.EtcdUnsafeNoFsync = true
	ctx := testutil.Context(t, 2*time.Minute)
	p, err := platform.Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)

	d := p.Describe()
	if want := filepath.Join(cfg.DataDir, platform.ClientConfigFile); d.ClientConfig != want {
		t.Fatalf("Describe().ClientConfig = %q, want %q", d.ClientConfig, want)
	}
	js, err := json.Marshal(d)
	if err != nil {
		t.Fatal(err)
	}
	var fields map[string]any
	if err := json.Unmarshal(js, &fields); err != nil || fields["client_config"] != d.ClientConfig || fields["controlplane"] != d.ControlPlane {
		t.Fatalf("dev.json body %s (%v)", js, err)
	}
	for _, f := range []string{pki.CACertFile, pki.CAKeyFile, "operator.admin.crt", "controlplane.devtls-cp.crt", "router.devtls-router.crt", "node.us-east.us-east-a.us-east-a-n1.crt"} {
		if _, err := os.Stat(filepath.Join(p.CertsDir(), f)); err != nil {
			t.Errorf("certs dir: %v", err)
		}
	}

	if _, err := p.Admin().CreateTenant(ctx, &cpv1.CreateTenantRequest{Id: "acme", HomeRegion: "us-east"}); err != nil {
		t.Fatalf("create tenant through the admin connection: %v", err)
	}
	data := contextv1.NewContextServiceClient(p.RouterConn())
	tctx := tenantmd.Outgoing(ctx, "acme", 0)
	testutil.Eventually(t, 30*time.Second, func() error {
		_, err := data.CreateContext(tctx, &contextv1.CreateContextRequest{ContextId: "chat"})
		if err == nil || errors.Is(rpcerr.FromStatus(err), cperr.ErrAlreadyExists) {
			return nil
		}
		return err
	})
	if _, err := data.Append(tctx, &contextv1.AppendRequest{ContextId: "chat", RequestId: "r1",
		Entries: []*contextv1.Entry{{Role: "user", Content: &contextv1.Entry_Text{Text: "hello over mTLS"}}}}); err != nil {
		t.Fatalf("append through the router: %v", err)
	}
	got, err := data.Read(tctx, &contextv1.ReadRequest{ContextId: "chat"})
	if err != nil {
		t.Fatalf("read through the router: %v", err)
	}
	if es := got.GetEntries(); len(es) != 1 || es[0].GetText() != "hello over mTLS" {
		t.Fatalf("read back %v", es)
	}

	// The platform's own connection to a node presents the operator
	// certificate, which the cell's table allows GetStatus.
	node := p.Cell("us-east-a").Nodes()[0]
	if _, err := cellv1.NewCellServiceClient(node.Conn()).GetStatus(ctx, &cellv1.GetStatusRequest{}); err != nil {
		t.Fatalf("GetStatus with the operator certificate: %v", err)
	}
	// Plaintext straight to a node's gRPC port, or to the control plane:
	// refused.
	for _, target := range []string{node.Info().GRPC, p.ControlPlaneAddr()} {
		conn, err := dial.New(target, dial.Config{})
		if err != nil {
			t.Fatal(err)
		}
		_, err = cellv1.NewCellServiceClient(conn).GetStatus(ctx, &cellv1.GetStatusRequest{})
		if target == p.ControlPlaneAddr() {
			_, err = cpv1.NewControlPlaneServiceClient(conn).ListTenants(ctx, &cpv1.ListTenantsRequest{})
		}
		_ = conn.Close()
		if err == nil {
			t.Errorf("a plaintext call to %s succeeded", target)
		}
	}

	// etcd: https only, each component its own etcd user.
	eps := p.EtcdEndpoints()
	for _, ep := range eps {
		if !strings.HasPrefix(ep, "https://") {
			t.Fatalf("etcd endpoint %s, want https", ep)
		}
	}
	plain, err := clientv3.New(clientv3.Config{Endpoints: []string{strings.Replace(eps[0], "https://", "http://", 1)}, DialTimeout: 2 * time.Second, Logger: zap.NewNop()})
	if err == nil {
		pctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		_, err = plain.Get(pctx, topo.Prefix+"tenants/acme")
		cancel()
		_ = plain.Close()
		if err == nil {
			t.Error("a plaintext etcd client read a placement")
		}
	}
	for _, tc := range []struct {
		name string
		key  string
	}{
		{"router.devtls-router", topo.TenantKey("acme")},                                // read only
		{"node.us-east.us-east-a.us-east-a-n1", topo.TenantKey("acme")},                 // not a registry key
		{"node.us-east.us-east-a.us-east-a-n1", topo.CellNodeKey("other", "x")},         // another cell's
		{"node.us-east.us-east-a.us-east-a-n1", topo.CellAuthorityKey("us-east-other")}, // another cell's
	} {
		src, err := pki.NewSource(pki.DirConfig(p.CertsDir(), tc.name))
		if err != nil {
			t.Fatal(err)
		}
		ec := etcdtopo.DefaultConfig()
		ec.Endpoints, ec.Identity = eps, src
		st, err := etcdtopo.Dial(ctx, ec)
		if err != nil {
			t.Fatalf("%s: dial etcd: %v", tc.name, err)
		}
		if _, err := st.Get(ctx, topo.TenantKey("acme")); err != nil {
			t.Errorf("%s: read the placement: %v", tc.name, err)
		}
		if _, err := st.Txn(ctx, nil, []topo.Op{topo.Put(tc.key, []byte("x"))}); !errors.Is(err, topo.ErrPermissionDenied) {
			t.Errorf("%s: put %s: %v, want topo.ErrPermissionDenied", tc.name, tc.key, err)
		}
		_ = st.Close()
	}

	// The client configuration file: what cellctl reads.
	cf, err := client.LoadConfigFile(d.ClientConfig)
	if err != nil {
		t.Fatal(err)
	}
	if cf.ControlPlane != p.ControlPlaneAddr() || cf.Router != p.RouterAddr() {
		t.Fatalf("client config %+v", cf)
	}
	src, err := cf.TLSSource()
	if err != nil || src == nil {
		t.Fatalf("TLS source of the client config: %v", err)
	}
	conn, err := dial.New(cf.ControlPlane, dial.Config{Credentials: pki.ClientCredentials(src, pki.ExpectKinds(pki.KindControlPlane))})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	tenants, err := cpv1.NewControlPlaneServiceClient(conn).ListTenants(ctx, &cpv1.ListTenantsRequest{})
	if err != nil {
		t.Fatalf("ListTenants with the client config: %v", err)
	}
	if ts := tenants.GetTenants(); len(ts) != 1 || ts[0].GetId() != "acme" {
		t.Fatalf("tenants %v", ts)
	}
}
