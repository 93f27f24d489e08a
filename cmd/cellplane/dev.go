package main

import (
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/cellplane/cellplane/cmd/cellplane/internal/devenv"
	"github.com/cellplane/cellplane/controlplane/etcdserver"
	"github.com/cellplane/cellplane/internal/logging"
	"github.com/cellplane/cellplane/internal/serve"
	"github.com/cellplane/cellplane/platform"
)

func newDevCmd(std streams, stopSignals func()) *cobra.Command {
	cfg := devenv.DefaultConfig()
	var (
		regions  = strings.Join(cfg.Regions, ",")
		logLevel = "warn"
		insecure bool
		mtls     bool // deprecated: the default
	)
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "Run the whole platform on this machine: etcd, control plane, 2 regions × 2 cells × 3 nodes, a router",
		Long: `Run the whole multi-region platform on one machine: embedded etcd and the
control plane, regions × cells × nodes (real Raft on disk over loopback
TCP, an MCP worker in every node) and one router, all on fixed loopback
ports. Progress goes to stderr; when everything is up, a banner with the
endpoints and copy-paste commands goes to stdout, and <data-dir>/dev.json
describes the platform for scripts.

Started again on the same --data-dir, every tenant and all data are back
(--reset starts from scratch). With --multiprocess every node is its own
child process of this binary, so you can kill -9 one (its pid is in
dev.json) and watch the cell fail over with 'cellctl status'; a killed node
is restarted only with --restart-killed. Ctrl-C or SIGTERM stops
everything, children included.

Authentication is off by default (--auth none): anyone on this machine can
act as any tenant. Use --auth apikey (with --demo for a ready key) to try
it on.

Every internal hop runs with mutual TLS: on the first start a dev CA and
one certificate per component are created in <data-dir>/certs (reused when
started again), and the control plane API, every node's gRPC port, Raft
transport and HTTP port (MCP), and the router's and control plane's calls
into cells require a certificate of that CA and authorise by identity, in
process and with --multiprocess alike. <data-dir>/client.yaml holds an
admin operator's certificate for cellctl, and dev.json names it:
  CELLPLANE_CONFIG=$(jq -r .client_config .cellplane-dev/dev.json) cellctl status
The embedded etcd serves https with client certificates and RBAC (each
component its own etcd user; routers and workers read only, a node writes
only its cell's registry keys). The router's front door (gRPC and MCP)
stays plaintext on loopback, so grpcurl -plaintext and MCP clients work as
they are; --tls serves it over TLS with the router's certificate of the
dev CA (clients trust <data-dir>/certs/ca.crt, named "ca" in dev.json).
--insecure runs every hop plaintext and unauthenticated, as before mutual
TLS (with a warning).`,
		Example: `  cellplane dev --demo
  cellplane dev --multiprocess --demo
  cellplane dev --demo --tls
  cellplane dev --demo --insecure
  cellplane dev --regions us-east --cells-per-region 1 --nodes-per-cell 3 --reset`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg.Regions = splitList(regions)
			logger, err := logging.New(std.Err, logging.Options{Level: logLevel, Format: logging.FormatText})
			if err != nil {
				return usageError{err}
			}
			cfg.Logger = logger
			cfg.ChildLogLevel = logLevel
			cfg.MutualTLS = !insecure
			etcdURLsForMTLS(&cfg, cmd.Flags().Changed)
			cfg.Progress = func(format string, args ...any) {
				fmt.Fprintf(std.Err, "cellplane dev: "+format+"\n", args...)
			}
			if insecure && (cfg.FrontDoorTLS || mtls) {
				return usageErrorf("--insecure turns mutual TLS off: it cannot go with --tls or --mtls")
			}
			if mtls {
				fmt.Fprintln(std.Err, "cellplane dev: --mtls is the default now (--insecure turns mutual TLS off); the flag is kept for older command lines")
			}
			if err := cfg.Validate(); err != nil {
				return usageErrorf("%w", err)
			}
			if cfg.Auth == "none" {
				fmt.Fprintln(std.Err, "cellplane dev: WARNING: authentication is off (--auth none): anyone on this machine can act as any tenant")
			}
			return runDev(cmd, cfg, std.Out, stopSignals)
		},
	}
	f := pflag.NewFlagSet("platform", pflag.ContinueOnError)
	f.StringVar(&cfg.DataDir, "data-dir", cfg.DataDir, "directory of everything the platform stores")
	f.BoolVar(&cfg.Reset, "reset", false, "delete the data dir first")
	f.StringVar(&regions, "regions", regions, "comma-separated regions")
	f.IntVar(&cfg.CellsPerRegion, "cells-per-region", cfg.CellsPerRegion, "cells in each region")
	f.IntVar(&cfg.NodesPerCell, "nodes-per-cell", cfg.NodesPerCell, "Raft members of each cell (1, 3, 5 or 7)")
	f.StringVar(&cfg.Auth, "auth", cfg.Auth, "none or apikey (router and MCP workers)")
	f.BoolVar(&cfg.Demo, "demo", false, "create tenant demo with a standby in the second region (with --auth apikey, also print its API key)")
	f.BoolVar(&insecure, "insecure", false, "run every internal hop plaintext and unauthenticated (no dev CA, no client.yaml)")
	f.BoolVar(&cfg.FrontDoorTLS, "tls", false, "serve the router's front door (gRPC and MCP) over TLS too, with its certificate of the dev CA (<data-dir>/certs/ca.crt)")
	f.BoolVar(&mtls, "mtls", false, "mutual TLS on every internal hop (the default now; kept so that older command lines still work)")
	f.BoolVar(&cfg.MultiProcess, "multiprocess", false, "run every node as its own child process")
	f.BoolVar(&cfg.RestartKilled, "restart-killed", false, "with --multiprocess: restart a node process that died")

	p := pflag.NewFlagSet("ports", pflag.ContinueOnError)
	p.StringVar(&cfg.ControlPlaneAddr, "controlplane-addr", cfg.ControlPlaneAddr, "control plane gRPC (cellctl)")
	p.StringVar(&cfg.ControlPlaneHTTPAddr, "controlplane-http-addr", cfg.ControlPlaneHTTPAddr, "control plane /metrics, /healthz, /readyz")
	p.StringVar(&cfg.RouterAddr, "router-addr", cfg.RouterAddr, "router gRPC (ContextService, RouterService)")
	p.StringVar(&cfg.RouterHTTPAddr, "router-http-addr", cfg.RouterHTTPAddr, "router HTTP (/t/<tenant>/mcp, /metrics)")
	p.StringVar(&cfg.EtcdClientURL, "etcd-client-url", cfg.EtcdClientURL, "embedded etcd client URL (https:// unless --insecure)")
	p.StringVar(&cfg.EtcdPeerURL, "etcd-peer-url", cfg.EtcdPeerURL, "embedded etcd peer URL (https:// unless --insecure)")
	p.IntVar(&cfg.NodeBasePort, "node-base-port", cfg.NodeBasePort, "node i listens on base+3i (Raft), +3i+1 (gRPC), +3i+2 (HTTP)")

	logf := pflag.NewFlagSet("logging", pflag.ContinueOnError)
	logf.StringVar(&logLevel, "log-level", logLevel, "trace, debug, info, warn or error (components' logs on stderr; node processes log to <data-dir>/logs)")

	groups := []flagGroup{{"Platform", f}, {"Ports", p}, {"Logging", logf}}
	for _, g := range groups {
		cmd.Flags().AddFlagSet(g.set)
	}
	// Not MarkDeprecated: cobra prints its note on stdout, whose first
	// line scripts wait for.
	_ = cmd.Flags().MarkHidden("mtls")
	cmd.SetUsageFunc(groupedUsage(groups))
	return cmd
}

