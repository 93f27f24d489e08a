package faults

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/cellplane/cellplane/internal/faultnet"
	"github.com/cellplane/cellplane/internal/histcheck"
	"github.com/cellplane/cellplane/internal/pki"
	"github.com/cellplane/cellplane/internal/testutil"
	cellv1 "github.com/cellplane/cellplane/proto/cellplane/cell/v1"
)

// Scenarios of lost disks and membership (H1, docs/reliability.md "Raft
// amnesia (H1)"): a node whose data dir is wiped comes back as a new Raft
// incarnation (<node>.inc-<hex>), the leader removes its old incarnation,
// adds the new one as a non-voter and promotes it once caught up.

// raftID is node i's Raft server id (its own status).
func (h *harness) raftID(i int) string {
	h.t.Helper()
	ctx := testutil.Context(h.t, time.Minute)
	var id string
	testutil.Eventually(h.t, 30*time.Second, func() error {
		st, err := h.status(ctx, i, false)
		id = st.GetNode().GetRaftId()
		if err == nil && id == "" {
			err = errors.New("no raft id")
		}
		return err
	})
	return id
}

// wipe SIGKILLs node i (if it runs) and removes its data dir: a lost disk.
func (h *harness) wipe(i int) {
	h.t.Helper()
	if h.nodes[i].Running() {
		h.nodes[i].Kill()
	}
	if err := os.RemoveAll(h.nodeDir(i)); err != nil {
		h.fatalf("wipe %s: %v", h.nodes[i].ID(), err)
	}
	h.event("SIGKILL %s and remove its data dir", h.nodes[i].ID())
}

// waitMembers waits until the leader's configuration is exactly the
// three nodes as voters, node i under a Raft id other than old (a new
// incarnation), and returns node i's new id.
func (h *harness) waitMembers(i int, old string) string {
	h.t.Helper()
	ctx := testutil.Context(h.t, 2*time.Minute)
	var got string
	err := testutil.Poll(ctx, 90*time.Second, func() error {
		li := -1
		var st *cellv1.GetStatusResponse
		for j := range h.nodes {
			s, err := h.status(ctx, j, false)
			if err == nil && s.GetState() == "Leader" {
				li, st = j, s
			}
		}
		if li < 0 {
			return errors.New("no leader")
		}
		var desc []string
		voters, mine := 0, ""
		for _, m := range st.GetMembers() {
			id := m.GetNode().GetRaftId()
			desc = append(desc, fmt.Sprintf("%s(%s,%s)", m.GetNode().GetNodeId(), id, m.GetSuffrage()))
			if id == old {
				return fmt.Errorf("the old incarnation %s is still a member: %v", old, desc)
			}
			if m.GetSuffrage() == cellv1.Suffrage_SUFFRAGE_VOTER {
				voters++
			}
			if m.GetNode().GetNodeId() == h.nodes[i].ID() && m.GetSuffrage() == cellv1.Suffrage_SUFFRAGE_VOTER {
				mine = id
			}
		}
		if len(st.GetMembers()) != 3 || voters != 3 || mine == "" {
			return fmt.Errorf("members %v, want 3 voters with %s's new incarnation", desc, h.nodes[i].ID())
		}
		got = mine
		return nil
	})
	if err != nil {
		h.fatalf("membership: %v", err)
	}
	if !strings.HasPrefix(got, h.nodes[i].ID()+".inc-") {
		h.errorf("H1: %s came back as Raft id %q, want a new incarnation %s.inc-…", h.nodes[i].ID(), got, h.nodes[i].ID())
	}
	h.event("%s rejoined as %s (was %s), promoted to voter; the old incarnation is gone", h.nodes[i].ID(), got, old)
	return got
}

// TestS2WipedFollowerRejoins: SIGKILL a follower under load, remove its
// data dir, restart it: it rejoins as a new incarnation, the old one is
// removed, the new one promoted to voter; every invariant holds.
func TestS2WipedFollowerRejoins(t *testing.T) {
	scenario(t, true, func(h *harness, _ *load) {
		fi := others(h.leader())[0]
		old := h.raftID(fi)
		h.wipe(fi)
		h.wait(h.phase / 2)
		restart(h, fi)
		h.waitMembers(fi, old)
	})
}

