package replication

import (
	"context"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/cellplane/cellplane/internal/testutil"
)

func TestConfigValidate(t *testing.T) {
	if err := DefaultSinkConfig().Validate(); err != nil {
		t.Fatalf("default sink config: %v", err)
	}
	if err := DefaultSourceConfig().Validate(); err != nil {
		t.Fatalf("default source config: %v", err)
	}
	sink := []struct {
		name string
		mod  func(*SinkConfig)
		want string
	}{
		{"rescan", func(c *SinkConfig) { c.Rescan = 0 }, "Rescan"},
		{"reject retry", func(c *SinkConfig) { c.RejectRetry = 0 }, "RejectRetry"},
		{"retry order", func(c *SinkConfig) { c.RetryMax = c.RetryMin / 2 }, "RetryMax"},
		{"batch", func(c *SinkConfig) { c.MaxBatchEvents = 0 }, "MaxBatchEvents"},
		{"apply below batch", func(c *SinkConfig) { c.MaxApplyEvents = c.MaxBatchEvents - 1 }, "MaxApplyEvents"},
		{"read ahead", func(c *SinkConfig) { c.ReadAhead = 0 }, "ReadAhead"},
		{"applies in flight", func(c *SinkConfig) { c.MaxInflightApplies = 0 }, "MaxInflightApplies"},
		{"bootstrap cap", func(c *SinkConfig) { c.MaxConcurrentBootstraps = 0 }, "MaxConcurrentBootstraps"},
		{"lag threshold", func(c *SinkConfig) { c.Metrics.LagThreshold = 0 }, "Metrics.LagThreshold"},
		{"tenant series bound", func(c *SinkConfig) { c.Metrics.MaxTenantSeries = 0 }, "Metrics.MaxTenantSeries"},
	}
	for _, tc := range sink {
		c := DefaultSinkConfig()
		tc.mod(&c)
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("sink %s: Validate = %v, want an error about %s", tc.name, err, tc.want)
		}
	}
	source := []struct {
		name string
		mod  func(*SourceConfig)
		want string
	}{
		{"heartbeat", func(c *SourceConfig) { c.Heartbeat = -time.Second }, "Heartbeat"},
		{"lag wait", func(c *SourceConfig) { c.LagWait = 0 }, "LagWait"},
		{"chunk over gRPC's bound", func(c *SourceConfig) { c.ExportChunkBytes = 8 << 20 }, "ExportChunkBytes"},
		{"batch", func(c *SourceConfig) { c.MaxBatchBytes = 0 }, "MaxBatchEvents and MaxBatchBytes"},
	}
	for _, tc := range source {
		c := DefaultSourceConfig()
		tc.mod(&c)
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("source %s: Validate = %v, want an error about %s", tc.name, err, tc.want)
		}
	}
	if DefaultSinkConfig().Metrics.TenantLabels {
		t.Error("tenant labels are on by default: /metrics would name every standby tenant (M7)")
	}
	if _, err := NewSink(nil, DefaultSinkConfig()); err == nil || !strings.Contains(err.Error(), "Connect") {
		t.Errorf("NewSink without Connect = %v", err)
	}
	c := DefaultSinkConfig()
	c.Connect = func(context.Context, string) (grpc.ClientConnInterface, error) { return nil, nil }
	if _, err := NewSink(nil, c); err != nil {
		t.Errorf("NewSink = %v", err)
	}
}

// With MaxConcurrentBootstraps N, N bootstraps hold a slot and the
// (N+1)th waits until one ends (finding M5).
func TestBootstrapSlotsCap(t *testing.T) {
	const max = 3
	cfg := DefaultSinkConfig()
	cfg.MaxConcurrentBootstraps = max
	cfg.Connect = func(context.Context, string) (grpc.ClientConnInterface, error) { return nil, nil }
	s, err := NewSink(nil, cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx := testutil.Context(t, 10*time.Second)
	var releases []func()
	for range max {
		r, err := s.acquireBootstrap(ctx, testutil.Logger(t))
		if err != nil {
			t.Fatal(err)
		}
		releases = append(releases, r)
	}
	got := make(chan func(), 1)
	go func() {
		r, err := s.acquireBootstrap(ctx, testutil.Logger(t))
		if err != nil {
			t.Error(err)
			close(got)
			return
		}
		got <- r
	}()
	// The (N+1)th waits: a bounded wait sees it blocked...
	wctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	if _, err := s.acquireBootstrap(wctx, testutil.Logger(t)); err == nil {
		t.Fatal("a bootstrap over the cap got a slot")
	}
	cancel()
	select {
	case <-got:
		t.Fatal("the (N+1)th bootstrap did not wait")
	default:
	}
	// ...and runs once one ends.
	releases[0]()
	r, ok := <-got
	if !ok {
		t.Fatal("the waiting bootstrap failed")
	}
	r()
	for _, r := range releases[1:] {
		r()
	}
}
