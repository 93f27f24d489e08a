package readcache

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/cellplane/cellplane/internal/cperr"
	"github.com/cellplane/cellplane/internal/retry"
	"github.com/cellplane/cellplane/internal/testutil"
	contextv1 "github.com/cellplane/cellplane/proto/cellplane/context/v1"
	"go.uber.org/goleak"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeWatch is a WatchChanges server the test drives: each opened stream
// reads what the test sends on the tenant's channel; the test can break
// the stream or end it with an error on purpose.
type fakeWatch struct {
	mu      sync.Mutex
	streams map[string]chan fakeMsg
	opened  map[string][]*contextv1.WatchChangesRequest
	refuse  map[string]error // open fails with this
}

type fakeMsg struct {
	resp *contextv1.WatchChangesResponse
	err  error
}

func newFakeWatch() *fakeWatch {
	return &fakeWatch{streams: make(map[string]chan fakeMsg), opened: make(map[string][]*contextv1.WatchChangesRequest), refuse: make(map[string]error)}
}

func (f *fakeWatch) ch(tenant string) chan fakeMsg {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := f.streams[tenant]
	if c == nil {
		c = make(chan fakeMsg)
		f.streams[tenant] = c
	}
	return c
}

func (f *fakeWatch) watch(ctx context.Context, tenant string, req *contextv1.WatchChangesRequest) (Stream, error) {
	f.mu.Lock()
	f.opened[tenant] = append(f.opened[tenant], proto.Clone(req).(*contextv1.WatchChangesRequest))
	err := f.refuse[tenant]
	f.mu.Unlock()
	if err != nil {
		return nil, err
	}
	return &fakeStream{ctx: ctx, c: f.ch(tenant)}, nil
}

func (f *fakeWatch) opens(tenant string) []*contextv1.WatchChangesRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]*contextv1.WatchChangesRequest(nil), f.opened[tenant]...)
}

// waitOpen waits for the n-th stream of a tenant and checks it starts
// after tseq.
func (f *fakeWatch) waitOpen(t *testing.T, tenant string, n int, tseq uint64) {
	t.Helper()
	testutil.Eventually(t, 10*time.Second, func() error {
		if o := f.opens(tenant); len(o) < n {
			return fmt.Errorf("%d streams opened, want %d", len(o), n)
		}
		return nil
	})
	if after := f.opens(tenant)[n-1].GetAfter(); after.GetTseq() != tseq {
		t.Fatalf("stream %d opened after %v; want tseq %d", n, after, tseq)
	}
}

type fakeStream struct {
	ctx context.Context
	c   chan fakeMsg
}

func (s *fakeStream) Recv() (*contextv1.WatchChangesResponse, error) {
	select {
	case m := <-s.c:
		return m.resp, m.err
	case <-s.ctx.Done():
		return nil, s.ctx.Err()
	}
}

// send delivers one response to the tenant's open stream (blocking until
// the follower reads it) and waits until it is applied.
func (f *fakeWatch) send(t *testing.T, c *Cache, tenant string, resp *contextv1.WatchChangesResponse) {
	t.Helper()
	// Every message marks the tenant fresh at c.now(): waiting for that
	// (not only for the cursor, which a heartbeat need not move) is
	// waiting for the follower to have handled it.
	before := c.now()
	select {
	case f.ch(tenant) <- fakeMsg{resp: resp}:
	case <-time.NewTimer(10 * time.Second).C:
		t.Fatal("no follower reads the stream")
	}
	want := resp.GetCursor().GetTseq()
	for _, ch := range resp.GetChanges() {
		want = max(want, ch.GetCursor().GetTseq())
	}
	testutil.Eventually(t, 10*time.Second, func() error {
		c.mu.Lock()
		defer c.mu.Unlock()
		tn := c.tenants[tenant]
		if tn == nil {
			return nil // dropped (an ERASED change, a gap)
		}
		if tn.cursor.Tseq < want {
			return fmt.Errorf("cursor %d < %d", tn.cursor.Tseq, want)
		}
		if tn.fresh.Before(before) {
			return fmt.Errorf("the follower has not handled the message yet")
		}
		return nil
	})
}

func (f *fakeWatch) fail(t *testing.T, tenant string, err error) {
	t.Helper()
	select {
	case f.ch(tenant) <- fakeMsg{err: err}:
	case <-time.NewTimer(10 * time.Second).C:
		t.Fatal("no follower reads the stream")
	}
}

