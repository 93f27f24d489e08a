package registry_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/cellplane/cellplane/cells/registry"
	"github.com/cellplane/cellplane/controlplane/catalog"
	"github.com/cellplane/cellplane/controlplane/topo"
	"github.com/cellplane/cellplane/controlplane/topo/memtopo"
	"github.com/cellplane/cellplane/internal/testutil"
	cpv1 "github.com/cellplane/cellplane/proto/cellplane/controlplane/v1"
)

const cell = "c1"

func newStore(t *testing.T) *memtopo.Store {
	t.Helper()
	st := memtopo.New()
	t.Cleanup(func() { _ = st.Close() })
	return st
}

func nodeRecord(id string) *cpv1.Node {
	return &cpv1.Node{
		Id:       id,
		Cell:     cell,
		Role:     cpv1.NodeRole_NODE_ROLE_MEMBER,
		RaftAddr: id + ".raft:7210",
		GrpcAddr: id + ".grpc:7211",
		HttpAddr: id + ".http:7212",
	}
}

// leader is a LeaderSource the test flips.
type leader struct {
	mu      sync.Mutex
	term    uint64
	leading bool
}

func (l *leader) set(term uint64, leading bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.term, l.leading = term, leading
}

func (l *leader) LeaderTerm() (uint64, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.term, l.leading
}

func startRegistrar(t *testing.T, st topo.Store, id string, src registry.LeaderSource) *registry.Registrar {
	t.Helper()
	cfg := registry.DefaultConfig()
	cfg.Cell = cell
	cfg.Node = nodeRecord(id)
	cfg.TTL = time.Second
	cfg.LeaderPoll = 5 * time.Millisecond
	cfg.RetryMin, cfg.RetryMax = time.Millisecond, 20*time.Millisecond
	cfg.Logger = testutil.Logger(t).With("test_node", id)
	r, err := registry.Start(testutil.Context(t, 10*time.Second), st, cfg, src)
	if err != nil {
		t.Fatalf("start registrar %s: %v", id, err)
	}
	t.Cleanup(func() { _ = r.Close() })
	return r
}

// getNode returns the registered record of node id, or an error.
func getNode(ctx context.Context, st topo.Store, id string) (*cpv1.Node, topo.KV, error) {
	kv, err := st.Get(ctx, topo.CellNodeKey(cell, id))
	if err != nil {
		return nil, kv, err
	}
	var n cpv1.Node
	if err := catalog.Decode(kv, &n); err != nil {
		return nil, kv, err
	}
	return &n, kv, nil
}

// getLeader returns the published cell leader, or an error.
func getLeader(ctx context.Context, st topo.Store) (*cpv1.CellLeader, topo.KV, error) {
	kv, err := st.Get(ctx, topo.CellLeaderKey(cell))
	if err != nil {
		return nil, kv, err
	}
	var l cpv1.CellLeader
	if err := catalog.Decode(kv, &l); err != nil {
		return nil, kv, err
	}
	return &l, kv, nil
}

func wantLeader(ctx context.Context, st topo.Store, id string, term uint64) func() error {
	return func() error {
		l, _, err := getLeader(ctx, st)
		if err != nil {
			return err
		}
		if l.GetNodeId() != id || l.GetTerm() != term {
			return fmt.Errorf("leader key names %s at term %d, want %s at term %d", l.GetNodeId(), l.GetTerm(), id, term)
		}
		return nil
	}
}

func wantAbsent(ctx context.Context, st topo.Store, key string) func() error {
	return func() error {
		_, err := st.Get(ctx, key)
		if errors.Is(err, topo.ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		return fmt.Errorf("%s still exists", key)
	}
}

func createCell(t *testing.T, st topo.Store, expected uint32) {
	t.Helper()
	b, err := proto.Marshal(&cpv1.Cell{Id: cell, Region: "r1", ExpectedMembers: expected, State: cpv1.CellState_CELL_STATE_ACTIVE})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Create(testutil.Context(t, 5*time.Second), topo.CellKey(cell), b); err != nil {
		t.Fatalf("create cell: %v", err)
	}
}

// flaky wraps a topo.Store and fails the first n calls of Get, List and
// Txn on keys containing match with ErrUnavailable.
type flaky struct {
	topo.Store
	match string
	left  atomic.Int64
	hits  atomic.Int64
}

func newFlaky(st topo.Store, match string, n int64) *flaky {
	f := &flaky{Store: st, match: match}
	f.left.Store(n)
	return f
}

func (f *flaky) fail(key string) error {
	if !strings.Contains(key, f.match) {
		return nil
	}
	if f.left.Add(-1) >= 0 {
		f.hits.Add(1)
		return fmt.Errorf("flaky: %w", topo.ErrUnavailable)
	}
	return nil
}

func (f *flaky) Get(ctx context.Context, key string) (topo.KV, error) {
	if err := f.fail(key); err != nil {
		return topo.KV{}, err
	}
	return f.Store.Get(ctx, key)
}

func (f *flaky) List(ctx context.Context, prefix string, opts topo.ListOptions) (topo.ListResult, error) {
	if err := f.fail(prefix); err != nil {
		return topo.ListResult{}, err
	}
	return f.Store.List(ctx, prefix, opts)
}

func (f *flaky) Txn(ctx context.Context, conds []topo.Cond, ops []topo.Op) (topo.Revision, error) {
	for _, op := range ops {
		if err := f.fail(op.Key); err != nil {
			return 0, err
		}
	}
	return f.Store.Txn(ctx, conds, ops)
}
