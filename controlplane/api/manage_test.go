package api

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/cellplane/cellplane/controlplane/catalog"
	"github.com/cellplane/cellplane/controlplane/intent"
	"github.com/cellplane/cellplane/controlplane/topo"
	"github.com/cellplane/cellplane/controlplane/topo/memtopo"
	"github.com/cellplane/cellplane/internal/cperr"
	"github.com/cellplane/cellplane/internal/testutil"
	cpv1 "github.com/cellplane/cellplane/proto/cellplane/controlplane/v1"
)

// seed writes records as the API and the controller would have.
func seed(t *testing.T, st topo.Store, recs map[string]proto.Message) {
	t.Helper()
	ctx := testutil.Context(t, 10*time.Second)
	for k, m := range recs {
		if _, err := st.Txn(ctx, nil, []topo.Op{topo.Put(k, catalog.Encode(m))}); err != nil {
			t.Fatal(err)
		}
	}
}

// wantReason fails t unless err carries reason (nil: no error) and, for
// each key of meta, that metadata value.
func wantReason(t *testing.T, what string, err error, reason cperr.Reason, meta map[string]string) {
	t.Helper()
	if reason == "" {
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		return
	}
	var ce *cperr.Error
	if !errors.As(err, &ce) || ce.Reason != reason {
		t.Fatalf("%s: %v, want %s", what, err, reason)
	}
	for k, v := range meta {
		if ce.Metadata[k] != v {
			t.Fatalf("%s: metadata %s=%q, want %q (%v)", what, k, ce.Metadata[k], v, err)
		}
	}
}

// registerHealthy registers cell's expected members and a leader, as its
// running nodes would: the cell is HEALTHY, so placement may choose it.
func registerHealthy(t *testing.T, st topo.Store, cell string, members int) {
	t.Helper()
	recs := map[string]proto.Message{topo.CellLeaderKey(cell): &cpv1.CellLeader{NodeId: cell + "-n1", Term: 1}}
	for i := range members {
		n := fmt.Sprintf("%s-n%d", cell, i+1)
		recs[topo.CellNodeKey(cell, n)] = &cpv1.Node{Id: n, Cell: cell, Role: cpv1.NodeRole_NODE_ROLE_MEMBER}
	}
	seed(t, st, recs)
}

func active(id, region, cell string) *cpv1.Tenant {
	return &cpv1.Tenant{Id: id, HomeRegion: region, Cell: cell, State: cpv1.TenantState_TENANT_STATE_ACTIVE, Epoch: 1, Limits: &cpv1.TenantLimits{}}
}

func TestDeleteRegion(t *testing.T) {
	tests := []struct {
		name   string
		recs   map[string]proto.Message
		reason cperr.Reason
		meta   map[string]string
	}{
		{"empty", nil, "", nil},
		{"a cell left", map[string]proto.Message{topo.CellKey("c1"): &cpv1.Cell{Id: "c1", Region: "us"}},
			cperr.RegionNotEmpty, map[string]string{cperr.MetaCells: "c1"}},
		{"a tenant homed there, living elsewhere", map[string]proto.Message{topo.TenantKey("t1"): active("t1", "us", "eu1")},
			cperr.RegionNotEmpty, map[string]string{cperr.MetaTenants: "t1"}},
		{"another region's cell", map[string]proto.Message{topo.CellKey("e1"): &cpv1.Cell{Id: "e1", Region: "eu"}}, "", nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, st := newServer(t)
			ctx := testutil.Context(t, 10*time.Second)
			if _, err := s.CreateRegion(ctx, &cpv1.CreateRegionRequest{Name: "us"}); err != nil {
				t.Fatal(err)
			}
			seed(t, st, tc.recs)
			_, err := s.DeleteRegion(ctx, &cpv1.DeleteRegionRequest{Name: "us"})
			wantReason(t, "delete", err, tc.reason, tc.meta)
			_, _, gerr := catalog.GetRegion(ctx, st, "us")
			if gone := errors.Is(gerr, topo.ErrNotFound); gone != (tc.reason == "") {
				t.Fatalf("region gone=%v after %v", gone, err)
			}
		})
	}
	s, _ := newServer(t)
	_, err := s.DeleteRegion(testutil.Context(t, time.Second), &cpv1.DeleteRegionRequest{Name: "nope"})
	wantReason(t, "delete unknown", err, cperr.RegionNotFound, nil)
}

