package bench

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Op is one operation of a load step. worker is in [0, Concurrency): an op
// can keep per-worker state (a context id, a key prefix) in a slice indexed
// by it without locking. A returned error is counted by its gRPC code.
type Op func(ctx context.Context, worker int) error

// Load describes one step of load.
//
// Closed loop (Rate = 0): Concurrency workers each run Op back to back,
// which measures the best throughput at that concurrency.
//
// Open loop (Rate > 0): ops are scheduled at a fixed rate and handed to up
// to Concurrency workers. Latency is measured from each op's scheduled
// start, not its actual start, so a server that falls behind is charged for
// the queueing it causes (no coordinated omission).
type Load struct {
	Name        string
	Concurrency int
	// Duration is the measured time; the step stops scheduling ops after
	// it (ops in flight complete and are counted). Zero with Ops > 0 means
	// "until Ops ops".
	Duration time.Duration
	// Ops, when > 0, stops the step after this many measured ops.
	Ops uint64
	// Warmup runs the same load first, unmeasured.
	Warmup time.Duration
	// Rate is the open-loop rate in ops/s (0: closed loop).
	Rate float64
	// OpTimeout bounds each op (0: no bound beyond ctx).
	OpTimeout time.Duration
	// Window, when set, is called when the measured window opens
	// (open=true, while the warm-up's last ops may still run) and after
	// the last measured op ended (open=false): per-process scenarios read
	// their members' counters there.
	Window func(open bool)
}

// Result is the outcome of one step.
type Result struct {
	Name        string  `json:"name"`
	Concurrency int     `json:"concurrency"`
	TargetRate  float64 `json:"target_rate,omitempty"`
	// Ops counts measured ops that succeeded; Errors those that failed,
	// by gRPC code name in ErrorsByCode.
	Ops          uint64            `json:"ops"`
	Errors       uint64            `json:"errors"`
	ErrorsByCode map[string]uint64 `json:"errors_by_code,omitempty"`
	// FirstError is the message of the first failure, to explain the codes.
	FirstError string  `json:"first_error,omitempty"`
	ElapsedSec float64 `json:"elapsed_s"`
	// OpsPerSec is successful ops per second of measured time.
	OpsPerSec float64 `json:"ops_per_sec"`
	// Latency covers successful ops only.
	Latency Latency `json:"latency"`
	// CPUCores is the CPU this whole process used during the measured
	// window, in cores (1.5 = one and a half cores busy); CPUPerOpUs is
	// that CPU time per successful op, in µs. In-process scenarios count
	// the system under test and the load generator together. Well under
	// the machine's cores with a flat throughput means the step waited on
	// something (disk, locks, other processes on a shared machine).
	CPUCores   float64 `json:"cpu_cores"`
	CPUPerOpUs float64 `json:"cpu_per_op_us"`
	// CPUWaitCores is how long this process's threads were ready to run
	// but waited for a CPU during the measured window (the run delay of
	// Linux's schedstat), in cores. Its own threads beyond the cores
	// (back from a syscall, fsync) make a floor: about 0.2-0.4 for
	// appends and under 0.1 for reads in `bench mtls` on a quiet 2-core
	// machine. Well above that (1 and more), other processes took the
	// CPU: that explains a low CPUCores and a slow step, rather than the
	// system under test waiting on something. 0 where not measured.
	CPUWaitCores float64 `json:"cpu_wait_cores"`

	// Per-process scenarios (`bench cell`) add the figures of the system
	// under test's member processes over the measured window: Round (from
	// 1), MemberCPUCores and MemberCPUPerOpUs (the sum of the members'
	// utime+stime from /proc/<pid>/stat), FsyncsPerWrite (the members' log
	// fsyncs, summed, per acknowledged write; 0: not measurable),
	// CommandsPerEntry (commands per Raft log entry on the leader) and the
	// machine's load besides the benchmark: ForeignCores (busy CPU in
	// /proc/stat minus every benchmark process's CPU, steal included) and
	// StealCores.
	Round            int     `json:"round,omitempty"`
	MemberCPUCores   float64 `json:"member_cpu_cores,omitempty"`
	MemberCPUPerOpUs float64 `json:"member_cpu_per_op_us,omitempty"`
	FsyncsPerWrite   float64 `json:"fsyncs_per_write,omitempty"`
	CommandsPerEntry float64 `json:"commands_per_entry,omitempty"`
	ForeignCores     float64 `json:"foreign_cores,omitempty"`
	StealCores       float64 `json:"steal_cores,omitempty"`
	// RouterCPUCores and RouterCPUPerOpUs are the router process's CPU
	// (`bench router`, per-process mode).
	RouterCPUCores   float64 `json:"router_cpu_cores,omitempty"`
	RouterCPUPerOpUs float64 `json:"router_cpu_per_op_us,omitempty"`
}

