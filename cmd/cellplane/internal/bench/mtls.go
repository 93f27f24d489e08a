package bench

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/cellplane/cellplane/internal/dial"
	"github.com/cellplane/cellplane/internal/pki"
	"github.com/cellplane/cellplane/platform"
	contextv1 "github.com/cellplane/cellplane/proto/cellplane/context/v1"
)

// Ratio names of the mtls scenario: on ÷ off for latencies, off ÷ on for
// throughput, so that every ratio is "how much mutual TLS costs" and the
// target is the same bound.
const (
	RatioMTLSRouterP50   = "mtls_router_p50_on_vs_off"
	RatioMTLSRouterP99   = "mtls_router_p99_on_vs_off"
	RatioMTLSRouterQPS   = "mtls_router_qps_off_vs_on"
	RatioMTLSDirectP50   = "mtls_direct_p50_on_vs_off"
	RatioMTLSDirectP99   = "mtls_direct_p99_on_vs_off"
	RatioMTLSDirectQPS   = "mtls_direct_qps_off_vs_on"
	mtlsOn, mtlsOff      = "on", "off"
	mtlsRegion, mtlsCell = "bench", "bench-a"
)

// MTLSTargets are the goals: mutual TLS costs at most 10% of p50
// and of throughput at 64 in flight, on the router path and the direct
// cell path. The p99 ratios are reported without a target.
var MTLSTargets = map[string]Target{
	RatioMTLSRouterP50: {AtLeast: false, Value: 1.10},
	RatioMTLSRouterQPS: {AtLeast: false, Value: 1.10},
	RatioMTLSDirectP50: {AtLeast: false, Value: 1.10},
	RatioMTLSDirectQPS: {AtLeast: false, Value: 1.10},
}

var (
	mtlsPaths = []string{pathRouter, pathDirect}
	mtlsModes = []string{mtlsOn, mtlsOff}
)

// MTLSOptions configures RunMTLS (`cellplane bench mtls`).
type MTLSOptions struct {
	// Concurrency is the number of workers (calls in flight) of every
	// step, closed loop.
	Concurrency int
	// Duration is the measured length of EACH step (one path, one mode,
	// one op, one round); a warm-up precedes each step.
	Duration time.Duration
	// Rounds is how many times every step is repeated; on and off
	// alternate within a round, in an order that flips from round to
	// round. The ratios are the medians of the per-round ratios.
	Rounds int
	// EntrySize is the size in bytes of each appended text entry.
	EntrySize int
	// DataDir is where the two platforms keep their files: a new
	// directory inside it (os.TempDir() when empty), removed at the end.
	DataDir string
	// Logger receives the components' logs (nil: discarded).
	Logger *slog.Logger
	// Progress receives one human line per step (nil: silent).
	Progress io.Writer
}

// DefaultMTLSOptions returns the options of a default run: 64 in flight,
// 3 rounds of 2 s steps, 1 KiB entries (24 steps: under two minutes with
// the start-up).
func DefaultMTLSOptions() MTLSOptions {
	return MTLSOptions{Concurrency: 64, Duration: 2 * time.Second, Rounds: 3, EntrySize: 1024}
}

