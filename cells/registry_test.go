package cells_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/cellplane/cellplane/cells"
	"github.com/cellplane/cellplane/cells/celltest"
	"github.com/cellplane/cellplane/controlplane/topo"
	"github.com/cellplane/cellplane/controlplane/topo/memtopo"
	"github.com/cellplane/cellplane/controlplane/topo/topotest"
	"github.com/cellplane/cellplane/internal/testutil"
	cpv1 "github.com/cellplane/cellplane/proto/cellplane/controlplane/v1"
)

func TestRegistryConfigValidate(t *testing.T) {
	cfg := cells.DefaultConfig()
	cfg.NodeID, cfg.DataDir = "n1", t.TempDir()
	st := memtopo.New()
	defer st.Close()
	cfg.Registry = st
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "CellID is required") {
		t.Fatalf("Validate without CellID = %v", err)
	}
	cfg.CellID = "c1"
	cfg.RegistryTTL = 100 * time.Millisecond
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "RegistryTTL") {
		t.Fatalf("Validate with a short TTL = %v", err)
	}
	cfg.RegistryTTL = 0
	if err := cfg.Validate(); err != nil {
		t.Fatalf("Validate = %v", err)
	}
}

// registryNode returns the config of a node that forms or joins cell c1
// from the registry.
func registryNode(t *testing.T, st topo.Store, id string) cells.Config {
	cfg := celltest.NodeConfig(t, id)
	cfg.CellID = "c1"
	cfg.Registry = st
	cfg.RegistryTTL = time.Second
	cfg.Logger = cfg.Logger.With("node", id)
	return cfg
}

// startRegistryNode starts a node; Close on cleanup (Close is idempotent).
func startRegistryNode(t *testing.T, cfg cells.Config) (*cells.Node, error) {
	n, err := cells.Start(testutil.Context(t, 30*time.Second), cfg)
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() { _ = n.Close() })
	return n, nil
}

func readLeaderKey(t *testing.T, st topo.Store) (*cpv1.CellLeader, error) {
	kv, err := st.Get(testutil.Context(t, 5*time.Second), topo.CellLeaderKey("c1"))
	if err != nil {
		return nil, err
	}
	var l cpv1.CellLeader
	if err := proto.Unmarshal(kv.Value, &l); err != nil {
		return nil, err
	}
	return &l, nil
}

// leaderKeyNames checks that cells/c1/leader names leader at its current term.
func leaderKeyNames(t *testing.T, st topo.Store, leader *cells.Node) error {
	l, err := readLeaderKey(t, st)
	if err != nil {
		return err
	}
	status := leader.Store().Status()
	if l.GetNodeId() != leader.Info().NodeId || l.GetTerm() != status.Term || l.GetGrpcAddr() != leader.GRPCAddr() {
		return fmt.Errorf("leader key %v, want %s at term %d (%s)", l, leader.Info().NodeId, status.Term, leader.GRPCAddr())
	}
	return nil
}

func voters(n *cells.Node) []string {
	var ids []string
	for _, m := range n.Store().Status().Members {
		if m.Voter {
			ids = append(ids, m.ID)
		}
	}
	return ids
}

// Three nodes started with a registry and neither Bootstrap nor Join form
// the cell the control plane created; a fourth joins it; the leader key
// follows the Raft leader, and a stopped node's key disappears.
func TestRegistryFormsCell(t *testing.T) {
	if testing.Short() {
		t.Skip("starts etcd and a 3-node cell")
	}
	st := topotest.NewEtcdStore(t)
	ctx := testutil.Context(t, 60*time.Second)

	// The nodes wait for the cell record, then for each other.
	type started struct {
		n   *cells.Node
		err error
	}
	results := make(chan started, 3)
	for _, id := range []string{"n1", "n2", "n3"} {
		cfg := registryNode(t, st, id)
		go func() {
			n, err := startRegistryNode(t, cfg)
			results <- started{n, err}
		}()
	}
	testutil.Eventually(t, 10*time.Second, func() error {
		res, err := st.List(ctx, topo.CellNodesPrefix("c1"), topo.ListOptions{KeysOnly: true})
		if err != nil {
			return err
		}
		if len(res.KVs) != 3 {
			return fmt.Errorf("%d nodes registered, want 3", len(res.KVs))
		}
		return nil
	})
	b, err := proto.Marshal(&cpv1.Cell{Id: "c1", Region: "r1", ExpectedMembers: 3, State: cpv1.CellState_CELL_STATE_ACTIVE})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Create(ctx, topo.CellKey("c1"), b); err != nil {
		t.Fatalf("create cell: %v", err)
	}
	var nodes []*cells.Node
	for range 3 {
		r := <-results
		if r.err != nil {
			t.Fatalf("start: %v", r.err)
		}
		nodes = append(nodes, r.n)
	}

	leader := celltest.WaitLeader(t, nodes)
	testutil.Eventually(t, 10*time.Second, func() error {
		for _, n := range nodes {
			if v := voters(n); len(v) != 3 {
				return fmt.Errorf("%s sees voters %v", n.Info().NodeId, v)
			}
		}
		return nil
	})
	testutil.Eventually(t, 10*time.Second, func() error { return leaderKeyNames(t, st, leader) })

	// A latecomer finds the cell formed without it and joins.
	n4, err := startRegistryNode(t, registryNode(t, st, "n4"))
	if err != nil {
		t.Fatalf("start n4: %v", err)
	}
	nodes = append(nodes, n4)
	testutil.Eventually(t, 10*time.Second, func() error {
		if v := voters(leader); len(v) != 4 {
			return fmt.Errorf("voters %v, want 4", v)
		}
		res, err := st.List(ctx, topo.CellNodesPrefix("c1"), topo.ListOptions{KeysOnly: true})
		if err != nil {
			return err
		}
		if len(res.KVs) != 4 {
			return fmt.Errorf("%d node keys, want 4", len(res.KVs))
		}
		return nil
	})

	// The leader stops: the key moves to the new leader, the old leader's
	// node key is gone at once (its lease revoked).
	old := leader.Info().NodeId
	if err := leader.Close(); err != nil {
		t.Fatalf("close leader: %v", err)
	}
	if _, err := st.Get(ctx, topo.CellNodeKey("c1", old)); !errors.Is(err, topo.ErrNotFound) {
		t.Fatalf("node key of stopped %s: %v, want not found", old, err)
	}
	var rest []*cells.Node
	for _, n := range nodes {
		if n != leader {
			rest = append(rest, n)
		}
	}
	next := celltest.WaitLeader(t, rest)
	testutil.Eventually(t, 10*time.Second, func() error { return leaderKeyNames(t, st, next) })
}
