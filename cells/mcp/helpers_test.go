package mcp_test

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/cellplane/cellplane/cells/celltest"
	"github.com/cellplane/cellplane/cells/mcp"
	"github.com/cellplane/cellplane/internal/auth"
	"github.com/cellplane/cellplane/internal/cperr"
	"github.com/cellplane/cellplane/internal/testutil"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// startCell starts a one-node cell on loopback, makes it OWNER of
// tenants at epoch 1 and returns a connection to it.
func startCell(t testing.TB, tenants ...string) *grpc.ClientConn {
	t.Helper()
	n := celltest.StartCell(t, 1)[0]
	celltest.Own(t, n.GRPCAddr(), tenants...)
	return dial(t, n.GRPCAddr())
}

func dial(t testing.TB, addr string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

type worker struct {
	*mcp.Worker
	srv  *http.Server
	base string // http://127.0.0.1:port
}

func (w *worker) url(tenant string) string { return w.base + "/t/" + tenant + "/mcp" }

// startWorker serves a Worker on a loopback listener until the test ends.
func startWorker(t testing.TB, cfg mcp.Config, cell grpc.ClientConnInterface, authn mcp.Authenticator) *worker {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = testutil.Logger(t).With("component", "mcp")
	}
	l := testutil.Listen(t)
	if cfg.PublicURL == "" {
		cfg.PublicURL = "http://" + l.Addr().String()
	}
	w, err := mcp.New(cfg, cell, authn)
	if err != nil {
		t.Fatalf("mcp.New: %v", err)
	}
	srv := &http.Server{Handler: w.Handler(), ReadHeaderTimeout: 10 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(l)
	}()
	t.Cleanup(func() {
		srv.Close()
		<-done
		w.Close()
	})
	return &worker{Worker: w, srv: srv, base: "http://" + l.Addr().String()}
}

// headerTransport adds headers to every request.
type headerTransport struct {
	base   http.RoundTripper
	header http.Header
}

func (h headerTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	for k, vs := range h.header {
		r.Header[k] = vs
	}
	return h.base.RoundTrip(r)
}

// connect opens an MCP client session at protocol version (the SDK
// client discovers with 2026-07-28 or initializes with older versions).
func connect(t *testing.T, ctx context.Context, endpoint, version string, header http.Header) *sdk.ClientSession {
	t.Helper()
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	transport := &sdk.StreamableClientTransport{
		Endpoint:             endpoint,
		HTTPClient:           &http.Client{Transport: headerTransport{base: tr, header: header}},
		DisableStandaloneSSE: true,
		MaxRetries:           -1,
	}
	client := sdk.NewClient(&sdk.Implementation{Name: "test", Version: "v0"}, nil)
	cs, err := client.Connect(ctx, transport, &sdk.ClientSessionOptions{ProtocolVersion: version})
	if err != nil {
		t.Fatalf("connect %s at %s: %v", endpoint, version, err)
	}
	t.Cleanup(func() { cs.Close() })
	return cs
}

// callTool calls a tool and fails the test on a protocol error.
func callTool(t *testing.T, ctx context.Context, cs *sdk.ClientSession, name string, args any) *sdk.CallToolResult {
	t.Helper()
	res, err := cs.CallTool(ctx, &sdk.CallToolParams{Name: name, Arguments: args})
	if err != nil {
		t.Fatalf("%s: protocol error: %v", name, err)
	}
	return res
}

// ok calls a tool that must succeed and decodes its structured content
// into out (may be nil).
func ok(t *testing.T, ctx context.Context, cs *sdk.ClientSession, name string, args, out any) {
	t.Helper()
	res := callTool(t, ctx, cs, name, args)
	if res.IsError {
		t.Fatalf("%s(%v): tool error: %s", name, args, text(res))
	}
	if res.StructuredContent == nil {
		t.Fatalf("%s: no structured content", name)
	}
	if len(res.Content) == 0 {
		t.Fatalf("%s: no text content", name)
	}
	b, err := json.Marshal(res.StructuredContent)
	if err != nil {
		t.Fatal(err)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("%s: decode %s: %v", name, b, err)
		}
	}
}

// fails calls a tool that must fail with reason and returns the text.
func fails(t *testing.T, ctx context.Context, cs *sdk.ClientSession, name string, args any, reason cperr.Reason) string {
	t.Helper()
	res := callTool(t, ctx, cs, name, args)
	txt := text(res)
	if !res.IsError {
		t.Fatalf("%s(%v) succeeded (%s), want %s", name, args, txt, reason)
	}
	if !strings.HasPrefix(txt, string(reason)+":") {
		t.Fatalf("%s(%v) failed with %q, want reason %s", name, args, txt, reason)
	}
	return txt
}

func text(res *sdk.CallToolResult) string {
	var b strings.Builder
	for _, c := range res.Content {
		if tc, ok := c.(*sdk.TextContent); ok {
			b.WriteString(tc.Text)
		}
	}
	return b.String()
}

// fakeAuth accepts "Authorization: Bearer <principal>[;scope,scope]"
// for the audience the worker computes (no scopes listed: the default
// ones); "Bearer denied" is PERMISSION_DENIED.
type fakeAuth struct{}

func (fakeAuth) Authenticate(r *http.Request, tenant, resource string) (auth.Identity, error) {
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	switch {
	case !ok || tok == "":
		return auth.Identity{}, cperr.New(cperr.Unauthenticated, "a bearer token is required")
	case tok == "denied":
		return auth.Identity{}, cperr.New(cperr.PermissionDenied, "no access to tenant %s", tenant)
	case resource != "http://"+r.Host+"/t/"+tenant+"/mcp":
		return auth.Identity{}, cperr.New(cperr.Unauthenticated, "wrong audience %s", resource)
	}
	name, list, _ := strings.Cut(tok, ";")
	scopes := auth.DefaultScopes
	if list != "" {
		scopes = 0
		for _, x := range strings.Split(list, ",") {
			scopes = scopes.With(auth.Scope(x))
		}
	}
	return auth.Identity{Tenant: tenant, Principal: name, Scopes: scopes}, nil
}

func (fakeAuth) Challenge(err error) string {
	return `Bearer realm="cellplane", error="invalid_token"`
}

func (fakeAuth) AuthorizationServers() []string { return []string{"https://auth.example"} }

func bearer(p string) http.Header {
	return http.Header{"Authorization": {"Bearer " + p}}
}
