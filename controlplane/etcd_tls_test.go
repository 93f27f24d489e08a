package controlplane_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/cellplane/cellplane/controlplane"
	"github.com/cellplane/cellplane/controlplane/topo"
	"github.com/cellplane/cellplane/controlplane/topo/etcdtopo"
	"github.com/cellplane/cellplane/internal/cperr"
	"github.com/cellplane/cellplane/internal/pki"
	"github.com/cellplane/cellplane/internal/rpcerr"
	"github.com/cellplane/cellplane/internal/serve"
	"github.com/cellplane/cellplane/internal/testutil"
	cpv1 "github.com/cellplane/cellplane/proto/cellplane/controlplane/v1"
)

// TestEmbeddedEtcdTLS: a control plane with TLS embeds an https etcd with
// authentication on; a component gets its etcd user by asking GetRegistry
// with its identity, and then can do what its role allows and nothing
// more; a component that never asked has no user; a restart on the same
// data keeps it all (Bootstrap finds auth on).
func TestEmbeddedEtcdTLS(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a control plane with embedded etcd")
	}
	e := &pkiEnv{dir: t.TempDir()}
	var err error
	if e.ca, err = pki.NewCA(testCluster, time.Hour); err != nil {
		t.Fatal(err)
	}
	if err := pki.WriteCA(e.dir, e.ca, false); err != nil {
		t.Fatal(err)
	}
	cpID := pki.ControlPlaneIdentity(testCluster, "cp1")
	e.issue(t, pki.LeafRequest{Identity: cpID, Hosts: []string{"127.0.0.1"}})
	dataDir := t.TempDir()
	ports, err := serve.FreeLoopbackPorts(2)
	if err != nil {
		t.Fatal(err)
	}
	start := func() *controlplane.Server {
		t.Helper()
		src, err := pki.NewSource(pki.DirConfig(e.dir, cpID.FileName()))
		if err != nil {
			t.Fatal(err)
		}
		cfg := controlplane.DefaultConfig()
		cfg.ID, cfg.DataDir, cfg.TLS = "cp1", dataDir, src
		cfg.EmbeddedClientURL = fmt.Sprintf("https://127.0.0.1:%d", ports[0])
		cfg.EmbeddedPeerURL = fmt.Sprintf("https://127.0.0.1:%d", ports[1])
		cfg.EtcdUnsafeNoFsync = true
		cfg.GRPCListener, cfg.HTTPListener = testutil.Listen(t), testutil.Listen(t)
		cfg.ShutdownTimeout = 5 * time.Second
		cfg.Logger = testutil.Logger(t)
		s, err := controlplane.Start(testutil.Context(t, time.Minute), cfg)
		if err != nil {
			t.Fatal(err)
		}
		e.addr = s.GRPCAddr()
		return s
	}
	ctx := testutil.Context(t, 2*time.Minute)
	for round := 1; round <= 2; round++ {
		s := start()
		eps := s.EtcdEndpoints()
		if len(eps) != 1 || !strings.HasPrefix(eps[0], "https://") {
			t.Fatalf("embedded etcd endpoints %v, want one https", eps)
		}
		adm := cpv1.NewControlPlaneServiceClient(e.dialAs(t, admin))
		if _, err := adm.CreateRegion(ctx, &cpv1.CreateRegionRequest{Name: fmt.Sprintf("r%d", round)}); err != nil {
			t.Fatalf("round %d: the control plane writes etcd: %v", round, err)
		}

		asked := map[string]pki.Identity{
			"router": pki.RouterIdentity(testCluster, "r1"),
			"node":   pki.NodeIdentity(testCluster, "r1", "c1", "n1"),
			"worker": pki.WorkerIdentity(testCluster, "w1"),
		}
		for kind, id := range asked {
			reg, err := cpv1.NewControlPlaneServiceClient(e.dialAs(t, id)).GetRegistry(ctx, &cpv1.GetRegistryRequest{})
			if err != nil {
				t.Fatalf("round %d: GetRegistry as %s: %v", round, kind, err)
			}
			st := dialEtcdAs(t, reg.GetEtcdEndpoints(), e.dir, id)
			if _, err := st.Get(ctx, topo.RegionKey("r1")); err != nil {
				t.Errorf("round %d: %s reads a region: %v", round, kind, err)
			}
			if _, err := st.Txn(ctx, nil, []topo.Op{topo.Put(topo.RegionKey("evil"), []byte("x"))}); !errors.Is(err, topo.ErrPermissionDenied) {
				t.Errorf("round %d: %s writes a region: %v, want denied", round, kind, err)
			}
			own := topo.CellNodeKey("c1", "n1")
			_, err = st.Txn(ctx, nil, []topo.Op{topo.Put(own, []byte("x"))})
			if kind == "node" && err != nil {
				t.Errorf("round %d: the node registers itself: %v", round, err)
			}
			if kind != "node" && !errors.Is(err, topo.ErrPermissionDenied) {
				t.Errorf("round %d: %s writes a node record: %v, want denied", round, kind, err)
			}
			_ = st.Close()
		}
		// A worker that never asked the control plane has no etcd user.
		stranger := pki.WorkerIdentity(testCluster, fmt.Sprintf("w-stranger%d", round))
		e.issue(t, pki.LeafRequest{Identity: stranger})
		st := dialEtcdAs(t, s.EtcdEndpoints(), e.dir, stranger)
		if _, err := st.Get(ctx, topo.RegionKey("r1")); !errors.Is(err, topo.ErrPermissionDenied) {
			t.Errorf("round %d: a worker with no etcd user read: %v, want denied", round, err)
		}
		_ = st.Close()
		// An operator asking gets the endpoints, not a user.
		if _, err := adm.GetRegistry(ctx, &cpv1.GetRegistryRequest{}); err != nil {
			t.Errorf("round %d: GetRegistry as admin: %v", round, err)
		}
		if err := s.EnsureEtcdUser(ctx, admin); !errors.Is(rpcerr.FromStatus(err), cperr.ErrPermissionDenied) && !errors.Is(err, cperr.ErrPermissionDenied) {
			t.Errorf("round %d: EnsureEtcdUser(operator) = %v, want PERMISSION_DENIED", round, err)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

// dialEtcdAs dials etcd with id's certificate in dir.
func dialEtcdAs(t *testing.T, eps []string, dir string, id pki.Identity) *etcdtopo.Store {
	t.Helper()
	src, err := pki.NewSource(pki.DirConfig(dir, id.FileName()))
	if err != nil {
		t.Fatal(err)
	}
	cfg := etcdtopo.DefaultConfig()
	cfg.Endpoints, cfg.Identity, cfg.Lazy = eps, src, true
	st, err := etcdtopo.Dial(testutil.Context(t, 10*time.Second), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	return st
}
