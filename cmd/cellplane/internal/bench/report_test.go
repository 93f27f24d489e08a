package bench

import (
	"bytes"
	"encoding/json"
	"maps"
	"slices"
	"strings"
	"testing"
)

// sampleCell is a cell run with round figures.
func sampleCell() *CellResults {
	lat := func(p50, p99 float64) Latency { return Latency{P50: p50, P99: p99, Max: p99 * 2} }
	return &CellResults{
		Fsync: Result{Name: "fsync", Concurrency: 1, Ops: 1000, OpsPerSec: 500, Latency: lat(2, 4)},
		Writes: []Result{
			{Name: "cell append", Concurrency: 1, Ops: 400, OpsPerSec: 200, Latency: lat(5, 9)},
			{Name: "cell append", Concurrency: 64, Ops: 40000, OpsPerSec: 6000, Latency: lat(10, 20)},
		},
		Reads: []Result{
			{Name: readLinMax, Concurrency: 64, Ops: 90000, OpsPerSec: 30000, Latency: lat(2, 5)},
			{Name: readLinHalf, Concurrency: 64, TargetRate: 15000, Ops: 45000, OpsPerSec: 15000, Latency: lat(0.4, 0.8)},
		},
		Etcd: []Result{
			{Name: "etcd put", Concurrency: 1, Ops: 300, OpsPerSec: 150, Latency: lat(6, 8)},
			{Name: "etcd put", Concurrency: 64, Ops: 12000, OpsPerSec: 3000, Latency: lat(20, 40),
				Errors: 2, ErrorsByCode: map[string]uint64{"Unavailable": 2}},
		},
		CellPeakRSSBytes: 300 << 20,
	}
}

func TestCellRatios(t *testing.T) {
	got := cellRatios(sampleCell())
	want := map[string]float64{
		RatioWritesVsFsync:    12,  // 6000 / 500
		RatioWritesVsEtcd:     2,   // 6000 / 3000
		RatioWriteP50VsFsync:  2.5, // 5 / 2
		RatioLinReadP99AtHalf: 0.8, // p99 of the @50% step
	}
	if !maps.Equal(got, want) {
		t.Fatalf("ratios = %v, want %v", got, want)
	}

	// Missing inputs leave a ratio out instead of reporting 0 or Inf.
	r := sampleCell()
	r.Etcd = r.Etcd[:1]
	r.Fsync.OpsPerSec = 0
	got = cellRatios(r)
	if _, ok := got[RatioWritesVsEtcd]; ok {
		t.Errorf("writes_vs_etcd present without an etcd step at 64: %v", got)
	}
	if _, ok := got[RatioWritesVsFsync]; ok {
		t.Errorf("writes_vs_fsync present with a zero fsync rate: %v", got)
	}
}

func TestReportJSONShape(t *testing.T) {
	res := sampleCell()
	rep := &Report{Scenario: "cell", Machine: DescribeMachine(t.TempDir()), Results: res, Ratios: cellRatios(res), Targets: CellTargets}
	var buf bytes.Buffer
	if err := rep.WriteJSON(&buf); err != nil {
		t.Fatal(err)
	}
	var doc map[string]json.RawMessage
	if err := json.Unmarshal(buf.Bytes(), &doc); err != nil {
		t.Fatalf("not one JSON document: %v\n%s", err, buf.String())
	}
	if keys := slices.Sorted(maps.Keys(doc)); !slices.Equal(keys, []string{"machine", "ratios", "results", "scenario"}) {
		t.Fatalf("top-level keys = %v", keys)
	}
	var ratios map[string]float64
	if err := json.Unmarshal(doc["ratios"], &ratios); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{RatioWritesVsFsync, RatioWritesVsEtcd, RatioWriteP50VsFsync, RatioLinReadP99AtHalf} {
		if _, ok := ratios[k]; !ok {
			t.Errorf("ratio %q missing: %v", k, ratios)
		}
	}
	var results map[string]json.RawMessage
	if err := json.Unmarshal(doc["results"], &results); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"fsync", "cell_writes", "cell_reads", "etcd_puts", "cell_peak_rss_bytes"} {
		if _, ok := results[k]; !ok {
			t.Errorf("results.%s missing: %s", k, doc["results"])
		}
	}
	var writes []map[string]any
	if err := json.Unmarshal(results["cell_writes"], &writes); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"name", "concurrency", "ops", "errors", "ops_per_sec", "latency"} {
		if _, ok := writes[0][k]; !ok {
			t.Errorf("a write step has no %q: %v", k, writes[0])
		}
	}
	var machine map[string]any
	if err := json.Unmarshal(doc["machine"], &machine); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"cores", "gomaxprocs", "go_version"} {
		if _, ok := machine[k]; !ok {
			t.Errorf("machine has no %q: %v", k, machine)
		}
	}
	if strings.Contains(buf.String(), "targets") {
		t.Errorf("targets leaked into the JSON document")
	}
}

func TestReportTable(t *testing.T) {
	res := sampleCell()
	ratios := cellRatios(res)
	ratios[RatioWritesVsEtcd] = 1.2 // under its ≥1.5 target
	rep := &Report{Scenario: "cell", Machine: Machine{OS: "linux", Arch: "amd64", Cores: 2, GOMAXPROCS: 2, GoVersion: "go1.26"},
		Results: res, Ratios: ratios, Targets: CellTargets}
	var buf bytes.Buffer
	if err := rep.WriteTable(&buf); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	for _, want := range []string{
		"scenario: cell",
		"2 cores (GOMAXPROCS 2)",
		"cell append",
		"etcd put",
		"Unavailable=2",
		readLinHalf,
		"15000",                 // the @50% step's target rate
		"writes_vs_fsync", "12", // reported without a target
		"writes_vs_etcd", "1.2", "≥2  MISSED",
		"write_p50_vs_fsync_p50", "≤3.5  met",
		"lin_read_p99_ms_at_half_max", "≤2 ms  met",
		"cell peak RSS",
		"300 MiB",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("table has no %q:\n%s", want, out)
		}
	}
	// One row per step.
	if got, want := strings.Count(out, "cell append"), 2; got != want {
		t.Errorf("%d cell append rows, want %d", got, want)
	}
}

func TestReportTableWithoutSteps(t *testing.T) {
	rep := &Report{Scenario: "x", Results: map[string]int{"a": 1}, Ratios: map[string]float64{"r": 3}}
	var buf bytes.Buffer
	if err := rep.WriteTable(&buf); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(buf.String(), `"a": 1`) || !strings.Contains(buf.String(), "r  ") {
		t.Fatalf("table:\n%s", buf.String())
	}
}

func TestTarget(t *testing.T) {
	tests := []struct {
		t    Target
		v    float64
		met  bool
		text string
	}{
		{Target{AtLeast: true, Value: 10}, 10, true, "≥10"},
		{Target{AtLeast: true, Value: 10}, 9.99, false, "≥10"},
		{Target{Value: 3.5}, 3.5, true, "≤3.5"},
		{Target{Value: 1, Unit: "ms"}, 1.01, false, "≤1 ms"},
	}
	for _, tt := range tests {
		if got := tt.t.Met(tt.v); got != tt.met {
			t.Errorf("%v.Met(%v) = %v", tt.t, tt.v, got)
		}
		if got := tt.t.String(); got != tt.text {
			t.Errorf("String() = %q, want %q", got, tt.text)
		}
	}
}
