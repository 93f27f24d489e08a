package e2e

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/cellplane/cellplane/internal/testutil"
	contextv1 "github.com/cellplane/cellplane/proto/cellplane/context/v1"
)

// `cellplane dev --multiprocess --mtls --demo`: cellctl reaches the
// control plane with the client configuration file dev.json names
// (CELLPLANE_CONFIG) and is refused without it; the demo tenant is written
// and read back through the (plaintext) router, whose calls into the cell
// present its identity; a plaintext call straight to a node is refused.
func TestDevMutualTLS(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binaries and starts the whole platform")
	}
	p := startPlatform(t, 3,
		"--multiprocess", "--mtls", "--demo",
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
		cmd.Env = []string{"CELLPLANE_CONFIG=" + info.ClientConfig}
		for _, kv := range os.Environ() {
			if !strings.HasPrefix(kv, "CELLPLANE_") {
				cmd.Env = append(cmd.Env, kv)
			}
		}
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
	if _, err := p.cellctl(ctx, "status"); err == nil {
		t.Error("a plaintext cellctl status succeeded")
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

	for _, n := range info.Nodes {
		_, err := routerClient(t, n.GRPC).Read(demo, &contextv1.ReadRequest{ContextId: "m-1", Start: &contextv1.ReadRequest_FromSeq{FromSeq: 1}})
		if err == nil {
			t.Errorf("a plaintext Read straight from node %s succeeded", n.ID)
		}
	}
}
