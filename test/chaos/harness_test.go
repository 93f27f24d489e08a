package chaos

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/cellplane/cellplane/cells"
	"github.com/cellplane/cellplane/controlplane/controller"
	"github.com/cellplane/cellplane/internal/cperr"
	"github.com/cellplane/cellplane/internal/histcheck"
	"github.com/cellplane/cellplane/internal/pki"
	"github.com/cellplane/cellplane/internal/retry"
	"github.com/cellplane/cellplane/internal/rpcerr"
	"github.com/cellplane/cellplane/internal/tenantmd"
	"github.com/cellplane/cellplane/internal/testutil"
	"github.com/cellplane/cellplane/platform"
	contextv1 "github.com/cellplane/cellplane/proto/cellplane/context/v1"
	cpv1 "github.com/cellplane/cellplane/proto/cellplane/controlplane/v1"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// harness is the whole platform (package platform) in this process over
// loopback, with clients of its control plane and its router.
type harness struct {
	*platform.Platform
	cp cpv1.ControlPlaneServiceClient
	// data is a ContextService client of the router.
	data contextv1.ContextServiceClient
}

// newPlatform starts etcd, a control plane replica (opts adjust its
// controller) and a router. Cells are added by the test (createCell).
func newPlatform(t *testing.T, opts ...func(*controller.Config)) *harness {
	t.Helper()
	cfg := platform.DefaultConfig()
	cfg.Name = "chaos"
	cfg.DataDir = t.TempDir()
	cfg.Regions, cfg.CellsPerRegion = nil, 0
	cfg.Node.ShutdownTimeout = 5 * time.Second
	cfg.Node.RegistryTTL = time.Second
	cfg.Controller = controller.DefaultConfig()
	cfg.Controller.SessionTTL = time.Second
	// Short controller waits, so that tests finish quickly.
	cfg.Controller.RetryMin = 10 * time.Millisecond
	cfg.Controller.RetryMax = 200 * time.Millisecond
	for _, o := range opts {
		o(&cfg.Controller)
	}
	cfg.TestingKnobs.Controller = cfg.Controller.TestingKnobs // the platform passes its own
	cfg.ShutdownTimeout = 5 * time.Second
	cfg.Logger = testutil.Logger(t)
	cfg.EtcdUnsafeNoFsync = true
	cfg.MutualTLS = true // every internal hop authenticated, as in production
	p, err := platform.Start(testutil.Context(t, 60*time.Second), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return &harness{Platform: p, cp: p.Admin(), data: contextv1.NewContextServiceClient(p.RouterConn())}
}

// createCell adds a cell (its region if new), waits until it is HEALTHY
// and returns its nodes.
func (p *harness) createCell(t *testing.T, spec platform.CellSpec) []*cells.Node {
	t.Helper()
	c, err := p.AddCell(testutil.Context(t, 3*time.Minute), spec)
	if err != nil {
		t.Fatalf("create cell %s: %v", spec.ID, err)
	}
	var nodes []*cells.Node
	for _, n := range c.Nodes() {
		nodes = append(nodes, n.Node())
	}
	return nodes
}

// dialNode connects to a node's gRPC port over mutual TLS with the
// platform's certificate certName (router.chaos-router for ContextService,
// operator.admin for the change log).
func (p *harness) dialNode(t *testing.T, addr, certName string) *grpc.ClientConn {
	t.Helper()
	src, err := pki.NewSource(pki.DirConfig(p.CertsDir(), certName))
	if err != nil {
		t.Fatal(err)
	}
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(pki.ClientCredentials(src, pki.ExpectKinds(pki.KindNode))))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cc.Close() })
	return cc
}

// createTenant places tenant on cell, optionally with a standby region,
// and waits until the router routes it and its context "chat" exists.
func (p *harness) createTenant(t *testing.T, ctx context.Context, tenant, region, cell, standbyRegion string) {
	t.Helper()
	if _, err := p.cp.CreateTenant(ctx, &cpv1.CreateTenantRequest{Id: tenant, HomeRegion: region, Cell: cell, StandbyRegion: standbyRegion}); err != nil {
		t.Fatalf("create tenant: %v", err)
	}
	testutil.Eventually(t, 20*time.Second, func() error {
		_, err := p.data.CreateContext(tenantmd.Outgoing(ctx, tenant, 0), &contextv1.CreateContextRequest{ContextId: "chat"})
		if err == nil || errors.Is(rpcerr.FromStatus(err), cperr.ErrAlreadyExists) {
			return nil
		}
		return err
	})
}

