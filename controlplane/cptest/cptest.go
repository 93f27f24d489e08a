// Package cptest starts real control-plane replicas and registry-formed
// cells in tests: etcd (embedded, on loopback), controlplane.Server on
// pre-opened listeners, and cell nodes that bootstrap from the registry.
// Everything is stopped by t.Cleanup.
//
//	env := cptest.New(t)                       // etcd + one replica
//	env.CreateCell(t, "us-east", "c1", 3)     // region, cell record, 3 real nodes
//	cl := env.Client(t)                       // ControlPlaneServiceClient
package cptest

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/cellplane/cellplane/cells"
	"github.com/cellplane/cellplane/controlplane"
	"github.com/cellplane/cellplane/controlplane/topo"
	"github.com/cellplane/cellplane/controlplane/topo/etcdtopo"
	"github.com/cellplane/cellplane/controlplane/topo/topotest"
	"github.com/cellplane/cellplane/internal/cperr"
	"github.com/cellplane/cellplane/internal/dial"
	"github.com/cellplane/cellplane/internal/rpcerr"
	"github.com/cellplane/cellplane/internal/testutil"
	cpv1 "github.com/cellplane/cellplane/proto/cellplane/controlplane/v1"
)

// Env is an etcd with control-plane replicas on it.
type Env struct {
	Endpoints []string
	Replicas  []*controlplane.Server
}

// New starts an embedded etcd and one control-plane replica.
func New(t testing.TB) *Env {
	t.Helper()
	env := &Env{Endpoints: topotest.StartEtcd(t)}
	env.AddReplica(t, "cp1")
	return env
}

// AddReplica starts another replica on the same etcd; opts adjust its
// configuration before it starts.
func (e *Env) AddReplica(t testing.TB, id string, opts ...func(*controlplane.Config)) *controlplane.Server {
	t.Helper()
	cfg := controlplane.DefaultConfig()
	cfg.ID = id
	cfg.EtcdEndpoints = e.Endpoints
	cfg.GRPCListener = testutil.Listen(t)
	cfg.HTTPListener = testutil.Listen(t)
	cfg.Controller.SessionTTL = time.Second
	cfg.Controller.RetryMin = 10 * time.Millisecond
	cfg.Controller.RetryMax = 200 * time.Millisecond
	cfg.ShutdownTimeout = 5 * time.Second
	cfg.Logger = testutil.Logger(t).With("replica", id)
	for _, o := range opts {
		o(&cfg)
	}
	s, err := controlplane.Start(testutil.Context(t, 30*time.Second), cfg)
	if err != nil {
		t.Fatalf("start control plane %s: %v", id, err)
	}
	t.Cleanup(func() { _ = s.Close() })
	e.Replicas = append(e.Replicas, s)
	return s
}

// Addr is the first replica's gRPC address.
func (e *Env) Addr() string { return e.Replicas[0].GRPCAddr() }

// Client returns a ControlPlaneService client of the first replica.
func (e *Env) Client(t testing.TB) cpv1.ControlPlaneServiceClient {
	t.Helper()
	return Dial(t, e.Addr())
}

// Dial returns a ControlPlaneService client of addr, closed on cleanup.
func Dial(t testing.TB, addr string) cpv1.ControlPlaneServiceClient {
	t.Helper()
	conn, err := dial.New(addr, dial.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return cpv1.NewControlPlaneServiceClient(conn)
}

// Store returns a topo store on the env's etcd, closed on cleanup.
func (e *Env) Store(t testing.TB) topo.Store {
	t.Helper()
	cfg := etcdtopo.DefaultConfig()
	cfg.Endpoints = e.Endpoints
	st, err := etcdtopo.Dial(testutil.Context(t, 10*time.Second), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	return st
}

// CreateCell creates region (if new) and cell through the API, starts
// members real nodes that form the cell from the registry, and waits until
// the control plane reports the cell HEALTHY. opts adjust each node's
// configuration.
func (e *Env) CreateCell(t testing.TB, region, cell string, members int, opts ...func(*cells.Config)) []*cells.Node {
	t.Helper()
	ctx := testutil.Context(t, 60*time.Second)
	cl := e.Client(t)
	if _, err := cl.CreateRegion(ctx, &cpv1.CreateRegionRequest{Name: region}); err != nil && !errors.Is(rpcerr.FromStatus(err), cperr.ErrAlreadyExists) {
		t.Fatalf("create region %s: %v", region, err)
	}
	if _, err := cl.CreateCell(ctx, &cpv1.CreateCellRequest{Id: cell, Region: region, ExpectedMembers: uint32(members)}); err != nil {
		t.Fatalf("create cell %s: %v", cell, err)
	}
	nodes := e.StartNodes(t, cell, members, opts...)
	e.WaitHealthy(t, cl, cell)
	return nodes
}

// WaitHealthy waits until the control plane, asked through cl, reports
// each cell HEALTHY (placement chooses only HEALTHY cells).
func (e *Env) WaitHealthy(t testing.TB, cl cpv1.ControlPlaneServiceClient, cellIDs ...string) {
	t.Helper()
	ctx := testutil.Context(t, 60*time.Second)
	testutil.Eventually(t, 30*time.Second, func() error {
		for _, cell := range cellIDs {
			resp, err := cl.GetCell(ctx, &cpv1.GetCellRequest{Id: cell})
			if err != nil {
				return err
			}
			if h := resp.GetCell().GetHealth(); h != cpv1.CellHealth_CELL_HEALTH_HEALTHY {
				return fmt.Errorf("cell %s is %s", cell, h)
			}
		}
		return nil
	})
}

// StartNodes starts n nodes of cell, concurrently (they wait for each other
// in the registry before forming the Raft group), each closed on cleanup.
// opts adjust each node's configuration.
func (e *Env) StartNodes(t testing.TB, cell string, n int, opts ...func(*cells.Config)) []*cells.Node {
	t.Helper()
	st := e.Store(t)
	nodes := make([]*cells.Node, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		cfg := cells.DefaultConfig()
		cfg.NodeID = fmt.Sprintf("%s-n%d", cell, i+1)
		cfg.CellID = cell
		cfg.DataDir = filepath.Join(t.TempDir(), cfg.NodeID)
		cfg.RaftListener = testutil.Listen(t)
		cfg.GRPCListener = testutil.Listen(t)
		cfg.HTTPListener = testutil.Listen(t)
		cfg.ShutdownTimeout = 5 * time.Second
		cfg.Registry = st
		cfg.RegistryTTL = time.Second
		cfg.Logger = testutil.Logger(t).With("node", cfg.NodeID)
		for _, o := range opts {
			o(&cfg)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			nodes[i], errs[i] = cells.Start(ctx, cfg)
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if nodes[i] != nil {
			node := nodes[i]
			t.Cleanup(func() { _ = node.Close() })
		}
		if err != nil {
			t.Fatalf("start node %d of %s: %v", i+1, cell, err)
		}
	}
	return nodes
}
