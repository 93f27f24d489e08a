package platform_test

import (
	"errors"
	"slices"
	"testing"
	"time"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/cellplane/cellplane/internal/cperr"
	"github.com/cellplane/cellplane/internal/rpcerr"
	"github.com/cellplane/cellplane/internal/tenantmd"
	"github.com/cellplane/cellplane/internal/testutil"
	"github.com/cellplane/cellplane/platform"
	contextv1 "github.com/cellplane/cellplane/proto/cellplane/context/v1"
	cpv1 "github.com/cellplane/cellplane/proto/cellplane/controlplane/v1"
)

// TestForkThroughRouter: ContextService.Fork through the router (a new
// RPC the router forwards generically), then context_fork and a ttl with
// the MCP SDK's client through the router's MCP endpoint.
func TestForkThroughRouter(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a platform")
	}
	cfg := platform.DefaultConfig()
	cfg.Name = "fork"
	cfg.DataDir = t.TempDir()
	cfg.Regions, cfg.CellsPerRegion, cfg.NodesPerCell = []string{"us-east"}, 1, 1
	cfg.ShutdownTimeout = 5 * time.Second
	cfg.Logger = testutil.Logger(t)
	cfg.EtcdUnsafeNoFsync = true
	ctx := testutil.Context(t, 2*time.Minute)
	p, err := platform.Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	if _, err := p.Admin().CreateTenant(ctx, &cpv1.CreateTenantRequest{Id: "acme", HomeRegion: "us-east"}); err != nil {
		t.Fatalf("create tenant: %v", err)
	}
	data := contextv1.NewContextServiceClient(p.RouterConn())
	tctx := tenantmd.Outgoing(ctx, "acme", 0)
	testutil.Eventually(t, 30*time.Second, func() error {
		_, err := data.CreateContext(tctx, &contextv1.CreateContextRequest{ContextId: "chat", RequestId: "c"})
		if err == nil || errors.Is(rpcerr.FromStatus(err), cperr.ErrAlreadyExists) {
			return nil
		}
		return err
	})
	if _, err := data.Append(tctx, &contextv1.AppendRequest{ContextId: "chat", RequestId: "a", Entries: []*contextv1.Entry{
		{Role: "user", Content: &contextv1.Entry_Text{Text: "one"}}, {Role: "user", Content: &contextv1.Entry_Text{Text: "two"}}}}); err != nil {
		t.Fatal(err)
	}
	f, err := data.Fork(tctx, &contextv1.ForkRequest{ContextId: "chat", AtSeq: 1, NewContextId: "alt", RequestId: "f"})
	if err != nil || f.GetContext().GetParentSeq() != 1 {
		t.Fatalf("Fork through the router: %v %v", f, err)
	}

	client := sdk.NewClient(&sdk.Implementation{Name: "agent", Version: "v0"}, nil)
	cs, err := client.Connect(ctx, &sdk.StreamableClientTransport{Endpoint: p.MCPPublicURL() + "/t/acme/mcp", MaxRetries: -1}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer cs.Close()
	res, err := cs.CallTool(ctx, &sdk.CallToolParams{Name: "context_fork", Arguments: map[string]any{"context_id": "alt", "new_context_id": "alt2", "ttl_seconds": 600}})
	if err != nil || res.IsError {
		t.Fatalf("context_fork through the router: %v %v", res, err)
	}
	out, _ := res.StructuredContent.(map[string]any)
	if out["context_id"] != "alt2" || out["forked_seq"] != float64(1) || out["expire_at"] == nil {
		t.Fatalf("context_fork = %v", out)
	}
	r, err := data.Read(tctx, &contextv1.ReadRequest{ContextId: "alt2"})
	if err != nil {
		t.Fatal(err)
	}
	var texts []string
	for _, e := range r.GetEntries() {
		texts = append(texts, e.GetText())
	}
	if !slices.Equal(texts, []string{"one"}) {
		t.Fatalf("the fork of the fork reads %v", texts)
	}
}
