package faults

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/cellplane/cellplane/internal/acklog"
	"github.com/cellplane/cellplane/internal/cperr"
	"github.com/cellplane/cellplane/internal/faultnet"
	"github.com/cellplane/cellplane/internal/histcheck"
	"github.com/cellplane/cellplane/internal/pki"
	"github.com/cellplane/cellplane/internal/retry"
	"github.com/cellplane/cellplane/internal/rpcerr"
	"github.com/cellplane/cellplane/internal/tenantmd"
	"github.com/cellplane/cellplane/internal/testutil"
	"github.com/cellplane/cellplane/platform"
	cellv1 "github.com/cellplane/cellplane/proto/cellplane/cell/v1"
	contextv1 "github.com/cellplane/cellplane/proto/cellplane/context/v1"
	cpv1 "github.com/cellplane/cellplane/proto/cellplane/controlplane/v1"
)

// The suite's knobs, read from the environment (make chaos sets them).
const (
	// envAll runs every scenario; without it the default run keeps the
	// fast subset and skips the others naming make chaos.
	envAll = "CELLPLANE_CHAOS_ALL"
	// envSeed is the first seed (default 1); every failure names the seed.
	envSeed = "CELLPLANE_CHAOS_SEED"
	// envCount is how many seeds each scenario runs (default 1).
	envCount = "CELLPLANE_CHAOS_COUNT"
	// envPhase is the length of each phase of a scenario (default 2s).
	envPhase = "CELLPLANE_CHAOS_PHASE"
)

// suite is the parsed environment.
type suite struct {
	all   bool
	seed  uint64
	count int
	phase time.Duration
}

func loadSuite(t *testing.T) suite {
	t.Helper()
	s := suite{seed: 1, count: 1, phase: 2 * time.Second}
	s.all = os.Getenv(envAll) == "1"
	if v := os.Getenv(envSeed); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			t.Fatalf("%s=%q: %v", envSeed, v, err)
		}
		s.seed = n
	}
	if v := os.Getenv(envCount); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			t.Fatalf("%s=%q: want a count ≥ 1", envCount, v)
		}
		s.count = n
	}
	if v := os.Getenv(envPhase); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			t.Fatalf("%s=%q: want a positive duration", envPhase, v)
		}
		s.phase = d
	}
	return s
}

// scenario runs one fault scenario once per seed of the suite, each in a
// subtest named after its seed: the harness up (with opts), clients
// through the router, a phase, fault (which heals what it broke), a phase
// of recovery, the load stopped, every invariant checked (harness.check).
// fast scenarios run in the default `go test`; the others only with
// CELLPLANE_CHAOS_ALL=1 (make chaos).
func scenario(t *testing.T, fast bool, fault func(h *harness, l *load), opts ...harnessOption) {
	if testing.Short() {
		t.Skip("the fault suite starts processes: not with -short")
	}
	if runtime.GOOS != "linux" {
		t.Skip("the fault suite pauses processes with SIGSTOP: Linux only")
	}
	s := loadSuite(t)
	if !fast && !s.all {
		t.Skipf("a long scenario: run it with `make chaos` (or %s=1 go test ./test/faults)", envAll)
	}
	for i := range s.count {
		seed := s.seed + uint64(i)
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) {
			h := newHarness(t, seed, s.phase, opts...)
			defer h.report()
			h.up()
			l := h.startLoad(3)
			h.wait(h.phase)
			fault(h, l)
			h.wait(h.phase)
			l.stop()
			h.check(l)
		})
	}
}

