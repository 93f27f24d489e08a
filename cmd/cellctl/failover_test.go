package main

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/cellplane/cellplane/internal/cperr"
	"github.com/cellplane/cellplane/internal/rpcerr"
	"github.com/cellplane/cellplane/internal/testutil"
	cellv1 "github.com/cellplane/cellplane/proto/cellplane/cell/v1"
	contextv1 "github.com/cellplane/cellplane/proto/cellplane/context/v1"
	cpv1 "github.com/cellplane/cellplane/proto/cellplane/controlplane/v1"
)

// failoverFake is a ControlPlaneService with fixed failover records (so
// that the output is the same every run), and a cell whose leader serves
// ListChanges. The real control plane's failovers are tested in
// controlplane/controller and controlplane/failover_test.go.
type failoverFake struct {
	cpv1.UnimplementedControlPlaneServiceServer

	cellAddr string
	mu       sync.Mutex
	records  map[string]*cpv1.Failover
	order    []string
	requests []*cpv1.FailoverRequest
	changes  *cellv1.ListChangesRequest
}

func at(s string) *timestamppb.Timestamp {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		panic(err)
	}
	return timestamppb.New(t)
}

func newFailoverFake() *failoverFake {
	f := &failoverFake{records: map[string]*cpv1.Failover{}}
	for _, fo := range []*cpv1.Failover{
		{Id: "hooli-e2-switchover", Tenant: "hooli", Kind: switchoverKind, State: cpv1.FailoverState_FAILOVER_STATE_DONE,
			FromCell: "use1-a", ToCell: "euw1-a", OldEpoch: 1, NewEpoch: 2, Trigger: "operator",
			OldOwnerTseq: 120, OldOwnerReported: true, PromotedTseq: 121, TimeToPromote: durationpb.New(840 * time.Millisecond),
			CreateTime: at("2026-03-01T11:00:00Z"), PromoteTime: at("2026-03-01T11:00:00.84Z"), UpdateTime: at("2026-03-01T11:00:00.84Z")},
		{Id: "acme-e2-promote", Tenant: "acme", Kind: promoteKind, State: cpv1.FailoverState_FAILOVER_STATE_DONE,
			FromCell: "use1-a", ToCell: "euw1-a", OldEpoch: 1, NewEpoch: 2, Trigger: "policy: cell use1-a UNAVAILABLE for 10s",
			PromotedTseq: 41, OldOwnerTseq: 44, OldOwnerReported: true, LostEvents: 3, TimeToPromote: durationpb.New(7500 * time.Millisecond),
			CreateTime: at("2026-03-01T12:00:00Z"), LeaseWaitUntil: at("2026-03-01T12:00:07Z"), PromoteTime: at("2026-03-01T12:00:07.5Z"),
			UpdateTime: at("2026-03-01T12:30:00Z")},
		{Id: "globex-e3-promote", Tenant: "globex", Kind: promoteKind, State: cpv1.FailoverState_FAILOVER_STATE_AWAITING_OLD_OWNER,
			FromCell: "use1-a", ToCell: "euw1-b", OldEpoch: 2, NewEpoch: 3, Trigger: "operator",
			PromotedTseq: 10, TimeToPromote: durationpb.New(6200 * time.Millisecond),
			CreateTime: at("2026-03-01T12:00:01Z"), LeaseWaitUntil: at("2026-03-01T12:00:07Z"), PromoteTime: at("2026-03-01T12:00:07.2Z"),
			UpdateTime: at("2026-03-01T12:00:07.2Z")},
		{Id: "initech-e5-switchover", Tenant: "initech", Kind: switchoverKind, State: cpv1.FailoverState_FAILOVER_STATE_FAILED,
			FromCell: "use1-b", ToCell: "euw1-a", OldEpoch: 4, Trigger: "operator", ErrorReason: "NO_STANDBY",
			ErrorMessage: "tenant initech on standby cell euw1-a is STANDBY, bootstrapped=false: it needs a bootstrapped STANDBY",
			CreateTime:   at("2026-03-01T13:00:00Z"), UpdateTime: at("2026-03-01T13:00:00.1Z")},
	} {
		f.records[fo.GetId()] = fo
		f.order = append(f.order, fo.GetId())
	}
	return f
}

