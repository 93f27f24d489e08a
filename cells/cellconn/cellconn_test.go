package cellconn

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/cellplane/cellplane/controlplane/catalog"
	"github.com/cellplane/cellplane/controlplane/topo"
	"github.com/cellplane/cellplane/controlplane/topo/memtopo"
	"github.com/cellplane/cellplane/internal/dial"
	"github.com/cellplane/cellplane/internal/testutil"
	cpv1 "github.com/cellplane/cellplane/proto/cellplane/controlplane/v1"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// member serves gRPC health on loopback, standing in for a cell node.
func member(t *testing.T) string {
	t.Helper()
	l := testutil.Listen(t)
	gs := grpc.NewServer()
	healthpb.RegisterHealthServer(gs, health.NewServer())
	go func() { _ = gs.Serve(l) }()
	t.Cleanup(gs.Stop)
	return l.Addr().String()
}

func register(t *testing.T, st topo.Store, cell, id, addr string, role cpv1.NodeRole) {
	t.Helper()
	_, err := st.Txn(testutil.Context(t, 5*time.Second), nil, []topo.Op{topo.Put(topo.CellNodeKey(cell, id),
		catalog.Encode(&cpv1.Node{Id: id, Cell: cell, Role: role, GrpcAddr: addr}))})
	if err != nil {
		t.Fatal(err)
	}
}

func TestFollowsTheRegistry(t *testing.T) {
	st := memtopo.New()
	defer st.Close()
	a, b := member(t), member(t)
	register(t, st, "c1", "n1", a, cpv1.NodeRole_NODE_ROLE_MEMBER)
	register(t, st, "c1", "w1", "127.0.0.1:1", cpv1.NodeRole_NODE_ROLE_WORKER) // workers are not members
	register(t, st, "c2", "x1", "127.0.0.1:2", cpv1.NodeRole_NODE_ROLE_MEMBER) // another cell
	ctx := testutil.Context(t, 20*time.Second)
	conn, err := Dial(ctx, st, "c1", dial.DefaultConfig(), testutil.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if got := conn.Members(); !slices.Equal(got, []string{a}) {
		t.Fatalf("members %v, want [%s]", got, a)
	}
	hc := healthpb.NewHealthClient(conn)
	if _, err := hc.Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatal(err)
	}
	// n1 leaves, n2 arrives: calls follow.
	register(t, st, "c1", "n2", b, cpv1.NodeRole_NODE_ROLE_MEMBER)
	if err := st.Delete(ctx, topo.CellNodeKey("c1", "n1"), 0); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, func() error {
		if got := conn.Members(); !slices.Equal(got, []string{b}) {
			return fmt.Errorf("members %v", got)
		}
		return nil
	})
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, err := hc.Check(cctx, &healthpb.HealthCheckRequest{}, grpc.WaitForReady(true)); err != nil {
		t.Fatalf("call after the members changed: %v", err)
	}
	// All members gone: the last list is kept rather than failing at once.
	if err := st.Delete(ctx, topo.CellNodeKey("c1", "n2"), 0); err != nil {
		t.Fatal(err)
	}
	register(t, st, "c1", "w2", "127.0.0.1:3", cpv1.NodeRole_NODE_ROLE_WORKER) // a change to wake the follower
	testutil.Eventually(t, 10*time.Second, func() error {
		if got := conn.Members(); len(got) != 0 {
			return fmt.Errorf("members %v", got)
		}
		return nil
	})
	if _, err := hc.Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatalf("with no member registered the last address still serves: %v", err)
	}
}

func TestDialFailsWhenTheRegistryIsDown(t *testing.T) {
	st := memtopo.New()
	defer st.Close()
	st.Fail(memtopo.OpList, "", topo.ErrUnavailable)
	if _, err := Dial(testutil.Context(t, 5*time.Second), st, "c1", dial.DefaultConfig(), nil); err == nil {
		t.Fatal("Dial with the registry down succeeded")
	}
}
