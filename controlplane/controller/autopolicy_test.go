package controller_test

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/cellplane/cellplane/controlplane/catalog"
	"github.com/cellplane/cellplane/controlplane/controller"
	"github.com/cellplane/cellplane/controlplane/intent"
	"github.com/cellplane/cellplane/controlplane/topo"
	"github.com/cellplane/cellplane/controlplane/topo/memtopo"
	"github.com/cellplane/cellplane/internal/retry"
	"github.com/cellplane/cellplane/internal/testutil"
	cpv1 "github.com/cellplane/cellplane/proto/cellplane/controlplane/v1"
)

// liveCell is a 1-member cell of region with its node and leader
// registered (HEALTHY).
func liveCell(t *testing.T, st topo.Store, id, region string) {
	t.Helper()
	c := &cpv1.Cell{Id: id, Region: region, ExpectedMembers: 1, State: cpv1.CellState_CELL_STATE_ACTIVE, Capacity: &cpv1.CellCapacity{}}
	foSeedCells(t, st, c)
	ctx := testutil.Context(t, 5*time.Second)
	if _, err := st.Txn(ctx, nil, []topo.Op{
		topo.Put(topo.CellNodeKey(id, id+"-n1"), catalog.Encode(&cpv1.Node{Id: id + "-n1", Cell: id, Role: cpv1.NodeRole_NODE_ROLE_MEMBER, GrpcAddr: id + ":1"})),
	}); err != nil {
		t.Fatal(err)
	}
	setLeader(t, st, id, true)
}

// setLeader publishes (or removes) the cell's leader key: without it the
// cell is UNAVAILABLE.
func setLeader(t *testing.T, st topo.Store, cell string, on bool) {
	t.Helper()
	op := topo.Del(topo.CellLeaderKey(cell))
	if on {
		op = topo.Put(topo.CellLeaderKey(cell), catalog.Encode(&cpv1.CellLeader{NodeId: cell + "-n1", GrpcAddr: cell + ":1", Term: 1}))
	}
	if _, err := st.Txn(testutil.Context(t, 5*time.Second), nil, []topo.Op{op}); err != nil {
		t.Fatal(err)
	}
}

// The policy promotes the tenants of a cell unhealthy for UnhealthyFor,
// in the regions it covers, and never those of a cell that was unhealthy
// only briefly.
func TestAutoPromote(t *testing.T) {
	st := memtopo.New()
	defer st.Close()
	e := &foEnv{st: st, cells: newSimCells()}
	liveCell(t, st, "a", "us")   // will stay down: its tenant is promoted
	liveCell(t, st, "c", "us")   // down briefly, then healthy again
	liveCell(t, st, "d", "ap")   // down, but the policy does not cover region ap
	liveCell(t, st, "b", "eu")   // the standbys
	liveCell(t, st, "x", "us")   // down, but its tenant's standby is down too
	liveCell(t, st, "y", "eu-2") // x's tenant's standby
	e.place(t, "acme", "a", "b")
	e.place(t, "beta", "c", "b")
	e.place(t, "gamma", "d", "b")
	e.place(t, "delta", "x", "y")
	e.start(t, "c1", func(c *controller.Config) {
		c.AutoPromote = controller.AutoPromoteConfig{Enabled: true, UnhealthyFor: 300 * time.Millisecond,
			Interval: 10 * time.Millisecond, MaxConcurrent: 4, Regions: []string{"us", "eu"}}
	})
	ctx := testutil.Context(t, 20*time.Second)

	setLeader(t, st, "c", false)
	setLeader(t, st, "c", true) // a blip: healthy again at once
	for _, cell := range []string{"a", "d", "x", "y"} {
		setLeader(t, st, cell, false)
	}

	var fo *cpv1.Failover
	testutil.Eventually(t, 10*time.Second, func() error {
		fos, err := intent.ListFailovers(ctx, st, intent.FailoverFilter{Tenant: "acme"})
		if err != nil || len(fos) != 1 {
			return fmt.Errorf("acme's failovers: %v (%v)", fos, err)
		}
		fo = fos[0]
		return nil
	})
	if fo.GetKind() != promote || !strings.HasPrefix(fo.GetTrigger(), "policy: cell a UNAVAILABLE for ") {
		t.Fatalf("policy failover %v", fo)
	}
	e.waitFailover(t, fo.GetId(), cpv1.FailoverState_FAILOVER_STATE_AWAITING_OLD_OWNER)
	if p := e.tenant(t, "acme"); p.GetCell() != "b" || p.GetEpoch() != 2 {
		t.Fatalf("acme after the policy's promotion: %v", p)
	}
	// Nothing else within another UnhealthyFor and more.
	if err := testutil.Poll(ctx, 700*time.Millisecond, func() error {
		fos, err := intent.ListFailovers(ctx, st, intent.FailoverFilter{})
		if err == nil && len(fos) > 1 {
			return nil
		}
		return errors.New("only acme's")
	}); err == nil {
		fos, _ := intent.ListFailovers(ctx, st, intent.FailoverFilter{})
		t.Fatalf("failovers %v: want only acme's (c recovered, d's region is not covered, x's standby is down)", fos)
	}
}

