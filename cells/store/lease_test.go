package store

import (
	"fmt"
	"io"
	"net"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	dto "github.com/prometheus/client_model/go"

	"github.com/cellplane/cellplane/internal/testutil"
)

func TestLeaseQuorumSince(t *testing.T) {
	base := time.Now()
	at := func(ms int) time.Time { return base.Add(time.Duration(ms) * time.Millisecond) }
	voters := func(ids ...string) []raft.Server {
		var out []raft.Server
		for _, id := range ids {
			out = append(out, raft.Server{ID: raft.ServerID(id), Suffrage: raft.Voter})
		}
		return out
	}
	cases := []struct {
		name    string
		servers []raft.Server
		acks    map[string]peerAck
		want    time.Time
		ok      bool
	}{
		{"single voter", voters("a"), nil, base, true},
		{"three voters, no acks", voters("a", "b", "c"), nil, time.Time{}, false},
		{"three voters, one ack suffices", voters("a", "b", "c"), map[string]peerAck{"b": {7, at(10)}}, at(10), true},
		{"three voters, the newer ack", voters("a", "b", "c"), map[string]peerAck{"b": {7, at(10)}, "c": {7, at(20)}}, at(20), true},
		{"an ack of an earlier term does not count", voters("a", "b", "c"), map[string]peerAck{"b": {6, at(30)}, "c": {7, at(20)}}, at(20), true},
		{"only earlier terms", voters("a", "b", "c"), map[string]peerAck{"b": {6, at(30)}}, time.Time{}, false},
		{"five voters need two acks, the older of the newest two", voters("a", "b", "c", "d", "e"),
			map[string]peerAck{"b": {7, at(10)}, "c": {7, at(30)}, "d": {7, at(20)}}, at(20), true},
		{"five voters, one ack", voters("a", "b", "c", "d", "e"), map[string]peerAck{"b": {7, at(10)}}, time.Time{}, false},
		{"a non-voter's ack does not count", append(voters("a", "b", "c"), raft.Server{ID: "d", Suffrage: raft.Nonvoter}),
			map[string]peerAck{"d": {7, at(10)}}, time.Time{}, false},
		{"not a voter itself", voters("b", "c", "d"), map[string]peerAck{"b": {7, at(10)}, "c": {7, at(10)}}, time.Time{}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var l leaseState
			for id, a := range tc.acks {
				l.noteAck(raft.ServerID(id), a.term, a.sent)
			}
			got, ok := l.quorumSince(7, "a", tc.servers, base)
			if ok != tc.ok || !got.Equal(tc.want) {
				t.Fatalf("quorumSince = %v, %v; want %v, %v", got.Sub(base), ok, tc.want.Sub(base), tc.ok)
			}
		})
	}
	t.Run("an older ack does not replace a newer one", func(t *testing.T) {
		var l leaseState
		l.noteAck("b", 7, at(20))
		l.noteAck("b", 7, at(10)) // a slow RPC sent earlier, answered later
		if got, _ := l.quorumSince(7, "a", voters("a", "b", "c"), base); !got.Equal(at(20)) {
			t.Fatalf("got %v, want the 20ms ack", got.Sub(base))
		}
	})
}

