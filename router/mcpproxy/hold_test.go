package mcpproxy

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/cellplane/cellplane/internal/testutil"
)

// routes is a Resolver and Waiter over routes a test changes.
type routes struct {
	mu      sync.Mutex
	m       map[string]Route
	changed chan struct{}
	waiters atomic.Int64 // callers blocked in wait
}

func newRoutes() *routes { return &routes{m: map[string]Route{}, changed: make(chan struct{})} }

func (rs *routes) set(tenant string, r Route, ok bool) {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	if ok {
		rs.m[tenant] = r
	} else {
		delete(rs.m, tenant)
	}
	close(rs.changed)
	rs.changed = make(chan struct{})
}

func (rs *routes) resolve(tenant string) (Route, bool) {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	r, ok := rs.m[tenant]
	return r, ok
}

func (rs *routes) wait(ctx context.Context, tenant string, seen Route) (Route, bool, error) {
	for {
		rs.mu.Lock()
		r, ok := rs.m[tenant]
		ch := rs.changed
		rs.mu.Unlock()
		if !ok || r.Cell != seen.Cell || r.Epoch != seen.Epoch || r.CuttingOver != seen.CuttingOver {
			return r, ok, nil
		}
		rs.waiters.Add(1)
		select {
		case <-ctx.Done():
			rs.waiters.Add(-1)
			return r, ok, ctx.Err()
		case <-ch:
			rs.waiters.Add(-1)
		}
	}
}

func holdCount(t *testing.T, p *Proxy, outcome string) uint64 {
	t.Helper()
	var m dto.Metric
	if err := p.held.WithLabelValues(outcome).(prometheus.Metric).Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetHistogram().GetSampleCount()
}

func TestCutoverHold(t *testing.T) {
	var oldHits, newHits atomic.Int64
	oldWorker, newWorker := mcpWorker(t, "old", &oldHits), mcpWorker(t, "new", &newHits)
	rs := newRoutes()
	cfg := DefaultConfig()
	cfg.Logger = testutil.Logger(t)
	cfg.WaitChange = rs.wait
	cfg.CutoverHold = 5 * time.Second
	p, err := New(cfg, rs.resolve, func(*http.Request, string) error { return nil })
	if err != nil {
		t.Fatal(err)
	}
	addr := listenAndServe(t, p)
	ctx := testutil.Context(t, 20*time.Second)
	post := func(ctx context.Context, tenant string) (int, http.Header, string, error) {
		body := `{"jsonrpc":"2.0","id":1,"method":"tools/list"}`
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+addr+"/t/"+tenant+"/mcp", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "application/json, text/event-stream")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0, nil, "", err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, resp.Header, string(b), nil
	}
	waitHeld := func(t *testing.T) {
		t.Helper()
		testutil.Eventually(t, 5*time.Second, func() error {
			if rs.waiters.Load() == 0 {
				return errors.New("no request held yet")
			}
			return nil
		})
	}

	t.Run("held until the flip, then sent to the new cell", func(t *testing.T) {
		rs.set("acme", Route{Cell: "a", Epoch: 1, Workers: []string{oldWorker}, CuttingOver: true}, true)
		type result struct {
			code int
			body string
			err  error
		}
		done := make(chan result, 1)
		go func() {
			code, _, body, err := post(ctx, "acme")
			done <- result{code, body, err}
		}()
		waitHeld(t)
		rs.set("acme", Route{Cell: "b", Epoch: 2, Workers: []string{newWorker}}, true)
		r := <-done
		if r.err != nil || r.code != http.StatusOK {
			t.Fatalf("held request: %d %s %v", r.code, r.body, r.err)
		}
		if oldHits.Load() != 0 || newHits.Load() != 1 {
			t.Errorf("hits old %d new %d; want the request on the new cell only", oldHits.Load(), newHits.Load())
		}
		if n := holdCount(t, p, holdReleased); n != 1 {
			t.Errorf("released holds = %d, want 1", n)
		}
	})

	t.Run("hold expires: 503 TENANT_MOVING with Retry-After", func(t *testing.T) {
		short := cfg
		short.CutoverHold = 200 * time.Millisecond
		sp, err := New(short, rs.resolve, func(*http.Request, string) error { return nil })
		if err != nil {
			t.Fatal(err)
		}
		saddr := listenAndServe(t, sp)
		rs.set("stuck", Route{Cell: "a", Epoch: 1, Workers: []string{oldWorker}, CuttingOver: true}, true)
		start := time.Now()
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+saddr+"/t/stuck/mcp", strings.NewReader("{}"))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(body), "TENANT_MOVING") || resp.Header.Get("Retry-After") != "1" {
			t.Fatalf("expired hold: %d %q Retry-After %q; want 503 TENANT_MOVING with Retry-After 1", resp.StatusCode, body, resp.Header.Get("Retry-After"))
		}
		if took := time.Since(start); took < short.CutoverHold {
			t.Errorf("answered after %s, before the %s hold", took, short.CutoverHold)
		}
		if oldHits.Load() != 0 {
			t.Errorf("a held request reached the old cell")
		}
		if n := holdCount(t, sp, holdExpired); n != 1 {
			t.Errorf("expired holds = %d, want 1", n)
		}
	})

	t.Run("tenant deleted during the hold: 404", func(t *testing.T) {
		rs.set("gone", Route{Cell: "a", Epoch: 1, Workers: []string{oldWorker}, CuttingOver: true}, true)
		done := make(chan int, 1)
		go func() {
			code, _, _, _ := post(ctx, "gone")
			done <- code
		}()
		waitHeld(t)
		rs.set("gone", Route{}, false)
		if code := <-done; code != http.StatusNotFound {
			t.Fatalf("held request of a deleted tenant: %d, want 404", code)
		}
	})
}
