package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/cellplane/cellplane/client"
	"github.com/cellplane/cellplane/internal/dial"
	"github.com/cellplane/cellplane/internal/testutil"
	contextv1 "github.com/cellplane/cellplane/proto/cellplane/context/v1"
	cpv1 "github.com/cellplane/cellplane/proto/cellplane/controlplane/v1"
)

const (
	tenant     = "acme"
	homeRegion = "us-east"
	memKey     = "user/name"
)

// written is what the suite wrote and read back, checked again after the
// platform restarts: each context's entry texts in seq order, the memory
// item.
type written struct {
	mu       sync.Mutex
	contexts map[string][]string
	memValue string
	memRev   uint64
}

func (w *written) set(contextID string, texts []string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.contexts[contextID] = texts
}

// The whole platform from the outside: `cellplane dev --multiprocess`, the
// admin CLI, the data API through the router, the Go client, MCP, a killed
// cell leader under write load, and a full restart on the same data.
func TestDevPlatform(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binaries and starts the whole platform")
	}
	const nodes = 2 * 1 * 3 // regions × cells per region × nodes per cell
	p := startPlatform(t, nodes,
		"--multiprocess",
		"--regions", "us-east,eu-west",
		"--cells-per-region", "1",
		"--nodes-per-cell", "3",
		"--demo",
	)
	ctx := testutil.Context(t, 4*time.Minute)
	info := p.info(t)
	if info.Auth != "none" {
		t.Errorf("dev.json auth %q, want none (the default)", info.Auth)
	}
	if info.DemoTenant != "demo" {
		t.Errorf("dev.json demo_tenant %q, want demo (--demo)", info.DemoTenant)
	}
	if len(info.Etcd) == 0 {
		t.Errorf("dev.json lists no etcd endpoint")
	}
	for _, n := range info.Nodes {
		t.Logf("node %s cell %s region %s pid %d grpc %s", n.ID, n.Cell, n.Region, n.PID, n.GRPC)
	}
	w := &written{contexts: map[string][]string{}}

	if !t.Run("cellctl", func(t *testing.T) { testCellctl(t, ctx, p) }) {
		t.FailNow() // everything below needs the tenant
	}
	cs := routerClient(t, info.RouterGRPC)
	t.Run("grpc", func(t *testing.T) { testGRPC(t, ctx, cs, w) })
	t.Run("client", func(t *testing.T) { testClient(t, ctx, info.RouterGRPC, p, w) })
	t.Run("mcp", func(t *testing.T) { testMCP(t, ctx, info.RouterHTTP, cs, w) })
	t.Run("kill-leader", func(t *testing.T) { testKillLeader(t, ctx, p, cs, w) })
	t.Run("move-and-switchover", func(t *testing.T) { testMoveAndSwitchover(t, ctx, p, cs, w) })
	t.Run("restart", func(t *testing.T) { testRestart(t, ctx, p, w) })
}

func testCellctl(t *testing.T, ctx context.Context, p *platform) {
	info := p.info(t)
	out := p.mustCellctl(t, ctx, "tenant", "create", tenant, "--region", homeRegion)
	t.Logf("cellctl tenant create:\n%s", out)

	ids := tenantIDs(t, ctx, p)
	for _, want := range []string{tenant, "demo"} {
		if !slices.Contains(ids, want) {
			t.Errorf("tenant list -o json: %v, want %s in it", ids, want)
		}
	}

	tn := tenantGet(t, ctx, p, tenant)
	if tn.GetState() != cpv1.TenantState_TENANT_STATE_ACTIVE || tn.GetHomeRegion() != homeRegion || tn.GetEpoch() == 0 {
		t.Errorf("tenant get %s: %v, want ACTIVE in %s with an epoch", tenant, tn, homeRegion)
	}
	var cellRegion string
	for _, n := range info.Nodes {
		if n.Cell == tn.GetCell() {
			cellRegion = n.Region
		}
	}
	if cellRegion != homeRegion {
		t.Errorf("%s is on cell %q (region %q per dev.json), want a cell of %s (cells: %v)", tenant, tn.GetCell(), cellRegion, homeRegion, info.cells())
	}

	status := p.mustCellctl(t, ctx, "status")
	t.Logf("cellctl status:\n%s", status)
	for _, c := range info.cells() {
		if !strings.Contains(status, c) {
			t.Errorf("cellctl status does not show cell %s", c)
		}
	}
}

func tenantIDs(t *testing.T, ctx context.Context, p *platform) []string {
	t.Helper()
	var list cpv1.ListTenantsResponse
	unmarshalCLI(t, p.mustCellctl(t, ctx, "tenant", "list", "--all", "-o", "json"), &list)
	var ids []string
	for _, tn := range list.GetTenants() {
		ids = append(ids, tn.GetId())
	}
	return ids
}