// harness is one 3-node cell whose nodes are child processes of the
// cellplane binary, with the control plane (embedded etcd) and a router
// in this process. Each directed Raft link between two nodes goes through
// its own faultnet proxy (the dialing node's --raft-route), so a test can
// cut, blackhole one direction of, slow or lose the traffic of any link.
type harness struct {
	t     *testing.T
	seed  uint64
	phase time.Duration
	rng   *rand.Rand
	p     *platform.Platform
	cell  *platform.Cell
	nodes []*platform.Node
	// links[i][j] carries node i's connections to node j.
	links [3][3]*faultnet.Proxy
	// data is ContextService through the router.
	data   contextv1.ContextServiceClient
	tenant string
	// direct are ContextService clients of each node (router identity).
	direct [3]contextv1.ContextServiceClient
	mon    *monitor
	// hist records every load's operations (one history: the loads share
	// the contexts and keys); loads counts the loads started.
	hist  *histcheck.History
	loads int
	// extraArgs are added to every node's command line.
	extraArgs []string
	start     time.Time
	dataDir   string
	// ackDir holds the nodes' acknowledgement records (CELLPLANE_ACK_LOG,
	// internal/acklog): outside their data dirs, which a scenario may wipe.
	ackDir string
	// tamperAcks, when set, changes the records before the I5 check
	// (CELLPLANE_CHAOS_PLANT=i5 plants a violation through it, to see the
	// check fail end to end).
	tamperAcks func([]acklog.Record) []acklog.Record
	timeline   []string
	tlMu       sync.Mutex
}

// harnessOption adjusts a harness before its nodes start.
type harnessOption func(*harness)

// withNodeArgs adds command-line flags to every node.
func withNodeArgs(args ...string) harnessOption {
	return func(h *harness) { h.extraArgs = append(h.extraArgs, args...) }
}

const cellID = "r1-a"

func newHarness(t *testing.T, seed uint64, phase time.Duration, opts ...harnessOption) *harness {
	t.Helper()
	h := &harness{t: t, seed: seed, phase: phase, rng: rand.New(rand.NewPCG(seed, 0xfa17)), tenant: "acme", start: time.Now(), hist: histcheck.New()}
	for _, o := range opts {
		o(h)
	}
	if os.Getenv(envPlant) == "i5" {
		h.tamperAcks = plantI5
	}
	return h
}

// envPlant plants a violation in a run's evidence, to see a check fail
// end to end: "i5" adds to the acknowledgement records a write of the
// first owner appended after the last owner's first acknowledgement (a
// second writable owner).
const envPlant = "CELLPLANE_CHAOS_PLANT"

func plantI5(recs []acklog.Record) []acklog.Record {
	if len(recs) == 0 {
		return recs
	}
	first, last := recs[0], recs[0]
	for _, r := range recs {
		if r.Term < first.Term || (r.Term == first.Term && r.After < first.After) {
			first = r
		}
		if r.Term > last.Term || (r.Term == last.Term && r.After < last.After) {
			last = r
		}
	}
	if first.Term == last.Term {
		last.Term++ // one term only: the planted write is of a term before it
		recs = append(recs, last)
		first.Term = last.Term - 1
	}
	z := first
	z.Index = 0
	z.Before, z.After = last.After+1, last.After+2
	return append(recs, z)
}

