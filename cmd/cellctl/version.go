package main

import (
	"fmt"
	"runtime"

	"github.com/spf13/cobra"
)

func newVersionCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version and commit of this binary",
		Long: `Print the version and commit this binary was built from (set with -ldflags at
build time; "dev" for a plain 'go build'), the Go version and the platform.
It does not contact the control plane.`,
		Example: `  cellctl version
  go build -ldflags "-X main.version=v0.1.0 -X main.commit=$(git rev-parse --short HEAD)" ./cmd/cellctl`,
		Args: exactArgs(),
		RunE: func(cmd *cobra.Command, args []string) error {
			_, err := fmt.Fprintf(a.std.Out, "cellctl %s (commit %s, %s %s/%s)\n",
				a.info.Version, a.info.Commit, runtime.Version(), runtime.GOOS, runtime.GOARCH)
			return err
		},
	}
}
