package topotest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/cellplane/cellplane/controlplane/topo"
	"github.com/cellplane/cellplane/internal/testutil"
)

// Compacter is implemented by stores whose history can be compacted (both
// memtopo and etcdtopo); Run uses it to test ErrCompacted.
type Compacter interface {
	Compact(ctx context.Context, rev topo.Revision) error
}

// Run runs the conformance suite; newStore returns a fresh, empty store
// for each subtest (and arranges its Close).
func Run(t *testing.T, newStore func(t *testing.T) topo.Store) {
	tests := []struct {
		name string
		fn   func(t *testing.T, st topo.Store)
	}{
		{"CRUD", testCRUD},
		{"VersionsGrow", testVersionsGrow},
		{"Txn", testTxn},
		{"TxnLimits", testTxnLimits},
		{"List", testList},
		{"ListPagination", testListPagination},
		{"Watch", testWatch},
		{"WatchCancel", testWatchCancel},
		{"WatchProgress", testWatchProgress},
		{"Compacted", testCompacted},
		{"Session", testSession},
		{"Campaign", testCampaign},
		{"CampaignSessionClose", testCampaignSessionClose},
		{"ContextCancel", testContextCancel},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, newStore(t)) })
	}
}

func wantErr(t *testing.T, what string, err, target error) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("%s: err = %v, want %v", what, err, target)
	}
}