// TestH1AmnesiaMultiProcess is H1's repro with processes: follower a
// acknowledges W with the leader (the other follower b is down), a loses
// its disk and comes back empty, the leader dies, b returns: a and b are
// two live nodes of three, but a is a new incarnation and no member, so
// no leader is elected from its empty state (the old code elected b,
// without W). When the leader returns, W is there, a rejoins as a voter.
func TestH1AmnesiaMultiProcess(t *testing.T) {
	scenario(t, false, func(h *harness, l *load) {
		li := h.leader()
		a, b := others(li)[0], others(li)[1]
		oldA := h.raftID(a)
		h.nodes[b].Kill()
		h.event("SIGKILL follower %s: writes are acknowledged by %s and %s", h.nodes[b].ID(), h.nodes[li].ID(), h.nodes[a].ID())
		ctx := testutil.Context(h.t, 3*time.Minute)
		w := "W-" + fmt.Sprint(h.seed)
		call := h.hist.Now()
		var seq uint64
		testutil.Eventually(h.t, 30*time.Second, func() error {
			resp, err := h.data.Append(h.out(ctx), appendReq(contexts[0], w))
			seq = resp.GetFirstSeq()
			return err
		})
		h.hist.Append(800, contexts[0], w, call, h.hist.Now(), seq, histcheck.OK)
		h.event("W=%s acknowledged at seq %d", w, seq)
		h.wipe(a)
		restart(h, a)
		h.nodes[li].Kill()
		h.event("SIGKILL leader %s", h.nodes[li].ID())
		restart(h, b)
		from := time.Now()
		h.wait(max(2*h.phase, 8*time.Second)) // many election timeouts, several attempt timeouts
		for _, j := range []int{a, b} {
			st, err := h.status(ctx, j, false)
			if err != nil {
				h.errorf("H1: status of %s: %v", h.nodes[j].ID(), err)
				continue
			}
			if st.GetState() == "Leader" || st.GetLeaderId() != "" {
				h.errorf("H1: %s reports state %s, leader %q: a leader without the old leader (W would be lost)", h.nodes[j].ID(), st.GetState(), st.GetLeaderId())
			}
			if j == a && st.GetMember() {
				h.errorf("H1: the empty %s is a member", h.nodes[a].ID())
			}
		}
		h.assertRefused(l, from.Add(h.settle()), time.Now(), "H1")
		restart(h, li)
		h.waitMembers(a, oldA)
		final := h.finalState()[contexts[0]]
		if len(final) < int(seq) || final[seq-1] != w {
			h.errorf("H1: W=%s (seq %d) is lost", w, seq)
		}
	})
}

// assertRefused: no write was acknowledged in (from, to), some call
// failed then, and every failure was transient.
func (h *harness) assertRefused(l *load, from, to time.Time, what string) {
	h.t.Helper()
	acked := l.ackedBetween(from, to)
	if acked > 0 {
		h.errorf("%s: %d writes acknowledged while the cell must refuse", what, acked)
	}
	l.mu.Lock()
	var refused int
	for _, e := range l.attemptErrs {
		if e.at.After(from) && e.at.Before(to) {
			refused++
			if !transient(e.err) {
				h.errorf("%s: a call failed with a non-transient error: %v", what, e.err)
			}
		}
	}
	l.mu.Unlock()
	if refused == 0 {
		h.errorf("%s: no call failed while the cell must refuse", what)
	}
	h.event("%s: %d calls refused, %d writes acknowledged while the cell must refuse", what, refused, acked)
}

