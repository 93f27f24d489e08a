package ctxtime

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestSleep(t *testing.T) {
	if err := Sleep(context.Background(), time.Millisecond); err != nil {
		t.Fatalf("Sleep = %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	start := time.Now()
	if err := Sleep(ctx, time.Hour); !errors.Is(err, context.Canceled) || time.Since(start) > time.Second {
		t.Fatalf("Sleep on an ended context = %v after %v", err, time.Since(start))
	}
	if err := Sleep(ctx, 0); !errors.Is(err, context.Canceled) {
		t.Fatalf("Sleep(0) on an ended context = %v", err)
	}
}

func TestWithin(t *testing.T) {
	if !Within(context.Background(), time.Millisecond) {
		t.Fatal("Within without a deadline refused")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
	defer cancel()
	start := time.Now()
	if Within(ctx, 2*time.Hour) || time.Since(start) > time.Second {
		t.Fatal("Within waited past the deadline's reach")
	}
	if !Within(ctx, time.Millisecond) {
		t.Fatal("Within refused a wait inside the deadline")
	}
}