func (r Result) errorsText() string {
	if r.Errors == 0 {
		return "0"
	}
	var parts []string
	for _, c := range slices.Sorted(maps.Keys(r.ErrorsByCode)) {
		parts = append(parts, fmt.Sprintf("%s=%d", c, r.ErrorsByCode[c]))
	}
	return strings.Join(parts, ",")
}

// String is a one-line summary for progress output.
func (r Result) String() string {
	s := fmt.Sprintf("%s c=%d: %.0f ops/s p50=%.3fms p99=%.3fms max=%.3fms cpu=%.2f cores",
		r.Name, r.Concurrency, r.OpsPerSec, r.Latency.P50, r.Latency.P99, r.Latency.Max, r.CPUCores)
	if r.TargetRate > 0 {
		s += fmt.Sprintf(" (rate %.0f/s)", r.TargetRate)
	}
	if r.Errors > 0 {
		s += " errors: " + r.errorsText()
		if r.FirstError != "" {
			s += " (first: " + r.FirstError + ")"
		}
	}
	return s
}

// ErrNoProgress is returned by Run when every measured op failed: the
// figures would describe errors, not the system.
var ErrNoProgress = errors.New("bench: every measured op failed")

// Run runs one step of load and returns its result. It returns early with
// ctx's error if ctx ends. Errors from op are counted, not returned; but if
// no op succeeds Run returns the result together with ErrNoProgress.
func Run(ctx context.Context, l Load, op Op) (Result, error) {
	if l.Concurrency < 1 {
		return Result{}, fmt.Errorf("bench: concurrency %d < 1", l.Concurrency)
	}
	if l.Duration <= 0 && l.Ops == 0 {
		return Result{}, errors.New("bench: a step needs a duration or an op count")
	}
	if l.Rate < 0 {
		return Result{}, fmt.Errorf("bench: negative rate %v", l.Rate)
	}

	r := &runner{load: l, op: op, hist: NewHistogram(), errs: map[codes.Code]uint64{}}
	start := time.Now()
	r.measureFrom = start.Add(l.Warmup)
	if l.Duration > 0 {
		r.stopAt = r.measureFrom.Add(l.Duration)
	}
	// The CPU counter is read when the measured window opens.
	cpuAtMeasure := make(chan [2]time.Duration, 1)
	cpuTimer := time.AfterFunc(time.Until(r.measureFrom), func() {
		if l.Window != nil {
			l.Window(true)
		}
		cpuAtMeasure <- [2]time.Duration{processCPU(), processRunDelay()}
	})
	var wg sync.WaitGroup
	for w := range l.Concurrency {
		wg.Go(func() { r.work(ctx, w, start) })
	}
	wg.Wait()
	end := r.lastEnd()
	cpuEnd, waitEnd := processCPU(), processRunDelay()
	var cpu, wait time.Duration
	if !cpuTimer.Stop() { // it fired: its reading is (or is about to be) sent
		at := <-cpuAtMeasure
		cpu, wait = cpuEnd-at[0], max(waitEnd-at[1], 0)
		if l.Window != nil {
			l.Window(false)
		}
	}
	if err := ctx.Err(); err != nil {
		return Result{}, err
	}

	elapsed := end.Sub(r.measureFrom)
	if l.Ops == 0 && elapsed < l.Duration {
		// The last scheduled op finished before the window closed (open
		// loop): the rate is over the whole window.
		elapsed = l.Duration
	}
	res := Result{
		Name:        l.Name,
		Concurrency: l.Concurrency,
		TargetRate:  l.Rate,
		Ops:         r.hist.Count(),
		ElapsedSec:  elapsed.Seconds(),
		Latency:     r.hist.Summary(),
		FirstError:  r.firstErr,
	}
	if elapsed > 0 {
		res.OpsPerSec = float64(res.Ops) / elapsed.Seconds()
		// CPU was read from the window's opening to the last op's end.
		if window := end.Sub(r.measureFrom); window > 0 {
			res.CPUCores = round3(cpu.Seconds() / window.Seconds())
			res.CPUWaitCores = round3(wait.Seconds() / window.Seconds())
		}
	}
	if res.Ops > 0 {
		res.CPUPerOpUs = round3(float64(cpu.Microseconds()) / float64(res.Ops))
	}
	for c, n := range r.errs {
		if res.ErrorsByCode == nil {
			res.ErrorsByCode = map[string]uint64{}
		}
		res.ErrorsByCode[c.String()] = n
		res.Errors += n
	}
	if res.Ops == 0 && res.Errors > 0 {
		return res, fmt.Errorf("%w: %s: %s (first: %s)", ErrNoProgress, l.Name, res.errorsText(), res.FirstError)
	}
	return res, nil
}