// TestLeaseVoteGuard: with lease reads on, a member restarted with Raft
// state refuses votes and pre-votes (not a transfer's) for
// HeartbeatTimeout after it starts, then votes as Raft would, and obeys
// no TimeoutNow but its leader's; with them off it votes at once and
// obeys any TimeoutNow.
func TestLeaseVoteGuard(t *testing.T) {
	for _, leaseReads := range []bool{true, false} {
		t.Run(fmt.Sprintf("lease reads %v", leaseReads), func(t *testing.T) {
			const window = 2 * time.Second
			dir := t.TempDir()
			addr := testutil.FreeAddr(t)
			open := func() *Store {
				ln, err := net.Listen("tcp", addr)
				if err != nil {
					t.Fatal(err)
				}
				cfg := DefaultConfig()
				cfg.NodeID = "n1"
				cfg.RaftListener = ln
				cfg.DataDir = dir
				// Two members that never answer: no leader is ever elected.
				cfg.Bootstrap = []Peer{{ID: "n1", Addr: addr}, {ID: "n2", Addr: "127.0.0.1:1"}, {ID: "n3", Addr: "127.0.0.1:2"}}
				cfg.Raft.HeartbeatTimeout, cfg.Raft.ElectionTimeout, cfg.Raft.LeaderLeaseTimeout = window, window, window
				cfg.Raft.LeaseReads = leaseReads
				cfg.Logger = testLogger(t)
				s, err := Open(cfg)
				if err != nil {
					t.Fatal(err)
				}
				return s
			}
			first := open()
			if err := first.Close(); err != nil {
				t.Fatal(err)
			}
			opened := time.Now() // the guard's window starts later, inside Open
			s := open()          // a restart: the dir holds Raft state
			defer s.Close()

			client, err := raft.NewTCPTransport("127.0.0.1:0", nil, 1, 5*time.Second, io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			defer client.Close()
			term := uint64(100)
			header := raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: []byte("n2"), Addr: client.EncodePeer("n2", "127.0.0.1:1")}
			vote := func(transfer bool) bool {
				t.Helper()
				term++
				req := &raft.RequestVoteRequest{RPCHeader: header, Term: term, LastLogIndex: 1 << 20, LastLogTerm: term - 1, LeadershipTransfer: transfer}
				var resp raft.RequestVoteResponse
				if err := client.RequestVote(raft.ServerID(s.raftID), raft.ServerAddress(addr), req, &resp); err != nil {
					t.Fatal(err)
				}
				return resp.Granted
			}
			preVote := func() bool {
				t.Helper()
				req := &raft.RequestPreVoteRequest{RPCHeader: header, Term: term + 1, LastLogIndex: 1 << 20, LastLogTerm: term}
				var resp raft.RequestPreVoteResponse
				if err := client.RequestPreVote(raft.ServerID(s.raftID), raft.ServerAddress(addr), req, &resp); err != nil {
					t.Fatal(err)
				}
				return resp.Granted
			}
			// A TimeoutNow from a member that is not this node's leader
			// (it knows none) makes it a candidate only without lease reads.
			err = client.TimeoutNow(raft.ServerID(s.raftID), raft.ServerAddress(addr), &raft.TimeoutNowRequest{RPCHeader: header}, &raft.TimeoutNowResponse{})
			if leaseReads != (err != nil) {
				t.Fatalf("TimeoutNow from a non-leader: err = %v, want refused: %v", err, leaseReads)
			}
			pre, granted := preVote(), vote(false)
			if leaseReads {
				if pre || granted {
					if time.Since(opened) >= window {
						t.Skip("the machine was too slow to ask within the guard's window")
					}
					t.Fatalf("within the guard's window: pre-vote granted %v, vote granted %v; want both refused", pre, granted)
				}
				var m dto.Metric
				for _, rpc := range []string{"vote", "pre_vote", "timeout_now"} {
					if err := s.metrics.leaseRefused.WithLabelValues(rpc).Write(&m); err != nil {
						t.Fatal(err)
					}
					if n := m.GetCounter().GetValue(); n != 1 {
						t.Errorf("%s refused = %v, want 1", rpc, n)
					}
				}
				if !vote(true) {
					t.Fatal("a leadership transfer's vote was refused")
				}
				testutil.Eventually(t, 3*window, func() error {
					if !vote(false) {
						return fmt.Errorf("vote still refused %v after the restart", time.Since(opened))
					}
					return nil
				})
				if time.Since(opened) < window {
					t.Fatalf("vote granted %v after the restart, within the guard's window %v", time.Since(opened), window)
				}
				return
			}
			if !pre || !granted {
				t.Fatalf("without lease reads: pre-vote granted %v, vote granted %v; want both granted", pre, granted)
			}
		})
	}
}
