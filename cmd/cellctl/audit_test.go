package main

import (
	"strings"
	"testing"
	"time"
)

func TestAuditHelp(t *testing.T) {
	for _, tt := range []struct {
		golden string
		args   []string
	}{
		{"help-tenant-audit.golden", []string{"tenant", "audit", "--help"}},
		{"help-tenant-erase.golden", []string{"tenant", "erase", "--help"}},
	} {
		t.Run(tt.golden, func(t *testing.T) {
			r := runCmd(t.Context(), tt.args...)
			if r.code != 0 || r.err != "" {
				t.Fatalf("%v: exit %d, stderr %q", tt.args, r.code, r.err)
			}
			checkGolden(t, tt.golden, r.out)
		})
	}
}

// TestAuditUsageErrors: bad flags are refused before any call.
func TestAuditUsageErrors(t *testing.T) {
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"tenant", "erase", "acme"}, "exactly one of --principal and --context"},
		{[]string{"tenant", "erase", "acme", "--principal", "p", "--context", "c"}, "exactly one of --principal and --context"},
		{[]string{"tenant", "audit", "acme", "--limit", "5000"}, "at most 1000"},
		{[]string{"tenant", "audit", "acme", "--since", "yesterday"}, "--since"},
	} {
		r := runCmd(t.Context(), tt.args...)
		if r.code != 2 || !strings.Contains(r.err, tt.want) {
			t.Errorf("%v: exit %d, stderr %q, want 2 and %q", tt.args, r.code, r.err, tt.want)
		}
	}
}

func TestParseSince(t *testing.T) {
	now := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	for _, tt := range []struct {
		in   string
		want time.Time
		bad  bool
	}{
		{in: "24h", want: now.Add(-24 * time.Hour)},
		{in: "2026-12-01T00:00:00Z", want: time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)},
		{in: "-1h", bad: true},
		{in: "last week", bad: true},
	} {
		got, err := parseSince(tt.in, now)
		if (err != nil) != tt.bad || (!tt.bad && !got.Equal(tt.want)) {
			t.Errorf("parseSince(%q) = %v, %v", tt.in, got, err)
		}
	}
}
