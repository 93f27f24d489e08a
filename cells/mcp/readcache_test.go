package mcp_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"
	"google.golang.org/grpc"

	"github.com/cellplane/cellplane/cells/mcp"
	"github.com/cellplane/cellplane/internal/cperr"
	"github.com/cellplane/cellplane/internal/tenantmd"
	tu "github.com/cellplane/cellplane/internal/testutil"
	contextv1 "github.com/cellplane/cellplane/proto/cellplane/context/v1"
)

// countingConn counts the unary calls that reach the cell, by method.
type countingConn struct {
	grpc.ClientConnInterface
	mu    sync.Mutex
	calls map[string]int
}

func (c *countingConn) Invoke(ctx context.Context, method string, args, reply any, opts ...grpc.CallOption) error {
	c.mu.Lock()
	if c.calls == nil {
		c.calls = make(map[string]int)
	}
	c.calls[method]++
	c.mu.Unlock()
	return c.ClientConnInterface.Invoke(ctx, method, args, reply, opts...)
}

func (c *countingConn) count(method string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.calls["/cellplane.context.v1.ContextService/"+method]
}

func cacheConfig() mcp.Config {
	cfg := mcp.DefaultConfig()
	cfg.ReadCache.MaxBytes = 1 << 20
	return cfg
}

