package faults

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/cellplane/cellplane/internal/cperr"
	"github.com/cellplane/cellplane/internal/faultnet"
	"github.com/cellplane/cellplane/internal/histcheck"
	"github.com/cellplane/cellplane/internal/pki"
	"github.com/cellplane/cellplane/internal/retry"
	"github.com/cellplane/cellplane/internal/rpcerr"
	"github.com/cellplane/cellplane/internal/tenantmd"
	"github.com/cellplane/cellplane/internal/testutil"
	cellv1 "github.com/cellplane/cellplane/proto/cellplane/cell/v1"
	contextv1 "github.com/cellplane/cellplane/proto/cellplane/context/v1"
)

// Every scenario (see scenario): a 3-node cell of child processes,
// clients through the router for the whole run (appends, linearizable
// reads, CAS puts, gets), a phase, the fault and its heal, a phase of
// recovery, then every invariant (harness.check).

// TestS1KillLeaderUnderLoad: SIGKILL the leader under load, restart it
// on its data.
func TestS1KillLeaderUnderLoad(t *testing.T) {
	scenario(t, true, func(h *harness, _ *load) {
		li := h.leader()
		h.nodes[li].Kill()
		h.event("SIGKILL leader %s", h.nodes[li].ID())
		h.wait(h.phase)
		restart(h, li)
	})
}

func restart(h *harness, i int) {
	h.t.Helper()
	if err := h.nodes[i].Restart(testutil.Context(h.t, time.Minute)); err != nil {
		h.fatalf("restart %s: %v", h.nodes[i].ID(), err)
	}
	h.event("restart %s", h.nodes[i].ID())
}

// TestS2KillFollowerUnderLoad: SIGKILL a follower under load, restart it
// on its data. (Restarting it with an empty data dir, as a new member, is
// the amnesia work's scenario: it plugs in between Kill and restart,
// removing harness.nodeDir.)
func TestS2KillFollowerUnderLoad(t *testing.T) {
	scenario(t, false, func(h *harness, _ *load) {
		fi := others(h.leader())[0]
		h.nodes[fi].Kill()
		h.event("SIGKILL follower %s", h.nodes[fi].ID())
		h.wait(h.phase)
		restart(h, fi)
	})
}

// TestS3QuorumLoss: SIGKILL two of three nodes under load. While the
// quorum is gone no write is acknowledged and every failure is transient
// (UNAVAILABLE-class, or the attempt's own deadline); after both restart,
// every acknowledged write is there.
func TestS3QuorumLoss(t *testing.T) {
	scenario(t, false, func(h *harness, l *load) {
		li := h.leader()
		fi := others(li)[0]
		h.nodes[li].Kill()
		_, down := h.nodes[fi].Kill()
		h.event("SIGKILL leader %s and follower %s: no quorum", h.nodes[li].ID(), h.nodes[fi].ID())
		h.wait(max(2*h.phase, 8*time.Second)) // several attempt timeouts
		back := time.Now()
		// The survivor's lease and the router's calls in flight settle
		// within a second or so of the kill; from then nothing may be acked.
		settled := down.Add(h.settle())
		if n := l.ackedBetween(settled, back); n > 0 {
			h.errorf("S3: %d writes acknowledged without a quorum", n)
		}
		l.mu.Lock()
		var refused int
		for _, a := range l.attemptErrs {
			if a.at.After(settled) && a.at.Before(back) {
				refused++
				if !transient(a.err) {
					h.errorf("S3: a call failed without a quorum with a non-transient error: %v", a.err)
				}
			}
		}
		l.mu.Unlock()
		if refused == 0 {
			h.errorf("S3: no call failed while the quorum was lost")
		}
		h.event("S3: %d calls failed without a quorum, all transient; none acknowledged", refused)
		restart(h, li)
		restart(h, fi)
		h.wait(h.phase)
	})
}

// settle is how long after a fault acknowledgements already in flight
// may still arrive: the leader lease (500 ms), the authority lease's
// margin and a slow 2-core machine.
func (h *harness) settle() time.Duration { return 3 * time.Second }

// TestS4FollowerPartitioned: cut a follower's Raft links both ways under
// load, heal.
func TestS4FollowerPartitioned(t *testing.T) {
	scenario(t, false, func(h *harness, _ *load) {
		fi := others(h.leader())[0]
		h.isolate(fi)
		h.wait(2 * h.phase)
		h.healAll()
	})
}