// up starts the platform and the cell and creates the tenant with its
// contexts.
func (h *harness) up() {
	t := h.t
	t.Helper()
	cfg := platform.DefaultConfig()
	cfg.Name = "faults"
	cfg.DataDir = t.TempDir()
	h.dataDir = cfg.DataDir
	cfg.Regions, cfg.CellsPerRegion = nil, 0
	cfg.MultiProcess, cfg.Binary = true, binary
	cfg.NodeHost = testutil.LoopbackHost(t)
	h.ackDir = filepath.Join(cfg.DataDir, "acks")
	cfg.ChildEnv = func(platform.NodeInfo) []string { return []string{acklog.Env + "=" + h.ackDir} }
	cfg.ChildLogLevel = "info"
	cfg.MutualTLS = true
	cfg.EtcdUnsafeNoFsync = true
	cfg.ShutdownTimeout = 5 * time.Second
	cfg.Logger = testutil.Logger(t)
	var mu sync.Mutex
	cfg.ChildArgs = func(n platform.NodeInfo, cell []platform.NodeInfo) []string {
		mu.Lock()
		defer mu.Unlock()
		i := nodeIndex(cell, n.ID)
		var routes []string
		for j, peer := range cell {
			if j == i {
				continue
			}
			if h.links[i][j] == nil {
				px, err := faultnet.New(peer.Raft)
				if err != nil {
					panic(err) // a loopback listener: nothing to recover
				}
				px.Seed(h.seed*31 + uint64(i*3+j))
				h.links[i][j] = px
			}
			routes = append(routes, peer.Raft+"="+h.links[i][j].Addr())
		}
		return append([]string{"--raft-route", strings.Join(routes, ",")}, h.extraArgs...)
	}
	ctx := testutil.Context(t, 3*time.Minute)
	p, err := platform.Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	h.p = p
	t.Cleanup(func() {
		for _, n := range h.nodes {
			_ = n.Resume() // a paused node would hold up Close
		}
		p.Close()
		for i := range h.links {
			for _, px := range h.links[i] {
				if px != nil {
					px.Close()
				}
			}
		}
		if t.Failed() {
			// The data dir goes with the test: keep the node logs.
			if dir, err := h.keep("logs"); err == nil && os.CopyFS(dir, os.DirFS(filepath.Join(cfg.DataDir, "logs"))) == nil {
				t.Logf("seed %d: node logs kept in %s", h.seed, dir)
			}
		}
	})
	h.cell, err = p.AddCell(ctx, platform.CellSpec{Region: "r1", ID: cellID, Nodes: 3})
	if err != nil {
		t.Fatalf("seed %d: cell: %v", h.seed, err)
	}
	h.nodes = h.cell.Nodes()
	h.data = contextv1.NewContextServiceClient(p.RouterConn())
	src, err := pki.NewSource(pki.DirConfig(p.CertsDir(), pki.RouterIdentity(cfg.Name, cfg.Name+"-router").FileName()))
	if err != nil {
		t.Fatal(err)
	}
	for i, n := range h.nodes {
		cc, err := grpc.NewClient(n.Info().GRPC, grpc.WithTransportCredentials(pki.ClientCredentials(src, pki.ExpectKinds(pki.KindNode))))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cc.Close() })
		h.direct[i] = contextv1.NewContextServiceClient(cc)
	}
	if _, err := p.Admin().CreateTenant(ctx, &cpv1.CreateTenantRequest{Id: h.tenant, HomeRegion: "r1", Cell: cellID}); err != nil {
		t.Fatalf("create tenant: %v", err)
	}
	for _, c := range append(slices.Clone(contexts), probeContext) {
		testutil.Eventually(t, 30*time.Second, func() error {
			_, err := h.data.CreateContext(h.out(ctx), &contextv1.CreateContextRequest{ContextId: c})
			if err == nil || errors.Is(rpcerr.FromStatus(err), cperr.ErrAlreadyExists) {
				return nil
			}
			return err
		})
	}
	// The nodes' Raft traffic goes through the proxies (--raft-route):
	// the leader reached each follower through its link.
	li := h.leader()
	for _, j := range others(li) {
		if h.links[li][j].Accepted() == 0 {
			h.fatalf("no Raft connection from the leader %s to %s went through its proxy", h.nodes[li].ID(), h.nodes[j].ID())
		}
	}
	h.mon = startMonitor(h)
	t.Cleanup(h.mon.stop)
	h.event("up: cell %s, nodes %v", cellID, h.ids())
}

func nodeIndex(cell []platform.NodeInfo, id string) int {
	for i, n := range cell {
		if n.ID == id {
			return i
		}
	}
	panic("node " + id + " is not in its cell")
}

func (h *harness) ids() []string {
	var out []string
	for _, n := range h.nodes {
		out = append(out, n.ID())
	}
	return out
}

// out adds the tenant's metadata to ctx.
func (h *harness) out(ctx context.Context) context.Context {
	return tenantmd.Outgoing(ctx, h.tenant, 0)
}

