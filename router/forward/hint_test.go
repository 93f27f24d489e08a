package forward

import (
	"testing"
	"time"

	"github.com/cellplane/cellplane/internal/cperr"
	"github.com/cellplane/cellplane/internal/tenantmd"
	"github.com/cellplane/cellplane/internal/testutil"
	contextv1 "github.com/cellplane/cellplane/proto/cellplane/context/v1"
)

// TestLeaderHintMustNameAMember: a NOT_LEADER hint is followed only when
// it names a member of the cell in the routing table (finding C5).
func TestLeaderHintMustNameAMember(t *testing.T) {
	ctx := testutil.Context(t, 20*time.Second)
	res := newResolver()
	client, fwd, _ := startRouter(t, testConfig(), res)
	appendReq := func(id string) *contextv1.AppendRequest {
		return &contextv1.AppendRequest{ContextId: "c", RequestId: id,
			Entries: []*contextv1.Entry{{Role: "user", Content: &contextv1.Entry_Text{Text: "hi"}}}}
	}

	t.Run("a hint naming no member is not dialed", func(t *testing.T) {
		decoy := testutil.NewDecoy(t)
		liar, member := startFake(t), startFake(t)
		liar.errs = []error{cperr.New(cperr.NotLeader, "not the leader").With(cperr.MetaLeader, decoy.Addr).With(cperr.MetaLeaderID, "n1")}
		res.set("acme", Target{Cell: "c1", Epoch: 1, LeaderAddr: liar.addr, Members: []string{liar.addr, member.addr}})
		if _, err := client.Append(tenantmd.Outgoing(ctx, "acme", 0), appendReq("r-bogus")); err != nil {
			t.Fatalf("Append: %v", err)
		}
		if n := decoy.Accepted(); n != 0 {
			t.Fatalf("the router dialed the hinted non-member %d times", n)
		}
		if n := len(member.calls()); n != 1 {
			t.Fatalf("the real member got %d calls, want 1", n)
		}
		if v := counterValue(t, fwd.m.hintsIgnored.WithLabelValues("c1")); v != 1 {
			t.Fatalf("ignored hints = %v, want 1", v)
		}
		if tg, _ := res.Resolve("acme"); learned(fwd, tg) == decoy.Addr {
			t.Fatal("the bogus hint was learned as the cell's leader")
		}
	})

	t.Run("a hint naming a member is followed", func(t *testing.T) {
		follower, leader, other := startFake(t), startFake(t), startFake(t)
		follower.errs = []error{cperr.New(cperr.NotLeader, "not the leader").With(cperr.MetaLeader, leader.addr)}
		// other comes before leader in the member list: only the hint
		// sends the retry to leader.
		other.errs = []error{cperr.New(cperr.NotLeader, "not the leader")}
		tg := Target{Cell: "c2", Epoch: 1, LeaderAddr: follower.addr, Members: []string{follower.addr, other.addr, leader.addr}}
		res.set("beta", tg)
		if _, err := client.Append(tenantmd.Outgoing(ctx, "beta", 0), appendReq("r-legit")); err != nil {
			t.Fatalf("Append: %v", err)
		}
		if n := len(other.calls()); n != 0 {
			t.Fatalf("the retry went to another member (%d calls), not to the hinted leader", n)
		}
		if n := len(leader.calls()); n != 1 {
			t.Fatalf("the hinted leader got %d calls, want 1", n)
		}
		if h, ok := fwd.leaderHint(tg); !ok || h != leader.addr {
			t.Fatalf("learned leader = %q, %v; want %s", h, ok, leader.addr)
		}
		if v := counterValue(t, fwd.m.hintsIgnored.WithLabelValues("c2")); v != 0 {
			t.Fatalf("ignored hints = %v, want 0", v)
		}
	})
}

func learned(f *Forwarder, t Target) string {
	f.leadersMu.Lock()
	defer f.leadersMu.Unlock()
	return f.leaders[t.Cell].addr
}
