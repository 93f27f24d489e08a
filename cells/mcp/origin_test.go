package mcp

import (
	"strings"
	"testing"
)

func TestNormalizeOrigin(t *testing.T) {
	tests := []struct{ in, want string }{
		{"https://App.Example", "https://app.example"},
		{"https://app.example:443", "https://app.example"},
		{"http://app.example:80", "http://app.example"},
		{"http://127.0.0.1:8080", "http://127.0.0.1:8080"},
		{"https://app.example/", "https://app.example"},
		{"null", ""},
		{"app.example", ""},
		{"ftp://app.example", ""},
		{"https://u@app.example", ""},
		{"https://app.example/path", ""},
		{"https://app.example?q", ""},
	}
	for _, tc := range tests {
		got, err := normalizeOrigin(tc.in)
		if (err == nil) != (tc.want != "") || got != tc.want {
			t.Errorf("normalizeOrigin(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}

func TestMetadataURL(t *testing.T) {
	tests := []struct{ in, want string }{
		{"https://mcp.example/t/acme/mcp", "https://mcp.example/.well-known/oauth-protected-resource/t/acme/mcp"},
		{"http://127.0.0.1:9/t/a/mcp", "http://127.0.0.1:9/.well-known/oauth-protected-resource/t/a/mcp"},
	}
	for _, tc := range tests {
		if got := metadataURL(tc.in); got != tc.want {
			t.Errorf("metadataURL(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// FuzzNormalizeOrigin: an accepted origin is canonical (normalizing it
// again changes nothing) and has no path, query or user info.
func FuzzNormalizeOrigin(f *testing.F) {
	for _, s := range []string{"https://a.example", "http://a:80", "null", "https://a/b", "http://[::1]:3000", "HTTPS://A"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := normalizeOrigin(s)
		if err != nil {
			return
		}
		again, err := normalizeOrigin(n)
		if err != nil || again != n {
			t.Fatalf("%q → %q → %q, %v", s, n, again, err)
		}
		rest, ok := strings.CutPrefix(n, "http://")
		if !ok {
			rest, ok = strings.CutPrefix(n, "https://")
		}
		if !ok || rest == "" || strings.ContainsAny(rest, "/?#@") {
			t.Fatalf("%q normalized to %q", s, n)
		}
	})
}

// FuzzParsePublicURL: an accepted public URL is canonical (parsing it
// again gives it back), absolute http(s), and has no trailing slash, so
// "<it>/t/<tenant>/mcp" is well formed.
func FuzzParsePublicURL(f *testing.F) {
	for _, s := range []string{"https://mcp.example", "http://127.0.0.1:7180/", "https://x/prefix//", "https://u@x", "https://x/?q", "x", "", "htTp://0"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, err := ParsePublicURL(s)
		if err != nil {
			return
		}
		if strings.HasSuffix(got, "/") || !(strings.HasPrefix(got, "http://") || strings.HasPrefix(got, "https://")) {
			t.Fatalf("ParsePublicURL(%q) = %q", s, got)
		}
		again, err := ParsePublicURL(got)
		if err != nil || again != got {
			t.Fatalf("ParsePublicURL(%q) = %q, again %q %v", s, got, again, err)
		}
	})
}
