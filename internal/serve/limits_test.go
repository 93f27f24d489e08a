package serve

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/cellplane/cellplane/internal/testutil"
)

func TestLimitsValidate(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*Limits)
		ok     bool
	}{
		{"defaults", func(*Limits) {}, true},
		{"no stream cap", func(l *Limits) { l.MaxConcurrentStreams = 0 }, false},
		{"negative conn cap", func(l *Limits) { l.MaxConns = -1 }, false},
		{"no conn cap", func(l *Limits) { l.MaxConns = 0 }, true},
		{"no ping floor", func(l *Limits) { l.KeepaliveMinTime = 0 }, false},
		{"no keepalive timeout", func(l *Limits) { l.KeepaliveTimeout = 0 }, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := DefaultLimits()
			tt.mutate(&l)
			if err := l.Validate(); (err == nil) != tt.ok {
				t.Fatalf("Validate() = %v, want ok %v", err, tt.ok)
			}
			if err := l.Validate(); err != nil && !errors.Is(err, ErrInvalidLimits) {
				t.Fatalf("error %v is not ErrInvalidLimits", err)
			}
		})
	}
	h := DefaultHTTPLimits()
	if err := h.Validate(); err != nil {
		t.Fatal(err)
	}
	h.WriteTimeout = 0
	if err := h.Validate(); !errors.Is(err, ErrInvalidLimits) {
		t.Fatalf("HTTPLimits without WriteTimeout: %v", err)
	}
}

// isClosed reports whether the server closed c (EOF or reset) within 5s.
func isClosed(c net.Conn) bool {
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err := c.Read(make([]byte, 1))
	var ne net.Error
	return err != nil && !(errors.As(err, &ne) && ne.Timeout())
}

// isOpen reports whether c stays open for a moment (a read times out).
func isOpen(c net.Conn) bool {
	_ = c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	_, err := c.Read(make([]byte, 1))
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// The (cap+1)th connection is closed at once; once one closes, a new one
// is served again.
func TestLimitListenerRefusesOverCap(t *testing.T) {
	const max = 2
	ln := LimitListener(testutil.Listen(t), max, testutil.Logger(t))
	var wg sync.WaitGroup
	t.Cleanup(func() { _ = ln.Close(); wg.Wait() })
	var mu sync.Mutex
	var served []net.Conn
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			served = append(served, c)
			mu.Unlock()
		}
	})
	t.Cleanup(func() {
		mu.Lock()
		defer mu.Unlock()
		for _, c := range served {
			_ = c.Close()
		}
	})
	dial := func() net.Conn {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		return c
	}
	for range max {
		if c := dial(); !isOpen(c) {
			t.Fatal("a connection under the cap was closed")
		}
	}
	if c := dial(); !isClosed(c) {
		t.Fatal("the connection over the cap was not closed")
	}
	// Free a slot on the server's side: a new connection is served.
	mu.Lock()
	_ = served[0].Close()
	mu.Unlock()
	testutil.Eventually(t, 5*time.Second, func() error {
		if c := dial(); !isOpen(c) {
			return fmt.Errorf("still refused after a slot was freed")
		}
		return nil
	})
}

func startHealth(t *testing.T, lim Limits) (*grpc.ClientConn, string) {
	t.Helper()
	gs := NewGRPCServer(GRPCConfig{Log: testutil.Logger(t), Limits: lim}, func(gs *grpc.Server) {
		healthpb.RegisterHealthServer(gs, health.NewServer())
	})
	lis := lim.Listener(testutil.Listen(t), nil)
	var wg sync.WaitGroup
	Start(&wg, testutil.Logger(t), gs, lis, nil, nil)
	t.Cleanup(func() { Stop(gs, nil, time.Second); wg.Wait() })
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn, lis.Addr().String()
}

