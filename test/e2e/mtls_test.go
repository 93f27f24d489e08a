package e2e

import (
	"bytes"
	"context"
	"net/http"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/cellplane/cellplane/internal/testutil"
	contextv1 "github.com/cellplane/cellplane/proto/cellplane/context/v1"
)

// `cellplane dev --multiprocess --demo` (mutual TLS is the default; --mtls
// is its deprecated alias): cellctl reaches the control plane with the
// client configuration file dev.json names (CELLPLANE_CONFIG) and is
// refused without it; the demo tenant is written and read back through the
// (plaintext) router, whose calls into the cell present its identity, and
// over MCP through the router to the nodes' HTTP ports (mutual TLS); a
// plaintext call straight to a node's gRPC or HTTP port is refused, the
// admin operator's certificate reads its /readyz.
func TestDevMutualTLS(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binaries and starts the whole platform")
	}
	p := startPlatform(t, 3,
		"--multiprocess", "--mtls", "--demo", // --mtls: still accepted
		"--regions", "us-east",
		"--cells-per-region", "1",
		"--nodes-per-cell", "3",
	)
	ctx := testutil.Context(t, 2*time.Minute)
	info := p.info(t)
	if info.ClientConfig == "" {
		t.Fatal("dev.json has no client_config")
	}

	withConfig := func(args ...string) (string, error) {
		cctx, cancel := context.WithTimeout(ctx, 60*time.Second)
		defer cancel()
		cmd := exec.CommandContext(cctx, bins.cellctl, args...)
		cmd.Env = cellctlEnv(info.ClientConfig)
		var out, errb bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errb
		err := cmd.Run()
		if err != nil {
			t.Logf("cellctl %v: %s", args, errb.String())
		}
		return out.String(), err
	}
	out, err := withConfig("status")
	if err != nil {
		t.Fatalf("CELLPLANE_CONFIG=%s cellctl status: %v", info.ClientConfig, err)
	}
	if !strings.Contains(out, "us-east-a") || !strings.Contains(out, "HEALTHY") {
		t.Errorf("cellctl status:\n%s", out)
	}
	if out, err := withConfig("tenant", "list"); err != nil || !strings.Contains(out, "demo") {
		t.Errorf("cellctl tenant list: %v\n%s", err, out)
	}
	plain := exec.CommandContext(ctx, bins.cellctl, "--controlplane", info.Controlplane, "status")
	plain.Env = cellctlEnv("")
	if out, err := plain.CombinedOutput(); err == nil {
		t.Errorf("a plaintext cellctl status succeeded:\n%s", out)
	}

	cs := routerClient(t, info.RouterGRPC)
	demo := metadata.AppendToOutgoingContext(ctx, "x-cellplane-tenant", "demo")
	testutil.Eventually(t, 30*time.Second, func() error {
		_, err := cs.CreateContext(demo, &contextv1.CreateContextRequest{ContextId: "m-1", RequestId: "create-m-1"})
		if status.Code(err) == codes.AlreadyExists {
			return nil
		}
		return err
	})
	if _, err := cs.Append(demo, &contextv1.AppendRequest{ContextId: "m-1", RequestId: "m-r1", Entries: []*contextv1.Entry{text("user", "over mTLS")}}); err != nil {
		t.Fatal(err)
	}
	rd, err := cs.Read(demo, &contextv1.ReadRequest{ContextId: "m-1", Start: &contextv1.ReadRequest_FromSeq{FromSeq: 1}})
	if err != nil {
		t.Fatal(err)
	}
	if got := texts(rd.GetEntries()); !slices.Equal(got, []string{"over mTLS"}) {
		t.Fatalf("read m-1: %q", got)
	}

	// MCP through the router: its proxy reaches the nodes' MCP workers
	// over mutual TLS.
	sess, err := mcp.NewClient(&mcp.Implementation{Name: "cellplane-e2e", Version: "v0"}, nil).Connect(ctx,
		&mcp.StreamableClientTransport{Endpoint: "http://" + info.RouterHTTP + "/t/demo/mcp"}, nil)
	if err != nil {
		t.Fatalf("MCP connect through the router: %v", err)
	}
	defer sess.Close()
	res, err := sess.CallTool(ctx, &mcp.CallToolParams{Name: "context_append", Arguments: map[string]any{"context_id": "m-1", "request_id": "m-r2",
		"entries": []map[string]any{{"role": "user", "content": "over MCP"}}}})
	if err != nil || res.IsError {
		t.Fatalf("MCP context_append through the router: %v %s", err, toolText(res))
	}

	hc, scheme := p.nodeHTTP(t)
	if scheme != "https" {
		t.Fatalf("node HTTP scheme %q", scheme)
	}
	for _, n := range info.Nodes {
		_, err := routerClient(t, n.GRPC).Read(demo, &contextv1.ReadRequest{ContextId: "m-1", Start: &contextv1.ReadRequest_FromSeq{FromSeq: 1}})
		if err == nil {
			t.Errorf("a plaintext Read straight from node %s succeeded", n.ID)
		}
		if resp, err := http.Get("http://" + n.HTTP + "/readyz"); err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				t.Errorf("plain HTTP /readyz of node %s answered 200", n.ID)
			}
		}
		resp, err := hc.Get(scheme + "://" + n.HTTP + "/readyz")
		if err != nil {
			t.Errorf("/readyz of node %s as the admin operator: %v", n.ID, err)
			continue
		}
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("/readyz of node %s as the admin operator: %d", n.ID, resp.StatusCode)
		}
	}
}
