// Package layers tests the layering check (.ci/layers) that CI runs: it
// must pass on this repository and fail, naming each violation, on a
// module that breaks every rule.
package layers

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// script is .ci/layers, found from this file's location.
func script(t *testing.T) string {
	t.Helper()
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		t.Fatal("cannot locate the test file")
	}
	return filepath.Join(filepath.Dir(file), "..", "..", ".ci", "layers")
}

func run(t *testing.T, dir string) (string, error) {
	t.Helper()
	cmd := exec.Command("bash", script(t), dir)
	cmd.Env = append(os.Environ(), "GOFLAGS=-mod=mod", "GOWORK=off")
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func TestRepositoryKeepsItsLayers(t *testing.T) {
	if testing.Short() {
		t.Skip("lists every package of the repository")
	}
	root := filepath.Join(filepath.Dir(script(t)), "..")
	out, err := run(t, root)
	if err != nil {
		t.Fatalf("the repository breaks its layering rules:\n%s", out)
	}
	if !strings.Contains(out, "layers: ok") {
		t.Fatalf("no verdict from .ci/layers:\n%s", out)
	}
}

// TestViolationsFail builds a small module that breaks each rule once and
// checks that the script fails and names every violation.
func TestViolationsFail(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) {
		t.Helper()
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	const mod = "github.com/cellplane/cellplane"
	write("go.mod", "module "+mod+"\n\ngo 1.26\n")
	write("cells/node/node.go", "package node\n\nimport _ \""+mod+"/router/fwd\"\n")
	write("router/fwd/fwd.go", "package fwd\n")
	write("internal/floor/floor.go", "package floor\n\nimport _ \""+mod+"/cells/node\"\n")
	write("cells/dialer/dialer.go", "package dialer\n\nfunc f() { grpc.NewClient(\"x\") }\n")
	write("cells/poll/poll.go", "package poll\n\nimport \"time\"\n\nfunc f() { time.Sleep(time.Second) }\n")
	write("cells/ok/ok_test.go", "package ok\n\nimport \"time\"\n\nfunc f() { time.Sleep(time.Second) }\n")
	write("internal/retry/retry.go", "package retry\n\nimport \"time\"\n\nfunc Sleep() { time.Sleep(time.Second) }\n")
	write("cells/a/a.go", "package a\n\nimport cpv1 \""+mod+"/proto/cellplane/controlplane/v1\"\n")
	write("cells/b/b.go", "package b\n\nimport controlplanev1 \""+mod+"/proto/cellplane/controlplane/v1\"\n")
	write("proto/cellplane/controlplane/v1/cp.go", "package cpv1\n")
	write("cellctl", "\x7fELF\x02\x01\x01")
	for _, args := range [][]string{{"init", "-q"}, {"add", "-A"}} {
		c := exec.Command("git", args...)
		c.Dir = dir
		if out, err := c.CombinedOutput(); err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
	}

	out, err := run(t, dir)
	if err == nil {
		t.Fatalf("the check passed a module that breaks every rule:\n%s", out)
	}
	for _, want := range []string{
		"internal imports a component: internal/floor -> cells/node",
		"cells imports the router: cells/node -> router/fwd",
		"grpc.NewClient outside internal/dial: cells/dialer/dialer.go:3",
		"sleep outside internal/retry (use retry.Sleep or the retry policy): cells/poll/poll.go:5",
		"proto package imported under several aliases: \"" + mod + "/proto/cellplane/controlplane/v1\"",
		"committed binary: cellctl",
		"layers: FAILED",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	for _, unwanted := range []string{"ok_test.go", "internal/retry/retry.go"} {
		if strings.Contains(out, unwanted) {
			t.Errorf("output flags %s, which the rules allow:\n%s", unwanted, out)
		}
	}
}
