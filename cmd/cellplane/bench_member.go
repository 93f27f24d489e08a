package main

import (
	"github.com/spf13/cobra"

	"github.com/cellplane/cellplane/cmd/cellplane/internal/bench"
	"github.com/cellplane/cellplane/internal/logging"
	"github.com/cellplane/cellplane/internal/pki"
)

// newBenchMemberCmds are the hidden member processes of `bench cell`'s
// baselines: one etcd member, one bare-Raft member. They run until
// SIGINT or SIGTERM.
func newBenchMemberCmds(std streams) []*cobra.Command {
	var ec bench.EtcdMemberConfig
	etcdCmd := &cobra.Command{
		Use:    "etcd-member",
		Short:  "Run one member of bench cell's etcd baseline (mutual TLS, fsync on)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := ec.Validate(); err != nil {
				return usageError{err}
			}
			return bench.RunEtcdMember(cmd.Context(), ec)
		},
	}
	f := etcdCmd.Flags()
	f.StringVar(&ec.Name, "name", "", "member name")
	f.StringVar(&ec.DataDir, "data-dir", "", "data directory")
	f.StringVar(&ec.PeerURL, "peer-url", "", "https peer URL to listen on and advertise")
	f.StringVar(&ec.ClientURL, "client-url", "", "https client URL to listen on and advertise")
	f.StringVar(&ec.InitialCluster, "initial-cluster", "", "name=peer-url,... of every member")
	f.StringVar(&ec.CertFile, "cert-file", "", "member certificate (server and client usage)")
	f.StringVar(&ec.KeyFile, "key-file", "", "member key")
	f.StringVar(&ec.CAFile, "ca-file", "", "cluster CA bundle")

	var (
		rc                 bench.RaftMemberConfig
		bootstrap          string
		certsDir, certName string
		logLevel           = "warn"
	)
	raftCmd := &cobra.Command{
		Use:    "raft-member",
		Short:  "Run one member of bench cell's bare-Raft floor (raft-wal, mutual TLS, no-op state machine)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			peers, err := parsePeers(bootstrap)
			if err != nil {
				return usageErrorf("--bootstrap: %w", err)
			}
			rc.Bootstrap = peers
			if rc.Logger, err = logging.New(std.Err, logging.Options{Level: logLevel, Format: logging.FormatText}); err != nil {
				return usageError{err}
			}
			if certsDir == "" || certName == "" {
				return usageErrorf("--certs-dir and --cert-name are required (the floor runs with mutual TLS, like the cell)")
			}
			cfg := pki.DirConfig(certsDir, certName)
			cfg.Logger = rc.Logger.With("component", "pki")
			if rc.TLS, err = pki.NewSource(cfg); err != nil {
				return err
			}
			if err := rc.Validate(); err != nil {
				return usageError{err}
			}
			return bench.RunRaftMember(cmd.Context(), rc)
		},
	}
	f = raftCmd.Flags()
	f.StringVar(&rc.ID, "id", "", "Raft id (one of --bootstrap's)")
	f.StringVar(&rc.DataDir, "data-dir", "", "data directory")
	f.StringVar(&rc.RaftAddr, "raft-addr", "", "Raft transport address")
	f.StringVar(&rc.GRPCAddr, "grpc-addr", "", "gRPC front address")
	f.StringVar(&rc.HTTPAddr, "http-addr", "", "HTTPS /metrics address")
	f.StringVar(&bootstrap, "bootstrap", "", "id@raft-address,... of every voter")
	f.StringVar(&certsDir, "certs-dir", "", "directory of the cluster CA and this member's node certificate")
	f.StringVar(&certName, "cert-name", "", "base name of this member's certificate in --certs-dir")
	f.StringVar(&logLevel, "log-level", logLevel, "log level on stderr")
	return []*cobra.Command{etcdCmd, raftCmd}
}