// TestS16ReplaceUnderFaults: a follower is replaced (its disk wiped, it
// rejoins as a new incarnation, the old one removed, the new one added
// and promoted) while every Raft link is slow (50–100 ms each way) and
// the other follower cannot reach it (one way), under load. Invariants
// as always, and no election storm.
func TestS16ReplaceUnderFaults(t *testing.T) {
	scenario(t, false, func(h *harness, _ *load) {
		before := h.mon.maxTerm()
		li := h.leader()
		a, b := others(li)[0], others(li)[1]
		old := h.raftID(a)
		h.eachLink(func(p *faultnet.Proxy) { p.Delay(faultnet.Both, 50*time.Millisecond, 50*time.Millisecond) })
		h.links[b][a].Blackhole(faultnet.Forward)
		h.event("latency 75 ± 25 ms per direction on every link; %s's requests to %s blackholed", h.nodes[b].ID(), h.nodes[a].ID())
		h.wait(h.phase / 2)
		h.wipe(a)
		h.wait(h.phase / 2)
		restart(h, a)
		h.waitMembers(a, old)
		h.healAll()
		h.leader()
		if elections := h.mon.maxTerm() - before; elections > maxElections {
			h.errorf("S16: election storm: %d elections across the replacement", elections)
		} else {
			h.event("S16: %d elections (terms %d→%d)", elections, before, h.mon.maxTerm())
		}
	})
}

// TestS3QuorumDiskLossUnsafeRecover: two of three nodes lose their disks.
// They come back as new incarnations, not members: the cell has no
// leader, refuses writes with transient errors, and no node's /readyz is
// ready. Then the operator's runbook: stop every node, run `cellplane
// cell unsafe-recover` (a real child command) on the survivor's data
// dir, start it, start the others with empty dirs: the survivor leads
// with every acknowledged write and the others rejoin as new
// incarnations.
func TestS3QuorumDiskLossUnsafeRecover(t *testing.T) {
	scenario(t, false, func(h *harness, l *load) {
		li := h.leader()
		a, b := others(li)[0], others(li)[1]
		oldA, oldB := h.raftID(a), h.raftID(b)
		h.wipe(a)
		h.wipe(b)
		restart(h, a)
		restart(h, b)
		from := time.Now()
		h.wait(max(2*h.phase, 8*time.Second)) // several attempt timeouts
		ctx := testutil.Context(h.t, 3*time.Minute)
		for j := range h.nodes {
			st, err := h.status(ctx, j, false)
			if err != nil {
				h.errorf("S3: status of %s: %v", h.nodes[j].ID(), err)
				continue
			}
			if st.GetState() == "Leader" || st.GetLeaderId() != "" {
				h.errorf("S3: %s reports state %s, leader %q after losing the quorum's disks", h.nodes[j].ID(), st.GetState(), st.GetLeaderId())
			}
			if j != li && st.GetMember() {
				h.errorf("S3: the empty %s is a member", h.nodes[j].ID())
			}
			if code := h.readyz(ctx, j); code == http.StatusOK {
				h.errorf("S3: %s's /readyz is ready without a leader", h.nodes[j].ID())
			}
		}
		h.assertRefused(l, from.Add(h.settle()), time.Now(), "S3")
		// The runbook.
		for j := range h.nodes {
			h.nodes[j].Stop()
		}
		h.event("every node stopped")
		out, err := exec.CommandContext(ctx, binary, "cell", "unsafe-recover", "--id", h.nodes[li].ID(), "--data-dir", h.nodeDir(li)).CombinedOutput()
		if err == nil {
			h.errorf("S3: unsafe-recover ran without its confirmation flag: %s", out)
		}
		out, err = exec.CommandContext(ctx, binary, "cell", "unsafe-recover", "--id", h.nodes[li].ID(), "--data-dir", h.nodeDir(li), "--i-accept-losing-acknowledged-writes").CombinedOutput()
		if err != nil || !strings.Contains(string(out), "recovered") {
			h.fatalf("S3: unsafe-recover: %v: %s", err, out)
		}
		h.event("unsafe-recover on %s: %s", h.nodes[li].ID(), strings.TrimSpace(string(out)))
		for _, j := range []int{a, b} {
			if err := os.RemoveAll(h.nodeDir(j)); err != nil {
				h.fatalf("S3: %v", err)
			}
		}
		restart(h, li)
		restart(h, a)
		restart(h, b)
		h.waitMembers(a, oldA)
		h.waitMembers(b, oldB)
	})
}

