package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/cellplane/cellplane/internal/retry"
	cpv1 "github.com/cellplane/cellplane/proto/cellplane/controlplane/v1"
)

// pollInterval paces --wait.
const pollInterval = 250 * time.Millisecond

func newTenantMoveCmd(a *app) *cobra.Command {
	var requestID string
	var (
		to           string
		wait, dryRun bool
	)
	cmd := &cobra.Command{
		Use:   "move <tenant> --to <cell>",
		Short: "Move a tenant to another cell, live",
		Long: `Move a tenant to another cell while it serves. The target (an ACTIVE cell
with room, not the owner nor the standby) becomes a standby of the owner,
imports a copy of its data and follows its changes; once it is close behind,
the owner is fenced (writes pause, routers hold the tenant's requests), the
target applies the last changes and becomes the owner at epoch + 1, and the
placement flips. The old owner's copy is deleted after a grace period.

The command returns once the move is recorded; 'cellctl move get <id>'
follows it. --wait prints its progress (state, bytes copied, lag) until it
ends, and exits 0 only when it is DONE. --dry-run prints the plan and
records nothing. A move can be cancelled until its source is fenced
('cellctl move cancel <id>'). See docs/moves.md.`,
		Example: `  cellctl tenant move acme --to use1-b --dry-run
  cellctl tenant move acme --to use1-b --wait
  cellctl tenant move acme --to use1-b -o json`,
		Args: exactArgs("tenant"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if to == "" {
				return usageErrorf("--to is required")
			}
			if wait && dryRun {
				return usageErrorf("--wait and --dry-run are exclusive")
			}
			c, err := a.connect()
			if err != nil {
				return err
			}
			defer c.Close()
			resp, err := call(cmd.Context(), c, func(ctx context.Context, api cpv1.ControlPlaneServiceClient) (*cpv1.StartMoveResponse, error) {
				return api.StartMove(ctx, &cpv1.StartMoveRequest{Tenant: args[0], TargetCell: to, DryRun: dryRun, RequestId: requestID})
			})
			if err != nil {
				return err
			}
			mv := resp.GetMove()
			if dryRun {
				return a.print(resp, func(w io.Writer) error {
					fmt.Fprintf(w, "Plan to move tenant %s from %s to %s (dry run, nothing recorded):\n", mv.GetTenant(), mv.GetSourceCell(), mv.GetTargetCell())
					for i, step := range resp.GetPlan() {
						fmt.Fprintf(w, "  %d. %s\n", i+1, step)
					}
					return nil
				})
			}
			if !wait {
				return a.print(resp, func(w io.Writer) error {
					_, err := fmt.Fprintf(w, "move %s started: tenant %s from %s to %s (epoch %d -> %d); follow it with 'cellctl move get %s'\n",
						mv.GetId(), mv.GetTenant(), mv.GetSourceCell(), mv.GetTargetCell(), mv.GetSourceEpoch(), mv.GetSourceEpoch()+1, mv.GetId())
					return err
				})
			}
			return a.waitMove(cmd.Context(), c, mv)
		},
	}
	cmd.Flags().StringVar(&to, "to", "", "the cell to move the tenant to (required)")
	cmd.Flags().BoolVar(&wait, "wait", false, "print the move's progress until it ends; exit 0 only when it is DONE")
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "validate the move and print its plan; record nothing")
	cmd.Flags().StringVar(&requestID, "request-id", "", "idempotency key: a retry with the same id returns what the first call started instead of starting another (a different request with it is refused: REQUEST_ID_REUSED)")
	return cmd
}

// waitMove follows a move until it ends: progress lines (on stdout for
// -o table, on stderr otherwise), then the final move. Only DONE succeeds.
func (a *app) waitMove(ctx context.Context, c *client, mv *cpv1.Move) error {
	progress := a.std.Out
	if a.opts.output != "table" {
		progress = a.std.Err
	}
	fmt.Fprintf(progress, "move %s: tenant %s from %s to %s (epoch %d -> %d)\n",
		mv.GetId(), mv.GetTenant(), mv.GetSourceCell(), mv.GetTargetCell(), mv.GetSourceEpoch(), mv.GetSourceEpoch()+1)
	last := ""
	for {
		resp, err := call(ctx, c, func(ctx context.Context, api cpv1.ControlPlaneServiceClient) (*cpv1.GetMoveResponse, error) {
			return api.GetMove(ctx, &cpv1.GetMoveRequest{Id: mv.GetId()})
		})
		if err != nil {
			return err
		}
		mv = resp.GetMove()
		if line := progressLine(mv); line != last {
			fmt.Fprintln(progress, line)
			last = line
		}
		if moveFinished(mv.GetState()) {
			if mv.GetState() != cpv1.MoveState_MOVE_STATE_DONE {
				if a.opts.output != "table" {
					if err := a.print(resp, nil); err != nil {
						return err
					}
				}
				return fmt.Errorf("move %s ended %s: %s", mv.GetId(), moveState(mv.GetState()), moveError(mv))
			}
			return a.print(resp, func(w io.Writer) error {
				_, err := fmt.Fprintf(w, "move %s DONE in %s (write pause %s); tenant %s is on %s at epoch %d\n",
					mv.GetId(), durationBetween(mv.GetCreateTime(), mv.GetUpdateTime()), writePause(mv), mv.GetTenant(), mv.GetTargetCell(), mv.GetSourceEpoch()+1)
				return err
			})
		}
		if retry.Sleep(ctx, pollInterval) != nil {
			return errors.New("canceled")
		}
	}
}

