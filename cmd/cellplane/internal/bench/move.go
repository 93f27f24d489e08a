package bench

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/cellplane/cellplane/controlplane/controller"
)

// Ratio names of the move scenario (the targets).
const (
	RatioMovePauseP99      = "move_pause_p99_ms"
	RatioMovePauseP99Big   = "move_pause_p99_ms_64mb"
	RatioMoveFailedWrites  = "move_failed_requests"
	RatioMoveFenceFlipP99  = "move_fence_to_flip_p99_ms"
	RatioMovePauseVsWrite  = "move_pause_p99_vs_write_p99"
	moveRegion             = "bench-r1"
	moveCellA, moveCellB   = "bench-r1-a", "bench-r1-b"
	moveSmallT, moveLargeT = "move-small", "move-large"
	moveOtherT             = "move-other"
)

// MoveTargets are the goals for the move scenario.
var MoveTargets = map[string]Target{
	RatioMovePauseP99:     {AtLeast: false, Value: 500, Unit: "ms"},
	RatioMovePauseP99Big:  {AtLeast: false, Value: 2000, Unit: "ms"},
	RatioMoveFailedWrites: {AtLeast: false, Value: 0},
}

// MoveOptions configures RunMove (`cellplane bench move`).
type MoveOptions struct {
	// Moves is the number of moves of the small tenant (Size bytes),
	// alternating between the two cells; BigMoves those of the big one
	// (BigSize bytes; 0 skips it).
	Moves, BigMoves int
	Size, BigSize   int64
	// Rate is the steady write rate on the moving tenant (appends/s
	// through the router, open loop); OtherRate the rate on another
	// tenant of the source cell that does not move (0: none).
	Rate, OtherRate float64
	// EntrySize is the size of each steadily appended entry.
	EntrySize int
	// Baseline is the steady-write window with no move (the baseline).
	Baseline time.Duration
	// CleanupGrace is the controller's grace before a moved tenant's old
	// copy is removed; a move is DONE (and the next one may start) after it.
	CleanupGrace time.Duration
	// Members is the number of nodes of each cell.
	Members int
	// DataDir is where etcd and the cells keep their files: a new
	// directory inside it (os.TempDir() when empty), removed at the end.
	DataDir string
	// Logger receives the components' logs (nil: discarded).
	Logger *slog.Logger
	// Progress receives one human line per move (nil: silent).
	Progress io.Writer
}

// DefaultMoveOptions returns the options of a default run: 20 moves of a
// 1 MiB tenant and 5 of a 64 MiB one (what fits in the run's budget)
// under 100 appends/s, 3-node cells (about a minute and a half on a quiet
// 2-core machine, up to three minutes on a busy one).
func DefaultMoveOptions() MoveOptions {
	return MoveOptions{
		Moves:        20,
		BigMoves:     5,
		Size:         1 << 20,
		BigSize:      64 << 20,
		Rate:         100,
		EntrySize:    128,
		Baseline:     5 * time.Second,
		CleanupGrace: time.Second,
		Members:      3,
	}
}

