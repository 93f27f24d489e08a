package main

import (
	"context"
	"fmt"
	"io"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/proto"

	cpv1 "github.com/cellplane/cellplane/proto/cellplane/controlplane/v1"
)

func newCellCmd(a *app) *cobra.Command {
	return group("cell", "List, inspect, create, update, cordon, drain and delete cells",
		`A cell is a Raft-replicated store of 1, 3, 5 or 7 nodes (3 or 5 in
production) in one region that owns a set of tenants. Creating a cell registers it; its nodes then register themselves
and bootstrap the Raft group once the expected number of members is there.
A cordoned cell keeps serving its tenants but takes no new ones.`,
		`  cellctl cell list --region eu-west-1
  cellctl cell create eu1-a --region eu-west-1 --members 3 --max-tenants 1000
  cellctl cell get eu1-a
  cellctl cell cordon eu1-a
  cellctl cell update eu1-a --max-tenants 2000
  cellctl cell delete eu1-a`,
		newCellListCmd(a),
		newCellGetCmd(a),
		newCellCreateCmd(a),
		newCellUpdateCmd(a),
		newCellDeleteCmd(a),
		newCellCordonCmd(a, true),
		newCellCordonCmd(a, false),
		newCellFailoverCmd(a), newCellPromoteCmd(a), // failover.go
		newCellDrainCmd(a), // move.go
	)
}

func newCellListCmd(a *app) *cobra.Command {
	var region string
	cmd := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List cells with their live status",
		Long: `List the cells, optionally only one region's, with their state, health,
Raft leader, live members out of the expected ones and tenant count (out of
the maximum, when the cell has one).`,
		Example: `  cellctl cell list
  cellctl cell list --region eu-west-1 -o json`,
		Args: exactArgs(),
		RunE: func(cmd *cobra.Command, args []string) error {
			return do(a, cmd.Context(), func(ctx context.Context, api cpv1.ControlPlaneServiceClient) (*cpv1.ListCellsResponse, error) {
				return api.ListCells(ctx, &cpv1.ListCellsRequest{Region: region})
			}, func(w io.Writer, resp *cpv1.ListCellsResponse) error {
				return writeCells(w, resp.GetCells(), true)
			})
		},
	}
	cmd.Flags().StringVar(&region, "region", "", "only the cells of this region")
	return cmd
}

func newCellGetCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "get <id>",
		Short: "Show one cell, its leader and its nodes",
		Long: `Show one cell: its state and health, capacity and load, the published Raft
leader, and the nodes registered for it now (Raft members and stand-alone
MCP workers).`,
		Example: `  cellctl cell get eu1-a`,
		Args:    exactArgs("id"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return do(a, cmd.Context(), func(ctx context.Context, api cpv1.ControlPlaneServiceClient) (*cpv1.GetCellResponse, error) {
				return api.GetCell(ctx, &cpv1.GetCellRequest{Id: args[0]})
			}, func(w io.Writer, resp *cpv1.GetCellResponse) error { return writeCell(w, resp.GetCell()) })
		},
	}
}

func writeCell(w io.Writer, cs *cpv1.CellStatus) error {
	cell := cs.GetCell()
	f := newFields(w)
	f.add("Cell", cell.GetId())
	f.add("Region", cell.GetRegion())
	f.add("State", cellState(cell.GetState()))
	f.add("Health", cellHealth(cs.GetHealth()))
	f.add("Members", members(cs)+" live/expected")
	leader := ""
	if l := cs.GetLeader(); l.GetNodeId() != "" {
		leader = fmt.Sprintf("%s (%s, term %d, since %s)", l.GetNodeId(), l.GetGrpcAddr(), l.GetTerm(), timeString(l.GetSince()))
	}
	f.add("Leader", leader)
	f.add("Tenants", fmt.Sprintf("%d (max %s)", cs.GetLoad().GetTenants(), limit(cell.GetCapacity().GetMaxTenants(), "unbounded")))
	f.add("Bytes", fmt.Sprintf("%d (max %s)", cs.GetLoad().GetBytes(), limit(cell.GetCapacity().GetMaxBytes(), "unbounded")))
	f.add("Created", timeString(cell.GetCreateTime()))
	if err := f.flush(); err != nil {
		return err
	}
	if len(cs.GetNodes()) == 0 {
		_, err := fmt.Fprintln(w, "\nNo node registered.")
		return err
	}
	fmt.Fprintln(w)
	t := newTable(w, "NODE", "ROLE", "GRPC", "RAFT", "HTTP", "VERSION", "STARTED")
	for _, n := range cs.GetNodes() {
		t.row(n.GetId(), enumName(n.GetRole().String(), "NODE_ROLE_"), n.GetGrpcAddr(), n.GetRaftAddr(),
			n.GetHttpAddr(), n.GetVersion(), timeString(n.GetStartTime()))
	}
	return t.flush()
}