// etcdURLsForMTLS gives the default etcd URLs the scheme of the
// platform's mode: https with mutual TLS (the embedded etcd serves it
// too), http with --insecure. URLs given on the command line are kept, and
// must match the mode (platform.Config.Validate).
func etcdURLsForMTLS(cfg *devenv.Config, changed func(flag string) bool) {
	from, to := "http://", "https://"
	if !cfg.MutualTLS {
		from, to = to, from
	}
	for _, u := range []struct {
		flag string
		v    *string
	}{{"etcd-client-url", &cfg.EtcdClientURL}, {"etcd-peer-url", &cfg.EtcdPeerURL}} {
		if !changed(u.flag) {
			*u.v = strings.Replace(*u.v, from, to, 1)
		}
	}
}

func runDev(cmd *cobra.Command, cfg devenv.Config, out io.Writer, stopSignals func()) error {
	ctx := cmd.Context()
	start := time.Now()
	env, err := devenv.Start(ctx, cfg)
	if err != nil {
		return devError(err)
	}
	printBanner(out, cfg, env.State(), time.Since(start))
	<-ctx.Done()
	if stopSignals != nil {
		stopSignals()
	}
	fmt.Fprintln(cmd.ErrOrStderr(), "cellplane dev: shutting down")
	env.Close()
	fmt.Fprintln(cmd.ErrOrStderr(), "cellplane dev: stopped")
	return nil
}

// portFlags names the flag of each platform.Config address.
var portFlags = map[string]string{
	"ControlPlaneAddr": "--controlplane-addr", "ControlPlaneHTTPAddr": "--controlplane-http-addr",
	"RouterAddr": "--router-addr", "RouterHTTPAddr": "--router-http-addr",
	"EtcdClientURL": "--etcd-client-url", "EtcdPeerURL": "--etcd-peer-url",
	"NodeBasePort": "--node-base-port",
}