func testConfig() Config {
	cfg := DefaultConfig()
	cfg.MaxBytes = 1 << 20
	cfg.Retry = retry.Policy{Min: time.Millisecond, Max: 5 * time.Millisecond}
	return cfg
}

func newCache(t *testing.T, cfg Config, f *fakeWatch) *Cache {
	t.Helper()
	c, err := New(cfg, f.watch)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

func change(tseq uint64, kind contextv1.ChangeKind, ctxID, memKey string) *contextv1.Change {
	return &contextv1.Change{Cursor: &contextv1.ChangeCursor{Tseq: tseq, TimeUnixNano: time.Now().UnixNano()}, Kind: kind, ContextId: ctxID, MemoryKey: memKey,
		MemoryScope: contextv1.MemoryScope_MEMORY_SCOPE_TENANT}
}

func resp(changes ...*contextv1.Change) *contextv1.WatchChangesResponse {
	r := &contextv1.WatchChangesResponse{Changes: changes}
	if n := len(changes); n > 0 {
		r.Cursor = changes[n-1].GetCursor()
	}
	return r
}

func readKey(tenant, ctxID string, tail uint32) Key {
	return ReadKey(tenant, &contextv1.ReadRequest{ContextId: ctxID, Start: &contextv1.ReadRequest_Tail{Tail: tail}})
}

func readAnswer(last uint64) *contextv1.ReadResponse { return &contextv1.ReadResponse{LastSeq: last} }

func mustHit(t *testing.T, c *Cache, k Key) proto.Message {
	t.Helper()
	v, ok := c.Get(k, time.Hour)
	if !ok {
		t.Fatalf("miss for %v", k)
	}
	return v
}

func mustMiss(t *testing.T, c *Cache, k Key) {
	t.Helper()
	if v, ok := c.Get(k, time.Hour); ok {
		t.Fatalf("hit for %v: %v", k, v)
	}
}

func TestOffByDefault(t *testing.T) {
	c, err := New(DefaultConfig(), newFakeWatch().watch)
	if err != nil || c != nil {
		t.Fatalf("New(DefaultConfig()) = %v, %v; want nil, nil (off)", c, err)
	}
	k := readKey("a", "c", 1)
	c.Fill(k, readAnswer(1), Cursor{Tseq: 1})
	if _, ok := c.Get(k, time.Hour); ok {
		t.Fatal("an off cache answered")
	}
	if _, ok := c.Staleness(&contextv1.ReadOptions{Consistency: contextv1.Consistency_CONSISTENCY_STALE}); ok {
		t.Fatal("an off cache serves stale reads")
	}
	c.Close()
}

func TestStalenessOnlyForStaleReads(t *testing.T) {
	c := newCache(t, testConfig(), newFakeWatch())
	for _, tc := range []struct {
		o    *contextv1.ReadOptions
		want time.Duration
		ok   bool
	}{
		{nil, 0, false},
		{&contextv1.ReadOptions{Consistency: contextv1.Consistency_CONSISTENCY_LINEARIZABLE}, 0, false},
		{&contextv1.ReadOptions{Consistency: contextv1.Consistency_CONSISTENCY_LEADER}, 0, false},
		{&contextv1.ReadOptions{Consistency: contextv1.Consistency_CONSISTENCY_STALE}, DefaultMaxStalenessDefault, true},
		{&contextv1.ReadOptions{Consistency: contextv1.Consistency_CONSISTENCY_STALE, MaxStaleness: durationpb.New(time.Second)}, time.Second, true},
		{&contextv1.ReadOptions{Consistency: contextv1.Consistency_CONSISTENCY_STALE, MaxStaleness: durationpb.New(-time.Second)}, 0, false},
		{&contextv1.ReadOptions{Consistency: contextv1.Consistency_CONSISTENCY_STALE, MaxStaleness: &durationpb.Duration{Seconds: 1, Nanos: -1}}, 0, false},
	} {
		if d, ok := c.Staleness(tc.o); d != tc.want || ok != tc.ok {
			t.Errorf("Staleness(%v) = %v, %v; want %v, %v", tc.o, d, ok, tc.want, tc.ok)
		}
	}
}

func TestInvalidation(t *testing.T) {
	f := newFakeWatch()
	c := newCache(t, testConfig(), f)
	kC1, kC1b, kC2 := readKey("a", "c1", 5), readKey("a", "c1", 10), readKey("a", "c2", 5)
	kMem, kOther := MemoryKey("a", "", contextv1.MemoryScope_MEMORY_SCOPE_TENANT, "k"), MemoryKey("a", "", contextv1.MemoryScope_MEMORY_SCOPE_TENANT, "other")
	kPrin := MemoryKey("a", "alice", contextv1.MemoryScope_MEMORY_SCOPE_PRINCIPAL, "k")
	for _, k := range []Key{kC1, kC1b, kC2, kMem, kOther, kPrin} {
		c.Fill(k, readAnswer(1), Cursor{Tseq: 10})
	}
	f.waitOpen(t, "a", 1, 10)
	mustHit(t, c, kC1)

	f.send(t, c, "a", resp(change(11, contextv1.ChangeKind_CHANGE_KIND_CONTEXT_APPENDED, "c1", "")))
	mustMiss(t, c, kC1)
	mustMiss(t, c, kC1b)
	mustHit(t, c, kC2)

	f.send(t, c, "a", resp(change(12, contextv1.ChangeKind_CHANGE_KIND_MEMORY_PUT, "", "k")))
	mustMiss(t, c, kMem)
	mustHit(t, c, kOther)
	mustHit(t, c, kPrin) // alice's own "k" is another key

	pc := change(13, contextv1.ChangeKind_CHANGE_KIND_MEMORY_DELETED, "", "k")
	pc.MemoryScope, pc.Principal = contextv1.MemoryScope_MEMORY_SCOPE_PRINCIPAL, "alice"
	f.send(t, c, "a", resp(pc))
	mustMiss(t, c, kPrin)

	// A fork names the new context; the source's reads stay.
	c.Fill(kC1, readAnswer(2), Cursor{Tseq: 13})
	f.send(t, c, "a", resp(change(14, contextv1.ChangeKind_CHANGE_KIND_CONTEXT_FORKED, "c3", "")))
	mustHit(t, c, kC1)

	// A change the entry already reflects leaves it: filled at 16, the
	// follower then delivers 15 and 16.
	c.Fill(kC2, readAnswer(3), Cursor{Tseq: 16})
	f.send(t, c, "a", resp(change(15, contextv1.ChangeKind_CHANGE_KIND_CONTEXT_APPENDED, "c2", ""), change(16, contextv1.ChangeKind_CHANGE_KIND_CONTEXT_APPENDED, "c2", "")))
	if v := mustHit(t, c, kC2).(*contextv1.ReadResponse); v.GetLastSeq() != 3 {
		t.Fatalf("kept the wrong answer: %v", v)
	}

	// An expiry sweep names nothing: every read (or memory value) filled
	// before it goes.
	c.Fill(kOther, readAnswer(1), Cursor{Tseq: 16})
	c.Fill(kC1, readAnswer(1), Cursor{Tseq: 16})
	f.send(t, c, "a", resp(change(18, contextv1.ChangeKind_CHANGE_KIND_CONTEXT_EXPIRED, "", "")))
	mustMiss(t, c, kC1)
	mustMiss(t, c, kC2)
	mustHit(t, c, kOther)
	f.send(t, c, "a", resp(change(19, contextv1.ChangeKind_CHANGE_KIND_MEMORY_EXPIRED, "", "")))
	mustMiss(t, c, kOther)
	c.Fill(kC2, readAnswer(3), Cursor{Tseq: 19})

	// ERASED forgets the tenant.
	f.send(t, c, "a", resp(change(20, contextv1.ChangeKind_CHANGE_KIND_ERASED, "", "")))
	mustMiss(t, c, kC2)
	mustMiss(t, c, kOther)
	if s := c.Stats(); s.Entries != 0 || s.Tenants != 0 || s.Bytes != 0 {
		t.Fatalf("after ERASED: %+v", s)
	}
}

// The invariant: an answer older than the changes the follower has seen
// is not cached.
func TestFillBehindFollowerRejected(t *testing.T) {
	f := newFakeWatch()
	c := newCache(t, testConfig(), f)
	k1, k2 := readKey("a", "c1", 5), readKey("a", "c2", 5)
	c.Fill(k1, readAnswer(1), Cursor{Tseq: 10})
	f.send(t, c, "a", resp(change(11, contextv1.ChangeKind_CHANGE_KIND_CONTEXT_APPENDED, "c2", "")))
	// A read served at tseq 10 (before the append at 11 the follower has
	// applied) may miss it: not cached.
	c.Fill(k2, readAnswer(1), Cursor{Tseq: 10})
	mustMiss(t, c, k2)
	c.Fill(k2, readAnswer(2), Cursor{Tseq: 11})
	mustHit(t, c, k2)
	// An older answer never replaces a newer one.
	c.Fill(k2, readAnswer(1), Cursor{Tseq: 11})
	c.Fill(k1, readAnswer(0), Cursor{Tseq: 9})
	if v := mustHit(t, c, k1).(*contextv1.ReadResponse); v.GetLastSeq() != 1 {
		t.Fatalf("an older answer replaced a newer one: %v", v)
	}
}

func TestStaleness(t *testing.T) {
	f := newFakeWatch()
	c := newCache(t, testConfig(), f)
	var mu sync.Mutex
	now := time.Unix(1000, 0)
	c.now = func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	k := readKey("a", "c", 1)
	c.Fill(k, readAnswer(1), Cursor{Tseq: 10})
	if _, ok := c.Get(k, time.Second); !ok {
		t.Fatal("miss right after the fill")
	}
	advance(2 * time.Second)
	if _, ok := c.Get(k, time.Second); ok {
		t.Fatal("hit 2s after the follower was last current, bound 1s")
	}
	// A heartbeat (cursor only) makes it current again.
	f.send(t, c, "a", &contextv1.WatchChangesResponse{Cursor: &contextv1.ChangeCursor{Tseq: 10}})
	if _, ok := c.Get(k, time.Second); !ok {
		t.Fatal("miss after a heartbeat")
	}
	// So does a fill at the follower's cursor.
	advance(2 * time.Second)
	c.Fill(readKey("a", "c", 2), readAnswer(1), Cursor{Tseq: 10})
	if _, ok := c.Get(k, time.Second); !ok {
		t.Fatal("miss after a fill at the cursor")
	}
}

// An answer is not served after its item's expire_time, sweep or not.
func TestExpiry(t *testing.T) {
	c := newCache(t, testConfig(), newFakeWatch())
	var mu sync.Mutex
	now := time.Unix(1000, 0)
	c.now = func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	k := MemoryKey("a", "", contextv1.MemoryScope_MEMORY_SCOPE_TENANT, "k")
	c.Fill(k, readAnswer(1), Cursor{Tseq: 1, Expires: now.Add(time.Second)})
	mustHit(t, c, k)
	mu.Lock()
	now = now.Add(time.Second)
	mu.Unlock()
	mustMiss(t, c, k)
	c.Fill(k, readAnswer(1), Cursor{Tseq: 1, Expires: now})
	mustMiss(t, c, k)
}

func TestFollowerResumesFromCursor(t *testing.T) {
	f := newFakeWatch()
	c := newCache(t, testConfig(), f)
	k := readKey("a", "c2", 1)
	c.Fill(k, readAnswer(1), Cursor{Tseq: 10, TimeUnixNano: 100})
	f.send(t, c, "a", resp(change(12, contextv1.ChangeKind_CHANGE_KIND_CONTEXT_APPENDED, "c1", "")))
	f.fail(t, "a", cperr.New(cperr.CellUnavailable, "dropped on purpose"))
	f.waitOpen(t, "a", 2, 12)
	mustHit(t, c, k) // nothing was skipped: the entries stay
	if s := c.Stats(); s.Restarts < 1 {
		t.Fatalf("restarts %d", s.Restarts)
	}
}

func TestFollowerLossDropsTenant(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
	}{
		{"cursor expired", cperr.New(cperr.CursorExpired, "trimmed")},
		{"wrong cell", cperr.New(cperr.WrongCell, "moved")},
		{"tenant not found", cperr.New(cperr.TenantNotFound, "gone")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeWatch()
			c := newCache(t, testConfig(), f)
			ka, kb := readKey("a", "c", 1), readKey("b", "c", 1)
			c.Fill(ka, readAnswer(1), Cursor{Tseq: 10})
			c.Fill(kb, readAnswer(1), Cursor{Tseq: 10})
			f.fail(t, "a", tc.err)
			testutil.Eventually(t, 10*time.Second, func() error {
				if _, ok := c.Get(ka, time.Hour); ok {
					return errors.New("tenant a still served")
				}
				return nil
			})
			mustHit(t, c, kb)
			if s := c.Stats(); s.Tenants != 1 {
				t.Fatalf("%d tenants followed; want 1", s.Tenants)
			}
			// The next fill follows the tenant again, from its own cursor.
			c.Fill(ka, readAnswer(2), Cursor{Tseq: 20})
			mustHit(t, c, ka)
			f.waitOpen(t, "a", 2, 20)
		})
	}
}

