package mcp_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"

	"github.com/cellplane/cellplane/cells/mcp"
	"github.com/cellplane/cellplane/internal/pki"
)

// docs/security.md's "MCP worker HTTP" table mirrors mcp.HTTPPolicy.
func TestHTTPPolicyDocumented(t *testing.T) {
	b, err := os.ReadFile("../../docs/security.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(b), "\n## MCP worker HTTP (mutual TLS)\n")
	if !ok {
		t.Fatal(`docs/security.md has no "## MCP worker HTTP (mutual TLS)" section`)
	}
	section, _, _ = strings.Cut(section, "\n## ")
	rows := map[string]bool{}
	for pattern, a := range mcp.HTTPPolicy() {
		row := fmt.Sprintf("| `%s` | %s |", pattern, a.Describe())
		rows[row] = true
		if !strings.Contains(section, row) {
			t.Errorf("docs/security.md lacks the row %s", row)
		}
	}
	for _, line := range strings.Split(section, "\n") {
		if strings.HasPrefix(line, "| `") && !rows[line] {
			t.Errorf("docs/security.md has a row mcp.HTTPPolicy does not: %s", line)
		}
	}
}

// HTTPAccess.Allows, and Authorize without a TLS identity.
func TestHTTPAccess(t *testing.T) {
	p := mcp.HTTPPolicy()
	for _, tc := range []struct {
		pattern string
		id      pki.Identity
		want    bool
	}{
		{mcp.PatternMCP, pki.RouterIdentity("c", "r1"), true},
		{mcp.PatternMCP, pki.WorkerIdentity("c", "w1"), false},
		{mcp.PatternMCP, pki.NodeIdentity("c", "eu", "c1", "n1"), false},
		{mcp.PatternMCP, pki.OperatorIdentity("c", pki.RoleAdmin, "a"), false},
		{mcp.PatternMCP, pki.ClientIdentity("c", "acme"), false},
		{mcp.PatternMetadata, pki.RouterIdentity("c", "r1"), true},
		{mcp.PatternMetadata, pki.ControlPlaneIdentity("c", "cp"), false},
		{mcp.PatternMetrics, pki.OperatorIdentity("c", pki.RoleReadOnly, "prom"), true},
		{mcp.PatternMetrics, pki.ControlPlaneIdentity("c", "cp"), true},
		{mcp.PatternMetrics, pki.ClientIdentity("c", "acme"), false},
		{mcp.PatternReadyz, pki.NodeIdentity("c", "eu", "c1", "n1"), true},
		{mcp.PatternHealthz, pki.ClientIdentity("c", "acme"), false},
	} {
		if got := p[tc.pattern].Allows(tc.id); got != tc.want {
			t.Errorf("%s by %s: %v, want %v", tc.pattern, tc.id, got, tc.want)
		}
	}
	ran := false
	h := mcp.Authorize(mcp.PatternMetrics, http.HandlerFunc(func(http.ResponseWriter, *http.Request) { ran = true }), nil)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	if ran || rec.Code != http.StatusUnauthorized {
		t.Fatalf("a request without TLS: %d, handler ran %v", rec.Code, ran)
	}
}
