// Command cellplane is the cellplane server binary. Each subcommand runs one
// component (today: a cell node) or a tool (benchmarks, version).
//
// All wiring is explicit and lives in this package: main builds the command
// tree with newRootCmd, each subcommand's flags are bound to a local config
// value built from its package's DefaultConfig, and nothing is registered
// from init functions.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
)

// version and commit are set at build time:
//
//	go build -ldflags "-X main.version=v0.1.0 -X main.commit=$(git rev-parse --short HEAD)" ./cmd/cellplane
//
// They are the only package-level variables, because -ldflags -X can only
// set those; main passes them on explicitly.
var (
	version = "dev"
	commit  = "dev"
)

// buildInfo says which build is running.
type buildInfo struct {
	Version string
	Commit  string
}

// streams are the process's standard streams, passed explicitly so tests
// can capture them.
type streams struct {
	In       io.Reader
	Out, Err io.Writer
}

func main() {
	// SIGINT/SIGTERM cancel ctx: a running node shuts down gracefully. A
	// second signal kills the process (the handler is restored by stop).
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, stop, os.Args[1:], streams{In: os.Stdin, Out: os.Stdout, Err: os.Stderr},
		buildInfo{Version: version, Commit: commit})
	stop()
	os.Exit(code)
}

// run executes one command line and returns the process exit code. An
// error is printed as one line on stderr. stopSignals restores the default
// signal handling (so that a second Ctrl-C kills the process while a node
// drains); it may be nil.
func run(ctx context.Context, stopSignals func(), args []string, std streams, info buildInfo) int {
	root := newRootCmd(std, info, stopSignals)
	root.SetArgs(args)
	cmd, err := root.ExecuteContextC(ctx)
	if err == nil {
		return 0
	}
	// One line, even for joined errors, so that the reason is what a
	// supervisor's log shows last.
	msg := strings.ReplaceAll(strings.TrimSpace(err.Error()), "\n", "; ")
	var ue usageError
	if errors.As(err, &ue) {
		fmt.Fprintf(std.Err, "%s: %s (see '%s --help')\n", cmd.CommandPath(), msg, cmd.CommandPath())
		return 2
	}
	fmt.Fprintf(std.Err, "%s: %s\n", cmd.CommandPath(), msg)
	return 1
}

// usageError marks a command-line mistake (exit code 2, with a pointer to
// --help) as opposed to a failure while running (exit code 1).
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func usageErrorf(format string, args ...any) error {
	return usageError{fmt.Errorf(format, args...)}
}

func newRootCmd(std streams, info buildInfo, stopSignals func()) *cobra.Command {
	root := &cobra.Command{
		Use:   "cellplane",
		Short: "cellplane keeps the working context of AI agents in isolated, replicated cells",
		Long: `cellplane stores the working context of AI agents — conversation history,
memory and session state — for many tenants. Each tenant lives in one cell:
a 3-node Raft-replicated store serving the ContextService gRPC API.

This binary runs the components. Today that is a cell node ('cellplane cell');
the router, control plane and MCP workers come next.`,
		Example: `  # A single-node cell for a quick try (data in ./data/n1):
  cellplane cell --id n1 --data-dir ./data/n1 --bootstrap n1@127.0.0.1:7210 --insecure

  # Measure a 3-node cell on this machine:
  cellplane bench cell`,
		Version:       fmt.Sprintf("%s (commit %s)", info.Version, info.Commit),
		SilenceErrors: true,
		SilenceUsage:  true,
		// Without subcommand: print help instead of doing nothing.
		RunE: func(cmd *cobra.Command, args []string) error { return cmd.Help() },
	}
	root.SetIn(std.In)
	root.SetOut(std.Out)
	root.SetErr(std.Err)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	root.AddCommand(
		newDevCmd(std, stopSignals),
		newCellCmd(std, stopSignals),
		newControlPlaneCmd(std, stopSignals),
		newRouterCmd(std, stopSignals),
		newWorkerCmd(std, info, stopSignals),
		newBenchCmd(std),
		newCertCmd(std),
		newVersionCmd(std, info),
	)
	return root
}