func tenantGet(t *testing.T, ctx context.Context, p *platform, id string) *cpv1.Tenant {
	t.Helper()
	var resp cpv1.GetTenantResponse
	unmarshalCLI(t, p.mustCellctl(t, ctx, "tenant", "get", id, "-o", "json"), &resp)
	return resp.GetTenant()
}

func cellLeader(ctx context.Context, p *platform, cell string) (string, error) {
	out, err := p.cellctl(ctx, "cell", "get", cell, "-o", "json")
	if err != nil {
		return "", err
	}
	var resp cpv1.GetCellResponse
	if err := unmarshalJSON(out, &resp); err != nil {
		return "", err
	}
	if id := resp.GetCell().GetLeader().GetNodeId(); id != "" {
		return id, nil
	}
	return "", fmt.Errorf("cell %s has no published leader", cell)
}

func unmarshalCLI(t *testing.T, out string, m proto.Message) {
	t.Helper()
	if err := unmarshalJSON(out, m); err != nil {
		t.Fatal(err)
	}
}

// unmarshalJSON decodes cellctl's -o json output (the protobuf JSON
// mapping of the API's response).
func unmarshalJSON(out string, m proto.Message) error {
	if err := (protojson.UnmarshalOptions{DiscardUnknown: true}).Unmarshal([]byte(out), m); err != nil {
		return fmt.Errorf("cellctl -o json output: %w\n%s", err, out)
	}
	return nil
}

// routerClient is a plain gRPC ContextService client of the router.
func routerClient(t *testing.T, addr string) contextv1.ContextServiceClient {
	t.Helper()
	conn, err := dial.New(addr, dial.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return contextv1.NewContextServiceClient(conn)
}

// asTenant names the tenant for the router (auth none).
func asTenant(ctx context.Context) context.Context {
	return metadata.AppendToOutgoingContext(ctx, "x-cellplane-tenant", tenant)
}

func text(role, s string) *contextv1.Entry {
	return &contextv1.Entry{Role: role, Content: &contextv1.Entry_Text{Text: s}}
}

// createContext creates a context through the router, retrying while the
// router's table does not have the new tenant yet.
func createContext(t *testing.T, ctx context.Context, cs contextv1.ContextServiceClient, id string) {
	t.Helper()
	testutil.Eventually(t, 30*time.Second, func() error {
		actx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		_, err := cs.CreateContext(asTenant(actx), &contextv1.CreateContextRequest{ContextId: id, RequestId: "create-" + id})
		if status.Code(err) == codes.AlreadyExists {
			return nil
		}
		return err
	})
}

// readAll reads a whole context through the router, a page at a time.
func readAll(ctx context.Context, cs contextv1.ContextServiceClient, id string) ([]*contextv1.Entry, error) {
	return readAllAs(ctx, cs, asTenant, id)
}

// readAllAs is readAll with the caller's credentials added by as.
func readAllAs(ctx context.Context, cs contextv1.ContextServiceClient, as func(context.Context) context.Context, id string) ([]*contextv1.Entry, error) {
	var all []*contextv1.Entry
	next := uint64(1)
	for {
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		resp, err := cs.Read(as(rctx), &contextv1.ReadRequest{ContextId: id, Start: &contextv1.ReadRequest_FromSeq{FromSeq: next}, MaxEntries: 1000})
		cancel()
		if err != nil {
			return nil, err
		}
		all = append(all, resp.GetEntries()...)
		if len(resp.GetEntries()) == 0 || resp.GetNextSeq() > resp.GetLastSeq() {
			return all, nil
		}
		next = resp.GetNextSeq()
	}
}

func texts(entries []*contextv1.Entry) []string {
	out := make([]string, len(entries))
	for i, e := range entries {
		out[i] = e.GetText()
	}
	return out
}

func reason(err error) string {
	st, _ := status.FromError(err)
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok {
			return info.GetReason()
		}
	}
	return ""
}