// A cell created while DeleteRegion runs (between its check and its
// transaction) makes the delete check again: the region is not deleted
// under the new cell.
func TestDeleteRegionRacesCreateCell(t *testing.T) {
	s, st := newServer(t)
	ctx := testutil.Context(t, 10*time.Second)
	if _, err := s.CreateRegion(ctx, &cpv1.CreateRegionRequest{Name: "us"}); err != nil {
		t.Fatal(err)
	}
	_, v, err := catalog.GetRegion(ctx, st, "us")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateCell(ctx, &cpv1.CreateCellRequest{Id: "c1", Region: "us"}); err != nil {
		t.Fatal(err)
	}
	// The delete's transaction as it would run after a check that saw no cell.
	if _, err := st.Txn(ctx, []topo.Cond{topo.IfVersion(topo.RegionKey("us"), v)}, []topo.Op{topo.Del(topo.RegionKey("us"))}); !errors.Is(err, topo.ErrConditionFailed) {
		t.Fatalf("a delete guarded by the version before CreateCell: %v", err)
	}
	_, err = s.DeleteRegion(ctx, &cpv1.DeleteRegionRequest{Name: "us"})
	wantReason(t, "delete", err, cperr.RegionNotEmpty, map[string]string{cperr.MetaCells: "c1"})
}

func TestUpdateRegion(t *testing.T) {
	s, _ := newServer(t)
	ctx := testutil.Context(t, 10*time.Second)
	if _, err := s.CreateRegion(ctx, &cpv1.CreateRegionRequest{Name: "us", Description: "old"}); err != nil {
		t.Fatal(err)
	}
	r, err := s.UpdateRegion(ctx, &cpv1.UpdateRegionRequest{Name: "us", Description: "new"})
	if err != nil || r.GetRegion().GetDescription() != "new" {
		t.Fatalf("update: %v %v", r, err)
	}
	if l, _ := s.ListRegions(ctx, &cpv1.ListRegionsRequest{}); l.GetRegions()[0].GetDescription() != "new" {
		t.Fatalf("listed %v", l)
	}
	_, err = s.UpdateRegion(ctx, &cpv1.UpdateRegionRequest{Name: "nope"})
	wantReason(t, "update unknown", err, cperr.RegionNotFound, nil)
	_, err = s.UpdateRegion(ctx, &cpv1.UpdateRegionRequest{Name: "us", Description: string(make([]byte, 300))})
	wantReason(t, "update long description", err, cperr.InvalidArgument, nil)
}