// event logs a step of the fault timeline (with its time since start);
// report prints the timeline when the test failed.
func (h *harness) event(format string, args ...any) {
	line := fmt.Sprintf("%8.3fs ", time.Since(h.start).Seconds()) + fmt.Sprintf(format, args...)
	h.tlMu.Lock()
	h.timeline = append(h.timeline, line)
	h.tlMu.Unlock()
	h.t.Log(line)
}

func (h *harness) report() {
	if h.t.Failed() {
		h.t.Logf("FAILED with %s=%d (rerun: make chaos SEED=%d COUNT=1 RUN=%s)", envSeed, h.seed, h.seed, strings.Split(h.t.Name(), "/")[0])
	}
}

// keep makes a directory that outlives the test (the failure's
// evidence), named after the test, the seed and what.
func (h *harness) keep(what string) (string, error) {
	name := strings.NewReplacer("/", "_", "=", "").Replace(h.t.Name())
	return os.MkdirTemp("", fmt.Sprintf("cellplane-faults-%s-%s-", name, what))
}

// fatalf fails the test naming the seed.
func (h *harness) fatalf(format string, args ...any) {
	h.t.Helper()
	h.t.Fatalf("seed %d: "+format, append([]any{h.seed}, args...)...)
}

func (h *harness) errorf(format string, args ...any) {
	h.t.Helper()
	h.t.Errorf("seed %d: "+format, append([]any{h.seed}, args...)...)
}

// wait lets a phase pass.
func (h *harness) wait(d time.Duration) {
	if err := retry.Sleep(testutil.Context(h.t, d+time.Minute), d); err != nil {
		h.fatalf("wait: %v", err)
	}
}

// ---- node status ----

// status asks node i for its own view (GetStatus), optionally with the
// state digest.
func (h *harness) status(ctx context.Context, i int, digest bool) (*cellv1.GetStatusResponse, error) {
	conn := h.nodes[i].Conn()
	if conn == nil {
		return nil, fmt.Errorf("node %s does not run", h.nodes[i].ID())
	}
	cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	return cellv1.NewCellServiceClient(conn).GetStatus(cctx, &cellv1.GetStatusRequest{StateDigest: digest})
}

// leader waits until a running node reports itself leader and the others
// that run follow it; it returns the leader's index.
func (h *harness) leader() int {
	h.t.Helper()
	ctx := testutil.Context(h.t, time.Minute)
	var li int
	err := testutil.Poll(ctx, 45*time.Second, func() error {
		li = -1
		var leaderID string
		for i, n := range h.nodes {
			if !n.Running() {
				continue
			}
			st, err := h.status(ctx, i, false)
			if err != nil {
				continue // paused or cut off: its view is not asked for
			}
			if st.GetState() == "Leader" {
				li = i
			}
			if leaderID == "" {
				leaderID = st.GetLeaderId()
			} else if st.GetLeaderId() != leaderID {
				return fmt.Errorf("nodes disagree on the leader (%s, %s)", leaderID, st.GetLeaderId())
			}
		}
		if li < 0 {
			return errors.New("no leader")
		}
		return nil
	})
	if err != nil {
		h.fatalf("leader: %v", err)
	}
	return li
}

// others returns the indexes other than i.
func others(i int) []int {
	var out []int
	for j := range 3 {
		if j != i {
			out = append(out, j)
		}
	}
	return out
}

// nodeDir is node i's data directory: a scenario that restarts a node
// with an empty one (S2's amnesia variant: a new member, not the old id)
// removes it between Kill and Restart.
func (h *harness) nodeDir(i int) string {
	return filepath.Join(h.dataDir, "nodes", h.nodes[i].ID())
}

// ---- network faults ----

// isolate cuts every Raft link of node i, both ways.
func (h *harness) isolate(i int) {
	for _, j := range others(i) {
		h.links[i][j].Cut()
		h.links[j][i].Cut()
	}
	h.event("isolate %s (Raft links cut both ways)", h.nodes[i].ID())
}