func newCellCreateCmd(a *app) *cobra.Command {
	var (
		region               string
		members              uint32
		maxTenants, maxBytes uint64
	)
	cmd := &cobra.Command{
		Use:   "create <id> --region <region>",
		Short: "Register a cell in a region",
		Long: `Register a cell in a region. Its nodes ('cellplane cell') then register with
the control plane, and the cell's Raft group bootstraps once --members of
them are there. --max-tenants and --max-bytes bound what placement puts on
the cell (0: unbounded).`,
		Example: `  cellctl cell create eu1-a --region eu-west-1
  cellctl cell create eu1-b --region eu-west-1 --members 5 --max-tenants 1000 --max-bytes 500000000000`,
		Args: exactArgs("id"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if region == "" {
				return usageErrorf("--region is required")
			}
			if !validMembers(members) {
				return usageErrorf("--members %d: want 1, 3, 5 or 7", members)
			}
			c, err := a.connect()
			if err != nil {
				return err
			}
			defer c.Close()
			req := &cpv1.CreateCellRequest{
				Id:              args[0],
				Region:          region,
				ExpectedMembers: members,
				Capacity:        &cpv1.CellCapacity{MaxTenants: maxTenants, MaxBytes: maxBytes},
			}
			resp, err := call(cmd.Context(), c, func(ctx context.Context, api cpv1.ControlPlaneServiceClient) (*cpv1.CreateCellResponse, error) {
				return api.CreateCell(ctx, req)
			})
			if err != nil {
				return err
			}
			return a.print(resp, func(w io.Writer) error {
				cell := resp.GetCell()
				_, err := fmt.Fprintf(w, "cell %s created in region %s; start its %d nodes to bootstrap it\n",
					cell.GetId(), cell.GetRegion(), cell.GetExpectedMembers())
				return err
			})
		},
	}
	cmd.Flags().StringVar(&region, "region", "", "the region of the cell (required)")
	cmd.Flags().Uint32Var(&members, "members", 3, "number of Raft members the cell bootstraps with: 1, 3, 5 or 7")
	cmd.Flags().Uint64Var(&maxTenants, "max-tenants", 0, "most tenants placement puts on the cell (0: unbounded)")
	cmd.Flags().Uint64Var(&maxBytes, "max-bytes", 0, "most bytes placement lets the cell hold (0: unbounded)")
	return cmd
}

// validMembers reports whether n is a Raft group size the control plane
// accepts: odd, from 1 (no fault tolerance, for development) to 7.
func validMembers(n uint32) bool {
	return n == 1 || n == 3 || n == 5 || n == 7
}

func newCellCordonCmd(a *app, cordon bool) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "cordon <id>",
		Short: "Stop placing new tenants on a cell",
		Long: `Cordon a cell: it keeps serving the tenants it has, and placement puts no new
tenant on it. 'cellctl cell uncordon' undoes it.`,
		Example: `  cellctl cell cordon eu1-a`,
	}
	if !cordon {
		cmd.Use = "uncordon <id>"
		cmd.Short = "Let a cordoned cell take new tenants again"
		cmd.Long = `Uncordon a cell: placement may put new tenants on it again.`
		cmd.Example = `  cellctl cell uncordon eu1-a`
	}
	cmd.Args = exactArgs("id")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		c, err := a.connect()
		if err != nil {
			return err
		}
		defer c.Close()
		var resp interface {
			proto.Message
			GetCell() *cpv1.Cell
		}
		if cordon {
			resp, err = call(cmd.Context(), c, func(ctx context.Context, api cpv1.ControlPlaneServiceClient) (*cpv1.CordonCellResponse, error) {
				return api.CordonCell(ctx, &cpv1.CordonCellRequest{Id: args[0]})
			})
		} else {
			resp, err = call(cmd.Context(), c, func(ctx context.Context, api cpv1.ControlPlaneServiceClient) (*cpv1.UncordonCellResponse, error) {
				return api.UncordonCell(ctx, &cpv1.UncordonCellRequest{Id: args[0]})
			})
		}
		if err != nil {
			return err
		}
		return a.print(resp, func(w io.Writer) error {
			_, err := fmt.Fprintf(w, "cell %s is %s\n", resp.GetCell().GetId(), cellState(resp.GetCell().GetState()))
			return err
		})
	}
	return cmd
}

