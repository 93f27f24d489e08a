package bench

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/cellplane/cellplane/internal/testutil"
)

// TestRunPlacement runs the placement scenario with a few thousand
// tenants: it checks the plumbing (every tenant is loaded and found by the
// router, every update is seen by the watcher, the ratios are computed,
// the run directory is removed), not the figures.
func TestRunPlacement(t *testing.T) {
	if testing.Short() {
		t.Skip("starts an embedded etcd")
	}
	ctx := testutil.Context(t, 2*time.Minute)
	parent := t.TempDir()
	var progress bytes.Buffer
	rep, err := RunPlacement(ctx, PlacementOptions{
		Tenants:        2000,
		PageSize:       300,
		Updates:        20,
		UpdateInterval: 2 * time.Millisecond,
		DataDir:        parent,
		Logger:         quietLogger(t),
		Progress:       &progress,
	})
	t.Logf("progress:\n%s", progress.String())
	if err != nil {
		t.Fatal(err)
	}
	waitNoLeaks(t)

	res := rep.Results.(*PlacementResults)
	if res.Write.Ops != 2000 || res.Write.OpsPerSec <= 0 {
		t.Errorf("bulk load %+v", res.Write)
	}
	if len(res.RouterLoads) != 3 {
		t.Fatalf("%d router loads, want 3", len(res.RouterLoads))
	}
	for _, l := range res.RouterLoads {
		// 2000 keys through etcd's RangeStream (topo.Scan): chunks of
		// the server's choosing (pages of 300 only without a stream).
		if l.Ops != 2000 || l.Pages < 1 || l.ElapsedSec <= 0 || l.Revision <= 0 {
			t.Errorf("router load %+v", l)
		}
	}
	if res.BytesPerTenant <= 0 || res.RouterLoadSec <= 0 {
		t.Errorf("bytes per tenant %v, load %v s", res.BytesPerTenant, res.RouterLoadSec)
	}
	for _, r := range []Result{res.PutBaseline, res.UpdateAck, res.Propagation} {
		if r.Ops != 20 || r.Errors != 0 || r.Latency.P50 <= 0 {
			t.Errorf("step %v", r)
		}
	}
	if res.ValueBytesAvg < 40 || res.ValueBytesAvg > 200 {
		t.Errorf("value size %v B", res.ValueBytesAvg)
	}
	for _, k := range []string{RatioLoadSecondsPerMillion, RatioPropagationP99, RatioPropagationVsPut} {
		if v, ok := rep.Ratios[k]; !ok || v <= 0 {
			t.Errorf("ratio %s = %v (present %v): %v", k, v, ok, rep.Ratios)
		}
	}
	if left, _ := os.ReadDir(parent); len(left) != 0 {
		t.Errorf("run directory left behind: %v", left)
	}

	var table, js bytes.Buffer
	if err := rep.WriteTable(&table); err != nil {
		t.Fatal(err)
	}
	t.Logf("table:\n%s", table.String())
	for _, want := range []string{"router load #3", "watch propagation", RatioLoadSecondsPerMillion} {
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
	if err := json.Unmarshal(js.Bytes(), &doc); err != nil || doc.Scenario != "placement" || len(doc.Ratios) != 3 {
		t.Fatalf("JSON %v: %+v\n%s", err, doc, js.String())
	}
}

func TestUpdateTenantsDistinct(t *testing.T) {
	for _, tc := range []struct{ n, tenants int }{{5, 5}, {3, 10}, {20, 2000}} {
		ids := updateTenants(tc.n, tc.tenants, newTestRand())
		seen := map[int]bool{}
		for _, i := range ids {
			if i < 1 || i > tc.tenants || seen[i] {
				t.Fatalf("%+v: %v", tc, ids)
			}
			seen[i] = true
		}
		if len(ids) != tc.n {
			t.Fatalf("%+v: %d ids", tc, len(ids))
		}
	}
}

func newTestRand() *rand.Rand { return rand.New(rand.NewPCG(1, 1)) }