// S22 at the policy: after the leader could not read the cells' health
// for longer than BlindAfter (etcd unreachable), a cell seen unhealthy
// right after is not promoted within ResumeGrace (the cells re-register
// at their own pace after an etcd outage), even past UnhealthyFor; a cell
// that stays unhealthy beyond the grace still is. Without the grace (the
// code before) acme's standby was promoted UnhealthyFor after etcd came
// back.
func TestAutoPromoteWaitsAfterBlindness(t *testing.T) {
	st := memtopo.New()
	defer st.Close()
	e := &foEnv{st: st, cells: newSimCells()}
	liveCell(t, st, "a", "us")
	liveCell(t, st, "b", "eu")
	e.place(t, "acme", "a", "b")
	const grace = 1500 * time.Millisecond
	e.start(t, "c1", func(c *controller.Config) {
		c.AutoPromote = controller.AutoPromoteConfig{Enabled: true, UnhealthyFor: 200 * time.Millisecond,
			Interval: 10 * time.Millisecond, MaxConcurrent: 4, ResumeGrace: grace, BlindAfter: 100 * time.Millisecond}
	})
	ctx := testutil.Context(t, 30*time.Second)
	failovers := func() []*cpv1.Failover {
		fos, err := intent.ListFailovers(ctx, st, intent.FailoverFilter{Tenant: "acme"})
		if err != nil {
			t.Fatal(err)
		}
		return fos
	}
	// The term's own grace passes first.
	if err := retry.Sleep(ctx, grace+200*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	// etcd "goes away" for 400 ms; meanwhile a loses its leader
	// registration (as every cell's would in an outage).
	st.Fail(memtopo.OpList, topo.CellsPrefix, errors.New("etcd unreachable"))
	setLeader(t, st, "a", false)
	if err := retry.Sleep(ctx, 400*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	st.Clear()
	back := time.Now()
	// a comes back after 3 × UnhealthyFor, still within the grace.
	if err := retry.Sleep(ctx, 600*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	setLeader(t, st, "a", true)
	if err := retry.Sleep(ctx, time.Until(back.Add(grace+300*time.Millisecond))); err != nil {
		t.Fatal(err)
	}
	if fos := failovers(); len(fos) != 0 {
		t.Fatalf("promoted within the grace after the outage: %v", fos)
	}
	// Outside the grace, a cell that stays unhealthy is promoted.
	setLeader(t, st, "a", false)
	testutil.Eventually(t, 10*time.Second, func() error {
		if fos := failovers(); len(fos) != 1 || !strings.HasPrefix(fos[0].GetTrigger(), "policy: cell a UNAVAILABLE") {
			return fmt.Errorf("failovers %v", fos)
		}
		return nil
	})
}

// The policy stored at policies/failover (SetFailoverPolicy) wins over the
// process's configuration, read at every pass: a leader started with the
// policy off promotes once a stored policy turns it on for the cell's
// region, and not while the stored policy covers other regions only.
func TestAutoPromoteFollowsStoredPolicy(t *testing.T) {
	st := memtopo.New()
	defer st.Close()
	e := &foEnv{st: st, cells: newSimCells()}
	liveCell(t, st, "a", "us")
	liveCell(t, st, "b", "eu")
	e.place(t, "acme", "a", "b")
	e.start(t, "c1", func(c *controller.Config) {
		c.AutoPromote = controller.AutoPromoteConfig{Enabled: false, UnhealthyFor: time.Hour,
			Interval: 10 * time.Millisecond, MaxConcurrent: 4}
	})
	ctx := testutil.Context(t, 20*time.Second)
	store := func(p *cpv1.FailoverPolicy) {
		t.Helper()
		if _, err := st.Txn(ctx, nil, []topo.Op{topo.Put(topo.FailoverPolicyKey, catalog.Encode(p))}); err != nil {
			t.Fatal(err)
		}
	}
	noFailover := func(what string) {
		t.Helper()
		if err := testutil.Poll(ctx, 700*time.Millisecond, func() error {
			if fos, err := intent.ListFailovers(ctx, st, intent.FailoverFilter{}); err == nil && len(fos) > 0 {
				return nil
			}
			return errors.New("none")
		}); err == nil {
			t.Fatalf("%s: a failover was started", what)
		}
	}
	setLeader(t, st, "a", false)
	noFailover("the process's policy is off")
	store(&cpv1.FailoverPolicy{Enabled: true, UnhealthyFor: durationpb.New(200 * time.Millisecond), Regions: []string{"ap"}})
	noFailover("the stored policy covers region ap only")
	store(&cpv1.FailoverPolicy{Enabled: true, UnhealthyFor: durationpb.New(200 * time.Millisecond)})
	testutil.Eventually(t, 10*time.Second, func() error {
		fos, err := intent.ListFailovers(ctx, st, intent.FailoverFilter{Tenant: "acme"})
		if err != nil || len(fos) != 1 || !strings.HasPrefix(fos[0].GetTrigger(), "policy: cell a UNAVAILABLE") {
			return fmt.Errorf("acme's failovers: %v (%v)", fos, err)
		}
		return nil
	})
}

// Apply overrides the process's policy with a stored one; Policy is the
// process's policy as a record.
func TestAutoPromoteConfigApply(t *testing.T) {
	base := controller.DefaultAutoPromoteConfig()
	base.Regions = []string{"us"}
	tests := []struct {
		name string
		p    *cpv1.FailoverPolicy
		want func(c controller.AutoPromoteConfig) bool
	}{
		{"on, its own delay and regions", &cpv1.FailoverPolicy{Enabled: true, UnhealthyFor: durationpb.New(time.Minute), Regions: []string{"eu"}, MaxConcurrent: 2},
			func(c controller.AutoPromoteConfig) bool {
				return c.Enabled && c.UnhealthyFor == time.Minute && slices.Equal(c.Regions, []string{"eu"}) && c.MaxConcurrent == 2
			}},
		{"zero values keep the process's delay and bound; no regions: all", &cpv1.FailoverPolicy{Enabled: true},
			func(c controller.AutoPromoteConfig) bool {
				return c.Enabled && c.UnhealthyFor == base.UnhealthyFor && len(c.Regions) == 0 && c.MaxConcurrent == base.MaxConcurrent
			}},
		{"off", &cpv1.FailoverPolicy{}, func(c controller.AutoPromoteConfig) bool { return !c.Enabled }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := base.Apply(tc.p)
			if !tc.want(got) || got.Interval != base.Interval || got.ResumeGrace != base.ResumeGrace {
				t.Fatalf("Apply = %+v", got)
			}
		})
	}
	if p := base.Policy(); p.GetEnabled() || p.GetUnhealthyFor().AsDuration() != base.UnhealthyFor || !slices.Equal(p.GetRegions(), base.Regions) {
		t.Fatalf("Policy = %v", p)
	}
}
