package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The help of the replication, move and failover scenarios, like
// TestHelp's (run `go test ./cmd/cellplane -update` after an intended
// change).
func TestHelpIssue7Scenarios(t *testing.T) {
	for _, name := range []string{"replication", "move", "failover"} {
		t.Run(name, func(t *testing.T) {
			r := runCmd(t.Context(), "bench", name, "--help")
			if r.code != 0 || r.err != "" {
				t.Fatalf("exit %d, stderr %q", r.code, r.err)
			}
			path := filepath.Join("testdata", "help-bench-"+name+".golden")
			if *update {
				if err := os.WriteFile(path, []byte(r.out), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run go test -update to create it)", err)
			}
			if r.out != string(want) {
				t.Errorf("output differs from %s; if intended, run go test ./cmd/cellplane -run TestHelpIssue7Scenarios -update\n%s", path, lineDiff(string(want), r.out))
			}
		})
	}
}

// Each scenario refuses a broken option with a usage error naming it,
// before it starts anything.
func TestBenchIssue7OptionRules(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"bench", "replication", "--delay", "-1ms"}, "--delay must be ≥ 0"},
		{[]string{"bench", "replication", "--load", "1.5"}, "--load must be in (0, 1]"},
		{[]string{"bench", "replication", "--members", "0"}, "--members must be ≥ 1"},
		{[]string{"bench", "replication", "--duration", "0s"}, "--duration must be > 0"},
		{[]string{"bench", "move", "--moves", "0", "--big-moves", "0"}, "--moves must be ≥ 1 when --big-moves is 0"},
		{[]string{"bench", "move", "--size", "0"}, "--size must be > 0"},
		{[]string{"bench", "move", "--rate", "0"}, "--rate must be > 0"},
		{[]string{"bench", "move", "--cleanup-grace", "-1s"}, "--cleanup-grace must be ≥ 0"},
		{[]string{"bench", "failover", "--kills", "-1"}, "--kills must be ≥ 0"},
		{[]string{"bench", "failover", "--kills", "0", "--promotions", "0"}, "--kills must be ≥ 1 when --promotions is 0"},
		{[]string{"bench", "failover", "--authority-ttl", "1500ms"}, "--authority-ttl must be whole seconds"},
		{[]string{"bench", "failover", "--soak", "-1s"}, "--soak must be ≥ 0"},
		{[]string{"bench", "failover", "--log-level", "loud"}, `unknown level "loud"`},
	} {
		r := runCmd(t.Context(), tc.args...)
		if r.code != 2 || !strings.Contains(r.err, tc.want) {
			t.Errorf("%v: exit %d, stderr %q; want exit 2 and %q", tc.args, r.code, r.err, tc.want)
		}
	}
}