func must(t *testing.T, what string, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

func testCRUD(t *testing.T, st topo.Store) {
	ctx := testutil.Context(t, 20*time.Second)
	_, err := st.Get(ctx, "crud/a")
	wantErr(t, "get missing", err, topo.ErrNotFound)

	v1, err := st.Create(ctx, "crud/a", []byte("one"))
	must(t, "create", err)
	if v1 <= 0 {
		t.Fatalf("create version %d", v1)
	}
	kv, err := st.Get(ctx, "crud/a")
	must(t, "get", err)
	if kv.Key != "crud/a" || string(kv.Value) != "one" || kv.Version != v1 || kv.Created != v1 || kv.Lease != 0 {
		t.Fatalf("get = %+v, want crud/a=one at %d", kv, v1)
	}
	_, err = st.Create(ctx, "crud/a", []byte("again"))
	wantErr(t, "create existing", err, topo.ErrExists)

	_, err = st.Update(ctx, "crud/a", []byte("x"), v1+100)
	wantErr(t, "update stale", err, topo.ErrVersionMismatch)
	_, err = st.Update(ctx, "crud/missing", []byte("x"), v1)
	wantErr(t, "update missing", err, topo.ErrNotFound)
	v2, err := st.Update(ctx, "crud/a", []byte("two"), v1)
	must(t, "update", err)
	if v2 <= v1 {
		t.Fatalf("update version %d <= %d", v2, v1)
	}
	kv, err = st.Get(ctx, "crud/a")
	must(t, "get", err)
	if string(kv.Value) != "two" || kv.Version != v2 || kv.Created != v1 {
		t.Fatalf("get after update = %+v, want two at %d created %d", kv, v2, v1)
	}
	_, err = st.Update(ctx, "crud/a", []byte("three"), v1)
	wantErr(t, "update with the old version", err, topo.ErrVersionMismatch)

	wantErr(t, "delete stale", st.Delete(ctx, "crud/a", v1), topo.ErrVersionMismatch)
	must(t, "delete", st.Delete(ctx, "crud/a", v2))
	_, err = st.Get(ctx, "crud/a")
	wantErr(t, "get deleted", err, topo.ErrNotFound)
	wantErr(t, "delete missing", st.Delete(ctx, "crud/a", 0), topo.ErrNotFound)
	wantErr(t, "delete missing with version", st.Delete(ctx, "crud/a", v2), topo.ErrNotFound)

	_, err = st.Create(ctx, "crud/b", []byte("b"))
	must(t, "create b", err)
	must(t, "delete any version", st.Delete(ctx, "crud/b", 0))
	// Recreating starts a new life: a new creation revision.
	v3, err := st.Create(ctx, "crud/a", nil)
	must(t, "recreate", err)
	kv, err = st.Get(ctx, "crud/a")
	must(t, "get recreated", err)
	if kv.Created != v3 || kv.Version != v3 || len(kv.Value) != 0 {
		t.Fatalf("recreated = %+v, want created at %d", kv, v3)
	}

	_, err = st.Get(ctx, "")
	wantErr(t, "get empty key", err, topo.ErrInvalid)
	_, err = st.Create(ctx, "", nil)
	wantErr(t, "create empty key", err, topo.ErrInvalid)
}

func testVersionsGrow(t *testing.T, st topo.Store) {
	ctx := testutil.Context(t, 20*time.Second)
	var last topo.Version
	for i := range 10 {
		k := fmt.Sprintf("grow/%d", i%3)
		var v topo.Version
		var err error
		if i < 3 {
			v, err = st.Create(ctx, k, []byte{byte(i)})
		} else {
			var kv topo.KV
			kv, err = st.Get(ctx, k)
			must(t, "get", err)
			v, err = st.Update(ctx, k, []byte{byte(i)}, kv.Version)
		}
		must(t, "write "+k, err)
		if v <= last {
			t.Fatalf("write %d: version %d <= previous %d", i, v, last)
		}
		last = v
	}
}

func testTxn(t *testing.T, st topo.Store) {
	ctx := testutil.Context(t, 20*time.Second)
	vy, err := st.Create(ctx, "txn/y", []byte("y"))
	must(t, "create y", err)

	// A failing condition writes nothing and says which one failed.
	_, err = st.Txn(ctx,
		[]topo.Cond{topo.IfAbsent("txn/x"), topo.IfVersion("txn/y", vy+7), topo.IfExists("txn/nope")},
		[]topo.Op{topo.Put("txn/x", []byte("x")), topo.Put("txn/z", []byte("z")), topo.Del("txn/y")})
	wantErr(t, "txn with a stale cond", err, topo.ErrConditionFailed)
	var ce *topo.CondError
	if !errors.As(err, &ce) {
		t.Fatalf("txn error %T %v is not a *topo.CondError", err, err)
	}
	if ce.Index != 1 || ce.Actual != vy || ce.Cond.Key != "txn/y" {
		t.Fatalf("CondError = %+v, want index 1 on txn/y actual %d", ce, vy)
	}
	for _, k := range []string{"txn/x", "txn/z"} {
		_, err := st.Get(ctx, k)
		wantErr(t, "get "+k+" after a failed txn", err, topo.ErrNotFound)
	}
	if _, err := st.Get(ctx, "txn/y"); err != nil {
		t.Fatalf("txn/y deleted by a failed txn: %v", err)
	}

	_, err = st.Txn(ctx, []topo.Cond{topo.IfAbsent("txn/x"), topo.IfExists("txn/nope")}, []topo.Op{topo.Put("txn/x", nil)})
	if !errors.As(err, &ce) || ce.Index != 1 || ce.Actual != 0 {
		t.Fatalf("txn IfExists(missing) = %v, want CondError index 1 actual 0", err)
	}
	_, err = st.Txn(ctx, []topo.Cond{topo.IfAbsent("txn/y")}, nil)
	if !errors.As(err, &ce) || ce.Index != 0 || ce.Actual != vy {
		t.Fatalf("txn IfAbsent(existing) = %v, want CondError index 0 actual %d", err, vy)
	}

	// All conditions hold: every op applies at one revision.
	rev, err := st.Txn(ctx,
		[]topo.Cond{topo.IfAbsent("txn/x"), topo.IfVersion("txn/y", vy), topo.IfExists("txn/y")},
		[]topo.Op{topo.Put("txn/x", []byte("x")), topo.Put("txn/z", []byte("z")), topo.Del("txn/y")})
	must(t, "txn", err)
	if topo.Version(rev) <= vy {
		t.Fatalf("txn revision %d <= %d", rev, vy)
	}
	for _, k := range []string{"txn/x", "txn/z"} {
		kv, err := st.Get(ctx, k)
		must(t, "get "+k, err)
		if kv.Version != topo.Version(rev) {
			t.Fatalf("%s version %d, want the txn's revision %d", k, kv.Version, rev)
		}
	}
	_, err = st.Get(ctx, "txn/y")
	wantErr(t, "get deleted y", err, topo.ErrNotFound)

	// Deleting an absent key in a txn is not an error.
	_, err = st.Txn(ctx, nil, []topo.Op{topo.Del("txn/never"), topo.Put("txn/w", []byte("w"))})
	must(t, "txn deleting an absent key", err)
}

func testTxnLimits(t *testing.T, st topo.Store) {
	ctx := testutil.Context(t, 20*time.Second)
	ops := make([]topo.Op, 129)
	for i := range ops {
		ops[i] = topo.Put(fmt.Sprintf("lim/%03d", i), nil)
	}
	_, err := st.Txn(ctx, nil, ops)
	wantErr(t, "txn of 129 ops", err, topo.ErrInvalid)
	_, err = st.Txn(ctx, nil, ops[:128])
	must(t, "txn of 128 ops", err)
	_, err = st.Txn(ctx, nil, []topo.Op{topo.Put("lim/d", nil), topo.Del("lim/d")})
	wantErr(t, "txn with a duplicate key", err, topo.ErrInvalid)
	_, err = st.Txn(ctx, nil, []topo.Op{topo.Put("", nil)})
	wantErr(t, "txn with an empty key", err, topo.ErrInvalid)
}

// fill creates n keys prefix%05d (value = key) in txns of 100.
func fill(t *testing.T, ctx context.Context, st topo.Store, prefix string, n int) {
	t.Helper()
	for start := 0; start < n; start += 100 {
		var ops []topo.Op
		for i := start; i < min(start+100, n); i++ {
			k := fmt.Sprintf("%s%05d", prefix, i)
			ops = append(ops, topo.Put(k, []byte(k)))
		}
		if _, err := st.Txn(ctx, nil, ops); err != nil {
			t.Fatalf("fill %s: %v", prefix, err)
		}
	}
}

func testList(t *testing.T, st topo.Store) {
	ctx := testutil.Context(t, 20*time.Second)
	fill(t, ctx, st, "ls/", 5)
	// Neighbours of the prefix stay out.
	for _, k := range []string{"ls", "lr/0", "lt/0", "ls0"} {
		_, err := st.Create(ctx, k, nil)
		must(t, "create "+k, err)
	}
	res, err := st.List(ctx, "ls/", topo.ListOptions{})
	must(t, "list", err)
	if got := keys(res.KVs); !slices.Equal(got, []string{"ls/00000", "ls/00001", "ls/00002", "ls/00003", "ls/00004"}) || res.More {
		t.Fatalf("list = %v more %v", got, res.More)
	}
	if res.Revision <= 0 || string(res.KVs[2].Value) != "ls/00002" {
		t.Fatalf("list revision %d, kv %+v", res.Revision, res.KVs[2])
	}
	res, err = st.List(ctx, "ls/", topo.ListOptions{After: "ls/00001", Limit: 2, KeysOnly: true})
	must(t, "list after", err)
	if got := keys(res.KVs); !slices.Equal(got, []string{"ls/00002", "ls/00003"}) || !res.More {
		t.Fatalf("list after 00001 limit 2 = %v more %v", got, res.More)
	}
	for _, kv := range res.KVs {
		if kv.Value != nil || kv.Version <= 0 {
			t.Fatalf("keys-only kv %+v", kv)
		}
	}
	res, err = st.List(ctx, "ls/", topo.ListOptions{After: "ls/00004"})
	must(t, "list after the last", err)
	if len(res.KVs) != 0 || res.More {
		t.Fatalf("list after the last = %v more %v", keys(res.KVs), res.More)
	}
	res, err = st.List(ctx, "nothing/", topo.ListOptions{})
	must(t, "list empty prefix", err)
	if len(res.KVs) != 0 || res.More {
		t.Fatalf("list of an empty prefix = %v", keys(res.KVs))
	}
	_, err = st.List(ctx, "ls/", topo.ListOptions{Limit: -1})
	wantErr(t, "negative limit", err, topo.ErrInvalid)
}

func keys(kvs []topo.KV) []string {
	out := make([]string, len(kvs))
	for i, kv := range kvs {
		out[i] = kv.Key
	}
	return out
}

func testListPagination(t *testing.T, st topo.Store) {
	ctx := testutil.Context(t, 30*time.Second)
	const n = 2500
	fill(t, ctx, st, "page/", n)

	var (
		all   []topo.KV
		opts  = topo.ListOptions{Limit: 1000}
		pages int
	)
	for {
		res, err := st.List(ctx, "page/", opts)
		must(t, fmt.Sprintf("list page %d", pages), err)
		pages++
		if opts.Revision == 0 {
			opts.Revision = res.Revision
		} else if res.Revision != opts.Revision {
			t.Fatalf("page %d at revision %d, pinned %d", pages, res.Revision, opts.Revision)
		}
		all = append(all, res.KVs...)
		if pages == 1 {
			// Writes between pages are not seen by the pinned listing.
			_, err := st.Create(ctx, "page/01500x", []byte("new"))
			must(t, "create between pages", err)
			_, err = st.Txn(ctx, nil, []topo.Op{topo.Put("page/02400", []byte("changed")), topo.Del("page/01999")})
			must(t, "write between pages", err)
		}
		if !res.More {
			break
		}
		if len(res.KVs) != 1000 {
			t.Fatalf("page %d has %d keys and More", pages, len(res.KVs))
		}
		opts.After = res.KVs[len(res.KVs)-1].Key
	}
	if pages != 3 || len(all) != n {
		t.Fatalf("%d pages, %d keys; want 3 pages of %d keys", pages, len(all), n)
	}
	for i, kv := range all {
		want := fmt.Sprintf("page/%05d", i)
		if kv.Key != want || string(kv.Value) != want {
			t.Fatalf("key %d = %s=%q, want %s (a pinned listing must not see later writes)", i, kv.Key, kv.Value, want)
		}
	}
	// A fresh listing sees the writes.
	res, err := st.List(ctx, "page/015", topo.ListOptions{})
	must(t, "list after writes", err)
	if !slices.Contains(keys(res.KVs), "page/01500x") {
		t.Fatalf("fresh listing misses page/01500x")
	}
}

// collect reads responses until n events arrived.
func collect(t *testing.T, ctx context.Context, ch <-chan topo.WatchResponse, n int) []topo.Event {
	t.Helper()
	var evs []topo.Event
	var last topo.Revision
	for len(evs) < n {
		select {
		case r, ok := <-ch:
			if !ok {
				t.Fatalf("watch closed after %d of %d events", len(evs), n)
			}
			if r.Err != nil {
				t.Fatalf("watch failed after %d of %d events: %v", len(evs), n, r.Err)
			}
			for _, e := range r.Events {
				if topo.Revision(e.KV.Version) < last {
					t.Fatalf("event %+v out of revision order (after %d)", e, last)
				}
				last = topo.Revision(e.KV.Version)
			}
			evs = append(evs, r.Events...)
		case <-ctx.Done():
			t.Fatalf("watch: %d of %d events: %v", len(evs), n, ctx.Err())
		}
	}
	return evs
}

type evSummary struct {
	typ     topo.EventType
	key     string
	value   string
	version topo.Version
}

func summarize(evs []topo.Event) []evSummary {
	out := make([]evSummary, len(evs))
	for i, e := range evs {
		out[i] = evSummary{e.Type, e.KV.Key, string(e.KV.Value), e.KV.Version}
	}
	return out
}

func testWatch(t *testing.T, st topo.Store) {
	ctx := testutil.Context(t, 20*time.Second)
	v0, err := st.Create(ctx, "w/a", []byte("a0"))
	must(t, "create", err)
	v1, err := st.Create(ctx, "w/b", []byte("b1"))
	must(t, "create b", err)
	_, err = st.Create(ctx, "wx/other", nil) // outside the prefix
	must(t, "create other", err)
	v2, err := st.Update(ctx, "w/a", []byte("a2"), v0)
	must(t, "update", err)
	must(t, "delete", st.Delete(ctx, "w/b", v1))
	kvb, err := st.List(ctx, "w/", topo.ListOptions{})
	must(t, "list", err)
	v3 := topo.Version(kvb.Revision)
	r4, err := st.Txn(ctx, nil, []topo.Op{topo.Put("w/c", []byte("c4")), topo.Del("w/a")})
	must(t, "txn", err)
	v4 := topo.Version(r4)

	want := []evSummary{
		{topo.EventPut, "w/b", "b1", v1},
		{topo.EventPut, "w/a", "a2", v2},
		{topo.EventDelete, "w/b", "", v3},
		{topo.EventPut, "w/c", "c4", v4},
		{topo.EventDelete, "w/a", "", v4},
	}
	// From v1: exactly the later events, in order; the txn's two events
	// come at one revision in op order.
	got := summarize(collect(t, ctx, st.Watch(ctx, "w/", topo.Revision(v1)), len(want)))
	if !slices.Equal(got, want) {
		t.Fatalf("watch from %d:\n got %+v\nwant %+v", v1, got, want)
	}

	// A live watch sees writes made after it started, and nothing else.
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ch := st.Watch(wctx, "w/", topo.Revision(v4+1))
	v5, err := st.Create(ctx, "w/d", []byte("d5"))
	must(t, "create d", err)
	_, err = st.Create(ctx, "wx/ignored", nil)
	must(t, "create ignored", err)
	v6, err := st.Update(ctx, "w/d", []byte("d6"), v5)
	must(t, "update d", err)
	got = summarize(collect(t, ctx, ch, 2))
	if want := []evSummary{{topo.EventPut, "w/d", "d5", v5}, {topo.EventPut, "w/d", "d6", v6}}; !slices.Equal(got, want) {
		t.Fatalf("live watch:\n got %+v\nwant %+v", got, want)
	}
	evs := collect(t, ctx, st.Watch(ctx, "w/d", topo.Revision(v5)), 2)
	if evs[0].KV.Created != v5 || evs[1].KV.Created != v5 {
		t.Fatalf("watch events lack the creation revision: %+v", evs)
	}
}

func testWatchCancel(t *testing.T, st topo.Store) {
	ctx := testutil.Context(t, 20*time.Second)
	wctx, cancel := context.WithCancel(ctx)
	ch := st.Watch(wctx, "wc/", 0)
	cancel()
	for {
		select {
		case r, ok := <-ch:
			if !ok {
				return
			}
			if r.Err == nil && len(r.Events) > 0 {
				t.Fatalf("unexpected events %+v", r.Events)
			}
		case <-ctx.Done():
			t.Fatalf("watch channel not closed after cancel: %v", ctx.Err())
		}
	}
}

// testWatchProgress: RequestProgress makes a quiet watch send a response
// with no events at a revision at least the store's, after every event
// up to it.
func testWatchProgress(t *testing.T, st topo.Store) {
	ctx := testutil.Context(t, 20*time.Second)
	v1, err := st.Create(ctx, "wp/a", []byte("1"))
	must(t, "create", err)
	ch := st.Watch(ctx, "wp/", topo.Revision(v1))
	v2, err := st.Create(ctx, "other/b", []byte("2")) // outside the prefix
	must(t, "create other", err)
	sawEvent := false
	testutil.Eventually(t, 15*time.Second, func() error {
		// The first request may reach etcd before the watch is registered:
		// ask again until a notification answers.
		if err := st.RequestProgress(ctx); err != nil {
			return err
		}
		timer := time.NewTimer(200 * time.Millisecond)
		defer timer.Stop()
		for {
			select {
			case r, ok := <-ch:
				switch {
				case !ok || r.Err != nil:
					t.Fatalf("watch ended: %v", r.Err)
				case len(r.Events) > 0:
					sawEvent = true
				case !sawEvent:
					t.Fatalf("progress at %d before the event of %d", r.Revision, v1)
				case r.Revision < topo.Revision(v2):
					return fmt.Errorf("progress at %d, want >= %d", r.Revision, v2)
				default:
					return nil
				}
			case <-timer.C:
				return errors.New("no progress notification yet")
			}
		}
	})
}

func testCompacted(t *testing.T, st topo.Store) {
	c, ok := st.(Compacter)
	if !ok {
		t.Skipf("%T cannot compact", st)
	}
	ctx := testutil.Context(t, 20*time.Second)
	v1, err := st.Create(ctx, "cmp/a", []byte("1"))
	must(t, "create", err)
	v2, err := st.Update(ctx, "cmp/a", []byte("2"), v1)
	must(t, "update", err)
	v3, err := st.Create(ctx, "cmp/b", []byte("3"))
	must(t, "create b", err)
	must(t, "compact", c.Compact(ctx, topo.Revision(v3)))

	_, err = st.List(ctx, "cmp/", topo.ListOptions{Revision: topo.Revision(v2)})
	wantErr(t, "list at a compacted revision", err, topo.ErrCompacted)
	res, err := st.List(ctx, "cmp/", topo.ListOptions{Revision: topo.Revision(v3)})
	must(t, "list at the compaction revision", err)
	if got := keys(res.KVs); !slices.Equal(got, []string{"cmp/a", "cmp/b"}) || string(res.KVs[0].Value) != "2" {
		t.Fatalf("list at %d = %+v", v3, res.KVs)
	}

	ch := st.Watch(ctx, "cmp/", topo.Revision(v1))
	select {
	case r, ok := <-ch:
		if !ok {
			t.Fatal("watch closed without an error")
		}
		wantErr(t, "watch from a compacted revision", r.Err, topo.ErrCompacted)
	case <-ctx.Done():
		t.Fatal("no response from a watch of a compacted revision")
	}
	select {
	case _, ok := <-ch:
		if ok {
			t.Fatal("watch not closed after its error")
		}
	case <-ctx.Done():
		t.Fatal("watch not closed after its error")
	}
	// Watching from the compaction point still works.
	v4, err := st.Create(ctx, "cmp/c", nil)
	must(t, "create c", err)
	evs := collect(t, ctx, st.Watch(ctx, "cmp/", topo.Revision(v3)), 2)
	if evs[0].KV.Version != v3 || evs[1].KV.Version != v4 {
		t.Fatalf("watch from the compaction point = %+v", summarize(evs))
	}
}

func testSession(t *testing.T, st topo.Store) {
	ctx := testutil.Context(t, 20*time.Second)
	_, err := st.NewSession(ctx, 0)
	wantErr(t, "session ttl 0", err, topo.ErrInvalid)

	s, err := st.NewSession(ctx, 1500*time.Millisecond)
	must(t, "session", err)
	if s.Lease() == 0 {
		t.Fatal("session without a lease")
	}
	rev, err := st.Txn(ctx, nil, []topo.Op{topo.PutLeased("sess/a", []byte("a"), s.Lease()), topo.Put("sess/keep", nil)})
	must(t, "put leased", err)
	kv, err := st.Get(ctx, "sess/a")
	must(t, "get", err)
	if kv.Lease != s.Lease() {
		t.Fatalf("key lease %x, want %x", kv.Lease, s.Lease())
	}
	ch := st.Watch(ctx, "sess/", rev+1)
	select {
	case <-s.Done():
		t.Fatal("session done before Close")
	default:
	}
	must(t, "close session", s.Close())
	evs := collect(t, ctx, ch, 1)
	if evs[0].Type != topo.EventDelete || evs[0].KV.Key != "sess/a" {
		t.Fatalf("after session close: %+v, want a delete of sess/a", summarize(evs))
	}
	_, err = st.Get(ctx, "sess/a")
	wantErr(t, "get leased key after close", err, topo.ErrNotFound)
	if _, err := st.Get(ctx, "sess/keep"); err != nil {
		t.Fatalf("unleased key deleted with the session: %v", err)
	}
	select {
	case <-s.Done():
	case <-ctx.Done():
		t.Fatal("session Done not closed after Close")
	}
	_, err = st.Txn(ctx, nil, []topo.Op{topo.PutLeased("sess/b", nil, s.Lease())})
	if err == nil {
		t.Fatal("put with a revoked lease succeeded")
	}
}

type campaignResult struct {
	l   topo.Leadership
	err error
}

func campaign(ctx context.Context, st topo.Store, s topo.Session, name, value string) <-chan campaignResult {
	ch := make(chan campaignResult, 1)
	go func() {
		l, err := st.Campaign(ctx, s, name, []byte(value))
		ch <- campaignResult{l, err}
	}()
	return ch
}

// waitCandidates waits until n keys are under the election.
func waitCandidates(t *testing.T, ctx context.Context, st topo.Store, name string, n int) {
	t.Helper()
	testutil.Eventually(t, 10*time.Second, func() error {
		res, err := st.List(ctx, name+"/", topo.ListOptions{})
		if err != nil {
			return err
		}
		if len(res.KVs) != n {
			return fmt.Errorf("%d candidates, want %d", len(res.KVs), n)
		}
		return nil
	})
}

func wantLeader(t *testing.T, ctx context.Context, st topo.Store, name string, l topo.Leadership, value string) {
	t.Helper()
	kv, err := st.Leader(ctx, name)
	must(t, "leader", err)
	if kv.Key != l.Key() || string(kv.Value) != value || kv.Version != l.Version() {
		t.Fatalf("leader = %s=%q at %d, want %s=%q at %d", kv.Key, kv.Value, kv.Version, l.Key(), value, l.Version())
	}
}

func testCampaign(t *testing.T, st topo.Store) {
	ctx := testutil.Context(t, 30*time.Second)
	const name = "el/ctl"
	_, err := st.Leader(ctx, name)
	wantErr(t, "leader of an empty election", err, topo.ErrNotFound)

	s1, err := st.NewSession(ctx, 5*time.Second)
	must(t, "session 1", err)
	defer s1.Close()
	s2, err := st.NewSession(ctx, 5*time.Second)
	must(t, "session 2", err)
	defer s2.Close()

	l1, err := st.Campaign(ctx, s1, name, []byte("one"))
	must(t, "campaign 1", err)
	if len(l1.Key()) <= len(name)+1 || l1.Key()[:len(name)+1] != name+"/" {
		t.Fatalf("leader key %q is not under %s/ (relative)", l1.Key(), name)
	}
	wantLeader(t, ctx, st, name, l1, "one")
	guarded := func(l topo.Leadership, v string) error {
		_, err := st.Txn(ctx, []topo.Cond{topo.IfVersion(l.Key(), l.Version())}, []topo.Op{topo.Put("el/data", []byte(v))})
		return err
	}
	must(t, "guarded write while leading", guarded(l1, "by one"))

	second := campaign(ctx, st, s2, name, "two")
	waitCandidates(t, ctx, st, name, 2)
	select {
	case r := <-second:
		t.Fatalf("second campaign returned while the first leads: %v", r.err)
	default:
	}
	wantLeader(t, ctx, st, name, l1, "one")

	must(t, "resign", l1.Resign(ctx))
	var r campaignResult
	select {
	case r = <-second:
	case <-ctx.Done():
		t.Fatal("second campaign did not win after the first resigned")
	}
	must(t, "campaign 2", r.err)
	l2 := r.l
	select {
	case <-l1.Done():
	case <-ctx.Done():
		t.Fatal("first leadership not done after Resign")
	}
	wantLeader(t, ctx, st, name, l2, "two")
	err = guarded(l1, "stale")
	wantErr(t, "guarded write of the old leader", err, topo.ErrConditionFailed)
	must(t, "guarded write of the new leader", guarded(l2, "by two"))

	// Losing the session ends the leadership.
	must(t, "close session 2", s2.Close())
	select {
	case <-l2.Done():
	case <-ctx.Done():
		t.Fatal("leadership not done after its session closed")
	}
	_, err = st.Leader(ctx, name)
	wantErr(t, "leader after the last one left", err, topo.ErrNotFound)

	// Deleting the leader key ends the leadership too.
	l3, err := st.Campaign(ctx, s1, name, []byte("three"))
	must(t, "campaign 3", err)
	must(t, "delete leader key", st.Delete(ctx, l3.Key(), 0))
	select {
	case <-l3.Done():
	case <-ctx.Done():
		t.Fatal("leadership not done after its key was deleted")
	}
}

func testCampaignSessionClose(t *testing.T, st topo.Store) {
	ctx := testutil.Context(t, 30*time.Second)
	const name = "el/sc"
	s1, err := st.NewSession(ctx, 5*time.Second)
	must(t, "session 1", err)
	s2, err := st.NewSession(ctx, 5*time.Second)
	must(t, "session 2", err)
	defer s2.Close()
	l1, err := st.Campaign(ctx, s1, name, []byte("one"))
	must(t, "campaign 1", err)
	second := campaign(ctx, st, s2, name, "two")
	waitCandidates(t, ctx, st, name, 2)
	must(t, "close session 1", s1.Close())
	select {
	case r := <-second:
		must(t, "campaign 2", r.err)
		wantLeader(t, ctx, st, name, r.l, "two")
		must(t, "resign 2", r.l.Resign(ctx))
	case <-ctx.Done():
		t.Fatal("second campaign did not win after the first session closed")
	}
	select {
	case <-l1.Done():
	case <-ctx.Done():
		t.Fatal("first leadership not done after its session closed")
	}
	_, err = st.Campaign(ctx, s1, name, nil)
	if err == nil {
		t.Fatal("campaign with a closed session succeeded")
	}
}

func testContextCancel(t *testing.T, st topo.Store) {
	ctx := testutil.Context(t, 30*time.Second)
	const name = "el/cancel"
	s1, err := st.NewSession(ctx, 5*time.Second)
	must(t, "session 1", err)
	defer s1.Close()
	s2, err := st.NewSession(ctx, 5*time.Second)
	must(t, "session 2", err)
	defer s2.Close()
	l1, err := st.Campaign(ctx, s1, name, []byte("one"))
	must(t, "campaign 1", err)

	cctx, cancel := context.WithCancel(ctx)
	second := campaign(cctx, st, s2, name, "two")
	waitCandidates(t, ctx, st, name, 2)
	cancel()
	select {
	case r := <-second:
		wantErr(t, "cancelled campaign", r.err, context.Canceled)
	case <-ctx.Done():
		t.Fatal("cancelled campaign did not return")
	}
	// The cancelled candidate withdrew; the leader is unchanged.
	waitCandidates(t, ctx, st, name, 1)
	wantLeader(t, ctx, st, name, l1, "one")

	done, cancelDone := context.WithCancel(ctx)
	cancelDone()
	_, err = st.Get(done, "any")
	wantErr(t, "get with a cancelled ctx", err, context.Canceled)
	_, err = st.Txn(done, nil, []topo.Op{topo.Put("any", nil)})
	wantErr(t, "txn with a cancelled ctx", err, context.Canceled)
	_, err = st.List(done, "", topo.ListOptions{})
	wantErr(t, "list with a cancelled ctx", err, context.Canceled)
}
