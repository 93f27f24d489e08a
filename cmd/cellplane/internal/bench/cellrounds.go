package bench

import (
	"context"
	"fmt"
	"os"
	"slices"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"

	contextv1 "github.com/cellplane/cellplane/proto/cellplane/context/v1"
)

// RatioWritesVsRaftFloor is the cell's writes/s at 64 in flight ÷ the
// bare-Raft baseline's (per-process mode only).
const RatioWritesVsRaftFloor = "writes_vs_raft_floor"

// runCellProcesses is RunCell's per-process mode (docs/benchmarks.md,
// "Methodology"): the cell, etcd and the bare-Raft floor each run as
// three member processes with mutual TLS; this process is the only
// client. After the cell's tenant is filled past its change-log bound,
// opts.Rounds rounds each run the fsync loop and every system at every
// concurrency, the systems' order rotating; the ratios are the medians of
// the per-round ratios over the rounds whose machine load besides the
// benchmark stayed under opts.MaxForeignCores.
func runCellProcesses(ctx context.Context, opts CellOptions, root string, res *CellResults, p progress) (map[string]float64, error) {
	bin := opts.Binary
	if bin == "" {
		exe, err := os.Executable()
		if err != nil {
			return nil, fmt.Errorf("bench: the cellplane binary: %w", err)
		}
		bin = exe
	}
	res.Mode = "processes"
	res.StepSec, res.WarmupSec = opts.RoundDuration.Seconds(), opts.Warmup.Seconds()
	res.MaxForeignCores = opts.MaxForeignCores
	env, err := newProcEnv(bin, root, p)
	if err != nil {
		return nil, err
	}
	if opts.LeaseReads {
		env.cellArgs, res.LeaseReads = append(env.cellArgs, "--raft-lease-reads"), true
	}
	logLevel := opts.MemberLogLevel
	if logLevel == "" {
		logLevel = "warn"
	}

	p.printf("starting 3 cell processes, 3 etcd member processes, 3 bare-Raft member processes (mutual TLS)")
	t0 := time.Now()
	if opts.DedupWindow > 0 {
		env.cellArgs = append(env.cellArgs, "--dedup-window", opts.DedupWindow.String())
	}
	cell, err := env.startProcCell(ctx, logLevel)
	if err != nil {
		return nil, err
	}
	defer cell.close()
	res.CellStartSec = time.Since(t0).Seconds()
	t0 = time.Now()
	etcd, err := env.startProcEtcd(ctx)
	if err != nil {
		return nil, err
	}
	defer etcd.close()
	res.EtcdStartSec = time.Since(t0).Seconds()
	raftSys, err := env.startProcRaft(ctx, logLevel)
	if err != nil {
		return nil, err
	}
	defer raftSys.close()
	all := []*procSystem{cell, etcd, raftSys}
	for _, s := range all {
		for _, c := range s.procs {
			res.Members = append(res.Members, fmt.Sprintf("%s: pid %d", c.name, c.pid()))
		}
	}
	p.printf("  ready: cell in %.2f s, etcd in %.2f s", res.CellStartSec, res.EtcdStartSec)
	if termStart, err := procCellTerm(ctx, cell); err == nil {
		defer func() {
			if term, err := procCellTerm(ctx, cell); err == nil {
				res.CellElections = term - termStart
			}
		}()
	}

	tctx := tenantCtx(ctx)
	maxConc := max(slicesMax(opts.Concurrency), opts.ReadConcurrency)
	ids := make([]string, maxConc)
	for i := range ids {
		ids[i] = fmt.Sprintf("bench-%03d", i)
	}
	if err := createContexts(tctx, contextv1.NewContextServiceClient(cell.conns[cell.leader]), ids); err != nil {
		return nil, err
	}

	step := func(name string, conc int, s *procSystem, round int) Load {
		l := Load{Name: name, Concurrency: conc, Duration: opts.RoundDuration, Warmup: opts.Warmup, OpTimeout: 10 * time.Second}
		if s == nil {
			return l
		}
		var a counters
		l.Window = func(open bool) {
			if open {
				a = env.read(s, all)
				return
			}
			b := env.read(s, all)
			res.pending = func(r *Result) { r.Round = round; fillProcFigures(r, s.name, a, b) }
		}
		return l
	}
	run := func(l Load, op Op) (Result, error) {
		res.pending = nil
		r, err := Run(tctx, l, op)
		if err != nil {
			return r, err
		}
		if res.pending != nil {
			res.pending(&r)
		}
		if err := cell.procs.alive(); err != nil {
			return r, err
		}
		p.result(r)
		return r, nil
	}

	// Every append of the run (prefill, every step of every round) gets a
	// request id of its own.
	var reqs, etcdKeys atomic.Uint64

	// Steady state: the tenant's change log past its bound (trimming on
	// every apply from then on), the contexts' heads large.
	if opts.Prefill > 0 {
		p.printf("prefilling the cell's tenant with %d appends", opts.Prefill)
		pre := Load{Name: "cell prefill", Concurrency: min(64, maxConc), Ops: uint64(opts.Prefill), OpTimeout: 10 * time.Second}
		t0 := time.Now()
		r, err := Run(tctx, pre, appendOp(cell.conns[cell.leader], ids, opts.EntrySize, &reqs))
		if err != nil {
			return nil, err
		}
		res.PrefillAppends, res.PrefillSec = r.Ops, time.Since(t0).Seconds()
		p.result(r)
	}

	res.LeaderChanges = map[string]int{}
	ops := map[string]func(conc int) Op{
		sysCell: func(int) Op { return appendOp(cell.conns[cell.leader], ids, opts.EntrySize, &reqs) },
		sysRaft: func(int) Op { return appendOp(raftSys.conns[raftSys.leader], ids, opts.EntrySize, &reqs) },
		sysEtcd: func(int) Op {
			value := string(payload(opts.EntrySize))
			cli := etcd.etcd
			return func(ctx context.Context, w int) error {
				// A new key per Put, over the whole run.
				_, err := cli.Put(ctx, fmt.Sprintf("bench/%012d", etcdKeys.Add(1)), value)
				return err
			}
		},
	}
	names := map[string]string{sysCell: stepCellAppend, sysEtcd: stepEtcdPut, sysRaft: stepRaftAppend}
	systems := map[string]*procSystem{sysCell: cell, sysEtcd: etcd, sysRaft: raftSys}
	order := []string{sysCell, sysEtcd, sysRaft}
	for round := 1; round <= opts.Rounds; round++ {
		rd := CellRound{Round: round, LoadAvgStart: loadAvg()}
		p.printf("round %d of %d (load %v)", round, opts.Rounds, rd.LoadAvgStart)
		fs, err := func() (Result, error) {
			l := step(stepFsync, 1, nil, round)
			var a counters
			l.Window = func(open bool) {
				if open {
					a = env.read(&procSystem{}, all)
					return
				}
				b := env.read(&procSystem{}, all)
				res.pending = func(r *Result) {
					r.Round = round
					fillProcFigures(r, "", a, b)
					r.MemberCPUCores, r.MemberCPUPerOpUs = 0, 0
				}
			}
			res.pending = nil
			r, err := FsyncLoop(ctx, root, opts.EntrySize, l)
			if err == nil && res.pending != nil {
				res.pending(&r)
			}
			return r, err
		}()
		if err != nil {
			return nil, err
		}
		p.result(fs)
		res.Fsyncs = append(res.Fsyncs, fs)
		byKey := map[string]Result{}
		rd.MaxForeignCores = fs.ForeignCores
		for _, sys := range order {
			rd.Order = append(rd.Order, sys)
			for _, c := range opts.Concurrency {
				if env.refreshLeader(ctx, systems[sys]) {
					res.LeaderChanges[sys]++
					p.printf("  %s: leadership moved to member %d", sys, systems[sys].leader+1)
				}
				r, err := run(step(names[sys], c, systems[sys], round), ops[sys](c))
				if err != nil {
					return nil, err
				}
				rd.MaxForeignCores = max(rd.MaxForeignCores, r.ForeignCores)
				byKey[fmt.Sprintf("%s/%d", sys, c)] = r
				switch sys {
				case sysCell:
					res.Writes = append(res.Writes, r)
				case sysEtcd:
					res.Etcd = append(res.Etcd, r)
				case sysRaft:
					res.Raft = append(res.Raft, r)
				}
			}
		}
		rd.Noisy = opts.MaxForeignCores > 0 && rd.MaxForeignCores > opts.MaxForeignCores
		rd.Ratios = roundRatios(fs, byKey)
		if rd.Noisy {
			p.printf("  round %d is noisy (%.2f cores used besides the benchmark > %.2f): left out of the medians", round, rd.MaxForeignCores, opts.MaxForeignCores)
		}
		res.Rounds = append(res.Rounds, rd)
		order = append(order[1:], order[0]) // the next round starts with the next system
	}

	// Reads, once, on the cell.
	if env.refreshLeader(ctx, cell) {
		res.LeaderChanges[sysCell]++
	}
	if err := procReads(tctx, opts, cell, all, env, ids, step, run, res); err != nil {
		return nil, err
	}
	if len(res.Fsyncs) > 0 {
		res.Fsync = res.Fsyncs[0]
	}
	return medianRatios(res), nil
}

