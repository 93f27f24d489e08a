package registry_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/cellplane/cellplane/cells/registry"
	"github.com/cellplane/cellplane/controlplane/topo"
	"github.com/cellplane/cellplane/controlplane/topo/memtopo"
	"github.com/cellplane/cellplane/internal/testutil"
	cpv1 "github.com/cellplane/cellplane/proto/cellplane/controlplane/v1"
)

func TestConfigValidate(t *testing.T) {
	valid := registry.DefaultConfig()
	valid.Cell = cell
	valid.Node = nodeRecord("n1")
	tests := []struct {
		name string
		mod  func(*registry.Config)
		want string // substring of the error; "" = valid
	}{
		{"valid", func(*registry.Config) {}, ""},
		{"no cell", func(c *registry.Config) { c.Cell = "" }, "Cell"},
		{"bad cell", func(c *registry.Config) { c.Cell = "a/b" }, "Cell"},
		{"no node", func(c *registry.Config) { c.Node = nil }, "Node is required"},
		{"no node id", func(c *registry.Config) { c.Node = &cpv1.Node{GrpcAddr: "x:1"} }, "Node.Id"},
		{"other cell", func(c *registry.Config) { c.Node = nodeRecord("n1"); c.Node.Cell = "c2" }, "Node.Cell"},
		{"no grpc addr", func(c *registry.Config) { c.Node = &cpv1.Node{Id: "n1"} }, "GrpcAddr"},
		{"short ttl", func(c *registry.Config) { c.TTL = 500 * time.Millisecond }, "TTL"},
		{"no poll", func(c *registry.Config) { c.LeaderPoll = 0 }, "LeaderPoll"},
		{"bad retry", func(c *registry.Config) { c.RetryMin, c.RetryMax = time.Second, time.Millisecond }, "RetryMin"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := valid
			tt.mod(&c)
			err := c.Validate()
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("Validate = %v, want nil", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Fatalf("Validate = %v, want an error about %s", err, tt.want)
			}
		})
	}
}

