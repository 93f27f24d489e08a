package main

import (
	"context"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	cpv1 "github.com/cellplane/cellplane/proto/cellplane/controlplane/v1"
)

func newRegionCmd(a *app) *cobra.Command {
	return group("region", "List, create, update and delete regions",
		`A region is a failure domain (a cloud region, a data centre). Every cell
lives in one region, and every tenant has a home region its owner cell is in.`,
		`  cellctl region list
  cellctl region create eu-west-1 --description "Ireland"
  cellctl region update eu-west-1 --description "Dublin"
  cellctl region delete eu-west-1`,
		newRegionListCmd(a),
		newRegionCreateCmd(a),
		newRegionUpdateCmd(a),
		newRegionDeleteCmd(a),
	)
}

func newRegionListCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List the regions",
		Long:    `List the regions registered with the control plane, by name.`,
		Example: `  cellctl region list
  cellctl region list -o yaml`,
		Args: exactArgs(),
		RunE: func(cmd *cobra.Command, args []string) error {
			return do(a, cmd.Context(), func(ctx context.Context, api cpv1.ControlPlaneServiceClient) (*cpv1.ListRegionsResponse, error) {
				return api.ListRegions(ctx, &cpv1.ListRegionsRequest{})
			}, func(w io.Writer, resp *cpv1.ListRegionsResponse) error {
				t := newTable(w, "REGION", "DESCRIPTION", "CREATED")
				for _, r := range resp.GetRegions() {
					t.row(r.GetName(), r.GetDescription(), timeString(r.GetCreateTime()))
				}
				return t.flush()
			})
		},
	}
}

func newRegionCreateCmd(a *app) *cobra.Command {
	var description string
	cmd := &cobra.Command{
		Use:   "create <name>",
		Short: "Register a region",
		Long: `Register a region (a failure domain). Its name is what cells and tenants
refer to with --region; it cannot be changed later.`,
		Example: `  cellctl region create eu-west-1 --description "Ireland"`,
		Args:    exactArgs("name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return do(a, cmd.Context(), func(ctx context.Context, api cpv1.ControlPlaneServiceClient) (*cpv1.CreateRegionResponse, error) {
				return api.CreateRegion(ctx, &cpv1.CreateRegionRequest{Name: args[0], Description: description})
			}, func(w io.Writer, resp *cpv1.CreateRegionResponse) error {
				_, err := fmt.Fprintf(w, "region %s created\n", resp.GetRegion().GetName())
				return err
			})
		},
	}
	cmd.Flags().StringVar(&description, "description", "", "free text shown in listings")
	return cmd
}

func newRegionUpdateCmd(a *app) *cobra.Command {
	var description string
	cmd := &cobra.Command{
		Use:   "update <name> --description <text>",
		Short: "Change a region's description",
		Long: `Change a region's description (the only thing of a region that can change;
its name is fixed). An empty --description clears it.`,
		Example: `  cellctl region update eu-west-1 --description "Dublin"`,
		Args:    exactArgs("name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if !cmd.Flags().Changed("description") {
				return usageErrorf("--description is required (an empty one clears it)")
			}
			return do(a, cmd.Context(), func(ctx context.Context, api cpv1.ControlPlaneServiceClient) (*cpv1.UpdateRegionResponse, error) {
				return api.UpdateRegion(ctx, &cpv1.UpdateRegionRequest{Name: args[0], Description: description})
			}, func(w io.Writer, resp *cpv1.UpdateRegionResponse) error {
				_, err := fmt.Fprintf(w, "region %s updated\n", resp.GetRegion().GetName())
				return err
			})
		},
	}
	cmd.Flags().StringVar(&description, "description", "", "the new description (required)")
	return cmd
}

func newRegionDeleteCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "delete <name>",
		Short: "Delete an empty region",
		Long: `Delete a region. It must be empty: while a cell is in it or a tenant has it
as its home region the control plane refuses (REGION_NOT_EMPTY, naming
what is left), and nothing is deleted.`,
		Example: `  cellctl region delete eu-west-1`,
		Args:    exactArgs("name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return do(a, cmd.Context(), func(ctx context.Context, api cpv1.ControlPlaneServiceClient) (*cpv1.DeleteRegionResponse, error) {
				return api.DeleteRegion(ctx, &cpv1.DeleteRegionRequest{Name: args[0]})
			}, func(w io.Writer, _ *cpv1.DeleteRegionResponse) error {
				_, err := fmt.Fprintf(w, "region %s deleted\n", args[0])
				return err
			})
		},
	}
}
