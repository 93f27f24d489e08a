package controller_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/cellplane/cellplane/controlplane/catalog"
	"github.com/cellplane/cellplane/controlplane/controller"
	"github.com/cellplane/cellplane/controlplane/intent"
	"github.com/cellplane/cellplane/controlplane/topo"
	"github.com/cellplane/cellplane/internal/cperr"
	"github.com/cellplane/cellplane/internal/testutil"
	cellv1 "github.com/cellplane/cellplane/proto/cellplane/cell/v1"
	cpv1 "github.com/cellplane/cellplane/proto/cellplane/controlplane/v1"
)

// simCells are fake cells for failovers, with the role, epoch and tseq
// rules of real ones: OWNER and FENCED transitions are events with a tseq,
// epochs never go down, a request id gets its first answer again, and a
// STANDBY replicates its source instantly whenever it is read, unless its
// cell is paused (then it stays where it was).
type simCells struct {
	mu      sync.Mutex
	recs    map[string]map[string]*simRec // cell → tenant
	down    map[string]bool               // unreachable
	paused  map[string]bool               // replication into the cell stopped
	answers map[string]*cellv1.TenantInfo // request id → first answer
	history []string                      // "cell/tenant ROLE@epoch tseq" of each change
	// notBootstrapped: a new STANDBY never finishes its copy.
	notBootstrapped bool
	// block, when set, holds every SetTenant until it is closed.
	block chan struct{}
	// quota: the last quota a SetTenant gave, by "cell/tenant".
	quota map[string]*cellv1.TenantQuota
}

type simRec struct {
	role         cellv1.Role
	epoch, tseq  uint64
	source       string
	bootstrapped bool
}

func newSimCells() *simCells {
	return &simCells{recs: map[string]map[string]*simRec{}, down: map[string]bool{}, paused: map[string]bool{}, answers: map[string]*cellv1.TenantInfo{}}
}

func (s *simCells) rec(cell, tenant string) *simRec {
	if s.recs[cell] == nil {
		s.recs[cell] = map[string]*simRec{}
	}
	return s.recs[cell][tenant]
}

func (s *simCells) info(cell, tenant string) *cellv1.TenantInfo {
	r := s.recs[cell][tenant]
	return &cellv1.TenantInfo{Tenant: tenant, Role: r.role, Epoch: r.epoch, Tseq: r.tseq, SourceCell: r.source, Bootstrapped: r.bootstrapped}
}

// catchUp copies the source's tseq into a standby (the instant sink).
func (s *simCells) catchUp(cell, tenant string) {
	r := s.rec(cell, tenant)
	if r == nil || r.role != cellv1.Role_ROLE_STANDBY || !r.bootstrapped || s.paused[cell] {
		return
	}
	if src := s.rec(r.source, tenant); src != nil && src.tseq > r.tseq {
		r.tseq = src.tseq
	}
}