// Failover records a new failover in FENCING; the next GetFailover of it
// shows it DONE (switchover) or AWAITING_OLD_OWNER (promotion).
func (f *failoverFake) Failover(_ context.Context, req *cpv1.FailoverRequest) (*cpv1.FailoverResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.requests = append(f.requests, proto.Clone(req).(*cpv1.FailoverRequest))
	tenants := []string{req.GetTenant()}
	if req.GetCell() != "" {
		tenants = []string{"t1", "t2"}
	}
	out := &cpv1.FailoverResponse{}
	for _, tn := range tenants {
		fo := &cpv1.Failover{Id: fmt.Sprintf("%s-e8-%s", tn, strings.ToLower(strings.TrimPrefix(req.GetKind().String(), "FAILOVER_KIND_"))), Tenant: tn, Kind: req.GetKind(),
			State: cpv1.FailoverState_FAILOVER_STATE_FENCING, FromCell: "use1-a", ToCell: "euw1-a", OldEpoch: 7, NewEpoch: 8,
			Trigger: "operator", CreateTime: at("2026-03-02T09:00:00Z"), UpdateTime: at("2026-03-02T09:00:00Z")}
		f.records[fo.GetId()] = fo
		f.order = append(f.order, fo.GetId())
		out.Failovers = append(out.Failovers, proto.Clone(fo).(*cpv1.Failover))
	}
	return out, nil
}

func (f *failoverFake) GetFailover(_ context.Context, req *cpv1.GetFailoverRequest) (*cpv1.GetFailoverResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fo, ok := f.records[req.GetId()]
	if !ok {
		return nil, rpcerr.ToStatus(cperr.New(cperr.FailoverNotFound, "failover %s does not exist", req.GetId()))
	}
	if fo.GetState() == cpv1.FailoverState_FAILOVER_STATE_FENCING {
		fo.PromotedTseq, fo.TimeToPromote = 99, durationpb.New(1500*time.Millisecond)
		fo.PromoteTime, fo.UpdateTime = at("2026-03-02T09:00:01.5Z"), at("2026-03-02T09:00:01.5Z")
		fo.State = cpv1.FailoverState_FAILOVER_STATE_AWAITING_OLD_OWNER
		if fo.GetKind() == switchoverKind {
			fo.State, fo.OldOwnerTseq, fo.OldOwnerReported = cpv1.FailoverState_FAILOVER_STATE_DONE, 98, true
		}
	}
	return &cpv1.GetFailoverResponse{Failover: proto.Clone(fo).(*cpv1.Failover)}, nil
}

func (f *failoverFake) ListFailovers(_ context.Context, req *cpv1.ListFailoversRequest) (*cpv1.ListFailoversResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := &cpv1.ListFailoversResponse{}
	for _, id := range f.order {
		fo := f.records[id]
		if (req.GetTenant() == "" || fo.GetTenant() == req.GetTenant()) && (req.GetCell() == "" || fo.GetFromCell() == req.GetCell() || fo.GetToCell() == req.GetCell()) {
			out.Failovers = append(out.Failovers, fo)
		}
	}
	return out, nil
}

func (f *failoverFake) GetCell(_ context.Context, req *cpv1.GetCellRequest) (*cpv1.GetCellResponse, error) {
	if req.GetId() != "use1-a" {
		return nil, rpcerr.ToStatus(cperr.New(cperr.CellNotFound, "cell %s does not exist", req.GetId()))
	}
	return &cpv1.GetCellResponse{Cell: &cpv1.CellStatus{
		Cell:   &cpv1.Cell{Id: "use1-a", Region: "us-east", ExpectedMembers: 1},
		Leader: &cpv1.CellLeader{NodeId: "use1-a-n1", GrpcAddr: f.cellAddr, Term: 3},
		Nodes:  []*cpv1.Node{{Id: "use1-a-n1", Cell: "use1-a", Role: cpv1.NodeRole_NODE_ROLE_MEMBER, GrpcAddr: f.cellAddr}},
	}}, nil
}