func testGRPC(t *testing.T, ctx context.Context, cs contextv1.ContextServiceClient, w *written) {
	tctx := asTenant(ctx)
	createContext(t, ctx, cs, "chat-1")

	req := &contextv1.AppendRequest{ContextId: "chat-1", RequestId: "r1", Entries: []*contextv1.Entry{
		text("user", "hello"), text("assistant", "hi! how can I help?"),
	}}
	first, err := cs.Append(tctx, req)
	if err != nil {
		t.Fatal(err)
	}
	again, err := cs.Append(tctx, req) // the same request id: applied once
	if err != nil {
		t.Fatal(err)
	}
	if first.GetFirstSeq() != 1 || first.GetLastSeq() != 2 || !proto.Equal(first, again) {
		t.Fatalf("append r1: %v, retried: %v; want seq 1-2 both times", first, again)
	}
	rd, err := cs.Read(tctx, &contextv1.ReadRequest{ContextId: "chat-1", Start: &contextv1.ReadRequest_Tail{Tail: 10}})
	if err != nil {
		t.Fatal(err)
	}
	if got := texts(rd.GetEntries()); !slices.Equal(got, []string{"hello", "hi! how can I help?"}) {
		t.Fatalf("read chat-1: %q", got)
	}

	// Memory compare-and-set.
	put, err := cs.PutMemory(tctx, &contextv1.PutMemoryRequest{Key: memKey, Value: []byte("Ada"), RequestId: "m1"})
	if err != nil {
		t.Fatal(err)
	}
	stale := put.GetRevision() + 1
	_, err = cs.PutMemory(tctx, &contextv1.PutMemoryRequest{Key: memKey, Value: []byte("Bob"), ExpectedRevision: &stale, RequestId: "m2"})
	if status.Code(err) != codes.Aborted || reason(err) != "REVISION_MISMATCH" {
		t.Fatalf("PutMemory with expected revision %d (current %d): %v (reason %q), want ABORTED REVISION_MISMATCH", stale, put.GetRevision(), err, reason(err))
	}
	cur := put.GetRevision()
	put2, err := cs.PutMemory(tctx, &contextv1.PutMemoryRequest{Key: memKey, Value: []byte("Grace"), ExpectedRevision: &cur, RequestId: "m3"})
	if err != nil {
		t.Fatalf("PutMemory with the current revision: %v", err)
	}
	got, err := cs.GetMemory(tctx, &contextv1.GetMemoryRequest{Key: memKey})
	if err != nil {
		t.Fatal(err)
	}
	if string(got.GetItem().GetValue()) != "Grace" || got.GetItem().GetRevision() != put2.GetRevision() || put2.GetRevision() <= cur {
		t.Fatalf("GetMemory: %v, want Grace at revision %d (> %d)", got.GetItem(), put2.GetRevision(), cur)
	}
	w.mu.Lock()
	w.memValue, w.memRev = "Grace", put2.GetRevision()
	w.mu.Unlock()

	// Watch: the existing entries, then one appended while watching.
	wctx, cancel := context.WithTimeout(tctx, 30*time.Second)
	defer cancel()
	stream, err := cs.Watch(wctx, &contextv1.WatchRequest{ContextId: "chat-1", FromSeq: 1})
	if err != nil {
		t.Fatal(err)
	}
	received := make(chan *contextv1.Entry, 16)
	go func() {
		defer close(received)
		for {
			resp, err := stream.Recv()
			if err != nil {
				return
			}
			for _, e := range resp.GetEntries() {
				received <- e
			}
		}
	}()
	defer func() { // end the stream and its reader
		cancel()
		for range received {
		}
	}()
	next := func() *contextv1.Entry {
		t.Helper()
		select {
		case e, ok := <-received:
			if !ok {
				t.Fatal("watch stream ended")
			}
			return e
		case <-time.After(15 * time.Second):
			t.Fatal("watch: nothing received within 15s")
		}
		return nil
	}
	for seq := uint64(1); seq <= 2; seq++ {
		if e := next(); e.GetSeq() != seq {
			t.Fatalf("watch: got seq %d, want %d", e.GetSeq(), seq)
		}
	}
	if _, err := cs.Append(tctx, &contextv1.AppendRequest{ContextId: "chat-1", RequestId: "r2", Entries: []*contextv1.Entry{text("user", "watch me")}}); err != nil {
		t.Fatal(err)
	}
	if e := next(); e.GetSeq() != 3 || e.GetText() != "watch me" {
		t.Fatalf("watch: got %v, want seq 3 \"watch me\"", e)
	}
	w.set("chat-1", []string{"hello", "hi! how can I help?", "watch me"})
}

