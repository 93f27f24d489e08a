package api

import (
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/cellplane/cellplane/controlplane/catalog"
	"github.com/cellplane/cellplane/controlplane/intent"
	"github.com/cellplane/cellplane/controlplane/topo"
	"github.com/cellplane/cellplane/internal/cperr"
	"github.com/cellplane/cellplane/internal/testutil"
	cpv1 "github.com/cellplane/cellplane/proto/cellplane/controlplane/v1"
)

// twoRegions makes regions us and eu with a HEALTHY cell each (a, e).
func twoRegions(t *testing.T, s *Server, st topo.Store) {
	t.Helper()
	ctx := testutil.Context(t, 10*time.Second)
	for r, c := range map[string]string{"us": "a", "eu": "e"} {
		if _, err := s.CreateRegion(ctx, &cpv1.CreateRegionRequest{Name: r}); err != nil {
			t.Fatal(err)
		}
		if _, err := s.CreateCell(ctx, &cpv1.CreateCellRequest{Id: c, Region: r}); err != nil {
			t.Fatal(err)
		}
		registerHealthy(t, st, c, 3)
	}
}

// A CreateTenant retried with its request id returns the tenant the first
// call created instead of ALREADY_EXISTS; another request with the id is
// refused and changes nothing.
func TestCreateTenantRequestID(t *testing.T) {
	s, st := newServer(t)
	twoRegions(t, s, st)
	ctx := testutil.Context(t, 10*time.Second)
	req := &cpv1.CreateTenantRequest{Id: "t1", HomeRegion: "us", Limits: &cpv1.TenantLimits{Rate: 5}, RequestId: "req-1"}
	// No controller: the first call records the create and gives up
	// waiting (its answer is lost, as far as the caller knows).
	if _, err := s.CreateTenant(testutil.Context(t, 100*time.Millisecond), req); err == nil {
		t.Fatal("placed without a controller")
	}
	// The controller publishes the placement.
	tn, tv, err := catalog.GetTenant(ctx, st, "t1")
	if err != nil || tn.GetCreateRequestId() != "req-1" || len(tn.GetCreateRequestHash()) == 0 {
		t.Fatalf("recorded %v, %v", tn, err)
	}
	tn.State, tn.Cell, tn.Epoch = cpv1.TenantState_TENANT_STATE_ACTIVE, "a", 1
	if _, err := st.Update(ctx, topo.TenantKey("t1"), catalog.Encode(tn), tv); err != nil {
		t.Fatal(err)
	}
	want := func(id string, change func(*cpv1.CreateTenantRequest), reason cperr.Reason) {
		t.Helper()
		r := proto.Clone(req).(*cpv1.CreateTenantRequest)
		r.RequestId = id
		if change != nil {
			change(r)
		}
		resp, err := s.CreateTenant(ctx, r)
		wantReason(t, "create "+id, err, reason, nil)
		if reason == "" && (resp.GetTenant().GetCell() != "a" || resp.GetTenant().GetState() != cpv1.TenantState_TENANT_STATE_ACTIVE) {
			t.Fatalf("the retry returned %v, want the placed tenant", resp)
		}
	}
	want("req-1", nil, "")
	want("req-1", nil, "")
	want("req-1", func(r *cpv1.CreateTenantRequest) { r.Limits.Rate = 6 }, cperr.RequestIDReused)
	want("req-1", func(r *cpv1.CreateTenantRequest) { r.DeletionProtection = true }, cperr.RequestIDReused)
	want("req-2", nil, cperr.AlreadyExists)
	want("", nil, cperr.AlreadyExists)
	if after, _, _ := catalog.GetTenant(ctx, st, "t1"); after.GetLimits().GetRate() != 5 || after.GetDeletionProtection() {
		t.Fatalf("a refused request changed the tenant: %v", after)
	}
}

