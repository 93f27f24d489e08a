package mcp_test

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/cellplane/cellplane/cells/mcp"
)

// BenchmarkToolCall is one context_read tools/call over loopback HTTP,
// through the SDK and through the fast path (for profiles: `go test
// -run '^$' -bench ToolCall -cpuprofile cpu.out ./cells/mcp`; the cell
// is in the same process).
func BenchmarkToolCall(b *testing.B) {
	for _, fast := range []bool{false, true} {
		name := "sdk"
		if fast {
			name = "fast"
		}
		b.Run(name, func(b *testing.B) {
			conn := startCell(b, "acme")
			cfg := mcp.DefaultConfig()
			cfg.FastToolCalls = fast
			w := startWorker(b, cfg, conn, nil)
			tr := &http.Transport{}
			defer tr.CloseIdleConnections()
			hc := &http.Client{Transport: tr}
			post := func(body string) {
				req, _ := http.NewRequest("POST", w.url("acme"), strings.NewReader(body))
				req.Header.Set("Content-Type", "application/json")
				req.Header.Set("Accept", "application/json, text/event-stream")
				req.Header.Set("Mcp-Protocol-Version", "2025-11-25")
				res, err := hc.Do(req)
				if err != nil {
					b.Fatal(err)
				}
				_, _ = io.Copy(io.Discard, res.Body)
				res.Body.Close()
				if res.StatusCode != 200 {
					b.Fatalf("status %d", res.StatusCode)
				}
			}
			post(toolCall(1, "2025-11-25", "context_create", `{"context_id":"c"}`))
			post(toolCall(2, "2025-11-25", "context_append", `{"context_id":"c","entries":[{"role":"user","content":"`+strings.Repeat("x", 200)+`"}]}`))
			read := toolCall(3, "2025-11-25", "context_read", `{"context_id":"c","tail":10}`)
			b.ReportAllocs()
			for b.Loop() {
				post(read)
			}
		})
	}
}