func testClient(t *testing.T, ctx context.Context, routerAddr string, p *platform, w *written) {
	cfg := client.DefaultConfig()
	cfg.Router, cfg.Tenant = routerAddr, tenant
	c, err := client.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	lk, err := c.Lookup(ctx)
	if err != nil {
		t.Fatalf("Lookup: %v", err)
	}
	if want := tenantGet(t, ctx, p, tenant).GetCell(); lk.GetCell() != want {
		t.Errorf("Lookup: cell %q, want %q", lk.GetCell(), want)
	}
	cs := c.Context()
	if _, err := cs.CreateContext(ctx, &contextv1.CreateContextRequest{ContextId: "client-1"}); err != nil {
		t.Fatal(err)
	}
	want := []string{"one", "two", "three"}
	for _, s := range want {
		if _, err := cs.Append(ctx, &contextv1.AppendRequest{ContextId: "client-1", Entries: []*contextv1.Entry{text("user", s)}}); err != nil {
			t.Fatal(err)
		}
	}
	rd, err := cs.Read(ctx, &contextv1.ReadRequest{ContextId: "client-1", Start: &contextv1.ReadRequest_FromSeq{FromSeq: 1}})
	if err != nil {
		t.Fatal(err)
	}
	if got := texts(rd.GetEntries()); !slices.Equal(got, want) {
		t.Fatalf("client read: %q, want %q", got, want)
	}
	w.set("client-1", want)
}