func TestDeleteCell(t *testing.T) {
	tests := []struct {
		name   string
		recs   map[string]proto.Message
		reason cperr.Reason
		meta   map[string]string
	}{
		{"empty", nil, "", nil},
		{"owns a tenant", map[string]proto.Message{topo.TenantKey("t1"): active("t1", "us", "c1")},
			cperr.CellNotEmpty, map[string]string{cperr.MetaTenants: "t1"}},
		{"stands by for a tenant", map[string]proto.Message{topo.TenantKey("t1"): &cpv1.Tenant{Id: "t1", HomeRegion: "eu", Cell: "e1", StandbyCell: "c1"}},
			cperr.CellNotEmpty, map[string]string{cperr.MetaTenants: "t1"}},
		{"a node registered", map[string]proto.Message{topo.CellNodeKey("c1", "n1"): &cpv1.Node{Id: "n1", Cell: "c1", Role: cpv1.NodeRole_NODE_ROLE_MEMBER}},
			cperr.CellNotEmpty, map[string]string{cperr.MetaNodes: "n1"}},
		{"a move in", map[string]proto.Message{topo.MoveKey("m1"): &cpv1.Move{Id: "m1", SourceCell: "c0", TargetCell: "c1", State: cpv1.MoveState_MOVE_STATE_COPYING}},
			cperr.CellNotEmpty, map[string]string{cperr.MetaOperations: "m1"}},
		{"a finished move", map[string]proto.Message{topo.MoveKey("m1"): &cpv1.Move{Id: "m1", SourceCell: "c1", TargetCell: "c2", State: cpv1.MoveState_MOVE_STATE_DONE}}, "", nil},
		{"a failover from it", map[string]proto.Message{topo.FailoverKey("f1"): &cpv1.Failover{Id: "f1", FromCell: "c1", ToCell: "e1", State: cpv1.FailoverState_FAILOVER_STATE_AWAITING_OLD_OWNER}},
			cperr.CellNotEmpty, map[string]string{cperr.MetaOperations: "f1"}},
		{"a create placed on it", map[string]proto.Message{topo.WorkflowKey("create-t9"): &cpv1.Workflow{Id: "create-t9", Cell: "c1", Step: cpv1.WorkflowStep_WORKFLOW_STEP_PLACED}},
			cperr.CellNotEmpty, map[string]string{cperr.MetaOperations: "create-t9"}},
		{"another cell's tenant", map[string]proto.Message{topo.TenantKey("t1"): active("t1", "us", "c10")}, "", nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, st := newServer(t)
			ctx := testutil.Context(t, 10*time.Second)
			if _, err := s.CreateRegion(ctx, &cpv1.CreateRegionRequest{Name: "us"}); err != nil {
				t.Fatal(err)
			}
			if _, err := s.CreateCell(ctx, &cpv1.CreateCellRequest{Id: "c1", Region: "us"}); err != nil {
				t.Fatal(err)
			}
			seed(t, st, tc.recs)
			_, err := s.DeleteCell(ctx, &cpv1.DeleteCellRequest{Id: "c1"})
			wantReason(t, "delete", err, tc.reason, tc.meta)
			_, gerr := catalog.Cell(ctx, st, "c1")
			if gone := errors.Is(gerr, cperr.ErrCellNotFound); gone != (tc.reason == "") {
				t.Fatalf("cell gone=%v after %v", gone, err)
			}
			if tc.reason == "" {
				if _, err := st.Get(ctx, topo.CellLoadKey("c1")); !errors.Is(err, topo.ErrNotFound) {
					t.Fatalf("the load record outlived the cell: %v", err)
				}
				// And the region is now empty.
				if _, err := s.DeleteRegion(ctx, &cpv1.DeleteRegionRequest{Name: "us"}); err != nil && len(tc.recs) == 0 {
					t.Fatalf("delete the emptied region: %v", err)
				}
			}
		})
	}
	s, _ := newServer(t)
	_, err := s.DeleteCell(testutil.Context(t, time.Second), &cpv1.DeleteCellRequest{Id: "nope"})
	wantReason(t, "delete unknown", err, cperr.CellNotFound, nil)
}

