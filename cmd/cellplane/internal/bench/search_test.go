package bench

import (
	"math"
	"testing"
	"time"

	"github.com/cellplane/cellplane/internal/testutil"
)

// TestRunSearch: a tiny run fills every figure of the report.
func TestRunSearch(t *testing.T) {
	if testing.Short() {
		t.Skip("opens two stores")
	}
	ctx := testutil.Context(t, time.Minute)
	rep, err := RunSearch(ctx, SearchOptions{Appends: 40, Rounds: 2, Concurrency: 4, Entries: 300, Queries: 20, EntryWords: 10, Vocabulary: 200, DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	res := rep.Results.(SearchResults)
	if res.Entries < 300 || res.RebuildDocs != 80 || res.AppendCPUPerOpOnUs <= 0 || res.AppendCPUPerOpOffUs <= 0 || res.Search.P50 <= 0 {
		t.Fatalf("results %+v", res)
	}
	for _, k := range []string{"search_append_cpu_on_vs_off", "search_p50_ms", "search_p99_ms", "search_rebuild_s_per_gib"} {
		if v, ok := rep.Ratios[k]; !ok || math.IsNaN(v) || v <= 0 {
			t.Errorf("ratio %s = %v", k, v)
		}
	}
}
