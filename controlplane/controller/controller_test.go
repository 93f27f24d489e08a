package controller_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/cellplane/cellplane/controlplane/catalog"
	"github.com/cellplane/cellplane/controlplane/controller"
	"github.com/cellplane/cellplane/controlplane/intent"
	"github.com/cellplane/cellplane/controlplane/topo"
	"github.com/cellplane/cellplane/controlplane/topo/memtopo"
	"github.com/cellplane/cellplane/internal/cperr"
	"github.com/cellplane/cellplane/internal/testutil"
	cellv1 "github.com/cellplane/cellplane/proto/cellplane/cell/v1"
	cpv1 "github.com/cellplane/cellplane/proto/cellplane/controlplane/v1"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeCells records what the controller asks of cells (tenant creates and
// deletes: it knows owners only). Like a real cell, making a tenant OWNER
// at the epoch it already has is a no-op; failNext makes the next calls
// fail as an unreachable cell would.
type fakeCells struct {
	mu         sync.Mutex
	owner      map[string]uint64 // tenant → epoch
	setCalls   map[string]int
	applied    map[string]int // effects that changed something
	deleted    map[string]int
	failNext   int
	blockOwner chan struct{} // if set, SetTenant waits for it
	quota      map[string]*cellv1.TenantQuota
}

func newFakeCells() *fakeCells {
	return &fakeCells{owner: map[string]uint64{}, setCalls: map[string]int{}, applied: map[string]int{}, deleted: map[string]int{}}
}

func (f *fakeCells) SetTenant(ctx context.Context, cell string, req *cellv1.SetTenantRequest) (*cellv1.TenantInfo, error) {
	if req.GetRole() != cellv1.Role_ROLE_OWNER {
		return nil, cperr.New(cperr.Internal, "fakeCells: only OWNER is supported, not %s", req.GetRole())
	}
	tenant, epoch := req.GetTenant(), req.GetEpoch()
	f.mu.Lock()
	block := f.blockOwner
	f.mu.Unlock()
	if block != nil {
		select {
		case <-block:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.setCalls[tenant]++
	if f.quota == nil {
		f.quota = map[string]*cellv1.TenantQuota{}
	}
	f.quota[tenant] = req.GetQuota()
	if f.failNext > 0 {
		f.failNext--
		return nil, cperr.New(cperr.CellUnavailable, "injected")
	}
	if f.owner[tenant] != epoch {
		f.owner[tenant] = epoch
		f.applied[tenant]++
	}
	return &cellv1.TenantInfo{Tenant: tenant, Role: cellv1.Role_ROLE_OWNER, Epoch: epoch}, nil
}

func (f *fakeCells) GetTenant(_ context.Context, cell, tenant string) (*cellv1.TenantInfo, *cellv1.ReplicationStatus, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	epoch, ok := f.owner[tenant]
	if !ok {
		return nil, nil, cperr.New(cperr.TenantNotFound, "tenant %s not on cell %s", tenant, cell)
	}
	return &cellv1.TenantInfo{Tenant: tenant, Role: cellv1.Role_ROLE_OWNER, Epoch: epoch}, nil, nil
}

func (f *fakeCells) DeleteTenant(_ context.Context, cell string, req *cellv1.DeleteTenantRequest) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.failNext > 0 {
		f.failNext--
		return cperr.New(cperr.CellUnavailable, "injected")
	}
	tenant := req.GetTenant()
	if epoch, ok := f.owner[tenant]; ok {
		if err := fakeDeleteGuard(cellv1.Role_ROLE_OWNER, epoch, req); err != nil {
			return err
		}
		delete(f.owner, tenant)
		f.deleted[tenant]++
	}
	return nil
}

func (f *fakeCells) counts(tenant string) (calls, applied int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.setCalls[tenant], f.applied[tenant]
}

// seed writes a region and cells into st as the API would.
func seed(t *testing.T, st topo.Store, region string, cells ...*cpv1.Cell) {
	t.Helper()
	ctx := testutil.Context(t, 5*time.Second)
	if _, err := st.Create(ctx, topo.RegionKey(region), catalog.Encode(&cpv1.Region{Name: region})); err != nil {
		t.Fatal(err)
	}
	for _, c := range cells {
		if _, err := st.Txn(ctx, nil, append([]topo.Op{
			topo.Put(topo.CellKey(c.GetId()), catalog.Encode(c)),
			topo.Put(topo.CellLoadKey(c.GetId()), catalog.Encode(&cpv1.CellLoad{})),
		}, healthyOps(c)...)); err != nil {
			t.Fatal(err)
		}
	}
}

// healthyOps registers c's expected members and a leader, as its nodes
// would once running: the cell is HEALTHY, so placement may choose it.
func healthyOps(c *cpv1.Cell) []topo.Op {
	id := c.GetId()
	ops := []topo.Op{topo.Put(topo.CellLeaderKey(id), catalog.Encode(&cpv1.CellLeader{NodeId: id + "-n1", GrpcAddr: id + ":1", Term: 1}))}
	members := max(c.GetExpectedMembers(), 1)
	for i := range members {
		n := fmt.Sprintf("%s-n%d", id, i+1)
		ops = append(ops, topo.Put(topo.CellNodeKey(id, n), catalog.Encode(&cpv1.Node{Id: n, Cell: id, Role: cpv1.NodeRole_NODE_ROLE_MEMBER, GrpcAddr: id + ":1"})))
	}
	return ops
}

func activeCell(id, region string, maxTenants uint64) *cpv1.Cell {
	return &cpv1.Cell{Id: id, Region: region, ExpectedMembers: 3, State: cpv1.CellState_CELL_STATE_ACTIVE,
		Capacity: &cpv1.CellCapacity{MaxTenants: maxTenants}}
}

// startController runs a controller until the test ends or stop is called.
func startController(t *testing.T, st topo.Store, cells controller.Cells, id string, knobs controller.TestingKnobs) (c *controller.Controller, stop func()) {
	t.Helper()
	cfg := controller.DefaultConfig()
	cfg.ID = id
	cfg.SessionTTL = time.Second
	cfg.RetryMin, cfg.RetryMax = 5*time.Millisecond, 50*time.Millisecond
	cfg.Logger = testutil.Logger(t)
	cfg.TestingKnobs = knobs
	c, err := controller.New(st, cells, cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = c.Run(ctx) }()
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); <-done }) }
	t.Cleanup(stop)
	return c, stop
}