// devError turns a start failure into one line an operator can act on.
func devError(err error) error {
	var le *serve.ListenError
	var pe *platform.PortError
	switch {
	case errors.As(err, &pe):
		return fmt.Errorf("%s %s: %s (another cellplane dev? pick other ports with the flags under Ports)", portFlags[pe.Field], pe.Addr, pe.Reason())
	case errors.As(err, &le) && le.Name == "raft":
		return fmt.Errorf("node raft address %s: %s (change --node-base-port)", le.Addr, le.Reason())
	case errors.As(err, &le):
		return fmt.Errorf("%s address %s: %s (another cellplane dev? pick other ports with the flags under Ports, or --node-base-port)", le.Name, le.Addr, le.Reason())
	case errors.Is(err, etcdserver.ErrAddrInUse):
		return errors.New("embedded etcd: --etcd-client-url or --etcd-peer-url is already in use (another cellplane dev or etcd?)")
	}
	return err
}

func printBanner(w io.Writer, cfg devenv.Config, st devenv.State, took time.Duration) {
	cells := map[string]bool{}
	for _, n := range st.Nodes {
		cells[n.Cell] = true
	}
	// The first line is exactly "cellplane dev is ready": scripts wait for it.
	fmt.Fprintf(w, "cellplane dev is ready\n")
	fmt.Fprintf(w, "  %d regions, %d cells, %d nodes, up in %s\n\n", len(cfg.Regions), len(cells), len(st.Nodes), took.Round(100*time.Millisecond))
	if st.ClientConfig != "" {
		fmt.Fprintf(w, "  control plane   %s   (mutual TLS: CELLPLANE_CONFIG=$(jq -r .client_config %s) cellctl status)\n",
			st.ControlPlane, filepath.Join(cfg.DataDir, "dev.json"))
	} else {
		fmt.Fprintf(w, "  control plane   %s   (cellctl --controlplane %s)\n", st.ControlPlane, st.ControlPlane)
	}
	scheme, grpcurlTLS := "http", "-plaintext"
	if st.RouterTLS {
		scheme, grpcurlTLS = "https", "-cacert "+st.CA
		fmt.Fprintf(w, "  router gRPC     %s   (TLS: trust %s)\n", st.RouterGRPC, st.CA)
	} else {
		fmt.Fprintf(w, "  router gRPC     %s\n", st.RouterGRPC)
	}
	fmt.Fprintf(w, "  router MCP      %s://%s/t/<tenant>/mcp\n", scheme, st.RouterHTTP)
	fmt.Fprintf(w, "  etcd            %s\n", strings.Join(st.Etcd, ","))
	fmt.Fprintf(w, "  data            %s   (dev.json: addresses and pids)\n", cfg.DataDir)
	switch {
	case st.ClientConfig != "" && st.RouterTLS:
		fmt.Fprintf(w, "  mutual TLS      every internal hop (certificates in %s/certs); the router front door serves TLS (--tls)\n", cfg.DataDir)
	case st.ClientConfig != "":
		fmt.Fprintf(w, "  mutual TLS      every internal hop (certificates in %s/certs); the router front door stays plaintext on loopback (--tls for TLS)\n", cfg.DataDir)
	default:
		fmt.Fprintf(w, "  INSECURE        every hop is plaintext and unauthenticated (--insecure): anyone on this machine can read and write every tenant\n")
	}
	fmt.Fprintln(w)
	tenant := "acme"
	if st.DemoTenant != "" {
		tenant = st.DemoTenant
	}
	authHdr := fmt.Sprintf("-H 'x-cellplane-tenant: %s'", tenant)
	if st.DemoAPIKey != "" {
		fmt.Fprintf(w, "  demo API key    %s   (shown once; only its hash is stored)\n\n", st.DemoAPIKey)
		authHdr = "-H 'authorization: Bearer " + st.DemoAPIKey + "'"
	}
	fmt.Fprintf(w, "Try:\n")
	cellctl := "go run ./cmd/cellctl --controlplane " + st.ControlPlane
	if st.ClientConfig != "" {
		cellctl = "CELLPLANE_CONFIG=" + st.ClientConfig + " go run ./cmd/cellctl"
	}
	fmt.Fprintf(w, "  %s status\n", cellctl)
	if st.DemoTenant == "" {
		fmt.Fprintf(w, "  %s tenant create %s --region %s\n", cellctl, tenant, cfg.Regions[0])
	}
	fmt.Fprintf(w, "  grpcurl %s %s -d '{\"context_id\":\"chat-1\"}' %s cellplane.context.v1.ContextService/CreateContext\n", grpcurlTLS, authHdr, st.RouterGRPC)
	fmt.Fprintf(w, "  grpcurl %s %s -d '{\"context_id\":\"chat-1\",\"entries\":[{\"role\":\"user\",\"text\":\"hello\"}]}' %s cellplane.context.v1.ContextService/Append\n", grpcurlTLS, authHdr, st.RouterGRPC)
	fmt.Fprintf(w, "  MCP client → %s://%s/t/%s/mcp (tools: context_create, context_append, context_read, memory_put, …)\n", scheme, st.RouterHTTP, tenant)
	if cfg.MultiProcess {
		fmt.Fprintf(w, "  kill -9 <a node's pid from %s/dev.json>, then cellctl status: the cell elects a new leader\n", cfg.DataDir)
	}
	fmt.Fprintf(w, "\nCtrl-C stops everything.\n")
}
