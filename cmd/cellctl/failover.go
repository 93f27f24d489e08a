package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/cellplane/cellplane/internal/cperr"
	"github.com/cellplane/cellplane/internal/dial"
	"github.com/cellplane/cellplane/internal/pki"
	"github.com/cellplane/cellplane/internal/retry"
	"github.com/cellplane/cellplane/internal/rpcerr"
	cellv1 "github.com/cellplane/cellplane/proto/cellplane/cell/v1"
	cpv1 "github.com/cellplane/cellplane/proto/cellplane/controlplane/v1"
)

// Failover commands: planned switchovers (tenant failover, cell failover),
// emergency promotions (tenant promote, cell promote-standbys), their
// records (failover list, failover get) and the inspection of a fenced old
// owner's writes (tenant changes).

const (
	switchoverKind = cpv1.FailoverKind_FAILOVER_KIND_SWITCHOVER
	promoteKind    = cpv1.FailoverKind_FAILOVER_KIND_PROMOTE
	// waitPoll paces --wait.
	waitPoll = 200 * time.Millisecond
)

func newTenantFailoverCmd(a *app) *cobra.Command {
	var wait bool
	var requestID string
	cmd := &cobra.Command{
		Use:   "failover <tenant> [--wait]",
		Short: "Switch a tenant over to its standby cell (planned, no write lost)",
		Long: `Hand a tenant to its standby cell in a planned switchover: routers hold the
tenant's requests, the owner cell is fenced (it stops taking writes), the
standby applies everything up to the fence and becomes the owner at the next
epoch, and the placement flips. The old owner becomes the new standby. No
acknowledged write is lost; clients see a pause of about the standby's lag.

The tenant needs a standby that finished its copy (NO_STANDBY otherwise).
The command returns once the switchover is recorded and its standby checked;
--wait follows it to the end.`,
		Example: `  cellctl tenant failover acme --wait
  cellctl failover get acme-e2-switchover`,
		Args: exactArgs("tenant"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.runFailover(cmd, &cpv1.FailoverRequest{Tenant: args[0], Kind: switchoverKind, RequestId: requestID}, wait)
		},
	}
	cmd.Flags().BoolVar(&wait, "wait", false, "wait until the switchover is done (or failed)")
	cmd.Flags().StringVar(&requestID, "request-id", "", "idempotency key: a retry with the same id returns what the first call started instead of starting another (a different request with it is refused: REQUEST_ID_REUSED)")
	return cmd
}

func newTenantPromoteCmd(a *app) *cobra.Command {
	var wait, yes bool
	var requestID string
	cmd := &cobra.Command{
		Use:   "promote <tenant> --yes [--wait]",
		Short: "Promote a tenant's standby now: emergency failover, may lose writes",
		Long: `Promote a tenant's standby when its owner cell is lost. The epoch is bumped
and the old owner fenced in etcd; the control plane waits until the old
owner's authority lease has expired (it then acknowledges no more writes),
and makes the standby the owner with whatever it has received. Writes the old
owner acknowledged that had not reached the standby are lost from the
tenant's live data: when the old cell comes back it applies the fence, keeps
them for inspection and reports how many (the RPO, shown by
'cellctl failover get'). The tenant has no standby afterwards.

Prefer 'cellctl tenant failover' while the owner cell is reachable. Because
writes may be lost, the command wants --yes. An emergency promotion
supersedes a planned switchover of the tenant that is stuck.`,
		Example: `  cellctl tenant promote acme --yes --wait
  cellctl failover get acme-e2-promote`,
		Args: exactArgs("tenant"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if !yes {
				return usageErrorf("promoting tenant %q's standby may lose the writes it has not received yet; add --yes to confirm (or use 'cellctl tenant failover %s' while the owner is reachable)", args[0], args[0])
			}
			return a.runFailover(cmd, &cpv1.FailoverRequest{Tenant: args[0], Kind: promoteKind, RequestId: requestID}, wait)
		},
	}
	cmd.Flags().BoolVar(&yes, "yes", false, "confirm: writes the standby has not received may be lost")
	cmd.Flags().BoolVar(&wait, "wait", false, "wait until the standby is promoted (or the promotion failed)")
	cmd.Flags().StringVar(&requestID, "request-id", "", "idempotency key: a retry with the same id returns what the first call started instead of starting another (a different request with it is refused: REQUEST_ID_REUSED)")
	return cmd
}

