// Command cellctl is the admin CLI of cellplane's control plane: it manages
// regions, cells, tenants (placement) and tenant API keys, and shows the
// topology status, over the ControlPlaneService gRPC API.
//
// All wiring is explicit and lives in this package: main builds the command
// tree with newRootCmd, the global flags are bound to one options value that
// every command receives, and nothing is registered from init functions.
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
	"time"

	goclient "github.com/cellplane/cellplane/client"
	"github.com/cellplane/cellplane/internal/ids"
	"github.com/spf13/cobra"
)

// version and commit are set at build time:
//
//	go build -ldflags "-X main.version=v0.1.0 -X main.commit=$(git rev-parse --short HEAD)" ./cmd/cellctl
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

// Defaults of the global flags.
const (
	defaultControlPlane = goclient.DefaultControlPlaneAddr
	envControlPlane     = goclient.EnvControlPlane
	defaultTimeout      = 10 * time.Second
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], streams{In: os.Stdin, Out: os.Stdout, Err: os.Stderr},
		buildInfo{Version: version, Commit: commit})
	stop()
	os.Exit(code)
}

// run executes one command line and returns the process exit code: 0 on
// success, 1 when the command failed, 2 for a command-line mistake. An error
// is printed as one line on stderr.
func run(ctx context.Context, args []string, std streams, info buildInfo) int {
	root := newRootCmd(std, info)
	root.SetArgs(args)
	cmd, err := root.ExecuteContextC(ctx)
	if err == nil {
		return 0
	}
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

// options are the global (persistent) flags, shared by every command.
type options struct {
	controlPlane string
	output       string
	timeout      time.Duration
	tlsCA        string
	tlsCert      string
	tlsKey       string
	certsDir     string
	certName     string
}

// app is what every command needs: the streams, the global options and the
// build info.
type app struct {
	std  streams
	opts *options
	info buildInfo
}

func newRootCmd(std streams, info buildInfo) *cobra.Command {
	a := &app{std: std, opts: &options{}, info: info}
	root := &cobra.Command{
		Use:   "cellctl",
		Short: "cellctl administers a cellplane control plane",
		Long: `cellctl is the admin CLI of cellplane's control plane. It registers regions
and cells, places tenants on cells, manages tenants' API keys and shows the
topology status, through the control plane's ControlPlaneService gRPC API.

The control plane's address comes from --controlplane, else from the
CELLPLANE_CONTROLPLANE environment variable, else from the client
configuration file, else 127.0.0.1:7000. Output is a table for people
(-o table) or the API's messages as JSON or YAML for scripts (-o json,
-o yaml).

A control plane started with --certs-dir serves mutual TLS and authorises
each call by the caller's certificate (an operator's, role admin or
read-only: 'cellplane cert create-operator'). Give cellctl the certificate
with --certs-dir (and --cert-name when the directory holds several operator
certificates), or --tls-ca, --tls-cert and --tls-key. cellctl checks that
the server is a control plane of the CA's cluster.

The client configuration file, named by the CELLPLANE_CONFIG environment
variable, is YAML or JSON with the keys controlplane, ca, cert and key
(paths relative to the file), plus router, tenant and apiKey for the Go
client; flags override it:

  controlplane: cp.example.internal:7000
  ca: certs/ca.crt
  cert: certs/operator.alice.crt
  key: certs/operator.alice.key`,
		Example: `  # What runs where:
  cellctl status

  # Register a region and a 3-node cell, then place a tenant on it:
  cellctl region create eu-west-1 --description "Ireland"
  cellctl cell create eu1-a --region eu-west-1
  cellctl tenant create acme --region eu-west-1

  # Give the tenant an API key (the secret is shown once):
  cellctl tenant key create acme --description "production agents"

  # Talk to another control plane, output JSON:
  cellctl --controlplane cp.example.internal:7000 -o json tenant list --all

  # With mutual TLS, as the operator whose certificate is in ./certs:
  cellctl --certs-dir certs --cert-name operator.alice status`,
		Version:       fmt.Sprintf("%s (commit %s)", info.Version, info.Commit),
		SilenceErrors: true,
		SilenceUsage:  true,
		Args:          noSubcommand,
		RunE:          func(cmd *cobra.Command, args []string) error { return cmd.Help() },
		PersistentPreRunE: func(cmd *cobra.Command, args []string) error {
			return a.opts.finish(cmd)
		},
	}
	root.SetIn(std.In)
	root.SetOut(std.Out)
	root.SetErr(std.Err)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })

	pf := root.PersistentFlags()
	pf.StringVar(&a.opts.controlPlane, "controlplane", defaultControlPlane,
		"host:port of the control plane's gRPC API (env "+envControlPlane+")")
	pf.StringVarP(&a.opts.output, "output", "o", "table", "output format: table, json or yaml")
	pf.DurationVar(&a.opts.timeout, "timeout", defaultTimeout, "time limit of each call to the control plane, connecting included")
	pf.StringVar(&a.opts.tlsCA, "tls-ca", "", "PEM file of the CA that signed the control plane's certificate; enables TLS")
	pf.StringVar(&a.opts.tlsCert, "tls-cert", "", "PEM client certificate for mutual TLS (needs --tls-ca and --tls-key)")
	pf.StringVar(&a.opts.tlsKey, "tls-key", "", "PEM private key of --tls-cert")
	pf.StringVar(&a.opts.certsDir, "certs-dir", "", "certs directory (cellplane cert) holding ca.crt and the operator's certificate: mutual TLS (instead of --tls-*)")
	pf.StringVar(&a.opts.certName, "cert-name", "", "base name of the certificate and key in --certs-dir, e.g. operator.alice (default: the directory's only operator.*.crt)")
	_ = root.RegisterFlagCompletionFunc("output", cobra.FixedCompletions(outputFormats, cobra.ShellCompDirectiveNoFileComp))
	_ = root.MarkPersistentFlagFilename("tls-ca", "pem", "crt")
	_ = root.MarkPersistentFlagFilename("tls-cert", "pem", "crt")
	_ = root.MarkPersistentFlagFilename("tls-key", "pem", "key")
	_ = root.MarkPersistentFlagDirname("certs-dir")

	root.AddCommand(
		newStatusCmd(a),
		newRegionCmd(a),
		newCellCmd(a),
		newTenantCmd(a),
		newFailoverCmd(a),
		newFailoverPolicyCmd(a), // policy.go
		newMoveCmd(a),
		newVersionCmd(a),
	)
	return root
}

