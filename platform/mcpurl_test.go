package platform_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/cellplane/cellplane/internal/testutil"
	"github.com/cellplane/cellplane/platform"
)

// The MCP URL clients are given (the router's, printed by `cellplane
// dev`) is the one the nodes and the router publish as the resource (and
// check JWT audiences against), whatever Host a request carries.
func TestMCPPublicURLIsTheRouters(t *testing.T) {
	cfg := platform.DefaultConfig()
	cfg.Name = "mcpurl"
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
	d := p.Describe()
	if want := "http://" + d.RouterHTTP; p.MCPPublicURL() != want {
		t.Fatalf("MCPPublicURL %q, want the router's %q", p.MCPPublicURL(), want)
	}
	want := p.MCPPublicURL() + "/t/acme/mcp"
	for _, base := range []string{d.Nodes[0].HTTP, d.RouterHTTP} {
		req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+base+"/.well-known/oauth-protected-resource/t/acme/mcp", nil)
		req.Host = "other.example"
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var doc struct {
			Resource string `json:"resource"`
		}
		err = json.NewDecoder(resp.Body).Decode(&doc)
		resp.Body.Close()
		if err != nil || doc.Resource != want {
			t.Fatalf("%s: resource %q (%v), want %q", base, doc.Resource, fmt.Sprint(err), want)
		}
	}
}