// A placement counted on the cell between DeleteCell's check and its
// transaction (the load record changes) fails the transaction.
func TestDeleteCellGuardedByLoad(t *testing.T) {
	s, st := newServer(t)
	ctx := testutil.Context(t, 10*time.Second)
	if _, err := s.CreateRegion(ctx, &cpv1.CreateRegionRequest{Name: "us"}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateCell(ctx, &cpv1.CreateCellRequest{Id: "c1", Region: "us"}); err != nil {
		t.Fatal(err)
	}
	ci, err := catalog.Cell(ctx, st, "c1")
	if err != nil {
		t.Fatal(err)
	}
	seed(t, st, map[string]proto.Message{topo.CellLoadKey("c1"): &cpv1.CellLoad{Tenants: 1}})
	_, err = st.Txn(ctx, []topo.Cond{topo.IfVersion(topo.CellKey("c1"), ci.CellVersion), topo.IfVersion(topo.CellLoadKey("c1"), ci.LoadVersion)}, []topo.Op{topo.Del(topo.CellKey("c1"))})
	if !errors.Is(err, topo.ErrConditionFailed) {
		t.Fatalf("the delete's transaction after a placement: %v", err)
	}
	_, err = s.DeleteCell(ctx, &cpv1.DeleteCellRequest{Id: "c1"})
	wantReason(t, "delete with load", err, cperr.CellNotEmpty, nil)
}

func TestUpdateCell(t *testing.T) {
	const (
		activeS   = cpv1.CellState_CELL_STATE_ACTIVE
		cordoned  = cpv1.CellState_CELL_STATE_CORDONED
		draining  = cpv1.CellState_CELL_STATE_DRAINING
		down      = cpv1.CellState_CELL_STATE_DOWN
		unchanged = cpv1.CellState_CELL_STATE_UNSPECIFIED
	)
	tests := []struct {
		name      string
		from      cpv1.CellState
		req       *cpv1.UpdateCellRequest
		reason    cperr.Reason
		wantState cpv1.CellState
		wantCap   uint64
	}{
		{"capacity only", activeS, &cpv1.UpdateCellRequest{Capacity: &cpv1.CellCapacity{MaxTenants: 7}}, "", activeS, 7},
		{"cordon", activeS, &cpv1.UpdateCellRequest{State: cordoned}, "", cordoned, 0},
		{"uncordon", cordoned, &cpv1.UpdateCellRequest{State: activeS}, "", activeS, 0},
		{"capacity of a draining cell", draining, &cpv1.UpdateCellRequest{Capacity: &cpv1.CellCapacity{MaxTenants: 3}}, "", draining, 3},
		{"never uncordons a draining cell", draining, &cpv1.UpdateCellRequest{State: activeS, Capacity: &cpv1.CellCapacity{MaxTenants: 3}}, cperr.CellNotActive, draining, 0},
		{"never cordons a draining cell", draining, &cpv1.UpdateCellRequest{State: cordoned}, cperr.CellNotActive, draining, 0},
		{"same state of a draining cell is no change", draining, &cpv1.UpdateCellRequest{State: draining}, cperr.InvalidArgument, draining, 0},
		{"never revives a down cell", down, &cpv1.UpdateCellRequest{State: activeS}, cperr.CellNotActive, down, 0},
		{"no drain by update", activeS, &cpv1.UpdateCellRequest{State: draining}, cperr.InvalidArgument, activeS, 0},
		{"nothing asked", cordoned, &cpv1.UpdateCellRequest{State: unchanged}, "", cordoned, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, st := newServer(t)
			ctx := testutil.Context(t, 10*time.Second)
			seed(t, st, map[string]proto.Message{topo.CellKey("c1"): &cpv1.Cell{Id: "c1", Region: "us", State: tc.from, Capacity: &cpv1.CellCapacity{}}})
			tc.req.Id = "c1"
			_, err := s.UpdateCell(ctx, tc.req)
			wantReason(t, "update", err, tc.reason, nil)
			c, _, err := catalog.GetCell(ctx, st, "c1")
			if err != nil {
				t.Fatal(err)
			}
			if c.GetState() != tc.wantState || c.GetCapacity().GetMaxTenants() != tc.wantCap {
				t.Fatalf("cell is %v with %v, want %v with max_tenants %d", c.GetState(), c.GetCapacity(), tc.wantState, tc.wantCap)
			}
		})
	}
}