func testMCP(t *testing.T, ctx context.Context, routerHTTP string, cs contextv1.ContextServiceClient, w *written) {
	mc := mcp.NewClient(&mcp.Implementation{Name: "cellplane-e2e", Version: "v0"}, nil)
	sess, err := mc.Connect(ctx, &mcp.StreamableClientTransport{Endpoint: "http://" + routerHTTP + "/t/" + tenant + "/mcp"}, nil)
	if err != nil {
		t.Fatalf("MCP connect: %v", err)
	}
	defer sess.Close()
	tools, err := sess.ListTools(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, tl := range tools.Tools {
		names = append(names, tl.Name)
	}
	for _, want := range []string{"context_create", "context_append", "context_read", "memory_get", "memory_put"} {
		if !slices.Contains(names, want) {
			t.Errorf("tools/list: %v, want %s", names, want)
		}
	}
	call := func(name string, args map[string]any, out any) {
		t.Helper()
		res, err := sess.CallTool(ctx, &mcp.CallToolParams{Name: name, Arguments: args})
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if res.IsError {
			t.Fatalf("%s: tool error: %s", name, toolText(res))
		}
		if out != nil {
			b, err := json.Marshal(res.StructuredContent)
			if err != nil {
				t.Fatal(err)
			}
			if err := json.Unmarshal(b, out); err != nil {
				t.Fatalf("%s: structured content %s: %v", name, b, err)
			}
		}
	}
	call("context_create", map[string]any{"context_id": "mcp-1"}, nil)
	var app struct {
		FirstSeq uint64 `json:"first_seq"`
		LastSeq  uint64 `json:"last_seq"`
	}
	call("context_append", map[string]any{
		"context_id": "mcp-1",
		"request_id": "mcp-r1",
		"entries": []map[string]any{
			{"role": "user", "content": "remember the milk"},
			{"role": "assistant", "content": "noted"},
		},
	}, &app)
	if app.FirstSeq != 1 || app.LastSeq != 2 {
		t.Errorf("context_append: seq %d-%d, want 1-2", app.FirstSeq, app.LastSeq)
	}
	var rd struct {
		Entries []struct {
			Seq     uint64 `json:"seq"`
			Role    string `json:"role"`
			Content string `json:"content"`
		} `json:"entries"`
	}
	call("context_read", map[string]any{"context_id": "mcp-1"}, &rd)
	var got []string
	for _, e := range rd.Entries {
		got = append(got, e.Content)
	}
	want := []string{"remember the milk", "noted"}
	if !slices.Equal(got, want) {
		t.Fatalf("context_read: %q, want %q", got, want)
	}
	// The same data over gRPC.
	entries, err := readAll(ctx, cs, "mcp-1")
	if err != nil {
		t.Fatal(err)
	}
	if got := texts(entries); !slices.Equal(got, want) {
		t.Fatalf("gRPC read of the MCP-written context: %q, want %q", got, want)
	}
	w.set("mcp-1", want)

	// Compaction and a token budget, through the router.
	call("context_create", map[string]any{"context_id": "mcp-2"}, nil)
	call("context_append", map[string]any{"context_id": "mcp-2", "request_id": "mcp-r2", "entries": []map[string]any{
		{"role": "user", "content": "the first long question about milk"},
		{"role": "assistant", "content": "a long answer"},
		{"role": "user", "content": "thanks"},
	}}, nil)
	var k struct {
		UpToSeq uint64 `json:"up_to_seq"`
	}
	call("context_compact", map[string]any{"context_id": "mcp-2", "up_to_seq": 2, "summary": "asked about milk", "request_id": "mcp-k1"}, &k)
	var br struct {
		Summary *struct {
			Text string `json:"text"`
		} `json:"summary"`
		Entries []struct {
			Content string `json:"content"`
		} `json:"entries"`
		TokensReturned uint64 `json:"tokens_returned"`
	}
	call("context_read", map[string]any{"context_id": "mcp-2", "max_tokens": 20}, &br)
	if k.UpToSeq != 2 || br.Summary == nil || br.Summary.Text != "asked about milk" || len(br.Entries) != 1 || br.Entries[0].Content != "thanks" || br.TokensReturned > 20 {
		t.Fatalf("compacted, budgeted read: %+v", br)
	}

	testMCPSearchAndSubscribe(t, ctx, routerHTTP, call)
}

// testMCPSearchAndSubscribe: through the router, memory found by keyword
// and by vector, and a subscription to a context whose last cursor
// resumes the change stream after the listen ended (docs/mcp.md
// "Subscriptions", docs/search.md).
func testMCPSearchAndSubscribe(t *testing.T, ctx context.Context, routerHTTP string, call func(string, map[string]any, any)) {
	call("memory_put", map[string]any{"key": "pref/drink", "value": "likes oat milk in coffee", "embedding": []float64{0.9, 0.1, 0}}, nil)
	call("memory_put", map[string]any{"key": "pref/food", "value": "vegetarian, no mushrooms", "embedding": []float64{0, 0.2, 0.9}}, nil)
	var ms struct {
		Hits []struct {
			Key string `json:"key"`
		} `json:"hits"`
	}
	call("memory_search", map[string]any{"query": "oat milk"}, &ms)
	if len(ms.Hits) == 0 || ms.Hits[0].Key != "pref/drink" {
		t.Fatalf("memory_search by keyword: %+v", ms)
	}
	call("memory_search", map[string]any{"vector": []float64{0, 0.1, 1}, "limit": 1}, &ms)
	if len(ms.Hits) != 1 || ms.Hits[0].Key != "pref/food" {
		t.Fatalf("memory_search by vector: %+v", ms)
	}

	call("context_create", map[string]any{"context_id": "mcp-3"}, nil)
	updates := make(chan *mcp.ResourceUpdatedNotificationParams, 64)
	sc := mcp.NewClient(&mcp.Implementation{Name: "cellplane-e2e-listen", Version: "v0"}, &mcp.ClientOptions{
		ResourceUpdatedHandler: func(_ context.Context, r *mcp.ResourceUpdatedNotificationRequest) {
			select {
			case updates <- r.Params:
			default:
			}
		},
	})
	ss, err := sc.Connect(ctx, &mcp.StreamableClientTransport{Endpoint: "http://" + routerHTTP + "/t/" + tenant + "/mcp"}, nil)
	if err != nil {
		t.Fatalf("MCP connect: %v", err)
	}
	defer ss.Close()
	uri := "cellplane://t/" + tenant + "/contexts/mcp-3"
	lctx, stopListen := context.WithCancel(ctx)
	listened := make(chan error, 1)
	go func() { listened <- ss.Subscribe(lctx, &mcp.SubscribeParams{URI: uri}) }()
	n := 0
	appendOne := func() {
		n++
		call("context_append", map[string]any{"context_id": "mcp-3", "request_id": fmt.Sprintf("mcp-s%d", n),
			"entries": []map[string]any{{"role": "user", "content": fmt.Sprintf("turn %d", n)}}}, nil)
	}
	// The listen is open once an append made after it is notified.
	var cursor string
	deadline := time.Now().Add(20 * time.Second)
	for cursor == "" {
		if time.Now().After(deadline) {
			t.Fatalf("no notification for %s after %d appends", uri, n)
		}
		appendOne()
		wait := time.NewTimer(500 * time.Millisecond)
		select {
		case p := <-updates:
			if p.URI != uri {
				t.Fatalf("notification for %s, subscribed to %s", p.URI, uri)
			}
			cursor, _ = p.Meta["cellplane/cursor"].(string)
			if cursor == "" {
				t.Fatalf("notification without a cursor: %+v", p)
			}
		case <-wait.C:
		}
		wait.Stop()
	}
	stopListen()
	<-listened
	// Two more turns while nobody listens; the cursor resumes after the
	// last notified one and finds both (and nothing twice).
	seenUpTo := n
	appendOne()
	appendOne()
	var cr struct {
		Changes []struct {
			Kind      string `json:"kind"`
			ContextID string `json:"context_id"`
			FirstSeq  uint64 `json:"first_seq"`
			LastSeq   uint64 `json:"last_seq"`
		} `json:"changes"`
	}
	var seqs []uint64
	for range 20 {
		call("changes_read", map[string]any{"after": cursor, "contexts": true, "wait_ms": 1000}, &cr)
		seqs = seqs[:0]
		for _, ch := range cr.Changes {
			if ch.ContextID == "mcp-3" && ch.Kind == "context_appended" {
				for s := ch.FirstSeq; s <= ch.LastSeq; s++ {
					seqs = append(seqs, s)
				}
			}
		}
		if len(seqs) > 0 && seqs[len(seqs)-1] == uint64(n) {
			break
		}
	}
	if len(seqs) == 0 || seqs[0] > uint64(seenUpTo+1) || seqs[len(seqs)-1] != uint64(n) {
		t.Fatalf("changes after the last notified cursor: seqs %v, want up to %d (notified up to at least %d)", seqs, n, seenUpTo)
	}
	for i := 1; i < len(seqs); i++ {
		if seqs[i] != seqs[i-1]+1 {
			t.Fatalf("changes after the cursor have a gap or a repeat: %v", seqs)
		}
	}
}

// ack is an acknowledged append of the load.
type ack struct {
	text string
	seq  uint64
	at   time.Time
}

// load appends one entry at a time through the router until stop is
// closed. Each append carries a request id and is retried with it until
// acknowledged (at most appendBound), so a retry never appends twice.
type load struct {
	cs       contextv1.ContextServiceClient
	context  string
	acks     []ack
	unacked  []string // given up: may or may not be in the log
	failures map[string]int
	err      error
}

const appendBound = 30 * time.Second

func (l *load) run(ctx context.Context, stop <-chan struct{}) {
	l.failures = map[string]int{}
	for i := 0; ; i++ {
		select {
		case <-stop:
			return
		case <-ctx.Done():
			l.err = ctx.Err()
			return
		default:
		}
		s := fmt.Sprintf("w-%05d", i)
		req := &contextv1.AppendRequest{ContextId: l.context, RequestId: "load-" + l.context + "-" + s, Entries: []*contextv1.Entry{text("user", s)}}
		began := time.Now()
		for {
			actx, cancel := context.WithTimeout(ctx, 3*time.Second)
			resp, err := l.cs.Append(asTenant(actx), req)
			cancel()
			if err == nil {
				l.acks = append(l.acks, ack{text: s, seq: resp.GetFirstSeq(), at: time.Now()})
				break
			}
			l.failures[status.Code(err).String()+" "+reason(err)]++
			if time.Since(began) > appendBound || ctx.Err() != nil {
				l.unacked = append(l.unacked, s)
				l.err = fmt.Errorf("append %s not acknowledged within %s: %w", s, appendBound, err)
				return
			}
			select {
			case <-ctx.Done():
			case <-time.After(50 * time.Millisecond):
			}
		}
	}
}

func (l *load) acksAfter(at time.Time) int {
	n := 0
	for _, a := range l.acks {
		if a.at.After(at) {
			n++
		}
	}
	return n
}

func testKillLeader(t *testing.T, ctx context.Context, p *platform, cs contextv1.ContextServiceClient, w *written) {
	cell := tenantGet(t, ctx, p, tenant).GetCell()
	var leader string
	testutil.Eventually(t, 20*time.Second, func() (err error) {
		leader, err = cellLeader(ctx, p, cell)
		return err
	})
	node, ok := p.info(t).node(leader)
	if !ok || node.PID <= 0 || !alive(node.PID) {
		t.Fatalf("leader %s of cell %s: dev.json entry %+v (found %v) is not a live process", leader, cell, node, ok)
	}
	t.Logf("cell %s: leader %s, pid %d", cell, leader, node.PID)

	const ctxID = "load-1"
	createContext(t, ctx, cs, ctxID)
	l := &load{cs: cs, context: ctxID}
	stop := make(chan struct{})
	done := make(chan struct{})
	started := time.Now()
	go func() {
		defer close(done)
		l.run(ctx, stop)
	}()
	var stopOnce sync.Once
	stopLoad := func() {
		stopOnce.Do(func() { close(stop) })
		<-done
	}
	defer stopLoad()

	// Some acknowledged writes before the kill (the load goroutine owns l
	// until done; count progress through a read instead).
	testutil.Eventually(t, 20*time.Second, func() error {
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		rd, err := cs.Read(asTenant(rctx), &contextv1.ReadRequest{ContextId: ctxID, Start: &contextv1.ReadRequest_Tail{Tail: 1}})
		if err != nil {
			return err
		}
		if rd.GetLastSeq() < 20 || time.Since(started) < 1500*time.Millisecond {
			return fmt.Errorf("%d entries after %s", rd.GetLastSeq(), time.Since(started))
		}
		return nil
	})
	killedAt := time.Now()
	if err := syscall.Kill(node.PID, syscall.SIGKILL); err != nil {
		t.Fatalf("kill -9 %d: %v", node.PID, err)
	}
	t.Logf("killed leader %s (pid %d) %s into the load", leader, node.PID, killedAt.Sub(started).Round(time.Millisecond))
	select {
	case <-time.After(5 * time.Second):
	case <-done:
	}
	stopLoad()
	if l.err != nil {
		t.Errorf("load: %v", l.err)
	}
	after := l.acksAfter(killedAt)
	t.Logf("load: %d appends acknowledged (%d after the kill), %d given up; failed attempts by code: %v", len(l.acks), after, len(l.unacked), l.failures)
	if after == 0 {
		t.Errorf("no append acknowledged after the leader was killed: writes did not resume")
	}

	// How long writes paused: the longest gap between acknowledgements.
	var maxGap time.Duration
	var gapEnd time.Time
	prev := started
	for _, a := range l.acks {
		if g := a.at.Sub(prev); g > maxGap {
			maxGap, gapEnd = g, a.at
		}
		prev = a.at
	}
	t.Logf("writes paused at most %s (gap ending %s after the kill)", maxGap.Round(time.Millisecond), gapEnd.Sub(killedAt).Round(time.Millisecond))

	w.set(ctxID, verifyLoad(t, ctx, cs, ctxID, l))

	// The killed process is gone, stays gone (no --restart-killed), and
	// the cell has another leader.
	if alive(node.PID) {
		t.Errorf("pid %d still alive after kill -9", node.PID)
	}
	if now, err := p.readDevJSON(); err == nil {
		if n, _ := now.node(leader); n.PID != node.PID {
			t.Errorf("node %s was restarted (pid %d, was %d) without --restart-killed", leader, n.PID, node.PID)
		}
	}
	testutil.Eventually(t, 30*time.Second, func() error {
		now, err := cellLeader(ctx, p, cell)
		if err != nil {
			return err
		}
		if now == leader {
			return fmt.Errorf("cell %s still shows %s as leader", cell, leader)
		}
		t.Logf("cell %s: new leader %s", cell, now)
		return nil
	})
}

// verifyLoad checks that every acknowledged append of l is in ctxID
// exactly once, at its seq, and that nothing is there twice; it returns
// the context's texts.
func verifyLoad(t *testing.T, ctx context.Context, cs contextv1.ContextServiceClient, ctxID string, l *load) []string {
	t.Helper()
	var entries []*contextv1.Entry
	testutil.Eventually(t, 20*time.Second, func() (err error) {
		entries, err = readAll(ctx, cs, ctxID)
		return err
	})
	count := map[string]int{}
	seqOf := map[string]uint64{}
	for i, e := range entries {
		if e.GetSeq() != uint64(i+1) {
			t.Errorf("entry %d has seq %d", i, e.GetSeq())
		}
		count[e.GetText()]++
		seqOf[e.GetText()] = e.GetSeq()
	}
	var lost, dup []string
	for _, a := range l.acks {
		switch n := count[a.text]; {
		case n == 0:
			lost = append(lost, a.text)
		case seqOf[a.text] != a.seq:
			t.Errorf("%s acknowledged at seq %d, found at %d", a.text, a.seq, seqOf[a.text])
		}
	}
	for s, n := range count {
		if n > 1 {
			dup = append(dup, fmt.Sprintf("%s×%d", s, n))
		}
	}
	if len(lost) > 0 {
		t.Errorf("%d acknowledged appends lost: %v", len(lost), lost)
	}
	if len(dup) > 0 {
		t.Errorf("%d appends duplicated: %v", len(dup), dup)
	}
	if extra := len(entries) - len(l.acks); extra < 0 || extra > len(l.unacked) {
		t.Errorf("%d entries read back for %d acknowledged and %d unacknowledged appends", len(entries), len(l.acks), len(l.unacked))
	}
	return texts(entries)
}

// testMoveAndSwitchover moves the tenant to the other region's cell with
// `cellctl tenant move --wait` under write load through the router (no
// acknowledged write lost or doubled, no append given up), then switches
// the demo tenant over to its standby with `cellctl tenant failover
// --wait`. The restart that follows finds both where they went.
func testMoveAndSwitchover(t *testing.T, ctx context.Context, p *platform, cs contextv1.ContextServiceClient, w *written) {
	info := p.info(t)
	before := tenantGet(t, ctx, p, tenant)
	var to string
	for _, n := range info.Nodes {
		if n.Region != homeRegion {
			to = n.Cell
		}
	}
	if to == "" {
		t.Fatalf("no cell outside %s in %v", homeRegion, info.cells())
	}

	const ctxID = "move-1"
	createContext(t, ctx, cs, ctxID)
	l := &load{cs: cs, context: ctxID}
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		l.run(ctx, stop)
	}()
	testutil.Eventually(t, 20*time.Second, func() error {
		rd, err := cs.Read(asTenant(ctx), &contextv1.ReadRequest{ContextId: ctxID, Start: &contextv1.ReadRequest_Tail{Tail: 1}})
		if err != nil {
			return err
		}
		if rd.GetLastSeq() < 20 {
			return fmt.Errorf("%d entries", rd.GetLastSeq())
		}
		return nil
	})
	moveStart := time.Now()
	out, err := p.cellctl(ctx, "tenant", "move", tenant, "--to", to, "--wait")
	t.Logf("cellctl tenant move %s --to %s --wait (%s):\n%s", tenant, to, time.Since(moveStart).Round(time.Millisecond), out)
	close(stop)
	<-done
	if err != nil {
		t.Fatal(err)
	}
	if l.err != nil {
		t.Errorf("load: %v", l.err)
	}
	t.Logf("load: %d appends acknowledged, %d given up; failed attempts by code: %v", len(l.acks), len(l.unacked), l.failures)
	w.set(ctxID, verifyLoad(t, ctx, cs, ctxID, l))
	after := tenantGet(t, ctx, p, tenant)
	if after.GetCell() != to || after.GetEpoch() != before.GetEpoch()+1 || after.GetCuttingOver() {
		t.Errorf("after the move: %v, want cell %s at epoch %d", after, to, before.GetEpoch()+1)
	}

	// The demo tenant's standby takes over, planned: nothing is lost.
	demo := tenantGet(t, ctx, p, "demo")
	if demo.GetStandbyCell() == "" {
		t.Fatalf("demo has no standby: %v", demo)
	}
	testutil.Eventually(t, 30*time.Second, func() error { // until the standby has bootstrapped
		out, err := p.cellctl(ctx, "tenant", "failover", "demo", "--wait")
		if err == nil {
			t.Logf("cellctl tenant failover demo --wait:\n%s", out)
		}
		return err
	})
	now := tenantGet(t, ctx, p, "demo")
	if now.GetCell() != demo.GetStandbyCell() || now.GetStandbyCell() != demo.GetCell() || now.GetEpoch() != demo.GetEpoch()+1 {
		t.Errorf("after the switchover: %v, want owner %s and standby %s at epoch %d", now, demo.GetStandbyCell(), demo.GetCell(), demo.GetEpoch()+1)
	}
}