// TestReadCache: stale reads are answered by the worker's cache without a
// call to the cell, linearizable ones never are, a change through another
// worker reaches the cache through the change stream, and a cached answer
// is never given to a caller the cell would refuse.
func TestReadCache(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a cell node")
	}
	cell := startCell(t, "acme", "beta")
	counted := &countingConn{ClientConnInterface: cell}
	cached := startWorker(t, cacheConfig(), counted, fakeAuth{})
	plain := startWorker(t, mcp.DefaultConfig(), cell, fakeAuth{})
	ctx := tu.Context(t, 60*time.Second)
	alice := connect(t, ctx, cached.url("acme"), "2026-07-28", bearer("alice"))
	aliceElsewhere := connect(t, ctx, plain.url("acme"), "2026-07-28", bearer("alice"))
	stale := func(o obj) obj { o["max_staleness_ms"] = 60_000; return o }

	var c createOut
	ok(t, ctx, alice, "context_create", obj{}, &c)
	ok(t, ctx, alice, "context_append", obj{"context_id": c.ContextID, "entries": entries("a")}, nil)
	ok(t, ctx, alice, "memory_put", obj{"key": "k", "value": "1"}, nil)

	var r readOut
	// The first stale reads fill the cache; a fill can be refused while
	// the tenant's follower has not reported its position yet, so read
	// until one read (data and owner check) stays off the cell.
	var reads, metas int
	tu.Eventually(t, 10*time.Second, func() error {
		reads, metas = counted.count("Read"), counted.count("GetContext")
		ok(t, ctx, alice, "context_read", stale(obj{"context_id": c.ContextID}), &r)
		if counted.count("Read") != reads || counted.count("GetContext") != metas {
			return fmt.Errorf("the stale read reached the cell: not cached yet")
		}
		return nil
	})
	for range 3 {
		ok(t, ctx, alice, "context_read", stale(obj{"context_id": c.ContextID}), &r)
		if got := contents(r); len(got) != 1 || got[0] != "a" {
			t.Fatalf("cached read %v", got)
		}
	}
	if counted.count("Read") != reads || counted.count("GetContext") != metas {
		t.Fatalf("stale reads reached the cell: Read %d→%d, GetContext %d→%d", reads, counted.count("Read"), metas, counted.count("GetContext"))
	}
	// Without max_staleness_ms the read goes to the cell every time.
	ok(t, ctx, alice, "context_read", obj{"context_id": c.ContextID}, &r)
	if counted.count("Read") != reads+1 {
		t.Fatal("a linearizable read was served from the cache")
	}
	var g revOut
	ok(t, ctx, alice, "memory_get", stale(obj{"key": "k"}), &g)
	gets := counted.count("GetMemory")
	ok(t, ctx, alice, "memory_get", stale(obj{"key": "k"}), &g)
	if counted.count("GetMemory") != gets || g.Value != "1" {
		t.Fatalf("memory_get: %+v, GetMemory %d→%d", g, gets, counted.count("GetMemory"))
	}

	// Writes through another worker reach this worker's cache through the
	// change stream.
	ok(t, ctx, aliceElsewhere, "context_append", obj{"context_id": c.ContextID, "entries": entries("b")}, nil)
	ok(t, ctx, aliceElsewhere, "memory_put", obj{"key": "k", "value": "2"}, nil)
	tu.Eventually(t, 10*time.Second, func() error {
		ok(t, ctx, alice, "context_read", stale(obj{"context_id": c.ContextID}), &r)
		ok(t, ctx, alice, "memory_get", stale(obj{"key": "k"}), &g)
		if len(r.Entries) != 2 || g.Value != "2" {
			return fmt.Errorf("read %v, memory %+v", contents(r), g)
		}
		return nil
	})

	// Authorisation: the cache answers only what the cell would.
	bob := connect(t, ctx, cached.url("acme"), "2026-07-28", bearer("bob"))
	fails(t, ctx, bob, "context_read", stale(obj{"context_id": c.ContextID}), cperr.ContextNotFound)
	fails(t, ctx, bob, "memory_get", stale(obj{"key": "k"}), cperr.KeyNotFound) // alice's own key is not bob's
	noMemory := connect(t, ctx, cached.url("acme"), "2026-07-28", bearer("alice;contexts:read"))
	fails(t, ctx, noMemory, "memory_get", stale(obj{"key": "k"}), cperr.PermissionDenied)
	otherTenant := connect(t, ctx, cached.url("beta"), "2026-07-28", bearer("alice"))
	fails(t, ctx, otherTenant, "context_read", stale(obj{"context_id": c.ContextID}), cperr.ContextNotFound)
	fails(t, ctx, otherTenant, "memory_get", stale(obj{"key": "k"}), cperr.KeyNotFound)

	// Shared memory is one value for every principal; principal memory one
	// per principal, never served across them.
	ok(t, ctx, alice, "memory_put", obj{"key": "s", "value": "shared", "scope": "tenant"}, nil)
	ok(t, ctx, bob, "memory_put", obj{"key": "k", "value": "bob's"}, nil)
	ok(t, ctx, alice, "memory_get", stale(obj{"key": "s", "scope": "tenant"}), &g)
	ok(t, ctx, bob, "memory_get", stale(obj{"key": "s", "scope": "tenant"}), &g)
	if g.Value != "shared" {
		t.Fatalf("bob reads shared %q", g.Value)
	}
	for range 2 {
		ok(t, ctx, bob, "memory_get", stale(obj{"key": "k"}), &g)
		if g.Value != "bob's" {
			t.Fatalf("bob reads %q", g.Value)
		}
		ok(t, ctx, alice, "memory_get", stale(obj{"key": "k"}), &g)
		if g.Value != "2" {
			t.Fatalf("alice reads %q", g.Value)
		}
	}

	// The MCP caching hints stay private and immediately stale with the
	// cache on: the tool list depends on the credential's scopes, and a
	// resource read is a linearizable read of one principal's context.
	tools, err := alice.ListTools(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if tools.CacheScope != "private" || tools.TTLMs != 0 {
		t.Fatalf("tools/list cacheScope %q ttlMs %d, want private 0", tools.CacheScope, tools.TTLMs)
	}
	rr, err := alice.ReadResource(ctx, &sdk.ReadResourceParams{URI: "cellplane://contexts/" + c.ContextID})
	if err != nil {
		t.Fatal(err)
	}
	if rr.CacheScope != "private" || rr.TTLMs != 0 {
		t.Fatalf("resources/read cacheScope %q ttlMs %d, want private 0", rr.CacheScope, rr.TTLMs)
	}

	// A deleted context is gone from the cache too.
	ok(t, ctx, aliceElsewhere, "context_delete", obj{"context_id": c.ContextID}, nil)
	tu.Eventually(t, 10*time.Second, func() error {
		res := callTool(t, ctx, alice, "context_read", stale(obj{"context_id": c.ContextID}))
		if !res.IsError {
			return errors.New("a deleted context still reads")
		}
		return nil
	})
	cached.Close()
}