func newCellFailoverCmd(a *app) *cobra.Command {
	var wait bool
	var requestID string
	cmd := &cobra.Command{
		Use:   "failover <cell> [--wait]",
		Short: "Switch every tenant of a cell that has a standby over to it (planned)",
		Long: `Run a planned switchover (see 'cellctl tenant failover') for every ACTIVE
tenant the cell owns that has a standby, a bounded number at a time.
Tenants without a standby, and tenants busy with another operation, stay.
--wait follows every switchover to its end.`,
		Example: `  cellctl cell failover use1-a --wait
  cellctl failover list --cell use1-a`,
		Args: exactArgs("cell"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.runFailover(cmd, &cpv1.FailoverRequest{Cell: args[0], Kind: switchoverKind, RequestId: requestID}, wait)
		},
	}
	cmd.Flags().BoolVar(&wait, "wait", false, "wait until every switchover is done (or failed)")
	cmd.Flags().StringVar(&requestID, "request-id", "", "idempotency key: a retry with the same id returns what the first call started instead of starting another (a different request with it is refused: REQUEST_ID_REUSED)")
	return cmd
}

func newCellPromoteCmd(a *app) *cobra.Command {
	var wait, yes bool
	var requestID string
	cmd := &cobra.Command{
		Use:   "promote-standbys <cell> --yes [--wait]",
		Short: "Promote the standbys of every tenant of a lost cell (emergency, may lose writes)",
		Long: `Run an emergency promotion (see 'cellctl tenant promote') for every ACTIVE
tenant the cell owns that has a standby: for a cell (or a region) that is
lost. Writes the standbys had not received are lost from the live data and
reported per tenant once the cell comes back. The command wants --yes.`,
		Example: `  cellctl cell promote-standbys use1-a --yes
  cellctl failover list --cell use1-a`,
		Args: exactArgs("cell"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if !yes {
				return usageErrorf("promoting the standbys of cell %q's tenants may lose the writes they have not received yet; add --yes to confirm", args[0])
			}
			return a.runFailover(cmd, &cpv1.FailoverRequest{Cell: args[0], Kind: promoteKind, RequestId: requestID}, wait)
		},
	}
	cmd.Flags().BoolVar(&yes, "yes", false, "confirm: writes the standbys have not received may be lost")
	cmd.Flags().BoolVar(&wait, "wait", false, "wait until every standby is promoted (or its promotion failed)")
	cmd.Flags().StringVar(&requestID, "request-id", "", "idempotency key: a retry with the same id returns what the first call started instead of starting another (a different request with it is refused: REQUEST_ID_REUSED)")
	return cmd
}

// runFailover starts failovers, prints them, and with wait follows them.
func (a *app) runFailover(cmd *cobra.Command, req *cpv1.FailoverRequest, wait bool) error {
	c, err := a.connect()
	if err != nil {
		return err
	}
	defer c.Close()
	resp, err := call(cmd.Context(), c, func(ctx context.Context, api cpv1.ControlPlaneServiceClient) (*cpv1.FailoverResponse, error) {
		return api.Failover(ctx, req)
	})
	if err != nil {
		return err
	}
	if !wait {
		return a.print(resp, func(w io.Writer) error {
			for _, fo := range resp.GetFailovers() {
				if _, err := fmt.Fprintf(w, "%s %s of tenant %s started: cell %s → %s (epoch %d → %d), %s\n",
					kindName(fo.GetKind()), fo.GetId(), fo.GetTenant(), fo.GetFromCell(), fo.GetToCell(),
					fo.GetOldEpoch(), fo.GetOldEpoch()+1, failoverState(fo.GetState())); err != nil {
					return err
				}
			}
			switch n := len(resp.GetFailovers()); {
			case n == 1:
				_, err = fmt.Fprintf(w, "follow it: cellctl failover get %s\n", resp.GetFailovers()[0].GetId())
			case n > 1:
				_, err = fmt.Fprintf(w, "follow them: cellctl failover list --cell %s\n", req.GetCell())
			}
			return err
		})
	}
	var done []*cpv1.Failover
	var failed []string
	for _, fo := range resp.GetFailovers() {
		fo, err := a.waitFailover(cmd.Context(), c, fo)
		if err != nil {
			return err
		}
		done = append(done, fo)
		if fo.GetState() == cpv1.FailoverState_FAILOVER_STATE_FAILED {
			failed = append(failed, fo.GetId())
		}
	}
	out := &cpv1.FailoverResponse{Failovers: done}
	if err := a.print(out, func(w io.Writer) error {
		if len(done) == 1 {
			return writeFailover(w, done[0])
		}
		return writeFailovers(w, done)
	}); err != nil {
		return err
	}
	switch {
	case len(failed) == 1 && len(done) == 1:
		return &cperr.Error{Reason: cperr.Reason(done[0].GetErrorReason()), Message: done[0].GetErrorMessage()}
	case len(failed) > 0:
		return fmt.Errorf("%d of %d failovers failed: %s", len(failed), len(done), strings.Join(failed, ", "))
	}
	return nil
}