func (s *simCells) SetTenant(ctx context.Context, cell string, req *cellv1.SetTenantRequest) (*cellv1.TenantInfo, error) {
	tenant, role, epoch, source, resume, requestID := req.GetTenant(), req.GetRole(), req.GetEpoch(), req.GetSourceCell(), req.GetResume(), req.GetRequestId()
	s.mu.Lock()
	block := s.block
	s.mu.Unlock()
	if block != nil {
		select {
		case <-block:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.down[cell] {
		return nil, cperr.New(cperr.CellUnavailable, "cell %s is down", cell)
	}
	if q := req.GetQuota(); q != nil {
		if s.quota == nil {
			s.quota = map[string]*cellv1.TenantQuota{}
		}
		s.quota[cell+"/"+tenant] = q
	}
	key := cell + "/" + requestID
	if a, ok := s.answers[key]; ok && requestID != "" {
		return proto.Clone(a).(*cellv1.TenantInfo), nil
	}
	s.catchUp(cell, tenant)
	r := s.rec(cell, tenant)
	switch {
	case r == nil:
		r = &simRec{}
		s.recs[cell][tenant] = r
	case r.role == role && r.epoch == epoch && r.source == source:
		return s.info(cell, tenant), nil // what it has already: a no-op
	case epoch < r.epoch || (role == cellv1.Role_ROLE_OWNER && epoch <= r.epoch && r.role != cellv1.Role_ROLE_STANDBY):
		return nil, cperr.New(cperr.StaleEpoch, "%s has %s at epoch %d", cell, tenant, r.epoch)
	}
	switch role {
	case cellv1.Role_ROLE_STANDBY:
		if r.role != cellv1.Role_ROLE_STANDBY || r.source != source {
			r.bootstrapped = resume || !s.notBootstrapped
		}
		r.source = source
	default:
		r.tseq++ // OWNER and FENCED are events
		r.source = ""
	}
	r.role, r.epoch = role, epoch
	s.history = append(s.history, fmt.Sprintf("%s/%s %s@%d tseq %d", cell, tenant, strings.TrimPrefix(role.String(), "ROLE_"), epoch, r.tseq))
	out := s.info(cell, tenant)
	if requestID != "" {
		s.answers[key] = proto.Clone(out).(*cellv1.TenantInfo)
	}
	return out, nil
}

func (s *simCells) GetTenant(_ context.Context, cell, tenant string) (*cellv1.TenantInfo, *cellv1.ReplicationStatus, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.down[cell] {
		return nil, nil, cperr.New(cperr.CellUnavailable, "cell %s is down", cell)
	}
	s.catchUp(cell, tenant)
	r := s.rec(cell, tenant)
	if r == nil {
		return nil, nil, cperr.New(cperr.TenantNotFound, "tenant %s is not in cell %s", tenant, cell)
	}
	var repl *cellv1.ReplicationStatus
	if r.role == cellv1.Role_ROLE_STANDBY {
		repl = &cellv1.ReplicationStatus{SourceCell: r.source, AppliedTseq: r.tseq, State: "STREAMING"}
	}
	return s.info(cell, tenant), repl, nil
}

func (s *simCells) DeleteTenant(_ context.Context, cell string, req *cellv1.DeleteTenantRequest) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if r := s.recs[cell][req.GetTenant()]; r != nil {
		if err := fakeDeleteGuard(r.role, r.epoch, req); err != nil {
			return err
		}
	}
	delete(s.recs[cell], req.GetTenant())
	return nil
}

// Propose is the old owner's Raft, for a real authority keeper
// (registry.Proposer): it applies the fence to the cell's record.
func (s *simCells) proposer(cell string) proposeFunc {
	return func(ctx context.Context, cmd *cellv1.Command) (*cellv1.CommandResult, error) {
		op := cmd.GetSetTenant()
		info, err := s.SetTenant(ctx, cell, &cellv1.SetTenantRequest{Tenant: cmd.GetTenant(), Role: op.GetRole(), Epoch: op.GetEpoch(), RequestId: cmd.GetRequestId()})
		if err != nil {
			return nil, err
		}
		return &cellv1.CommandResult{Tseq: info.GetTseq(), Result: &cellv1.CommandResult_Tenant{Tenant: info}}, nil
	}
}

type proposeFunc func(ctx context.Context, cmd *cellv1.Command) (*cellv1.CommandResult, error)

func (p proposeFunc) Propose(ctx context.Context, cmd *cellv1.Command) (*cellv1.CommandResult, error) {
	return p(ctx, cmd)
}

// write applies n client writes on the tenant's owner cell.
func (s *simCells) write(t *testing.T, cell, tenant string, n int) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.rec(cell, tenant)
	if r == nil || r.role != cellv1.Role_ROLE_OWNER {
		t.Fatalf("write to %s on %s: not its owner", tenant, cell)
	}
	r.tseq += uint64(n)
}

func (s *simCells) get(cell, tenant string) simRec {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.catchUp(cell, tenant)
	if r := s.rec(cell, tenant); r != nil {
		return *r
	}
	return simRec{}
}

func (s *simCells) set(fn func(s *simCells)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	fn(s)
}

func (s *simCells) changes() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.history...)
}

// foEnv is a memtopo store with two cells in two regions (a in us, b in
// eu) and a tenant acme owned by a at epoch 1 with its standby on b,
// bootstrapped, and 5 writes.
type foEnv struct {
	st    topo.Store
	cells *simCells
}

func newFoEnv(t *testing.T, st topo.Store) *foEnv {
	t.Helper()
	foSeedCells(t, st, activeCell("a", "us", 0), activeCell("b", "eu", 0))
	e := &foEnv{st: st, cells: newSimCells()}
	e.place(t, "acme", "a", "b")
	return e
}

