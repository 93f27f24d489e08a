package main

import (
	"strings"
	"testing"
)

// TestUnsafeRecoverRefuses: unsafe-recover runs only with its
// confirmation flag, and never on a dir without Raft state. (The recovery
// itself: cells TestQuorumDiskLossRefusesThenUnsafeRecover.)
func TestUnsafeRecoverRefuses(t *testing.T) {
	dir := t.TempDir()
	for _, tt := range []struct {
		name     string
		args     []string
		wantCode int
		wantErr  string
	}{
		{"no confirmation", []string{"cell", "unsafe-recover", "--id", "n1", "--data-dir", dir}, 2, "--" + confirmFlag},
		{"no id", []string{"cell", "unsafe-recover", "--data-dir", dir, "--" + confirmFlag}, 2, "--id and --data-dir are required"},
		{"no raft state", []string{"cell", "unsafe-recover", "--id", "n1", "--data-dir", dir, "--" + confirmFlag}, 1, "holds no Raft state"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := runCmd(t.Context(), tt.args...)
			if r.code != tt.wantCode || !strings.Contains(r.err, tt.wantErr) {
				t.Fatalf("exit %d, stderr %q; want %d and %q", r.code, r.err, tt.wantCode, tt.wantErr)
			}
		})
	}
}
