package service

import (
	"net"
	"slices"
	"testing"
	"time"

	"github.com/cellplane/cellplane/cells/store"
	"github.com/cellplane/cellplane/internal/cperr"
	"github.com/cellplane/cellplane/internal/testutil"
	cellv1 "github.com/cellplane/cellplane/proto/cellplane/cell/v1"
	contextv1 "github.com/cellplane/cellplane/proto/cellplane/context/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"
)

// TestRegisterNodeRule: RegisterNode cannot change another node's
// recorded addresses (finding C5); a member re-registering new ports on
// its own host still can.
func TestRegisterNodeRule(t *testing.T) {
	n := newCell(t, nil, nil)
	ctx := testutil.Context(t, 30*time.Second)
	n7 := &cellv1.NodeInfo{NodeId: "n7", RaftAddr: "127.0.0.1:1", GrpcAddr: "127.0.0.1:2", HttpAddr: "127.0.0.1:3"}
	must(n.cell.AddNonVoter(ctx, &cellv1.AddNonVoterRequest{Node: n7}))(t)
	nodes := func() map[string]*cellv1.NodeInfo {
		st := must(n.cell.GetStatus(ctx, &cellv1.GetStatusRequest{}))(t)
		out := map[string]*cellv1.NodeInfo{}
		for _, m := range st.GetMembers() {
			out[m.GetNode().GetNodeId()] = m.GetNode()
		}
		return out
	}
	before := nodes()
	self := proto.Clone(n.info).(*cellv1.NodeInfo)
	self.RaftId = "n1" // the leader registers itself with its Raft id
	if !proto.Equal(before["n7"], n7) || !proto.Equal(before["n1"], self) {
		t.Fatalf("recorded nodes %v", before)
	}
	selfAddr := n.info.GetRaftAddr()
	refused := []struct {
		name string
		node *cellv1.NodeInfo
	}{
		{"another member, its raft address, an attacker's host", &cellv1.NodeInfo{NodeId: "n7", RaftAddr: "127.0.0.1:1", GrpcAddr: "203.0.113.9:7211"}},
		{"another member, its raft address, an attacker's HTTP host", &cellv1.NodeInfo{NodeId: "n7", RaftAddr: "127.0.0.1:1", GrpcAddr: "127.0.0.1:2", HttpAddr: "203.0.113.9:80"}},
		{"another member, another raft address", &cellv1.NodeInfo{NodeId: "n7", RaftAddr: "203.0.113.9:7210", GrpcAddr: "203.0.113.9:7211"}},
		{"another member, no raft address", &cellv1.NodeInfo{NodeId: "n7", GrpcAddr: "127.0.0.1:9"}},
		{"the leader's id, an attacker's host", &cellv1.NodeInfo{NodeId: "n1", RaftAddr: selfAddr, GrpcAddr: "203.0.113.9:7211"}},
		{"not a member", &cellv1.NodeInfo{NodeId: "n8", RaftAddr: "127.0.0.1:8", GrpcAddr: "127.0.0.1:9"}},
	}
	for _, tt := range refused {
		t.Run(tt.name, func(t *testing.T) {
			_, err := n.cell.RegisterNode(ctx, &cellv1.RegisterNodeRequest{Node: tt.node})
			wantErr(t, err, codes.PermissionDenied, cperr.PermissionDenied)
			if after := nodes(); !mapsEqual(before, after) {
				t.Fatalf("a refused registration changed the recorded nodes: %v, was %v", after, before)
			}
		})
	}

	t.Run("AddVoter with an attacker's gRPC host", func(t *testing.T) {
		_, err := n.cell.AddNonVoter(ctx, &cellv1.AddNonVoterRequest{Node: &cellv1.NodeInfo{NodeId: "n9", RaftAddr: "127.0.0.1:5", GrpcAddr: "203.0.113.9:7211"}})
		wantErr(t, err, codes.PermissionDenied, cperr.PermissionDenied)
		st := must(n.cell.GetStatus(ctx, &cellv1.GetStatusRequest{}))(t)
		if slices.ContainsFunc(st.GetMembers(), func(m *cellv1.Member) bool { return m.GetNode().GetNodeId() == "n9" }) {
			t.Fatal("the refused node joined the Raft configuration")
		}
	})

	t.Run("a member re-registers new ports on its host", func(t *testing.T) {
		moved := &cellv1.NodeInfo{NodeId: "n7", RaftAddr: "127.0.0.1:1", GrpcAddr: "127.0.0.1:12", HttpAddr: "127.0.0.1:13"}
		must(n.cell.RegisterNode(ctx, &cellv1.RegisterNodeRequest{Node: moved}))(t)
		if got := nodes()["n7"]; !proto.Equal(got, moved) {
			t.Fatalf("n7 recorded as %v, want %v", got, moved)
		}
	})

	t.Run("AllowCrossHostAddrs", func(t *testing.T) {
		n := newCell(t, nil, func(c *Config) { c.AllowCrossHostAddrs = true })
		must(n.cell.AddNonVoter(ctx, &cellv1.AddNonVoterRequest{Node: n7}))(t)
		other := &cellv1.NodeInfo{NodeId: "n7", RaftAddr: "127.0.0.1:1", GrpcAddr: "198.51.100.1:7211"}
		must(n.cell.RegisterNode(ctx, &cellv1.RegisterNodeRequest{Node: other}))(t)
		// The Raft address must still be the configuration's.
		_, err := n.cell.RegisterNode(ctx, &cellv1.RegisterNodeRequest{Node: &cellv1.NodeInfo{NodeId: "n7", RaftAddr: "198.51.100.1:7210", GrpcAddr: "198.51.100.1:7211"}})
		wantErr(t, err, codes.PermissionDenied, cperr.PermissionDenied)
	})
}

