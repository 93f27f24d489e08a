package mcpserver_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"
	"go.uber.org/goleak"

	"github.com/cellplane/cellplane/cells"
	"github.com/cellplane/cellplane/cells/mcpauth"
	"github.com/cellplane/cellplane/cells/mcpserver"
	"github.com/cellplane/cellplane/controlplane"
	"github.com/cellplane/cellplane/controlplane/cptest"
	"github.com/cellplane/cellplane/controlplane/topo"
	"github.com/cellplane/cellplane/controlplane/topo/topotest"
	"github.com/cellplane/cellplane/internal/auth"
	"github.com/cellplane/cellplane/internal/dial"
	"github.com/cellplane/cellplane/internal/pki"
	"github.com/cellplane/cellplane/internal/testutil"
	cpv1 "github.com/cellplane/cellplane/proto/cellplane/controlplane/v1"
	"github.com/cellplane/cellplane/router"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type bearer struct{ key string }

func (b bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+b.key)
	return http.DefaultTransport.RoundTrip(r)
}

func connect(t *testing.T, ctx context.Context, url, key string) *sdk.ClientSession {
	t.Helper()
	c := sdk.NewClient(&sdk.Implementation{Name: "agent", Version: "v0"}, nil)
	cs, err := c.Connect(ctx, &sdk.StreamableClientTransport{Endpoint: url, HTTPClient: &http.Client{Transport: bearer{key}}, MaxRetries: -1}, nil)
	if err != nil {
		t.Fatalf("connect %s: %v", url, err)
	}
	t.Cleanup(func() { _ = cs.Close() })
	return cs
}

func call(ctx context.Context, cs *sdk.ClientSession, tool string, args map[string]any) (string, error) {
	res, err := cs.CallTool(ctx, &sdk.CallToolParams{Name: tool, Arguments: args})
	if err != nil {
		return "", err
	}
	if res.IsError {
		var b strings.Builder
		for _, c := range res.Content {
			if tc, ok := c.(*sdk.TextContent); ok {
				b.WriteString(tc.Text)
			}
		}
		return "", errors.New(b.String())
	}
	return fmt.Sprint(res.StructuredContent), nil
}

// A stand-alone worker pool next to a registry-formed cell: it registers
// as a WORKER, serves the tenant's tools with API-key auth, is reached
// through the router at /t/<tenant>/mcp, and deregisters when it stops.
func TestWorkerPoolThroughTheRouter(t *testing.T) {
	if testing.Short() {
		t.Skip("starts etcd, a control plane, a 3-node cell, a worker and a router")
	}
	env := cptest.New(t)
	env.CreateCell(t, "us-east", "c1", 3)
	ctx := testutil.Context(t, 90*time.Second)
	cl := env.Client(t)
	if _, err := cl.CreateTenant(ctx, &cpv1.CreateTenantRequest{Id: "acme", HomeRegion: "us-east"}); err != nil {
		t.Fatal(err)
	}
	key, err := cl.CreateApiKey(ctx, &cpv1.CreateApiKeyRequest{Tenant: "acme"})
	if err != nil {
		t.Fatal(err)
	}
	st := env.Store(t)
	authn, err := mcpauth.New(mcpauth.Config{Registry: st})
	if err != nil {
		t.Fatal(err)
	}
	cfg := mcpserver.DefaultConfig()
	cfg.ID, cfg.Cell, cfg.Registry, cfg.Auth = "pool-1", "c1", st, authn
	cfg.HTTPListener = testutil.Listen(t)
	cfg.RegistryTTL = time.Second
	cfg.Logger = testutil.Logger(t)
	w, err := mcpserver.Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()

	// Registered as a worker of c1.
	testutil.Eventually(t, 10*time.Second, func() error {
		kv, err := st.Get(ctx, topo.CellNodeKey("c1", "pool-1"))
		if err != nil {
			return err
		}
		if !strings.Contains(string(kv.Value), w.HTTPAddr()) {
			return fmt.Errorf("registry record %q lacks %s", kv.Value, w.HTTPAddr())
		}
		return nil
	})

	// Directly: a wrong key is refused, the right one works.
	bad := sdk.NewClient(&sdk.Implementation{Name: "x", Version: "v0"}, nil)
	if _, err := bad.Connect(ctx, &sdk.StreamableClientTransport{Endpoint: "http://" + w.HTTPAddr() + "/t/acme/mcp",
		HTTPClient: &http.Client{Transport: bearer{"cpk_0123456789abcdef_wrong"}}, MaxRetries: -1}, nil); err == nil {
		t.Fatal("a wrong API key was accepted")
	}
	direct := connect(t, ctx, "http://"+w.HTTPAddr()+"/t/acme/mcp", key.GetSecret())
	if _, err := call(ctx, direct, "context_create", map[string]any{"context_id": "chat"}); err != nil {
		t.Fatal(err)
	}
	if _, err := call(ctx, direct, "context_append", map[string]any{"context_id": "chat", "request_id": "r1",
		"entries": []map[string]any{{"role": "user", "content": "via the pool"}}}); err != nil {
		t.Fatal(err)
	}

	// Through the router: workers are the nodes' HTTP ports and the pool.
	rcfg := router.DefaultConfig()
	rcfg.EtcdEndpoints = env.Endpoints
	rcfg.GRPCListener, rcfg.HTTPListener = testutil.Listen(t), testutil.Listen(t)
	rcfg.Auth.Mode = auth.ModeAPIKey
	rcfg.Logger = testutil.Logger(t)
	r, err := router.Start(ctx, rcfg)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	testutil.Eventually(t, 10*time.Second, func() error {
		c, ok := r.Table().Cell("c1")
		if !ok || len(c.Workers) != 1 || len(c.Members) != 3 {
			return fmt.Errorf("router's view of c1: %+v", c)
		}
		if _, _, ok := r.Table().APIKey(key.GetKey().GetId()); !ok {
			return errors.New("key not in the router's table yet")
		}
		return nil
	})
	viaRouter := connect(t, ctx, "http://"+r.HTTPAddr()+"/t/acme/mcp", key.GetSecret())
	for i := range 6 { // spread over the nodes' workers and the pool
		if _, err := call(ctx, viaRouter, "context_append", map[string]any{"context_id": "chat", "request_id": fmt.Sprint("via-router-", i),
			"entries": []map[string]any{{"role": "user", "content": fmt.Sprint("routed ", i)}}}); err != nil {
			t.Fatalf("append %d through the router: %v", i, err)
		}
	}
	out, err := call(ctx, viaRouter, "context_read", map[string]any{"context_id": "chat", "max_entries": 100})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Count(out, "routed ") != 6 || strings.Count(out, "via the pool") != 1 {
		t.Fatalf("read through the router: %s", out)
	}

	// Stopping the worker removes it from the registry at once.
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Get(ctx, topo.CellNodeKey("c1", "pool-1")); !errors.Is(err, topo.ErrNotFound) {
		t.Fatalf("worker key after Close: %v", err)
	}
}

