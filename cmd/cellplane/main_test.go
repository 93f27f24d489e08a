package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/cellplane/cellplane/cells/store"
	"github.com/cellplane/cellplane/internal/failpoint"
	"github.com/cellplane/cellplane/internal/testutil"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/")

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// syncBuffer is a bytes.Buffer safe for a running command and the test.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

type result struct {
	code     int
	out, err string
}

func runCmd(ctx context.Context, args ...string) result {
	var out, errb syncBuffer
	code := run(ctx, nil, args, streams{In: strings.NewReader(""), Out: &out, Err: &errb}, buildInfo{Version: "v1.2.3", Commit: "abc1234"})
	return result{code, out.String(), errb.String()}
}

func TestVersion(t *testing.T) {
	r := runCmd(t.Context(), "version")
	want := fmt.Sprintf("cellplane v1.2.3 (commit abc1234, %s %s/%s)\n", runtime.Version(), runtime.GOOS, runtime.GOARCH)
	if r.code != 0 || r.out != want || r.err != "" {
		t.Fatalf("version = %d %q %q, want %q", r.code, r.out, r.err, want)
	}
}

// TestHelp compares each command's help with its golden file: help text is
// documentation, so a change to it (a new flag, a new default) shows up in
// review. Run `go test ./cmd/cellplane -update` after an intended change.
func TestHelp(t *testing.T) {
	tests := []struct {
		golden string
		args   []string
	}{
		{"help-root.golden", []string{"--help"}},
		{"help-cell.golden", []string{"cell", "--help"}},
		{"help-cell-unsafe-recover.golden", []string{"cell", "unsafe-recover", "--help"}},
		{"help-bench.golden", []string{"bench", "--help"}},
		{"help-bench-cell.golden", []string{"bench", "cell", "--help"}},
		{"help-bench-placement.golden", []string{"bench", "placement", "--help"}},
		{"help-bench-router.golden", []string{"bench", "router", "--help"}},
		{"help-bench-mcp.golden", []string{"bench", "mcp", "--help"}},
		{"help-bench-subscribe.golden", []string{"bench", "subscribe", "--help"}},
		{"help-bench-mtls.golden", []string{"bench", "mtls", "--help"}},
		{"help-bench-cache.golden", []string{"bench", "cache", "--help"}},
		{"help-bench-vector.golden", []string{"bench", "vector", "--help"}},
		{"help-bench-search.golden", []string{"bench", "search", "--help"}},
		{"help-controlplane.golden", []string{"controlplane", "--help"}},
		{"help-router.golden", []string{"router", "--help"}},
		{"help-worker.golden", []string{"worker", "--help"}},
		{"help-dev.golden", []string{"dev", "--help"}},
		{"help-version.golden", []string{"version", "--help"}},
		{"help-cert.golden", []string{"cert", "--help"}},
		{"help-cert-create-ca.golden", []string{"cert", "create-ca", "--help"}},
		{"help-cert-finish-ca-rotation.golden", []string{"cert", "finish-ca-rotation", "--help"}},
		{"help-cert-create-node.golden", []string{"cert", "create-node", "--help"}},
		{"help-cert-create-router.golden", []string{"cert", "create-router", "--help"}},
		{"help-cert-create-controlplane.golden", []string{"cert", "create-controlplane", "--help"}},
		{"help-cert-create-worker.golden", []string{"cert", "create-worker", "--help"}},
		{"help-cert-create-operator.golden", []string{"cert", "create-operator", "--help"}},
		{"help-cert-create-client.golden", []string{"cert", "create-client", "--help"}},
		{"help-cert-list.golden", []string{"cert", "list", "--help"}},
	}
	for _, tt := range tests {
		t.Run(tt.golden, func(t *testing.T) {
			r := runCmd(t.Context(), tt.args...)
			if r.code != 0 || r.err != "" {
				t.Fatalf("%v: exit %d, stderr %q", tt.args, r.code, r.err)
			}
			path := filepath.Join("testdata", tt.golden)
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
				t.Errorf("%v output differs from %s; if the change is intended (a new flag, a new default), run\n\tgo test ./cmd/cellplane -run TestHelp -update\n%s",
					tt.args, path, lineDiff(string(want), r.out))
			}
		})
	}
}

// lineDiff lists the lines that differ between want and got.
func lineDiff(want, got string) string {
	w, g := strings.Split(want, "\n"), strings.Split(got, "\n")
	var b strings.Builder
	for i := range max(len(w), len(g)) {
		var wl, gl string
		if i < len(w) {
			wl = w[i]
		}
		if i < len(g) {
			gl = g[i]
		}
		if wl != gl {
			fmt.Fprintf(&b, "line %d:\n\t- %s\n\t+ %s\n", i+1, wl, gl)
		}
	}
	return b.String()
}

