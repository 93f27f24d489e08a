package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/cellplane/cellplane/cells/mcpserver"
	"github.com/cellplane/cellplane/cells/registry"
	"github.com/cellplane/cellplane/controlplane/topo"
	"github.com/cellplane/cellplane/controlplane/topo/etcdtopo"
	"github.com/cellplane/cellplane/internal/logging"
)

func newWorkerCmd(std streams, info buildInfo, stopSignals func()) *cobra.Command {
	cfg := mcpserver.DefaultConfig()
	var (
		etcd     = etcdFlags{Prefix: topo.Prefix, DialTimeout: 5 * time.Second}
		mflags   mcpFlags
		logLevel = "info"

		controlplaneAddr string
		certsDir         string
		certName         string
		insecure         bool
		logFormat        = "text"
	)
	cmd := &cobra.Command{
		Use:   "worker --id ID --cell CELL --etcd-endpoints URLS",
		Short: "Run a stand-alone MCP worker for one cell (a pool next to the cell's nodes)",
		Long: `Run an MCP worker outside the cell's nodes: each tenant's context and
memory as MCP tools at /t/<tenant>/mcp (Streamable HTTP, stateless). The
worker reaches its cell through the registry (any live member; members
forward to their leader) and keeps no state of its own, so a pool of
workers can serve a cell and a killed worker loses nothing.

It registers under cells/<cell>/nodes/<id> with role WORKER on a lease
(--registry-ttl), so routers send it MCP traffic next to the cell's nodes,
and deregisters when it stops (SIGINT or SIGTERM).

With --certs-dir (the files 'cellplane cert create-worker' writes) the
worker's connections to the cell use mutual TLS and present its worker
certificate, as cells started with --certs-dir require, and its HTTP port
serves mutual TLS (MCP to routers only). Without it the worker refuses to
start unless --insecure is given: both are then plaintext and it warns at
every start.`,
		Example: `  cellplane worker --id w1 --cell use1-a --etcd-endpoints http://127.0.0.1:7379 --http-addr 127.0.0.1:7300 --certs-dir certs`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !cmd.Flags().Changed("etcd-endpoints") {
				etcd.Endpoints = os.Getenv(envEtcdEndpoints)
			}
			logger, err := logging.New(std.Err, logging.Options{Level: logLevel, Format: logging.Format(logFormat)})
			if err != nil {
				return usageError{err}
			}
			cfg.Logger = logger
			if err := checkTLSChoice(certsDir, certName, insecure); err != nil {
				return err
			}
			if certsDir != "" {
				if certName == "" {
					certName = "worker." + cfg.ID // what cert create-worker --id writes
				}
				if cfg.TLS, err = componentTLS(certsDir, certName, "worker", logger); err != nil {
					return err
				}
			} else {
				warnInsecure(logger, "the MCP worker", "http_addr", cfg.HTTPAddr)
			}
			// With --controlplane, the worker presents its identity to ask
			// where etcd is.
			endpoints, err := etcdEndpoints(cmd, splitList(etcd.Endpoints), controlplaneAddr, &etcd.Prefix, etcd.DialTimeout, cfg.TLS)
			if err != nil {
				return err
			}
			if len(endpoints) == 0 {
				return usageErrorf("--etcd-endpoints or --controlplane is required (the worker finds its cell and registers in the control plane's etcd)")
			}
			cfg.Version = info.Version
			mflags.apply(&cfg.MCP)
			reg, err := etcdtopo.Dial(cmd.Context(), etcdtopo.Config{
				Endpoints: endpoints, Prefix: etcd.Prefix, DialTimeout: etcd.DialTimeout,
				CertFile: etcd.CertFile, KeyFile: etcd.KeyFile, CAFile: etcd.CAFile,
				Identity: etcd.identity(endpoints, cfg.TLS),
				Logger:   logger.With("component", "etcd"),
			})
			if err != nil {
				return fmt.Errorf("connect to etcd at %s: %w", strings.Join(endpoints, ","), err)
			}
			defer reg.Close()
			cfg.Registry = reg
			if err := cfg.Validate(); err != nil {
				return usageErrorf("invalid configuration: %w", err)
			}
			// The key watch ends with the command (before the registry closes).
			authCtx, stopAuth := context.WithCancel(cmd.Context())
			defer stopAuth()
			if cfg.Auth, err = mflags.authenticator(authCtx, reg, logger); err != nil {
				return err
			}
			return runWorker(cmd, cfg, stopSignals)
		},
	}
	w := pflag.NewFlagSet("worker", pflag.ContinueOnError)
	w.StringVar(&cfg.ID, "id", "", "worker id, unique in its cell (required)")
	w.StringVar(&cfg.Cell, "cell", "", "the cell this worker serves (required)")
	w.StringVar(&cfg.HTTPAddr, "http-addr", cfg.HTTPAddr, "address of /t/<tenant>/mcp, /metrics, /healthz and /readyz")
	w.StringVar(&cfg.HTTPAdvertise, "http-advertise", "", "HTTP address routers dial (default: the bound --http-addr)")
	w.StringVar(&certsDir, "certs-dir", "", "directory of the worker's certificate and key (<cert-name>.crt/.key) and the cluster CA bundle (ca.crt), as \"cellplane cert create-worker\" writes them, reloaded when they change: calls to the cell then use mutual TLS with this identity and the HTTP port serves mutual TLS only (MCP from routers); required unless --insecure")
	addInsecureFlag(w, &insecure, "its HTTP port and its calls to the cell are")
	w.StringVar(&certName, "cert-name", "", "base name of the worker's certificate in --certs-dir (default: worker.<id>)")
	w.DurationVar(&cfg.RegistryTTL, "registry-ttl", registry.DefaultTTL, "lease TTL of the worker's registry key")
	w.DurationVar(&cfg.ShutdownTimeout, "shutdown-timeout", cfg.ShutdownTimeout, "how long a graceful shutdown may drain requests")

	e := pflag.NewFlagSet("etcd", pflag.ContinueOnError)
	e.StringVar(&etcd.Endpoints, "etcd-endpoints", "", "comma-separated etcd endpoints of the control plane (env "+envEtcdEndpoints+") (required)")
	e.StringVar(&controlplaneAddr, "controlplane", "", "the control plane's gRPC address: ask it where etcd is (instead of --etcd-endpoints)")
	e.StringVar(&etcd.Prefix, "etcd-prefix", etcd.Prefix, "key prefix of cellplane's keyspace in etcd")
	e.StringVar(&etcd.CertFile, "etcd-cert", "", "client certificate for etcd (default for https endpoints: the worker's --certs-dir certificate)")
	e.StringVar(&etcd.KeyFile, "etcd-key", "", "client key for etcd (TLS)")
	e.StringVar(&etcd.CAFile, "etcd-ca", "", "CA bundle verifying etcd's certificate (default for https endpoints: --certs-dir's ca.crt)")
	e.DurationVar(&etcd.DialTimeout, "etcd-dial-timeout", etcd.DialTimeout, "how long connecting to etcd may take")

	m := pflag.NewFlagSet("mcp", pflag.ContinueOnError)
	mflags.register(m, "")

	logf := pflag.NewFlagSet("logging", pflag.ContinueOnError)
	logf.StringVar(&logLevel, "log-level", logLevel, "trace, debug, info, warn or error")
	logf.StringVar(&logFormat, "log-format", logFormat, "text or json (logs go to stderr)")

	groups := []flagGroup{{"Worker", w}, {"etcd", e}, {"MCP", m}, {"Server limits", serverLimitFlags(nil, &cfg.HTTPLimits)}, {"Logging", logf}}
	for _, g := range groups {
		cmd.Flags().AddFlagSet(g.set)
	}
	_ = cmd.MarkFlagRequired("id")
	_ = cmd.MarkFlagRequired("cell")
	cmd.SetUsageFunc(groupedUsage(groups))
	return cmd
}

func runWorker(cmd *cobra.Command, cfg mcpserver.Config, stopSignals func()) error {
	ctx := cmd.Context()
	s, err := mcpserver.Start(ctx, cfg)
	if err != nil {
		var le *mcpserver.ListenError
		if errors.As(err, &le) {
			return fmt.Errorf("--http-addr %s: %s", le.Addr, le.Reason())
		}
		return err
	}
	<-ctx.Done()
	if stopSignals != nil {
		stopSignals()
	}
	cfg.Logger.Info("shutting down", "timeout", cfg.ShutdownTimeout)
	start := time.Now()
	if err := s.Close(); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	cfg.Logger.Info("stopped", "took", time.Since(start).Round(time.Millisecond))
	return nil
}
