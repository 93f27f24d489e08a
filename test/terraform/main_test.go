package terraform

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

// bins holds the binaries TestMain built (none when the tests cannot run).
var bins struct {
	dir      string
	provider string
	cellctl  string
}

func TestMain(m *testing.M) {
	flag.Parse()
	os.Exit(run(m))
}

func run(m *testing.M) int {
	if os.Getenv("TF_ACC") != "" {
		dir, err := os.MkdirTemp("", "cellplane-tf-bin-")
		if err != nil {
			fmt.Fprintln(os.Stderr, "terraform tests:", err)
			return 1
		}
		defer os.RemoveAll(dir)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		out, err := testutil.GoBuild(ctx, dir, "./cmd/terraform-provider-cellplane", "./cmd/cellctl")
		cancel()
		if err != nil {
			fmt.Fprintln(os.Stderr, "terraform tests: build:", err)
			return 1
		}
		bins.dir, bins.provider, bins.cellctl = dir, out["./cmd/terraform-provider-cellplane"], out["./cmd/cellctl"]
	}
	code := m.Run()
	if code == 0 {
		// The platform runs in process; the terraform and cellctl
		// processes are waited for.
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "terraform tests: goroutines leaked:", err)
			return 1
		}
	}
	return code
}