// procReads runs the read steps against the cell's leader and a follower.
func procReads(tctx context.Context, opts CellOptions, cell *procSystem, all []*procSystem, env *procEnv, ids []string,
	step func(string, int, *procSystem, int) Load, run func(Load, Op) (Result, error), res *CellResults) error {
	read := func(conn *grpc.ClientConn, c contextv1.Consistency) Op {
		client := contextv1.NewContextServiceClient(conn)
		return func(ctx context.Context, w int) error {
			_, err := client.Read(ctx, &contextv1.ReadRequest{
				ContextId:   ids[w%len(ids)],
				Start:       &contextv1.ReadRequest_Tail{Tail: 1},
				ReadOptions: &contextv1.ReadOptions{Consistency: c},
			})
			return err
		}
	}
	leader, follower := cell.conns[cell.leader], cell.conns[(cell.leader+1)%len(cell.conns)]
	lin, stale := contextv1.Consistency_CONSISTENCY_LINEARIZABLE, contextv1.Consistency_CONSISTENCY_STALE
	rc := opts.ReadConcurrency
	for _, s := range []struct {
		name string
		op   Op
	}{{readLinMax, read(leader, lin)}, {readStaleLdr, read(leader, stale)}, {readStaleFollw, read(follower, stale)}} {
		r, err := run(step(s.name, rc, cell, 0), s.op)
		if err != nil {
			return err
		}
		res.Reads = append(res.Reads, r)
	}
	half := step(readLinHalf, rc, cell, 0)
	half.Rate = res.Reads[0].OpsPerSec / 2
	r, err := run(half, read(leader, lin))
	if err != nil {
		return err
	}
	res.Reads = append(res.Reads, r)
	return nil
}

