package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// CellOptions configures RunCell (`cellplane bench cell`).
type CellOptions struct {
	// Duration is the measured length of EACH step (each concurrency level,
	// each read mode, each etcd level). A short warm-up precedes each step.
	Duration time.Duration
	// DataDir is where the fsync loop, the cell and etcd keep their files.
	// Empty means a fresh directory under os.TempDir(), removed at the end.
	// A given directory is kept; the run works in a new subdirectory of it.
	DataDir string
	// Concurrency lists the write concurrency levels (cell and etcd).
	Concurrency []int
	// EntrySize is the size in bytes of each appended entry and etcd value.
	EntrySize int
	// ReadConcurrency is the number of readers of the read steps (the
	// maximum read rate is measured closed loop at this concurrency).
	ReadConcurrency int
	// Logger receives the components' logs (nil: discarded, so that the
	// table or JSON stays readable).
	Logger *slog.Logger
	// Progress receives one human line per step (nil: silent).
	Progress io.Writer

	// Processes selects the per-process mode (the default of `cellplane
	// bench cell`): the cell, etcd and the bare-Raft floor each run as 3
	// member processes of Binary with mutual TLS, in Rounds rounds of
	// RoundDuration steps after Warmup each. False is the in-process mode
	// (every member and the load generator in this process, Duration per
	// step), quick enough for tests.
	Processes bool
	// Binary is the cellplane binary the members run (empty: this
	// process's executable).
	Binary string
	// Rounds, RoundDuration and Warmup shape the per-process rounds.
	Rounds        int
	RoundDuration time.Duration
	Warmup        time.Duration
	// Prefill is the number of appends written to the cell's tenant before
	// the rounds (per-process mode), past the change log's 100,000-event
	// bound so that every measured append also trims.
	Prefill int
	// DedupWindow is the cell members' --dedup-window (0: the cell's
	// default, 10 minutes). The default run's 20 s is shorter than the
	// prefill, so that every measured append also forgets old request ids
	// (steady state of the dedup window, not only of the change log).
	DedupWindow time.Duration
	// MaxForeignCores marks a round noisy, and leaves it out of the
	// medians, when one of its steps saw more CPU than this used by
	// processes other than the benchmark's (steal included). 0: never.
	MaxForeignCores float64
	// MemberLogLevel is the member processes' --log-level ("" = warn).
	MemberLogLevel string
	// LeaseReads runs the cell with lease-based linearizable reads
	// (cells/store RaftConfig.LeaseReads, `cellplane cell --raft-lease-reads`).
	LeaseReads bool
}

// DefaultCellOptions returns the options of a default run: per-process,
// 3 rounds of 10 s steps at concurrency 1 and 64 (about 6 minutes with
// the prefill); in-process (Processes false), 4 s per step.
func DefaultCellOptions() CellOptions {
	return CellOptions{
		Duration:        4 * time.Second,
		Concurrency:     []int{1, 64},
		EntrySize:       256,
		ReadConcurrency: 64,
		Processes:       true,
		Rounds:          3,
		RoundDuration:   10 * time.Second,
		Warmup:          2 * time.Second,
		Prefill:         110_000,
		DedupWindow:     20 * time.Second,
		MaxForeignCores: 0.5,
	}
}

// Report is the outcome of one scenario. Its JSON form is the contract of
// every `cellplane bench` scenario (docs/design.md §12):
//
//	{"scenario":"cell","machine":{…},"results":{…},"ratios":{…}}
type Report struct {
	Scenario string             `json:"scenario"`
	Machine  Machine            `json:"machine"`
	Results  any                `json:"results"`
	Ratios   map[string]float64 `json:"ratios"`
	// Targets are the goals for the ratios, shown next to them in
	// the table. They are not part of the JSON document.
	Targets map[string]Target `json:"-"`
}

// Target is a goal for one ratio: "≥ 10" or "≤ 1 ms".
type Target struct {
	AtLeast bool    // true: the ratio must be ≥ Value; false: ≤ Value
	Value   float64 // the bound
	Unit    string  // appended when printed ("ms"), may be empty
}

// Met reports whether v satisfies the target. NaN never does.
func (t Target) Met(v float64) bool {
	if math.IsNaN(v) {
		return false
	}
	if t.AtLeast {
		return v >= t.Value
	}
	return v <= t.Value
}