// ---- the history of one context: appends and linearizable reads ----

// opInput and opOutput are what the load records of an operation; check
// converts them for internal/histcheck (its porcupine model and its
// final-state checks), the one model of the fault tests.
type opInput struct {
	append bool
	value  string
}

type opOutput struct {
	seq    uint64 // appends: the seq the entry got
	values string // reads: the texts joined with ","
	// ambiguous: an append whose outcome the client never learned (the
	// test ended while it was retried): it may or may not be applied.
	ambiguous bool
}

// histOps converts the load's history for histcheck (context "chat").
func histOps(ops []porcupine.Operation) []porcupine.Operation {
	out := make([]porcupine.Operation, 0, len(ops))
	for _, op := range ops {
		in, o := op.Input.(opInput), op.Output.(opOutput)
		hop := op
		if in.append {
			hop.Input = histcheck.Input{Kind: histcheck.Append, Key: "chat", Value: in.value}
			hop.Output = histcheck.Output{Result: histcheck.OK, Seq: o.seq}
			if o.ambiguous {
				hop.Output = histcheck.Output{Result: histcheck.Ambiguous}
				hop.Return = math.MaxInt64
			}
		} else {
			hop.Input = histcheck.Input{Kind: histcheck.Read, Key: "chat"}
			hop.Output = histcheck.Output{Values: splitEntries(o.values)}
		}
		out = append(out, hop)
	}
	return out
}

// splitEntries splits texts joined with "," (readAll).
func splitEntries(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(strings.TrimSuffix(s, ","), ",")
}

// load drives clients that append to and read tenant/chat through the
// router, retrying every failure the platform calls transient with the
// same request id until it succeeds (an operation's interval spans all its
// attempts), and records a porcupine history and every ack time.
type load struct {
	data   contextv1.ContextServiceClient
	tenant string
	start  time.Time

	mu        sync.Mutex
	history   []porcupine.Operation
	ackTimes  []time.Time
	acked     map[string]uint64 // value → seq
	failures  []error           // non-retryable failures (a test failure)
	retries   int
	readEvery int
	prefix    string // of every appended value (tells tenants' values apart)
}

func newLoad(data contextv1.ContextServiceClient, tenant string) *load {
	return &load{data: data, tenant: tenant, start: time.Now(), acked: map[string]uint64{}, readEvery: 3}
}

// run starts clients until ctx ends; wait with the returned func.
func (l *load) run(ctx context.Context, clients int) (wait func()) {
	var wg sync.WaitGroup
	for c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ctx.Err() == nil; i++ {
				if i%l.readEvery == l.readEvery-1 {
					l.read(ctx, c)
				} else {
					l.append(ctx, c, fmt.Sprintf("%sc%d-%d", l.prefix, c, i))
				}
			}
		}()
	}
	return wg.Wait
}

func (l *load) call(ctx context.Context, fn func(context.Context) error) (bool, time.Time, time.Time) {
	call := time.Now()
	for {
		cctx, cancel := context.WithTimeout(tenantmd.Outgoing(context.WithoutCancel(ctx), l.tenant, 0), 10*time.Second)
		err := fn(cctx)
		cancel()
		if err == nil {
			return true, call, time.Now()
		}
		// Every call carries a request id: the client retries what the
		// retry policy allows an idempotent call (a stale route too: the
		// router looks it up again), and an attempt that ran out of its
		// own time (its outcome is unknown; the request id makes it safe).
		if !retry.Allowed(retry.Idempotent, err) && status.Code(err) != codes.DeadlineExceeded {
			l.mu.Lock()
			l.failures = append(l.failures, err)
			l.mu.Unlock()
			return false, call, time.Now()
		}
		if ctx.Err() != nil {
			// The test is ending: an operation left pending is not in the
			// history (it may or may not have been applied).
			return false, call, time.Now()
		}
		l.mu.Lock()
		l.retries++
		l.mu.Unlock()
		_ = retry.Sleep(ctx, 5*time.Millisecond) // client backoff between attempts
	}
}

