package testutil

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// fakeTB records what the helpers report, so their failure paths can be
// tested without failing this test.
type fakeTB struct {
	testing.TB
	logs   []string
	fatals []string
	clean  []func()
}

func (f *fakeTB) Helper()                         {}
func (f *fakeTB) Log(args ...any)                 { f.logs = append(f.logs, args[0].(string)) }
func (f *fakeTB) Logf(format string, args ...any) { f.logs = append(f.logs, format) }
func (f *fakeTB) Fatalf(format string, args ...any) {
	f.fatals = append(f.fatals, fmt.Sprintf(format, args...))
}
func (f *fakeTB) Cleanup(fn func()) { f.clean = append(f.clean, fn) }
func (f *fakeTB) runCleanup() {
	for i := len(f.clean) - 1; i >= 0; i-- {
		f.clean[i]()
	}
}

func TestEventuallySucceeds(t *testing.T) {
	var n atomic.Int32
	Eventually(t, 5*time.Second, func() error {
		if n.Add(1) < 3 {
			return errors.New("not yet")
		}
		return nil
	})
	if got := n.Load(); got != 3 {
		t.Fatalf("fn called %d times, want 3", got)
	}
}

func TestEventuallyReportsLastError(t *testing.T) {
	f := &fakeTB{}
	var n atomic.Int32
	Eventually(f, 30*time.Millisecond, func() error {
		n.Add(1)
		return errors.New("still broken")
	})
	if len(f.fatals) != 1 || !strings.Contains(f.fatals[0], "still broken") {
		t.Fatalf("fatals = %q, want the last error", f.fatals)
	}
	if n.Load() < 2 {
		t.Fatalf("fn called %d times, want polling", n.Load())
	}
}

func TestPollStopsWithContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err := Poll(ctx, time.Hour, func() error { return errors.New("never") })
	if err == nil || !strings.Contains(err.Error(), "never") {
		t.Fatalf("Poll = %v", err)
	}
}

func TestContextEndsOnCleanup(t *testing.T) {
	var ctx context.Context
	t.Run("inner", func(t *testing.T) {
		ctx = Context(t, time.Hour)
		if ctx.Err() != nil {
			t.Fatal("context ended early")
		}
		if _, ok := ctx.Deadline(); !ok {
			t.Fatal("context has no deadline")
		}
	})
	if ctx.Err() == nil {
		t.Fatal("context still alive after the test ended")
	}
}

func TestSlogWriterLinesAndStop(t *testing.T) {
	f := &fakeTB{}
	w := SlogWriter(f)
	if _, err := w.Write([]byte("one\ntw")); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write([]byte("o\nthree")); err != nil {
		t.Fatal(err)
	}
	f.runCleanup()
	if _, err := w.Write([]byte("after cleanup\n")); err != nil {
		t.Fatal(err)
	}
	want := []string{"one", "two", "three"}
	if strings.Join(f.logs, "|") != strings.Join(want, "|") {
		t.Fatalf("logs = %q, want %q", f.logs, want)
	}
}

func TestLogger(t *testing.T) {
	f := &fakeTB{}
	Logger(f).With("node", "n1").Debug("hello", "k", "v")
	if len(f.logs) != 1 || !strings.Contains(f.logs[0], "msg=hello") || !strings.Contains(f.logs[0], "node=n1") {
		t.Fatalf("logs = %q", f.logs)
	}
}

func TestListen(t *testing.T) {
	var addr string
	t.Run("inner", func(t *testing.T) {
		l := Listen(t)
		addr = l.Addr().String()
		if !strings.HasPrefix(addr, "127.0.0.1:") {
			t.Fatalf("addr = %s", addr)
		}
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		c.Close()
	})
	// Closed on cleanup: the port is free again.
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("port still taken after cleanup: %v", err)
	}
	l.Close()
}