func load(t *testing.T, st topo.Store, cell string) uint64 {
	t.Helper()
	l := &cpv1.CellLoad{}
	if _, err := catalog.Get(testutil.Context(t, 5*time.Second), st, topo.CellLoadKey(cell), l); err != nil {
		t.Fatal(err)
	}
	return l.GetTenants()
}

// A controller without the client that calls cells would drive nothing
// that needs them: it is refused at construction.
func TestNewRequiresStoreAndCells(t *testing.T) {
	st := memtopo.New()
	t.Cleanup(func() { _ = st.Close() })
	cfg := controller.DefaultConfig()
	cfg.ID = "c1"
	tests := []struct {
		name  string
		st    topo.Store
		cells controller.Cells
		ok    bool
	}{
		{"both", st, newFakeCells(), true},
		{"no cells", st, nil, false},
		{"no store", nil, newFakeCells(), false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := controller.New(tc.st, tc.cells, cfg); (err == nil) != tc.ok {
				t.Fatalf("New: %v, want ok=%t", err, tc.ok)
			}
		})
	}
}

func TestCreatePlacesOnLeastLoadedCell(t *testing.T) {
	st := memtopo.New()
	defer st.Close()
	seed(t, st, "us", activeCell("a", "us", 0), activeCell("b", "us", 0), activeCell("eu1", "eu", 0))
	cells := newFakeCells()
	startController(t, st, cells, "c1", controller.TestingKnobs{})
	ctx := testutil.Context(t, 10*time.Second)

	placed := map[string]int{}
	for i := range 6 {
		id := fmt.Sprintf("t%d", i)
		if err := intent.StartCreate(ctx, st, &cpv1.Tenant{Id: id, HomeRegion: "us"}, ""); err != nil {
			t.Fatal(err)
		}
		got, err := intent.WaitCreate(ctx, st, id)
		if err != nil {
			t.Fatal(err)
		}
		if got.GetState() != cpv1.TenantState_TENANT_STATE_ACTIVE || got.GetEpoch() != 1 || got.GetCell() == "" {
			t.Fatalf("placement %v: want ACTIVE at epoch 1 on a cell", got)
		}
		if _, applied := cells.counts(id); applied != 1 {
			t.Fatalf("tenant %s: cell ownership applied %d times, want 1", id, applied)
		}
		placed[got.GetCell()]++
	}
	if placed["a"] != 3 || placed["b"] != 3 {
		t.Fatalf("placements %v: want 3 on a and 3 on b (least loaded, us only)", placed)
	}
	if load(t, st, "a") != 3 || load(t, st, "b") != 3 {
		t.Fatalf("load counters a=%d b=%d, want 3 and 3", load(t, st, "a"), load(t, st, "b"))
	}
	if err := intent.StartCreate(ctx, st, &cpv1.Tenant{Id: "t0", HomeRegion: "us"}, ""); !errors.Is(err, cperr.ErrAlreadyExists) {
		t.Fatalf("second create of t0: %v, want ALREADY_EXISTS", err)
	}
}