// With MaxConcurrentStreams 1, a second call waits while a stream is
// open, and runs once it ends.
func TestMaxConcurrentStreams(t *testing.T) {
	lim := DefaultLimits()
	lim.MaxConcurrentStreams = 1
	conn, _ := startHealth(t, lim)
	hc := healthpb.NewHealthClient(conn)
	wctx, wcancel := context.WithCancel(testutil.Context(t, 10*time.Second))
	w, err := hc.Watch(wctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Recv(); err != nil { // the stream is open on the server
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	_, err = hc.Check(ctx, &healthpb.HealthCheckRequest{})
	cancel()
	if status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("second stream: %v, want DeadlineExceeded (waiting for a free stream)", err)
	}
	wcancel()
	if _, err := hc.Check(testutil.Context(t, 10*time.Second), &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatalf("after the stream ended: %v", err)
	}
}

// A client pinging more often than KeepaliveMinTime is sent GOAWAY with
// ENHANCE_YOUR_CALM and disconnected.
func TestPingFloodGetsGoAway(t *testing.T) {
	lim := DefaultLimits()
	lim.KeepalivePermitWithoutStream = false
	_, addr := startHealth(t, lim)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	fr := http2.NewFramer(c, bufio.NewReader(c))
	if err := fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	done := make(chan struct{})
	defer close(done)
	wg.Go(func() {
		for i := uint64(0); ; i++ {
			select {
			case <-done:
				return
			default:
			}
			var data [8]byte
			data[7] = byte(i)
			if fr.WritePing(false, data) != nil {
				return
			}
			if i > 100 {
				return
			}
		}
	})
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatalf("no GOAWAY before %v", err)
		}
		if ga, ok := f.(*http2.GoAwayFrame); ok {
			if ga.ErrCode != http2.ErrCodeEnhanceYourCalm {
				t.Fatalf("GOAWAY %v, want ENHANCE_YOUR_CALM", ga.ErrCode)
			}
			return
		}
	}
}

// A client trickling its headers is cut at ReadHeaderTimeout, however
// steadily it trickles.
func TestHTTPSlowlorisCut(t *testing.T) {
	lim := DefaultHTTPLimits()
	lim.ReadHeaderTimeout = 300 * time.Millisecond
	hs := NewHTTPServer(http.NotFoundHandler(), testutil.Logger(t), lim)
	ln := lim.Listener(testutil.Listen(t), nil)
	var wg sync.WaitGroup
	Start(&wg, testutil.Logger(t), nil, nil, hs, ln)
	t.Cleanup(func() { Stop(nil, hs, time.Second); wg.Wait() })

	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\nX-Slow: "); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	done := make(chan struct{})
	var tw sync.WaitGroup
	defer tw.Wait()
	defer close(done)
	tw.Go(func() { // one header byte every 20ms, never the end
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-tick.C:
				if _, err := c.Write([]byte("a")); err != nil {
					return
				}
			}
		}
	})
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err = io.ReadAll(c)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatal("the trickling client was not cut")
	}
	if d := time.Since(start); d < lim.ReadHeaderTimeout/2 {
		t.Fatalf("cut after %v, before the header timeout", d)
	}
}

// A streaming handler outlives WriteTimeout and ReadTimeout; a plain one
// does not.
func TestStreamingLiftsDeadlines(t *testing.T) {
	lim := DefaultHTTPLimits()
	lim.ReadHeaderTimeout, lim.ReadTimeout, lim.WriteTimeout = 100*time.Millisecond, 100*time.Millisecond, 100*time.Millisecond
	slow := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		for i := range 3 {
			timer := time.NewTimer(100 * time.Millisecond)
			select {
			case <-r.Context().Done():
				timer.Stop()
				return
			case <-timer.C:
			}
			_, _ = fmt.Fprintf(w, "data: %d\n\n", i)
			_ = http.NewResponseController(w).Flush()
		}
	})
	mux := http.NewServeMux()
	mux.Handle("/stream", Streaming(slow))
	mux.Handle("/plain", slow)
	hs := NewHTTPServer(mux, testutil.Logger(t), lim)
	ln := testutil.Listen(t)
	var wg sync.WaitGroup
	Start(&wg, testutil.Logger(t), nil, nil, hs, ln)
	t.Cleanup(func() { Stop(nil, hs, time.Second); wg.Wait() })

	get := func(path string) (string, error) {
		req, _ := http.NewRequestWithContext(testutil.Context(t, 10*time.Second), http.MethodGet, "http://"+ln.Addr().String()+path, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return string(b), err
	}
	if body, err := get("/stream"); err != nil || body != "data: 0\n\ndata: 1\n\ndata: 2\n\n" {
		t.Fatalf("streaming: %q, %v", body, err)
	}
	if body, err := get("/plain"); err == nil && body == "data: 0\n\ndata: 1\n\ndata: 2\n\n" {
		t.Fatal("the plain handler outlived WriteTimeout: the test shows nothing")
	}
}
