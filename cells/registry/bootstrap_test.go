package registry_test

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cellplane/cellplane/cells/registry"
	"github.com/cellplane/cellplane/controlplane/topo"
	"github.com/cellplane/cellplane/controlplane/topo/memtopo"
	"github.com/cellplane/cellplane/internal/testutil"
	cpv1 "github.com/cellplane/cellplane/proto/cellplane/controlplane/v1"
)

type bootResult struct {
	id      string
	members []*cpv1.Node
	err     error
}

func waitAsync(ctx context.Context, t *testing.T, st topo.Store, id string, out chan<- bootResult) {
	log := testutil.Logger(t)
	go func() {
		m, err := registry.WaitBootstrap(ctx, st, cell, nodeRecord(id), log)
		out <- bootResult{id, m, err}
	}()
}

func ids(ms []*cpv1.Node) []string {
	var out []string
	for _, m := range ms {
		out = append(out, m.GetId())
	}
	return out
}

// Three nodes wait before the cell exists; once it is created and they
// registered, they all get the same members, oldest registrations first.
func TestWaitBootstrapAgrees(t *testing.T) {
	st := newStore(t)
	ctx := testutil.Context(t, 10*time.Second)
	out := make(chan bootResult, 4)
	for _, id := range []string{"n3", "n1", "n2"} {
		startRegistrar(t, st, id, nil)
		waitAsync(ctx, t, st, id, out)
	}
	// Nothing can be decided before the cell exists.
	select {
	case r := <-out:
		t.Fatalf("%s returned %v, %v before the cell existed", r.id, ids(r.members), r.err)
	default:
	}
	createCell(t, st, 3)
	var first []string
	for range 3 {
		r := <-out
		if r.err != nil {
			t.Fatalf("%s: %v", r.id, r.err)
		}
		got := ids(r.members)
		if first == nil {
			first = got
		}
		if !slices.Equal(got, first) {
			t.Fatalf("%s got %v, another node got %v", r.id, got, first)
		}
		if !registry.Contains(r.members, r.id) {
			t.Fatalf("%s not in %v", r.id, got)
		}
	}
	if want := []string{"n3", "n1", "n2"}; !slices.Equal(first, want) {
		t.Fatalf("members %v, want registration order %v", first, want)
	}
	m, err := registry.WaitBootstrap(ctx, st, cell, nodeRecord("n1"), testutil.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range m {
		if m.GetRaftAddr() != m.GetId()+".raft:7210" || m.GetGrpcAddr() != m.GetId()+".grpc:7211" {
			t.Fatalf("member %v lacks its addresses", m)
		}
	}

	// A latecomer gets the recorded members, without itself.
	startRegistrar(t, st, "n4", nil)
	m, err = registry.WaitBootstrap(ctx, st, cell, nodeRecord("n4"), testutil.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	if registry.Contains(m, "n4") || len(m) != 3 {
		t.Fatalf("latecomer got %v", ids(m))
	}
}

// More nodes than expected_members registered: the oldest are chosen;
// workers do not count.
func TestWaitBootstrapPicksOldestMembers(t *testing.T) {
	st := newStore(t)
	ctx := testutil.Context(t, 10*time.Second)
	createCell(t, st, 2)
	w := nodeRecord("w0")
	w.Role = cpv1.NodeRole_NODE_ROLE_WORKER
	cfg := registry.DefaultConfig()
	cfg.Cell, cfg.Node, cfg.Logger = cell, w, testutil.Logger(t)
	wr, err := registry.Start(ctx, st, cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = wr.Close() })
	for _, id := range []string{"b", "a", "c"} {
		startRegistrar(t, st, id, nil)
	}
	m, err := registry.WaitBootstrap(ctx, st, cell, nodeRecord("c"), testutil.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	if got := ids(m); !slices.Equal(got, []string{"b", "a"}) {
		t.Fatalf("members %v, want [b a]", got)
	}
}

// The store fails reads and the bootstrap write for a while: WaitBootstrap
// retries and succeeds.
func TestWaitBootstrapRetriesStoreErrors(t *testing.T) {
	for _, match := range []string{"/bootstrap", "/nodes/", topo.CellKey(cell)} {
		t.Run(strings.Trim(match, "/"), func(t *testing.T) {
			st := newStore(t)
			ctx := testutil.Context(t, 10*time.Second)
			createCell(t, st, 1)
			startRegistrar(t, st, "n1", nil)
			f := newFlaky(st, match, 3)
			m, err := registry.WaitBootstrap(ctx, f, cell, nodeRecord("n1"), testutil.Logger(t))
			if err != nil {
				t.Fatal(err)
			}
			if got := ids(m); !slices.Equal(got, []string{"n1"}) {
				t.Fatalf("members %v", got)
			}
			if f.hits.Load() != 3 {
				t.Fatalf("%d injected failures, want 3", f.hits.Load())
			}
		})
	}
}

// WaitBootstrap ends with ctx when the cell never appears.
func TestWaitBootstrapCanceled(t *testing.T) {
	st := newStore(t)
	ctx, cancel := context.WithTimeout(testutil.Context(t, 10*time.Second), 50*time.Millisecond)
	defer cancel()
	_, err := registry.WaitBootstrap(ctx, st, cell, nodeRecord("n1"), testutil.Logger(t))
	if err == nil || !strings.Contains(err.Error(), "deadline") {
		t.Fatalf("err = %v, want a deadline error", err)
	}
}

// memtopo's fault injection on the bootstrap write itself.
func TestWaitBootstrapRetriesFailedWrite(t *testing.T) {
	st := newStore(t)
	ctx := testutil.Context(t, 10*time.Second)
	createCell(t, st, 1)
	startRegistrar(t, st, "n1", nil)
	st.FailNext(memtopo.OpTxn, topo.CellBootstrapKey(cell), topo.ErrUnavailable, 3)
	st.FailNext(memtopo.OpGet, topo.CellBootstrapKey(cell), topo.ErrUnavailable, 2)
	m, err := registry.WaitBootstrap(ctx, st, cell, nodeRecord("n1"), testutil.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	if got := ids(m); !slices.Equal(got, []string{"n1"}) {
		t.Fatalf("members %v", got)
	}
	if _, err := st.Get(ctx, topo.CellBootstrapKey(cell)); err != nil {
		t.Fatalf("bootstrap record: %v", err)
	}
}
