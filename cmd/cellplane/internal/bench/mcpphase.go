package bench

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	contextv1 "github.com/cellplane/cellplane/proto/cellplane/context/v1"
)

var mcpPaths = []string{pathDirect, pathRouter}

// prefillContexts creates the contexts (on the cell, over gRPC, ctx
// carrying the tenant) and appends n entries of size bytes of text to each.
func prefillContexts(ctx context.Context, cs contextv1.ContextServiceClient, ids []string, n, size int) error {
	if err := createContexts(ctx, cs, ids); err != nil {
		return err
	}
	text := mcpText(size)
	entries := make([]*contextv1.Entry, n)
	for i := range entries {
		entries[i] = &contextv1.Entry{Role: "user", Content: &contextv1.Entry_Text{Text: text}}
	}
	for _, id := range ids {
		_, err := cs.Append(ctx, &contextv1.AppendRequest{ContextId: id, Entries: entries, RequestId: "prefill-" + id})
		if err != nil {
			return fmt.Errorf("bench: pre-fill %s: %w", id, err)
		}
	}
	return nil
}

// mcpText is size bytes of printable text.
func mcpText(size int) string {
	const s = "the quick brown fox jumps over the lazy dog; "
	return strings.Repeat(s, size/len(s)+1)[:size]
}

// mcpSessions is one go-sdk client session per load worker, to one
// endpoint, over a transport of their own.
type mcpSessions struct {
	tr       *http.Transport
	sessions []*sdk.ClientSession
}

func connectMCP(ctx context.Context, endpoint string, n int) (*mcpSessions, error) {
	m := &mcpSessions{tr: &http.Transport{MaxIdleConns: 2 * n, MaxIdleConnsPerHost: 2 * n, IdleConnTimeout: time.Minute}}
	hc := &http.Client{Transport: m.tr}
	client := sdk.NewClient(&sdk.Implementation{Name: "cellplane-bench", Version: "v0"}, nil)
	for range n {
		cs, err := client.Connect(ctx, &sdk.StreamableClientTransport{
			Endpoint: endpoint, HTTPClient: hc, MaxRetries: -1, DisableStandaloneSSE: true,
		}, nil)
		if err != nil {
			m.close()
			return nil, fmt.Errorf("bench: MCP session to %s: %w", endpoint, err)
		}
		m.sessions = append(m.sessions, cs)
	}
	return m, nil
}

func (m *mcpSessions) close() {
	for _, cs := range m.sessions {
		_ = cs.Close()
	}
	m.sessions = nil
	m.tr.CloseIdleConnections()
}

// callTool calls a tool; a tool error (isError) is an error too.
func callTool(ctx context.Context, cs *sdk.ClientSession, name string, args map[string]any) error {
	res, err := cs.CallTool(ctx, &sdk.CallToolParams{Name: name, Arguments: args})
	if err != nil {
		return err
	}
	if res.IsError {
		var msg []string
		for _, c := range res.Content {
			if t, ok := c.(*sdk.TextContent); ok {
				msg = append(msg, t.Text)
			}
		}
		return fmt.Errorf("%s: tool error: %s", name, strings.Join(msg, "; "))
	}
	return nil
}