func TestUpdateTenant(t *testing.T) {
	yes, no := true, false
	tests := []struct {
		name     string
		req      *cpv1.UpdateTenantRequest
		staleVer bool
		reason   cperr.Reason
		want     *cpv1.Tenant // the stored limits and protection after
	}{
		{"limits incl. byte bucket", &cpv1.UpdateTenantRequest{Limits: &cpv1.TenantLimits{Rate: 5, Burst: 10, BytesRate: 1e6, BytesBurst: 1 << 20, MaxBytes: 100}}, false, "",
			&cpv1.Tenant{Limits: &cpv1.TenantLimits{Rate: 5, Burst: 10, BytesRate: 1e6, BytesBurst: 1 << 20, MaxBytes: 100}}},
		{"protection on", &cpv1.UpdateTenantRequest{DeletionProtection: &yes}, false, "",
			&cpv1.Tenant{Limits: &cpv1.TenantLimits{MaxBytes: 100}, DeletionProtection: true}},
		{"protection off, limits unchanged", &cpv1.UpdateTenantRequest{DeletionProtection: &no}, false, "",
			&cpv1.Tenant{Limits: &cpv1.TenantLimits{MaxBytes: 100}}},
		{"negative rate", &cpv1.UpdateTenantRequest{Limits: &cpv1.TenantLimits{Rate: -1, MaxBytes: 100}}, false, cperr.InvalidArgument,
			&cpv1.Tenant{Limits: &cpv1.TenantLimits{MaxBytes: 100}}},
		{"stale expected version", &cpv1.UpdateTenantRequest{DeletionProtection: &yes}, true, cperr.RevisionMismatch,
			&cpv1.Tenant{Limits: &cpv1.TenantLimits{MaxBytes: 100}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, st := newServer(t)
			ctx := testutil.Context(t, 10*time.Second)
			tn := active("t1", "us", "c1")
			tn.Limits.MaxBytes = 100
			seed(t, st, map[string]proto.Message{topo.TenantKey("t1"): tn})
			got, err := s.GetTenant(ctx, &cpv1.GetTenantRequest{Id: "t1"})
			if err != nil || got.GetVersion() == 0 {
				t.Fatalf("get: %v %v", got, err)
			}
			tc.req.Id = "t1"
			tc.req.ExpectedVersion = got.GetVersion()
			if tc.staleVer {
				tc.req.ExpectedVersion--
			}
			resp, err := s.UpdateTenant(ctx, tc.req)
			wantReason(t, "update", err, tc.reason, nil)
			after, _, _ := catalog.GetTenant(ctx, st, "t1")
			if !proto.Equal(after.GetLimits(), tc.want.GetLimits()) || after.GetDeletionProtection() != tc.want.GetDeletionProtection() {
				t.Fatalf("stored %v, want %v", after, tc.want)
			}
			if err == nil {
				if again, _ := s.GetTenant(ctx, &cpv1.GetTenantRequest{Id: "t1"}); again.GetVersion() != resp.GetVersion() {
					t.Fatalf("returned version %d, stored %d", resp.GetVersion(), again.GetVersion())
				}
			}
		})
	}
	s, _ := newServer(t)
	_, err := s.UpdateTenant(testutil.Context(t, time.Second), &cpv1.UpdateTenantRequest{Id: "nope"})
	wantReason(t, "update unknown", err, cperr.TenantNotFound, nil)
}