// fakeCell is the cell of failoverFake.
type fakeCell struct {
	cellv1.UnimplementedCellServiceServer
	f *failoverFake
}

// ListChanges is the cell's: the three writes acme's old owner acknowledged
// after tseq 41, then the fence.
func (c fakeCell) ListChanges(_ context.Context, req *cellv1.ListChangesRequest) (*cellv1.ListChangesResponse, error) {
	f := c.f
	f.mu.Lock()
	f.changes = proto.Clone(req).(*cellv1.ListChangesRequest)
	f.mu.Unlock()
	if req.GetTenant() != "acme" {
		return nil, rpcerr.ToStatus(cperr.New(cperr.TenantNotFound, "tenant %s is not in this cell", req.GetTenant()))
	}
	ts := time.Date(2026, 3, 1, 11, 59, 58, 0, time.UTC).UnixNano()
	entries := []*contextv1.Entry{{Role: "user", Content: &contextv1.Entry_Text{Text: "hello"}}, {Role: "assistant", Content: &contextv1.Entry_Text{Text: "hi"}}}
	return &cellv1.ListChangesResponse{
		Tenant: &cellv1.TenantInfo{Tenant: "acme", Role: cellv1.Role_ROLE_FENCED, Epoch: 2, Tseq: 45},
		Events: []*cellv1.ChangeEvent{
			{Tseq: 42, TimeUnixNano: ts, Command: &cellv1.Command{Tenant: "acme", RequestId: "req-1", Op: &cellv1.Command_Append{Append: &contextv1.AppendRequest{ContextId: "chat", Entries: entries}}}},
			{Tseq: 43, TimeUnixNano: ts + int64(time.Second), Command: &cellv1.Command{Tenant: "acme", RequestId: "req-2", Op: &cellv1.Command_PutMemory{PutMemory: &contextv1.PutMemoryRequest{Key: "plan", Value: []byte("step 2")}}}},
			{Tseq: 44, TimeUnixNano: ts + int64(1500*time.Millisecond), Command: &cellv1.Command{Tenant: "acme", Op: &cellv1.Command_DeleteContext{DeleteContext: &contextv1.DeleteContextRequest{ContextId: "old"}}}},
			{Tseq: 45, TimeUnixNano: ts + int64(9*time.Second), Command: &cellv1.Command{Tenant: "acme", RequestId: "fence.acme-e2-promote", Op: &cellv1.Command_SetTenant{SetTenant: &cellv1.SetTenantOp{Role: cellv1.Role_ROLE_FENCED, Epoch: 2}}}},
		},
	}, nil
}

// serveFailoverFake serves the fake's control plane and cell on two
// loopback listeners; it returns the control plane's address.
func serveFailoverFake(t *testing.T, f *failoverFake) string {
	t.Helper()
	cpLis, cellLis := testutil.Listen(t), testutil.Listen(t)
	f.cellAddr = cellLis.Addr().String()
	cp, cell := grpc.NewServer(), grpc.NewServer()
	cpv1.RegisterControlPlaneServiceServer(cp, f)
	cellv1.RegisterCellServiceServer(cell, fakeCell{f: f})
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); _ = cp.Serve(cpLis) }()
	go func() { defer wg.Done(); _ = cell.Serve(cellLis) }()
	t.Cleanup(func() {
		cp.Stop()
		cell.Stop()
		wg.Wait()
	})
	return cpLis.Addr().String()
}