// TestS5LeaderIsolated: the leader loses its Raft links while clients
// still reach it directly. Once it must have stepped down it acknowledges
// no write and serves no linearizable read that it would have to answer
// itself (no-forward calls); its direct calls that forward go in the
// history like the router's.
func TestS5LeaderIsolated(t *testing.T) {
	scenario(t, true, func(h *harness, _ *load) {
		li := h.leader()
		h.isolate(li)
		isolated := time.Now()
		// Clients of the old leader itself, with and without forwarding.
		direct := h.startLoadOn(2, h.direct[li])
		probes := probeNoForward(h, li, isolated.Add(h.settle()), 2*h.phase)
		h.healAll()
		direct.stop()
		h.checkMore(direct)
		if probes.acked > 0 {
			h.errorf("S5: the isolated old leader acknowledged %d no-forward writes after stepping down", probes.acked)
		}
		if probes.reads > 0 {
			h.errorf("S5: the isolated old leader served %d linearizable no-forward reads after stepping down", probes.reads)
		}
		h.event("S5: %d no-forward probes at the isolated node", probes.sent)
	})
}

// checkMore checks a second load's history (its own clients and values)
// on the converged cell.
func (h *harness) checkMore(l *load) {
	h.t.Helper()
	for _, err := range l.errors() {
		h.errorf("a direct client call failed outside the error contract: %v", err)
	}
}

type probeResult struct{ sent, acked, reads int }

// probeNoForward sends no-forward appends and linearizable reads to node
// i for d, counting those it answered after from.
func probeNoForward(h *harness, i int, from time.Time, d time.Duration) probeResult {
	var r probeResult
	ctx := testutil.Context(h.t, d+time.Minute)
	end := time.Now().Add(d)
	for n := 0; time.Now().Before(end); n++ {
		cctx, cancel := context.WithTimeout(tenantmd.WithNoForward(h.out(ctx)), time.Second)
		v := fmt.Sprintf("probe-%d", n)
		_, aerr := h.direct[i].Append(cctx, &contextv1.AppendRequest{ContextId: probeContext, RequestId: v,
			Entries: []*contextv1.Entry{{Role: "user", Content: &contextv1.Entry_Text{Text: v}}}})
		_, rerr := h.direct[i].Read(cctx, &contextv1.ReadRequest{ContextId: contexts[0]})
		cancel()
		after := time.Now().After(from)
		r.sent++
		if after && aerr == nil {
			r.acked++
		}
		if after && rerr == nil {
			r.reads++
		}
		if aerr != nil && status.Code(aerr) == codes.Unknown {
			h.errorf("probe: an unknown error: %v", aerr)
		}
		_ = retry.Sleep(ctx, 100*time.Millisecond) // the probing period
	}
	return r
}

// TestS6AsymmetricPartition: the leader receives nothing from its peers
// while what it sends arrives, then the reverse. Safety as always, and no
// election storm: the term grows by a bounded number of elections.
func TestS6AsymmetricPartition(t *testing.T) {
	scenario(t, false, func(h *harness, _ *load) {
		for _, deaf := range []bool{true, false} {
			before := h.mon.maxTerm()
			li := h.leader()
			h.oneWay(li, deaf)
			h.wait(2 * h.phase)
			h.healAll()
			h.wait(h.phase)
			h.leader()
			elections := h.mon.maxTerm() - before
			h.event("deaf=%v: %d elections (terms %d→%d)", deaf, elections, before, h.mon.maxTerm())
			if elections > maxElections {
				h.errorf("S6: election storm: %d elections across one asymmetric partition (deaf=%v)", elections, deaf)
			}
		}
	})
}

// maxElections bounds the elections one partition may cause (pre-vote
// keeps a node that cannot win from raising the term).
const maxElections = 8

// TestS7Flapping: links clog one by one and unclog in random order, on a
// seeded schedule, for two phases.
func TestS7Flapping(t *testing.T) {
	scenario(t, false, func(h *harness, _ *load) {
		end := time.Now().Add(2 * h.phase)
		var clogged []*faultnet.Proxy
		var all []*faultnet.Proxy
		h.eachLink(func(p *faultnet.Proxy) { all = append(all, p) })
		for time.Now().Before(end) {
			if len(clogged) < 3 && (len(clogged) == 0 || h.rng.IntN(2) == 0) {
				p := all[h.rng.IntN(len(all))]
				p.Cut()
				clogged = append(clogged, p)
			} else {
				k := h.rng.IntN(len(clogged))
				clogged[k].Heal()
				clogged = append(clogged[:k], clogged[k+1:]...)
			}
			h.wait(time.Duration(100+h.rng.IntN(600)) * time.Millisecond)
		}
		h.event("flapping ended")
		h.healAll()
	})
}

