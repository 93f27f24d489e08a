package controller_test

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"testing"
	"time"

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

// fleet is a set of fake cells with the role/epoch rules of the real ones
// (cells/store) and a sink that copies and streams instantly: a STANDBY
// with a source catches up with it whenever it is read.
type fleet struct {
	mu    sync.Mutex
	cells map[string]map[string]*fakeRec // cell → tenant → record
	down  map[string]bool
	// noBootstrap: sinks never finish importing an export.
	noBootstrap bool
	// lag: sinks stay this many events behind their source.
	lag uint64
	// violations are moments two cells owned a tenant.
	violations []string
	// changes counts the SetTenant calls that changed something, by
	// "cell/tenant/ROLE/epoch/resume".
	changes map[string]int
	deletes map[string]int // "cell/tenant"
	// refused counts the deletes a guard refused, by "cell/tenant".
	refused map[string]int
	// beforeDelete, when set, runs (unlocked) at the start of every
	// DeleteTenant: a test pauses a caller there.
	beforeDelete func(cell string, req *cellv1.DeleteTenantRequest)
}

type fakeRec struct {
	role         cellv1.Role
	epoch        uint64
	source       string
	tseq         uint64
	bytes        uint64
	bootstrapped bool
}

func newFleet() *fleet {
	return &fleet{cells: map[string]map[string]*fakeRec{}, down: map[string]bool{}, changes: map[string]int{}, deletes: map[string]int{}, refused: map[string]int{}}
}

func (f *fleet) rec(cell, tenant string) *fakeRec {
	if f.cells[cell] == nil {
		f.cells[cell] = map[string]*fakeRec{}
	}
	return f.cells[cell][tenant]
}

func (f *fleet) SetTenant(_ context.Context, cell string, req *cellv1.SetTenantRequest) (*cellv1.TenantInfo, error) {
	tenant, role, epoch, source, resume := req.GetTenant(), req.GetRole(), req.GetEpoch(), req.GetSourceCell(), req.GetResume()
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.down[cell] {
		return nil, cperr.New(cperr.CellUnavailable, "cell %s is down", cell)
	}
	r := f.rec(cell, tenant)
	if r != nil {
		if r.role == role && r.epoch == epoch && r.source == source {
			return f.info(cell, tenant), nil // no-op, like the real cell
		}
		if epoch < r.epoch || (role == cellv1.Role_ROLE_OWNER && epoch <= r.epoch) {
			return nil, cperr.New(cperr.StaleEpoch, "%s has %s at epoch %d", cell, tenant, r.epoch)
		}
	} else {
		r = &fakeRec{}
		f.cells[cell][tenant] = r
	}
	if role == cellv1.Role_ROLE_STANDBY && (r.role != cellv1.Role_ROLE_STANDBY || r.source != source) && !resume {
		r.bootstrapped = false
	}
	if role == cellv1.Role_ROLE_STANDBY && resume && (r.role == cellv1.Role_ROLE_OWNER || r.role == cellv1.Role_ROLE_FENCED) {
		r.bootstrapped = true
	}
	r.role, r.epoch, r.source = role, epoch, source
	if role != cellv1.Role_ROLE_STANDBY {
		r.source = ""
		r.tseq++ // OWNER and FENCED are logged events
	}
	f.changes[fmt.Sprintf("%s/%s/%s/%d/%t", cell, tenant, role, epoch, resume)]++
	owners := 0
	for c := range f.cells {
		if x := f.cells[c][tenant]; x != nil && x.role == cellv1.Role_ROLE_OWNER {
			owners++
		}
	}
	if owners > 1 {
		f.violations = append(f.violations, fmt.Sprintf("%s: %d owners after %s became %s at %d", tenant, owners, cell, role, epoch))
	}
	return f.info(cell, tenant), nil
}