func (o MoveOptions) withDefaults() MoveOptions {
	d := DefaultMoveOptions()
	if o.Moves < 0 {
		o.Moves = 0
	}
	if o.BigMoves < 0 {
		o.BigMoves = 0
	}
	if o.Size <= 0 {
		o.Size = d.Size
	}
	if o.BigSize <= 0 {
		o.BigSize = d.BigSize
	}
	if o.Rate <= 0 {
		o.Rate = d.Rate
	}
	if o.OtherRate < 0 {
		o.OtherRate = 0
	}
	if o.EntrySize <= 0 {
		o.EntrySize = d.EntrySize
	}
	if o.Baseline <= 0 {
		o.Baseline = d.Baseline
	}
	if o.CleanupGrace < 0 {
		o.CleanupGrace = 0
	}
	if o.Members <= 0 {
		o.Members = d.Members
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o
}

// MoveResults are the figures of `cellplane bench move`.
type MoveResults struct {
	Members   int     `json:"members"`
	Rate      float64 `json:"rate"`
	OtherRate float64 `json:"other_rate"`
	EntrySize int     `json:"entry_size"`
	// Baseline is the steady writes of the small tenant with no move.
	Baseline Result `json:"baseline"`
	// Small and Big are the two tenants' moves.
	Small MoveSet  `json:"small"`
	Big   *MoveSet `json:"big,omitempty"`
	// Other is the writes to the tenant that does not move (when run).
	Other *Result `json:"other,omitempty"`

	StartSec   float64   `json:"start_s"`
	TotalSec   float64   `json:"total_s"`
	LoadAvgEnd []float64 `json:"load_avg_end,omitempty"`
}

// MoveSet is one tenant's moves and their summary.
type MoveSet struct {
	Tenant string `json:"tenant"`
	// Bytes is the tenant's stored size when the moves started (the
	// cell's usage figure); FillSec how long filling it took.
	Bytes   uint64  `json:"bytes"`
	FillSec float64 `json:"fill_s"`
	Moves   []Move  `json:"moves"`
	// Writes are the tenant's steady writes over all its moves.
	Writes Result `json:"writes"`
	// Pause and FenceToFlip summarise the moves' figures (ms).
	Pause       Latency `json:"pause"`
	FenceToFlip Latency `json:"fence_to_flip"`
	// FailedWrites counts the tenant's writes that failed during its
	// moves; FailedMoves the moves that did not end DONE.
	FailedWrites uint64 `json:"failed_writes"`
	FailedMoves  int    `json:"failed_moves"`
}

// Move is one move.
type Move struct {
	ID       string `json:"id"`
	From     string `json:"from"`
	To       string `json:"to"`
	State    string `json:"state"`
	ErrorMsg string `json:"error,omitempty"`
	// PauseMs is the longest gap between two acknowledged writes of the
	// tenant during the move (StartMove to DONE), as clients saw it.
	PauseMs float64 `json:"pause_ms"`
	// FenceToFlipMs is the move record's fence_time to flip_time;
	// CutoverGapMs the longest acknowledgement gap from the fence to 1 s
	// after the flip (the part of PauseMs the cutover explains; the rest is
	// write latency under the copy's load).
	FenceToFlipMs float64 `json:"fence_to_flip_ms"`
	CutoverGapMs  float64 `json:"cutover_gap_ms"`
	// ToFlipMs is from StartMove to the flip (copy and catch-up included);
	// TotalMs to DONE (after the cleanup grace).
	ToFlipMs float64 `json:"to_flip_ms"`
	TotalMs  float64 `json:"total_ms"`
	// FailedWrites counts the writes scheduled during the move that failed.
	FailedWrites uint64 `json:"failed_writes"`
	CopiedBytes  uint64 `json:"copied_bytes"`
}

// Steps lists the write steps, for the table.
func (r *MoveResults) Steps() []Result {
	s := []Result{r.Baseline, r.Small.Writes}
	if r.Big != nil {
		s = append(s, r.Big.Writes)
	}
	if r.Other != nil {
		s = append(s, *r.Other)
	}
	return s
}

// Notes lists the moves and their summaries.
func (r *MoveResults) Notes() []Note {
	var n []Note
	for _, set := range []*MoveSet{&r.Small, r.Big} {
		if set == nil {
			continue
		}
		for i, m := range set.Moves {
			v := fmt.Sprintf("pause %.0f ms (%.0f ms around the cutover), fence→flip %.0f ms, flip after %.0f ms, done after %.0f ms, %d failed writes, %s",
				m.PauseMs, m.CutoverGapMs, m.FenceToFlipMs, m.ToFlipMs, m.TotalMs, m.FailedWrites, m.State)
			if m.ErrorMsg != "" {
				v += " (" + m.ErrorMsg + ")"
			}
			n = append(n, Note{fmt.Sprintf("%s move %d %s→%s", set.Tenant, i+1, m.From, m.To), v})
		}
		n = append(n, Note{fmt.Sprintf("%s (%s)", set.Tenant, mib(set.Bytes)),
			fmt.Sprintf("%d moves: pause p50 %.0f ms, p99 %.0f ms, max %.0f ms; fence→flip p50 %.0f ms, p99 %.0f ms; %d failed writes, %d failed moves; filled in %.1f s",
				len(set.Moves), set.Pause.P50, set.Pause.P99, set.Pause.Max, set.FenceToFlip.P50, set.FenceToFlip.P99,
				set.FailedWrites, set.FailedMoves, set.FillSec)})
	}
	n = append(n,
		Note{"write load", fmt.Sprintf("%.0f appends/s of %d B on the moving tenant (open loop, through the router), %.0f/s on another tenant; write p99 with no move %.1f ms",
			r.Rate, r.EntrySize, r.OtherRate, r.Baseline.Latency.P99)},
		Note{"cells", fmt.Sprintf("2 × %d nodes in one region", r.Members)},
		Note{"start (etcd, control plane, cells, router)", fmt.Sprintf("%.1f s", r.StartSec)},
		Note{"total", fmt.Sprintf("%.1f s", r.TotalSec)},
	)
	n = append(n, loadAvgNote(r.LoadAvgEnd)...)
	return n
}

// RunMove runs `cellplane bench move`: two cells of one region behind a
// router; a tenant filled to opts.Size takes opts.Rate appends/s through
// the router while it is moved opts.Moves times between the cells
// (ControlPlaneService.StartMove, then GetMove until DONE); then the same
// for a tenant of opts.BigSize with opts.BigMoves moves. Per move: the
// longest pause between acknowledged writes, the record's fence-to-flip
// time, and the failed writes. The baseline is the write latency with no
// move.
func RunMove(ctx context.Context, opts MoveOptions) (*Report, error) {
	opts = opts.withDefaults()
	began := time.Now()
	root, cleanup, err := runDir(opts.DataDir)
	if err != nil {
		return nil, err
	}
	defer cleanup()
	machine := DescribeMachine(root)
	p := progress{opts.Progress}
	res := &MoveResults{Members: opts.Members, Rate: opts.Rate, OtherRate: opts.OtherRate, EntrySize: opts.EntrySize}
	p.printf("bench move: %d moves of %s, %d of %s, %.0f writes/s, data dir %s",
		opts.Moves, mib(uint64(opts.Size)), opts.BigMoves, mib(uint64(opts.BigSize)), opts.Rate, root)

	pf, err := startPlatform(ctx, root, platformOptions{Logger: opts.Logger, Controller: func(c *controller.Config) {
		c.Moves.CleanupGrace = opts.CleanupGrace
	}}, p)
	if err != nil {
		return nil, err
	}
	defer pf.Close()
	for _, id := range []string{moveCellA, moveCellB} {
		if _, err := addCell(ctx, pf, moveRegion, id, opts.Members, nil); err != nil {
			return nil, err
		}
	}
	res.StartSec = time.Since(began).Seconds()
	p.printf("  ready in %.1f s", res.StartSec)

	var stopOther func() Result
	if opts.OtherRate > 0 {
		if stopOther, err = otherLoad(ctx, opts, pf); err != nil {
			return nil, err
		}
		defer func() {
			if stopOther != nil {
				stopOther()
			}
		}()
	}

	small, err := runMoveSet(ctx, opts, pf, moveSmallT, opts.Size, opts.Moves, &res.Baseline, p)
	if err != nil {
		return nil, err
	}
	res.Small = *small
	if opts.BigMoves > 0 {
		big, err := runMoveSet(ctx, opts, pf, moveLargeT, opts.BigSize, opts.BigMoves, nil, p)
		if err != nil {
			return nil, err
		}
		res.Big = big
	}
	if stopOther != nil {
		r := stopOther()
		res.Other, stopOther = &r, nil
	}
	pf.Close()
	res.TotalSec = time.Since(began).Seconds()
	res.LoadAvgEnd = loadAvg()
	return &Report{
		Scenario: "move",
		Machine:  machine,
		Results:  res,
		Ratios:   moveRatios(res),
		Targets:  MoveTargets,
	}, nil
}

// moveRatios computes the ratios; one whose inputs are missing is left
// out.
func moveRatios(res *MoveResults) map[string]float64 {
	r := map[string]float64{}
	failed := res.Small.FailedWrites
	if len(res.Small.Moves) > 0 {
		r[RatioMovePauseP99] = res.Small.Pause.P99
		r[RatioMoveFenceFlipP99] = res.Small.FenceToFlip.P99
		if res.Baseline.Latency.P99 > 0 {
			r[RatioMovePauseVsWrite] = round3(res.Small.Pause.P99 / res.Baseline.Latency.P99)
		}
	}
	if res.Big != nil && len(res.Big.Moves) > 0 {
		r[RatioMovePauseP99Big] = res.Big.Pause.P99
		failed += res.Big.FailedWrites
	}
	if len(res.Small.Moves) > 0 || (res.Big != nil && len(res.Big.Moves) > 0) {
		r[RatioMoveFailedWrites] = float64(failed)
	}
	return r
}
