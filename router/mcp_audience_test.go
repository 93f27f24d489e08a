package router_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/cellplane/cellplane/controlplane/catalog"
	"github.com/cellplane/cellplane/controlplane/topo"
	"github.com/cellplane/cellplane/controlplane/topo/memtopo"
	"github.com/cellplane/cellplane/internal/auth"
	"github.com/cellplane/cellplane/internal/testutil"
	cpv1 "github.com/cellplane/cellplane/proto/cellplane/controlplane/v1"
	"github.com/cellplane/cellplane/router"
)

// M4 at the router: with --mcp-public-url, an MCP JWT's audience is the
// tenant's URL under it, whatever the Host header says, and the RFC 9728
// metadata the router serves names that URL.
func TestMCPAudienceIsThePublicURL(t *testing.T) {
	st := memtopo.New()
	t.Cleanup(func() { st.Close() })
	ctx := testutil.Context(t, 30*time.Second)
	worker := mcpWorker(t)
	for key, val := range map[string][]byte{
		topo.CellKey("w1"):               catalog.Encode(&cpv1.Cell{Id: "w1", Region: "us-east", ExpectedMembers: 1, State: cpv1.CellState_CELL_STATE_ACTIVE}),
		topo.CellNodeKey("w1", "pool-1"): catalog.Encode(&cpv1.Node{Id: "pool-1", Cell: "w1", Role: cpv1.NodeRole_NODE_ROLE_WORKER, HttpAddr: worker}),
		topo.TenantKey("acme"):           catalog.Encode(&cpv1.Tenant{Id: "acme", HomeRegion: "us-east", Cell: "w1", State: cpv1.TenantState_TENANT_STATE_ACTIVE, Epoch: 1}),
	} {
		if _, err := st.Create(ctx, key, val); err != nil {
			t.Fatal(err)
		}
	}
	iss := newIssuer(t)
	cfg := router.DefaultConfig()
	cfg.Store = st
	cfg.GRPCListener, cfg.HTTPListener = testutil.Listen(t), testutil.Listen(t)
	cfg.Auth.Mode = auth.ModeJWT
	cfg.Auth.JWKSFile, cfg.Auth.Issuer, cfg.Auth.Audience = iss.file, "https://issuer.test", "cellplane"
	cfg.MCP.PublicURL = "https://mcp.example.test"
	cfg.Logger = testutil.Logger(t)
	r, err := router.Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	testutil.Eventually(t, 10*time.Second, func() error {
		if _, ok := r.Table().Lookup("acme"); !ok {
			return fmt.Errorf("not routed yet")
		}
		return nil
	})
	const public = "https://mcp.example.test/t/acme/mcp"
	do := func(method, path, host, token string) (*http.Response, string) {
		t.Helper()
		req, _ := http.NewRequestWithContext(ctx, method, "http://"+r.HTTPAddr()+path, strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{}}`))
		req.Host = host
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "application/json, text/event-stream")
		req.Header.Set("Mcp-Protocol-Version", "2025-06-18")
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, string(b)
	}
	for name, aud := range map[string]string{
		"another host's URL": "http://other.example/t/acme/mcp",
		"the fixed audience": "cellplane",
	} {
		resp, body := do("POST", "/t/acme/mcp", "other.example", iss.token(t, "acme", aud, time.Minute))
		if resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("%s with Host other.example: %d %s, want 401", name, resp.StatusCode, body)
		}
		if got := resp.Header.Get("WWW-Authenticate"); !strings.Contains(got, `resource_metadata="https://mcp.example.test/.well-known/oauth-protected-resource/t/acme/mcp"`) {
			t.Fatalf("WWW-Authenticate %q names no resource metadata", got)
		}
	}
	if resp, body := do("POST", "/t/acme/mcp", r.HTTPAddr(), iss.token(t, "acme", public, time.Minute)); resp.StatusCode != http.StatusOK {
		t.Fatalf("a token for %s: %d %s", public, resp.StatusCode, body)
	}
	resp, body := do("GET", "/.well-known/oauth-protected-resource/t/acme/mcp", "other.example", "")
	var doc struct {
		Resource             string   `json:"resource"`
		AuthorizationServers []string `json:"authorization_servers"`
	}
	if err := json.Unmarshal([]byte(body), &doc); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("metadata: %d %s %v", resp.StatusCode, body, err)
	}
	if doc.Resource != public || len(doc.AuthorizationServers) != 1 || doc.AuthorizationServers[0] != "https://issuer.test" {
		t.Fatalf("metadata with Host other.example: %+v", doc)
	}
}