// A cell created but not started yet (no member registered) is the least
// loaded of its region; it must not win new tenants before its nodes
// exist. Once its members and leader are registered (HEALTHY), it does.
func TestCreateSkipsCellsNotHealthy(t *testing.T) {
	st := memtopo.New()
	defer st.Close()
	seed(t, st, "us", activeCell("old", "us", 0))
	ctx := testutil.Context(t, 10*time.Second)
	fresh := activeCell("new", "us", 0)
	if _, err := st.Txn(ctx, nil, []topo.Op{
		topo.Put(topo.CellKey("new"), catalog.Encode(fresh)),
		topo.Put(topo.CellLoadKey("new"), catalog.Encode(&cpv1.CellLoad{})),
	}); err != nil {
		t.Fatal(err)
	}
	// "old" already holds tenants: by load alone "new" would win.
	if _, err := st.Txn(ctx, nil, []topo.Op{topo.Put(topo.CellLoadKey("old"), catalog.Encode(&cpv1.CellLoad{Tenants: 5}))}); err != nil {
		t.Fatal(err)
	}
	startController(t, st, newFakeCells(), "c1", controller.TestingKnobs{})
	create := func(id string) string {
		t.Helper()
		if err := intent.StartCreate(ctx, st, &cpv1.Tenant{Id: id, HomeRegion: "us"}, ""); err != nil {
			t.Fatal(err)
		}
		got, err := intent.WaitCreate(ctx, st, id)
		if err != nil {
			t.Fatal(err)
		}
		return got.GetCell()
	}
	if cell := create("t1"); cell != "old" {
		t.Fatalf("t1 placed on %s, want old (new is NOT_STARTED)", cell)
	}
	if _, err := st.Txn(ctx, nil, healthyOps(fresh)); err != nil {
		t.Fatal(err)
	}
	if cell := create("t2"); cell != "new" {
		t.Fatalf("t2 placed on %s, want new (HEALTHY now, and the least loaded)", cell)
	}
}

// TestCreateSetsTheCellQuota (H4): a tenant's max_bytes becomes its own
// storage quota at its cell, enforced there; without it the cell's
// default applies.
func TestCreateSetsTheCellQuota(t *testing.T) {
	st := memtopo.New()
	defer st.Close()
	seed(t, st, "us", activeCell("a", "us", 0))
	cells := newFakeCells()
	startController(t, st, cells, "c1", controller.TestingKnobs{})
	ctx := testutil.Context(t, 10*time.Second)
	for id, limits := range map[string]*cpv1.TenantLimits{"capped": {MaxBytes: 1 << 20}, "plain": {Rate: 5}} {
		if err := intent.StartCreate(ctx, st, &cpv1.Tenant{Id: id, HomeRegion: "us", Limits: limits}, ""); err != nil {
			t.Fatal(err)
		}
		if _, err := intent.WaitCreate(ctx, st, id); err != nil {
			t.Fatal(err)
		}
	}
	cells.mu.Lock()
	defer cells.mu.Unlock()
	if q := cells.quota["capped"]; q.GetMaxBytes() != 1<<20 {
		t.Fatalf("capped's cell quota %v, want max_bytes 1 MiB", q)
	}
	if q := cells.quota["plain"]; q != nil {
		t.Fatalf("plain's cell quota %v, want none (the cell's default)", q)
	}
}

func TestCreateWithoutCapacityFailsAndFreesTheID(t *testing.T) {
	st := memtopo.New()
	defer st.Close()
	seed(t, st, "us", activeCell("a", "us", 1))
	startController(t, st, newFakeCells(), "c1", controller.TestingKnobs{})
	ctx := testutil.Context(t, 10*time.Second)
	for _, id := range []string{"first", "second"} {
		if err := intent.StartCreate(ctx, st, &cpv1.Tenant{Id: id, HomeRegion: "us"}, ""); err != nil {
			t.Fatal(err)
		}
	}
	// Both race for the one free slot: exactly one is placed.
	var failed string
	for _, id := range []string{"first", "second"} {
		_, err := intent.WaitCreate(ctx, st, id)
		switch {
		case err == nil:
		case errors.Is(err, cperr.ErrNoCapacity) && failed == "":
			failed = id
		default:
			t.Fatalf("tenant %s: %v", id, err)
		}
	}
	if failed == "" {
		t.Fatal("two tenants placed on a cell with room for one")
	}
	if _, err := st.Get(ctx, topo.TenantKey(failed)); !errors.Is(err, topo.ErrNotFound) {
		t.Fatalf("failed tenant's record: %v, want it removed", err)
	}
	if _, err := st.Get(ctx, topo.WorkflowKey("create-"+failed)); !errors.Is(err, topo.ErrNotFound) {
		t.Fatalf("failed workflow record after the waiter read it: %v, want it removed", err)
	}
	if load(t, st, "a") != 1 {
		t.Fatalf("load = %d, want 1", load(t, st, "a"))
	}
}

