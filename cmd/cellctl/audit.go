package main

import (
	"context"
	"encoding/hex"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	cellv1 "github.com/cellplane/cellplane/proto/cellplane/cell/v1"
	cpv1 "github.com/cellplane/cellplane/proto/cellplane/controlplane/v1"
)

func newTenantAuditCmd(a *app) *cobra.Command {
	var (
		principal, since string
		after            uint64
		limit            uint32
	)
	cmd := &cobra.Command{
		Use:   "audit <tenant> [--principal <p>] [--since <time>] [--after <tseq>] [--limit <n>]",
		Short: "List a tenant's audit records (who changed what, when)",
		Long: `List the tenant's audit records, oldest first: one per mutation, written by
the owner cell's state machine in the same batch as the mutation, with the
principal, the origin (grpc:<method>, mcp:<tool>, controlplane:...), the
request id, the operation, the context or memory key, the tseq and the
command time. Records an erasure redacted show only when, how and which
operation, with the erase's tseq (docs/contexts.md "Audit").

The control plane reads them from the tenant's owner cell
(ControlPlaneService.ListTenantAudit). Read-only operators may list them.
--since takes an RFC 3339 time or a duration back from now (24h).`,
		Example: `  cellctl tenant audit acme
  cellctl tenant audit acme --principal alice@example.com --since 24h
  cellctl tenant audit acme --after 1041 --limit 50 -o json`,
		Args: exactArgs("tenant"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if limit > 1000 {
				return usageErrorf("--limit %d: at most 1000", limit)
			}
			req := &cpv1.ListTenantAuditRequest{Tenant: args[0], AfterTseq: after, Limit: limit, Principal: principal}
			if since != "" {
				t, err := parseSince(since, time.Now())
				if err != nil {
					return usageErrorf("--since %q: %v", since, err)
				}
				req.Since = timestamppb.New(t)
			}
			return do(a, cmd.Context(), func(ctx context.Context, api cpv1.ControlPlaneServiceClient) (*cpv1.ListTenantAuditResponse, error) {
				return api.ListTenantAudit(ctx, req)
			}, func(w io.Writer, resp *cpv1.ListTenantAuditResponse) error { return writeAudit(w, args[0], resp) })
		},
	}
	cmd.Flags().StringVar(&principal, "principal", "", "only this principal's records")
	cmd.Flags().StringVar(&since, "since", "", "only records at or after this time (RFC 3339, or a duration back from now)")
	cmd.Flags().Uint64Var(&after, "after", 0, "only the records after this tseq (the next page: the NEXT tseq printed)")
	cmd.Flags().Uint32Var(&limit, "limit", 0, "records to list (0: the cell's default, 100; at most 1000)")
	return cmd
}

// parseSince reads an RFC 3339 time or a duration back from now.
func parseSince(s string, now time.Time) (time.Time, error) {
	if d, err := time.ParseDuration(s); err == nil {
		if d < 0 {
			return time.Time{}, fmt.Errorf("a negative duration")
		}
		return now.Add(-d), nil
	}
	return time.Parse(time.RFC3339Nano, s)
}

func writeAudit(w io.Writer, tenant string, resp *cpv1.ListTenantAuditResponse) error {
	if _, err := fmt.Fprintf(w, "tenant %s, audit records on cell %s:\n\n", tenant, resp.GetCell()); err != nil {
		return err
	}
	t := newTable(w, "TSEQ", "TIME", "PRINCIPAL", "ORIGIN", "OPERATION", "TARGET", "REQUEST ID")
	for _, r := range resp.GetRecords() {
		t.row(fmt.Sprint(r.GetTseq()), time.Unix(0, r.GetTimeUnixNano()).UTC().Format(time.RFC3339Nano),
			r.GetPrincipal(), r.GetOrigin(), r.GetOp(), auditTarget(r), r.GetRequestId())
	}
	if err := t.flush(); err != nil {
		return err
	}
	if len(resp.GetRecords()) == 0 {
		if _, err := fmt.Fprintln(w, "(none)"); err != nil {
			return err
		}
	}
	if n := resp.GetNextAfterTseq(); n != 0 {
		_, err := fmt.Fprintf(w, "\nmore: --after %d\n", n)
		return err
	}
	return nil
}