// waitFailover polls a failover until the standby serves (DONE,
// AWAITING_OLD_OWNER) or it FAILED. Each poll has --timeout; the wait
// itself ends with the command's context (Ctrl-C).
func (a *app) waitFailover(ctx context.Context, c *client, fo *cpv1.Failover) (*cpv1.Failover, error) {
	for {
		switch fo.GetState() {
		case cpv1.FailoverState_FAILOVER_STATE_DONE, cpv1.FailoverState_FAILOVER_STATE_FAILED,
			cpv1.FailoverState_FAILOVER_STATE_AWAITING_OLD_OWNER:
			return fo, nil
		}
		if retry.Sleep(ctx, waitPoll) != nil {
			return nil, fmt.Errorf("stopped waiting for failover %s (%s); it goes on: cellctl failover get %s", fo.GetId(), failoverState(fo.GetState()), fo.GetId())
		}
		resp, err := call(ctx, c, func(ctx context.Context, api cpv1.ControlPlaneServiceClient) (*cpv1.GetFailoverResponse, error) {
			return api.GetFailover(ctx, &cpv1.GetFailoverRequest{Id: fo.GetId()})
		})
		if err != nil {
			return nil, err
		}
		fo = resp.GetFailover()
	}
}

func newFailoverCmd(a *app) *cobra.Command {
	return group("failover", "List and inspect failovers (switchovers and emergency promotions)",
		`A failover hands a tenant from its owner cell to its standby cell: planned
(a switchover: 'cellctl tenant failover', 'cellctl cell failover'; no write
lost) or emergency (a promotion: 'cellctl tenant promote', 'cellctl cell
promote-standbys'; the writes the standby had not received are lost and
reported). The control plane keeps a record of each; these commands show
them, with the time to promote and, for promotions, the lost events.`,
		`  cellctl failover list
  cellctl failover list --cell use1-a
  cellctl failover get acme-e2-promote`,
		newFailoverListCmd(a),
		newFailoverGetCmd(a),
	)
}

func newFailoverListCmd(a *app) *cobra.Command {
	var req cpv1.ListFailoversRequest
	cmd := &cobra.Command{
		Use:     "list [--tenant <id>] [--cell <id>]",
		Aliases: []string{"ls"},
		Short:   "List failovers, oldest first",
		Long: `List the recorded failovers, oldest first, optionally only one tenant's or
only those from or to one cell. LOST is the number of writes an emergency
promotion lost ("?" until the old owner has reported).`,
		Example: `  cellctl failover list
  cellctl failover list --tenant acme -o json`,
		Args: exactArgs(),
		RunE: func(cmd *cobra.Command, args []string) error {
			return do(a, cmd.Context(), func(ctx context.Context, api cpv1.ControlPlaneServiceClient) (*cpv1.ListFailoversResponse, error) {
				return api.ListFailovers(ctx, &req)
			}, func(w io.Writer, resp *cpv1.ListFailoversResponse) error {
				return writeFailovers(w, resp.GetFailovers())
			})
		},
	}
	cmd.Flags().StringVar(&req.Tenant, "tenant", "", "only this tenant's failovers")
	cmd.Flags().StringVar(&req.Cell, "cell", "", "only the failovers from or to this cell")
	return cmd
}

func newFailoverGetCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "get <id>",
		Short: "Show one failover: its state, time to promote and lost writes",
		Long: `Show a failover: the cells and epochs, its state, what triggered it, how
long it took to promote the standby and, for an emergency promotion, the
writes the old owner acknowledged that never reached the standby (once the
old owner has come back and reported), with the command that lists them.`,
		Example: `  cellctl failover get acme-e2-promote`,
		Args:    exactArgs("id"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return do(a, cmd.Context(), func(ctx context.Context, api cpv1.ControlPlaneServiceClient) (*cpv1.GetFailoverResponse, error) {
				return api.GetFailover(ctx, &cpv1.GetFailoverRequest{Id: args[0]})
			}, func(w io.Writer, resp *cpv1.GetFailoverResponse) error {
				return writeFailover(w, resp.GetFailover())
			})
		},
	}
}

func kindName(k cpv1.FailoverKind) string {
	switch k {
	case switchoverKind:
		return "switchover"
	case promoteKind:
		return "promotion"
	}
	return enumName(k.String(), "FAILOVER_KIND_")
}

func failoverState(s cpv1.FailoverState) string {
	return enumName(s.String(), "FAILOVER_STATE_")
}

// lostColumn is the LOST column: a number, or "?" while a promotion's old
// owner has not reported.
func lostColumn(fo *cpv1.Failover) string {
	switch {
	case fo.GetState() == cpv1.FailoverState_FAILOVER_STATE_FAILED:
		return ""
	case fo.GetKind() == promoteKind && !fo.GetOldOwnerReported():
		return "?"
	}
	return fmt.Sprint(fo.GetLostEvents())
}

func writeFailovers(w io.Writer, fos []*cpv1.Failover) error {
	t := newTable(w, "ID", "KIND", "TENANT", "FROM", "TO", "STATE", "EPOCH", "LOST", "CREATED")
	for _, fo := range fos {
		t.row(fo.GetId(), kindName(fo.GetKind()), fo.GetTenant(), fo.GetFromCell(), fo.GetToCell(), failoverState(fo.GetState()),
			fmt.Sprintf("%d→%d", fo.GetOldEpoch(), fo.GetOldEpoch()+1), lostColumn(fo), timeString(fo.GetCreateTime()))
	}
	return t.flush()
}

func writeFailover(w io.Writer, fo *cpv1.Failover) error {
	f := newFields(w)
	f.add("Failover", fo.GetId())
	f.add("Kind", kindName(fo.GetKind()))
	f.add("Tenant", fo.GetTenant())
	f.add("State", failoverState(fo.GetState()))
	f.add("From", fmt.Sprintf("cell %s, epoch %d", fo.GetFromCell(), fo.GetOldEpoch()))
	f.add("To", fmt.Sprintf("cell %s, epoch %d", fo.GetToCell(), fo.GetOldEpoch()+1))
	f.add("Trigger", fo.GetTrigger())
	f.add("Created", timeString(fo.GetCreateTime()))
	if fo.GetKind() == promoteKind {
		f.add("Lease wait until", timeString(fo.GetLeaseWaitUntil()))
	}
	promoted := ""
	if fo.GetPromoteTime() != nil {
		promoted = fmt.Sprintf("%s (time to promote %s)", timeString(fo.GetPromoteTime()), fo.GetTimeToPromote().AsDuration().Round(time.Millisecond))
		f.add("Promoted", promoted)
		f.add("Promoted tseq", fmt.Sprint(fo.GetPromotedTseq()))
	} else {
		f.add("Promoted", "not yet")
	}
	switch {
	case fo.GetKind() == switchoverKind:
		if fo.GetOldOwnerReported() {
			f.add("Fence tseq", fmt.Sprint(fo.GetOldOwnerTseq()+1))
		}
		if fo.GetState() == cpv1.FailoverState_FAILOVER_STATE_DONE {
			f.add("Lost events", "0 (planned switchover)")
		}
	case fo.GetOldOwnerReported():
		f.add("Old owner tseq", fmt.Sprintf("%d (reported by cell %s)", fo.GetOldOwnerTseq(), fo.GetFromCell()))
		if n := fo.GetLostEvents(); n > 0 {
			f.add("Lost events", fmt.Sprintf("%d: acknowledged by cell %s, never received by cell %s", n, fo.GetFromCell(), fo.GetToCell()))
			f.add("Inspect them", fmt.Sprintf("cellctl tenant changes %s --cell %s --after %d", fo.GetTenant(), fo.GetFromCell(), fo.GetPromotedTseq()))
		} else if fo.GetPromoteTime() != nil {
			f.add("Lost events", "0")
		}
	case fo.GetPromoteTime() != nil:
		f.add("Old owner tseq", fmt.Sprintf("not reported yet (cell %s reports when it is back)", fo.GetFromCell()))
		f.add("Lost events", "unknown until the old owner reports")
	}
	if fo.GetErrorReason() != "" || fo.GetErrorMessage() != "" {
		f.add("Error", strings.TrimPrefix(fo.GetErrorReason()+": "+fo.GetErrorMessage(), ": "))
	}
	f.add("Updated", timeString(fo.GetUpdateTime()))
	return f.flush()
}

