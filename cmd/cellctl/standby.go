package main

import (
	"context"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	cpv1 "github.com/cellplane/cellplane/proto/cellplane/controlplane/v1"
)

func newStandbyCmd(a *app) *cobra.Command {
	return group("standby", "Give a tenant a standby cell in another region, or remove it",
		`A tenant's standby is a cell in another region that keeps a replica of the
tenant's data, fed by the owner's change stream (itself 3-way replicated by
its own Raft group). It refuses client traffic; a failover promotes it. Its
lag behind the owner, shown by 'cellctl tenant get', is what an emergency
promotion could lose.`,
		`  cellctl tenant standby set acme --region eu-west-1
  cellctl tenant standby set acme --cell euw1-b
  cellctl tenant standby clear acme`,
		newStandbySetCmd(a),
		newStandbyClearCmd(a),
	)
}

func newStandbySetCmd(a *app) *cobra.Command {
	var region, cell string
	cmd := &cobra.Command{
		Use:   "set <tenant> (--region <region> | --cell <cell>)",
		Short: "Give a tenant a standby cell",
		Long: `Give a tenant a standby: the least loaded ACTIVE cell of --region with room,
or --cell. It must be in another region than the owner. The command returns
once the standby is recorded; the standby cell then imports a copy of the
tenant's data and follows its changes ('cellctl tenant get' shows the lag).
A tenant has at most one standby: clear it before choosing another.`,
		Example: `  cellctl tenant standby set acme --region eu-west-1
  cellctl tenant standby set acme --cell euw1-b`,
		Args: exactArgs("tenant"),
		RunE: func(cmd *cobra.Command, args []string) error {
			switch {
			case region == "" && cell == "":
				return usageErrorf("--region or --cell is required")
			case region != "" && cell != "":
				return usageErrorf("--region and --cell are exclusive")
			}
			return do(a, cmd.Context(), func(ctx context.Context, api cpv1.ControlPlaneServiceClient) (*cpv1.SetStandbyResponse, error) {
				return api.SetStandby(ctx, &cpv1.SetStandbyRequest{Tenant: args[0], Region: region, Cell: cell})
			}, func(w io.Writer, resp *cpv1.SetStandbyResponse) error {
				t := resp.GetTenant()
				_, err := fmt.Fprintf(w, "tenant %s has standby %s (owner %s, epoch %d); it copies the data and follows the owner: 'cellctl tenant get %s' shows its lag\n",
					t.GetId(), t.GetStandbyCell(), t.GetCell(), t.GetEpoch(), t.GetId())
				return err
			})
		},
	}
	cmd.Flags().StringVar(&region, "region", "", "the region to pick the standby cell in")
	cmd.Flags().StringVar(&cell, "cell", "", "the standby cell")
	return cmd
}

func newStandbyClearCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "clear <tenant>",
		Short: "Remove a tenant's standby and its copy",
		Long: `Remove a tenant's standby: the standby cell deletes its copy of the
tenant's data, then the placement forgets it. The command returns when
both are done. Without a standby the tenant cannot be failed over.`,
		Example: `  cellctl tenant standby clear acme`,
		Args:    exactArgs("tenant"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.connect()
			if err != nil {
				return err
			}
			defer c.Close()
			before, err := call(cmd.Context(), c, func(ctx context.Context, api cpv1.ControlPlaneServiceClient) (*cpv1.GetTenantResponse, error) {
				return api.GetTenant(ctx, &cpv1.GetTenantRequest{Id: args[0]})
			})
			if err != nil {
				return err
			}
			resp, err := call(cmd.Context(), c, func(ctx context.Context, api cpv1.ControlPlaneServiceClient) (*cpv1.ClearStandbyResponse, error) {
				return api.ClearStandby(ctx, &cpv1.ClearStandbyRequest{Tenant: args[0]})
			})
			if err != nil {
				return err
			}
			return a.print(resp, func(w io.Writer) error {
				if old := before.GetTenant().GetStandbyCell(); old != "" {
					_, err := fmt.Fprintf(w, "standby %s of tenant %s removed\n", old, args[0])
					return err
				}
				_, err := fmt.Fprintf(w, "tenant %s has no standby\n", args[0])
				return err
			})
		},
	}
}

// standbyLine formats a GetTenant's replication for people.
func standbyLine(r *cpv1.ReplicationLag) string {
	s := fmt.Sprintf("%d event(s) behind (%s), applied tseq %d", r.GetLagEvents(), r.GetLag().AsDuration(), r.GetAppliedTseq())
	if r.GetState() != "" {
		s += ", " + r.GetState()
	}
	if r.GetLastError() != "" {
		s += ", last error: " + r.GetLastError()
	}
	return s
}