// A stand-alone worker with a worker identity (Config.TLS) reaches a cell
// serving mutual TLS; one without an identity is refused by the cell.
func TestWorkerMutualTLS(t *testing.T) {
	if testing.Short() {
		t.Skip("starts etcd, a control plane and a 3-node cell over mutual TLS, and workers")
	}
	ca, err := pki.NewCA("test", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := pki.WriteCA(dir, ca, false); err != nil {
		t.Fatal(err)
	}
	source := func(id pki.Identity) *pki.Source {
		leaf, err := ca.Issue(pki.LeafRequest{Identity: id, Hosts: []string{"127.0.0.1"}})
		if err != nil {
			t.Fatal(err)
		}
		if err := pki.WriteLeaf(dir, id.FileName(), leaf, true); err != nil {
			t.Fatal(err)
		}
		src, err := pki.NewSource(pki.DirConfig(dir, id.FileName()))
		if err != nil {
			t.Fatal(err)
		}
		return src
	}
	env := &cptest.Env{Endpoints: topotest.StartEtcd(t)}
	env.AddReplica(t, "cp1", func(c *controlplane.Config) { c.TLS = source(pki.ControlPlaneIdentity("test", "cp1")) })
	dc := dial.DefaultConfig()
	dc.Credentials = pki.ClientCredentials(source(pki.OperatorIdentity("test", pki.RoleAdmin, "alice")), pki.ExpectKinds(pki.KindControlPlane))
	conn, err := dial.New(env.Addr(), dc)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	adm := cpv1.NewControlPlaneServiceClient(conn)
	ctx := testutil.Context(t, 90*time.Second)
	if _, err := adm.CreateRegion(ctx, &cpv1.CreateRegionRequest{Name: "us-east"}); err != nil {
		t.Fatal(err)
	}
	if _, err := adm.CreateCell(ctx, &cpv1.CreateCellRequest{Id: "c1", Region: "us-east", ExpectedMembers: 3}); err != nil {
		t.Fatal(err)
	}
	env.StartNodes(t, "c1", 3, func(c *cells.Config) { c.TLS = source(pki.NodeIdentity("test", "us-east", "c1", c.NodeID)) })
	if _, err := adm.CreateTenant(ctx, &cpv1.CreateTenantRequest{Id: "acme", HomeRegion: "us-east"}); err != nil {
		t.Fatal(err)
	}
	st := env.Store(t)
	start := func(id string, src *pki.Source) *mcpserver.Server {
		cfg := mcpserver.DefaultConfig()
		cfg.ID, cfg.Cell, cfg.Registry, cfg.TLS = id, "c1", st, src
		cfg.HTTPListener = testutil.Listen(t)
		cfg.RegistryTTL = time.Second
		cfg.Logger = testutil.Logger(t)
		w, err := mcpserver.Start(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = w.Close() })
		return w
	}
	withID := start("w1", source(pki.WorkerIdentity("test", "w1")))
	testutil.Eventually(t, 30*time.Second, func() error {
		cs := connect(t, ctx, "http://"+withID.HTTPAddr()+"/t/acme/mcp", "")
		_, err := call(ctx, cs, "context_create", map[string]any{"context_id": "chat"})
		return err
	})

	without := start("w2", nil)
	cs := connect(t, ctx, "http://"+without.HTTPAddr()+"/t/acme/mcp", "")
	if _, err := call(ctx, cs, "context_list", map[string]any{}); err == nil {
		t.Fatal("a worker without an identity reached a cell serving mutual TLS")
	}
}
