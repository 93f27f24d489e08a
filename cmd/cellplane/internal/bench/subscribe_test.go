package bench

import (
	"bytes"
	"testing"
	"time"

	"github.com/cellplane/cellplane/internal/testutil"
)

// TestRunSubscribe runs the subscribe scenario briefly: both paths get
// every append (RunSubscribe fails otherwise) and both ratios are there.
func TestRunSubscribe(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a 3-node cell and an MCP worker")
	}
	var progress bytes.Buffer
	rep, err := RunSubscribe(testutil.Context(t, 2*time.Minute), SubscribeOptions{
		Duration: time.Second, Rate: 50, Listeners: 2, EntrySize: 16,
		DataDir: t.TempDir(), Logger: quietLogger(t), Progress: &progress,
	})
	t.Logf("progress:\n%s", progress.String())
	if err != nil {
		t.Fatal(err)
	}
	res := rep.Results.(*SubscribeResults)
	if res.Appends == 0 || res.GRPC.Ops < 2*res.Appends || res.MCP.Ops < 2*res.Appends {
		t.Fatalf("results %+v", res)
	}
	for _, k := range []string{RatioSubscribeP50MCPVsGRPC, RatioSubscribeP99MCPVsGRPC} {
		if rep.Ratios[k] <= 0 {
			t.Errorf("ratio %s = %v", k, rep.Ratios[k])
		}
	}
}
