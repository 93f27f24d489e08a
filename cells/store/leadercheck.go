package store

import (
	"slices"
	"time"

	"github.com/hashicorp/raft"
)

// The leader check: hashicorp/raft's follower loop checks its last contact
// with the leader on a timer re-armed at a random 1–2× HeartbeatTimeout,
// so a dead leader is noticed 1–3× HeartbeatTimeout after its last
// heartbeat; and a follower that still knows a leader refuses (pre-)votes,
// so an election succeeds only once a second follower has noticed too:
// measured, 0.7–1.4 s at a 500 ms HeartbeatTimeout (docs/benchmarks.md).
//
// runLeaderCheck evaluates Raft's own condition (no contact for
// HeartbeatTimeout) every LeaderCheckInterval and, once it holds for
// HeartbeatTimeout + rank × ElectionStagger, wakes the follower loop so
// that Raft checks at once (Raft's only hook for it: ReloadConfig with a
// shorter HeartbeatTimeout fires the follower's timer now; the configured
// value is put back right after). Raft then decides as it always does.
// The rank (this node's position, by server id, among the voters other
// than the silent leader) staggers the followers: the first to stand is
// refused by the others (they still know the leader), the next one is
// granted by the first (a candidate knows no leader) and wins, with no
// split vote. A leader that lost contact with one follower only is not
// deposed: pre-vote needs a majority that also lost it.
//
// The check never starts an election Raft's timer could not have started
// (the same staleness condition); it removes the timer's random extra
// wait, which also absorbed some of a starved process's silences. So that
// the check does not turn its own node's starvation into elections, it
// acts only after HeartbeatTimeout/2 in which its own ticks came on time
// (a late tick means the heartbeats may be unread in this node's sockets).
func (s *Store) runLeaderCheck() {
	defer s.workers.Done()
	if !leaderCheckOn(s.cfg.Raft) {
		return
	}
	iv := s.cfg.Raft.LeaderCheckInterval
	t := time.NewTicker(iv)
	defer t.Stop()
	var (
		handled time.Time // the last contact already acted on
		rankFor time.Time // the last contact rank was computed for
		rank    int
		tick    = time.Now()
		starved time.Time // when this goroutine last ran late
	)
	for {
		select {
		case <-s.closing:
			return
		case <-t.C:
		}
		// A check that runs late means this process is starved: the
		// leader's heartbeats may be waiting unread in our own sockets.
		// Act only after HeartbeatTimeout/2 of timely checks (Raft's own
		// timer still runs meanwhile).
		now := time.Now()
		if now.Sub(tick) > 2*iv+10*time.Millisecond {
			starved = now
		}
		tick = now
		if now.Sub(starved) < s.cfg.Raft.HeartbeatTimeout/2 {
			continue
		}
		if s.raft.State() != raft.Follower {
			continue
		}
		_, leaderID := s.raft.LeaderWithID()
		if leaderID == "" {
			continue // no leader known: Raft's own timers run the election
		}
		last := s.raft.LastContact()
		if last.IsZero() || last.Equal(handled) {
			continue
		}
		silent := time.Since(last)
		if silent < s.cfg.Raft.HeartbeatTimeout {
			continue
		}
		if !rankFor.Equal(last) {
			r, ok := s.electionRank(leaderID)
			if !ok {
				handled = last // not a voter: Raft would not stand either
				continue
			}
			rank, rankFor = r, last
		}
		if silent < s.cfg.Raft.HeartbeatTimeout+time.Duration(rank)*s.cfg.Raft.ElectionStagger {
			continue
		}
		handled = last
		s.wakeFollower(leaderID, silent, rank)
	}
}

// leaderCheckOn reports whether the leader check runs: it needs room for a
// 1 ms shorter HeartbeatTimeout above Raft's 5 ms minimum.
func leaderCheckOn(r RaftConfig) bool {
	return r.LeaderCheckInterval > 0 && r.HeartbeatTimeout-time.Millisecond >= 5*time.Millisecond
}

// electionRank returns this node's position, by server id, among the
// voters of the latest configuration other than leader; false when this
// node is not one of them.
func (s *Store) electionRank(leader raft.ServerID) (int, bool) {
	f := s.raft.GetConfiguration()
	if f.Error() != nil {
		return 0, false
	}
	return rankAmong(f.Configuration().Servers, leader, raft.ServerID(s.raftID))
}

// rankAmong returns self's position, by server id, among the voters of
// servers other than leader; false when self is not one of them.
func rankAmong(servers []raft.Server, leader, self raft.ServerID) (int, bool) {
	var ids []raft.ServerID
	for _, srv := range servers {
		if srv.Suffrage == raft.Voter && srv.ID != leader {
			ids = append(ids, srv.ID)
		}
	}
	slices.Sort(ids)
	i := slices.Index(ids, self)
	return i, i >= 0
}

// PromptElections returns how many times this node's leader check stood it
// for election (Raft.LeaderCheckInterval; also the metric
// cellplane_store_prompt_elections_total).
func (s *Store) PromptElections() uint64 { return s.promptElections.Load() }

// wakeFollower makes Raft's follower loop check its leader's contact now:
// a ReloadConfig with a shorter HeartbeatTimeout fires the follower's
// heartbeat timer at once; the configured timeout is restored right after
// (the check compares against whichever it reads, and the leader has been
// silent for longer than both).
func (s *Store) wakeFollower(leader raft.ServerID, silent time.Duration, rank int) {
	rc := s.raft.ReloadableConfig()
	rc.HeartbeatTimeout = s.cfg.Raft.HeartbeatTimeout
	short := rc
	short.HeartbeatTimeout -= time.Millisecond
	if err := s.raft.ReloadConfig(short); err != nil {
		s.log.Warn("leader check: could not wake the follower loop", "err", err)
		return
	}
	s.metrics.promptElections.Inc()
	s.promptElections.Add(1)
	s.log.Warn("leader silent for the heartbeat timeout: standing for election", "leader", string(leader), "silent", silent, "rank", rank)
	if err := s.raft.ReloadConfig(rc); err != nil {
		s.log.Error("leader check: could not restore the heartbeat timeout", "err", err, "heartbeat_timeout", rc.HeartbeatTimeout)
	}
}