// healAll removes every fault of every link.
func (h *harness) healAll() {
	for i := range h.links {
		for _, px := range h.links[i] {
			if px != nil {
				px.Heal()
				px.Clear()
			}
		}
	}
	h.event("heal all links")
}

// deaf makes node i hear nothing from its peers while what it sends still
// arrives (recvOnly false), or the reverse: it hears but is not heard.
// Each directed link carries the dialer's requests forward and the
// answers backward, so "i receives nothing" blackholes the answers on i's
// links and the requests on its peers' links to it.
func (h *harness) oneWay(i int, deaf bool) {
	for _, j := range others(i) {
		if deaf {
			h.links[i][j].Blackhole(faultnet.Backward)
			h.links[j][i].Blackhole(faultnet.Forward)
		} else {
			h.links[i][j].Blackhole(faultnet.Forward)
			h.links[j][i].Blackhole(faultnet.Backward)
		}
	}
	h.event("node %s: asymmetric partition (deaf=%v: %s)", h.nodes[i].ID(), deaf, map[bool]string{true: "sends, receives nothing", false: "receives, what it sends is lost"}[deaf])
}

// eachLink applies fn to every directed link.
func (h *harness) eachLink(fn func(*faultnet.Proxy)) {
	for i := range h.links {
		for _, px := range h.links[i] {
			if px != nil {
				fn(px)
			}
		}
	}
}

// ---- checks ----

// converge waits until every node runs the same applied index with the
// same state digest (invariant I6) and returns the digest.
func (h *harness) converge() {
	h.t.Helper()
	ctx := testutil.Context(h.t, 2*time.Minute)
	var last string
	err := testutil.Poll(ctx, 90*time.Second, func() error {
		var first *cellv1.StateDigest
		var desc []string
		for i := range h.nodes {
			st, err := h.status(ctx, i, true)
			if err != nil {
				return err
			}
			d := st.GetStateDigest()
			desc = append(desc, fmt.Sprintf("%s@%d:%x", h.nodes[i].ID(), d.GetAppliedIndex(), d.GetSha256()[:4]))
			if first == nil {
				first = d
				continue
			}
			if d.GetAppliedIndex() != first.GetAppliedIndex() || !bytes.Equal(d.GetSha256(), first.GetSha256()) {
				last = strings.Join(desc, " ")
				return fmt.Errorf("digests differ: %s", last)
			}
		}
		last = strings.Join(desc, " ")
		return nil
	})
	if err != nil {
		h.fatalf("replicas did not converge (I6): %v", err)
	}
	h.event("replicas converged: %s", last)
}

// finalState reads every context linearizably through the router.
func (h *harness) finalState() map[string][]string {
	h.t.Helper()
	ctx := testutil.Context(h.t, time.Minute)
	out := map[string][]string{}
	for _, c := range contexts {
		testutil.Eventually(h.t, 30*time.Second, func() error {
			vs, err := readAll(h.out(ctx), h.data, c)
			out[c] = vs
			return err
		})
	}
	return out
}

// check runs every invariant after the faults healed and the load
// stopped: convergence (I6), linearizability with maybe outcomes (I1),
// no acknowledged append lost, none doubled, none invented (I2, I3), at
// most one writable owner at every instant from the nodes' own
// acknowledgement records (I5, acklog.Check), at most one leader per term
// (I7), and no client failure outside the error contract (I9).
func (h *harness) check(l *load) {
	h.t.Helper()
	h.converge()
	ops := h.hist.Operations()
	for _, err := range l.errors() {
		h.errorf("a client call failed outside the error contract: %v", err)
	}
	for _, err := range histcheck.CheckFinal(ops, h.finalState()) {
		h.errorf("%v", err)
	}
	if err := histcheck.Check(ops, time.Minute); err != nil {
		h.errorf("I1: %v (%s)", err, histcheck.Summary(ops))
		var nl *histcheck.NotLinearizableError
		if errors.As(err, &nl) {
			if dir, kerr := h.keep("history"); kerr == nil {
				path := filepath.Join(dir, "history.html")
				if verr := porcupine.VisualizePath(histcheck.Model.ToModel(), nl.Info, path); verr == nil {
					h.t.Logf("seed %d: the history is drawn in %s", h.seed, path)
				}
			}
		}
	}
	h.mon.check(h)
	h.checkAcks(l)
	lo, hi := h.mon.termRange()
	h.t.Logf("seed %d: %s; %d attempts retried; terms %d→%d", h.seed, histcheck.Summary(ops), l.retries.Load(), lo, hi)
}