// A controller killed before each step of a create is replaced; the new
// leader finishes the workflow, and no recorded step runs twice: the cell
// load is counted once, and ownership is asked for again only when the
// kill came before that step was recorded.
func TestKilledBetweenStepsNewLeaderFinishes(t *testing.T) {
	steps := []cpv1.WorkflowStep{
		cpv1.WorkflowStep_WORKFLOW_STEP_PENDING,
		cpv1.WorkflowStep_WORKFLOW_STEP_PLACED,
		cpv1.WorkflowStep_WORKFLOW_STEP_CELL_DONE,
	}
	for _, killAt := range steps {
		t.Run(killAt.String(), func(t *testing.T) {
			st := memtopo.New()
			defer st.Close()
			seed(t, st, "us", activeCell("a", "us", 0))
			cells := newFakeCells()
			ctx := testutil.Context(t, 15*time.Second)

			reached := make(chan struct{})
			var once sync.Once
			knob := func(_ context.Context, wf *cpv1.Workflow) error {
				if wf.GetStep() == killAt {
					once.Do(func() { close(reached) })
					return errors.New("killed")
				}
				return nil
			}
			first, stopFirst := startController(t, st, cells, "first", controller.TestingKnobs{BeforeStep: knob})
			testutil.Eventually(t, 5*time.Second, func() error {
				if !first.IsLeader() {
					return errors.New("first controller not leading yet")
				}
				return nil
			})
			if err := intent.StartCreate(ctx, st, &cpv1.Tenant{Id: "acme", HomeRegion: "us"}, ""); err != nil {
				t.Fatal(err)
			}
			select {
			case <-reached:
			case <-ctx.Done():
				t.Fatal("the workflow never reached the step")
			}
			callsBefore, _ := cells.counts("acme")
			stopFirst() // the process dies here

			startController(t, st, cells, "second", controller.TestingKnobs{})
			got, err := intent.WaitCreate(ctx, st, "acme")
			if err != nil {
				t.Fatal(err)
			}
			if got.GetCell() != "a" || got.GetEpoch() != 1 {
				t.Fatalf("placement %v", got)
			}
			if n := load(t, st, "a"); n != 1 {
				t.Fatalf("cell load = %d, want 1 (the PLACED step ran twice?)", n)
			}
			calls, applied := cells.counts("acme")
			if applied != 1 {
				t.Fatalf("ownership applied %d times", applied)
			}
			wantCalls := 1
			if killAt == cpv1.WorkflowStep_WORKFLOW_STEP_CELL_DONE {
				wantCalls = callsBefore // recorded as done: never asked again
			}
			if calls != wantCalls {
				t.Fatalf("SetTenant(OWNER) called %d times, want %d", calls, wantCalls)
			}
		})
	}
}

// A leader whose lease expired while it was acting cannot write: its
// guarded commit fails, and the successor's result is the only one.
func TestDeposedLeaderCannotWrite(t *testing.T) {
	st := memtopo.New()
	defer st.Close()
	seed(t, st, "us", activeCell("a", "us", 0))
	cells := newFakeCells()
	release := make(chan struct{})
	cells.blockOwner = release
	ctx := testutil.Context(t, 15*time.Second)

	old, _ := startController(t, st, cells, "old", controller.TestingKnobs{})
	testutil.Eventually(t, 5*time.Second, func() error {
		if !old.IsLeader() {
			return errors.New("not leading yet")
		}
		return nil
	})
	leases := st.Leases()
	if err := intent.StartCreate(ctx, st, &cpv1.Tenant{Id: "acme", HomeRegion: "us"}, ""); err != nil {
		t.Fatal(err)
	}
	// old is now inside SetTenant (blocked). Its lease expires.
	testutil.Eventually(t, 5*time.Second, func() error {
		wf, _, err := catalog.GetWorkflow(ctx, st, "create-acme")
		if err != nil || wf.GetStep() != cpv1.WorkflowStep_WORKFLOW_STEP_PLACED {
			return fmt.Errorf("workflow not PLACED yet (%v)", err)
		}
		return nil
	})
	for _, l := range leases {
		st.ExpireLease(l)
	}
	_, err := st.Txn(ctx, []topo.Cond{topo.IfExists("controller/leader/none")}, nil)
	if !errors.Is(err, topo.ErrConditionFailed) {
		t.Fatalf("sanity: %v", err)
	}
	cells.mu.Lock()
	cells.blockOwner = nil
	cells.mu.Unlock()
	close(release)
	startController(t, st, cells, "new", controller.TestingKnobs{})
	got, err := intent.WaitCreate(ctx, st, "acme")
	if err != nil {
		t.Fatal(err)
	}
	if got.GetEpoch() != 1 || load(t, st, "a") != 1 {
		t.Fatalf("placement %v load %d", got, load(t, st, "a"))
	}
}