// roundRatios computes one round's ratios from its fsync loop and its
// steps keyed "system/concurrency".
func roundRatios(fs Result, by map[string]Result) map[string]float64 {
	out := map[string]float64{}
	put := func(k string, num, den float64) {
		if num > 0 && den > 0 {
			out[k] = round3(num / den)
		}
	}
	c64 := fmt.Sprintf("/%d", ratioWritesConcurrency)
	if w, ok := by[sysCell+c64]; ok {
		put(RatioWritesVsFsync, w.OpsPerSec, fs.OpsPerSec)
		put(RatioWritesVsEtcd, w.OpsPerSec, by[sysEtcd+c64].OpsPerSec)
		put(RatioWritesVsRaftFloor, w.OpsPerSec, by[sysRaft+c64].OpsPerSec)
	}
	if w, ok := by[sysCell+"/1"]; ok {
		put(RatioWriteP50VsFsync, w.Latency.P50, fs.Latency.P50)
	}
	return out
}

// medianRatios returns the medians of the rounds' ratios over the quiet
// rounds (over every round, with res.NoisyRatios set, when none was
// quiet), and the read ratio.
func medianRatios(res *CellResults) map[string]float64 {
	use := slices.DeleteFunc(slices.Clone(res.Rounds), func(r CellRound) bool { return r.Noisy })
	if len(use) == 0 {
		use, res.NoisyRatios = res.Rounds, true
	}
	res.RoundsUsed = len(use)
	out := map[string]float64{}
	for _, k := range []string{RatioWritesVsEtcd, RatioWritesVsRaftFloor, RatioWriteP50VsFsync, RatioWritesVsFsync} {
		var vs []float64
		for _, r := range use {
			if v, ok := r.Ratios[k]; ok {
				vs = append(vs, v)
			}
		}
		if len(vs) > 0 {
			out[k] = round3(medianOf(vs))
		}
	}
	for _, r := range res.Reads {
		if r.Name == readLinHalf && r.Ops > 0 {
			out[RatioLinReadP99AtHalf] = r.Latency.P99
		}
	}
	return out
}