// sync runs the sink of a STANDBY record (with f.mu held).
func (f *fleet) sync(cell, tenant string) *cellv1.ReplicationStatus {
	r := f.cells[cell][tenant]
	if r == nil || r.role != cellv1.Role_ROLE_STANDBY || r.source == "" {
		return nil
	}
	src := f.cells[r.source][tenant]
	if src == nil || f.down[r.source] {
		return &cellv1.ReplicationStatus{SourceCell: r.source, AppliedTseq: r.tseq, State: "RETRYING", LastError: "source unavailable"}
	}
	if !r.bootstrapped {
		if f.noBootstrap {
			return &cellv1.ReplicationStatus{SourceCell: r.source, State: "BOOTSTRAPPING"}
		}
		r.bootstrapped = true
		r.tseq, r.bytes = src.tseq, src.bytes
	}
	target := src.tseq
	if target > f.lag {
		target -= f.lag
	} else {
		target = 0
	}
	r.tseq = max(r.tseq, target)
	r.bytes = src.bytes
	return &cellv1.ReplicationStatus{SourceCell: r.source, AppliedTseq: r.tseq, SourceTseq: src.tseq, LagEvents: src.tseq - r.tseq,
		State: "STREAMING", SourceRole: src.role, SourceEpoch: src.epoch}
}

func (f *fleet) info(cell, tenant string) *cellv1.TenantInfo {
	r := f.cells[cell][tenant]
	return &cellv1.TenantInfo{Tenant: tenant, Role: r.role, Epoch: r.epoch, Tseq: r.tseq, SourceCell: r.source,
		Bootstrapped: r.bootstrapped, Usage: &cellv1.TenantUsage{Bytes: r.bytes}}
}

func (f *fleet) GetTenant(_ context.Context, cell, tenant string) (*cellv1.TenantInfo, *cellv1.ReplicationStatus, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.down[cell] {
		return nil, nil, cperr.New(cperr.CellUnavailable, "cell %s is down", cell)
	}
	if f.rec(cell, tenant) == nil {
		return nil, nil, cperr.New(cperr.TenantNotFound, "no tenant %s on %s", tenant, cell)
	}
	repl := f.sync(cell, tenant)
	return f.info(cell, tenant), repl, nil
}

func (f *fleet) DeleteTenant(_ context.Context, cell string, req *cellv1.DeleteTenantRequest) error {
	f.mu.Lock()
	hook := f.beforeDelete
	f.mu.Unlock()
	if hook != nil {
		hook(cell, req)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.down[cell] {
		return cperr.New(cperr.CellUnavailable, "cell %s is down", cell)
	}
	tenant := req.GetTenant()
	if r := f.rec(cell, tenant); r != nil {
		if err := fakeDeleteGuard(r.role, r.epoch, req); err != nil {
			f.refused[cell+"/"+tenant]++
			return err
		}
		delete(f.cells[cell], tenant)
		f.deletes[cell+"/"+tenant]++
	}
	return nil
}

// write applies n writes to the tenant's owner.
func (f *fleet) write(t *testing.T, tenant string, n int) {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	for c := range f.cells {
		if r := f.cells[c][tenant]; r != nil && r.role == cellv1.Role_ROLE_OWNER {
			r.tseq += uint64(n)
			r.bytes += uint64(100 * n)
			return
		}
	}
	t.Fatalf("tenant %s has no owner", tenant)
}

// roles returns "cell:ROLE@epoch" of every cell holding tenant, sorted.
func (f *fleet) roles(tenant string) []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for c := range f.cells {
		if r := f.cells[c][tenant]; r != nil {
			out = append(out, fmt.Sprintf("%s:%s@%d", c, trimRole(r.role), r.epoch))
		}
	}
	sort.Strings(out)
	return out
}

func trimRole(r cellv1.Role) string { return r.String()[len("ROLE_"):] }

func (f *fleet) checkNoViolation(t *testing.T) {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.violations) > 0 {
		t.Fatalf("two owners at once: %v", f.violations)
	}
}

func (f *fleet) set(fn func(f *fleet)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn(f)
}

func (f *fleet) changeCount(key string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.changes[key]
}

// moveEnv is a memtopo store with two regions and a fleet.
type moveEnv struct {
	st    *memtopo.Store
	cells *fleet
}

