package bench

import (
	"bytes"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cellplane/cellplane/internal/testutil"
)

// TestRunCellProcesses runs the per-process cell scenario with tiny steps
// and the real binary: every system's members start as processes with
// mutual TLS, every ratio of the contract is computed, the per-process
// figures are filled, and no member process or file is left behind. It
// checks the plumbing, not the figures.
func TestRunCellProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("builds cellplane and starts 9 member processes")
	}
	ctx := testutil.Context(t, 5*time.Minute)
	bins, err := testutil.GoBuild(ctx, t.TempDir(), "./cmd/cellplane")
	if err != nil {
		t.Fatal(err)
	}
	parent := t.TempDir()
	var progress bytes.Buffer
	rep, err := RunCell(ctx, CellOptions{
		Processes:       true,
		Binary:          bins["./cmd/cellplane"],
		Rounds:          1,
		RoundDuration:   400 * time.Millisecond,
		Warmup:          200 * time.Millisecond,
		Prefill:         300,
		Concurrency:     []int{1, 64},
		ReadConcurrency: 8,
		MaxForeignCores: 0.5,
		DataDir:         parent,
		Logger:          quietLogger(t),
		Progress:        &progress,
	})
	t.Logf("progress:\n%s", progress.String())
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{RatioWritesVsEtcd, RatioWritesVsRaftFloor, RatioWriteP50VsFsync, RatioLinReadP99AtHalf, RatioWritesVsFsync} {
		if _, ok := rep.Ratios[k]; !ok {
			t.Errorf("ratio %s missing: %v", k, rep.Ratios)
		}
	}
	res := rep.Results.(*CellResults)
	if res.Mode != "processes" || len(res.Rounds) != 1 || res.RoundsUsed != 1 || res.PrefillAppends != 300 || len(res.Members) != 9 {
		t.Errorf("mode %q rounds %d used %d prefill %d members %v", res.Mode, len(res.Rounds), res.RoundsUsed, res.PrefillAppends, res.Members)
	}
	for _, s := range res.Steps() {
		if s.Ops == 0 || s.Errors != 0 {
			t.Errorf("step %v", s)
		}
	}
	for _, w := range res.Etcd {
		if w.FsyncsPerWrite <= 0 {
			t.Errorf("etcd step without fsyncs per write: %+v", w)
		}
	}
	for _, w := range res.Raft {
		if w.FsyncsPerWrite <= 0 || w.CommandsPerEntry <= 0 {
			t.Errorf("raft step without fsyncs or commands per entry: %+v", w)
		}
	}
	for _, w := range res.Writes {
		if w.CommandsPerEntry <= 0 {
			t.Errorf("cell step without commands per entry: %+v", w)
		}
	}
	var table bytes.Buffer
	if err := rep.WriteTable(&table); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"raft floor append", "etcd put", "cell append", "writes_vs_raft_floor", "round 1"} {
		if !strings.Contains(table.String(), want) {
			t.Errorf("table has no %q:\n%s", want, table.String())
		}
	}
	// Every member process is gone, and the run directory with them.
	for _, m := range res.Members {
		_, pid, _ := strings.Cut(m, "pid ")
		n, err := strconv.Atoi(pid)
		if err != nil {
			t.Fatalf("member %q", m)
		}
		if err := syscall.Kill(n, 0); err == nil {
			t.Errorf("member %s still runs", m)
		}
	}
	if left, _ := os.ReadDir(parent); len(left) != 0 {
		t.Errorf("run directory left behind: %v", left)
	}
}
