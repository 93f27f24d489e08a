package store

import (
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
)

// Lease reads (RaftConfig.LeaseReads; DESIGN.md "Lease reads").
//
// hashicorp/raft followers are sticky: one that knows a leader refuses
// votes and pre-votes, and forgets its leader only once it has heard
// nothing from it for HeartbeatTimeout (less 1 ms with the leader check).
// So when a quorum of voters acknowledged AppendEntries RPCs (heartbeats
// included) that this leader sent at or after t0, no other server can
// win an election before t0 + HeartbeatTimeout, as measured by the
// followers' clocks. The leader holds a lease until t0 + LeaseDuration
// (LeaseDuration < HeartbeatTimeout: the margin covers clock-rate drift
// between the hosts), and a linearizable read inside it skips the quorum
// round: it waits only until the state reflects the commit index at the
// time of the read.
//
// The holes in that argument are closed here:
//   - a leadership transfer bypasses stickiness (the vote request carries
//     LeadershipTransfer): TransferLeadership ends the lease for the rest
//     of the term before it asks Raft to transfer (blockedTerm);
//   - a voter that restarted knows no leader and would vote at once:
//     with lease reads on, a node that restarts with Raft state refuses
//     votes and pre-votes for HeartbeatTimeout after it starts (safeTransport's
//     vote guard), longer than any lease it acknowledged before it stopped;
//   - a TimeoutNow makes its receiver a candidate whose votes ignore
//     stickiness, and hashicorp/raft obeys any, however late: the vote
//     guard passes only those from the leader the node follows;
//   - the quorum is counted over the latest configuration's voters at the
//     time of the read, with acknowledgements of the current term only;
//   - a new leader holds no lease before its barrier committed an entry
//     of its term (readyTerm: its commit index is then current), nor
//     within LeaseDuration of the moment it learned it leads (since).
type leaseState struct {
	// dur is the lease's length (0: lease reads off).
	dur time.Duration

	mu sync.Mutex
	// acks: each peer's newest successful AppendEntries, by send time.
	acks map[raft.ServerID]peerAck

	// blockedTerm is the term in which a leadership transfer started:
	// no lease for the rest of it.
	blockedTerm atomic.Uint64
	// since is when this node last learned it leads, and in which term.
	since atomic.Pointer[leaderSince]
}

type peerAck struct {
	term uint64
	sent time.Time
}

type leaderSince struct {
	term uint64
	at   time.Time
}

// noteAck records that peer id acknowledged, in term, an AppendEntries
// this node sent at sent.
func (l *leaseState) noteAck(id raft.ServerID, term uint64, sent time.Time) {
	l.mu.Lock()
	if a, ok := l.acks[id]; !ok || term > a.term || (term == a.term && sent.After(a.sent)) {
		if l.acks == nil {
			l.acks = map[raft.ServerID]peerAck{}
		}
		l.acks[id] = peerAck{term: term, sent: sent}
	}
	l.mu.Unlock()
}

// quorumSince returns the newest time t0 such that a quorum of servers'
// voters, self counted, acknowledged in term an AppendEntries sent at or
// after t0 (now for a single voter). ok is false without such a quorum
// or when self is not a voter.
func (l *leaseState) quorumSince(term uint64, self raft.ServerID, servers []raft.Server, now time.Time) (t0 time.Time, ok bool) {
	var buf [8]time.Time
	sent := buf[:0]
	voters, selfVotes := 0, false
	l.mu.Lock()
	for _, srv := range servers {
		if srv.Suffrage != raft.Voter {
			continue
		}
		voters++
		if srv.ID == self {
			selfVotes = true
			continue
		}
		if a, found := l.acks[srv.ID]; found && a.term == term {
			sent = append(sent, a.sent)
		}
	}
	l.mu.Unlock()
	if !selfVotes {
		return time.Time{}, false
	}
	need := voters / 2 // besides this node's own vote
	if need == 0 {
		return now, true
	}
	if len(sent) < need {
		return time.Time{}, false
	}
	slices.SortFunc(sent, func(a, b time.Time) int { return b.Compare(a) }) // newest first
	return sent[need-1], true
}

// becameLeader records that this node learned it leads in term.
func (l *leaseState) becameLeader(term uint64, at time.Time) {
	l.since.Store(&leaderSince{term: term, at: at})
}

// leaseRead returns the commit index a linearizable read may wait for
// instead of a quorum round, and how long the lease still holds; ok is
// false when no lease holds (lease reads off, not the ready leader, a
// transfer started in this term, too soon after the election, no recent
// quorum acknowledgement).
func (s *Store) leaseRead() (idx uint64, remaining time.Duration, ok bool) {
	l := &s.lease
	if l.dur <= 0 {
		return 0, 0, false
	}
	term := s.raft.CurrentTerm()
	if s.readyTerm.Load() != term || l.blockedTerm.Load() == term {
		return 0, 0, false
	}
	now := time.Now()
	if since := l.since.Load(); since == nil || since.term != term || now.Sub(since.at) < l.dur {
		return 0, 0, false
	}
	t0, found := l.quorumSince(term, raft.ServerID(s.raftID), s.raft.GetConfiguration().Configuration().Servers, now)
	if !found {
		return 0, 0, false
	}
	remaining = l.dur - now.Sub(t0)
	if remaining <= 0 {
		return 0, 0, false
	}
	idx = s.raft.CommitIndex()
	// Still the leader of the same term after the index was taken: a
	// leader that stepped down may vote for another at once.
	if s.raft.State() != raft.Leader || s.raft.CurrentTerm() != term {
		return 0, 0, false
	}
	return idx, remaining, true
}