// newMoveEnv seeds us: a, b, c and eu: e1, e2.
func newMoveEnv(t *testing.T) *moveEnv {
	t.Helper()
	st := memtopo.New()
	t.Cleanup(func() { _ = st.Close() })
	seed(t, st, "us", activeCell("a", "us", 0), activeCell("b", "us", 0), activeCell("c", "us", 0))
	seed(t, st, "eu", activeCell("e1", "eu", 0), activeCell("e2", "eu", 0))
	return &moveEnv{st: st, cells: newFleet()}
}

// start runs a controller with fast move settings.
func (e *moveEnv) start(t *testing.T, id string, knobs controller.TestingKnobs, opts ...func(*controller.MoveConfig)) (*controller.Controller, func()) {
	t.Helper()
	cfg := controller.DefaultConfig()
	cfg.ID = id
	cfg.SessionTTL = time.Second
	cfg.RetryMin, cfg.RetryMax = 5*time.Millisecond, 50*time.Millisecond
	cfg.Logger = testutil.Logger(t).With("replica", id)
	cfg.TestingKnobs = knobs
	m := &cfg.Moves
	m.PollInterval = 5 * time.Millisecond
	m.CleanupGrace = 50 * time.Millisecond
	m.HousekeepingInterval = 50 * time.Millisecond
	m.DrainInterval = 20 * time.Millisecond
	m.StandbyResyncInterval = 100 * time.Millisecond
	for _, o := range opts {
		o(m)
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
			return errors.New("not leading yet")
		}
		return nil
	})
	return c, stop
}

// create places tenant id on cell (through the create workflow, so a
// controller must run).
func (e *moveEnv) create(t *testing.T, id, cell string) *cpv1.Tenant {
	t.Helper()
	ctx := testutil.Context(t, 10*time.Second)
	region := "us"
	if cell == "e1" || cell == "e2" {
		region = "eu"
	}
	if err := intent.StartCreate(ctx, e.st, &cpv1.Tenant{Id: id, HomeRegion: region}, cell); err != nil {
		t.Fatal(err)
	}
	tn, err := intent.WaitCreate(ctx, e.st, id)
	if err != nil {
		t.Fatal(err)
	}
	return tn
}

func (e *moveEnv) tenant(t *testing.T, id string) *cpv1.Tenant {
	t.Helper()
	tn, _, err := catalog.GetTenant(testutil.Context(t, 5*time.Second), e.st, id)
	if err != nil {
		t.Fatal(err)
	}
	return tn
}

// waitMove waits until move id is in state want and returns it.
func (e *moveEnv) waitMove(t *testing.T, id string, want cpv1.MoveState) *cpv1.Move {
	t.Helper()
	var out *cpv1.Move
	testutil.Eventually(t, 10*time.Second, func() error {
		mv, _, err := intent.GetMove(testutil.Context(t, 5*time.Second), e.st, id)
		if err != nil {
			return err
		}
		if mv.GetState() != want {
			return fmt.Errorf("move %s is %s (%s %s), want %s", id, mv.GetState(), mv.GetErrorReason(), mv.GetErrorMessage(), want)
		}
		out = mv
		return nil
	})
	return out
}

func (e *moveEnv) loads(t *testing.T, cells ...string) string {
	t.Helper()
	var s string
	for _, c := range cells {
		s += fmt.Sprintf("%s=%d ", c, load(t, e.st, c))
	}
	return s[:len(s)-1]
}

// moveKeys counts the records under moves/.
func (e *moveEnv) moveKeys(t *testing.T) int {
	t.Helper()
	page, err := e.st.List(testutil.Context(t, 5*time.Second), topo.MovesPrefix, topo.ListOptions{KeysOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	return len(page.KVs)
}

// seedCells adds cells (with a zero load) to existing regions.
func seedCells(t *testing.T, st topo.Store, cells ...*cpv1.Cell) {
	t.Helper()
	ctx := testutil.Context(t, 5*time.Second)
	for _, c := range cells {
		if _, err := st.Txn(ctx, nil, append([]topo.Op{
			topo.Put(topo.CellKey(c.GetId()), catalog.Encode(c)),
			topo.Put(topo.CellLoadKey(c.GetId()), catalog.Encode(&cpv1.CellLoad{})),
		}, healthyOps(c)...)); err != nil {
			t.Fatal(err)
		}
	}
}
