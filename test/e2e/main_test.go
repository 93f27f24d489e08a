package e2e

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// bins holds the binaries TestMain built (empty with -short).
var bins struct {
	cellplane string
	cellctl   string
}

func TestMain(m *testing.M) {
	flag.Parse()
	if testing.Short() {
		os.Exit(m.Run())
	}
	os.Exit(run(m))
}

func run(m *testing.M) int {
	dir, err := os.MkdirTemp("", "cellplane-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	if err := build(dir); err != nil {
		fmt.Fprintln(os.Stderr, "e2e: build:", err)
		return 1
	}
	code := m.Run()
	// The suite starts processes, not goroutines: whatever it started in
	// this process (gRPC and MCP clients, readers) must be gone.
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "e2e: goroutines leaked:", err)
			return 1
		}
	}
	return code
}

// build compiles cmd/cellplane and cmd/cellctl into dir with the go on PATH.
func build(dir string) error {
	root, err := repoRoot()
	if err != nil {
		return err
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		return fmt.Errorf("the go command is not on PATH: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	bins.cellplane = filepath.Join(dir, "cellplane")
	bins.cellctl = filepath.Join(dir, "cellctl")
	for out, pkg := range map[string]string{bins.cellplane: "./cmd/cellplane", bins.cellctl: "./cmd/cellctl"} {
		cmd := exec.CommandContext(ctx, goBin, "build", "-o", out, pkg)
		cmd.Dir = root
		if b, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("go build %s: %w\n%s", pkg, err, b)
		}
	}
	return nil
}

// repoRoot is the module root: the test runs in test/e2e.
func repoRoot() (string, error) {
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		return "", err
	}
	b, err := os.ReadFile(filepath.Join(root, "go.mod"))
	if err != nil {
		return "", fmt.Errorf("repository root not found from the test's directory: %w", err)
	}
	if !strings.Contains(string(b), "module github.com/cellplane/cellplane") {
		return "", errors.New(root + "/go.mod is not cellplane's")
	}
	return root, nil
}
