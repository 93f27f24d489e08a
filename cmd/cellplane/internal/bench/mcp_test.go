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

// TestRunMCP runs the mcp scenario in a tiny configuration with the
// worker in this process (the test binary is not cellplane, so it cannot
// be the worker process): it checks the plumbing (both paths serve both
// tools without errors, every ratio is computed and plausible, the run
// directory is removed), not the figures.
func TestRunMCP(t *testing.T) {
	if testing.Short() {
		t.Skip("starts etcd, a 3-node cell, an MCP worker and a router")
	}
	ctx := testutil.Context(t, 2*time.Minute)
	parent := t.TempDir()
	var progress bytes.Buffer
	rep, err := RunMCP(ctx, MCPOptions{
		Concurrency:     2,
		Duration:        500 * time.Millisecond,
		Rounds:          1,
		Prefill:         3,
		Tail:            2,
		DataDir:         parent,
		InProcessWorker: true,
		Logger:          quietLogger(t),
		Progress:        &progress,
	})
	t.Logf("progress:\n%s", progress.String())
	if err != nil {
		t.Fatal(err)
	}
	waitNoLeaks(t)

	res := rep.Results.(*MCPResults)
	if len(res.Runs) != len(mcpPaths)*len(mcpTools) || len(res.Summary) != len(mcpPaths)*len(mcpTools) {
		t.Errorf("%d steps, %d summaries", len(res.Runs), len(res.Summary))
	}
	for _, r := range res.Runs {
		if r.Ops == 0 || r.Errors != 0 || r.Latency.P50 <= 0 || r.WorkerCPUPerCallUs <= 0 {
			t.Errorf("step %+v", r)
		}
	}
	if res.WorkerCPUSource != cpuSourceInProcess {
		t.Errorf("worker CPU source %q", res.WorkerCPUSource)
	}
	// Timing ratios on a shared machine can be anything positive: only
	// their presence and sign are checked (benchmarks are not assertions).
	if v, ok := rep.Ratios[RatioMCPRouterP50VsDirect]; !ok || v <= 0 {
		t.Errorf("ratio %s = %v (present %v): %v", RatioMCPRouterP50VsDirect, v, ok, rep.Ratios)
	}
	// In-process, the "worker" CPU is the whole process's: a low bound.
	if v, ok := rep.Ratios[RatioMCPRPSPerCore]; !ok || v <= 0 {
		t.Errorf("ratio %s = %v (present %v): %v", RatioMCPRPSPerCore, v, ok, rep.Ratios)
	}
	if _, ok := res.OpRatios[toolAppend+"/"+RatioMCPRouterP50VsDirect]; !ok {
		t.Errorf("op ratios %v", res.OpRatios)
	}
	if left, _ := os.ReadDir(parent); len(left) != 0 {
		t.Errorf("run directory left behind: %v", left)
	}

	var table, js bytes.Buffer
	if err := rep.WriteTable(&table); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"router context_read #1", "median direct context_append", RatioMCPRPSPerCore} {
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
	if err := json.Unmarshal(js.Bytes(), &doc); err != nil || doc.Scenario != "mcp" || len(doc.Ratios) != 2 {
		t.Fatalf("JSON %v: %+v\n%s", err, doc, js.String())
	}
}

func TestProcCPU(t *testing.T) {
	if _, err := os.Stat("/proc/self/stat"); err != nil {
		t.Skip("no /proc")
	}
	// Burn a little CPU so that the reading is not 0.
	deadline := time.Now().Add(50 * time.Millisecond)
	for time.Now().Before(deadline) {
	}
	d, err := procCPU(os.Getpid())
	if err != nil || d <= 0 || d > processCPU()+time.Second {
		t.Fatalf("procCPU = %v, %v (getrusage %v)", d, err, processCPU())
	}
}

func TestMCPRatios(t *testing.T) {
	res := &MCPResults{Summary: []MCPSummary{
		{Path: pathDirect, Tool: toolAppend, P50: 2, P99: 4, CallsPerSec: 1000, CallsPerWorkerCPUSec: 900},
		{Path: pathRouter, Tool: toolAppend, P50: 3, P99: 6, CallsPerSec: 800},
		{Path: pathDirect, Tool: toolRead, P50: 1, P99: 2, CallsPerSec: 4000, CallsPerWorkerCPUSec: 2000},
		{Path: pathRouter, Tool: toolRead, P50: 1.25, P99: 3, CallsPerSec: 3000},
	}}
	got := mcpRatios(res)
	if len(got) != 2 || got[RatioMCPRouterP50VsDirect] != 1.25 || got[RatioMCPRPSPerCore] != 2000 {
		t.Errorf("ratios %v", got)
	}
	if res.OpRatios[toolAppend+"/"+RatioMCPRouterP50VsDirect] != 1.5 || res.OpRatios[toolRead+"/mcp_router_rps_vs_direct"] != 0.75 {
		t.Errorf("op ratios %v", res.OpRatios)
	}
}