// TestS8SlowThenLossy: every Raft link gets 75 ± 50 ms each way, then 5 %
// of the chunks are lost (each loss resets its connection).
func TestS8SlowThenLossy(t *testing.T) {
	scenario(t, false, func(h *harness, _ *load) {
		h.eachLink(func(p *faultnet.Proxy) { p.Delay(faultnet.Both, 50*time.Millisecond, 50*time.Millisecond) })
		h.event("latency 75 ± 25 ms per direction on every link")
		h.wait(2 * h.phase)
		h.eachLink(func(p *faultnet.Proxy) { p.Drop(faultnet.Both, 0.05) })
		h.event("plus 5 %% chunk loss")
		h.wait(2 * h.phase)
		h.healAll()
	})
}

// TestS9PausedLeader: SIGSTOP the leader for longer than the election
// timeout, then SIGCONT. The zombie must not acknowledge: no-forward
// writes sent to it as it wakes are refused or time out unless it leads
// again, and the whole history stays linearizable.
func TestS9PausedLeader(t *testing.T) {
	scenario(t, true, func(h *harness, _ *load) {
		li := h.leader()
		if err := h.nodes[li].Pause(); err != nil {
			h.fatalf("pause: %v", err)
		}
		h.event("SIGSTOP leader %s", h.nodes[li].ID())
		// Calls to the zombie, queued while it sleeps.
		zombie := h.startLoadOn(2, h.direct[li])
		h.wait(max(2*h.phase, 4*time.Second))
		nl := h.leader()
		if nl == li {
			h.fatalf("the paused node still leads")
		}
		if err := h.nodes[li].Resume(); err != nil {
			h.fatalf("resume: %v", err)
		}
		h.event("SIGCONT %s (new leader %s)", h.nodes[li].ID(), h.nodes[nl].ID())
		probes := probeNoForward(h, li, time.Now(), h.phase)
		if probes.acked > 0 && h.leader() != li {
			h.errorf("S9: the woken zombie acknowledged %d no-forward writes without leading", probes.acked)
		}
		zombie.stop()
		h.checkMore(zombie)
	})
}

// TestS11AmbiguousAck: the responses of a direct client's writes are
// dropped (the write is applied, the client times out), then the client
// retries each with the same request id: every write is applied once, and
// the retry returns the first attempt's seq.
func TestS11AmbiguousAck(t *testing.T) {
	scenario(t, true, func(h *harness, _ *load) {
		li := h.leader()
		px := faultnet.Start(h.t, h.nodes[li].Info().GRPC)
		c := contextv1.NewContextServiceClient(h.dialVia(px.Addr()))
		ctx := testutil.Context(h.t, 2*time.Minute)
		// A warm connection first, then the answers are lost.
		if _, err := readAll(h.out(ctx), c, "c0"); err != nil {
			h.fatalf("read through the proxy: %v", err)
		}
		px.Blackhole(faultnet.Backward)
		h.event("responses from %s to the client dropped", h.nodes[li].ID())
		const writes = 5
		calls := make([]time.Time, writes)
		for k := range writes {
			calls[k] = h.hist.Now()
			cctx, cancel := context.WithTimeout(h.out(ctx), 2*time.Second)
			_, err := c.Append(cctx, appendReq("c0", fmt.Sprintf("amb-%d", k)))
			cancel()
			if status.Code(err) != codes.DeadlineExceeded && status.Code(err) != codes.Unavailable {
				h.fatalf("write %d with its answer dropped: %v, want a timeout", k, err)
			}
		}
		px.Clear()
		h.event("responses flow again; retrying each write with its request id through the router")
		seqs := map[uint64]bool{}
		for k := range writes {
			v := fmt.Sprintf("amb-%d", k)
			var seq uint64
			testutil.Eventually(h.t, 30*time.Second, func() error {
				resp, err := h.data.Append(h.out(ctx), appendReq("c0", v))
				seq = resp.GetFirstSeq()
				return err
			})
			// One operation from the first attempt to the answer.
			h.hist.Append(900, "c0", v, calls[k], h.hist.Now(), seq, histcheck.OK)
			if seqs[seq] {
				h.errorf("S11: two retried writes got seq %d", seq)
			}
			seqs[seq] = true
		}
		final := h.finalState()["c0"]
		if got := strings.Count(strings.Join(final, ","), "amb-"); got != writes {
			h.errorf("S11: %d of %d retried writes in the context, want each exactly once", got, writes)
		}
	})
}

