package bench

import (
	"testing"
	"time"

	cellv1 "github.com/cellplane/cellplane/proto/cellplane/cell/v1"
)

// The recorder measures the lag of the tenant's events proposed inside
// its window only, and keeps the highest applied tseq of every batch.
func TestLagRecorder(t *testing.T) {
	t0 := time.Unix(1000, 0)
	ev := func(tseq uint64, ms int) *cellv1.ChangeEvent {
		return &cellv1.ChangeEvent{Tseq: tseq, TimeUnixNano: t0.Add(time.Duration(ms) * time.Millisecond).UnixNano()}
	}
	r := newLagRecorder("acme")
	h := r.arm(t0.Add(100*time.Millisecond), t0.Add(200*time.Millisecond))
	r.onApplied("acme", []*cellv1.ChangeEvent{ev(1, 50), ev(2, 100), ev(3, 150)}, t0.Add(170*time.Millisecond))
	r.onApplied("other", []*cellv1.ChangeEvent{ev(9, 150)}, t0.Add(900*time.Millisecond))
	r.onApplied("acme", []*cellv1.ChangeEvent{ev(4, 199), ev(5, 200)}, t0.Add(260*time.Millisecond))
	r.onApplied("acme", nil, t0)
	if h.Count() != 3 {
		t.Fatalf("%d lags recorded, want 3 (tseqs 2, 3, 4)", h.Count())
	}
	if got := h.Max(); got != 70*time.Millisecond {
		t.Errorf("max lag %v, want 70ms (proposed at 100, applied at 170)", got)
	}
	if got := h.Min(); got != 20*time.Millisecond {
		t.Errorf("min lag %v, want 20ms", got)
	}
	if a := r.applied.Load(); a != 5 {
		t.Errorf("applied %d, want 5 (the other tenant's events do not count)", a)
	}
	if b, per := r.batchStats(); b != 2 || per != 2.5 {
		t.Errorf("batches %d of %.1f, want 2 of 2.5", b, per)
	}
	// A new window starts afresh.
	if h2 := r.arm(t0, t0); h2 == h || h2.Count() != 0 {
		t.Error("arm did not start a new histogram")
	}
}

func TestReplicationRatios(t *testing.T) {
	res := &ReplicationResults{DelayMs: 50, Phases: []LagPhase{
		{DelayMs: 0, Events: 10, Lag: Latency{P99: 12.5}, CommitEvents: 10, LagFromCommit: Latency{P99: 2.5}},
		{DelayMs: 50, Events: 10, Lag: Latency{P99: 80.25}, CommitEvents: 10, LagFromCommit: Latency{P99: 60.5}},
	}}
	got := replicationRatios(res)
	want := map[string]float64{
		RatioLagP99MinusDelay: 10.5, RatioLagP99NoDelay: 2.5,
		RatioLagFromProposalP99MinusDelay: 30.25, RatioLagFromProposalP99NoDelay: 12.5,
	}
	if len(got) != len(want) {
		t.Errorf("ratios %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %v, want %v", k, got[k], v)
		}
	}
	res.Phases[1].Events, res.Phases[1].CommitEvents = 0, 0
	if _, ok := replicationRatios(res)[RatioLagP99MinusDelay]; ok {
		t.Error("a phase without events still gave a ratio")
	}
}

// The lag from commit counts each event of the window from its write's
// acknowledgement; an event applied before its ack was seen counts 0, and
// one without an ack (or outside the window) is not counted.
func TestLagRecorderFromCommit(t *testing.T) {
	t0 := time.Unix(1000, 0)
	ev := func(tseq uint64, ms int, id string) *cellv1.ChangeEvent {
		return &cellv1.ChangeEvent{Tseq: tseq, TimeUnixNano: t0.Add(time.Duration(ms) * time.Millisecond).UnixNano(),
			Command: &cellv1.Command{RequestId: id}}
	}
	r := newLagRecorder("acme")
	r.arm(t0.Add(100*time.Millisecond), t0.Add(200*time.Millisecond))
	r.ack("a", t0.Add(130*time.Millisecond))
	r.ack("b", t0.Add(180*time.Millisecond))
	r.ack("out", t0.Add(60*time.Millisecond))
	r.onApplied("acme", []*cellv1.ChangeEvent{ev(1, 50, "out"), ev(2, 110, "a"), ev(3, 120, "b"), ev(4, 150, "no-ack")}, t0.Add(170*time.Millisecond))
	h, early := r.commitLags()
	if h.Count() != 2 || early != 1 {
		t.Fatalf("%d lags, %d early; want 2 (a, b), 1 (b)", h.Count(), early)
	}
	if h.Max() != 40*time.Millisecond || h.Min() != 0 {
		t.Errorf("lags %v…%v, want 0…40ms", h.Min(), h.Max())
	}
	// A new window forgets the acks and applies of the last one.
	r.arm(t0, t0)
	if h, _ := r.commitLags(); h.Count() != 0 {
		t.Errorf("%d lags after arm, want 0", h.Count())
	}
}
