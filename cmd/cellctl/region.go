package main

import (
	"context"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	cpv1 "github.com/cellplane/cellplane/proto/cellplane/controlplane/v1"
)

func newRegionCmd(a *app) *cobra.Command {
	return group("region", "List and create regions",
		`A region is a failure domain (a cloud region, a data centre). Every cell
lives in one region, and every tenant has a home region its owner cell is in.`,
		`  cellctl region list
  cellctl region create eu-west-1 --description "Ireland"`,
		newRegionListCmd(a),
		newRegionCreateCmd(a),
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