// A max_bytes change is recorded quota_pending for the controller to push
// to the cell, and the call waits for the push: without a controller it
// ends CONTROLPLANE_UNAVAILABLE (retry later) with the change recorded;
// once the mark is cleared the same update answers at once. A tenant that
// is not ACTIVE yet is TENANT_BUSY, and nothing is written. Other limits
// never wait.
func TestUpdateTenantMaxBytes(t *testing.T) {
	st := memtopo.New()
	t.Cleanup(func() { _ = st.Close() })
	cfg := DefaultConfig()
	cfg.Logger = testutil.Logger(t)
	cfg.WorkflowWait = 200 * time.Millisecond
	s, err := New(st, cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context() // no deadline: the server waits WorkflowWait
	creating := active("t2", "us", "")
	creating.State = cpv1.TenantState_TENANT_STATE_CREATING
	seed(t, st, map[string]proto.Message{topo.TenantKey("t1"): active("t1", "us", "c1"), topo.TenantKey("t2"): creating})

	if _, err := s.UpdateTenant(ctx, &cpv1.UpdateTenantRequest{Id: "t1", Limits: &cpv1.TenantLimits{Rate: 5}}); err != nil {
		t.Fatalf("rate only: %v", err)
	}
	if after, _, _ := catalog.GetTenant(ctx, st, "t1"); after.GetQuotaPending() {
		t.Fatal("a rate change marked the quota pending")
	}
	req := &cpv1.UpdateTenantRequest{Id: "t1", Limits: &cpv1.TenantLimits{Rate: 5, MaxBytes: 4096}}
	_, err = s.UpdateTenant(ctx, req)
	wantReason(t, "max_bytes without a controller", err, cperr.ControlPlaneUnavailable, nil)
	after, v, _ := catalog.GetTenant(ctx, st, "t1")
	if after.GetLimits().GetMaxBytes() != 4096 || !after.GetQuotaPending() {
		t.Fatalf("stored %v, want max_bytes 4096 and quota_pending", after)
	}
	// The controller pushed it and cleared the mark: the same update is
	// answered from the record.
	after.QuotaPending = false
	if _, err := st.Update(ctx, topo.TenantKey("t1"), catalog.Encode(after), v); err != nil {
		t.Fatal(err)
	}
	resp, err := s.UpdateTenant(ctx, req)
	if err != nil || resp.GetTenant().GetQuotaPending() || resp.GetTenant().GetLimits().GetMaxBytes() != 4096 {
		t.Fatalf("same update after the push: %v, %v", resp, err)
	}

	_, err = s.UpdateTenant(ctx, &cpv1.UpdateTenantRequest{Id: "t2", Limits: &cpv1.TenantLimits{MaxBytes: 4096}})
	wantReason(t, "max_bytes while CREATING", err, cperr.TenantBusy, nil)
	if got, _, _ := catalog.GetTenant(ctx, st, "t2"); got.GetLimits().GetMaxBytes() != 0 || got.GetQuotaPending() {
		t.Fatalf("CREATING tenant after a refused update: %v", got)
	}
}

// DeleteTenant is refused while the tenant is protected, and nothing is
// tombstoned; once protection is off the delete starts.
func TestDeletionProtection(t *testing.T) {
	s, st := newServer(t)
	ctx := testutil.Context(t, 10*time.Second)
	tn := active("t1", "us", "c1")
	tn.DeletionProtection = true
	seed(t, st, map[string]proto.Message{topo.TenantKey("t1"): tn})
	_, err := s.DeleteTenant(ctx, &cpv1.DeleteTenantRequest{Id: "t1"})
	wantReason(t, "delete protected", err, cperr.DeletionProtected, map[string]string{cperr.MetaTenant: "t1"})
	after, _, _ := catalog.GetTenant(ctx, st, "t1")
	if after.GetState() != cpv1.TenantState_TENANT_STATE_ACTIVE {
		t.Fatalf("a refused delete left the tenant %v", after.GetState())
	}
	if _, _, err := catalog.GetWorkflow(ctx, st, "delete-t1"); !errors.Is(err, topo.ErrNotFound) {
		t.Fatalf("a refused delete recorded a workflow: %v", err)
	}
	off := false
	if _, err := s.UpdateTenant(ctx, &cpv1.UpdateTenantRequest{Id: "t1", DeletionProtection: &off}); err != nil {
		t.Fatal(err)
	}
	if err := intent.StartDelete(ctx, st, "t1"); err != nil {
		t.Fatalf("delete after protection off: %v", err)
	}
	// A deleting tenant cannot be updated (nor protected again).
	on := true
	_, err = s.UpdateTenant(ctx, &cpv1.UpdateTenantRequest{Id: "t1", DeletionProtection: &on})
	wantReason(t, "update a deleting tenant", err, cperr.TenantNotFound, nil)
}

// CreateTenant records deletion_protection with the tenant.
func TestCreateTenantRecordsProtection(t *testing.T) {
	s, st := newServer(t)
	ctx := testutil.Context(t, 10*time.Second)
	if _, err := s.CreateRegion(ctx, &cpv1.CreateRegionRequest{Name: "us"}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateCell(ctx, &cpv1.CreateCellRequest{Id: "c1", Region: "us"}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateTenant(ctx, &cpv1.CreateTenantRequest{Id: "t1", HomeRegion: "us"}); !errors.Is(err, cperr.ErrNoCapacity) {
		t.Fatalf("create while the region's only cell has no member: %v, want NO_CAPACITY", err)
	}
	registerHealthy(t, st, "c1", 3)
	// No controller runs: the create is recorded, not placed; the call
	// gives up waiting.
	short := testutil.Context(t, 100*time.Millisecond)
	if _, err := s.CreateTenant(short, &cpv1.CreateTenantRequest{Id: "t1", HomeRegion: "us", DeletionProtection: true}); err == nil {
		t.Fatal("placed without a controller")
	}
	tn, _, err := catalog.GetTenant(ctx, st, "t1")
	if err != nil || !tn.GetDeletionProtection() {
		t.Fatalf("recorded %v, %v", tn, err)
	}
}
