package cells_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/cellplane/cellplane/cells/celltest"
	"github.com/cellplane/cellplane/internal/testutil"
)

// Every node serves the MCP worker on its HTTP port: an agent appends on
// one node (a follower: the worker's call is forwarded to the leader) and
// reads on another.
func TestNodeServesMCP(t *testing.T) {
	nodes := celltest.StartCell(t, 3)
	leader := celltest.WaitLeader(t, nodes)
	ctx := testutil.Context(t, 30*time.Second)
	ownTenant(t, ctx, leader.GRPCAddr())

	connect := func(n interface{ HTTPAddr() string }) *sdk.ClientSession {
		t.Helper()
		c := sdk.NewClient(&sdk.Implementation{Name: "agent", Version: "v0"}, nil)
		cs, err := c.Connect(ctx, &sdk.StreamableClientTransport{Endpoint: "http://" + n.HTTPAddr() + "/t/acme/mcp", MaxRetries: -1}, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cs.Close() })
		return cs
	}
	writer := connect(followerOf(nodes, leader))
	if res, err := writer.CallTool(ctx, &sdk.CallToolParams{Name: "context_create", Arguments: map[string]any{"context_id": "chat"}}); err != nil || res.IsError {
		t.Fatalf("context_create: %v %v", res, err)
	}
	res, err := writer.CallTool(ctx, &sdk.CallToolParams{Name: "context_append", Arguments: map[string]any{
		"context_id": "chat", "request_id": "r1",
		"entries": []map[string]any{{"role": "user", "content": "hello from MCP"}},
	}})
	if err != nil || res.IsError {
		t.Fatalf("context_append: %v %v", res, err)
	}
	reader := connect(nodes[(indexOf(nodes, leader)+2)%3])
	testutil.Eventually(t, 10*time.Second, func() error {
		res, err := reader.CallTool(ctx, &sdk.CallToolParams{Name: "context_read", Arguments: map[string]any{"context_id": "chat"}})
		if err != nil || res.IsError {
			return fmt.Errorf("context_read: %v %v", res, err)
		}
		if got := fmt.Sprint(res.StructuredContent); !strings.Contains(got, "hello from MCP") {
			return fmt.Errorf("read %s", got)
		}
		return nil
	})
}

func indexOf[T comparable](s []T, v T) int {
	for i, x := range s {
		if x == v {
			return i
		}
	}
	return -1
}