func newTenantChangesCmd(a *app) *cobra.Command {
	var (
		cell  string
		after uint64
		limit uint32
	)
	cmd := &cobra.Command{
		Use:   "changes <tenant> --cell <cell> [--after <tseq>] [--limit <n>]",
		Short: "List a tenant's change log on one cell (e.g. a fenced old owner's lost writes)",
		Long: `List the tenant's change-log events on one cell, after a tseq, in any role:
how to inspect the writes an old owner acknowledged that an emergency
promotion lost ('cellctl failover get' prints the command with the old cell
and the promoted tseq). The old owner keeps the tenant FENCED, with its
data, until the tenant is cleaned up there.

cellctl asks the control plane for the cell's members, then calls the cell's
leader directly (CellService.ListChanges), with the same TLS options as for
the control plane: it must be able to reach the cell.`,
		Example: `  cellctl tenant changes acme --cell use1-a --after 1041
  cellctl tenant changes acme --cell use1-a --after 1041 -o json`,
		Args: exactArgs("tenant"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if cell == "" {
				return usageErrorf("--cell is required: the cell whose change log to read")
			}
			if limit > 1000 {
				return usageErrorf("--limit %d: at most 1000", limit)
			}
			c, err := a.connect()
			if err != nil {
				return err
			}
			defer c.Close()
			cs, err := call(cmd.Context(), c, func(ctx context.Context, api cpv1.ControlPlaneServiceClient) (*cpv1.GetCellResponse, error) {
				return api.GetCell(ctx, &cpv1.GetCellRequest{Id: cell})
			})
			if err != nil {
				return err
			}
			resp, err := a.listChanges(cmd.Context(), cs.GetCell(), &cellv1.ListChangesRequest{Tenant: args[0], AfterTseq: after, Limit: limit})
			if err != nil {
				return err
			}
			return a.print(resp, func(w io.Writer) error { return writeChanges(w, cell, after, resp) })
		},
	}
	cmd.Flags().StringVar(&cell, "cell", "", "the cell whose change log to read (required)")
	cmd.Flags().Uint64Var(&after, "after", 0, "only the events after this tseq")
	cmd.Flags().Uint32Var(&limit, "limit", 0, "events to list (0: the cell's default, 100; at most 1000)")
	return cmd
}

// listChanges calls ListChanges on the cell's published leader, else on
// each registered member in turn (a member forwards to its leader).
func (a *app) listChanges(ctx context.Context, cs *cpv1.CellStatus, req *cellv1.ListChangesRequest) (*cellv1.ListChangesResponse, error) {
	var addrs []string
	if l := cs.GetLeader().GetGrpcAddr(); l != "" {
		addrs = append(addrs, l)
	}
	for _, n := range cs.GetNodes() {
		if n.GetRole() == cpv1.NodeRole_NODE_ROLE_MEMBER && n.GetGrpcAddr() != "" && n.GetGrpcAddr() != cs.GetLeader().GetGrpcAddr() {
			addrs = append(addrs, n.GetGrpcAddr())
		}
	}
	if len(addrs) == 0 {
		return nil, fmt.Errorf("cell %s has no live member registered: its change log cannot be read now", cs.GetCell().GetId())
	}
	// A cell serving mutual TLS lets admin operators read its change log
	// (docs/security.md, "Cell gRPC").
	creds, err := a.opts.transportCredentials(pki.KindNode)
	if err != nil {
		return nil, err
	}
	var lastErr error
	for _, addr := range addrs {
		conn, err := dial.New(addr, dial.Config{Credentials: creds})
		if err != nil {
			lastErr = err
			continue
		}
		cctx, cancel := context.WithTimeout(ctx, a.opts.timeout)
		resp, err := cellv1.NewCellServiceClient(conn).ListChanges(cctx, req)
		cancel()
		_ = conn.Close()
		if err == nil {
			return resp, nil
		}
		mapped := rpcerr.FromStatus(err)
		var ce *cperr.Error
		if errors.As(mapped, &ce) && ce.Reason != cperr.NotLeader && ce.Reason != cperr.CellUnavailable {
			return nil, ce // the cell's own answer (TENANT_NOT_FOUND, CHANGES_TRIMMED, ...)
		}
		lastErr = fmt.Errorf("member %s: %w", addr, mapped)
	}
	return nil, fmt.Errorf("cell %s: no member answered: %w", cs.GetCell().GetId(), lastErr)
}