// checkAcks merges the nodes' acknowledgement records and checks I5 on
// them (acklog.Check: no owner — epoch and Raft term — appended a write
// after a later owner acknowledged one; one node per owner; epochs only
// up). The load's writes were acknowledged, so the records cannot be
// empty: an empty record would mean the check checks nothing.
func (h *harness) checkAcks(l *load) {
	h.t.Helper()
	recs, err := acklog.ReadDir(h.ackDir)
	if err != nil {
		h.errorf("I5: acknowledgement records: %v", err)
		return
	}
	if len(recs) == 0 && l.ackedBetween(h.start, time.Now()) > 0 {
		h.errorf("I5: the nodes recorded no acknowledgement (%s=%s)", acklog.Env, h.ackDir)
	}
	if h.tamperAcks != nil {
		recs = h.tamperAcks(recs)
	}
	for _, err := range acklog.Check(recs) {
		h.errorf("%v", err)
	}
	h.t.Logf("seed %d: I5: %s", h.seed, acklog.Summary(recs))
}

// ---- the leader monitor (I7) ----

// monitor polls every node's status and records which nodes claimed
// leadership in which term: two leaders in one term break I7.
type monitor struct {
	mu      sync.Mutex
	leaders map[uint64]map[string]bool
	lo, hi  uint64 // the terms seen
	cancel  context.CancelFunc
	done    chan struct{}
}

func startMonitor(h *harness) *monitor {
	ctx, cancel := context.WithCancel(context.Background())
	m := &monitor{leaders: map[uint64]map[string]bool{}, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(m.done)
		for ctx.Err() == nil {
			for i, n := range h.nodes {
				if !n.Running() {
					continue
				}
				st, err := h.status(ctx, i, false)
				if err != nil {
					continue
				}
				m.mu.Lock()
				if m.lo == 0 || st.GetTerm() < m.lo {
					m.lo = st.GetTerm()
				}
				m.hi = max(m.hi, st.GetTerm())
				if st.GetState() == "Leader" {
					if m.leaders[st.GetTerm()] == nil {
						m.leaders[st.GetTerm()] = map[string]bool{}
					}
					m.leaders[st.GetTerm()][n.ID()] = true
				}
				m.mu.Unlock()
			}
			_ = retry.Sleep(ctx, 50*time.Millisecond) // the polling period
		}
	}()
	return m
}

func (m *monitor) stop() {
	m.cancel()
	<-m.done
}

func (m *monitor) check(h *harness) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for term, ids := range m.leaders {
		if len(ids) > 1 {
			h.errorf("I7: term %d had %d leaders: %v", term, len(ids), ids)
		}
	}
}

// termRange is the lowest and highest term any node reported.
func (m *monitor) termRange() (lo, hi uint64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.lo, m.hi
}

// maxTerm is the highest term any node reported.
func (m *monitor) maxTerm() uint64 {
	_, hi := m.termRange()
	return hi
}

// ---- the load ----

// contexts and keys are what the load writes: several contexts (appends,
// linearizable reads) and memory keys (compare-and-set puts, gets).
var (
	contexts = []string{"c0", "c1", "c2"}
	keys     = []string{"k0", "k1"}
)

// probeContext takes the probes of a node that must refuse them (S5, S9):
// not in the history.
const probeContext = "probe"