// place writes a placement (cell, standby) at epoch 1 and the cells'
// records: OWNER with 5 writes, STANDBY bootstrapped and caught up.
func (e *foEnv) place(t *testing.T, tenant, cell, standby string) {
	t.Helper()
	ctx := testutil.Context(t, 5*time.Second)
	if _, err := e.cells.SetTenant(ctx, cell, &cellv1.SetTenantRequest{Tenant: tenant, Role: cellv1.Role_ROLE_OWNER, Epoch: 1}); err != nil {
		t.Fatal(err)
	}
	e.cells.write(t, cell, tenant, 5)
	if standby != "" {
		if _, err := e.cells.SetTenant(ctx, standby, &cellv1.SetTenantRequest{Tenant: tenant, Role: cellv1.Role_ROLE_STANDBY, Epoch: 1, SourceCell: cell}); err != nil {
			t.Fatal(err)
		}
		e.cells.get(standby, tenant) // caught up
	}
	pl := &cpv1.Tenant{Id: tenant, HomeRegion: "us", Cell: cell, StandbyCell: standby, State: cpv1.TenantState_TENANT_STATE_ACTIVE, Epoch: 1, Limits: &cpv1.TenantLimits{}}
	if _, err := e.st.Txn(ctx, nil, []topo.Op{topo.Put(topo.TenantKey(tenant), catalog.Encode(pl))}); err != nil {
		t.Fatal(err)
	}
}

// start runs a controller replica with quick failover pacing.
func (e *foEnv) start(t *testing.T, id string, mod func(*controller.Config)) (*controller.Controller, func()) {
	t.Helper()
	cfg := controller.DefaultConfig()
	cfg.ID = id
	cfg.SessionTTL = time.Second
	cfg.RetryMin, cfg.RetryMax = 5*time.Millisecond, 50*time.Millisecond
	cfg.Failover.PollInterval = 5 * time.Millisecond
	cfg.Failover.LeaseMargin = 50 * time.Millisecond
	cfg.Logger = testutil.Logger(t).With("replica", id)
	if mod != nil {
		mod(&cfg)
	}
	c, err := controller.New(e.st, e.cells, cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = c.Run(ctx) }()
	var once sync.Once
	stop := func() { once.Do(func() { cancel(); <-done }) }
	t.Cleanup(stop)
	testutil.Eventually(t, 5*time.Second, func() error {
		if !c.IsLeader() {
			return fmt.Errorf("%s not leading yet", id)
		}
		return nil
	})
	return c, stop
}

func (e *foEnv) tenant(t *testing.T, id string) *cpv1.Tenant {
	t.Helper()
	tn, _, err := catalog.GetTenant(testutil.Context(t, 5*time.Second), e.st, id)
	if err != nil {
		t.Fatal(err)
	}
	return tn
}

// waitFailover waits until failover id is in state want.
func (e *foEnv) waitFailover(t *testing.T, id string, want cpv1.FailoverState) *cpv1.Failover {
	t.Helper()
	var fo *cpv1.Failover
	testutil.Eventually(t, 10*time.Second, func() error {
		var err error
		fo, _, err = intent.GetFailover(testutil.Context(t, 5*time.Second), e.st, id)
		if err != nil {
			return err
		}
		if fo.GetState() != want {
			return fmt.Errorf("failover %s is %s (%s %s), want %s", id, intent.FailoverStateName(fo.GetState()),
				fo.GetErrorReason(), fo.GetErrorMessage(), intent.FailoverStateName(want))
		}
		return nil
	})
	return fo
}

func (e *foEnv) startFailover(t *testing.T, tenant string, kind cpv1.FailoverKind) *cpv1.Failover {
	t.Helper()
	fos, err := intent.StartFailover(testutil.Context(t, 5*time.Second), e.st, intent.FailoverRequest{Tenant: tenant, Kind: kind})
	if err != nil {
		t.Fatalf("start %s of %s: %v", intent.FailoverKindName(kind), tenant, err)
	}
	if len(fos) != 1 {
		t.Fatalf("started %d failovers, want 1", len(fos))
	}
	return fos[0]
}

// foSeedCells writes cells (with a zero load) and their regions.
func foSeedCells(t *testing.T, st topo.Store, cells ...*cpv1.Cell) {
	t.Helper()
	ctx := testutil.Context(t, 5*time.Second)
	for _, c := range cells {
		if _, err := st.Txn(ctx, nil, append([]topo.Op{
			topo.Put(topo.RegionKey(c.GetRegion()), catalog.Encode(&cpv1.Region{Name: c.GetRegion()})),
			topo.Put(topo.CellKey(c.GetId()), catalog.Encode(c)),
			topo.Put(topo.CellLoadKey(c.GetId()), catalog.Encode(&cpv1.CellLoad{})),
		}, healthyOps(c)...)); err != nil {
			t.Fatal(err)
		}
	}
}
