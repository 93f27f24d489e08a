package e2e

import (
	"context"
	"flag"
	"fmt"
	"os"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/cellplane/cellplane/internal/testutil"
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
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	out, err := testutil.GoBuild(ctx, dir, "./cmd/cellplane", "./cmd/cellctl")
	if err != nil {
		return err
	}
	bins.cellplane, bins.cellctl = out["./cmd/cellplane"], out["./cmd/cellctl"]
	return nil
}
