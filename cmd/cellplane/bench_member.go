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
		Use:   "etcd-member",
		Short: "Run one member of bench cell's etcd baseline (mutual TLS, fsync on)",
		Long: `Run one member of the 3-member etcd baseline of 'cellplane bench cell', which
starts it: the embedded etcd the control plane uses, fsync on, TLS with
client-certificate authentication on its peer and client URLs. It runs until
SIGINT or SIGTERM. Not for production use.`,
		Example: `  cellplane bench etcd-member --name etcd1 --data-dir d/etcd1 \
      --peer-url https://127.0.0.1:7301 --client-url https://127.0.0.1:7302 \
      --initial-cluster etcd1=https://127.0.0.1:7301,etcd2=https://127.0.0.1:7311,etcd3=https://127.0.0.1:7321 \
      --cert-file certs/controlplane.etcd1.crt --key-file certs/controlplane.etcd1.key --ca-file certs/ca.crt`,
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
		Use:   "raft-member",
		Short: "Run one member of bench cell's bare-Raft floor (raft-wal, mutual TLS, no-op state machine)",
		Long: `Run one member of the bare-Raft floor of 'cellplane bench cell', which starts
it: the cell's hashicorp/raft, raft-wal, Raft settings and network transport
(mutual TLS, node certificates of --certs-dir) with a no-op state machine,
behind a gRPC ContextService.Append that proposes the request's bytes as one
entry (and CellService.GetStatus), and /metrics over HTTPS. Callers need a
certificate of the cluster CA. It runs until SIGINT or SIGTERM. Not for
production use.`,
		Example: `  cellplane bench raft-member --id n1 --data-dir d/n1 --raft-addr 127.0.0.1:7401 \
      --grpc-addr 127.0.0.1:7402 --http-addr 127.0.0.1:7403 \
      --bootstrap n1@127.0.0.1:7401,n2@127.0.0.1:7411,n3@127.0.0.1:7421 \
      --certs-dir certs --cert-name node.r1.c1.n1`,
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
