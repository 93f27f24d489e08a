package registry_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/cellplane/cellplane/cells/registry"
	"github.com/cellplane/cellplane/controlplane/catalog"
	"github.com/cellplane/cellplane/controlplane/topo"
	"github.com/cellplane/cellplane/internal/cperr"
	"github.com/cellplane/cellplane/internal/testutil"
	cellv1 "github.com/cellplane/cellplane/proto/cellplane/cell/v1"
	cpv1 "github.com/cellplane/cellplane/proto/cellplane/controlplane/v1"
)

// fakeClock is a monotonic clock the test moves.
type fakeClock struct{ d atomic.Int64 }

func (c *fakeClock) Now() time.Duration      { return time.Duration(c.d.Load()) }
func (c *fakeClock) Advance(d time.Duration) { c.d.Add(int64(d)) }
func (c *fakeClock) Set(d time.Duration)     { c.d.Store(int64(d)) }

// fencer is a Proposer that records the fences proposed and answers like a
// cell: the tenant becomes FENCED at the fence's epoch with the next tseq.
type fencer struct {
	mu      sync.Mutex
	tseq    map[string]uint64 // tenant → its tseq before the fence
	fenced  []*cellv1.Command
	applied map[string]uint64 // request id → answered tseq (dedup)
}

func newFencer() *fencer {
	return &fencer{tseq: map[string]uint64{}, applied: map[string]uint64{}}
}

func (f *fencer) Propose(_ context.Context, cmd *cellv1.Command) (*cellv1.CommandResult, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	st := cmd.GetSetTenant()
	if st == nil || st.GetRole() != cellv1.Role_ROLE_FENCED {
		return nil, cperr.New(cperr.InvalidArgument, "the keeper only proposes fences")
	}
	f.fenced = append(f.fenced, proto.Clone(cmd).(*cellv1.Command))
	if t, ok := f.applied[cmd.GetRequestId()]; ok {
		return &cellv1.CommandResult{Deduplicated: true, Tseq: t, Result: &cellv1.CommandResult_Tenant{Tenant: &cellv1.TenantInfo{Tenant: cmd.GetTenant(), Role: cellv1.Role_ROLE_FENCED, Epoch: st.GetEpoch(), Tseq: t}}}, nil
	}
	if _, ok := f.tseq[cmd.GetTenant()]; !ok {
		return nil, cperr.New(cperr.TenantNotFound, "tenant %s is not in this cell", cmd.GetTenant())
	}
	f.tseq[cmd.GetTenant()]++
	t := f.tseq[cmd.GetTenant()]
	f.applied[cmd.GetRequestId()] = t
	return &cellv1.CommandResult{Tseq: t, Result: &cellv1.CommandResult_Tenant{Tenant: &cellv1.TenantInfo{Tenant: cmd.GetTenant(), Role: cellv1.Role_ROLE_FENCED, Epoch: st.GetEpoch(), Tseq: t}}}, nil
}

func (f *fencer) proposals() []*cellv1.Command {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]*cellv1.Command(nil), f.fenced...)
}

func (f *fencer) setTseq(tenant string, tseq uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.tseq[tenant] = tseq
}

// startAuthority starts a keeper for node id of the test cell.
func startAuthority(t *testing.T, st topo.Store, id string, src registry.LeaderSource, prop registry.Proposer, mod func(*registry.AuthorityConfig)) *registry.Authority {
	t.Helper()
	cfg := registry.DefaultAuthorityConfig()
	cfg.Cell, cfg.NodeID = cell, id
	cfg.TTL, cfg.DriftMargin = 2*time.Second, 500*time.Millisecond
	cfg.Poll = 2 * time.Millisecond
	cfg.Logger = testutil.Logger(t).With("test_node", id)
	if mod != nil {
		mod(&cfg)
	}
	a, err := registry.StartAuthority(st, cfg, src, prop)
	if err != nil {
		t.Fatalf("start authority keeper %s: %v", id, err)
	}
	t.Cleanup(func() { _ = a.Close() })
	return a
}

// getAuthority returns the published authority, or an error.
func getAuthority(ctx context.Context, st topo.Store) (*cpv1.CellAuthority, topo.KV, error) {
	kv, err := st.Get(ctx, topo.CellAuthorityKey(cell))
	if err != nil {
		return nil, kv, err
	}
	var a cpv1.CellAuthority
	if err := catalog.Decode(kv, &a); err != nil {
		return nil, kv, err
	}
	return &a, kv, nil
}

func wantValid(a *registry.Authority, want bool) func() error {
	return func() error {
		if got := a.Valid(); got != want {
			return errors.New("Valid() is not " + map[bool]string{true: "true", false: "false"}[want] + " yet")
		}
		return nil
	}
}

// putFence writes an unapplied fence the way an emergency promotion does:
// the fence and a rewrite of the cell record in one transaction.
func putFence(t *testing.T, st topo.Store, tenant string, epoch uint64, failover string) topo.Revision {
	t.Helper()
	ctx := testutil.Context(t, 5*time.Second)
	ckv, err := st.Get(ctx, topo.CellKey(cell))
	if err != nil {
		t.Fatal(err)
	}
	b, err := proto.Marshal(&cpv1.CellFence{Tenant: tenant, Epoch: epoch, FailoverId: failover})
	if err != nil {
		t.Fatal(err)
	}
	rev, err := st.Txn(ctx, []topo.Cond{topo.IfVersion(topo.CellKey(cell), ckv.Version)},
		[]topo.Op{topo.Put(topo.CellFenceKey(cell, tenant), b), topo.Put(topo.CellKey(cell), ckv.Value)})
	if err != nil {
		t.Fatal(err)
	}
	return rev
}

func getFence(ctx context.Context, st topo.Store, tenant string) (*cpv1.CellFence, error) {
	kv, err := st.Get(ctx, topo.CellFenceKey(cell, tenant))
	if err != nil {
		return nil, err
	}
	var f cpv1.CellFence
	if err := catalog.Decode(kv, &f); err != nil {
		return nil, err
	}
	return &f, nil
}