func writeChanges(w io.Writer, cell string, after uint64, resp *cellv1.ListChangesResponse) error {
	tn := resp.GetTenant()
	if _, err := fmt.Fprintf(w, "tenant %s on cell %s: %s at epoch %d, tseq %d; events after tseq %d:\n\n",
		tn.GetTenant(), cell, enumName(tn.GetRole().String(), "ROLE_"), tn.GetEpoch(), tn.GetTseq(), after); err != nil {
		return err
	}
	t := newTable(w, "TSEQ", "TIME", "OPERATION", "DETAIL", "REQUEST ID")
	for _, ev := range resp.GetEvents() {
		op, detail := describeCommand(ev.GetCommand())
		ts := ""
		if n := ev.GetTimeUnixNano(); n != 0 {
			ts = time.Unix(0, n).UTC().Format(time.RFC3339Nano)
		}
		t.row(fmt.Sprint(ev.GetTseq()), ts, op, detail, ev.GetCommand().GetRequestId())
	}
	if err := t.flush(); err != nil {
		return err
	}
	if len(resp.GetEvents()) == 0 {
		_, err := fmt.Fprintln(w, "(none)")
		return err
	}
	return nil
}

// describeCommand names a logged command and its target.
func describeCommand(cmd *cellv1.Command) (op, detail string) {
	switch o := cmd.GetOp().(type) {
	case *cellv1.Command_CreateContext:
		return "create_context", "context " + o.CreateContext.GetContextId()
	case *cellv1.Command_DeleteContext:
		return "delete_context", "context " + o.DeleteContext.GetContextId()
	case *cellv1.Command_Append:
		return "append", fmt.Sprintf("context %s, %d entries", o.Append.GetContextId(), len(o.Append.GetEntries()))
	case *cellv1.Command_PutMemory:
		return "put_memory", fmt.Sprintf("key %q, %d bytes", o.PutMemory.GetKey(), len(o.PutMemory.GetValue()))
	case *cellv1.Command_DeleteMemory:
		return "delete_memory", fmt.Sprintf("key %q", o.DeleteMemory.GetKey())
	case *cellv1.Command_ForkContext:
		return "fork_context", fmt.Sprintf("context %s at seq %d → %s", o.ForkContext.GetContextId(), o.ForkContext.GetAtSeq(), o.ForkContext.GetNewContextId())
	case *cellv1.Command_ExpireSweep:
		return "expire_sweep", fmt.Sprintf("up to %d expired items", o.ExpireSweep.GetMaxItems())
	case *cellv1.Command_CompactContext:
		return "compact_context", fmt.Sprintf("context %s, up to seq %d", o.CompactContext.GetContextId(), o.CompactContext.GetUpToSeq())
	case *cellv1.Command_SetTenant:
		return "set_tenant", fmt.Sprintf("%s at epoch %d", enumName(o.SetTenant.GetRole().String(), "ROLE_"), o.SetTenant.GetEpoch())
	case *cellv1.Command_DeleteTenant:
		if g := o.DeleteTenant; g.GetExpectedEpoch() != 0 || len(g.GetAllowedRoles()) > 0 {
			return "delete_tenant", fmt.Sprintf("if %v at epoch %d (0: any)", g.GetAllowedRoles(), g.GetExpectedEpoch())
		}
		return "delete_tenant", ""
	case nil:
		return "", ""
	}
	return "other", fmt.Sprintf("%T", cmd.GetOp())
}