// LeaseRemaining returns how long this node's leader lease still holds
// (0: none; always 0 with RaftConfig.LeaseReads off). While it holds,
// linearizable reads here skip the quorum round.
func (s *Store) LeaseRemaining() time.Duration {
	_, d, _ := s.leaseRead()
	return d
}

// leaseDuration is the lease length c configures (0: lease reads off).
func (r RaftConfig) leaseDuration() time.Duration {
	if !r.LeaseReads {
		return 0
	}
	if r.LeaseDuration > 0 {
		return r.LeaseDuration
	}
	return r.HeartbeatTimeout * 4 / 5
}

// voteGuard sits between the transport's consumer channel and Raft for
// the node's lifetime (one goroutine hand-off per RPC), so it runs only
// with lease reads on. It refuses:
//   - RequestVote and RequestPreVote RPCs, except a leadership transfer's,
//     until a deadline: a node restarted with Raft state knows no leader,
//     so it would otherwise vote at once while the leader may still hold a
//     lease this node acknowledged before it stopped;
//   - TimeoutNow RPCs from any server but the leader this node follows.
//     hashicorp/raft obeys any TimeoutNow (it carries no term), and the
//     candidate it makes asks for votes that ignore stickiness: a late
//     TimeoutNow of an earlier leader's transfer would let a candidate
//     unseat a leader that holds a lease.
type voteGuard struct {
	until   time.Time // votes refused before it (zero: none)
	header  raft.RPCHeader
	refused func(rpc string) // counts a refused RPC (nil: none)
	// raft is this node's Raft once started (nil: no leader known).
	raft atomic.Pointer[raft.Raft]

	once sync.Once
	out  chan raft.RPC
	stop chan struct{}
	done sync.WaitGroup
}

func newVoteGuard(until time.Time, header raft.RPCHeader, refused func(rpc string)) *voteGuard {
	return &voteGuard{until: until, header: header, refused: refused, out: make(chan raft.RPC), stop: make(chan struct{})}
}

// Consumer implements raft.Transport: with a vote guard, the guard's
// channel.
func (t *safeTransport) Consumer() <-chan raft.RPC {
	if t.guard == nil {
		return t.NetworkTransport.Consumer()
	}
	g := t.guard
	g.once.Do(func() {
		g.done.Add(1)
		go g.run(t.NetworkTransport.Consumer())
	})
	return g.out
}

// closeGuard stops the guard's goroutine (after Raft stopped).
func (t *safeTransport) closeGuard() {
	if g := t.guard; g != nil {
		g.once.Do(func() {}) // never start it after this
		select {
		case <-g.stop:
		default:
			close(g.stop)
		}
		g.done.Wait()
	}
}

func (g *voteGuard) run(in <-chan raft.RPC) {
	defer g.done.Done()
	for {
		select {
		case rpc := <-in:
			if g.refuse(rpc) {
				continue
			}
			select {
			case g.out <- rpc:
			case <-g.stop:
				rpc.Respond(nil, raft.ErrTransportShutdown)
				return
			}
		case <-g.stop:
			return
		}
	}
}

// errStaleTimeoutNow answers a TimeoutNow from another server than the
// leader this node follows.
var errStaleTimeoutNow = errors.New("store: TimeoutNow refused: the sender is not the leader this node follows")

// refuse answers rpc with a refusal when it asks for a vote (not for a
// leadership transfer) before the deadline, or is a TimeoutNow from
// another server than this node's leader.
func (g *voteGuard) refuse(rpc raft.RPC) bool {
	var resp any
	var err error
	var kind string
	switch req := rpc.Command.(type) {
	case *raft.RequestVoteRequest:
		if req.LeadershipTransfer || !time.Now().Before(g.until) {
			return false
		}
		resp, kind = &raft.RequestVoteResponse{RPCHeader: g.header, Term: req.Term}, "vote"
	case *raft.RequestPreVoteRequest:
		if !time.Now().Before(g.until) {
			return false
		}
		resp, kind = &raft.RequestPreVoteResponse{RPCHeader: g.header, Term: req.Term}, "pre_vote"
	case *raft.TimeoutNowRequest:
		var leader raft.ServerID
		if r := g.raft.Load(); r != nil {
			_, leader = r.LeaderWithID()
		}
		if leader != "" && leader == raft.ServerID(req.ID) {
			return false
		}
		err, kind = errStaleTimeoutNow, "timeout_now"
	default:
		return false
	}
	if g.refused != nil {
		g.refused(kind)
	}
	rpc.Respond(resp, err)
	return true
}
