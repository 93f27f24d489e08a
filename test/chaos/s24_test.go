package chaos

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cellplane/cellplane/internal/auth"
	"github.com/cellplane/cellplane/internal/dial"
	"github.com/cellplane/cellplane/internal/pki"
	"github.com/cellplane/cellplane/internal/retry"
	"github.com/cellplane/cellplane/internal/tenantmd"
	"github.com/cellplane/cellplane/internal/testutil"
	"github.com/cellplane/cellplane/platform"
	contextv1 "github.com/cellplane/cellplane/proto/cellplane/context/v1"
	"github.com/cellplane/cellplane/router"
)

// slowProxy forwards TCP connections to a target, holding every chunk
// from the target back for a delay that can change at any time (etcd's
// watch events and answers reach the client late; what the client sends
// is not delayed). Closed at the test's cleanup.
type slowProxy struct {
	ln     net.Listener
	target string
	delay  atomic.Int64 // nanoseconds
	cut    atomic.Bool  // refuse and drop connections
	wg     sync.WaitGroup
	mu     sync.Mutex
	conns  map[net.Conn]bool
	closed bool
}

func startSlowProxy(t *testing.T, target string) *slowProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &slowProxy{ln: ln, target: target, conns: map[net.Conn]bool{}}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.close)
	return p
}

func (p *slowProxy) Addr() string             { return p.ln.Addr().String() }
func (p *slowProxy) setDelay(d time.Duration) { p.delay.Store(int64(d)) }

func (p *slowProxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		_ = c.Close()
		return false
	}
	p.conns[c] = true
	return true
}

func (p *slowProxy) close() {
	p.mu.Lock()
	p.closed = true
	for c := range p.conns {
		_ = c.Close()
	}
	p.mu.Unlock()
	_ = p.ln.Close()
	p.wg.Wait()
}

func (p *slowProxy) accept() {
	defer p.wg.Done()
	for {
		in, err := p.ln.Accept()
		if err != nil {
			return
		}
		if p.cut.Load() {
			_ = in.Close()
			continue
		}
		out, err := net.Dial("tcp", p.target)
		if err != nil {
			_ = in.Close()
			continue
		}
		if !p.track(in) || !p.track(out) {
			_ = in.Close()
			_ = out.Close()
			continue
		}
		p.wg.Add(2)
		go func() { defer p.wg.Done(); p.pipe(out, in, 0) }() // client → etcd, on time
		go func() { defer p.wg.Done(); p.pipe(in, out, 1) }() // etcd → client, delayed
	}
}

type chunk struct {
	b  []byte
	at time.Time
}

// pipe copies src to dst; with delayed set, each chunk leaves the current
// delay after it arrived (order kept).
func (p *slowProxy) pipe(dst, src net.Conn, delayed int) {
	defer func() { _ = dst.Close(); _ = src.Close() }()
	if delayed == 0 {
		_, _ = io.Copy(dst, src)
		return
	}
	q := make(chan chunk, 1024)
	go func() {
		defer close(q)
		for {
			buf := make([]byte, 32<<10)
			n, err := src.Read(buf)
			if n > 0 {
				q <- chunk{b: buf[:n], at: time.Now()}
			}
			if err != nil {
				return
			}
		}
	}()
	timer := time.NewTimer(0)
	defer timer.Stop()
	for c := range q {
		if wait := time.Until(c.at.Add(time.Duration(p.delay.Load()))); wait > 0 {
			timer.Reset(wait)
			<-timer.C
		}
		if _, err := dst.Write(c.b); err != nil {
			for range q { // drain so the reader ends
			}
			return
		}
	}
}

