package chaos

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/cellplane/cellplane/internal/testutil"
	"github.com/cellplane/cellplane/platform"
	cellv1 "github.com/cellplane/cellplane/proto/cellplane/cell/v1"
	cpv1 "github.com/cellplane/cellplane/proto/cellplane/controlplane/v1"
)

// waitFailover polls a failover until it reaches one of the states.
func (p *harness) waitFailover(t *testing.T, ctx context.Context, id string, timeout time.Duration, states ...cpv1.FailoverState) *cpv1.Failover {
	t.Helper()
	var f *cpv1.Failover
	testutil.Eventually(t, timeout, func() error {
		r, err := p.cp.GetFailover(ctx, &cpv1.GetFailoverRequest{Id: id})
		if err != nil {
			return err
		}
		f = r.GetFailover()
		if f.GetState() == cpv1.FailoverState_FAILOVER_STATE_FAILED {
			t.Fatalf("failover %s failed: %s %s", id, f.GetErrorReason(), f.GetErrorMessage())
		}
		for _, s := range states {
			if f.GetState() == s {
				return nil
			}
		}
		return fmt.Errorf("failover %s is %s", id, f.GetState())
	})
	return f
}

// waitStandby waits until the tenant's standby has bootstrapped and
// caught up with the owner.
func (p *harness) waitStandby(t *testing.T, ctx context.Context, tenant string) {
	t.Helper()
	testutil.Eventually(t, 30*time.Second, func() error {
		r, err := p.cp.GetTenant(ctx, &cpv1.GetTenantRequest{Id: tenant})
		if err != nil {
			return err
		}
		if r.GetTenant().GetStandbyCell() == "" || r.GetReplication() == nil || r.GetReplication().GetAppliedTseq() == 0 {
			return fmt.Errorf("standby not streaming yet: %v %v", r.GetTenant(), r.GetReplication())
		}
		return nil
	})
}

// TestSwitchoverUnderLoadLosesNothing: a planned switchover to the standby
// region while clients write and read through the router: the history is
// linearizable, no acknowledged write is lost, no request fails for good,
// the old owner ends FENCED-then-standby and the new owner OWNER at the
// next epoch.
func TestSwitchoverUnderLoadLosesNothing(t *testing.T) {
	p := newPlatform(t, fastMoves)
	east := p.createCell(t, platform.CellSpec{Region: "us-east", ID: "east-a", Nodes: 1})[0]
	west := p.createCell(t, platform.CellSpec{Region: "eu-west", ID: "west-a", Nodes: 1})[0]
	ctx := testutil.Context(t, 3*time.Minute)
	p.createTenant(t, ctx, "acme", "us-east", "east-a", "eu-west")
	p.waitStandby(t, ctx, "acme")

	lctx, stopLoad := context.WithCancel(ctx)
	l := newLoad(p.data, "acme")
	wait := l.run(lctx, 4)
	testutil.Eventually(t, 10*time.Second, func() error {
		l.mu.Lock()
		defer l.mu.Unlock()
		if len(l.acked) < 100 {
			return fmt.Errorf("%d acks", len(l.acked))
		}
		return nil
	})
	resp, err := p.cp.Failover(ctx, &cpv1.FailoverRequest{Tenant: "acme", Kind: cpv1.FailoverKind_FAILOVER_KIND_SWITCHOVER})
	if err != nil || len(resp.GetFailovers()) != 1 {
		t.Fatalf("switchover: %v %v", resp, err)
	}
	f := p.waitFailover(t, ctx, resp.GetFailovers()[0].GetId(), 60*time.Second, cpv1.FailoverState_FAILOVER_STATE_DONE)
	testutil.Eventually(t, 10*time.Second, func() error { // more load on the new owner
		l.mu.Lock()
		defer l.mu.Unlock()
		if len(l.acked) < 200 {
			return fmt.Errorf("%d acks", len(l.acked))
		}
		return nil
	})
	stopLoad()
	wait()
	gap := l.check(t, ctx)
	if f.GetLostEvents() != 0 {
		t.Errorf("a switchover reported %d lost events", f.GetLostEvents())
	}
	if r := role(west.Store(), "acme"); r != cellv1.Role_ROLE_OWNER {
		t.Errorf("new owner's role %s", r)
	}
	if r := role(east.Store(), "acme"); r == cellv1.Role_ROLE_OWNER {
		t.Errorf("old owner still OWNER")
	}
	t.Logf("switchover %s: time to promote %v, longest gap between acks %v", f.GetId(), f.GetTimeToPromote().AsDuration(), gap)
}