// finish validates the global flags and applies the environment and the
// client configuration file (CELLPLANE_CONFIG): a flag wins over the
// environment variable, which wins over the file.
func (o *options) finish(cmd *cobra.Command) error {
	changed := func(name string) bool {
		f := cmd.Flags().Lookup(name)
		return f != nil && f.Changed
	}
	tlsSet := changed("tls-ca") || changed("tls-cert") || changed("tls-key") || changed("certs-dir")
	t, err := goclient.ResolveControlPlaneTarget(o.target(), changed("controlplane"), tlsSet, "")
	if err != nil {
		return usageErrorf("%s: %v", goclient.EnvConfigFile, err)
	}
	o.controlPlane, o.tlsCA, o.tlsCert, o.tlsKey = t.Addr, t.CA, t.Cert, t.Key
	if o.controlPlane == "" {
		return usageErrorf("--controlplane is empty")
	}
	if !validOutput(o.output) {
		return usageErrorf("--output %q: want one of %s", o.output, strings.Join(outputFormats, ", "))
	}
	if o.timeout <= 0 {
		return usageErrorf("--timeout %s: must be positive", o.timeout)
	}
	if (o.tlsCert == "") != (o.tlsKey == "") {
		return usageErrorf("--tls-cert and --tls-key go together")
	}
	if o.tlsCert != "" && o.tlsCA == "" {
		return usageErrorf("--tls-cert needs --tls-ca")
	}
	if o.certsDir != "" && (o.tlsCA != "" || o.tlsCert != "") {
		return usageErrorf("--certs-dir replaces --tls-ca, --tls-cert and --tls-key: give one or the other")
	}
	if o.certName != "" && o.certsDir == "" {
		return usageErrorf("--cert-name needs --certs-dir")
	}
	return nil
}

// noSubcommand is the Args of a command group: a stray word is an unknown
// command, a usage error.
func noSubcommand(cmd *cobra.Command, args []string) error {
	if len(args) > 0 {
		return usageErrorf("unknown command %q for %q", args[0], cmd.CommandPath())
	}
	return nil
}

// exactArgs wants exactly the named positional arguments, each an id.
func exactArgs(names ...string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != len(names) {
			return usageErrorf("want %d argument(s) <%s>, got %d", len(names), strings.Join(names, "> <"), len(args))
		}
		for i, a := range args {
			if strings.TrimSpace(a) == "" {
				return usageErrorf("<%s> is empty", names[i])
			}
			// Every positional argument is an id: the platform's one rule,
			// checked here with the control plane's error (exit 1,
			// INVALID_ARGUMENT) before any connection is made.
			if err := ids.Check(names[i], a, ids.MaxLen); err != nil {
				return err
			}
		}
		return nil
	}
}

// group returns a command that only holds subcommands.
func group(use, short, long, example string, subs ...*cobra.Command) *cobra.Command {
	c := &cobra.Command{
		Use:     use,
		Short:   short,
		Long:    long,
		Example: example,
		Args:    noSubcommand,
		RunE:    func(cmd *cobra.Command, args []string) error { return cmd.Help() },
	}
	c.AddCommand(subs...)
	return c
}