// runMCPSteps runs opts.Rounds rounds; each round runs a context_append
// and a context_read step through both paths, the paths' order
// alternating from round to round. Each step is a warm-up run then the
// measured run, with the worker's CPU read just before and just after
// the measured one (and the router process's, when router is set). It
// fills res.Runs and res.Summary.
func runMCPSteps(ctx context.Context, opts MCPOptions, endpoints map[string]string, ids []string, w *mcpWorker, router *child, res *MCPResults, p progress) error {
	sessions := map[string]*mcpSessions{}
	defer func() {
		for _, s := range sessions {
			s.close()
		}
	}()
	for _, path := range mcpPaths {
		s, err := connectMCP(ctx, endpoints[path], opts.Concurrency)
		if err != nil {
			return err
		}
		sessions[path] = s
	}

	text := mcpText(opts.EntrySize)
	var reqs atomic.Uint64
	ops := map[string]func(path string) Op{
		toolAppend: func(path string) Op {
			ss := sessions[path].sessions
			return func(ctx context.Context, i int) error {
				return callTool(ctx, ss[i], toolAppend, map[string]any{
					"context_id": ids[i],
					"entries":    []map[string]any{{"role": "user", "content": text}},
					"request_id": fmt.Sprintf("mb-%s-%d", path, reqs.Add(1)),
				})
			}
		},
		toolRead: func(path string) Op {
			ss := sessions[path].sessions
			return func(ctx context.Context, i int) error {
				return callTool(ctx, ss[i], toolRead, map[string]any{"context_id": ids[i], "tail": opts.Tail})
			}
		},
	}
	byKey := map[string][]MCPStep{}
	for round := range opts.Rounds {
		for i := range mcpPaths {
			path := mcpPaths[(i+round)%len(mcpPaths)]
			for _, tool := range mcpTools {
				name := fmt.Sprintf("%s %s #%d", path, tool, round+1)
				s, err := runMCPStep(ctx, name, opts, ops[tool](path), w, router)
				if err != nil {
					return err
				}
				s.Path, s.Tool = path, tool
				p.printf("  %s; worker %.2f cores, %.0f µs CPU per call", s.Result, s.WorkerCores, s.WorkerCPUPerCallUs)
				res.Runs = append(res.Runs, s)
				byKey[path+"/"+tool] = append(byKey[path+"/"+tool], s)
			}
		}
	}
	for _, path := range mcpPaths {
		for _, tool := range mcpTools {
			rs := byKey[path+"/"+tool]
			s := MCPSummary{
				Path:               path,
				Tool:               tool,
				P50:                median(rs, func(r MCPStep) float64 { return r.Latency.P50 }),
				P99:                median(rs, func(r MCPStep) float64 { return r.Latency.P99 }),
				CallsPerSec:        round3(median(rs, func(r MCPStep) float64 { return r.OpsPerSec })),
				WorkerCores:        round3(median(rs, func(r MCPStep) float64 { return r.WorkerCores })),
				WorkerCPUPerCallUs: round3(median(rs, func(r MCPStep) float64 { return r.WorkerCPUPerCallUs })),
				RouterCPUPerCallUs: round3(median(rs, func(r MCPStep) float64 { return r.RouterCPUPerCallUs })),
			}
			if s.WorkerCPUPerCallUs > 0 {
				s.CallsPerWorkerCPUSec = round3(1e6 / s.WorkerCPUPerCallUs)
			}
			for _, r := range rs {
				s.Errors += r.Errors
			}
			res.Summary = append(res.Summary, s)
		}
	}
	return nil
}

// runMCPStep runs an unmeasured warm-up, then the measured step between
// two readings of the worker's CPU.
func runMCPStep(ctx context.Context, name string, opts MCPOptions, op Op, w *mcpWorker, router *child) (MCPStep, error) {
	warm := Load{Name: name + " warm-up", Concurrency: opts.Concurrency, Duration: warmupFor(opts.Duration), OpTimeout: 10 * time.Second}
	if _, err := Run(ctx, warm, op); err != nil && !errors.Is(err, ErrNoProgress) {
		return MCPStep{}, fmt.Errorf("bench: %s: %w", warm.Name, err)
	}
	l := Load{Name: name, Concurrency: opts.Concurrency, Duration: opts.Duration, OpTimeout: 10 * time.Second}
	var routerBefore time.Duration
	if router != nil {
		routerBefore = router.cpu()
	}
	before, err := w.cpu()
	t0 := time.Now()
	if err != nil {
		return MCPStep{}, fmt.Errorf("bench: worker CPU: %w", err)
	}
	r, err := Run(ctx, l, op)
	if err != nil {
		return MCPStep{}, fmt.Errorf("bench: %s: %w", name, err)
	}
	after, err := w.cpu()
	wall := time.Since(t0).Seconds()
	if err != nil {
		return MCPStep{}, fmt.Errorf("bench: worker CPU: %w", err)
	}
	s := MCPStep{Result: r, WorkerCPUSec: (after - before).Seconds()}
	if wall > 0 { // the span of the two readings, a little over r.ElapsedSec
		s.WorkerCores = round3(s.WorkerCPUSec / wall)
	}
	if r.Ops > 0 {
		s.WorkerCPUPerCallUs = round3(s.WorkerCPUSec * 1e6 / float64(r.Ops))
	}
	s.WorkerCPUSec = round3(s.WorkerCPUSec)
	if router != nil {
		rc := (router.cpu() - routerBefore).Seconds()
		if wall > 0 {
			s.RouterCores = round3(rc / wall)
		}
		if r.Ops > 0 {
			s.RouterCPUPerCallUs = round3(rc * 1e6 / float64(r.Ops))
		}
	}
	return s, nil
}