// progressLine is one --wait line: state, bytes copied, lag.
func progressLine(mv *cpv1.Move) string {
	s := fmt.Sprintf("  %-12s copied %d bytes, target tseq %d", moveState(mv.GetState()), mv.GetCopiedBytes(), mv.GetTargetTseq())
	if mv.GetSourceTseq() > 0 {
		s += fmt.Sprintf(", lag %d events", lag(mv))
	}
	if mv.GetErrorMessage() != "" {
		s += " (" + mv.GetErrorMessage() + ")"
	}
	return s
}

func lag(mv *cpv1.Move) uint64 {
	if mv.GetSourceTseq() > mv.GetTargetTseq() {
		return mv.GetSourceTseq() - mv.GetTargetTseq()
	}
	return 0
}

func moveFinished(s cpv1.MoveState) bool {
	switch s {
	case cpv1.MoveState_MOVE_STATE_DONE, cpv1.MoveState_MOVE_STATE_CANCELLED, cpv1.MoveState_MOVE_STATE_FAILED:
		return true
	}
	return false
}

func moveState(s cpv1.MoveState) string { return enumName(s.String(), "MOVE_STATE_") }

func moveError(mv *cpv1.Move) string {
	switch {
	case mv.GetErrorReason() == "" && mv.GetState() == cpv1.MoveState_MOVE_STATE_CANCELLED:
		return "cancelled by request; the tenant stays on " + mv.GetSourceCell()
	case mv.GetErrorReason() == "":
		return "no reason recorded"
	}
	return mv.GetErrorReason() + ": " + mv.GetErrorMessage()
}

func writePause(mv *cpv1.Move) string {
	if mv.GetFenceTime() == nil || mv.GetFlipTime() == nil {
		return ""
	}
	return durationBetween(mv.GetFenceTime(), mv.GetFlipTime())
}

func newMoveCmd(a *app) *cobra.Command {
	return group("move", "List, inspect and cancel live tenant moves",
		`A move takes a tenant from its owner cell to another cell while it serves
('cellctl tenant move'); draining a cell ('cellctl cell drain') starts
moves too. Each move is a durable workflow the control plane drives; its
record shows its state, its progress and, once done, the write pause its
clients saw. Finished moves are kept for a while (--all lists them).`,
		`  cellctl move list
  cellctl move list --tenant acme --all
  cellctl move get acme-1a2b3c4d
  cellctl move cancel acme-1a2b3c4d`,
		newMoveListCmd(a),
		newMoveGetCmd(a),
		newMoveCancelCmd(a),
	)
}

func newMoveListCmd(a *app) *cobra.Command {
	var req cpv1.ListMovesRequest
	cmd := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List moves, oldest first",
		Long: `List the moves that have not finished, oldest first, optionally only one
tenant's or those from or to one cell. --all adds the finished moves the
control plane still keeps (DONE, CANCELLED, FAILED).`,
		Example: `  cellctl move list
  cellctl move list --cell use1-a --all -o json`,
		Args: exactArgs(),
		RunE: func(cmd *cobra.Command, args []string) error {
			return do(a, cmd.Context(), func(ctx context.Context, api cpv1.ControlPlaneServiceClient) (*cpv1.ListMovesResponse, error) {
				return api.ListMoves(ctx, &req)
			}, func(w io.Writer, resp *cpv1.ListMovesResponse) error {
				t := newTable(w, "MOVE", "TENANT", "FROM", "TO", "STATE", "EPOCH", "DRAIN", "CREATED")
				for _, mv := range resp.GetMoves() {
					t.row(mv.GetId(), mv.GetTenant(), mv.GetSourceCell(), mv.GetTargetCell(), moveState(mv.GetState()),
						fmt.Sprintf("%d->%d", mv.GetSourceEpoch(), mv.GetSourceEpoch()+1), mv.GetDrainCell(), timeString(mv.GetCreateTime()))
				}
				return t.flush()
			})
		},
	}
	cmd.Flags().StringVar(&req.Tenant, "tenant", "", "only this tenant's moves")
	cmd.Flags().StringVar(&req.Cell, "cell", "", "only the moves from or to this cell")
	cmd.Flags().BoolVar(&req.All, "all", false, "include the finished moves still kept")
	return cmd
}

func newMoveGetCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "get <id>",
		Short: "Show a move: its state, progress and times",
		Long: `Show a move: the tenant, the cells and epochs, the state, the progress
(bytes copied, the target's and the source's tseq, the fence tseq), the
fence and flip times (their difference is the write pause) and, for a move
that failed or is stuck, the error.`,
		Example: `  cellctl move get acme-1a2b3c4d
  cellctl move get acme-1a2b3c4d -o yaml`,
		Args: exactArgs("id"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return do(a, cmd.Context(), func(ctx context.Context, api cpv1.ControlPlaneServiceClient) (*cpv1.GetMoveResponse, error) {
				return api.GetMove(ctx, &cpv1.GetMoveRequest{Id: args[0]})
			}, func(w io.Writer, resp *cpv1.GetMoveResponse) error { return writeMove(w, resp.GetMove()) })
		},
	}
}

func writeMove(w io.Writer, mv *cpv1.Move) error {
	f := newFields(w)
	f.add("Move", mv.GetId())
	f.add("Tenant", mv.GetTenant())
	f.add("From", mv.GetSourceCell())
	f.add("To", mv.GetTargetCell())
	f.add("State", moveState(mv.GetState()))
	f.add("Epoch", fmt.Sprintf("%d -> %d", mv.GetSourceEpoch(), mv.GetSourceEpoch()+1))
	f.add("Standby", mv.GetStandbyCell())
	f.add("Drain", mv.GetDrainCell())
	f.add("Copied", fmt.Sprintf("%d bytes", mv.GetCopiedBytes()))
	f.add("Target tseq", fmt.Sprint(mv.GetTargetTseq()))
	f.add("Source tseq", fmt.Sprint(mv.GetSourceTseq()))
	f.add("Fence tseq", limit(mv.GetFenceTseq(), ""))
	cancel := "no"
	if mv.GetCancelRequested() {
		cancel = "yes"
	}
	f.add("Cancel asked", cancel)
	f.add("Created", timeString(mv.GetCreateTime()))
	f.add("Updated", timeString(mv.GetUpdateTime()))
	f.add("Fenced", timeString(mv.GetFenceTime()))
	f.add("Flipped", timeString(mv.GetFlipTime()))
	f.add("Write pause", writePause(mv))
	f.add("Cleanup after", timeString(mv.GetCleanupAfter()))
	errText := ""
	if mv.GetErrorReason() != "" {
		errText = mv.GetErrorReason() + ": " + mv.GetErrorMessage()
	}
	f.add("Error", errText)
	return f.flush()
}

func newMoveCancelCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "cancel <id>",
		Short: "Cancel a move that has not fenced its source yet",
		Long: `Cancel a move. Until its source is fenced (states PREPARING, COPYING,
CATCHING_UP) the control plane undoes it: the target's copy is deleted and
the tenant stays where it is. From FENCING on a move only goes forward and
the cancel is refused (MOVE_NOT_CANCELLABLE).`,
		Example: `  cellctl move cancel acme-1a2b3c4d`,
		Args:    exactArgs("id"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return do(a, cmd.Context(), func(ctx context.Context, api cpv1.ControlPlaneServiceClient) (*cpv1.CancelMoveResponse, error) {
				return api.CancelMove(ctx, &cpv1.CancelMoveRequest{Id: args[0]})
			}, func(w io.Writer, resp *cpv1.CancelMoveResponse) error {
				mv := resp.GetMove()
				if mv.GetState() == cpv1.MoveState_MOVE_STATE_CANCELLED {
					_, err := fmt.Fprintf(w, "move %s is CANCELLED; tenant %s stays on %s\n", mv.GetId(), mv.GetTenant(), mv.GetSourceCell())
					return err
				}
				_, err := fmt.Fprintf(w, "cancel of move %s requested (it was %s); the control plane deletes the copy on %s, tenant %s stays on %s\n",
					mv.GetId(), moveState(mv.GetState()), mv.GetTargetCell(), mv.GetTenant(), mv.GetSourceCell())
				return err
			})
		},
	}
}