func (t Target) String() string {
	op := "≤"
	if t.AtLeast {
		op = "≥"
	}
	s := op + strconvG(t.Value)
	if t.Unit != "" {
		s += " " + t.Unit
	}
	return s
}

// StepLister is implemented by scenario results that can be printed as
// one table row per step. WriteTable falls back to indented JSON for
// results that do not implement it.
type StepLister interface {
	Steps() []Result
}

// NoteLister is implemented by scenario results that have figures beyond
// the steps (peak RSS, start-up times); WriteTable prints them after the
// steps as "name: value" lines.
type NoteLister interface {
	Notes() []Note
}

// Note is one extra "name: value" line of a table.
type Note struct {
	Name  string
	Value string
}

// WriteJSON writes the report as one indented JSON document.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// WriteTable writes the report for a human: the machine, one row per step,
// extra notes, then each ratio with its target and whether it is met.
func (r *Report) WriteTable(w io.Writer) error {
	ew := &errWriter{w: w}
	ew.printf("scenario: %s\n", r.Scenario)
	ew.printf("machine:  %s\n\n", r.Machine)

	if sl, ok := r.Results.(StepLister); ok {
		steps := sl.Steps()
		// Names are padded here so that they read left-aligned in a
		// right-aligned table of numbers.
		width := len("step")
		for _, s := range steps {
			width = max(width, len(s.Name))
		}
		tw := tabwriter.NewWriter(ew, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintf(tw, "%-*s\tconc\trate/s\tops\tops/s\tp50 ms\tp99 ms\tmax ms\tcpu\tcpu wait\terrors\t\n", width, "step")
		for _, s := range steps {
			rate := "-"
			if s.TargetRate > 0 {
				rate = fmt.Sprintf("%.0f", s.TargetRate)
			}
			fmt.Fprintf(tw, "%-*s\t%d\t%s\t%d\t%.0f\t%.3f\t%.3f\t%.3f\t%.2f\t%.2f\t%s\t\n",
				width, s.Name, s.Concurrency, rate, s.Ops, s.OpsPerSec,
				s.Latency.P50, s.Latency.P99, s.Latency.Max, s.CPUCores, s.CPUWaitCores, s.errorsText())
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	} else {
		b, err := json.MarshalIndent(r.Results, "", "  ")
		if err != nil {
			return err
		}
		ew.printf("%s\n", b)
	}
	if nl, ok := r.Results.(NoteLister); ok {
		notes := nl.Notes()
		if len(notes) > 0 {
			ew.printf("\n")
		}
		for _, n := range notes {
			ew.printf("%s: %s\n", n.Name, n.Value)
		}
	}

	if len(r.Ratios) > 0 {
		ew.printf("\n")
		tw := tabwriter.NewWriter(ew, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "ratio\tvalue\ttarget\t")
		for _, k := range slices.Sorted(maps.Keys(r.Ratios)) {
			v := r.Ratios[k]
			target := "-"
			if t, ok := r.Targets[k]; ok {
				verdict := "MISSED"
				if t.Met(v) {
					verdict = "met"
				}
				target = t.String() + "  " + verdict
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t\n", k, strconvG(v), target)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	return ew.err
}

// strconvG prints a ratio with at most 3 decimals (fewer as it grows),
// without trailing zeros.
func strconvG(v float64) string {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return fmt.Sprint(v)
	}
	decimals := 3
	switch {
	case math.Abs(v) >= 100:
		decimals = 0
	case math.Abs(v) >= 10:
		decimals = 1
	}
	s := strconv.FormatFloat(v, 'f', decimals, 64)
	if strings.Contains(s, ".") {
		s = strings.TrimSuffix(strings.TrimRight(s, "0"), ".")
	}
	return s
}

// errWriter keeps the first write error so that rendering code can print
// without checking every call.
type errWriter struct {
	w   io.Writer
	err error
}

func (e *errWriter) Write(p []byte) (int, error) {
	if e.err != nil {
		return 0, e.err
	}
	n, err := e.w.Write(p)
	e.err = err
	return n, err
}

func (e *errWriter) printf(format string, args ...any) {
	fmt.Fprintf(e, format, args...)
}

// loadAvgNote is the "load average at the end" note of a scenario (none
// when the machine did not report one).
func loadAvgNote(l []float64) []Note {
	if len(l) != 3 {
		return nil
	}
	return []Note{{"load average at the end", fmt.Sprintf("%.2f %.2f %.2f", l[0], l[1], l[2])}}
}