// TestReadCacheCoherence: writers append and put straight to the cell
// while readers read through the worker's cache. No read is older than
// the change stream position the cache had reached when the read began:
// each answer is checked against the tenant's change log at that cursor.
func TestReadCacheCoherence(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a cell node")
	}
	cell := startCell(t, "acme")
	w := startWorker(t, cacheConfig(), cell, nil)
	ctx := tu.Context(t, 120*time.Second)
	api := contextv1.NewContextServiceClient(cell)
	octx := tenantmd.Outgoing(ctx, "acme", 0)
	const nCtx, nKeys = 3, 3
	for i := range nCtx {
		if _, err := api.CreateContext(octx, &contextv1.CreateContextRequest{ContextId: fmt.Sprintf("c%d", i)}); err != nil {
			t.Fatal(err)
		}
	}
	for i := range nKeys {
		if _, err := api.PutMemory(octx, &contextv1.PutMemoryRequest{Key: fmt.Sprintf("k%d", i), Value: []byte("0")}); err != nil {
			t.Fatal(err)
		}
	}

	type sample struct {
		cursor uint64 // the cache's follower cursor when the read began
		ctx    string // or key
		mem    bool
		seen   uint64 // last_seq read, or the revision
	}
	var (
		mu      sync.Mutex
		samples []sample
		stop    atomic.Bool
		wg      sync.WaitGroup // writers
		readers sync.WaitGroup
	)
	for wr := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(wr), 1))
			for i := 0; !stop.Load(); i++ {
				var err error
				if rng.IntN(2) == 0 {
					_, err = api.Append(octx, &contextv1.AppendRequest{ContextId: fmt.Sprintf("c%d", rng.IntN(nCtx)),
						Entries: []*contextv1.Entry{{Role: "user", Content: &contextv1.Entry_Text{Text: fmt.Sprint(i)}}}})
				} else {
					_, err = api.PutMemory(octx, &contextv1.PutMemoryRequest{Key: fmt.Sprintf("k%d", rng.IntN(nKeys)), Value: []byte(fmt.Sprint(i))})
				}
				if err != nil && ctx.Err() == nil {
					t.Errorf("write: %v", err)
					return
				}
			}
		}()
	}
	for rd := range 3 {
		readers.Add(1)
		go func() {
			defer readers.Done()
			cs := connect(t, ctx, w.url("acme"), "2026-07-28", nil)
			rng := rand.New(rand.NewPCG(uint64(rd), 2))
			for range 80 {
				cur, _ := w.ReadCache().Cursor("acme")
				if rng.IntN(2) == 0 {
					id := fmt.Sprintf("c%d", rng.IntN(nCtx))
					var r readOut
					ok(t, ctx, cs, "context_read", obj{"context_id": id, "tail": 1, "max_staleness_ms": 60_000}, &r)
					mu.Lock()
					samples = append(samples, sample{cursor: cur.Tseq, ctx: id, seen: r.LastSeq})
					mu.Unlock()
				} else {
					key := fmt.Sprintf("k%d", rng.IntN(nKeys))
					var g revOut
					ok(t, ctx, cs, "memory_get", obj{"key": key, "max_staleness_ms": 60_000}, &g)
					mu.Lock()
					samples = append(samples, sample{cursor: cur.Tseq, ctx: key, mem: true, seen: g.Revision})
					mu.Unlock()
				}
			}
		}()
	}
	readers.Wait()
	stop.Store(true)
	wg.Wait()

	// The history: per context the last_seq after each append, per key the
	// revision of each put, in tseq order.
	type point struct{ tseq, v uint64 }
	hist := make(map[string][]point)
	stream, err := api.WatchChanges(octx, &contextv1.WatchChangesRequest{After: &contextv1.ChangeCursor{}})
	if err != nil {
		t.Fatal(err)
	}
	var last uint64
	maxCursor := uint64(0)
	for _, s := range samples {
		maxCursor = max(maxCursor, s.cursor)
	}
	for last < maxCursor {
		resp, err := stream.Recv()
		if err == io.EOF || err != nil {
			t.Fatalf("change stream: %v", err)
		}
		for _, ch := range resp.GetChanges() {
			tseq := ch.GetCursor().GetTseq()
			switch ch.GetKind() {
			case contextv1.ChangeKind_CHANGE_KIND_CONTEXT_APPENDED:
				hist[ch.GetContextId()] = append(hist[ch.GetContextId()], point{tseq, ch.GetLastSeq()})
			case contextv1.ChangeKind_CHANGE_KIND_MEMORY_PUT:
				hist["m/"+ch.GetMemoryKey()] = append(hist["m/"+ch.GetMemoryKey()], point{tseq, ch.GetRevision()})
			}
		}
		last = resp.GetCursor().GetTseq()
	}
	atCursor := func(name string, cursor uint64) uint64 {
		var v uint64
		for _, p := range hist[name] {
			if p.tseq > cursor {
				break
			}
			v = p.v
		}
		return v
	}
	hits := 0
	for _, s := range samples {
		name := s.ctx
		if s.mem {
			name = "m/" + s.ctx
		}
		if want := atCursor(name, s.cursor); s.seen < want {
			t.Errorf("%s read %d, older than %d it held at the cache's cursor %d", name, s.seen, want, s.cursor)
		}
		if s.cursor > 0 {
			hits++
		}
	}
	if hits == 0 {
		t.Fatal("the cache never followed the tenant")
	}
	t.Logf("%d reads checked", len(samples))
}
