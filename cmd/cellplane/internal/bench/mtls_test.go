package bench

import (
	"bytes"
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/cellplane/cellplane/internal/testutil"
)

// TestRunMTLS runs the mtls scenario in a tiny configuration: it checks
// the plumbing (both platforms start, both paths serve both ops in both
// modes without errors, the direct path's connection is reused — one
// handshake —, every ratio is computed, the run directory is removed),
// not the figures.
func TestRunMTLS(t *testing.T) {
	if testing.Short() {
		t.Skip("starts two platforms")
	}
	ctx := testutil.Context(t, 2*time.Minute)
	parent := t.TempDir()
	var progress bytes.Buffer
	rep, err := RunMTLS(ctx, MTLSOptions{
		Concurrency: 4,
		Duration:    300 * time.Millisecond,
		Rounds:      2,
		DataDir:     parent,
		Logger:      quietLogger(t),
		Progress:    &progress,
	})
	t.Logf("progress:\n%s", progress.String())
	if err != nil {
		t.Fatal(err)
	}
	waitNoLeaks(t)

	res := rep.Results.(*MTLSResults)
	if want := 2 * len(mtlsPaths) * len(mtlsModes) * len(routerOps); len(res.Runs) != want {
		t.Errorf("%d steps, want %d", len(res.Runs), want)
	}
	for _, r := range res.Runs {
		if r.Ops == 0 || r.Errors != 0 || r.Latency.P50 <= 0 {
			t.Errorf("step %v", r)
		}
	}
	if res.DirectHandshakes != 1 {
		t.Errorf("the direct path made %d TLS handshakes, want 1 (one reused connection)", res.DirectHandshakes)
	}
	for _, mode := range mtlsModes {
		// One connection from the router to the leader carried every
		// call (a handshake per call would count thousands); a leader
		// change may add one per other node.
		if n, in := res.RouterHandshakes[mode], res.RouterHandshakesInSteps[mode]; n < 1 || n > 3 || in > int64(res.Elections[mode]) {
			t.Errorf("mtls %s: the router made %d handshakes to the cell (%d during the steps, %d elections), want 1 to 3 (one per node called) and none during the steps without an election",
				mode, n, in, res.Elections[mode])
		}
	}
	for _, k := range []string{RatioMTLSRouterP50, RatioMTLSRouterP99, RatioMTLSRouterQPS, RatioMTLSDirectP50, RatioMTLSDirectP99, RatioMTLSDirectQPS} {
		if v, ok := rep.Ratios[k]; !ok || v <= 0 {
			t.Errorf("ratio %s = %v (present %v): %v", k, v, ok, rep.Ratios)
		}
	}
	if len(res.OpRatios) != 2*6 {
		t.Errorf("op ratios %v", res.OpRatios)
	}
	if left, _ := os.ReadDir(parent); len(left) != 0 {
		t.Errorf("run directory left behind: %v", left)
	}
	var table, js bytes.Buffer
	if err := rep.WriteTable(&table); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"router on append #1", "direct off read #2", "median router mtls on append", RatioMTLSDirectQPS} {
		if !strings.Contains(table.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, table.String())
		}
	}
	if err := rep.WriteJSON(&js); err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Scenario string             `json:"scenario"`
		Ratios   map[string]float64 `json:"ratios"`
	}
	if err := json.Unmarshal(js.Bytes(), &doc); err != nil || doc.Scenario != "mtls" || len(doc.Ratios) != 6 {
		t.Fatalf("JSON %v: %+v\n%s", err, doc, js.String())
	}
}

// TestMTLSRatios: each ratio is the median of the per-round ratios (not
// the ratio of the medians), off ÷ on for throughput, and the report keeps
// the worse op's.
func TestMTLSRatios(t *testing.T) {
	step := func(p50, p99, qps float64) Result {
		r := Result{OpsPerSec: qps}
		r.Latency.P50, r.Latency.P99 = p50, p99
		return r
	}
	byKey := map[string][]Result{
		// Rounds: on is 1.0×, 1.2×, 3.0× off (median 1.2); the ratio of
		// the medians would be 2/1 = 2.
		mtlsKey(pathRouter, mtlsOn, opAppend):  {step(1, 2, 900), step(2.4, 4, 800), step(3, 6, 100)},
		mtlsKey(pathRouter, mtlsOff, opAppend): {step(1, 2, 1000), step(2, 4, 1000), step(1, 2, 1000)},
		mtlsKey(pathRouter, mtlsOn, opRead):    {step(1, 1, 1000), step(1, 1, 1000), step(1, 1, 1000)},
		mtlsKey(pathRouter, mtlsOff, opRead):   {step(1, 1, 1000), step(1, 1, 1000), step(1, 1, 1000)},
		mtlsKey(pathDirect, mtlsOn, opAppend):  {step(1, 1, 1000), step(1, 1, 1000), step(0, 1, 1000)}, // a zero round is skipped
		mtlsKey(pathDirect, mtlsOff, opAppend): {step(1, 1, 1000), step(2, 1, 1000), step(1, 1, 1000)},
		mtlsKey(pathDirect, mtlsOn, opRead):    {step(1.05, 1, 1000), step(1.05, 1, 1000), step(1.05, 1, 1000)},
		mtlsKey(pathDirect, mtlsOff, opRead):   {step(1, 1, 1000), step(1, 1, 1000), step(1, 1, 1000)},
	}
	res := &MTLSResults{OpRatios: perRoundRatios(byKey, 3)}
	got := mtlsRatios(res)
	want := map[string]float64{
		RatioMTLSRouterP50: 1.2,  // append: median of 1, 1.2, 3
		RatioMTLSRouterP99: 1,    // append: 1, 1, 3 → 1; read 1
		RatioMTLSRouterQPS: 1.25, // append: 1.111, 1.25, 10 → 1.25
		RatioMTLSDirectP50: 1.05, // read (append: 1 and 0.5 → 0.75)
		RatioMTLSDirectP99: 1,
		RatioMTLSDirectQPS: 1,
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %v, want %v (all %v)", k, got[k], v, got)
		}
	}
	if v := res.OpRatios["append/"+RatioMTLSDirectP50]; v != 0.75 {
		t.Errorf("append/%s = %v, want 0.75 (all %v)", RatioMTLSDirectP50, v, res.OpRatios)
	}
}
