package bench

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/metadata"

	"github.com/cellplane/cellplane/cells"
	"github.com/cellplane/cellplane/internal/logging"
	"github.com/cellplane/cellplane/internal/testutil"
	contextv1 "github.com/cellplane/cellplane/proto/cellplane/context/v1"
)

// The Go benchmarks below drive one kind of cell request each, b.N times
// at concurrency 64, so that a profile covers only that path:
//
//	go test -run '^$' -bench CellAppend -benchtime 20000x -cpuprofile cpu.out ./internal/bench
//	go tool pprof -top -cum cpu.out
//
// The figures to compare with baselines come from `cellplane bench cell`.

func BenchmarkCellAppend(b *testing.B) {
	benchCell(b, func(c contextv1.ContextServiceClient, ids []string) Op {
		data := payload(256)
		var reqs atomic.Uint64
		return func(ctx context.Context, w int) error {
			_, err := c.Append(ctx, &contextv1.AppendRequest{
				ContextId: ids[w],
				Entries:   []*contextv1.Entry{{Role: "user", Content: &contextv1.Entry_Data{Data: data}}},
				RequestId: fmt.Sprintf("append-%d", reqs.Add(1)),
			})
			return err
		}
	})
}

func BenchmarkCellReadLinearizable(b *testing.B) {
	benchCell(b, readBench(contextv1.Consistency_CONSISTENCY_LINEARIZABLE))
}

// BenchmarkCellReadLinearizableLease: linearizable reads under the
// leader lease (--raft-lease-reads), no quorum round.
func BenchmarkCellReadLinearizableLease(b *testing.B) {
	benchCell(b, readBench(contextv1.Consistency_CONSISTENCY_LINEARIZABLE), func(c *cells.Config) { c.Store.Raft.LeaseReads = true })
}

func BenchmarkCellReadStale(b *testing.B) {
	benchCell(b, readBench(contextv1.Consistency_CONSISTENCY_STALE))
}

func readBench(cons contextv1.Consistency) func(contextv1.ContextServiceClient, []string) Op {
	return func(c contextv1.ContextServiceClient, ids []string) Op {
		return func(ctx context.Context, w int) error {
			_, err := c.Read(ctx, &contextv1.ReadRequest{
				ContextId:   ids[w],
				Start:       &contextv1.ReadRequest_Tail{Tail: 1},
				ReadOptions: &contextv1.ReadOptions{Consistency: cons},
			})
			return err
		}
	}
}

// quietLogger sends warnings and errors to t.Log: debug logs would cost
// more than the requests being measured.
func quietLogger(t testing.TB) *slog.Logger {
	return slog.New(logging.NewHandler(testutil.SlogWriter(t), logging.FormatText, slog.LevelWarn, false))
}

// benchCell starts a cell (its config changed by mutate), gives each of
// 64 workers a context holding one entry, and runs b.N ops of the op
// newOp makes against the leader.
func benchCell(b *testing.B, newOp func(contextv1.ContextServiceClient, []string) Op, mutate ...func(*cells.Config)) {
	const conc = 64
	ctx := b.Context()
	cell, err := StartCell(ctx, b.TempDir(), quietLogger(b), mutate...)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = cell.Close() })
	leader := contextv1.NewContextServiceClient(cell.Conn(cell.leader))
	tctx := metadata.AppendToOutgoingContext(ctx, "x-cellplane-tenant", benchTenant)
	ids := make([]string, conc)
	for i := range ids {
		ids[i] = fmt.Sprintf("bench-%03d", i)
	}
	if err := createContexts(tctx, leader, ids); err != nil {
		b.Fatal(err)
	}
	for _, id := range ids {
		_, err := leader.Append(tctx, &contextv1.AppendRequest{ContextId: id, RequestId: "seed-" + id,
			Entries: []*contextv1.Entry{{Role: "user", Content: &contextv1.Entry_Text{Text: "seed"}}}})
		if err != nil {
			b.Fatal(err)
		}
	}

	if len(mutate) > 0 { // a lease-read run: measure once the leader holds its lease
		st := cell.Leader().Store()
		testutil.Eventually(b, 10*time.Second, func() error {
			if st.LeaseRemaining() <= 0 {
				return errors.New("the leader holds no lease")
			}
			return nil
		})
	}
	b.ResetTimer()
	res, err := Run(tctx, Load{Concurrency: conc, Ops: uint64(b.N)}, newOp(leader, ids))
	b.StopTimer()
	if err != nil {
		b.Fatal(err)
	}
	if res.Errors > 0 {
		b.Errorf("%d errors: %s (first: %s)", res.Errors, res.errorsText(), res.FirstError)
	}
	b.ReportMetric(res.OpsPerSec, "ops/s")
	b.ReportMetric(res.Latency.P99, "p99-ms")
	b.ReportMetric(res.CPUPerOpUs, "cpu-µs/op")
}
