package bench

import (
	"testing"
	"time"

	"google.golang.org/grpc/codes"
)

// recsAt builds write records from (start, end) offsets in ms from t0;
// a negative end marks a failed write (ending at -end).
func recsAt(t0 time.Time, spans ...[2]int) []writeRec {
	var out []writeRec
	for _, s := range spans {
		r := writeRec{start: t0.Add(time.Duration(s[0]) * time.Millisecond), code: codes.OK}
		end := s[1]
		if end < 0 {
			end, r.code = -end, codes.Unavailable
		}
		r.end = t0.Add(time.Duration(end) * time.Millisecond)
		out = append(out, r)
	}
	return out
}

func TestFirstAckAfter(t *testing.T) {
	t0 := time.Unix(1000, 0)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	recs := recsAt(t0,
		[2]int{0, 5},      // before the kill
		[2]int{90, 400},   // sent before the kill, acknowledged late: ignored
		[2]int{110, -300}, // sent after, failed
		[2]int{120, 700},
		[2]int{130, 650}, // the first acknowledgement of a write sent after 100
		[2]int{140, 900},
	)
	for _, tc := range []struct {
		name string
		t    time.Time
		want time.Time
		ok   bool
	}{
		{"after the kill", at(100), at(650), true},
		{"from the start", at(0), at(5), true},
		{"after every write", at(200), time.Time{}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := firstAckAfter(recs, tc.t)
			if ok != tc.ok || !got.Equal(tc.want) {
				t.Fatalf("firstAckAfter = %v, %v; want %v, %v", got.Sub(t0), ok, tc.want.Sub(t0), tc.ok)
			}
		})
	}
}

func TestMaxAckGap(t *testing.T) {
	t0 := time.Unix(1000, 0)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	// Acknowledgements at 10, 20, 30, then a pause to 300, then 310, 320;
	// a failure ending at 200 does not count as an acknowledgement.
	recs := recsAt(t0, [2]int{0, 10}, [2]int{10, 20}, [2]int{20, 30}, [2]int{30, 300}, [2]int{40, -200}, [2]int{300, 310}, [2]int{310, 320})
	for _, tc := range []struct {
		name     string
		from, to time.Time
		gap      time.Duration
		end      time.Time
	}{
		{"the pause inside the window", at(0), at(400), 270 * time.Millisecond, at(300)},
		{"counted from the last ack before the window", at(100), at(400), 270 * time.Millisecond, at(300)},
		{"a window before the pause (the first of equal gaps)", at(0), at(25), 10 * time.Millisecond, at(10)},
		{"no ack after the window's start: the tail counts", at(315), at(1000), 680 * time.Millisecond, at(1000)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			gap, end := maxAckGap(recs, tc.from, tc.to)
			if gap != tc.gap || !end.Equal(tc.end) {
				t.Fatalf("maxAckGap = %v ending at %v; want %v ending at %v", gap, end.Sub(t0), tc.gap, tc.end.Sub(t0))
			}
		})
	}
	if gap, _ := maxAckGap(nil, at(0), at(50)); gap != 50*time.Millisecond {
		t.Errorf("no acknowledgement at all: gap %v, want the whole window", gap)
	}
}

func TestWindowStats(t *testing.T) {
	t0 := time.Unix(1000, 0)
	recs := recsAt(t0, [2]int{0, 10}, [2]int{100, 130}, [2]int{200, -5000}, [2]int{300, 320}, [2]int{1000, 1010})
	r := windowStats("w", recs, t0.Add(50*time.Millisecond), t0.Add(time.Second), 10)
	if r.Ops != 2 || r.Errors != 1 || r.ErrorsByCode["Unavailable"] != 1 {
		t.Fatalf("stats %+v: want 2 ops and 1 Unavailable error (writes scheduled in the window only)", r)
	}
	if r.Latency.Max < 29.9 || r.Latency.Max > 30.1 || r.Latency.Min < 19.9 || r.Latency.Min > 20.1 {
		t.Errorf("latency %+v, want min 20 ms and max 30 ms", r.Latency)
	}
}
