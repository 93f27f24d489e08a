package main

import (
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/cellplane/cellplane/controlplane"
	"github.com/cellplane/cellplane/controlplane/etcdserver"
	"github.com/cellplane/cellplane/internal/logging"
	"github.com/cellplane/cellplane/internal/pki"
)

func newControlPlaneCmd(std streams, stopSignals func()) *cobra.Command {
	cfg := controlplane.DefaultConfig()
	defaultID := cfg.ID // host-pid: not printed as the flag's default (it changes every run)
	var (
		endpoints string
		logLevel  = "info"
		logFormat = "text"
		certsDir  string
		certName  string
		insecure  bool
	)
	cmd := &cobra.Command{
		Use:   "controlplane [--data-dir DIR | --etcd-endpoints URLS]",
		Short: "Run a control-plane replica (placement, registry, workflows) on embedded or external etcd",
		Long: `Run one control-plane replica: the controller (placement of tenants on cells,
durable tenant create/delete workflows) and the admin API
cellplane.controlplane.v1.ControlPlaneService over gRPC (with health and
reflection), plus /metrics, /healthz and /readyz over HTTP.

Without --etcd-endpoints the replica embeds a single-member etcd in
--data-dir (clients, including cell nodes, reach it at --etcd-client-url).
With --etcd-endpoints it uses that cluster (production: 3 or 5 members spread
over regions), with TLS when --etcd-ca/--etcd-cert/--etcd-key are given.

Several replicas may run on one etcd: one leads the controller (an etcd
election; a killed leader is replaced within --session-ttl) and every
workflow write is a transaction guarded by its leadership key. Any replica
serves the API.

With --certs-dir the gRPC API serves mutual TLS only, with the certificate
<certs-dir>/<cert-name>.crt (a controlplane identity, made by 'cellplane cert
create-controlplane --id <id>'), and authorises every call by the caller's
certificate: admin operators may call everything, read-only operators only
the reads, cell nodes, routers and workers only GetRegistry (see
docs/security.md). The HTTP port stays plaintext. Without TLS material the
replica refuses to start unless --insecure is given: the API is then
unauthenticated (anyone who reaches --grpc-addr owns every tenant) and the
replica warns at every start.

With --certs-dir the embedded etcd serves https only (--etcd-client-url
default https://127.0.0.1:7379) with the same certificate, requires a client
certificate of the cluster's CA, and runs with etcd authentication on: each
component's certificate common name is its etcd user, created by the control
plane when the component asks it where etcd is (--controlplane): routers and
workers read only, a node writes only its own cell's registry keys. With
https --etcd-endpoints and no --etcd-cert/--etcd-ca the replica reaches an
external etcd with its own certificate and does the same there (it must be
root once authentication is on).

SIGINT or SIGTERM stops the replica gracefully (a leader resigns at once).`,
		Example: `  # A control plane with embedded etcd in ./data/cp:
  cellplane controlplane --data-dir data/cp --insecure

  # Two more replicas on the same (now external to them) etcd:
  cellplane controlplane --etcd-endpoints http://127.0.0.1:7379 --grpc-addr 127.0.0.1:7010 --http-addr 127.0.0.1:7011 --insecure
  cellplane controlplane --etcd-endpoints http://127.0.0.1:7379 --grpc-addr 127.0.0.1:7020 --http-addr 127.0.0.1:7021 --insecure

  # Then, with cellctl:
  cellctl region create us-east
  cellctl cell create use1-a --region us-east

  # With mutual TLS and authorisation by identity:
  cellplane cert create-ca --cluster prod --certs-dir certs
  cellplane cert create-controlplane --id cp1 --certs-dir certs
  cellplane cert create-operator --name alice --role admin --certs-dir certs
  cellplane controlplane --id cp1 --data-dir data/cp --certs-dir certs
  cellctl --certs-dir certs --cert-name operator.alice status`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg.EtcdEndpoints = splitList(endpoints)
			if cfg.ID == "" {
				cfg.ID = defaultID
			}
			if len(cfg.EtcdEndpoints) == 0 && cfg.DataDir == "" {
				return usageErrorf("--data-dir is required to embed etcd (or give --etcd-endpoints)")
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
					certName = "controlplane." + cfg.ID // what cert create-controlplane --id writes
				}
				pcfg := pki.DirConfig(certsDir, certName)
				pcfg.Logger = logger
				if cfg.TLS, err = pki.NewSource(pcfg); err != nil {
					return usageErrorf("--certs-dir %s --cert-name %s: %w", certsDir, certName, err)
				}
				// The embedded etcd serves mutual TLS too.
				if !cmd.Flags().Changed("etcd-client-url") {
					cfg.EmbeddedClientURL = controlplane.DefaultEmbeddedTLSClientURL
				}
				if !cmd.Flags().Changed("etcd-peer-url") {
					cfg.EmbeddedPeerURL = controlplane.DefaultEmbeddedTLSPeerURL
				}
			}
			if err := cfg.Validate(); err != nil {
				return usageErrorf("invalid configuration: %w", err)
			}
			if insecure {
				warnInsecure(logger, "the control plane", "grpc_addr", cfg.GRPCAddr)
			}
			return runControlPlane(cmd, cfg, stopSignals)
		},
	}
	cp := pflag.NewFlagSet("control plane", pflag.ContinueOnError)
	cp.StringVar(&cfg.ID, "id", "", "replica id, unique among replicas (default: <host>-<pid>)")
	cp.StringVar(&cfg.DataDir, "data-dir", "", "directory of the embedded etcd's data; created if missing")
	cp.StringVar(&cfg.GRPCAddr, "grpc-addr", cfg.GRPCAddr, "address the gRPC admin API listens on")
	cp.StringVar(&cfg.HTTPAddr, "http-addr", cfg.HTTPAddr, "address of /metrics, /healthz and /readyz")
	cp.DurationVar(&cfg.ShutdownTimeout, "shutdown-timeout", cfg.ShutdownTimeout, "how long a graceful shutdown may drain calls")

	tlsf := pflag.NewFlagSet("TLS", pflag.ContinueOnError)
	tlsf.StringVar(&certsDir, "certs-dir", "", "directory of ca.crt and this replica's certificate (cellplane cert): serve the gRPC API over mutual TLS and authorise calls by identity; required unless --insecure")
	tlsf.StringVar(&certName, "cert-name", "", "base name of the certificate and key files in --certs-dir (default controlplane.<id>)")
	addInsecureFlag(tlsf, &insecure, "its gRPC API is")

	etcd := pflag.NewFlagSet("etcd", pflag.ContinueOnError)
	etcd.StringVar(&endpoints, "etcd-endpoints", "", "comma-separated client URLs of an external etcd cluster (default: embed one)")
	etcd.StringVar(&cfg.EtcdPrefix, "etcd-prefix", cfg.EtcdPrefix, "key prefix of cellplane's keyspace")
	etcd.StringVar(&cfg.EtcdCAFile, "etcd-ca", "", "CA bundle verifying etcd's certificate (default for https endpoints: --certs-dir's ca.crt)")
	etcd.StringVar(&cfg.EtcdCertFile, "etcd-cert", "", "client certificate for etcd, with --etcd-key (default for https endpoints: the replica's --certs-dir certificate)")
	etcd.StringVar(&cfg.EtcdKeyFile, "etcd-key", "", "client key for etcd (with --etcd-cert)")
	etcd.DurationVar(&cfg.EtcdDialTimeout, "etcd-dial-timeout", cfg.EtcdDialTimeout, "how long to try reaching etcd at start")
	etcd.StringVar(&cfg.EmbeddedClientURL, "etcd-client-url", cfg.EmbeddedClientURL, "embedded etcd: client URL to listen on (https://127.0.0.1:7379 with --certs-dir)")
	etcd.StringVar(&cfg.EmbeddedPeerURL, "etcd-peer-url", cfg.EmbeddedPeerURL, "embedded etcd: peer URL to listen on (https://127.0.0.1:7380 with --certs-dir)")
	h := etcdserver.DefaultConfig()
	cfg.EmbeddedEtcdHealth = controlplane.EtcdHealth{
		AutoCompactionMode: h.AutoCompactionMode, AutoCompactionRetention: h.AutoCompactionRetention,
		QuotaBackendBytes: h.QuotaBackendBytes, DefragInterval: h.DefragInterval,
	}
	etcd.StringVar(&cfg.EmbeddedEtcdHealth.AutoCompactionMode, "etcd-auto-compaction-mode", h.AutoCompactionMode, "embedded etcd: compaction mode, periodic or revision")
	etcd.StringVar(&cfg.EmbeddedEtcdHealth.AutoCompactionRetention, "etcd-auto-compaction-retention", h.AutoCompactionRetention, "embedded etcd: history kept (periodic: a duration; revision: a count); 0 turns compaction off (never in production)")
	etcd.Int64Var(&cfg.EmbeddedEtcdHealth.QuotaBackendBytes, "etcd-quota-backend-bytes", h.QuotaBackendBytes, "embedded etcd: backend quota; beyond it the NOSPACE alarm refuses writes")
	etcd.DurationVar(&cfg.EmbeddedEtcdHealth.DefragInterval, "etcd-defrag-interval", h.DefragInterval, "embedded etcd: how often to defragment when at least 64 MiB and half the file are free (negative: never; each one blocks etcd while it runs)")

	ctl := pflag.NewFlagSet("controller", pflag.ContinueOnError)
	ctl.DurationVar(&cfg.Controller.SessionTTL, "session-ttl", cfg.Controller.SessionTTL, "controller leadership lease: a killed leader is replaced after about this long")
	ctl.IntVar(&cfg.Controller.MaxConcurrentWorkflows, "max-concurrent-workflows", cfg.Controller.MaxConcurrentWorkflows, "workflows the leader drives at once")
	ctl.DurationVar(&cfg.Controller.CellCallTimeout, "cell-call-timeout", cfg.Controller.CellCallTimeout, "bound on one call to a cell")
	ctl.DurationVar(&cfg.API.WorkflowWait, "workflow-wait", cfg.API.WorkflowWait, "how long tenant create/delete calls wait for their workflow when the caller set no deadline")
	ctl.IntVar(&cfg.API.MaxPageSize, "max-page-size", cfg.API.MaxPageSize, "largest ListTenants page")
	ctl.Uint64Var(&cfg.Controller.Moves.LagBound, "move-lag-bound", cfg.Controller.Moves.LagBound, "a move fences its source once the target is this many change events behind or fewer (the write pause is about applying them)")
	ctl.DurationVar(&cfg.Controller.Moves.CleanupGrace, "move-cleanup-grace", cfg.Controller.Moves.CleanupGrace, "how long a moved tenant's old copy is kept after the flip before it is deleted")
	ctl.IntVar(&cfg.Controller.Moves.MaxConcurrent, "max-concurrent-moves", cfg.Controller.Moves.MaxConcurrent, "moves the controller drives at once (more wait in PREPARING)")
	ctl.IntVar(&cfg.Controller.Moves.DrainConcurrency, "drain-concurrency", cfg.Controller.Moves.DrainConcurrency, "default number of moves a cell drain runs at once")
	ctl.DurationVar(&cfg.Controller.Failover.LeaseMargin, "failover-lease-margin", cfg.Controller.Failover.LeaseMargin, "an emergency promotion waits this long after the old cell's authority lease expired")
	ctl.BoolVar(&cfg.Controller.AutoPromote.Enabled, "auto-promote", false, "promote the standbys of a cell's tenants when the cell stays unhealthy (may lose the writes they have not received); with --auto-promote-after and --auto-promote-regions, the policy until 'cellctl failover-policy set' stores one, which then wins")
	ctl.DurationVar(&cfg.Controller.AutoPromote.UnhealthyFor, "auto-promote-after", cfg.Controller.AutoPromote.UnhealthyFor, "how long a cell must stay unhealthy before --auto-promote acts")
	ctl.DurationVar(&cfg.Controller.AutoPromote.ResumeGrace, "auto-promote-resume-grace", cfg.Controller.AutoPromote.ResumeGrace, "no --auto-promote promotion for this long after the leader regained sight of etcd (its term's start, an etcd outage): cells re-register first (0: none)")
	ctl.StringSliceVar(&cfg.Controller.AutoPromote.Regions, "auto-promote-regions", nil, "regions whose cells --auto-promote covers (comma-separated; empty: all)")
	ctl.DurationVar(&cfg.Controller.TokenKeys.Period, "token-key-rotation", cfg.Controller.TokenKeys.Period, "how long one tenant-token signing key signs before the next takes over (keys live in etcd under tokenkeys/)")
	ctl.DurationVar(&cfg.Controller.TokenKeys.Lead, "token-key-lead", cfg.Controller.TokenKeys.Lead, "how long before it signs a new tenant-token key is published (the time cells and routers have to see it)")

	logf := pflag.NewFlagSet("logging", pflag.ContinueOnError)
	logf.StringVar(&logLevel, "log-level", logLevel, "trace, debug, info, warn or error")
	logf.StringVar(&logFormat, "log-format", logFormat, "text or json (logs go to stderr)")

	groups := []flagGroup{{"Control plane", cp}, {"TLS", tlsf}, {"etcd", etcd}, {"Controller and API", ctl}, {"Server limits", serverLimitFlags(&cfg.GRPCLimits, &cfg.HTTPLimits)}, {"Logging", logf}}
	for _, g := range groups {
		cmd.Flags().AddFlagSet(g.set)
	}
	cmd.SetUsageFunc(groupedUsage(groups))
	return cmd
}

// runControlPlane starts the replica and waits for a signal (ctx).
func runControlPlane(cmd *cobra.Command, cfg controlplane.Config, stopSignals func()) error {
	ctx := cmd.Context()
	s, err := controlplane.Start(ctx, cfg)
	if err != nil {
		var le *controlplane.ListenError
		switch {
		case errors.As(err, &le):
			return fmt.Errorf("--%s-addr %s: %s", le.Name, le.Addr, le.Reason())
		case errors.Is(err, etcdserver.ErrAddrInUse):
			return fmt.Errorf("embedded etcd: --etcd-client-url %s or --etcd-peer-url %s is already in use (another etcd or control plane?)", cfg.EmbeddedClientURL, cfg.EmbeddedPeerURL)
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