func (l *load) append(ctx context.Context, client int, value string) {
	var seq uint64
	ok, call, ret := l.call(ctx, func(cctx context.Context) error {
		resp, err := l.data.Append(cctx, &contextv1.AppendRequest{ContextId: "chat", RequestId: value,
			Entries: []*contextv1.Entry{{Role: "user", Content: &contextv1.Entry_Text{Text: value}}}})
		seq = resp.GetFirstSeq()
		return err
	})
	if !ok {
		// Failed for good or left pending when the test ended: it may have
		// been applied all the same (an earlier attempt): a "maybe".
		l.mu.Lock()
		defer l.mu.Unlock()
		l.history = append(l.history, porcupine.Operation{ClientId: client, Input: opInput{append: true, value: value},
			Call: call.Sub(l.start).Nanoseconds(), Output: opOutput{ambiguous: true}, Return: ret.Sub(l.start).Nanoseconds()})
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.acked[value] = seq
	l.ackTimes = append(l.ackTimes, ret)
	l.history = append(l.history, porcupine.Operation{ClientId: client, Input: opInput{append: true, value: value},
		Call: call.Sub(l.start).Nanoseconds(), Output: opOutput{seq: seq}, Return: ret.Sub(l.start).Nanoseconds()})
}

func (l *load) read(ctx context.Context, client int) {
	var vals string
	ok, call, ret := l.call(ctx, func(cctx context.Context) error {
		v, err := readAll(cctx, l.data)
		vals = v
		return err
	})
	if !ok {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.history = append(l.history, porcupine.Operation{ClientId: client, Input: opInput{},
		Call: call.Sub(l.start).Nanoseconds(), Output: opOutput{values: vals}, Return: ret.Sub(l.start).Nanoseconds()})
}

// readAll reads every entry of chat linearizably, in pages.
func readAll(ctx context.Context, c contextv1.ContextServiceClient) (string, error) {
	var b strings.Builder
	for from := uint64(1); ; {
		resp, err := c.Read(ctx, &contextv1.ReadRequest{ContextId: "chat", Start: &contextv1.ReadRequest_FromSeq{FromSeq: from}, MaxEntries: 1000})
		if err != nil {
			return "", err
		}
		for _, e := range resp.GetEntries() {
			b.WriteString(e.GetText())
			b.WriteByte(',')
		}
		if len(resp.GetEntries()) == 0 || resp.GetNextSeq() > resp.GetLastSeq() {
			return b.String(), nil
		}
		from = resp.GetNextSeq()
	}
}

// check verifies (internal/histcheck) the history is linearizable, with
// the appends left pending as "maybe", nothing failed for good, every
// acknowledged append is in the final state exactly once at the seq it
// was acknowledged with, and nothing is there that no client wrote. It
// returns the longest gap between two consecutive acknowledgements.
func (l *load) check(t *testing.T, ctx context.Context) time.Duration {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, err := range l.failures {
		t.Errorf("a client request failed for good: %v", err)
	}
	// A read, retried like any client's: the router's per-tenant rate
	// limit may still be refilling after the load (RATE_LIMITED, retry
	// later), and the read pages through the whole context.
	var final string
	err := retry.Do(ctx, retry.DefaultPolicy(), retry.Immutable, func(ctx context.Context) error {
		var err error
		final, err = readAll(tenantmd.Outgoing(ctx, l.tenant, 0), l.data)
		return err
	})
	if err != nil {
		t.Fatalf("final read: %v", err)
	}
	ops := histOps(l.history)
	for _, err := range histcheck.CheckFinal(ops, map[string][]string{"chat": splitEntries(final)}) {
		t.Error(err)
	}
	if err := histcheck.Check(ops, 60*time.Second); err != nil {
		t.Errorf("%v (%s)", err, histcheck.Summary(ops))
	}
	times := slices.Clone(l.ackTimes)
	slices.SortFunc(times, func(a, b time.Time) int { return a.Compare(b) })
	var gap time.Duration
	for i := 1; i < len(times); i++ {
		gap = max(gap, times[i].Sub(times[i-1]))
	}
	t.Logf("%d operations (%d appends acknowledged, %d retried attempts), longest gap between acks %v",
		len(l.history), len(l.acked), l.retries, gap.Round(time.Millisecond))
	return gap
}
