package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/cellplane/cellplane/cells/mcp"
	"github.com/cellplane/cellplane/internal/changecursor"
	"github.com/cellplane/cellplane/internal/tenantmd"
	contextv1 "github.com/cellplane/cellplane/proto/cellplane/context/v1"
)

// Ratio names of the subscribe scenario.
const (
	// RatioSubscribeP50MCPVsGRPC is the event latency p50 through the MCP
	// worker's subscriptions/listen ÷ the cell's WatchChanges direct.
	RatioSubscribeP50MCPVsGRPC = "subscribe_mcp_p50_vs_grpc"
	RatioSubscribeP99MCPVsGRPC = "subscribe_mcp_p99_vs_grpc"
)

// SubscribeOptions configures RunSubscribe (`cellplane bench subscribe`).
type SubscribeOptions struct {
	// Duration is how long the writer appends (after a short warm-up).
	Duration time.Duration
	// Rate is appends per second (open loop, one entry each).
	Rate int
	// Listeners is how many subscribers of each kind follow the context.
	Listeners int
	// EntrySize is the bytes of text per entry.
	EntrySize int
	// DataDir is where the cell keeps its files (a new directory inside
	// it, os.TempDir() when empty, removed at the end).
	DataDir string
	// Logger receives the components' logs (nil: discarded).
	Logger *slog.Logger
	// Progress receives one human line per step (nil: silent).
	Progress io.Writer
}

// DefaultSubscribeOptions: 20 s at 100 appends/s, 4 listeners of each
// kind (well under a minute with the cell's start).
func DefaultSubscribeOptions() SubscribeOptions {
	return SubscribeOptions{Duration: 20 * time.Second, Rate: 100, Listeners: 4, EntrySize: 256}
}

// SubscribeResults are the subscribe scenario's figures: per path, the
// latency from an append's command time (the leader's clock when it
// proposed it; same process, same clock) to its arrival at a subscriber.
type SubscribeResults struct {
	Mode      string   `json:"mode"`
	Rate      int      `json:"rate"`
	Listeners int      `json:"listeners"`
	Appends   uint64   `json:"appends"`
	GRPC      Result   `json:"grpc_watch_changes"`
	MCP       Result   `json:"mcp_listen_via_worker"`
	Missed    []string `json:"missed,omitempty"`
	TotalSec  float64  `json:"total_s"`
}

// Steps implements StepLister.
func (r *SubscribeResults) Steps() []Result { return []Result{r.GRPC, r.MCP} }

// Notes implements NoteLister.
func (r *SubscribeResults) Notes() []Note {
	n := []Note{{"appends", fmt.Sprint(r.Appends)}, {"mode", r.Mode}}
	for _, m := range r.Missed {
		n = append(n, Note{"missed", m})
	}
	return n
}

