// Package testutil holds the small helpers every cellplane test uses:
// polling with a deadline instead of sleeping, contexts with timeouts that
// end with the test, component logs routed to t.Log (shown only when a test
// fails or with -v), and loopback listeners closed on cleanup.
//
//	func TestSomething(t *testing.T) {
//		ctx := testutil.Context(t, 10*time.Second)
//		lis := testutil.Listen(t)
//		srv := start(ctx, lis, testutil.Logger(t))
//		testutil.Eventually(t, 5*time.Second, func() error {
//			if !srv.Ready() {
//				return errors.New("not ready yet")
//			}
//			return nil
//		})
//	}
package testutil

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/cellplane/cellplane/internal/logging"
)

// Poll intervals of Eventually: it starts fast and backs off, so quick
// conditions are seen quickly and slow ones do not burn CPU.
const (
	minPoll = 2 * time.Millisecond
	maxPoll = 100 * time.Millisecond
)

// Eventually calls fn until it returns nil or timeout passes; then it fails
// the test with fn's last error. It must be called from the test's
// goroutine (it calls t.Fatalf).
func Eventually(t testing.TB, timeout time.Duration, fn func() error) {
	t.Helper()
	if err := Poll(context.Background(), timeout, fn); err != nil {
		t.Fatalf("condition not met: %v", err)
	}
}

// Poll calls fn until it returns nil, ctx ends or timeout passes, and
// returns nil or an error wrapping fn's last error. Unlike Eventually it
// can run on any goroutine.
func Poll(ctx context.Context, timeout time.Duration, fn func() error) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	wait := minPoll
	timer := time.NewTimer(0)
	defer timer.Stop()
	<-timer.C
	var last error
	for attempt := 1; ; attempt++ {
		if last = fn(); last == nil {
			return nil
		}
		timer.Reset(wait)
		select {
		case <-ctx.Done():
			return fmt.Errorf("after %s (%d attempts): %w", timeout, attempt, last)
		case <-timer.C:
		}
		wait = min(wait*2, maxPoll)
	}
}

// Context returns a context that ends after d, when the test ends, or when
// its cleanup runs, whichever comes first.
func Context(t testing.TB, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), d)
	t.Cleanup(cancel)
	return ctx
}

// SlogWriter returns a writer that sends each line to t.Log. Writes after
// the test's cleanup started are dropped, not turned into a panic, because
// servers may log while they stop.
func SlogWriter(t testing.TB) io.Writer {
	t.Helper()
	w := &tWriter{t: t}
	t.Cleanup(w.stop)
	return w
}

// Logger returns a logger at Debug level writing through SlogWriter, so a
// component's logs show only when the test fails (or with go test -v). Use
// logger.With("node", id) to tell nodes apart.
func Logger(t testing.TB) *slog.Logger {
	t.Helper()
	return slog.New(logging.NewHandler(SlogWriter(t), logging.FormatText, slog.LevelDebug, false))
}

type tWriter struct {
	mu      sync.Mutex
	t       testing.TB
	stopped bool
	partial []byte
}

func (w *tWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.stopped {
		return len(p), nil
	}
	w.partial = append(w.partial, p...)
	for {
		i := bytes.IndexByte(w.partial, '\n')
		if i < 0 {
			break
		}
		w.t.Log(string(w.partial[:i]))
		w.partial = w.partial[i+1:]
	}
	return len(p), nil
}

func (w *tWriter) stop() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.partial) > 0 {
		w.t.Log(string(w.partial))
		w.partial = nil
	}
	w.stopped = true
}

// Listen returns a TCP listener on 127.0.0.1 with a free port, closed on
// cleanup (closing a listener the code under test already closed is fine).
func Listen(t testing.TB) net.Listener {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen on 127.0.0.1:0: %v", err)
	}
	t.Cleanup(func() {
		if err := l.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			t.Logf("close listener %s: %v", l.Addr(), err)
		}
	})
	return l
}