func TestRegistrarRegistersAndUnregisters(t *testing.T) {
	st := newStore(t)
	ctx := testutil.Context(t, 10*time.Second)
	r := startRegistrar(t, st, "n1", nil)

	n, kv, err := getNode(ctx, st, "n1")
	if err != nil {
		t.Fatalf("node key after Start: %v", err)
	}
	if n.GetCell() != cell || n.GetRole() != cpv1.NodeRole_NODE_ROLE_MEMBER || n.GetGrpcAddr() != "n1.grpc:7211" || n.GetStartTime() == nil {
		t.Fatalf("registered %v", n)
	}
	if kv.Lease == 0 || kv.Lease != r.Lease() {
		t.Fatalf("node key lease = %d, registrar's = %d", kv.Lease, r.Lease())
	}
	if err := r.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := wantAbsent(ctx, st, r.NodeKey())(); err != nil {
		t.Fatalf("after Close: %v", err)
	}
	if err := r.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

// The session is lost (its lease expires): the registrar opens a new one
// and registers again.
func TestRegistrarReRegistersAfterSessionLoss(t *testing.T) {
	st := newStore(t)
	ctx := testutil.Context(t, 10*time.Second)
	l := &leader{}
	l.set(3, true)
	r := startRegistrar(t, st, "n1", l)
	testutil.Eventually(t, 5*time.Second, wantLeader(ctx, st, "n1", 3))

	old := r.Lease()
	if !st.ExpireLease(old) {
		t.Fatalf("ExpireLease(%d): no such lease", old)
	}
	testutil.Eventually(t, 5*time.Second, func() error {
		_, kv, err := getNode(ctx, st, "n1")
		if err != nil {
			return err
		}
		if kv.Lease == old {
			return fmt.Errorf("still under the expired lease %d", old)
		}
		return nil
	})
	// The leader key went with the old lease and is published again.
	testutil.Eventually(t, 5*time.Second, func() error {
		if err := wantLeader(ctx, st, "n1", 3)(); err != nil {
			return err
		}
		_, kv, _ := getLeader(ctx, st)
		if kv.Lease != r.Lease() {
			return fmt.Errorf("leader key under lease %d, registrar's is %d", kv.Lease, r.Lease())
		}
		return nil
	})
}

// The store is unreachable when the node starts: Start succeeds and the
// node registers once the store answers.
func TestRegistrarRetriesUntilTheStoreAnswers(t *testing.T) {
	st := newStore(t)
	ctx := testutil.Context(t, 10*time.Second)
	f := newFlaky(st, "/nodes/", 5)
	r := startRegistrar(t, f, "n1", nil)
	testutil.Eventually(t, 5*time.Second, func() error {
		_, _, err := getNode(ctx, st, "n1")
		return err
	})
	if f.hits.Load() != 5 {
		t.Fatalf("%d injected failures seen, want 5", f.hits.Load())
	}
	if r.Lease() == 0 {
		t.Fatal("registered, yet Lease() = 0")
	}
}

func TestRegistrarPublishesLeadership(t *testing.T) {
	st := newStore(t)
	ctx := testutil.Context(t, 10*time.Second)
	key := topo.CellLeaderKey(cell)
	l1, l2 := &leader{}, &leader{}
	r1 := startRegistrar(t, st, "n1", l1)
	startRegistrar(t, st, "n2", l2)

	// n1 leads at term 2.
	l1.set(2, true)
	testutil.Eventually(t, 5*time.Second, wantLeader(ctx, st, "n1", 2))
	lead, kv, err := getLeader(ctx, st)
	if err != nil {
		t.Fatal(err)
	}
	if kv.Lease != r1.Lease() || lead.GetGrpcAddr() != "n1.grpc:7211" || lead.GetHttpAddr() != "n1.http:7212" || lead.GetSince() == nil {
		t.Fatalf("leader key %v under lease %d, want n1's addresses under %d", lead, kv.Lease, r1.Lease())
	}

	// n1 steps down: its key goes.
	l1.set(2, false)
	testutil.Eventually(t, 5*time.Second, wantAbsent(ctx, st, key))

	// n2 is elected at term 3.
	l2.set(3, true)
	testutil.Eventually(t, 5*time.Second, wantLeader(ctx, st, "n2", 3))

	// A crashed-looking leader: n2's key stays while n1 wins term 4 (n2
	// has not noticed yet). The higher term takes over at once.
	l1.set(4, true)
	testutil.Eventually(t, 5*time.Second, wantLeader(ctx, st, "n1", 4))
	// n2 then notices it lost; it must not delete n1's key.
	l2.set(3, false)
	// A third registrar that observes leadership at a stale term cannot
	// take the key either; and n1 still holds it once n2 and n3 settled.
	l3 := &leader{}
	l3.set(1, true)
	r3 := startRegistrar(t, st, "n3", l3)
	l3.set(1, false)
	if err := r3.Close(); err != nil {
		t.Fatal(err)
	}
	if err := wantLeader(ctx, st, "n1", 4)(); err != nil {
		t.Fatal(err)
	}

	// Close removes the leader key at once (no TTL to wait for).
	if err := r1.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	for _, k := range []string{key, topo.CellNodeKey(cell, "n1")} {
		if _, err := st.Get(ctx, k); !errors.Is(err, topo.ErrNotFound) {
			t.Fatalf("after Close, Get(%s) = %v, want not found", k, err)
		}
	}
}

// Publishing fails for a while: the leader key appears once the store
// answers again.
func TestRegistrarRetriesPublishing(t *testing.T) {
	st := newStore(t)
	ctx := testutil.Context(t, 10*time.Second)
	f := newFlaky(st, "/leader", 4)
	l := &leader{}
	l.set(7, true)
	startRegistrar(t, f, "n1", l)
	testutil.Eventually(t, 5*time.Second, wantLeader(ctx, st, "n1", 7))
	if f.hits.Load() != 4 {
		t.Fatalf("%d injected failures seen, want 4", f.hits.Load())
	}
}

// memtopo's own fault injection: sessions cannot be opened for a while,
// at start and again after the session was lost.
func TestRegistrarSessionFaults(t *testing.T) {
	st := newStore(t)
	ctx := testutil.Context(t, 10*time.Second)
	st.FailNext(memtopo.OpSession, "", topo.ErrUnavailable, 3)
	r := startRegistrar(t, st, "n1", nil)
	testutil.Eventually(t, 5*time.Second, func() error {
		_, _, err := getNode(ctx, st, "n1")
		return err
	})
	old := r.Lease()
	st.FailNext(memtopo.OpSession, "", topo.ErrUnavailable, 3)
	st.FailNext(memtopo.OpTxn, topo.CellNodesPrefix(cell), topo.ErrUnavailable, 2)
	if !st.ExpireLease(old) {
		t.Fatalf("ExpireLease(%d): no such lease", old)
	}
	testutil.Eventually(t, 5*time.Second, func() error {
		_, kv, err := getNode(ctx, st, "n1")
		if err != nil {
			return err
		}
		if kv.Lease == old || kv.Lease != r.Lease() {
			return fmt.Errorf("node key under lease %d (old %d, registrar's %d)", kv.Lease, old, r.Lease())
		}
		return nil
	})
	// Every session but the live one is gone (failed attempts leak none).
	if leases := st.Leases(); len(leases) != 1 || leases[0] != r.Lease() {
		t.Fatalf("leases %v, want only %d", leases, r.Lease())
	}
}
