package platform_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"
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

// TestFrontDoorTLS: with FrontDoorTLS the router's front door serves TLS
// with its certificate of the dev CA: the platform's router connection,
// the Go client from the client configuration file and an MCP client over
// https (whose calls the router proxies to the node's MCP worker over
// mutual TLS) work; plaintext gRPC and HTTP to the router do not.
func TestFrontDoorTLS(t *testing.T) {
	cfg := platform.DefaultConfig()
	cfg.FrontDoorTLS = true
	cfg.DataDir = t.TempDir()
	if err := cfg.Validate(); err == nil {
		t.Fatal("FrontDoorTLS without MutualTLS validated")
	}
	cfg.Name = "devfront"
	cfg.Regions, cfg.CellsPerRegion, cfg.NodesPerCell = []string{"us-east"}, 1, 1
	cfg.MutualTLS = true
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
	if !d.RouterTLS || d.CA == "" || !strings.HasPrefix(p.MCPPublicURL(), "https://") {
		t.Fatalf("Describe() = %+v, MCP URL %s", d, p.MCPPublicURL())
	}
	if _, err := p.Admin().CreateTenant(ctx, &cpv1.CreateTenantRequest{Id: "acme", HomeRegion: "us-east"}); err != nil {
		t.Fatal(err)
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

	// Plaintext to the router's ports: refused.
	conn, err := dial.New(p.RouterAddr(), dial.Config{})
	if err != nil {
		t.Fatal(err)
	}
	_, err = contextv1.NewContextServiceClient(conn).ListContexts(tctx, &contextv1.ListContextsRequest{})
	_ = conn.Close()
	if err == nil {
		t.Error("a plaintext gRPC call to the TLS front door succeeded")
	}
	if resp, err := http.Get("http://" + d.RouterHTTP + "/t/acme/mcp"); err == nil {
		_ = resp.Body.Close()
		if resp.StatusCode < 400 {
			t.Errorf("plain HTTP to the TLS front door: %d", resp.StatusCode)
		}
	}

	// The Go client from client.yaml: TLS to the router.
	cf, err := client.LoadConfigFile(d.ClientConfig)
	if err != nil {
		t.Fatal(err)
	}
	cc, err := cf.ClientConfig()
	if err != nil {
		t.Fatal(err)
	}
	cc.Tenant = "acme"
	c, err := client.New(cc)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Context().Append(ctx, &contextv1.AppendRequest{ContextId: "chat", RequestId: "go-client",
		Entries: []*contextv1.Entry{{Role: "user", Content: &contextv1.Entry_Text{Text: "via the Go client"}}}}); err != nil {
		t.Fatalf("Append with the client configuration file: %v", err)
	}

	// MCP over https, trusting the dev CA.
	pem, err := os.ReadFile(d.CA)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}
	defer tr.CloseIdleConnections()
	sess, err := sdk.NewClient(&sdk.Implementation{Name: "agent", Version: "v0"}, nil).Connect(ctx,
		&sdk.StreamableClientTransport{Endpoint: p.MCPPublicURL() + "/t/acme/mcp", HTTPClient: &http.Client{Transport: tr}, MaxRetries: -1}, nil)
	if err != nil {
		t.Fatalf("MCP over https: %v", err)
	}
	defer sess.Close()
	res, err := sess.CallTool(ctx, &sdk.CallToolParams{Name: "context_read", Arguments: map[string]any{"context_id": "chat"}})
	if err != nil || res.IsError {
		t.Fatalf("MCP context_read over https: %v %+v", err, res)
	}
	if b, _ := json.Marshal(res.StructuredContent); !strings.Contains(string(b), "via the Go client") {
		t.Fatalf("MCP read: %s", b)
	}
}
