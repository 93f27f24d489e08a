package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/cellplane/cellplane/client"
	"github.com/cellplane/cellplane/internal/testutil"
	contextv1 "github.com/cellplane/cellplane/proto/cellplane/context/v1"
	cpv1 "github.com/cellplane/cellplane/proto/cellplane/controlplane/v1"
)

// `cellplane dev --auth apikey --demo --multiprocess --restart-killed`:
// the demo tenant's API key from dev.json works through the router (gRPC,
// the Go client, MCP) and nothing works without it; a node killed with
// kill -9 comes back as a new process and the cell is whole again.
func TestDevAPIKeyAndRestartKilled(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binaries and starts the whole platform")
	}
	p := startPlatform(t, 3,
		"--multiprocess", "--restart-killed",
		"--auth", "apikey", "--demo",
		"--regions", "us-east",
		"--cells-per-region", "1",
		"--nodes-per-cell", "3",
	)
	ctx := testutil.Context(t, 2*time.Minute)
	info := p.info(t)
	if info.Auth != "apikey" || info.DemoTenant != "demo" || !strings.HasPrefix(info.DemoAPIKey, "cpk_") {
		t.Fatalf("dev.json: auth %q, demo_tenant %q, demo_api_key %q; want apikey, demo, cpk_…", info.Auth, info.DemoTenant, info.DemoAPIKey)
	}
	key := info.DemoAPIKey
	cs := routerClient(t, info.RouterGRPC)
	withKey := func(ctx context.Context) context.Context {
		return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+key)
	}

	t.Run("grpc", func(t *testing.T) {
		_, err := cs.CreateContext(metadata.AppendToOutgoingContext(ctx, "x-cellplane-tenant", "demo"), &contextv1.CreateContextRequest{ContextId: "k-1"})
		if status.Code(err) != codes.Unauthenticated {
			t.Errorf("CreateContext without a key: %v, want UNAUTHENTICATED", err)
		}
		_, err = cs.CreateContext(metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer cpk_nope_nope"), &contextv1.CreateContextRequest{ContextId: "k-1"})
		if status.Code(err) != codes.Unauthenticated {
			t.Errorf("CreateContext with a wrong key: %v, want UNAUTHENTICATED", err)
		}
		testutil.Eventually(t, 30*time.Second, func() error {
			_, err := cs.CreateContext(withKey(ctx), &contextv1.CreateContextRequest{ContextId: "k-1", RequestId: "create-k-1"})
			if status.Code(err) == codes.AlreadyExists {
				return nil
			}
			return err
		})
		if _, err := cs.Append(withKey(ctx), &contextv1.AppendRequest{ContextId: "k-1", RequestId: "k-r1", Entries: []*contextv1.Entry{text("user", "with a key")}}); err != nil {
			t.Fatal(err)
		}
		rd, err := cs.Read(withKey(ctx), &contextv1.ReadRequest{ContextId: "k-1", Start: &contextv1.ReadRequest_FromSeq{FromSeq: 1}})
		if err != nil {
			t.Fatal(err)
		}
		if got := texts(rd.GetEntries()); !slices.Equal(got, []string{"with a key"}) {
			t.Fatalf("read k-1: %q", got)
		}
	})

	t.Run("client", func(t *testing.T) {
		cfg := client.DefaultConfig()
		cfg.Router, cfg.Tenant, cfg.APIKey = info.RouterGRPC, "demo", key
		c, err := client.New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := c.Context().Append(ctx, &contextv1.AppendRequest{ContextId: "k-1", Entries: []*contextv1.Entry{text("assistant", "from the client")}}); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("mcp", func(t *testing.T) {
		endpoint := "http://" + info.RouterHTTP + "/t/demo/mcp"
		resp, err := http.Post(endpoint, "application/json", strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"tools/list"}`))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("MCP without a key: HTTP %d, want 401", resp.StatusCode)
		}
		mc := mcp.NewClient(&mcp.Implementation{Name: "cellplane-e2e", Version: "v0"}, nil)
		sess, err := mc.Connect(ctx, &mcp.StreamableClientTransport{Endpoint: endpoint, HTTPClient: &http.Client{Transport: bearer{key}}}, nil)
		if err != nil {
			t.Fatalf("MCP connect with the key: %v", err)
		}
		defer sess.Close()
		call := func(name string, args map[string]any) *mcp.CallToolResult {
			t.Helper()
			res, err := sess.CallTool(ctx, &mcp.CallToolParams{Name: name, Arguments: args})
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			if res.IsError {
				t.Fatalf("%s with the key: tool error %s", name, toolText(res))
			}
			return res
		}
		// Contexts are handles bound to the principal that created them
		// (docs/mcp.md): the agent makes its own.
		call("context_create", map[string]any{"context_id": "k-mcp"})
		call("context_append", map[string]any{"context_id": "k-mcp", "request_id": "k-mcp-r1",
			"entries": []map[string]any{{"role": "user", "content": "keyed agent"}}})
		if b := fmt.Sprint(call("context_read", map[string]any{"context_id": "k-mcp"}).StructuredContent); !strings.Contains(b, "keyed agent") {
			t.Errorf("context_read: %s, want the appended entry", b)
		}
		// Memory is the key's principal's on both faces: written over MCP,
		// read over gRPC with the same key.
		call("memory_put", map[string]any{"key": "agent/mood", "value": "curious"})
		got, err := cs.GetMemory(withKey(ctx), &contextv1.GetMemoryRequest{Key: "agent/mood"})
		if err != nil {
			t.Fatal(err)
		}
		if string(got.GetItem().GetValue()) != "curious" {
			t.Errorf("GetMemory agent/mood over gRPC: %q, want curious", got.GetItem().GetValue())
		}
	})

	t.Run("restart-killed", func(t *testing.T) {
		victim := info.Nodes[0]
		if err := syscall.Kill(victim.PID, syscall.SIGKILL); err != nil {
			t.Fatalf("kill -9 %d: %v", victim.PID, err)
		}
		killedAt := time.Now()
		var back devNode
		testutil.Eventually(t, 30*time.Second, func() error {
			now, err := p.readDevJSON() // may be mid-rewrite: poll
			if err != nil {
				return err
			}
			n, ok := now.node(victim.ID)
			if !ok || n.PID == victim.PID || n.PID <= 0 || !alive(n.PID) {
				return fmt.Errorf("node %s: dev.json %+v, not restarted yet", victim.ID, n)
			}
			back = n
			return nil
		})
		// The new process serves: its /readyz says ready (over mutual TLS,
		// as the dev admin operator).
		hc, scheme := p.nodeHTTP(t)
		testutil.Eventually(t, 30*time.Second, func() error {
			resp, err := hc.Get(scheme + "://" + back.HTTP + "/readyz")
			if err != nil {
				return err
			}
			defer resp.Body.Close()
			var rz struct {
				Ready bool `json:"ready"`
			}
			if err := json.NewDecoder(resp.Body).Decode(&rz); err != nil {
				return err
			}
			if resp.StatusCode != http.StatusOK || !rz.Ready {
				return fmt.Errorf("node %s /readyz: HTTP %d ready=%v", victim.ID, resp.StatusCode, rz.Ready)
			}
			return nil
		})
		t.Logf("node %s restarted as pid %d (was %d) and ready in %s", victim.ID, back.PID, victim.PID, time.Since(killedAt).Round(time.Millisecond))
		testutil.Eventually(t, 30*time.Second, func() error {
			out, err := p.cellctl(ctx, "cell", "get", victim.Cell, "-o", "json")
			if err != nil {
				return err
			}
			var resp cpv1.GetCellResponse
			if err := unmarshalJSON(out, &resp); err != nil {
				return err
			}
			cs := resp.GetCell()
			if cs.GetHealth() != cpv1.CellHealth_CELL_HEALTH_HEALTHY || len(cs.GetNodes()) != 3 {
				return fmt.Errorf("cell %s: %s with %d nodes", victim.Cell, cs.GetHealth(), len(cs.GetNodes()))
			}
			return nil
		})
		entries, err := readAllAs(ctx, cs, withKey, "k-1")
		if err != nil {
			t.Fatal(err)
		}
		if got := texts(entries); !slices.Equal(got, []string{"with a key", "from the client"}) {
			t.Fatalf("after the restart of %s, k-1 holds %q", victim.ID, got)
		}
	})
}

type bearer struct{ token string }

func (b bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+b.token)
	return http.DefaultTransport.RoundTrip(r)
}