func TestEveryCommandIsDocumented(t *testing.T) {
	root := newRootCmd(streams{}, buildInfo{}, nil)
	for _, c := range append(root.Commands(), root) {
		cmds := append(c.Commands(), c)
		for _, c := range cmds {
			if c.Name() == "help" || c.Name() == "completion" || c.HasParent() && c.Parent().Name() == "completion" {
				continue
			}
			if c.Short == "" || c.Long == "" || c.Example == "" {
				t.Errorf("%q lacks Short, Long or Example", c.CommandPath())
			}
		}
	}
}

func TestErrorsAreOneLine(t *testing.T) {
	tests := []struct {
		name     string
		args     []string
		wantCode int
		want     string
	}{
		{"missing id", []string{"cell", "--data-dir", "x"}, 1, `required flag(s) "id" not set`},
		{"bootstrap and join", []string{"cell", "--id", "n1", "--data-dir", "x", "--insecure", "--bootstrap", "n1@127.0.0.1:1", "--join", "127.0.0.1:2"}, 2, "--bootstrap and --join are exclusive"},
		{"bad bootstrap", []string{"cell", "--id", "n1", "--data-dir", "x", "--insecure", "--bootstrap", "n1-127.0.0.1"}, 2, `--bootstrap: peer 1 "n1-127.0.0.1": want id@host:port`},
		{"bootstrap without self", []string{"cell", "--id", "n1", "--data-dir", "x", "--insecure", "--bootstrap", "n2@127.0.0.1:1"}, 2, `Bootstrap must include this node ("n1")`},
		{"bad id", []string{"cell", "--id", "n 1", "--data-dir", "x", "--insecure"}, 2, `NodeID "n 1" must be`},
		{"bad log level", []string{"cell", "--id", "n1", "--data-dir", "x", "--insecure", "--log-level", "loud"}, 2, `unknown level "loud"`},
		{"unknown flag", []string{"cell", "--nope"}, 2, "unknown flag: --nope"},
		{"unknown scenario", []string{"bench", "nosuch"}, 2, `unknown scenario "nosuch" (available: cache, cell, failover, mcp, move, mtls, placement, replication, router, search, subscribe, vector)`},
		{"unknown command", []string{"frobnicate"}, 1, `unknown command "frobnicate"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := runCmd(t.Context(), tt.args...)
			if r.code != tt.wantCode {
				t.Errorf("exit code %d, want %d (stderr %q)", r.code, tt.wantCode, r.err)
			}
			if strings.Count(r.err, "\n") != 1 || !strings.Contains(r.err, tt.want) {
				t.Errorf("stderr = %q, want one line containing %q", r.err, tt.want)
			}
			if r.out != "" {
				t.Errorf("stdout = %q, want nothing", r.out)
			}
		})
	}
}

func TestParsePeers(t *testing.T) {
	tests := []struct {
		in      string
		want    []store.Peer
		wantErr string
	}{
		{"", nil, ""},
		{"n1@127.0.0.1:7210", []store.Peer{{ID: "n1", Addr: "127.0.0.1:7210"}}, ""},
		{"n1@a:1, n2@b:2 ,n3@[::1]:3", []store.Peer{{ID: "n1", Addr: "a:1"}, {ID: "n2", Addr: "b:2"}, {ID: "n3", Addr: "[::1]:3"}}, ""},
		{"n1@a:1,", nil, `peer 2 "": want id@host:port`},
		{"@a:1", nil, "want id@host:port"},
		{"n1@a", nil, "address"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := parsePeers(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("parsePeers(%q) error = %v, want %q", tt.in, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Fatalf("parsePeers(%q) = %v, want %v", tt.in, got, tt.want)
			}
		})
	}
}

func TestCellRunsAndStopsGracefully(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a node; skipped with -short")
	}
	raft, grpcAddr, httpAddr := testutil.FreeAddr(t), testutil.FreeAddr(t), testutil.FreeAddr(t)
	ctx, cancel := context.WithCancel(testutil.Context(t, time.Minute))
	defer cancel()
	done := make(chan result, 1)
	go func() {
		done <- runCmd(ctx, "cell", "--id", "n1", "--data-dir", t.TempDir(), "--insecure",
			"--raft-addr", raft, "--grpc-addr", grpcAddr, "--http-addr", httpAddr,
			"--bootstrap", "n1@"+raft, "--log-format", "json", "--log-level", "debug")
	}()
	testutil.Eventually(t, 20*time.Second, func() error {
		select {
		case r := <-done:
			done <- r
			return nil // exited early: reported below
		default:
		}
		resp, err := http.Get("http://" + httpAddr + "/readyz")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("/readyz = %d", resp.StatusCode)
		}
		return nil
	})
	cancel() // what SIGTERM does
	var r result
	select {
	case r = <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("cell did not stop after its context was cancelled")
	}
	if r.code != 0 {
		t.Fatalf("exit %d; stderr:\n%s", r.code, r.err)
	}
	for _, want := range []string{`"msg":"node started"`, `"msg":"shutting down"`, `"msg":"stopped"`} {
		if !strings.Contains(r.err, want) {
			t.Errorf("logs lack %s:\n%s", want, r.err)
		}
	}
	// --insecure: one loud warning, and no other about TLS.
	if n := strings.Count(r.err, `"level":"WARN","msg":"INSECURE: the cell node runs with --insecure`); n != 1 {
		t.Errorf("%d --insecure warnings, want 1:\n%s", n, r.err)
	}
}

func TestCellTakenPort(t *testing.T) {
	taken := testutil.Listen(t)
	r := runCmd(testutil.Context(t, 30*time.Second), "cell", "--id", "n1", "--data-dir", t.TempDir(), "--insecure",
		"--raft-addr", taken.Addr().String(), "--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0",
		"--log-level", "error")
	want := fmt.Sprintf("cellplane cell: --raft-addr %s: address already in use", taken.Addr())
	if r.code != 1 || !strings.HasPrefix(r.err, want) || strings.Count(r.err, "\n") != 1 {
		t.Fatalf("exit %d, stderr %q; want 1 and one line starting %q", r.code, r.err, want)
	}
}

// cellplane cell arms crash points from CELLPLANE_FAILPOINTS, and refuses
// a spec it cannot honour (a typo must not silently test nothing).
func TestCellFailpointsFromEnv(t *testing.T) {
	t.Setenv(failpoint.Env, "store/no-such-point=crash")
	r := runCmd(testutil.Context(t, 30*time.Second), "cell", "--id", "n1", "--data-dir", t.TempDir(), "--insecure",
		"--raft-addr", "127.0.0.1:0", "--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0", "--log-level", "error")
	if r.code != 2 || !strings.Contains(r.err, failpoint.Env) || !strings.Contains(r.err, "unknown point") {
		t.Fatalf("exit %d, stderr %q; want a usage error naming %s", r.code, r.err, failpoint.Env)
	}
}

func TestCellUnusableDataDir(t *testing.T) {
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	r := runCmd(testutil.Context(t, 30*time.Second), "cell", "--id", "n1", "--data-dir", file, "--insecure",
		"--raft-addr", "127.0.0.1:0", "--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0", "--log-level", "error")
	if r.code != 1 || !strings.Contains(r.err, "data dir "+file+" is unusable") || strings.Count(r.err, "\n") != 1 {
		t.Fatalf("exit %d, stderr %q", r.code, r.err)
	}
}

// cellplane dev refuses a taken port in one line naming the flag, before
// it starts anything.
func TestDevTakenPort(t *testing.T) {
	taken := testutil.Listen(t)
	r := runCmd(t.Context(), "dev", "--data-dir", t.TempDir(), "--controlplane-addr", taken.Addr().String())
	if r.code != 1 || strings.Count(strings.TrimSpace(r.err), "\n") != 1 || !strings.Contains(r.err, "--controlplane-addr "+taken.Addr().String()+": address already in use") {
		t.Fatalf("exit %d, stderr %q", r.code, r.err)
	}
}

// Every scenario refuses a broken option with a usage error naming it.
func TestBenchOptionRules(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"bench", "cell", "--duration", "0s"}, "--duration must be > 0"},
		{[]string{"bench", "placement", "--update-interval", "-1s"}, "--update-interval must be ≥ 0"},
		{[]string{"bench", "router", "--rounds", "0"}, "--rounds must be ≥ 1"},
		{[]string{"bench", "router", "--page-size", "0"}, "--page-size must be ≥ 1"},
		{[]string{"bench", "mcp", "--tail", "0"}, "--tail must be ≥ 1"},
	} {
		r := runCmd(t.Context(), tc.args...)
		if r.code != 2 || !strings.Contains(r.err, tc.want) {
			t.Errorf("%v: exit %d, stderr %q; want exit 2 and %q", tc.args, r.code, r.err, tc.want)
		}
	}
}