func (o MTLSOptions) withDefaults() MTLSOptions {
	d := DefaultMTLSOptions()
	if o.Concurrency <= 0 {
		o.Concurrency = d.Concurrency
	}
	if o.Duration <= 0 {
		o.Duration = d.Duration
	}
	if o.Rounds <= 0 {
		o.Rounds = d.Rounds
	}
	if o.EntrySize <= 0 {
		o.EntrySize = d.EntrySize
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o
}

// MTLSResults are the figures of `cellplane bench mtls`.
type MTLSResults struct {
	Concurrency int     `json:"concurrency"`
	EntrySize   int     `json:"entry_size"`
	Rounds      int     `json:"rounds"`
	StepSec     float64 `json:"step_s"`
	WarmupSec   float64 `json:"warmup_s"`

	// Runs are every measured step in run order ("router on append #2").
	Runs []Result `json:"steps"`
	// Summary holds, per path, mode and op, the medians over the rounds.
	Summary []MTLSSummary `json:"summary"`
	// OpRatios are the medians of the per-round ratios per op
	// ("append/mtls_router_p50_on_vs_off"); the report's ratios are the
	// worse of the two ops.
	OpRatios map[string]float64 `json:"op_ratios"`

	// DirectHandshakes counts the TLS handshakes of the direct path's
	// connection (mode on) over the whole run: 1 when the connection was
	// reused by every call, as it must be.
	DirectHandshakes int64 `json:"direct_handshakes"`
	// RouterHandshakes counts, per mode, the handshakes of the router's
	// connections to the cell over the whole run
	// (cellplane_router_backend_handshakes_total{result="ok"} on the
	// router's /metrics): one per cell node the router called, 1 when the
	// leader stayed; RouterHandshakesInSteps those made during the steps
	// (0: the connection opened before them carried every call).
	RouterHandshakes        map[string]int64 `json:"router_handshakes"`
	RouterHandshakesInSteps map[string]int64 `json:"router_handshakes_in_steps"`
	// Elections counts the elections of each platform's cell during the
	// steps (a leader change costs the direct path errors).
	Elections map[string]uint64 `json:"elections"`
	StartSec  float64           `json:"start_s"`
	TotalSec  float64           `json:"total_s"`
	// LoadAvgEnd is the machine's load average at the end.
	LoadAvgEnd []float64 `json:"load_avg_end,omitempty"`
}

// MTLSSummary is one path's figures in one mode for one op: the medians
// over the rounds of each step's p50, p99 and ops/s, and the errors of all
// rounds.
type MTLSSummary struct {
	Path      string  `json:"path"`
	Mode      string  `json:"mtls"`
	Op        string  `json:"op"`
	P50       float64 `json:"p50_ms"`
	P99       float64 `json:"p99_ms"`
	OpsPerSec float64 `json:"ops_per_sec"`
	Errors    uint64  `json:"errors"`
}

// Steps lists every step in run order, for the table.
func (r *MTLSResults) Steps() []Result { return r.Runs }

// Notes lists the medians and the figures that are not steps.
func (r *MTLSResults) Notes() []Note {
	var n []Note
	for _, s := range r.Summary {
		n = append(n, Note{
			fmt.Sprintf("median %s mtls %s %s", s.Path, s.Mode, s.Op),
			fmt.Sprintf("p50 %.3f ms, p99 %.3f ms, %.0f ops/s, %d errors", s.P50, s.P99, s.OpsPerSec, s.Errors),
		})
	}
	n = append(n,
		Note{"direct path TLS handshakes", fmt.Sprintf("%d (one connection for every call)", r.DirectHandshakes)},
		Note{"router's handshakes to the cell", fmt.Sprintf("mtls on %d (%d during the steps), off %d (%d during the steps); one per cell node called",
			r.RouterHandshakes[mtlsOn], r.RouterHandshakesInSteps[mtlsOn], r.RouterHandshakes[mtlsOff], r.RouterHandshakesInSteps[mtlsOff])},
		Note{"cell elections during the steps", fmt.Sprintf("mtls on %d, off %d", r.Elections[mtlsOn], r.Elections[mtlsOff])},
		Note{"each step", fmt.Sprintf("%.1f s after %.2f s warm-up, %d in flight, %d B entries, %d rounds", r.StepSec, r.WarmupSec, r.Concurrency, r.EntrySize, r.Rounds)},
		Note{"start (two platforms)", fmt.Sprintf("%.1f s", r.StartSec)},
		Note{"total", fmt.Sprintf("%.1f s", r.TotalSec)},
	)
	return append(n, loadAvgNote(r.LoadAvgEnd)...)
}

// mtlsSide is one platform of the run and its two paths.
type mtlsSide struct {
	mode      string
	pf        *platform.Platform
	cell      *platform.Cell
	termStart uint64
	// handshakesStart is the router's backend handshakes before the steps.
	handshakesStart int64
	paths           map[string]benchPath
	direct          *grpc.ClientConn
}

// RunMTLS runs `cellplane bench mtls`: two whole platforms in this
// process (package platform, 1 cell of 3 nodes each), one with MutualTLS
// and one without, the same tenant on each; then opts.Rounds rounds of
// 1 KiB Appends and linearizable Reads of the tail at opts.Concurrency,
// on each platform, through the router (the client's hop to the router is
// plaintext on both: what differs is the router's hop to the cell) and
// direct to the cell's leader (with MutualTLS, presenting the router's
// certificate, as the router's own hop does). Every path uses one
// long-lived connection for all its calls (the router's backend pool does
// too), so what is measured is mutual TLS on established connections, not
// handshakes.
func RunMTLS(ctx context.Context, opts MTLSOptions) (*Report, error) {
	opts = opts.withDefaults()
	began := time.Now()
	root, cleanup, err := runDir(opts.DataDir)
	if err != nil {
		return nil, err
	}
	defer cleanup()
	machine := DescribeMachine(root)
	p := progress{opts.Progress}
	res := &MTLSResults{
		Concurrency: opts.Concurrency,
		EntrySize:   opts.EntrySize,
		Rounds:      opts.Rounds,
		StepSec:     opts.Duration.Seconds(),
		WarmupSec:   warmupFor(opts.Duration).Seconds(),
		Elections:   map[string]uint64{},

		RouterHandshakes:        map[string]int64{},
		RouterHandshakesInSteps: map[string]int64{},
	}
	p.printf("bench mtls: %d in flight, %s per step, %d rounds, data dir %s", opts.Concurrency, opts.Duration, opts.Rounds, root)

	var handshakes atomic.Int64
	sides := map[string]*mtlsSide{}
	defer func() {
		for _, s := range sides {
			s.close()
		}
	}()
	for _, mode := range mtlsModes {
		p.printf("starting a platform with mutual TLS %s", mode)
		s, err := startMTLSSide(ctx, filepath.Join(root, mode), mode, opts, &handshakes)
		if s != nil {
			sides[mode] = s
		}
		if err != nil {
			return nil, err
		}
	}
	res.StartSec = time.Since(began).Seconds()

	if err := runMTLSSteps(ctx, opts, sides, res, p); err != nil {
		return nil, err
	}
	for mode, s := range sides {
		res.Elections[mode] = s.cell.Term() - s.termStart
		n, err := routerHandshakes(ctx, s.pf)
		if err != nil {
			return nil, err
		}
		res.RouterHandshakes[mode], res.RouterHandshakesInSteps[mode] = n, n-s.handshakesStart
		s.close()
	}
	res.DirectHandshakes = handshakes.Load()
	res.TotalSec = time.Since(began).Seconds()
	res.LoadAvgEnd = loadAvg()
	return &Report{
		Scenario: "mtls",
		Machine:  machine,
		Results:  res,
		Ratios:   mtlsRatios(res),
		Targets:  MTLSTargets,
	}, nil
}

// startMTLSSide starts one platform (MutualTLS when mode is on), its cell
// and the bench tenant, and opens the two paths' connections.
func startMTLSSide(ctx context.Context, dir, mode string, opts MTLSOptions, handshakes *atomic.Int64) (_ *mtlsSide, err error) {
	pf, err := startPlatform(ctx, dir, platformOptions{Logger: opts.Logger, Insecure: mode != mtlsOn}, progress{})
	if err != nil {
		return nil, err
	}
	s := &mtlsSide{mode: mode, pf: pf}
	defer func() {
		if err != nil {
			s.close()
		}
	}()
	if s.cell, err = addCell(ctx, pf, mtlsRegion, mtlsCell, 3, nil); err != nil {
		return s, err
	}
	if _, err := createTenant(ctx, pf, benchTenant, mtlsRegion, mtlsCell, ""); err != nil {
		return s, err
	}
	if err := waitRouted(ctx, pf, benchTenant); err != nil {
		return s, fmt.Errorf("bench: %w", err)
	}
	leader, err := s.cell.WaitLeader(ctx, 0)
	if err != nil {
		return s, fmt.Errorf("bench: %w", err)
	}
	s.termStart = s.cell.Term()

	// The direct path: one connection to the leader, with the router's
	// identity under mutual TLS (cells take ContextService calls from
	// routers, workers and nodes only).
	dc := dial.DefaultConfig()
	if mode == mtlsOn {
		src, err := routerSource(pf)
		if err != nil {
			return s, err
		}
		dc.Credentials = &countingCreds{TransportCredentials: pki.ClientCredentials(src, pki.ExpectKinds(pki.KindNode)), n: handshakes}
	}
	if s.direct, err = dial.New(leader.Info().GRPC, dc); err != nil {
		return s, fmt.Errorf("bench: dial the leader: %w", err)
	}
	tctx := asTenant(ctx, benchTenant)
	s.paths = map[string]benchPath{
		pathRouter: {name: pathRouter, cs: routerData(pf), ctx: tctx},
		pathDirect: {name: pathDirect, cs: contextv1.NewContextServiceClient(s.direct), ctx: tctx},
	}
	return s, nil
}

func (s *mtlsSide) close() {
	if s.direct != nil {
		_ = s.direct.Close()
		s.direct = nil
	}
	if s.pf != nil {
		s.pf.Close()
		s.pf = nil
	}
}

// routerSource is the TLS material of pf's router (its certificate in
// the platform's certs directory).
func routerSource(pf *platform.Platform) (*pki.Source, error) {
	dir := pf.CertsDir()
	matches, err := filepath.Glob(filepath.Join(dir, "router.*.crt"))
	if err != nil || len(matches) != 1 {
		return nil, fmt.Errorf("bench: %s holds %d router certificates, want 1 (%v)", dir, len(matches), err)
	}
	name := filepath.Base(matches[0])
	src, err := pki.NewSource(pki.DirConfig(dir, name[:len(name)-len(".crt")]))
	if err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	return src, nil
}

// routerHandshakes reads cellplane_router_backend_handshakes_total
// {result="ok"} from pf's router's /metrics.
func routerHandshakes(ctx context.Context, pf *platform.Platform) (int64, error) {
	const series = `cellplane_router_backend_handshakes_total{result="ok"} `
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+pf.Router().HTTPAddr()+"/metrics", nil)
	if err != nil {
		return 0, fmt.Errorf("bench: %w", err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, fmt.Errorf("bench: router metrics: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("bench: router metrics: %s", resp.Status)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), series); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil {
				return 0, fmt.Errorf("bench: router metrics: %q: %w", sc.Text(), err)
			}
			return int64(f), nil
		}
	}
	if err := sc.Err(); err != nil {
		return 0, fmt.Errorf("bench: router metrics: %w", err)
	}
	return 0, nil // no handshake yet: the series is not exported
}