func TestGapDropsTenant(t *testing.T) {
	f := newFakeWatch()
	c := newCache(t, testConfig(), f)
	k := readKey("a", "c", 1)
	c.Fill(k, readAnswer(1), Cursor{Tseq: 10})
	f.ch("a") <- fakeMsg{resp: resp(change(9, contextv1.ChangeKind_CHANGE_KIND_CONTEXT_APPENDED, "x", ""))}
	testutil.Eventually(t, 10*time.Second, func() error {
		if c.Stats().Tenants != 0 {
			return errors.New("still followed")
		}
		return nil
	})
	mustMiss(t, c, k)
}

func TestEvictionBounds(t *testing.T) {
	f := newFakeWatch()
	cfg := testConfig()
	cfg.MaxEntries = 10
	cfg.MaxBytes = 4000
	cfg.MaxTenants = 3
	c := newCache(t, cfg, f)
	big := &contextv1.ReadResponse{Entries: []*contextv1.Entry{{Content: &contextv1.Entry_Text{Text: string(make([]byte, 500))}}}}
	for i := range 50 {
		tenant := fmt.Sprintf("t%d", i%5)
		var v proto.Message = readAnswer(uint64(i))
		if i%3 == 0 {
			v = big
		}
		c.Fill(readKey(tenant, fmt.Sprintf("c%d", i), 1), v, Cursor{Tseq: 1})
		s := c.Stats()
		if s.Entries > cfg.MaxEntries || s.Bytes > cfg.MaxBytes || s.Tenants > cfg.MaxTenants {
			t.Fatalf("after fill %d: %+v exceeds %d entries, %d bytes, %d tenants", i, s, cfg.MaxEntries, cfg.MaxBytes, cfg.MaxTenants)
		}
	}
	// The most recent fill is there; the first is long gone.
	mustHit(t, c, readKey("t4", "c49", 1))
	mustMiss(t, c, readKey("t0", "c0", 1))
	// Too large for an entry: not cached.
	cfg2 := testConfig()
	cfg2.MaxEntryBytes = 100
	c2 := newCache(t, cfg2, f)
	c2.Fill(readKey("z", "c", 1), big, Cursor{Tseq: 1})
	if s := c2.Stats(); s.Entries != 0 || s.Tenants != 0 {
		t.Fatalf("a too-large answer was cached: %+v", s)
	}
}