// newCellDrainCmd is 'cellctl cell drain'.
func newCellDrainCmd(a *app) *cobra.Command {
	var (
		concurrency uint32
		wait        bool
	)
	cmd := &cobra.Command{
		Use:   "drain <cell>",
		Short: "Move every tenant out of a cell",
		Long: `Drain a cell: it becomes DRAINING (it takes no new tenants) and the control
plane moves its tenants, live, to the other ACTIVE cells of its region,
--concurrency moves at a time (0: the control plane's default, or the
drain's earlier value). The drain goes on when the controller leader
changes; it ends when the cell owns no tenant. Uncordoning the cell stops
it (running moves finish). --wait prints the progress until the cell is
empty.`,
		Example: `  cellctl cell drain use1-a
  cellctl cell drain use1-a --concurrency 8 --wait`,
		Args: exactArgs("cell"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.connect()
			if err != nil {
				return err
			}
			defer c.Close()
			resp, err := call(cmd.Context(), c, func(ctx context.Context, api cpv1.ControlPlaneServiceClient) (*cpv1.DrainCellResponse, error) {
				return api.DrainCell(ctx, &cpv1.DrainCellRequest{Cell: args[0], Concurrency: concurrency})
			})
			if err != nil {
				return err
			}
			if !wait {
				return a.print(resp, func(w io.Writer) error {
					_, err := fmt.Fprintf(w, "cell %s is %s: %d tenant(s) to move, %d move(s) running; 'cellctl move list --cell %s' follows them\n",
						args[0], cellState(resp.GetCell().GetState()), resp.GetRemaining(), len(resp.GetMoves()), args[0])
					return err
				})
			}
			return a.waitDrain(cmd.Context(), c, args[0])
		},
	}
	cmd.Flags().Uint32Var(&concurrency, "concurrency", 0, "moves at once (0: the control plane's default)")
	cmd.Flags().BoolVar(&wait, "wait", false, "print the progress until the cell is empty")
	return cmd
}

// waitDrain follows a drain until the cell owns no tenant and no move out
// of it runs; it fails if the cell stops DRAINING first.
func (a *app) waitDrain(ctx context.Context, c *client, cell string) error {
	progress := a.std.Out
	if a.opts.output != "table" {
		progress = a.std.Err
	}
	last := ""
	for {
		cs, err := call(ctx, c, func(ctx context.Context, api cpv1.ControlPlaneServiceClient) (*cpv1.GetCellResponse, error) {
			return api.GetCell(ctx, &cpv1.GetCellRequest{Id: cell})
		})
		if err != nil {
			return err
		}
		remaining, err := countTenants(ctx, c, cell)
		if err != nil {
			return err
		}
		moves, err := call(ctx, c, func(ctx context.Context, api cpv1.ControlPlaneServiceClient) (*cpv1.ListMovesResponse, error) {
			return api.ListMoves(ctx, &cpv1.ListMovesRequest{Cell: cell})
		})
		if err != nil {
			return err
		}
		running := 0
		for _, mv := range moves.GetMoves() {
			if mv.GetSourceCell() == cell {
				running++
			}
		}
		if line := fmt.Sprintf("cell %s: %d tenant(s) left, %d move(s) running", cell, remaining, running); line != last {
			fmt.Fprintln(progress, line)
			last = line
		}
		state := cs.GetCell().GetCell().GetState()
		if remaining == 0 && running == 0 {
			out := &cpv1.DrainCellResponse{Cell: cs.GetCell().GetCell()}
			return a.print(out, func(w io.Writer) error {
				_, err := fmt.Fprintf(w, "cell %s drained (%s)\n", cell, cellState(state))
				return err
			})
		}
		if state != cpv1.CellState_CELL_STATE_DRAINING {
			return fmt.Errorf("the drain of cell %s stopped: the cell is %s, %d tenant(s) left", cell, cellState(state), remaining)
		}
		if retry.Sleep(ctx, pollInterval) != nil {
			return errors.New("canceled")
		}
	}
}

// countTenants counts the tenants a cell owns (every page).
func countTenants(ctx context.Context, c *client, cell string) (int, error) {
	req := &cpv1.ListTenantsRequest{Cell: cell, PageSize: 1000}
	n := 0
	for {
		page, err := call(ctx, c, func(ctx context.Context, api cpv1.ControlPlaneServiceClient) (*cpv1.ListTenantsResponse, error) {
			return api.ListTenants(ctx, req)
		})
		if err != nil {
			return 0, err
		}
		n += len(page.GetTenants())
		if page.GetNextPageToken() == "" || page.GetNextPageToken() == req.PageToken {
			return n, nil
		}
		req.PageToken = page.GetNextPageToken()
	}
}

// durationBetween formats to - from, to the millisecond ("" if unset).
func durationBetween(from, to *timestamppb.Timestamp) string {
	if from == nil || to == nil {
		return ""
	}
	return to.AsTime().Sub(from.AsTime()).Round(time.Millisecond).String()
}