func TestFailoverCommands(t *testing.T) {
	f := newFailoverFake()
	addr := serveFailoverFake(t, f)
	tests := []struct {
		golden string
		args   []string
		code   int
	}{
		{"failover-list.golden", []string{"failover", "list"}, 0},
		{"failover-list-tenant.golden", []string{"failover", "ls", "--tenant", "acme"}, 0},
		{"failover-get-promote.golden", []string{"failover", "get", "acme-e2-promote"}, 0},
		{"failover-get-awaiting.golden", []string{"failover", "get", "globex-e3-promote"}, 0},
		{"failover-get-switchover.golden", []string{"failover", "get", "hooli-e2-switchover"}, 0},
		{"failover-get-failed.golden", []string{"failover", "get", "initech-e5-switchover"}, 0},
		{"tenant-failover.golden", []string{"tenant", "failover", "umbrella"}, 0},
		{"tenant-failover-wait.golden", []string{"tenant", "failover", "wayne", "--wait"}, 0},
		{"tenant-promote-wait.golden", []string{"tenant", "promote", "stark", "--yes", "--wait"}, 0},
		{"cell-promote-standbys.golden", []string{"cell", "promote-standbys", "use1-a", "--yes"}, 0},
		{"tenant-changes.golden", []string{"tenant", "changes", "acme", "--cell", "use1-a", "--after", "41"}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.golden, func(t *testing.T) {
			r := cp(t, addr, tt.args...)
			if r.code != tt.code || r.err != "" {
				t.Fatalf("cellctl %s: exit %d, stderr %q", strings.Join(tt.args, " "), r.code, r.err)
			}
			checkGolden(t, tt.golden, r.out)
		})
	}

	f.mu.Lock()
	reqs := f.requests
	changes := f.changes
	f.mu.Unlock()
	want := []string{"umbrella/SWITCHOVER", "wayne/SWITCHOVER", "stark/PROMOTE", "cell use1-a/PROMOTE"}
	var got []string
	for _, r := range reqs {
		who := r.GetTenant()
		if r.GetCell() != "" {
			who = "cell " + r.GetCell()
		}
		got = append(got, who+"/"+strings.TrimPrefix(r.GetKind().String(), "FAILOVER_KIND_"))
	}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("failover requests %v, want %v", got, want)
	}
	if changes.GetTenant() != "acme" || changes.GetAfterTseq() != 41 {
		t.Errorf("ListChanges request %v", changes)
	}
}

func TestFailoverCommandErrors(t *testing.T) {
	addr := serveFailoverFake(t, newFailoverFake())
	tests := []struct {
		args []string
		code int
		want string // in stderr
	}{
		{[]string{"tenant", "promote", "acme"}, 2, "add --yes"},
		{[]string{"cell", "promote-standbys", "use1-a"}, 2, "add --yes"},
		{[]string{"tenant", "changes", "acme"}, 2, "--cell is required"},
		{[]string{"tenant", "changes", "acme", "--cell", "use1-a", "--limit", "5000"}, 2, "at most 1000"},
		{[]string{"failover", "get", "nope"}, 1, "FAILOVER_NOT_FOUND: failover nope does not exist"},
		{[]string{"tenant", "changes", "ghost", "--cell", "use1-a"}, 1, "TENANT_NOT_FOUND"},
		{[]string{"tenant", "changes", "acme", "--cell", "use9-z"}, 1, "CELL_NOT_FOUND"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			r := cp(t, addr, tt.args...)
			if r.code != tt.code || !strings.Contains(r.err, tt.want) || strings.Count(r.err, "\n") != 1 {
				t.Fatalf("exit %d, stderr %q; want exit %d and one line with %q", r.code, r.err, tt.code, tt.want)
			}
		})
	}
}

func TestFailoverHelp(t *testing.T) {
	for _, tt := range []struct {
		golden string
		args   []string
	}{
		{"help-tenant-promote.golden", []string{"tenant", "promote", "--help"}},
		{"help-failover.golden", []string{"failover", "--help"}},
		{"help-tenant-changes.golden", []string{"tenant", "changes", "--help"}},
	} {
		t.Run(tt.golden, func(t *testing.T) {
			r := runCmd(t.Context(), tt.args...)
			if r.code != 0 || r.err != "" {
				t.Fatalf("%v: exit %d, stderr %q", tt.args, r.code, r.err)
			}
			checkGolden(t, tt.golden, r.out)
		})
	}
}
