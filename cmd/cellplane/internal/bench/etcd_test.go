package bench

import (
	"context"
	"testing"
	"time"

	"github.com/cellplane/cellplane/internal/testutil"
	"go.uber.org/goleak"
)

func testContext(t *testing.T) context.Context { return testutil.Context(t, 60*time.Second) }

// waitNoLeaks waits until only the test's own goroutines are left. After
// Close, etcd's peer connections linger for up to its 5 s read timeout
// (their server side is not closed by Shutdown); goleak in TestMain would
// give up before they end.
func waitNoLeaks(t *testing.T) {
	t.Helper()
	testutil.Eventually(t, 15*time.Second, func() error { return goleak.Find() })
}

func TestEtcdBaseline(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a 3-member etcd")
	}
	ctx := testContext(t)
	t0 := time.Now()
	c, err := StartEtcd(ctx, t.TempDir(), 3)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		t0 := time.Now()
		c.Close()
		t.Logf("etcd closed in %v", time.Since(t0))
		waitNoLeaks(t)
	}()
	leader, err := c.LeaderURL(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("etcd ready with a leader in %v", time.Since(t0))
	for _, conc := range []int{1, 8} {
		res, err := EtcdPuts(ctx, leader, 256, Load{Name: "etcd put", Concurrency: conc, Ops: 40})
		if err != nil {
			t.Fatal(err)
		}
		if res.Ops != 40 || res.Errors != 0 {
			t.Fatalf("c=%d: %v", conc, res)
		}
		t.Logf("%v", res)
	}
}