// load runs clients through the router: appends to the contexts,
// linearizable reads, compare-and-set puts and gets of the memory keys.
// A write is retried with its request id while its failure is transient,
// within opBudget; then it is recorded as ambiguous ("maybe").
type load struct {
	h        *histcheck.History
	data     contextv1.ContextServiceClient
	tenant   string
	name     string
	opBudget time.Duration
	attempt  time.Duration
	pace     time.Duration
	retries  atomic.Int64

	mu   sync.Mutex
	errs []error
	// acks are the return times of acknowledged writes; attemptErrs the
	// failures of attempts in order (S3 inspects them).
	acks        []time.Time
	attemptErrs []attemptErr

	cancel context.CancelFunc
	wg     sync.WaitGroup
}

type attemptErr struct {
	at  time.Time
	err error
}

// startLoad starts clients through the router.
func (h *harness) startLoad(clients int) *load {
	return h.startLoadOn(clients, h.data)
}

// startLoadOn starts clients of data (the router, or a node directly).
// Each load's clients have their own ids and values (l<load>c<client>),
// recorded in the harness's one history.
func (h *harness) startLoadOn(clients int, data contextv1.ContextServiceClient) *load {
	ctx, cancel := context.WithCancel(context.Background())
	h.loads++
	l := &load{h: h.hist, data: data, tenant: h.tenant, opBudget: 20 * time.Second, attempt: 3 * time.Second, pace: 10 * time.Millisecond, cancel: cancel,
		name: fmt.Sprintf("l%d", h.loads)}
	for c := range clients {
		rng := rand.New(rand.NewPCG(h.seed, uint64(h.loads*100+c)))
		id := h.loads*100 + c
		l.wg.Go(func() {
			for i := 0; ctx.Err() == nil; i++ {
				l.op(ctx, rng, id, i)
				_ = retry.Sleep(ctx, l.pace)
			}
		})
	}
	h.event("load %s: %d clients", l.name, clients)
	return l
}

// stop ends the load and waits for the operations in flight.
func (l *load) stop() {
	l.cancel()
	l.wg.Wait()
}

func (l *load) errors() []error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.errs)
}

// ackedBetween counts the writes acknowledged in (from, to).
func (l *load) ackedBetween(from, to time.Time) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, a := range l.acks {
		if a.After(from) && a.Before(to) {
			n++
		}
	}
	return n
}

func (l *load) op(ctx context.Context, rng *rand.Rand, client, i int) {
	switch r := rng.IntN(10); {
	case r < 5:
		c := contexts[rng.IntN(len(contexts))]
		v := fmt.Sprintf("%s-c%d-%d", c, client, i)
		l.append(ctx, client, c, v, v)
	case r < 7:
		c := contexts[rng.IntN(len(contexts))]
		call := l.h.Now()
		vs, err := readAll(tenantmd.Outgoing(ctx, l.tenant, 0), l.data, c)
		if err == nil {
			l.h.Read(client, c, call, l.h.Now(), vs)
		} else {
			l.classify(err, true)
		}
	case r < 9:
		k := keys[rng.IntN(len(keys))]
		l.cas(ctx, rng, client, k, fmt.Sprintf("%s-c%d-%d", k, client, i))
	default:
		k := keys[rng.IntN(len(keys))]
		call := l.h.Now()
		v, rev, found, err := l.get(tenantmd.Outgoing(ctx, l.tenant, 0), k)
		if err == nil {
			l.h.Get(client, k, call, l.h.Now(), v, rev, found)
		} else {
			l.classify(err, true)
		}
	}
}

// classify records a failure that is not transient (a read's too) as an
// error of the test, and returns whether err is transient.
func (l *load) classify(err error, read bool) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.attemptErrs = append(l.attemptErrs, attemptErr{at: time.Now(), err: err})
	if transient(err) {
		return true
	}
	if !read || status.Code(err) == codes.Unknown || status.Code(err) == codes.Internal {
		l.errs = append(l.errs, err)
	}
	return false
}

