package bench

import (
	"testing"
)

func TestFillChunks(t *testing.T) {
	for _, tc := range []struct {
		size         int64
		n, entrySize int
	}{
		{0, 0, 0},
		{1000, 1, 1000},
		{1 << 20, 4, 256 << 10},
		{64 << 20, 256, 256 << 10},
		{(256 << 10) + 1, 2, 256 << 10},
	} {
		if n, e := fillChunks(tc.size); n != tc.n || e != tc.entrySize {
			t.Errorf("fillChunks(%d) = %d × %d, want %d × %d", tc.size, n, e, tc.n, tc.entrySize)
		}
	}
}

func TestMoveRatios(t *testing.T) {
	res := &MoveResults{
		Baseline: Result{Latency: Latency{P99: 10}},
		Small:    MoveSet{Moves: make([]Move, 20), Pause: Latency{P99: 250}, FenceToFlip: Latency{P99: 220}, FailedWrites: 1},
		Big:      &MoveSet{Moves: make([]Move, 2), Pause: Latency{P99: 900}, FailedWrites: 2},
	}
	got := moveRatios(res)
	want := map[string]float64{
		RatioMovePauseP99: 250, RatioMovePauseP99Big: 900, RatioMoveFailedWrites: 3,
		RatioMoveFenceFlipP99: 220, RatioMovePauseVsWrite: 25,
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %v, want %v (all %v)", k, got[k], v, got)
		}
	}
	if len(got) != len(want) {
		t.Errorf("ratios %v", got)
	}
	if _, ok := moveRatios(&MoveResults{})[RatioMoveFailedWrites]; ok {
		t.Error("no moves, yet a failed-requests ratio")
	}
}

func TestFailoverRatios(t *testing.T) {
	res := &FailoverResults{
		Baseline:        Result{Latency: Latency{P99: 20}},
		Kills:           make([]LeaderKill, 10),
		LeaderFailover:  Latency{P50: 600, P99: 900},
		Promotions:      make([]Promotion, 3),
		RegionPromotion: Latency{P99: 6100},
	}
	got := failoverRatios(res)
	want := map[string]float64{RatioLeaderFailoverP50: 600, RatioLeaderFailoverP99: 900, RatioFailoverVsWriteP99: 45, RatioRegionPromotionP99: 6100}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %v, want %v (all %v)", k, got[k], v, got)
		}
	}
	if _, ok := got[RatioSoakLeaderChanges]; ok {
		t.Error("a soak ratio without a soak")
	}
	res.Soak = &Result{}
	if v, ok := failoverRatios(res)[RatioSoakLeaderChanges]; !ok || v != 0 {
		t.Errorf("soak ratio %v, %v", v, ok)
	}
	if !FailoverTargets[RatioLeaderFailoverP99].Met(900) || FailoverTargets[RatioRegionPromotionP99].Met(6100) {
		t.Error("targets misjudged")
	}
}