func newCellUpdateCmd(a *app) *cobra.Command {
	var (
		maxTenants, maxBytes uint64
		state                string
	)
	cmd := &cobra.Command{
		Use:   "update <id> [--max-tenants N] [--max-bytes N] [--state active|cordoned]",
		Short: "Change a cell's capacity or move it between ACTIVE and CORDONED",
		Long: `Change a cell's capacity (--max-tenants, --max-bytes; 0: unbounded; a flag
not given keeps its value) and/or its state between ACTIVE and CORDONED.
Lowering the capacity below the cell's load moves nothing: placement only
stops adding to it. The state of a DRAINING or DOWN cell is never changed
by an update (CELL_NOT_ACTIVE): a drain is ended on purpose with 'cellctl
cell uncordon', a DOWN cell changes through failover. Its capacity may
still be changed.`,
		Example: `  cellctl cell update eu1-a --max-tenants 2000
  cellctl cell update eu1-a --state cordoned
  cellctl cell update eu1-a --max-bytes 0 --state active`,
		Args: exactArgs("id"),
		RunE: func(cmd *cobra.Command, args []string) error {
			req := &cpv1.UpdateCellRequest{Id: args[0]}
			switch state {
			case "":
			case "active":
				req.State = cpv1.CellState_CELL_STATE_ACTIVE
			case "cordoned":
				req.State = cpv1.CellState_CELL_STATE_CORDONED
			default:
				return usageErrorf("--state %q: want active or cordoned (a drain: 'cellctl cell drain')", state)
			}
			f := cmd.Flags()
			if !f.Changed("max-tenants") && !f.Changed("max-bytes") && req.State == cpv1.CellState_CELL_STATE_UNSPECIFIED {
				return usageErrorf("nothing to change: give --max-tenants, --max-bytes or --state")
			}
			c, err := a.connect()
			if err != nil {
				return err
			}
			defer c.Close()
			if f.Changed("max-tenants") || f.Changed("max-bytes") {
				// The capacity is replaced as a whole: keep what is not given.
				cur, err := call(cmd.Context(), c, func(ctx context.Context, api cpv1.ControlPlaneServiceClient) (*cpv1.GetCellResponse, error) {
					return api.GetCell(ctx, &cpv1.GetCellRequest{Id: args[0]})
				})
				if err != nil {
					return err
				}
				req.Capacity = proto.Clone(cur.GetCell().GetCell().GetCapacity()).(*cpv1.CellCapacity)
				if req.Capacity == nil {
					req.Capacity = &cpv1.CellCapacity{}
				}
				if f.Changed("max-tenants") {
					req.Capacity.MaxTenants = maxTenants
				}
				if f.Changed("max-bytes") {
					req.Capacity.MaxBytes = maxBytes
				}
			}
			resp, err := call(cmd.Context(), c, func(ctx context.Context, api cpv1.ControlPlaneServiceClient) (*cpv1.UpdateCellResponse, error) {
				return api.UpdateCell(ctx, req)
			})
			if err != nil {
				return err
			}
			return a.print(resp, func(w io.Writer) error {
				cl := resp.GetCell()
				_, err := fmt.Fprintf(w, "cell %s is %s (max tenants %s, max bytes %s)\n", cl.GetId(), cellState(cl.GetState()),
					limit(cl.GetCapacity().GetMaxTenants(), "unbounded"), limit(cl.GetCapacity().GetMaxBytes(), "unbounded"))
				return err
			})
		},
	}
	cmd.Flags().Uint64Var(&maxTenants, "max-tenants", 0, "most tenants placement puts on the cell (0: unbounded)")
	cmd.Flags().Uint64Var(&maxBytes, "max-bytes", 0, "most bytes placement lets the cell hold (0: unbounded)")
	cmd.Flags().StringVar(&state, "state", "", "active or cordoned")
	_ = cmd.RegisterFlagCompletionFunc("state", cobra.FixedCompletions([]string{"active", "cordoned"}, cobra.ShellCompDirectiveNoFileComp))
	return cmd
}

func newCellDeleteCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "delete <id>",
		Short: "Delete an empty cell",
		Long: `Delete a cell's records. It must be empty: while it owns a tenant or holds
a standby, a create, move, drain or failover in progress names it, or one
of its nodes is still registered, the control plane refuses (CELL_NOT_EMPTY,
naming what is left) and nothing is deleted. Drain it first ('cellctl cell
drain'), move standbys away, then stop its nodes.`,
		Example: `  cellctl cell drain eu1-a --wait
  cellctl cell delete eu1-a`,
		Args: exactArgs("id"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return do(a, cmd.Context(), func(ctx context.Context, api cpv1.ControlPlaneServiceClient) (*cpv1.DeleteCellResponse, error) {
				return api.DeleteCell(ctx, &cpv1.DeleteCellRequest{Id: args[0]})
			}, func(w io.Writer, _ *cpv1.DeleteCellResponse) error {
				_, err := fmt.Fprintf(w, "cell %s deleted\n", args[0])
				return err
			})
		},
	}
}
