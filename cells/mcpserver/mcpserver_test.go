package mcpserver_test

import (
	"context"
	"crypto/tls"
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

type bearer struct {
	key string
	rt  http.RoundTripper // nil: http.DefaultTransport
}

func (b bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	if b.key != "" {
		r.Header.Set("Authorization", "Bearer "+b.key)
	}
	if b.rt == nil {
		return http.DefaultTransport.RoundTrip(r)
	}
	return b.rt.RoundTrip(r)
}

func connect(t *testing.T, ctx context.Context, url, key string) *sdk.ClientSession {
	t.Helper()
	cs, err := connectVia(ctx, url, bearer{key: key})
	if err != nil {
		t.Fatalf("connect %s: %v", url, err)
	}
	t.Cleanup(func() { _ = cs.Close() })
	return cs
}

// connectVia opens an MCP session at url through rt.
func connectVia(ctx context.Context, url string, rt http.RoundTripper) (*sdk.ClientSession, error) {
	c := sdk.NewClient(&sdk.Implementation{Name: "agent", Version: "v0"}, nil)
	return c.Connect(ctx, &sdk.StreamableClientTransport{Endpoint: url, HTTPClient: &http.Client{Transport: rt}, MaxRetries: -1}, nil)
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
		HTTPClient: &http.Client{Transport: bearer{key: "cpk_0123456789abcdef_wrong"}}, MaxRetries: -1}, nil); err == nil {
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
// serving mutual TLS and serves MCP over mutual TLS to routers only: no
// certificate, another CA's, an expired one and the wrong kinds are
// refused with nothing written; a router with its identity proxies MCP
// calls to it and the nodes' ports; a router without one cannot, and a
// worker without an identity is refused by the cell.
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
	env.WaitHealthy(t, adm, "c1") // placement chooses only HEALTHY cells
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
	transport := func(cfg *tls.Config) *http.Transport {
		tr := &http.Transport{TLSClientConfig: cfg}
		t.Cleanup(tr.CloseIdleConnections)
		return tr
	}
	// The worker's HTTP port serves MCP over mutual TLS to a router.
	asRouter := transport(source(pki.RouterIdentity("test", "r1")).ClientTLSConfig(pki.ExpectKinds(pki.KindWorker)))
	mcpURL := "https://" + withID.HTTPAddr() + "/t/acme/mcp"
	testutil.Eventually(t, 30*time.Second, func() error {
		cs, err := connectVia(ctx, mcpURL, bearer{rt: asRouter})
		if err != nil {
			return err
		}
		defer cs.Close()
		_, err = call(ctx, cs, "context_create", map[string]any{"context_id": "chat"})
		return err
	})
	// A tls.Config presenting leaf (nil: no certificate) to any server.
	presenting := func(leaf *pki.Leaf) *tls.Config {
		cfg := &tls.Config{MinVersion: tls.VersionTLS13, InsecureSkipVerify: true}
		if leaf != nil {
			cfg.Certificates = []tls.Certificate{{Certificate: [][]byte{leaf.Cert.Raw}, PrivateKey: leaf.Key, Leaf: leaf.Cert}}
		}
		return cfg
	}
	issue := func(ca *pki.CA, req pki.LeafRequest) *pki.Leaf {
		leaf, err := ca.Issue(req)
		if err != nil {
			t.Fatal(err)
		}
		return leaf
	}
	otherCA, err := pki.NewCA("test", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	refused := []struct {
		name string
		rt   http.RoundTripper
		url  string
		// health: the monitoring pages answer this caller.
		health bool
	}{
		{name: "plaintext", rt: http.DefaultTransport, url: "http://" + withID.HTTPAddr() + "/t/acme/mcp"},
		{name: "no certificate", rt: transport(presenting(nil))},
		{name: "another CA", rt: transport(presenting(issue(otherCA, pki.LeafRequest{Identity: pki.RouterIdentity("test", "r1")})))},
		{name: "expired router", rt: transport(presenting(issue(ca, pki.LeafRequest{Identity: pki.RouterIdentity("test", "r1"),
			NotBefore: time.Now().Add(-2 * time.Hour), Lifetime: time.Hour})))},
		{name: "tenant client", rt: transport(presenting(issue(ca, pki.LeafRequest{Identity: pki.ClientIdentity("test", "acme")})))},
		{name: "admin operator", health: true, rt: transport(presenting(issue(ca, pki.LeafRequest{Identity: pki.OperatorIdentity("test", pki.RoleAdmin, "alice")})))},
		{name: "node", health: true, rt: transport(presenting(issue(ca, pki.LeafRequest{Identity: pki.NodeIdentity("test", "us-east", "c1", "n9")})))},
		{name: "worker", health: true, rt: transport(presenting(issue(ca, pki.LeafRequest{Identity: pki.WorkerIdentity("test", "w9")})))},
	}
	for _, c := range refused {
		url := c.url
		if url == "" {
			url = mcpURL
		}
		if cs, err := connectVia(ctx, url, bearer{rt: c.rt}); err == nil {
			_, err = call(ctx, cs, "context_create", map[string]any{"context_id": "refused"})
			_ = cs.Close()
			if err == nil {
				t.Errorf("%s: MCP call accepted", c.name)
			}
		}
		// The well-known metadata is the router's to ask for too.
		if code := httpStatus(ctx, c.rt, strings.Replace(url, "/t/", "/.well-known/oauth-protected-resource/t/", 1)); code == http.StatusOK {
			t.Errorf("%s: metadata answered %d", c.name, code)
		}
		if code := httpStatus(ctx, c.rt, "https://"+withID.HTTPAddr()+"/healthz"); (code == http.StatusOK) != c.health {
			t.Errorf("%s: /healthz = %d, want served %v", c.name, code, c.health)
		}
	}
	// Nothing of theirs was written: the router sees "chat" alone.
	cs, err := connectVia(ctx, mcpURL, bearer{rt: asRouter})
	if err != nil {
		t.Fatal(err)
	}
	defer cs.Close()
	if out, err := call(ctx, cs, "context_list", map[string]any{}); err != nil || !strings.Contains(out, "chat") || strings.Contains(out, "refused") {
		t.Fatalf("contexts after the refusals: %s, %v", out, err)
	}

	// End to end: a router with its identity proxies MCP to the workers
	// (the nodes' HTTP ports and w1) over mutual TLS; one without an
	// identity cannot reach them.
	startRouter := func(src *pki.Source) *router.Server {
		rcfg := router.DefaultConfig()
		rcfg.EtcdEndpoints = env.Endpoints
		rcfg.GRPCListener, rcfg.HTTPListener = testutil.Listen(t), testutil.Listen(t)
		rcfg.Auth.Mode = auth.ModeNone
		rcfg.InternalTLS = src
		rcfg.Logger = testutil.Logger(t)
		r, err := router.Start(ctx, rcfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = r.Close() })
		testutil.Eventually(t, 10*time.Second, func() error {
			if c, ok := r.Table().Cell("c1"); !ok || len(c.Workers) != 1 || len(c.Members) != 3 {
				return fmt.Errorf("router's view of c1: %+v", c)
			}
			return nil
		})
		return r
	}
	r := startRouter(source(pki.RouterIdentity("test", "r1")))
	viaRouter := connect(t, ctx, "http://"+r.HTTPAddr()+"/t/acme/mcp", "")
	for i := range 8 { // spread over the three nodes and w1
		if _, err := call(ctx, viaRouter, "context_append", map[string]any{"context_id": "chat", "request_id": fmt.Sprint("via-router-", i),
			"entries": []map[string]any{{"role": "user", "content": fmt.Sprint("routed ", i)}}}); err != nil {
			t.Fatalf("append %d through the router: %v", i, err)
		}
	}
	if out, err := call(ctx, viaRouter, "context_read", map[string]any{"context_id": "chat", "max_entries": 100}); err != nil || strings.Count(out, "routed ") != 8 {
		t.Fatalf("read through the router: %s, %v", out, err)
	}
	plain := startRouter(nil)
	if cs, err := connectVia(ctx, "http://"+plain.HTTPAddr()+"/t/acme/mcp", bearer{}); err == nil {
		_, err = call(ctx, cs, "context_list", map[string]any{})
		_ = cs.Close()
		if err == nil {
			t.Fatal("a router without an identity reached the workers")
		}
	}

	without := start("w2", nil)
	cs2 := connect(t, ctx, "http://"+without.HTTPAddr()+"/t/acme/mcp", "")
	if _, err := call(ctx, cs2, "context_list", map[string]any{}); err == nil {
		t.Fatal("a worker without an identity reached a cell serving mutual TLS")
	}
}

// httpStatus GETs url through rt: its status, or 0 when no answer came.
func httpStatus(ctx context.Context, rt http.RoundTripper, url string) int {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0
	}
	resp, err := rt.RoundTrip(req)
	if err != nil {
		return 0
	}
	_ = resp.Body.Close()
	return resp.StatusCode
}