// countingCreds counts client handshakes: a path that reuses its
// connection makes one.
type countingCreds struct {
	credentials.TransportCredentials
	n *atomic.Int64
}

func (c *countingCreds) ClientHandshake(ctx context.Context, authority string, raw net.Conn) (net.Conn, credentials.AuthInfo, error) {
	c.n.Add(1)
	return c.TransportCredentials.ClientHandshake(ctx, authority, raw)
}

func (c *countingCreds) Clone() credentials.TransportCredentials {
	return &countingCreds{TransportCredentials: c.TransportCredentials.Clone(), n: c.n}
}

// runMTLSSteps runs opts.Rounds rounds. In a round, each path (their
// order rotating) runs on and off back to back (on first in even rounds,
// off first in odd ones), an append step then a read step each. It fills
// res.Runs and res.Summary.
func runMTLSSteps(ctx context.Context, opts MTLSOptions, sides map[string]*mtlsSide, res *MTLSResults, p progress) error {
	ids := make([]string, opts.Concurrency)
	for i := range ids {
		ids[i] = fmt.Sprintf("mtls-bench-%03d", i)
	}
	for _, s := range sides {
		rp := s.paths[pathRouter]
		if err := createContexts(rp.ctx, rp.cs, ids); err != nil {
			return err
		}
		n, err := routerHandshakes(ctx, s.pf)
		if err != nil {
			return err
		}
		s.handshakesStart = n
	}
	ops := contextOps(ids, opts.EntrySize, "mb")
	byKey := map[string][]Result{} // path/mode/op → one Result per round
	for round := range opts.Rounds {
		modes := mtlsModes
		if round%2 == 1 {
			modes = []string{mtlsOff, mtlsOn}
		}
		for i := range mtlsPaths {
			path := mtlsPaths[(i+round)%len(mtlsPaths)]
			for _, mode := range modes {
				bp := sides[mode].paths[path]
				for _, op := range routerOps {
					l := Load{
						Name:        fmt.Sprintf("%s %s %s #%d", path, mode, op, round+1),
						Concurrency: opts.Concurrency,
						Duration:    opts.Duration,
						Warmup:      warmupFor(opts.Duration),
						OpTimeout:   10 * time.Second,
					}
					r, err := Run(bp.ctx, l, ops[op](bp))
					if err != nil {
						return fmt.Errorf("bench: %s: %w", l.Name, err)
					}
					p.result(r)
					res.Runs = append(res.Runs, r)
					k := mtlsKey(path, mode, op)
					byKey[k] = append(byKey[k], r)
				}
			}
		}
	}
	for _, path := range mtlsPaths {
		for _, mode := range mtlsModes {
			for _, op := range routerOps {
				rs := byKey[mtlsKey(path, mode, op)]
				s := MTLSSummary{
					Path: path, Mode: mode, Op: op,
					P50:       median(rs, func(r Result) float64 { return r.Latency.P50 }),
					P99:       median(rs, func(r Result) float64 { return r.Latency.P99 }),
					OpsPerSec: round3(median(rs, func(r Result) float64 { return r.OpsPerSec })),
				}
				for _, r := range rs {
					s.Errors += r.Errors
				}
				res.Summary = append(res.Summary, s)
			}
		}
	}
	res.OpRatios = perRoundRatios(byKey, opts.Rounds)
	return nil
}