type runner struct {
	load        Load
	op          Op
	hist        *Histogram
	measureFrom time.Time
	stopAt      time.Time // zero: stop by op count only

	tickets  atomic.Uint64 // open loop: next schedule slot
	measured atomic.Uint64 // measured ops started (count limit)

	mu       sync.Mutex
	errs     map[codes.Code]uint64
	firstErr string
	end      time.Time
}

func (r *runner) work(ctx context.Context, w int, start time.Time) {
	var interval time.Duration
	if r.load.Rate > 0 {
		interval = time.Duration(float64(time.Second) / r.load.Rate)
	}
	var end time.Time
	defer func() {
		r.mu.Lock()
		if end.After(r.end) {
			r.end = end
		}
		r.mu.Unlock()
	}()
	for ctx.Err() == nil {
		var sched time.Time
		if interval > 0 {
			// Take the next slot of the schedule and wait for it. Slots
			// are never skipped: a late worker starts at once and the op
			// is charged from its slot.
			sched = start.Add(time.Duration(r.tickets.Add(1)-1) * interval)
			if !r.stopAt.IsZero() && !sched.Before(r.stopAt) {
				return
			}
			if d := time.Until(sched); d > 0 {
				t := time.NewTimer(d)
				select {
				case <-ctx.Done():
					t.Stop()
					return
				case <-t.C:
				}
			}
		} else {
			sched = time.Now()
			if !r.stopAt.IsZero() && !sched.Before(r.stopAt) {
				return
			}
		}
		measure := !sched.Before(r.measureFrom)
		if measure && r.load.Ops > 0 && r.measured.Add(1) > r.load.Ops {
			return
		}

		opCtx, cancel := ctx, context.CancelFunc(func() {})
		if r.load.OpTimeout > 0 {
			opCtx, cancel = context.WithTimeout(ctx, r.load.OpTimeout)
		}
		err := r.op(opCtx, w)
		cancel()
		end = time.Now()
		if !measure {
			continue
		}
		if err != nil {
			if ctx.Err() != nil {
				return // the run was cancelled: not the server's fault
			}
			r.countErr(err)
			continue
		}
		r.hist.Record(end.Sub(sched))
	}
}

func (r *runner) countErr(err error) {
	c := Code(err)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.errs[c]++
	if r.firstErr == "" {
		r.firstErr = err.Error()
	}
}

func (r *runner) lastEnd() time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.end.IsZero() {
		return time.Now()
	}
	return r.end
}

// Code classifies an op error by gRPC code: a status error by its code, a
// context error as CANCELED or DEADLINE_EXCEEDED, anything else UNKNOWN.
func Code(err error) codes.Code {
	switch {
	case err == nil:
		return codes.OK
	case errors.Is(err, context.DeadlineExceeded):
		return codes.DeadlineExceeded
	case errors.Is(err, context.Canceled):
		return codes.Canceled
	}
	if s, ok := status.FromError(err); ok {
		return s.Code()
	}
	return codes.Unknown
}