// readyz is node i's /readyz status code (0: no answer), asked as the
// admin operator over mutual TLS.
func (h *harness) readyz(ctx context.Context, i int) int {
	src, err := pki.NewSource(pki.DirConfig(h.p.CertsDir(), pki.OperatorIdentity("faults", pki.RoleAdmin, "admin").FileName()))
	if err != nil {
		h.fatalf("readyz: %v", err)
	}
	tr := &http.Transport{TLSClientConfig: src.ClientTLSConfig(pki.ExpectKinds(pki.KindNode))}
	defer tr.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+h.nodes[i].Info().HTTP+"/readyz", nil)
	if err != nil {
		h.fatalf("readyz: %v", err)
	}
	resp, err := (&http.Client{Transport: tr, Timeout: 2 * time.Second}).Do(req)
	if err != nil {
		return 0
	}
	_ = resp.Body.Close()
	return resp.StatusCode
}

// TestS16CrashBetweenAddAndPromotion: a wiped follower restarts while
// the leader's Raft link to it is slow (300 ms each way): the leader adds
// its new incarnation as a non-voter, which catches up slowly; once part
// of the log reached it, the link is blackholed (it cannot finish). It is
// SIGKILLed there — between its add and its promotion, with part of the
// log on its disk — the link heals, it restarts on its data: it finishes
// the join under the same incarnation and becomes a voter, the old
// incarnation gone; invariants as always.
func TestS16CrashBetweenAddAndPromotion(t *testing.T) {
	scenario(t, false, func(h *harness, _ *load) {
		li := h.leader()
		a := others(li)[0]
		old := h.raftID(a)
		h.wipe(a)
		h.links[li][a].Delay(faultnet.Both, 300*time.Millisecond, 0)
		h.event("%s's Raft link to %s: 300 ms each way", h.nodes[li].ID(), h.nodes[a].ID())
		restart(h, a)
		ctx := testutil.Context(h.t, 2*time.Minute)
		var added string
		var partial uint64
		testutil.Eventually(h.t, time.Minute, func() error {
			st, err := h.status(ctx, li, false)
			if err != nil {
				return err
			}
			added = ""
			for _, m := range st.GetMembers() {
				if m.GetNode().GetNodeId() == h.nodes[a].ID() && m.GetNode().GetRaftId() != old {
					if m.GetSuffrage() != cellv1.Suffrage_SUFFRAGE_NONVOTER {
						h.fatalf("S16: %s was promoted before the scenario could crash it", m.GetNode().GetRaftId())
					}
					added = m.GetNode().GetRaftId()
				}
			}
			if added == "" {
				return errors.New("the new incarnation is not added yet")
			}
			ast, err := h.status(ctx, a, false)
			if err != nil {
				return err
			}
			if partial = ast.GetLastLogIndex(); partial == 0 {
				return fmt.Errorf("%s holds no log yet", added)
			}
			h.links[li][a].Blackhole(faultnet.Forward) // no more of the log
			return nil
		})
		st, err := h.status(ctx, li, false)
		if err != nil {
			h.fatalf("S16: %v", err)
		}
		for _, m := range st.GetMembers() {
			if m.GetNode().GetRaftId() == added && m.GetSuffrage() != cellv1.Suffrage_SUFFRAGE_NONVOTER {
				h.fatalf("S16: %s was promoted before the scenario could crash it", added)
			}
		}
		h.nodes[a].Kill()
		h.event("SIGKILL %s (the non-voter %s, log up to %d) between its add and its promotion", h.nodes[a].ID(), added, partial)
		h.healAll()
		restart(h, a)
		if got := h.waitMembers(a, old); got != added {
			h.errorf("S16: %s was added as %s but became a voter as %s", h.nodes[a].ID(), added, got)
		}
	})
}