func TestDeleteRemovesDataKeysAndLoad(t *testing.T) {
	st := memtopo.New()
	defer st.Close()
	seed(t, st, "us", activeCell("a", "us", 0))
	cells := newFakeCells()
	startController(t, st, cells, "c1", controller.TestingKnobs{})
	ctx := testutil.Context(t, 10*time.Second)
	if err := intent.StartCreate(ctx, st, &cpv1.Tenant{Id: "acme", HomeRegion: "us"}, ""); err != nil {
		t.Fatal(err)
	}
	if _, err := intent.WaitCreate(ctx, st, "acme"); err != nil {
		t.Fatal(err)
	}
	for i := range 150 { // more than one transaction's worth of keys
		if _, err := st.Create(ctx, topo.APIKeyKey("acme", fmt.Sprintf("k%03d", i)), catalog.Encode(&cpv1.ApiKey{Id: "k"})); err != nil {
			t.Fatal(err)
		}
	}
	cells.mu.Lock()
	cells.failNext = 2 // the cell is briefly unreachable: retried
	cells.mu.Unlock()
	if err := intent.StartDelete(ctx, st, "acme"); err != nil {
		t.Fatal(err)
	}
	// Routers see the tombstone before anything is removed.
	if err := intent.WaitDelete(ctx, st, "acme"); err != nil {
		t.Fatal(err)
	}
	page, err := st.List(ctx, topo.TenantsPrefix, topo.ListOptions{})
	if err != nil || len(page.KVs) != 0 {
		t.Fatalf("left under tenants/: %d keys (%v)", len(page.KVs), err)
	}
	if cells.deleted["acme"] != 1 {
		t.Fatalf("cell data removed %d times", cells.deleted["acme"])
	}
	if n := load(t, st, "a"); n != 0 {
		t.Fatalf("load = %d, want 0", n)
	}
	if err := intent.StartDelete(ctx, st, "acme"); !errors.Is(err, cperr.ErrTenantNotFound) {
		t.Fatalf("delete of a deleted tenant: %v", err)
	}
}

// Store errors on a step are retried, not fatal.
func TestStoreErrorsAreRetried(t *testing.T) {
	st := memtopo.New()
	defer st.Close()
	seed(t, st, "us", activeCell("a", "us", 0))
	st.FailNext(memtopo.OpTxn, topo.WorkflowsPrefix, topo.ErrUnavailable, 3)
	startController(t, st, newFakeCells(), "c1", controller.TestingKnobs{})
	ctx := testutil.Context(t, 10*time.Second)
	if err := intent.StartCreate(ctx, st, &cpv1.Tenant{Id: "acme", HomeRegion: "us"}, ""); err != nil {
		// the injected failures may hit the intent itself: retry it
		if !errors.Is(err, topo.ErrUnavailable) {
			t.Fatal(err)
		}
		testutil.Eventually(t, 5*time.Second, func() error {
			return intent.StartCreate(ctx, st, &cpv1.Tenant{Id: "acme", HomeRegion: "us"}, "")
		})
	}
	if _, err := intent.WaitCreate(ctx, st, "acme"); err != nil {
		t.Fatal(err)
	}
}

func TestConfigValidate(t *testing.T) {
	good := controller.DefaultConfig()
	good.ID = "x"
	if err := good.Validate(); err != nil {
		t.Fatal(err)
	}
	for name, mut := range map[string]func(*controller.Config){
		"no id":       func(c *controller.Config) { c.ID = "" },
		"short ttl":   func(c *controller.Config) { c.SessionTTL = 10 * time.Millisecond },
		"no workers":  func(c *controller.Config) { c.MaxConcurrentWorkflows = 0 },
		"retry order": func(c *controller.Config) { c.RetryMax = c.RetryMin / 2 },
	} {
		c := good
		mut(&c)
		if c.Validate() == nil {
			t.Errorf("%s: Validate passed", name)
		}
	}
}