func mtlsKey(path, mode, op string) string { return path + "/" + mode + "/" + op }

// perRoundRatios computes, per op, each ratio of every round (on ÷ off
// for p50 and p99, off ÷ on for ops/s) and keeps the median over the
// rounds, keyed "<op>/<ratio>". A round whose inputs are zero is skipped.
func perRoundRatios(byKey map[string][]Result, rounds int) map[string]float64 {
	out := map[string]float64{}
	for _, path := range mtlsPaths {
		names := map[string]string{pathRouter: "router", pathDirect: "direct"}
		for _, op := range routerOps {
			on, off := byKey[mtlsKey(path, mtlsOn, op)], byKey[mtlsKey(path, mtlsOff, op)]
			for _, r := range []struct {
				key      string
				val      func(Result) float64
				inverted bool // off ÷ on
			}{
				{"mtls_" + names[path] + "_p50_on_vs_off", func(r Result) float64 { return r.Latency.P50 }, false},
				{"mtls_" + names[path] + "_p99_on_vs_off", func(r Result) float64 { return r.Latency.P99 }, false},
				{"mtls_" + names[path] + "_qps_off_vs_on", func(r Result) float64 { return r.OpsPerSec }, true},
			} {
				var vs []float64
				for i := range min(rounds, len(on), len(off)) {
					a, b := r.val(on[i]), r.val(off[i])
					if r.inverted {
						a, b = b, a
					}
					if a > 0 && b > 0 {
						vs = append(vs, a/b)
					}
				}
				if len(vs) > 0 {
					out[op+"/"+r.key] = round3(medianOf(vs))
				}
			}
		}
	}
	return out
}

// mtlsRatios keeps, for each ratio, the worse (larger) of the two ops'.
func mtlsRatios(res *MTLSResults) map[string]float64 {
	ratios := map[string]float64{}
	for k, v := range res.OpRatios {
		for _, op := range routerOps {
			if name, ok := strings.CutPrefix(k, op+"/"); ok {
				if old, seen := ratios[name]; !seen || v > old {
					ratios[name] = v
				}
			}
		}
	}
	return ratios
}

// medianOf returns the median of vs (the mean of the middle two for an
// even count).
func medianOf(vs []float64) float64 {
	s := append([]float64(nil), vs...)
	sort.Float64s(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}