func auditTarget(r *cellv1.AuditRecord) string {
	switch {
	case r.GetErasedAtTseq() != 0:
		return fmt.Sprintf("(erased at tseq %d)", r.GetErasedAtTseq())
	case r.GetEraseKind() != cellv1.EraseSubjectOp_KIND_UNSPECIFIED:
		e := r.GetErased()
		return fmt.Sprintf("%s sha256:%s…: %d contexts, %d keys, %d events, %d dedup, %d audit", enumName(r.GetEraseKind().String(), "KIND_"),
			hex.EncodeToString(r.GetEraseSubjectSha256())[:12], e.GetContextsDeleted(), e.GetMemoryKeysDeleted(), e.GetEventsScrubbed(),
			e.GetDedupRecordsScrubbed(), e.GetAuditRecordsRedacted())
	case r.GetContextId() != "":
		return "context " + r.GetContextId()
	case r.GetMemoryKey() != "":
		return "key " + r.GetMemoryKey()
	}
	return ""
}

func newTenantEraseCmd(a *app) *cobra.Command {
	var (
		principal, contextID, requestID string
		wait                            bool
		waitFor                         time.Duration
	)
	cmd := &cobra.Command{
		Use:   "erase <tenant> --principal <p> | --context <id> [--wait]",
		Short: "Erase a principal's or a context's data, change-log events and dedup records",
		Long: `Erase one subject from a tenant, provably: a principal (its contexts, labelled
cellplane.principal=<p>, the memory values it wrote last, and every
change-log event its requests logged) or a context (the context and every
event that named it, also after a plain delete). The owner cell deletes the
data and, in the same state-machine step, replaces the change-log events by
placeholders, forgets their dedup records and redacts their audit records;
the erase itself is audited with the subject's SHA-256, never its name.
The standby applies the same erase from the change log (docs/contexts.md
"Erasure").

The report says where it was applied: erased at tseq T on the owner cell,
and, with --wait, whether the standby has applied tseq T (else "pending";
the server bounds the wait). A retry with the same --request-id answers with
the first erase. Admin operators only.`,
		Example: `  cellctl tenant erase acme --principal alice@example.com --wait
  cellctl tenant erase acme --context chat-42 --request-id erase-chat-42`,
		Args: exactArgs("tenant"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if (principal == "") == (contextID == "") {
				return usageErrorf("exactly one of --principal and --context is required")
			}
			req := &cpv1.EraseSubjectRequest{Tenant: args[0], Principal: principal, ContextId: contextID, RequestId: requestID,
				Wait: durationpb.New(0)}
			if wait {
				req.Wait = durationpb.New(waitFor)
			}
			c, err := a.connect()
			if err != nil {
				return err
			}
			defer c.Close()
			// The call's time limit plus the wait for the standby.
			ctx, cancel := context.WithTimeout(cmd.Context(), c.timeout+req.GetWait().AsDuration())
			defer cancel()
			resp, err := c.api.EraseSubject(ctx, req)
			if err != nil {
				return c.explain(ctx, err)
			}
			return a.print(resp, func(w io.Writer) error { return writeErase(w, resp) })
		},
	}
	cmd.Flags().StringVar(&principal, "principal", "", "the principal to erase")
	cmd.Flags().StringVar(&contextID, "context", "", "the context to erase")
	cmd.Flags().StringVar(&requestID, "request-id", "", "idempotency key: a retry answers with the first erase")
	cmd.Flags().BoolVar(&wait, "wait", false, "wait for the standby to apply the erase (see --wait-for)")
	cmd.Flags().DurationVar(&waitFor, "wait-for", 30*time.Second, "with --wait, how long at most (the server caps it)")
	return cmd
}

func writeErase(w io.Writer, r *cpv1.EraseSubjectResponse) error {
	f := newFields(w)
	e := r.GetErased()
	f.add("Tenant", r.GetTenant())
	f.add("Erased", fmt.Sprintf("at tseq %d on cell %s, %s", r.GetTseq(), r.GetCell(), timeString(r.GetTime())))
	f.add("Removed", fmt.Sprintf("%d contexts, %d memory keys; scrubbed %d change-log events, %d dedup records, %d audit records",
		e.GetContextsDeleted(), e.GetMemoryKeysDeleted(), e.GetEventsScrubbed(), e.GetDedupRecordsScrubbed(), e.GetAuditRecordsRedacted()))
	if r.GetDeduplicated() {
		f.add("Retry", "answered with the first erase (same request id)")
	}
	switch {
	case r.GetStandbyCell() == "":
		f.add("Standby", "none")
	case r.GetStandbyApplied():
		f.add("Standby", fmt.Sprintf("applied by %s (at tseq %d, seen %s)", r.GetStandbyCell(), r.GetStandbyAppliedTseq(), timeString(r.GetStandbyObservedTime())))
	default:
		f.add("Standby", fmt.Sprintf("pending on %s (at tseq %d of %d); check with 'cellctl tenant get %s'", r.GetStandbyCell(), r.GetStandbyAppliedTseq(), r.GetTseq(), r.GetTenant()))
	}
	return f.flush()
}