// Evicting a tenant's last entry stops its follower.
func TestEvictionStopsFollower(t *testing.T) {
	f := newFakeWatch()
	cfg := testConfig()
	cfg.MaxEntries = 1
	c := newCache(t, cfg, f)
	c.Fill(readKey("a", "c", 1), readAnswer(1), Cursor{Tseq: 1})
	c.Fill(readKey("b", "c", 1), readAnswer(1), Cursor{Tseq: 1})
	if s := c.Stats(); s.Tenants != 1 || s.Entries != 1 {
		t.Fatalf("%+v; want tenant a forgotten", s)
	}
	c.Close()
	// goleak (TestMain) checks the followers ended.
}

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		mod  func(*Config)
		ok   bool
	}{
		{"default (off)", func(*Config) {}, true},
		{"on", func(c *Config) { c.MaxBytes = 1 }, true},
		{"negative bytes", func(c *Config) { c.MaxBytes = -1 }, false},
		{"no entries", func(c *Config) { c.MaxBytes, c.MaxEntries = 1, 0 }, false},
		{"no tenants", func(c *Config) { c.MaxBytes, c.MaxTenants = 1, 0 }, false},
		{"no staleness", func(c *Config) { c.MaxBytes, c.DefaultMaxStaleness = 1, 0 }, false},
		{"bad retry", func(c *Config) { c.MaxBytes, c.Retry = 1, retry.Policy{} }, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := DefaultConfig()
			tc.mod(&cfg)
			if err := cfg.Validate(); (err == nil) != tc.ok {
				t.Fatalf("Validate() = %v; want ok %v", err, tc.ok)
			}
		})
	}
}
