package bench

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cellplane/cellplane/internal/testutil"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestRunCountsOpsExactly(t *testing.T) {
	ctx := testutil.Context(t, 10*time.Second)
	var calls atomic.Uint64
	seen := make([]atomic.Uint64, 4)
	res, err := Run(ctx, Load{Name: "count", Concurrency: 4, Ops: 1000}, func(_ context.Context, w int) error {
		calls.Add(1)
		seen[w].Add(1)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Ops != 1000 || calls.Load() != 1000 || res.Errors != 0 {
		t.Fatalf("ops = %d, calls = %d, errors = %d; want 1000, 1000, 0", res.Ops, calls.Load(), res.Errors)
	}
	if res.Concurrency != 4 || res.Name != "count" || res.OpsPerSec <= 0 || res.ElapsedSec <= 0 {
		t.Fatalf("result = %+v", res)
	}
	var total uint64
	for w := range seen {
		total += seen[w].Load()
	}
	if total != 1000 {
		t.Fatalf("per-worker calls sum to %d", total)
	}
}

func TestRunCountsErrorsByCode(t *testing.T) {
	ctx := testutil.Context(t, 10*time.Second)
	var n atomic.Uint64
	res, err := Run(ctx, Load{Name: "errs", Concurrency: 3, Ops: 600}, func(context.Context, int) error {
		switch n.Add(1) % 6 {
		case 0:
			return status.Error(codes.Unavailable, "not leader")
		case 1:
			return fmt.Errorf("wrapped: %w", status.Error(codes.FailedPrecondition, "stale epoch"))
		case 2:
			return context.DeadlineExceeded
		case 3:
			return errors.New("plain")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]uint64{"Unavailable": 100, "FailedPrecondition": 100, "DeadlineExceeded": 100, "Unknown": 100}
	if res.Ops != 200 || res.Errors != 400 {
		t.Fatalf("ops/errors = %d/%d, want 200/400", res.Ops, res.Errors)
	}
	for k, v := range want {
		if res.ErrorsByCode[k] != v {
			t.Errorf("errors[%s] = %d, want %d (all: %v)", k, res.ErrorsByCode[k], v, res.ErrorsByCode)
		}
	}
	if res.FirstError == "" {
		t.Error("FirstError is empty")
	}
	if got := res.errorsText(); got != "DeadlineExceeded=100,FailedPrecondition=100,Unavailable=100,Unknown=100" {
		t.Errorf("errorsText = %q", got)
	}
}

func TestRunWithoutAnySuccessFails(t *testing.T) {
	ctx := testutil.Context(t, 10*time.Second)
	res, err := Run(ctx, Load{Concurrency: 2, Ops: 10}, func(context.Context, int) error {
		return status.Error(codes.PermissionDenied, "no")
	})
	if !errors.Is(err, ErrNoProgress) {
		t.Fatalf("err = %v, want ErrNoProgress", err)
	}
	if res.Errors != 10 || res.ErrorsByCode["PermissionDenied"] != 10 {
		t.Fatalf("result = %+v", res)
	}
}

func TestRunWarmupIsNotMeasured(t *testing.T) {
	ctx := testutil.Context(t, 10*time.Second)
	var calls atomic.Uint64
	res, err := Run(ctx, Load{Concurrency: 2, Warmup: 50 * time.Millisecond, Ops: 20}, func(context.Context, int) error {
		calls.Add(1)
		time.Sleep(time.Millisecond) // the op's own work, not a wait for the test
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Ops != 20 {
		t.Fatalf("measured ops = %d, want 20", res.Ops)
	}
	if calls.Load() <= 20 {
		t.Fatalf("calls = %d: the warm-up did not run", calls.Load())
	}
}

func TestRunForDuration(t *testing.T) {
	ctx := testutil.Context(t, 10*time.Second)
	res, err := Run(ctx, Load{Concurrency: 2, Duration: 100 * time.Millisecond}, func(context.Context, int) error {
		time.Sleep(time.Millisecond)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.ElapsedSec < 0.1 || res.Ops == 0 {
		t.Fatalf("elapsed %.3fs with %d ops", res.ElapsedSec, res.Ops)
	}
	if got := float64(res.Ops) / res.ElapsedSec; got != res.OpsPerSec {
		t.Fatalf("ops/s = %v, want ops/elapsed = %v", res.OpsPerSec, got)
	}
	if res.Latency.P50 < 1 {
		t.Fatalf("p50 = %vms, below the op's own 1 ms", res.Latency.P50)
	}
}

func TestOpenLoopChargesQueueing(t *testing.T) {
	// 100 ops scheduled at 1000/s for one worker whose op takes 5 ms: it
	// falls behind by 4 ms per op, and latency measured from the schedule
	// must show it (a closed-loop measure would say 5 ms throughout).
	ctx := testutil.Context(t, 10*time.Second)
	res, err := Run(ctx, Load{Concurrency: 1, Rate: 1000, Duration: 100 * time.Millisecond}, func(context.Context, int) error {
		time.Sleep(5 * time.Millisecond)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Ops != 100 {
		t.Fatalf("ops = %d, want the 100 scheduled", res.Ops)
	}
	if res.Latency.P99 < 200 || res.Latency.Max < 300 {
		t.Fatalf("p99 = %vms, max = %vms: queueing was not charged", res.Latency.P99, res.Latency.Max)
	}
	if res.TargetRate != 1000 {
		t.Fatalf("target rate = %v", res.TargetRate)
	}
}

func TestOpenLoopKeepsItsRate(t *testing.T) {
	ctx := testutil.Context(t, 10*time.Second)
	res, err := Run(ctx, Load{Concurrency: 4, Rate: 500, Duration: 200 * time.Millisecond}, func(context.Context, int) error {
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Ops != 100 {
		t.Fatalf("ops = %d, want 100 (500/s for 200 ms)", res.Ops)
	}
}

func TestRunStopsWhenContextEnds(t *testing.T) {
	ctx, cancel := context.WithCancel(testutil.Context(t, 10*time.Second))
	var n atomic.Uint64
	_, err := Run(ctx, Load{Concurrency: 2, Duration: time.Hour}, func(ctx context.Context, _ int) error {
		if n.Add(1) == 50 {
			cancel()
		}
		return ctx.Err()
	})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
}

func TestRunRejectsBadLoads(t *testing.T) {
	ctx := testutil.Context(t, time.Second)
	nop := func(context.Context, int) error { return nil }
	for _, l := range []Load{
		{Concurrency: 0, Ops: 1},
		{Concurrency: 1},
		{Concurrency: 1, Ops: 1, Rate: -1},
	} {
		if _, err := Run(ctx, l, nop); err == nil {
			t.Errorf("Run(%+v) succeeded", l)
		}
	}
}

func TestCode(t *testing.T) {
	tests := []struct {
		err  error
		want codes.Code
	}{
		{nil, codes.OK},
		{context.Canceled, codes.Canceled},
		{fmt.Errorf("x: %w", context.DeadlineExceeded), codes.DeadlineExceeded},
		{status.Error(codes.Aborted, "seq"), codes.Aborted},
		{errors.New("boom"), codes.Unknown},
	}
	for _, tt := range tests {
		if got := Code(tt.err); got != tt.want {
			t.Errorf("Code(%v) = %v, want %v", tt.err, got, tt.want)
		}
	}
}

func TestRunMeasuresCPU(t *testing.T) {
	ctx := testutil.Context(t, 10*time.Second)
	var sink uint64
	res, err := Run(ctx, Load{Concurrency: 1, Ops: 200}, func(context.Context, int) error {
		x := sink
		for i := range uint64(200_000) {
			x = x*6364136223846793005 + i
		}
		sink = x
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// One goroutine spinning: some CPU, and not much more than one core.
	if res.CPUPerOpUs <= 0 || res.CPUCores <= 0 || res.CPUCores > 1.3 {
		t.Fatalf("cpu = %v cores, %v µs/op", res.CPUCores, res.CPUPerOpUs)
	}
}