// transient: the platform says retry (or the attempt ran out of its own
// time, or the test is ending).
func transient(err error) bool {
	c := status.Code(err)
	return retry.Allowed(retry.Idempotent, err) || c == codes.DeadlineExceeded || c == codes.Canceled
}

// do runs one write with retries under its request id; it returns the
// result the client knows.
func (l *load) do(ctx context.Context, fn func(context.Context) error) (histcheck.Result, time.Time) {
	deadline := time.Now().Add(l.opBudget)
	for {
		actx, cancel := context.WithTimeout(tenantmd.Outgoing(context.WithoutCancel(ctx), l.tenant, 0), l.attempt)
		err := fn(actx)
		cancel()
		ret := time.Now()
		switch {
		case err == nil:
			l.mu.Lock()
			l.acks = append(l.acks, ret)
			l.mu.Unlock()
			return histcheck.OK, ret
		case errors.Is(rpcerr.FromStatus(err), cperr.ErrRevisionMismatch):
			return histcheck.Refused, ret
		}
		if !l.classify(err, false) || time.Now().After(deadline) || ctx.Err() != nil {
			return histcheck.Ambiguous, ret
		}
		l.retries.Add(1)
		_ = retry.Sleep(context.WithoutCancel(ctx), 20*time.Millisecond) // client backoff
	}
}

func (l *load) append(ctx context.Context, client int, c, v, reqID string) {
	var seq uint64
	call := l.h.Now()
	res, ret := l.do(ctx, func(actx context.Context) error {
		resp, err := l.data.Append(actx, &contextv1.AppendRequest{ContextId: c, RequestId: reqID,
			Entries: []*contextv1.Entry{{Role: "user", Content: &contextv1.Entry_Text{Text: v}}}})
		seq = resp.GetFirstSeq()
		return err
	})
	l.h.Append(client, c, v, call, ret, seq, res)
}

// cas reads the key's revision, then writes with that expected revision
// (a stale one now and then, to be refused).
func (l *load) cas(ctx context.Context, rng *rand.Rand, client int, k, v string) {
	_, rev, _, err := l.get(tenantmd.Outgoing(ctx, l.tenant, 0), k)
	if err != nil {
		l.classify(err, true)
		return
	}
	if rng.IntN(5) == 0 {
		rev++
	}
	var got uint64
	call := l.h.Now()
	res, ret := l.do(ctx, func(actx context.Context) error {
		resp, err := l.data.PutMemory(actx, &contextv1.PutMemoryRequest{Key: k, Value: []byte(v), ExpectedRevision: &rev, RequestId: v})
		got = resp.GetRevision()
		return err
	})
	l.h.Put(client, k, v, &rev, call, ret, got, res)
}

func (l *load) get(ctx context.Context, k string) (string, uint64, bool, error) {
	cctx, cancel := context.WithTimeout(ctx, l.attempt)
	defer cancel()
	resp, err := l.data.GetMemory(cctx, &contextv1.GetMemoryRequest{Key: k})
	if errors.Is(rpcerr.FromStatus(err), cperr.ErrKeyNotFound) {
		return "", 0, false, nil
	}
	if err != nil {
		return "", 0, false, err
	}
	return string(resp.GetItem().GetValue()), resp.GetItem().GetRevision(), true, nil
}

// readAll reads every entry of context c linearizably, in pages.
func readAll(ctx context.Context, c contextv1.ContextServiceClient, id string) ([]string, error) {
	cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	var out []string
	for from := uint64(1); ; {
		resp, err := c.Read(cctx, &contextv1.ReadRequest{ContextId: id, Start: &contextv1.ReadRequest_FromSeq{FromSeq: from}, MaxEntries: 1000})
		if err != nil {
			return nil, err
		}
		for _, e := range resp.GetEntries() {
			out = append(out, e.GetText())
		}
		if len(resp.GetEntries()) == 0 || resp.GetNextSeq() > resp.GetLastSeq() {
			return out, nil
		}
		from = resp.GetNextSeq()
	}
}
