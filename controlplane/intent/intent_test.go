package intent_test

import (
	"errors"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/cellplane/cellplane/controlplane/catalog"
	"github.com/cellplane/cellplane/controlplane/intent"
	"github.com/cellplane/cellplane/controlplane/topo"
	"github.com/cellplane/cellplane/controlplane/topo/memtopo"
	"github.com/cellplane/cellplane/internal/cperr"
	"github.com/cellplane/cellplane/internal/testutil"
	cpv1 "github.com/cellplane/cellplane/proto/cellplane/controlplane/v1"
)

// The intents are driven by the controller leader; the controller's tests
// cover them end to end. These cover what is decided before anything is
// recorded.

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestClearingStandby(t *testing.T) {
	tests := []struct {
		op   string
		cell string
		ok   bool
	}{
		{"standby-clear.e1", "e1", true},
		{"standby-clear.", "", false},
		{"acme-0badf00d", "", false},
		{"", "", false},
	}
	for _, tc := range tests {
		t.Run(tc.op, func(t *testing.T) {
			cell, ok := intent.ClearingStandby(&cpv1.Tenant{OperationId: tc.op})
			if cell != tc.cell || ok != tc.ok {
				t.Fatalf("ClearingStandby(%q) = %q, %t; want %q, %t", tc.op, cell, ok, tc.cell, tc.ok)
			}
		})
	}
}

func TestPickStandby(t *testing.T) {
	cell := func(id, region string, state cpv1.CellState, tenants uint64) *catalog.CellInfo {
		// HEALTHY: a leader and its one expected member registered.
		return &catalog.CellInfo{Cell: &cpv1.Cell{Id: id, Region: region, State: state, ExpectedMembers: 1}, Load: &cpv1.CellLoad{Tenants: tenants},
			Leader: &cpv1.CellLeader{NodeId: id + "-n1"}, Nodes: []*cpv1.Node{{Id: id + "-n1", Role: cpv1.NodeRole_NODE_ROLE_MEMBER}}}
	}
	active := cpv1.CellState_CELL_STATE_ACTIVE
	cells := []*catalog.CellInfo{
		cell("us1", "us", active, 0),
		cell("eu1", "eu", active, 5),
		cell("eu2", "eu", active, 1),
		cell("eu3", "eu", cpv1.CellState_CELL_STATE_CORDONED, 0),
	}
	tests := []struct {
		name                string
		owner, region, cell string
		want                string
		reason              cperr.Reason
	}{
		{"least loaded of the region", "us1", "eu", "", "eu2", ""},
		{"the requested cell", "us1", "", "eu1", "eu1", ""},
		{"cell and region agree", "us1", "eu", "eu1", "eu1", ""},
		{"cell outside the region", "us1", "us", "eu1", "", cperr.InvalidArgument},
		{"the owner's region", "eu1", "eu", "", "", cperr.InvalidArgument},
		{"neither region nor cell", "us1", "", "", "", cperr.InvalidArgument},
		{"unknown cell", "us1", "", "xx", "", cperr.CellNotFound},
		{"cordoned cell", "us1", "", "eu3", "", cperr.CellNotActive},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := intent.PickStandby(cells, tc.owner, tc.region, tc.cell)
			if got != tc.want || cperr.ReasonOf(err) != tc.reason {
				t.Fatalf("PickStandby = %q, %v; want %q, %q", got, err, tc.want, tc.reason)
			}
		})
	}
}

func TestRefused(t *testing.T) {
	ctx := testutil.Context(t, 10*time.Second)
	st := memtopo.New()
	t.Cleanup(func() { _ = st.Close() })
	active := &cpv1.Tenant{Id: "acme", Cell: "us1", StandbyCell: "eu1", Epoch: 1, State: cpv1.TenantState_TENANT_STATE_ACTIVE}
	if _, err := st.Create(ctx, topo.TenantKey("acme"), catalog.Encode(active)); err != nil {
		t.Fatal(err)
	}
	promote := cpv1.FailoverKind_FAILOVER_KIND_PROMOTE
	tests := []struct {
		name string
		call func() error
		want error
	}{
		{"create an existing tenant", func() error { return intent.StartCreate(ctx, st, &cpv1.Tenant{Id: "acme"}, "") }, cperr.ErrAlreadyExists},
		{"delete a missing tenant", func() error { return intent.StartDelete(ctx, st, "nope") }, cperr.ErrTenantNotFound},
		{"move a missing tenant", func() error {
			_, _, err := intent.StartMove(ctx, st, intent.MoveRequest{Tenant: "nope", Target: "us2"})
			return err
		}, cperr.ErrTenantNotFound},
		{"move to the standby", func() error {
			_, _, err := intent.StartMove(ctx, st, intent.MoveRequest{Tenant: "acme", Target: "eu1"})
			return err
		}, cperr.ErrInvalidArgument},
		{"failover of no kind", func() error {
			_, err := intent.StartFailover(ctx, st, intent.FailoverRequest{Tenant: "acme"})
			return err
		}, cperr.ErrInvalidArgument},
		{"a guard that fails", func() error {
			_, err := intent.StartFailoverGuarded(ctx, st, intent.FailoverRequest{Tenant: "acme", Kind: promote},
				[]topo.Cond{topo.IfExists("controller/leader/gone")})
			return err
		}, intent.ErrNotLeader},
		{"a missing move", func() error {
			_, _, err := intent.GetMove(ctx, st, "nope")
			return err
		}, cperr.ErrMoveNotFound},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.call(); !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
	if fos, err := intent.ListFailovers(ctx, st, intent.FailoverFilter{}); err != nil || len(fos) != 0 {
		t.Fatalf("a refused failover was recorded: %v, %v", fos, err)
	}
}
