package client

import (
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/cellplane/cellplane/internal/cperr"
	"github.com/cellplane/cellplane/internal/testutil"
	contextv1 "github.com/cellplane/cellplane/proto/cellplane/context/v1"
	routerv1 "github.com/cellplane/cellplane/proto/cellplane/router/v1"
)

// hintEnv is a fake router whose Lookup names the given cells as the
// members of cell "c1", the first one as the leader.
func hintEnv(t *testing.T, cells ...*fakeCell) (*Client, *fakeRouter) {
	t.Helper()
	fr := &fakeRouter{}
	resp := &routerv1.LookupResponse{Tenant: "acme", Cell: "c1", Epoch: 1}
	for i, fc := range cells {
		fc.addr = serveFake(t, func(s *grpc.Server) { contextv1.RegisterContextServiceServer(s, fc) })
		resp.Members = append(resp.Members, &routerv1.Member{NodeId: "n" + string(rune('1'+i)), GrpcAddr: fc.addr, Leader: i == 0})
	}
	fr.route = resp
	routerAddr := serveFake(t, func(s *grpc.Server) {
		routerv1.RegisterRouterServiceServer(s, fr)
		contextv1.RegisterContextServiceServer(s, &fr.fakeCell)
	})
	cfg := DefaultConfig()
	cfg.Router, cfg.Tenant, cfg.Logger = routerAddr, "acme", testutil.Logger(t)
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c, fr
}

// TestLeaderHintMustNameAMember: the direct path follows a NOT_LEADER
// hint only when it names a member from the last Lookup (finding C5).
func TestLeaderHintMustNameAMember(t *testing.T) {
	ctx := testutil.Context(t, 20*time.Second)

	t.Run("a hint naming no member is not dialed", func(t *testing.T) {
		decoy := testutil.NewDecoy(t)
		liar := &fakeCell{err: cperr.New(cperr.NotLeader, "not the leader").With(cperr.MetaLeader, decoy.Addr)}
		member := &fakeCell{}
		c, fr := hintEnv(t, liar, member)
		if _, err := c.Context().Append(ctx, &contextv1.AppendRequest{ContextId: "c"}); err != nil {
			t.Fatalf("Append: %v", err)
		}
		if n := decoy.Accepted(); n != 0 {
			t.Fatalf("the client dialed the hinted non-member %d times", n)
		}
		if n := member.calls.Load(); n != 1 {
			t.Fatalf("the real member got %d calls, want 1", n)
		}
		if n := fr.calls.Load(); n != 0 {
			t.Fatalf("the call went through the router (%d calls), want the direct path", n)
		}
		if n := c.IgnoredLeaderHints(); n != 1 {
			t.Fatalf("IgnoredLeaderHints = %d, want 1", n)
		}
	})

	t.Run("a hint naming a member is followed", func(t *testing.T) {
		follower, other, leader := &fakeCell{}, &fakeCell{}, &fakeCell{}
		// other comes before leader: only the hint sends the retry there.
		other.err = cperr.New(cperr.NotLeader, "not the leader")
		c, _ := hintEnv(t, follower, other, leader)
		follower.setErr(cperr.New(cperr.NotLeader, "not the leader").With(cperr.MetaLeader, leader.addr))
		if _, err := c.Context().Append(ctx, &contextv1.AppendRequest{ContextId: "c"}); err != nil {
			t.Fatalf("Append: %v", err)
		}
		if n := other.calls.Load(); n != 0 {
			t.Fatalf("the retry went to another member (%d calls), not to the hinted leader", n)
		}
		if n := leader.calls.Load(); n != 1 {
			t.Fatalf("the hinted leader got %d calls, want 1", n)
		}
		if n := c.IgnoredLeaderHints(); n != 0 {
			t.Fatalf("IgnoredLeaderHints = %d, want 0", n)
		}
	})
}