// RunSubscribe starts a 3-node cell and an MCP worker in this process,
// opens Listeners gRPC WatchChanges streams on the leader (the baseline)
// and Listeners MCP subscriptions/listen streams through the worker, all
// on one context, appends to it at Rate for Duration, and reports each
// path's event latency from the append's command time.
func RunSubscribe(ctx context.Context, opts SubscribeOptions) (*Report, error) {
	began := time.Now()
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	root, cleanup, err := runDir(opts.DataDir)
	if err != nil {
		return nil, err
	}
	defer cleanup()
	machine := DescribeMachine(root)
	p := progress{opts.Progress}
	p.printf("bench subscribe: %d appends/s for %s, %d listeners per path", opts.Rate, opts.Duration, opts.Listeners)
	cell, err := StartCell(ctx, root, opts.Logger)
	if err != nil {
		return nil, err
	}
	defer cell.Close()
	conn := cell.Conn(cell.CurrentLeader())
	cs := contextv1.NewContextServiceClient(conn)
	tctx := tenantmd.Outgoing(ctx, "bench", 0)
	if _, err := cs.CreateContext(tctx, &contextv1.CreateContextRequest{ContextId: "sub"}); err != nil {
		return nil, fmt.Errorf("bench: create context: %w", err)
	}

	// The worker, in this process, on a loopback port.
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	wcfg := mcp.DefaultConfig()
	wcfg.PublicURL = "http://" + lis.Addr().String()
	wcfg.Logger = opts.Logger
	w, err := mcp.New(wcfg, conn, nil)
	if err != nil {
		return nil, err
	}
	srv := &http.Server{Handler: w.Handler(), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(lis) }()
	defer srv.Close()
	endpoint := wcfg.PublicURL + "/t/bench/mcp"

	lctx, stop := context.WithCancel(ctx)
	defer stop()
	grpcHist, mcpHist := NewHistogram(), NewHistogram()
	var mu sync.Mutex
	seen := map[string]map[uint64]bool{} // listener → seqs received
	record := func(name string, h *Histogram, first, last uint64, at time.Time, cmdTime int64) {
		h.Record(at.Sub(time.Unix(0, cmdTime)))
		mu.Lock()
		defer mu.Unlock()
		if seen[name] == nil {
			seen[name] = map[uint64]bool{}
		}
		for s := first; s <= last; s++ {
			seen[name][s] = true
		}
	}
	var wg sync.WaitGroup
	ready := make(chan error, 2*opts.Listeners)
	for i := range opts.Listeners {
		name := fmt.Sprint("grpc", i)
		wg.Add(1)
		go func() {
			defer wg.Done()
			s, err := cs.WatchChanges(tenantmd.Outgoing(lctx, "bench", 0), &contextv1.WatchChangesRequest{ContextIds: []string{"sub"}})
			if err == nil {
				_, err = s.Recv()
			}
			ready <- err
			for err == nil {
				var resp *contextv1.WatchChangesResponse
				resp, err = s.Recv()
				now := time.Now()
				for _, ch := range resp.GetChanges() {
					if ch.GetKind() == contextv1.ChangeKind_CHANGE_KIND_CONTEXT_APPENDED {
						record(name, grpcHist, ch.GetFirstSeq(), ch.GetLastSeq(), now, ch.GetCursor().GetTimeUnixNano())
					}
				}
			}
		}()
		name = fmt.Sprint("mcp", i)
		wg.Add(1)
		go func() {
			defer wg.Done()
			listenSSE(lctx, endpoint, mcp.ContextURI("bench", "sub"), ready, func(meta map[string]any) {
				now := time.Now()
				cur, err := changecursor.Parse(fmt.Sprint(meta[mcp.MetaCursor]))
				var a, b uint64
				if _, serr := fmt.Sscanf(fmt.Sprint(meta[mcp.MetaSeqs]), "%d-%d", &a, &b); err == nil && serr == nil {
					record(name, mcpHist, a, b, now, cur.GetTimeUnixNano())
				}
			})
		}()
	}
	for range 2 * opts.Listeners {
		if err := <-ready; err != nil {
			return nil, fmt.Errorf("bench: open a subscription: %w", err)
		}
	}
	p.printf("  %d subscriptions open; appending", 2*opts.Listeners)
	text := strings.Repeat("x", opts.EntrySize)
	tick := time.NewTicker(time.Second / time.Duration(max(1, opts.Rate)))
	end := time.NewTimer(opts.Duration)
	var appends uint64
	var lastSeq uint64
write:
	for {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-end.C:
			break write
		case <-tick.C:
			r, err := cs.Append(tctx, &contextv1.AppendRequest{ContextId: "sub", Entries: []*contextv1.Entry{{Role: "user", Content: &contextv1.Entry_Text{Text: text}}}})
			if err != nil {
				return nil, fmt.Errorf("bench: append: %w", err)
			}
			appends++
			lastSeq = r.GetLastSeq()
		}
	}
	tick.Stop()
	// Wait (bounded) for every listener to have every seq.
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		mu.Lock()
		done := len(seen) == 2*opts.Listeners
		for _, s := range seen {
			done = done && len(s) == int(lastSeq)
		}
		mu.Unlock()
		if done {
			break
		}
		t := time.NewTimer(50 * time.Millisecond)
		<-t.C
	}
	stop()
	srv.Close()
	wg.Wait()
	res := &SubscribeResults{Mode: "in-process", Rate: opts.Rate, Listeners: opts.Listeners, Appends: appends, TotalSec: time.Since(began).Seconds()}
	for name, s := range seen {
		if len(s) != int(lastSeq) {
			res.Missed = append(res.Missed, fmt.Sprintf("%s got %d of %d seqs", name, len(s), lastSeq))
		}
	}
	res.GRPC = Result{Name: "watch_changes_grpc", Concurrency: opts.Listeners, Ops: grpcHist.Count(), Latency: grpcHist.Summary(), ElapsedSec: opts.Duration.Seconds()}
	res.MCP = Result{Name: "listen_mcp_worker", Concurrency: opts.Listeners, Ops: mcpHist.Count(), Latency: mcpHist.Summary(), ElapsedSec: opts.Duration.Seconds()}
	for _, r := range []*Result{&res.GRPC, &res.MCP} {
		r.OpsPerSec = round3(float64(r.Ops) / r.ElapsedSec)
	}
	p.printf("  %s", res.GRPC)
	p.printf("  %s", res.MCP)
	ratios := map[string]float64{}
	if g := res.GRPC.Latency; g.P50 > 0 && g.P99 > 0 {
		ratios[RatioSubscribeP50MCPVsGRPC] = round3(res.MCP.Latency.P50 / g.P50)
		ratios[RatioSubscribeP99MCPVsGRPC] = round3(res.MCP.Latency.P99 / g.P99)
	}
	if len(res.Missed) > 0 {
		return nil, errors.New("bench: subscribers missed events: " + strings.Join(res.Missed, "; "))
	}
	return &Report{Scenario: "subscribe", Machine: machine, Results: res, Ratios: ratios}, nil
}

