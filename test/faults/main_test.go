package faults

import (
	"context"
	"flag"
	"fmt"
	"os"
	"runtime"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/cellplane/cellplane/internal/testutil"
)

// binary is the cellplane executable TestMain built for the nodes (empty
// when the suite does not run: -short, or not Linux).
var binary string

func TestMain(m *testing.M) {
	flag.Parse()
	if testing.Short() || runtime.GOOS != "linux" {
		os.Exit(m.Run())
	}
	os.Exit(run(m))
}

func run(m *testing.M) int {
	dir, err := os.MkdirTemp("", "cellplane-faults-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "faults:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	bins, err := testutil.GoBuild(ctx, dir, "./cmd/cellplane")
	cancel()
	if err != nil {
		fmt.Fprintln(os.Stderr, "faults: build:", err)
		return 1
	}
	binary = bins["./cmd/cellplane"]
	code := m.Run()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "faults: goroutines leaked:", err)
			return 1
		}
	}
	return code
}