func mapsEqual(a, b map[string]*cellv1.NodeInfo) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if !proto.Equal(v, b[k]) {
			return false
		}
	}
	return true
}

// TestFollowerForwardsOnlyToAMember: a follower forwards a write only to
// the registered gRPC address of the Raft leader; a record that does not
// match the Raft configuration is never dialed (finding C5).
func TestFollowerForwardsOnlyToAMember(t *testing.T) {
	tests := []struct {
		name    string
		leader  func(decoy string) *cellv1.NodeInfo
		members func(info *cellv1.NodeInfo) []store.Member
		hint    bool
	}{
		{"raft address is not the configuration's",
			func(d string) *cellv1.NodeInfo {
				return &cellv1.NodeInfo{NodeId: "n2", RaftAddr: "127.0.0.1:9999", GrpcAddr: d}
			}, nil, false},
		{"gRPC address on another host than the raft address",
			func(d string) *cellv1.NodeInfo {
				return &cellv1.NodeInfo{NodeId: "n2", RaftAddr: "127.0.0.2:7212", GrpcAddr: d}
			},
			func(info *cellv1.NodeInfo) []store.Member {
				return []store.Member{{ID: "f1", RaftAddr: "127.0.0.1:7211", Voter: true}, {ID: "n2", RaftAddr: "127.0.0.2:7212", Voter: true, Info: info}}
			}, false},
		{"leader not in the configuration",
			func(d string) *cellv1.NodeInfo {
				return &cellv1.NodeInfo{NodeId: "n2", RaftAddr: fakeLeaderRaft, GrpcAddr: d}
			},
			func(*cellv1.NodeInfo) []store.Member {
				return []store.Member{{ID: "f1", RaftAddr: "127.0.0.1:7211", Voter: true}}
			}, false},
		{"record of another node id",
			func(d string) *cellv1.NodeInfo {
				return &cellv1.NodeInfo{NodeId: "n3", RaftAddr: fakeLeaderRaft, GrpcAddr: d}
			}, nil, false},
		{"hint only, no record", func(string) *cellv1.NodeInfo { return nil }, nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			decoy := testutil.NewDecoy(t)
			lis := testutil.Listen(t)
			self := &cellv1.NodeInfo{NodeId: "n1", RaftAddr: "127.0.0.1:7211", GrpcAddr: lis.Addr().String()}
			fst := &fakeStore{follower: true, leaderID: "n2", leader: tt.leader(decoy.Addr)}
			if tt.members != nil {
				fst.members = tt.members(fst.leader)
			}
			if tt.hint {
				fst.hintAddr = decoy.Addr
			}
			n := serveNode(t, fst, self, lis, nil)
			ctx := as(testutil.Context(t, 10*time.Second), "acme", 0)
			_, err := n.ctx.Append(ctx, &contextv1.AppendRequest{ContextId: "c", Entries: []*contextv1.Entry{textEntry("u", "x")}})
			wantErr(t, err, codes.Unavailable, cperr.CellUnavailable)
			if got := decoy.Accepted(); got != 0 {
				t.Fatalf("the follower dialed a non-member leader address %d times", got)
			}
		})
	}
}

func TestSameHost(t *testing.T) {
	tests := []struct {
		a, b string
		want bool
	}{
		{"127.0.0.1:1", "127.0.0.1:2", true},
		{"Node-1.example:7211", "node-1.example:7210", true},
		{"[::ffff:10.0.0.1]:1", "10.0.0.1:2", true},
		{"[::1]:1", "[0:0:0:0:0:0:0:1]:2", true},
		{"127.0.0.1:1", "127.0.0.2:1", false},
		{"localhost:1", "127.0.0.1:1", false},
		{"127.0.0.1", "127.0.0.1:1", false},
		{"", "", false},
	}
	for _, tt := range tests {
		if got := sameHost(tt.a, tt.b); got != tt.want {
			t.Errorf("sameHost(%q, %q) = %v, want %v", tt.a, tt.b, got, tt.want)
		}
	}
}

// FuzzSameHost: sameHost never panics, is symmetric, and an address is
// on its own host whenever it parses.
func FuzzSameHost(f *testing.F) {
	f.Add("127.0.0.1:1", "127.0.0.1:2")
	f.Add("[::ffff:10.0.0.1]:1", "10.0.0.1:2")
	f.Add("host:1", "HOST:2")
	f.Fuzz(func(t *testing.T, a, b string) {
		if sameHost(a, b) != sameHost(b, a) {
			t.Fatalf("sameHost(%q, %q) is not symmetric", a, b)
		}
		if _, _, err := net.SplitHostPort(a); err == nil && !sameHost(a, a) {
			t.Fatalf("%q is not on its own host", a)
		}
	})
}
