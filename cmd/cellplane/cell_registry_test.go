package main

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/cellplane/cellplane/controlplane/topo"
	"github.com/cellplane/cellplane/controlplane/topo/etcdtopo"
	"github.com/cellplane/cellplane/controlplane/topo/topotest"
	"github.com/cellplane/cellplane/internal/testutil"
	cpv1 "github.com/cellplane/cellplane/proto/cellplane/controlplane/v1"
)

func TestCellEtcdFlagErrors(t *testing.T) {
	base := []string{"cell", "--id", "n1", "--data-dir", t.TempDir(), "--insecure"}
	r := runCmd(t.Context(), append(base, "--etcd-endpoints", "http://127.0.0.1:1")...)
	if r.code != 2 || !strings.Contains(r.err, "--cell is required with --etcd-endpoints") || strings.Count(r.err, "\n") != 1 {
		t.Fatalf("without --cell: exit %d, stderr %q", r.code, r.err)
	}
	t.Setenv(envEtcdEndpoints, "http://127.0.0.1:1")
	r = runCmd(t.Context(), base...)
	if r.code != 2 || !strings.Contains(r.err, "--cell is required") {
		t.Fatalf("endpoints from %s without --cell: exit %d, stderr %q", envEtcdEndpoints, r.code, r.err)
	}
	r = runCmd(t.Context(), append(base, "--cell", "c1", "--etcd-dial-timeout", "0s")...)
	if r.code != 2 || !strings.Contains(r.err, "--etcd-dial-timeout must be > 0") {
		t.Fatalf("zero dial timeout: exit %d, stderr %q", r.code, r.err)
	}
}

// The metrics flags land in the node's configuration: a bad bound is
// refused before anything starts.
func TestCellMetricsFlags(t *testing.T) {
	base := []string{"cell", "--id", "n1", "--data-dir", t.TempDir(), "--insecure", "--metrics-tenant-labels"}
	r := runCmd(t.Context(), append(base, "--metrics-max-tenant-series", "0")...)
	if r.code != 2 || !strings.Contains(r.err, "MaxTenantSeries must be ≥ 1") {
		t.Fatalf("--metrics-max-tenant-series 0: exit %d, stderr %q", r.code, r.err)
	}
	r = runCmd(t.Context(), append(base, "--replication-lag-threshold", "0s")...)
	if r.code != 2 || !strings.Contains(r.err, "LagThreshold must be > 0") {
		t.Fatalf("--replication-lag-threshold 0s: exit %d, stderr %q", r.code, r.err)
	}
}

func TestSplitList(t *testing.T) {
	for in, want := range map[string]string{"": "", " a , ,b ": "a|b", "http://x:1": "http://x:1"} {
		if got := strings.Join(splitList(in), "|"); got != want {
			t.Errorf("splitList(%q) = %q, want %q", in, got, want)
		}
	}
}

// A single-member cell formed from the registry by the command line.
func TestCellFromRegistry(t *testing.T) {
	if testing.Short() {
		t.Skip("runs etcd and a node; skipped with -short")
	}
	eps := topotest.StartEtcd(t)
	const prefix = "/cellplane-cmd-test/"
	cfg := etcdtopo.DefaultConfig()
	cfg.Endpoints, cfg.Prefix = eps, prefix
	st, err := etcdtopo.Dial(testutil.Context(t, 10*time.Second), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	b, _ := proto.Marshal(&cpv1.Cell{Id: "c1", Region: "r1", ExpectedMembers: 1})
	if _, err := st.Create(testutil.Context(t, 10*time.Second), topo.CellKey("c1"), b); err != nil {
		t.Fatal(err)
	}

	raft, grpcAddr, httpAddr := testutil.FreeAddr(t), testutil.FreeAddr(t), testutil.FreeAddr(t)
	ctx, cancel := context.WithCancel(testutil.Context(t, time.Minute))
	defer cancel()
	t.Setenv(envEtcdEndpoints, strings.Join(eps, ","))
	done := make(chan result, 1)
	go func() {
		done <- runCmd(ctx, "cell", "--id", "n1", "--cell", "c1", "--data-dir", t.TempDir(), "--insecure",
			"--raft-addr", raft, "--grpc-addr", grpcAddr, "--http-addr", httpAddr,
			"--etcd-prefix", prefix, "--registry-ttl", "2s", "--log-format", "json")
	}()
	testutil.Eventually(t, 20*time.Second, func() error {
		select {
		case r := <-done:
			done <- r
			return nil // exited early: reported below
		default:
		}
		kv, err := st.Get(testutil.Context(t, 5*time.Second), topo.CellLeaderKey("c1"))
		if err != nil {
			return err
		}
		var l cpv1.CellLeader
		if err := proto.Unmarshal(kv.Value, &l); err != nil {
			return err
		}
		if l.GetNodeId() != "n1" || l.GetGrpcAddr() != grpcAddr {
			return fmt.Errorf("leader key %v", &l)
		}
		return nil
	})
	cancel()
	var r result
	select {
	case r = <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("cell did not stop after its context was cancelled")
	}
	if r.code != 0 {
		t.Fatalf("exit %d; stderr:\n%s", r.code, r.err)
	}
	for _, want := range []string{`"msg":"registered in the control plane"`, `"msg":"wrote the cell bootstrap record"`, `"msg":"published as the cell leader"`} {
		if !strings.Contains(r.err, want) {
			t.Errorf("logs lack %s:\n%s", want, r.err)
		}
	}
	// Stopped: its keys are gone.
	res, err := st.List(testutil.Context(t, 5*time.Second), topo.CellNodesPrefix("c1"), topo.ListOptions{})
	if err != nil || len(res.KVs) != 0 {
		t.Fatalf("node keys after stop: %v, %v", res.KVs, err)
	}
}
