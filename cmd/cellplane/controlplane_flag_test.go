package main

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/cellplane/cellplane/controlplane/cptest"
	"github.com/cellplane/cellplane/internal/testutil"
	cpv1 "github.com/cellplane/cellplane/proto/cellplane/controlplane/v1"
)

// A node started with only the control plane's address (--controlplane)
// learns where etcd is, registers, forms its cell and stops cleanly.
func TestCellWithControlPlaneAddress(t *testing.T) {
	if testing.Short() {
		t.Skip("runs etcd, a control plane and a node")
	}
	env := cptest.New(t)
	cl := env.Client(t)
	ctx := testutil.Context(t, time.Minute)
	if _, err := cl.CreateRegion(ctx, &cpv1.CreateRegionRequest{Name: "r1"}); err != nil {
		t.Fatal(err)
	}
	if _, err := cl.CreateCell(ctx, &cpv1.CreateCellRequest{Id: "c1", Region: "r1", ExpectedMembers: 1}); err != nil {
		t.Fatal(err)
	}
	reg, err := cl.GetRegistry(ctx, &cpv1.GetRegistryRequest{})
	if err != nil || len(reg.GetEtcdEndpoints()) == 0 || reg.GetPrefix() == "" {
		t.Fatalf("GetRegistry: %v %v", reg, err)
	}
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan result, 1)
	go func() {
		done <- runCmd(runCtx, "cell", "--id", "n1", "--cell", "c1", "--data-dir", t.TempDir(), "--insecure",
			"--raft-addr", testutil.FreeAddr(t), "--grpc-addr", testutil.FreeAddr(t), "--http-addr", testutil.FreeAddr(t),
			"--controlplane", env.Addr(), "--registry-ttl", "2s")
	}()
	testutil.Eventually(t, 30*time.Second, func() error {
		select {
		case r := <-done:
			t.Fatalf("the node exited early: %d %s", r.code, r.err)
		default:
		}
		resp, err := cl.GetCell(ctx, &cpv1.GetCellRequest{Id: "c1"})
		if err != nil {
			return err
		}
		if h := resp.GetCell().GetHealth(); h != cpv1.CellHealth_CELL_HEALTH_HEALTHY {
			return fmt.Errorf("cell c1 is %s", h)
		}
		return nil
	})
	cancel()
	if r := <-done; r.code != 0 {
		t.Fatalf("exit %d, stderr %q", r.code, r.err)
	}
}
