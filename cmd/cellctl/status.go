package main

import (
	"context"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	cpv1 "github.com/cellplane/cellplane/proto/cellplane/controlplane/v1"
)

func newStatusCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "status",
		Short: "Show the topology: regions, cells and the controller",
		Long: `Show the whole topology as the control plane's registry sees it now: the
regions, every cell with its state, health, Raft leader, live members out of
the expected ones and tenant count, then the controller leader and the number
of workflows (tenant creations and deletions) not finished yet.

A cell's STATE is set by operators (ACTIVE, CORDONED, DRAINING, DOWN); its
HEALTH is derived from the registry: HEALTHY (leader and every member alive),
DEGRADED (leader and a quorum), UNAVAILABLE (no leader or no quorum) or
NOT_STARTED (no member registered yet).`,
		Example: `  cellctl status
  cellctl status -o json`,
		Args: exactArgs(),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.status(cmd.Context())
		},
	}
}

func (a *app) status(ctx context.Context) error {
	c, err := a.connect()
	if err != nil {
		return err
	}
	defer c.Close()
	resp, err := call(ctx, c, func(ctx context.Context, api cpv1.ControlPlaneServiceClient) (*cpv1.GetStatusResponse, error) {
		return api.GetStatus(ctx, &cpv1.GetStatusRequest{})
	})
	if err != nil {
		return err
	}
	return a.print(resp, func(w io.Writer) error {
		cellsIn := map[string]int{}
		for _, cs := range resp.GetCells() {
			cellsIn[cs.GetCell().GetRegion()]++
		}
		t := newTable(w, "REGION", "DESCRIPTION", "CELLS", "CREATED")
		for _, r := range resp.GetRegions() {
			t.row(r.GetName(), r.GetDescription(), fmt.Sprint(cellsIn[r.GetName()]), timeString(r.GetCreateTime()))
		}
		if err := t.flush(); err != nil {
			return err
		}
		fmt.Fprintln(w)
		if err := writeCells(w, resp.GetCells(), false); err != nil {
			return err
		}
		fmt.Fprintln(w)
		leader := "none"
		if l := resp.GetControllerLeader(); l.GetId() != "" {
			leader = l.GetId()
			if l.GetGrpcAddr() != "" {
				leader += " (" + l.GetGrpcAddr() + ")"
			}
			if l.GetSince() != nil {
				leader += " since " + timeString(l.GetSince())
			}
		}
		_, err := fmt.Fprintf(w, "Controller leader: %s\nPending workflows: %d\n", leader, resp.GetPendingWorkflows())
		return err
	})
}

// writeCells writes the cells table; created adds the creation time.
func writeCells(w io.Writer, cells []*cpv1.CellStatus, created bool) error {
	header := []string{"CELL", "REGION", "STATE", "HEALTH", "LEADER", "MEMBERS", "TENANTS"}
	if created {
		header = append(header, "CREATED")
	}
	t := newTable(w, header...)
	for _, cs := range cells {
		cell := cs.GetCell()
		row := []string{
			cell.GetId(),
			cell.GetRegion(),
			cellState(cell.GetState()),
			cellHealth(cs.GetHealth()),
			cs.GetLeader().GetNodeId(),
			members(cs),
			tenants(cs),
		}
		if created {
			row = append(row, timeString(cell.GetCreateTime()))
		}
		t.row(row...)
	}
	return t.flush()
}

func cellState(s cpv1.CellState) string {
	return enumName(s.String(), "CELL_STATE_")
}

func cellHealth(h cpv1.CellHealth) string {
	return enumName(h.String(), "CELL_HEALTH_")
}

// members is "live/expected" Raft members.
func members(cs *cpv1.CellStatus) string {
	live := 0
	for _, n := range cs.GetNodes() {
		if n.GetRole() == cpv1.NodeRole_NODE_ROLE_MEMBER {
			live++
		}
	}
	return fmt.Sprintf("%d/%d", live, cs.GetCell().GetExpectedMembers())
}

// tenants is the tenant count, "n/max" when the cell has a bound.
func tenants(cs *cpv1.CellStatus) string {
	n := fmt.Sprint(cs.GetLoad().GetTenants())
	if max := cs.GetCell().GetCapacity().GetMaxTenants(); max > 0 {
		n += fmt.Sprintf("/%d", max)
	}
	return n
}