// TestS24RouterWithADelayedWatchFollowsMoves (scenario S24): a second
// router reaches etcd through a proxy that delays everything etcd sends
// it (its watch of the placements, and the answers to its refreshes) by
// 1.5 s, then cuts it for 3 s, while two tenants are under load through
// it and one of them moves between cells twice. Calls that reach the old
// cell get WRONG_CELL or TENANT_NOT_IN_CELL, the router refreshes and
// retries (the clients retry what the router could not place), and every
// call eventually succeeds: per tenant, the history is linearizable
// (porcupine), no acknowledged append is lost or doubled, and no tenant
// ever reads another's entries (each tenant's values carry its name).
func TestS24RouterWithADelayedWatchFollowsMoves(t *testing.T) {
	p := newPlatform(t, fastMoves)
	p.createCell(t, platform.CellSpec{Region: "us-east", ID: "east-a", Nodes: 1})
	p.createCell(t, platform.CellSpec{Region: "us-east", ID: "east-b", Nodes: 1})
	ctx := testutil.Context(t, 3*time.Minute)
	p.createTenant(t, ctx, "acme", "us-east", "east-a", "")
	p.createTenant(t, ctx, "globex", "us-east", "east-b", "")

	// The second router: the platform's certificate and etcd user, etcd
	// through the slow proxy.
	etcd, err := url.Parse(p.EtcdEndpoints()[0])
	if err != nil {
		t.Fatal(err)
	}
	px := startSlowProxy(t, etcd.Host)
	rc := router.DefaultConfig()
	rc.EtcdEndpoints = []string{etcd.Scheme + "://" + px.Addr()}
	rc.GRPCListener, rc.HTTPListener = testutil.Listen(t), testutil.Listen(t)
	rc.Routing.SnapshotPath = filepath.Join(t.TempDir(), "table.snap")
	rc.Auth.Mode = auth.ModeNone
	rc.ShutdownTimeout = 5 * time.Second
	rc.Logger = testutil.Logger(t).With("component", "router2")
	if rc.InternalTLS, err = pki.NewSource(pki.DirConfig(p.CertsDir(), "router.chaos-router")); err != nil {
		t.Fatal(err)
	}
	r2, err := router.Start(ctx, rc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r2.Close() })
	conn, err := dial.New(r2.GRPCAddr(), dial.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	data := contextv1.NewContextServiceClient(conn)
	testutil.Eventually(t, 20*time.Second, func() error {
		for _, tn := range []string{"acme", "globex"} {
			if _, err := readAll(tenantmd.Outgoing(ctx, tn, 0), data); err != nil {
				return fmt.Errorf("%s through the second router: %w", tn, err)
			}
		}
		return nil
	})

	lctx, stopLoad := context.WithCancel(ctx)
	loads := map[string]*load{"acme": newLoad(data, "acme"), "globex": newLoad(data, "globex")}
	var waits []func()
	for tn, l := range loads {
		l.prefix = tn + "-"
		waits = append(waits, l.run(lctx, 2))
	}
	acks := func(l *load, n int) {
		t.Helper()
		testutil.Eventually(t, 30*time.Second, func() error {
			l.mu.Lock()
			defer l.mu.Unlock()
			if len(l.acked) < n {
				return fmt.Errorf("%d acks, want %d", len(l.acked), n)
			}
			return nil
		})
	}
	acks(loads["acme"], 20)

	// The watch runs 1.5 s late across a move.
	px.setDelay(1500 * time.Millisecond)
	p.moveAndWait(t, ctx, "acme", "east-b")
	acks(loads["acme"], 60)
	px.setDelay(0)
	// Then etcd is out of the router's reach for 3 s across a move back.
	px.setCut(true)
	cutAt := time.Now()
	p.moveAndWait(t, ctx, "acme", "east-a")
	if err := retry.Sleep(ctx, time.Until(cutAt.Add(3*time.Second))); err != nil {
		t.Fatal(err)
	}
	px.setCut(false)
	acks(loads["acme"], 100)
	acks(loads["globex"], 60)
	stopLoad()
	for _, w := range waits {
		w()
	}
	// The router did meet the stale route: it retried or held calls.
	stale, held := testutil.MetricSum(t, nil, "http://"+r2.HTTPAddr()+"/metrics", "cellplane_router_forward_retries_total", `reason="stale_route"`),
		testutil.MetricSum(t, nil, "http://"+r2.HTTPAddr()+"/metrics", "cellplane_router_forward_held_total")
	t.Logf("the second router retried %v calls on a stale route and held %v", stale, held)
	if stale+held == 0 {
		t.Errorf("the second router never met a stale route: the scenario did not happen")
	}
	for tn, l := range loads {
		t.Run(tn, func(t *testing.T) {
			l.mu.Lock()
			for _, op := range l.history {
				if in := op.Input.(opInput); !in.append {
					for _, v := range strings.Split(strings.TrimSuffix(op.Output.(opOutput).values, ","), ",") {
						if v != "" && !strings.HasPrefix(v, tn+"-") {
							t.Errorf("%s read another tenant's entry %q", tn, v)
						}
					}
				}
			}
			l.mu.Unlock()
			l.check(t, ctx)
		})
	}
}

// setCut cuts the link (open connections closed, new ones refused) or
// heals it.
func (p *slowProxy) setCut(on bool) {
	p.cut.Store(on)
	if !on {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		_ = c.Close()
		delete(p.conns, c)
	}
}