// listenSSE opens a subscriptions/listen on endpoint for uri (auth off)
// and calls fn with each resources/updated notification's _meta until
// ctx ends. It sends the open's error (or nil on the acknowledgement) to
// ready once.
func listenSSE(ctx context.Context, endpoint, uri string, ready chan<- error, fn func(meta map[string]any)) {
	body, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": 1, "method": "subscriptions/listen",
		"params": map[string]any{
			"_meta": map[string]any{
				"io.modelcontextprotocol/protocolVersion":    "2026-07-28",
				"io.modelcontextprotocol/clientInfo":         map[string]any{"name": "bench", "version": "v0"},
				"io.modelcontextprotocol/clientCapabilities": map[string]any{},
			},
			"notifications": map[string]any{"resourceSubscriptions": []string{uri}},
		}})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, bytes.NewReader(body))
	if err != nil {
		ready <- err
		return
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	req.Header.Set("Mcp-Protocol-Version", "2026-07-28")
	req.Header.Set("Mcp-Method", "subscriptions/listen")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		ready <- err
		return
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		ready <- fmt.Errorf("listen: %s", resp.Status)
		return
	}
	acked := false
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		data, ok := strings.CutPrefix(sc.Text(), "data: ")
		if !ok {
			continue
		}
		var m struct {
			Method string `json:"method"`
			Params struct {
				Meta map[string]any `json:"_meta"`
			} `json:"params"`
			Error any `json:"error"`
		}
		if json.Unmarshal([]byte(data), &m) != nil {
			continue
		}
		switch {
		case !acked && m.Error != nil:
			ready <- fmt.Errorf("listen: %v", m.Error)
			return
		case m.Method == "notifications/subscriptions/acknowledged" && !acked:
			acked = true
			ready <- nil
		case m.Method == "notifications/resources/updated":
			fn(m.Params.Meta)
		}
	}
	if !acked {
		ready <- errors.New("listen: the stream ended before the acknowledgement")
	}
}
