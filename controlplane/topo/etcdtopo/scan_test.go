package etcdtopo_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cellplane/cellplane/controlplane/topo"
	"github.com/cellplane/cellplane/controlplane/topo/etcdtopo"
	"github.com/cellplane/cellplane/controlplane/topo/memtopo"
	"github.com/cellplane/cellplane/controlplane/topo/topotest"
	"github.com/cellplane/cellplane/internal/testutil"
)

// TestScan: etcd's Scan (RangeStream) returns exactly what List pages
// return (every key of the prefix once, in order, nothing outside it), at
// the revision asked for, and fails as List does; topo.Scan on a store
// without a Scanner (memtopo) pages with List.
func TestScan(t *testing.T) {
	if testing.Short() {
		t.Skip("starts etcd")
	}
	ctx := testutil.Context(t, 60*time.Second)
	est := topotest.NewEtcdStore(t)
	if _, ok := est.(topo.Scanner); !ok {
		t.Fatal("etcdtopo.Store is not a topo.Scanner")
	}
	mst := memtopo.New()
	defer mst.Close()
	const n = 1500
	val := []byte(strings.Repeat("v", 300))
	for _, st := range []topo.Store{est, mst} {
		for i := 0; i < n; i += 100 {
			ops := make([]topo.Op, 0, 100)
			for j := i; j < i+100; j++ {
				ops = append(ops, topo.Put(fmt.Sprintf("scan/k%05d", j), val))
			}
			if _, err := st.Txn(ctx, nil, ops); err != nil {
				t.Fatal(err)
			}
		}
		// Keys next to the prefix that must not be listed.
		for _, k := range []string{"scam", "scan0", "scao/x"} {
			if _, err := st.Create(ctx, k, val); err != nil {
				t.Fatal(err)
			}
		}
	}
	want := func(lo, hi int) []string {
		var ks []string
		for i := lo; i < hi; i++ {
			ks = append(ks, fmt.Sprintf("scan/k%05d", i))
		}
		return ks
	}
	scan := func(st topo.Store, rev topo.Revision) ([]string, int, topo.Revision, error) {
		var keys []string
		chunks := 0
		got, err := topo.Scan(ctx, st, "scan/", rev, 100, func(kvs []topo.KV) error {
			chunks++
			for _, kv := range kvs {
				keys = append(keys, kv.Key)
			}
			return nil
		})
		return keys, chunks, got, err
	}
	for _, tc := range []struct {
		name string
		st   topo.Store
	}{{"etcd", est}, {"memtopo", mst}} {
		t.Run(tc.name, func(t *testing.T) {
			keys, chunks, rev, err := scan(tc.st, 0)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(keys, want(0, n)) {
				t.Fatalf("scan returned %d keys (first %q), want %d in order", len(keys), keys[:min(3, len(keys))], n)
			}
			if chunks < 2 {
				t.Fatalf("scan of %d keys in %d chunk(s): not streamed/paged", n, chunks)
			}
			cur, err := tc.st.List(ctx, "scan/", topo.ListOptions{Limit: 1})
			if err != nil || rev != cur.Revision {
				t.Fatalf("scan revision %d, List's current revision %d (%v)", rev, cur.Revision, err)
			}

			// At a pinned revision: later writes and deletes are not seen.
			if _, err := tc.st.Txn(ctx, nil, []topo.Op{topo.Put(fmt.Sprintf("scan/k%05d", n), val), topo.Del("scan/k00000")}); err != nil {
				t.Fatal(err)
			}
			keys, _, got, err := scan(tc.st, rev)
			if err != nil || got != rev || !slices.Equal(keys, want(0, n)) {
				t.Fatalf("scan at %d = %d keys at %d, %v; want %d keys", rev, len(keys), got, err, n)
			}
			keys, _, _, err = scan(tc.st, 0)
			if err != nil || !slices.Equal(keys, want(1, n+1)) {
				t.Fatalf("scan now = %d keys, %v; want %d", len(keys), err, n)
			}

			// An error from fn stops the scan and comes back as is (and
			// the stream's goroutine ends: goleak in TestMain).
			stop := errors.New("stop")
			calls := 0
			if _, err := topo.Scan(ctx, tc.st, "scan/", 0, 100, func([]topo.KV) error { calls++; return stop }); !errors.Is(err, stop) || calls != 1 {
				t.Fatalf("scan with a failing fn = %v after %d calls", err, calls)
			}

			// An empty prefix: no chunk with keys, the current revision.
			var empty int
			if rev, err := topo.Scan(ctx, tc.st, "nothing/", 0, 100, func(kvs []topo.KV) error { empty += len(kvs); return nil }); err != nil || rev == 0 || empty != 0 {
				t.Fatalf("scan of an empty prefix = rev %d, %d keys, %v", rev, empty, err)
			}

			// A compacted revision.
			if err := tc.st.(topotest.Compacter).Compact(ctx, rev+1); err != nil {
				t.Fatal(err)
			}
			if _, _, _, err := scan(tc.st, rev); !errors.Is(err, topo.ErrCompacted) {
				t.Fatalf("scan at a compacted revision = %v, want ErrCompacted", err)
			}
		})
	}
}

// TestScanCanceled: a canceled context ends a scan with the context's
// error.
func TestScanCanceled(t *testing.T) {
	if testing.Short() {
		t.Skip("starts etcd")
	}
	st := topotest.NewEtcdStore(t)
	ctx, cancel := context.WithCancel(testutil.Context(t, 10*time.Second))
	cancel()
	if _, err := st.(*etcdtopo.Store).Scan(ctx, "x/", 0, func([]topo.KV) error { return nil }); !errors.Is(err, context.Canceled) {
		t.Fatalf("scan with a canceled context = %v", err)
	}
}