// A StartMove retried with its request id returns the move it started,
// whatever its state; a different move with the id is refused.
func TestStartMoveRequestID(t *testing.T) {
	s, st := newServer(t)
	twoRegions(t, s, st)
	ctx := testutil.Context(t, 10*time.Second)
	if _, err := s.CreateCell(ctx, &cpv1.CreateCellRequest{Id: "b", Region: "us"}); err != nil {
		t.Fatal(err)
	}
	registerHealthy(t, st, "b", 3)
	if _, err := s.CreateCell(ctx, &cpv1.CreateCellRequest{Id: "c", Region: "us"}); err != nil {
		t.Fatal(err)
	}
	registerHealthy(t, st, "c", 3)
	seed(t, st, map[string]proto.Message{topo.TenantKey("t1"): active("t1", "us", "a")})
	req := &cpv1.StartMoveRequest{Tenant: "t1", TargetCell: "b", RequestId: "mv-1"}
	first, err := s.StartMove(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		again, err := s.StartMove(ctx, req)
		if err != nil || again.GetMove().GetId() != first.GetMove().GetId() {
			t.Fatalf("retry: %v, %v; want move %s", again, err, first.GetMove().GetId())
		}
	}
	_, err = s.StartMove(ctx, &cpv1.StartMoveRequest{Tenant: "t1", TargetCell: "c", RequestId: "mv-1"})
	wantReason(t, "another move with the id", err, cperr.RequestIDReused, nil)
	// Without an id, a second move is refused as before: the first holds
	// the tenant.
	_, err = s.StartMove(ctx, &cpv1.StartMoveRequest{Tenant: "t1", TargetCell: "b"})
	wantReason(t, "second move without an id", err, cperr.TenantBusy, nil)
	moves, err := intent.ListMoves(ctx, st, intent.MoveFilter{All: true})
	if err != nil || len(moves) != 1 {
		t.Fatalf("moves %v, %v; want one", moves, err)
	}
}

// A Failover retried with its request id returns the failover it started
// instead of TENANT_BUSY; another request with the id is refused.
func TestFailoverRequestID(t *testing.T) {
	s, st := newServer(t)
	s.cfg.WorkflowWait = 50 * time.Millisecond // no leader acks the failover
	twoRegions(t, s, st)
	ctx := testutil.Context(t, 10*time.Second)
	tn := active("t1", "us", "a")
	tn.StandbyCell = "e"
	seed(t, st, map[string]proto.Message{topo.TenantKey("t1"): tn})
	req := &cpv1.FailoverRequest{Tenant: "t1", Kind: cpv1.FailoverKind_FAILOVER_KIND_SWITCHOVER, RequestId: "fo-1"}
	first, err := s.Failover(ctx, req)
	if err != nil || len(first.GetFailovers()) != 1 {
		t.Fatalf("failover: %v, %v", first, err)
	}
	again, err := s.Failover(ctx, req)
	if err != nil || len(again.GetFailovers()) != 1 || again.GetFailovers()[0].GetId() != first.GetFailovers()[0].GetId() {
		t.Fatalf("retry: %v, %v; want failover %s", again, err, first.GetFailovers()[0].GetId())
	}
	_, err = s.Failover(ctx, &cpv1.FailoverRequest{Tenant: "t1", Kind: cpv1.FailoverKind_FAILOVER_KIND_PROMOTE, RequestId: "fo-1"})
	wantReason(t, "a promote with the switchover's id", err, cperr.RequestIDReused, nil)
	_, err = s.Failover(ctx, &cpv1.FailoverRequest{Tenant: "t1", Kind: cpv1.FailoverKind_FAILOVER_KIND_SWITCHOVER})
	wantReason(t, "a second switchover without an id", err, cperr.TenantBusy, nil)
	fos, err := intent.ListFailovers(ctx, st, intent.FailoverFilter{})
	if err != nil || len(fos) != 1 {
		t.Fatalf("failovers %v, %v; want one", fos, err)
	}
}
