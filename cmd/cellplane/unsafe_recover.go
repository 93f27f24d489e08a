package main

import (
	"fmt"
	"log/slog"

	"github.com/spf13/cobra"

	"github.com/cellplane/cellplane/cells/store"
	"github.com/cellplane/cellplane/internal/logging"
)

// confirmFlag is the flag unsafe-recover refuses to run without.
const confirmFlag = "i-accept-losing-acknowledged-writes"

func newUnsafeRecoverCmd(std streams) *cobra.Command {
	var (
		cfg     store.RecoverConfig
		confirm bool
	)
	cmd := &cobra.Command{
		Use:   "unsafe-recover --id ID --data-dir DIR --" + confirmFlag,
		Short: "Rebuild a cell that lost its quorum's data from one surviving node (unsafe)",
		Long: `Rewrite the Raft configuration of a stopped node's data dir to that node alone,
like etcd's --force-new-cluster (hashicorp/raft's RecoverCluster).

Use it only when a cell lost the data of a majority of its voters: a node that
comes back without its data dir joins as a new member and never votes under
its old Raft id, so such a cell elects no leader and refuses to serve, rather
than elect one from empty logs (docs/reliability.md, "Raft amnesia (H1)").
Stop every node of the cell, run this on the survivor with the most recent
data (compare last_log_index in 'cellctl' or the logs), then start it: it leads
the cell alone with its data, and the other nodes, started with empty data
dirs, rejoin as new members and become voters once caught up.

It is unsafe: writes acknowledged by a quorum that did not include this node
are lost, and running it on two survivors of the same cell makes two diverged
cells. It refuses to run without --` + confirmFlag + `.`,
		Example: `  cellplane cell unsafe-recover --id n1 --data-dir /var/lib/cellplane/n1 --` + confirmFlag,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if cfg.NodeID == "" || cfg.DataDir == "" {
				return usageErrorf("--id and --data-dir are required")
			}
			if !confirm {
				return usageErrorf("refusing to rewrite the cell's Raft configuration without --%s: this may lose acknowledged writes", confirmFlag)
			}
			cfg.Confirm = true
			cfg.Logger = slog.New(logging.NewHandler(std.Err, logging.FormatText, slog.LevelInfo, false))
			res, err := store.UnsafeRecover(cfg)
			if err != nil {
				return err
			}
			fmt.Fprintf(std.Out, "recovered: %s (raft id %s) is now the only voter at %s, last index %d; dropped %v\n",
				cfg.NodeID, res.RaftID, res.RaftAddr, res.LastIndex, res.Dropped)
			fmt.Fprintln(std.Out, "start the node; start the other nodes with empty data dirs: they rejoin as new members")
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.NodeID, "id", "", "the node id of the data dir")
	f.StringVar(&cfg.DataDir, "data-dir", "", "the stopped node's data dir")
	f.StringVar(&cfg.RaftAddr, "raft-addr", "", "the Raft address the node will serve on (default: its address in the current configuration)")
	f.BoolVar(&confirm, confirmFlag, false, "confirm that writes only the lost members held may be lost")
	// Not the node's grouped usage, which it would inherit.
	cmd.SetUsageFunc(func(c *cobra.Command) error {
		_, err := fmt.Fprintf(c.OutOrStderr(), "Usage:\n  %s\n\nExamples:\n%s\n\nFlags:\n%s", c.UseLine(), c.Example, c.LocalFlags().FlagUsages())
		return err
	})
	return cmd
}