func testRestart(t *testing.T, ctx context.Context, p *platform, w *written) {
	p.stop(t)
	if t.Failed() {
		t.FailNow()
	}
	if err := p.start(); err != nil {
		t.Fatalf("restart on the same data directory: %v", err)
	}
	info := p.info(t)
	cs := routerClient(t, info.RouterGRPC)

	ids := tenantIDs(t, ctx, p)
	for _, want := range []string{tenant, "demo"} {
		if !slices.Contains(ids, want) {
			t.Errorf("after restart, tenant list: %v, want %s in it", ids, want)
		}
	}

	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.contexts) == 0 {
		t.Fatal("nothing was written before the restart to check")
	}
	for id, want := range w.contexts {
		var entries []*contextv1.Entry
		testutil.Eventually(t, 30*time.Second, func() (err error) {
			entries, err = readAll(ctx, cs, id)
			return err
		})
		if got := texts(entries); !slices.Equal(got, want) {
			t.Errorf("after restart, context %s has %d entries, want %d (first difference at %d)", id, len(got), len(want), firstDiff(got, want))
		} else {
			t.Logf("after restart, context %s: all %d entries", id, len(got))
		}
	}
	if w.memValue != "" {
		got, err := cs.GetMemory(asTenant(ctx), &contextv1.GetMemoryRequest{Key: memKey})
		if err != nil {
			t.Fatalf("after restart, GetMemory %s: %v", memKey, err)
		}
		if string(got.GetItem().GetValue()) != w.memValue || got.GetItem().GetRevision() != w.memRev {
			t.Errorf("after restart, memory %s = %q rev %d, want %q rev %d", memKey, got.GetItem().GetValue(), got.GetItem().GetRevision(), w.memValue, w.memRev)
		}
	}
}

func firstDiff(a, b []string) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// toolText is the text of a tool result.
func toolText(res *mcp.CallToolResult) string {
	var msg []string
	for _, c := range res.Content {
		if tc, ok := c.(*mcp.TextContent); ok {
			msg = append(msg, tc.Text)
		}
	}
	return strings.Join(msg, "; ")
}
