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

// TestRunCell runs the whole cell scenario with tiny steps: it checks the
// plumbing (every step runs without errors, every ratio is computed, the
// run directory is removed), not the figures.
func TestRunCell(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a 3-node cell and a 3-member etcd")
	}
	ctx := testutil.Context(t, 3*time.Minute)
	parent := t.TempDir()
	var progress bytes.Buffer
	rep, err := RunCell(ctx, CellOptions{
		Duration:        300 * time.Millisecond,
		DataDir:         parent,
		Concurrency:     []int{1, 64},
		ReadConcurrency: 16,
		Logger:          quietLogger(t),
		Progress:        &progress,
	})
	t.Logf("progress:\n%s", progress.String())
	if err != nil {
		t.Fatal(err)
	}
	waitNoLeaks(t)

	res := rep.Results.(*CellResults)
	steps := res.Steps()
	if len(steps) != 1+2+4+2 {
		t.Fatalf("%d steps, want 9: %+v", len(steps), steps)
	}
	for _, s := range steps {
		if s.Ops == 0 || s.Errors != 0 {
			t.Errorf("step %v", s)
		}
	}
	for k := range rep.Targets {
		if _, ok := rep.Ratios[k]; !ok {
			t.Errorf("ratio %s missing: %v", k, rep.Ratios)
		}
	}
	if res.CellPeakRSSBytes == 0 {
		t.Error("no peak RSS")
	}
	if rep.Machine.Filesystem == "" && rep.Machine.DataDir == "" {
		t.Errorf("machine = %+v", rep.Machine)
	}
	if left, _ := os.ReadDir(parent); len(left) != 0 {
		t.Errorf("run directory left behind: %v", left)
	}

	var table, js bytes.Buffer
	if err := rep.WriteTable(&table); err != nil {
		t.Fatal(err)
	}
	t.Logf("table:\n%s", table.String())
	if !strings.Contains(table.String(), "cell append") {
		t.Errorf("table:\n%s", table.String())
	}
	if err := rep.WriteJSON(&js); err != nil {
		t.Fatal(err)
	}
	if !json.Valid(js.Bytes()) {
		t.Fatalf("invalid JSON:\n%s", js.String())
	}
}
