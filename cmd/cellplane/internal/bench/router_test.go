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

// TestRunRouter runs the router scenario in a tiny configuration: it
// checks the plumbing (every path serves both ops without errors, the
// router's table holds every placement, every ratio is computed and
// plausible, the run directory is removed), not the figures.
func TestRunRouter(t *testing.T) {
	if testing.Short() {
		t.Skip("starts etcd, a 3-node cell and a router")
	}
	ctx := testutil.Context(t, 2*time.Minute)
	parent := t.TempDir()
	var progress bytes.Buffer
	rep, err := RunRouter(ctx, RouterOptions{
		Concurrency: 4,
		Duration:    time.Second,
		Rounds:      1,
		Tenants:     2000,
		PageSize:    500,
		DataDir:     parent,
		Logger:      quietLogger(t),
		Progress:    &progress,
	})
	t.Logf("progress:\n%s", progress.String())
	if err != nil {
		t.Fatal(err)
	}
	waitNoLeaks(t)

	res := rep.Results.(*RouterResults)
	if len(res.Runs) != len(routerPaths)*len(routerOps) {
		t.Errorf("%d steps, want %d", len(res.Runs), len(routerPaths)*len(routerOps))
	}
	for _, r := range res.Runs {
		if r.Ops == 0 || r.Errors != 0 || r.Latency.P50 <= 0 {
			t.Errorf("step %v", r)
		}
	}
	if len(res.Summary) != len(routerPaths)*len(routerOps) {
		t.Errorf("summary %+v", res.Summary)
	}
	if res.Bulk.Ops != 2000 || res.TableTenants != 2001 {
		t.Errorf("bulk load %d tenants, router table %d", res.Bulk.Ops, res.TableTenants)
	}
	for _, k := range []string{RatioRouterP50VsDirect, RatioRouterP99VsDirect, RatioRouterQPSVsDirect, RatioClientP50VsDirect} {
		// Wide bounds: a 1 s step on a shared machine can be far off, but
		// not by two orders of magnitude.
		// Timing ratios on a shared machine can be anything positive.
		if v, ok := rep.Ratios[k]; !ok || v <= 0 {
			t.Errorf("ratio %s = %v (present %v): %v", k, v, ok, rep.Ratios)
		}
	}
	// 2000 tenants: the router's fixed heap weighs more per tenant than at
	// 1M, so only the order of magnitude is checked.
	// Heap growth over a tiny table is within GC noise (even negative).
	if v, ok := rep.Ratios[RatioRouterBytesPerTenant]; !ok {
		t.Errorf("ratio %s = %v (present %v)", RatioRouterBytesPerTenant, v, ok)
	}
	if len(res.OpRatios) != 2*4 {
		t.Errorf("op ratios %v", res.OpRatios)
	}
	if left, _ := os.ReadDir(parent); len(left) != 0 {
		t.Errorf("run directory left behind: %v", left)
	}

	var table, js bytes.Buffer
	if err := rep.WriteTable(&table); err != nil {
		t.Fatal(err)
	}
	t.Logf("table:\n%s", table.String())
	for _, want := range []string{"router append #1", "client read #1", "median direct append", RatioRouterQPSVsDirect} {
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
	if err := json.Unmarshal(js.Bytes(), &doc); err != nil || doc.Scenario != "router" || len(doc.Ratios) != 5 {
		t.Fatalf("JSON %v: %+v\n%s", err, doc, js.String())
	}
}

func TestRouterRatiosWorseOp(t *testing.T) {
	res := &RouterResults{
		BytesPerTenant: 90,
		Summary: []PathSummary{
			{Path: pathDirect, Op: opAppend, P50: 1, P99: 2, OpsPerSec: 1000},
			{Path: pathRouter, Op: opAppend, P50: 1.5, P99: 3, OpsPerSec: 700},
			{Path: pathClient, Op: opAppend, P50: 1, P99: 2, OpsPerSec: 1000},
			{Path: pathDirect, Op: opRead, P50: 0.5, P99: 1, OpsPerSec: 4000},
			{Path: pathRouter, Op: opRead, P50: 1, P99: 1.5, OpsPerSec: 2000},
			{Path: pathClient, Op: opRead, P50: 0.55, P99: 1, OpsPerSec: 4000},
		},
	}
	got := routerRatios(res)
	want := map[string]float64{
		RatioRouterP50VsDirect:    2,   // read
		RatioRouterP99VsDirect:    1.5, // both
		RatioRouterQPSVsDirect:    0.5, // read
		RatioClientP50VsDirect:    1.1, // read
		RatioRouterBytesPerTenant: 90,
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %v, want %v (all %v)", k, got[k], v, got)
		}
	}
	if res.OpRatios["append/"+RatioRouterP50VsDirect] != 1.5 {
		t.Errorf("op ratios %v", res.OpRatios)
	}
}