func appendReq(c, v string) *contextv1.AppendRequest {
	return &contextv1.AppendRequest{ContextId: c, RequestId: v, Entries: []*contextv1.Entry{{Role: "user", Content: &contextv1.Entry_Text{Text: v}}}}
}

// dialVia connects to a node's gRPC port at addr (a proxy) as the router.
func (h *harness) dialVia(addr string) *grpc.ClientConn {
	return h.dialAs(addr, pki.RouterIdentity("faults", "faults-router"))
}

// dialAs connects to a node's gRPC port at addr with the certificate of
// id (the platform wrote it in its certs directory).
func (h *harness) dialAs(addr string, id pki.Identity) *grpc.ClientConn {
	h.t.Helper()
	src, err := pki.NewSource(pki.DirConfig(h.p.CertsDir(), id.FileName()))
	if err != nil {
		h.t.Fatal(err)
	}
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(pki.ClientCredentials(src, pki.ExpectKinds(pki.KindNode))))
	if err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(func() { _ = cc.Close() })
	return cc
}

// TestS15SnapshotInstallUnderLoad: a follower is cut off until the leader
// has compacted its log past the follower's last entry, then healed: it
// catches up by installing a snapshot, under load, and converges.
func TestS15SnapshotInstallUnderLoad(t *testing.T) {
	scenario(t, false, func(h *harness, _ *load) {
		t := h.t
		li := h.leader()
		fi := others(li)[0]
		h.isolate(fi)
		ctx := testutil.Context(t, 3*time.Minute)
		fst, err := h.status(ctx, fi, false)
		if err != nil {
			h.fatalf("status of %s: %v", h.nodes[fi].ID(), err)
		}
		behind := fst.GetLastLogIndex()
		testutil.Eventually(t, 2*time.Minute, func() error {
			st, err := h.status(ctx, li, false)
			if err != nil {
				return err
			}
			if st.GetFirstLogIndex() <= behind+1 {
				return fmt.Errorf("the leader's log starts at %d, the follower has up to %d", st.GetFirstLogIndex(), behind)
			}
			return nil
		})
		h.event("the leader compacted its log past %s's last entry %d", h.nodes[fi].ID(), behind)
		h.healAll()
		testutil.Eventually(t, time.Minute, func() error {
			st, err := h.status(ctx, fi, false)
			if err != nil {
				return err
			}
			if st.GetFirstLogIndex() <= behind {
				return fmt.Errorf("%s's log still starts at %d", h.nodes[fi].ID(), st.GetFirstLogIndex())
			}
			return nil
		})
		h.event("%s installed a snapshot", h.nodes[fi].ID())
	}, withNodeArgs("--raft-snapshot-interval", "200ms", "--raft-snapshot-threshold", "64", "--raft-trailing-logs", "16"))
}

// TestS17TransferUnderLoad: leadership moves to another member (through
// CellService.TransferLeadership) several times under load.
func TestS17TransferUnderLoad(t *testing.T) {
	scenario(t, false, func(h *harness, _ *load) {
		ctx := testutil.Context(h.t, 2*time.Minute)
		for range 3 {
			li := h.leader()
			// Only the control plane may move leadership: its certificate.
			cp := h.dialAs(h.nodes[li].Info().GRPC, pki.ControlPlaneIdentity("faults", "faults-cp"))
			_, err := cellv1.NewCellServiceClient(cp).TransferLeadership(ctx, &cellv1.TransferLeadershipRequest{})
			if err != nil && !errors.Is(rpcerr.FromStatus(err), cperr.ErrCellUnavailable) {
				h.fatalf("transfer: %v", err)
			}
			h.event("transfer from %s: %v", h.nodes[li].ID(), err)
			h.wait(h.phase / 2)
		}
	})
}
