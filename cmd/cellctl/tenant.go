package main

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/types/known/durationpb"

	cpv1 "github.com/cellplane/cellplane/proto/cellplane/controlplane/v1"
)

func newTenantCmd(a *app) *cobra.Command {
	return group("tenant", "Create, inspect, list, update and delete tenants and their API keys",
		`A tenant is a customer whose agents' context lives in one owner cell of its
home region. Creating a tenant places it: the control plane picks a cell (or
takes --cell), the cell makes the tenant its owner at epoch 1, and the
placement is published to routers. Deleting a tenant removes its data and
its API keys for good.`,
		`  cellctl tenant create acme --region eu-west-1 --rate 100 --burst 200
  cellctl tenant get acme
  cellctl tenant list --region eu-west-1 --state active
  cellctl tenant key create acme
  cellctl tenant update acme --rate 200 --deletion-protection=false
  cellctl tenant delete acme --yes`,
		newTenantCreateCmd(a),
		newTenantGetCmd(a),
		newTenantListCmd(a),
		newTenantUpdateCmd(a),
		newTenantDeleteCmd(a),
		newKeyCmd(a),
		newTokenCmd(a),                                                          // token.go
		newTenantFailoverCmd(a), newTenantPromoteCmd(a), newTenantChangesCmd(a), // failover.go
		newTenantAuditCmd(a), newTenantEraseCmd(a), // audit.go
		newTenantMoveCmd(a), newStandbyCmd(a), // move.go, standby.go
	)
}

func newTenantCreateCmd(a *app) *cobra.Command {
	var (
		region, cell, standbyRegion string
		limits                      cpv1.TenantLimits
		retention                   time.Duration
		protect                     bool
		requestID                   string
	)
	cmd := &cobra.Command{
		Use:   "create <id> --region <region>",
		Short: "Place a new tenant on a cell",
		Long: `Create a tenant in its home region. The placement policy picks an ACTIVE cell
of the region with room left, unless --cell names one. The command returns
when the placement is published (the tenant is ACTIVE and routable) or the
creation failed. --rate, --burst, --bytes-rate, --bytes-burst and --max-bytes
are the tenant's limits (0: the components' defaults): requests per second
and burst, request bytes per second and burst at the routers, and the bytes
it may store in its cell. With --deletion-protection the control plane
refuses to delete the tenant until 'cellctl tenant update
--deletion-protection=false' turns it off.`,
		Example: `  cellctl tenant create acme --region eu-west-1 --deletion-protection
  cellctl tenant create globex --region eu-west-1 --cell eu1-b --rate 50 --burst 100 --max-bytes 10000000000
  cellctl tenant create hooli --region eu-west-1 --bytes-rate 1048576 --bytes-burst 4194304
  cellctl tenant create initech --region eu-west-1 --standby-region us-east-1`,
		Args: exactArgs("id"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if region == "" {
				return usageErrorf("--region is required")
			}
			if limits.Rate < 0 {
				return usageErrorf("--rate %g: must not be negative", limits.Rate)
			}
			if limits.BytesRate < 0 {
				return usageErrorf("--bytes-rate %g: must not be negative", limits.BytesRate)
			}
			c, err := a.connect()
			if err != nil {
				return err
			}
			defer c.Close()
			req := &cpv1.CreateTenantRequest{Id: args[0], HomeRegion: region, Cell: cell, StandbyRegion: standbyRegion, DeletionProtection: protect, RequestId: requestID}
			if limits.Rate != 0 || limits.Burst != 0 || limits.MaxBytes != 0 || limits.BytesRate != 0 || limits.BytesBurst != 0 || retention != 0 {
				req.Limits = &cpv1.TenantLimits{Rate: limits.Rate, Burst: limits.Burst, MaxBytes: limits.MaxBytes,
					BytesRate: limits.BytesRate, BytesBurst: limits.BytesBurst}
				if retention != 0 {
					req.Limits.DefaultRetention = durationpb.New(retention)
				}
			}
			resp, err := call(cmd.Context(), c, func(ctx context.Context, api cpv1.ControlPlaneServiceClient) (*cpv1.CreateTenantResponse, error) {
				return api.CreateTenant(ctx, req)
			})
			if err != nil {
				return err
			}
			return a.print(resp, func(w io.Writer) error {
				t := resp.GetTenant()
				standby := ""
				if t.GetStandbyCell() != "" {
					standby = ", standby " + t.GetStandbyCell()
				}
				_, err := fmt.Fprintf(w, "tenant %s created on cell %s (region %s, epoch %d, %s%s)\n",
					t.GetId(), t.GetCell(), t.GetHomeRegion(), t.GetEpoch(), tenantState(t.GetState()), standby)
				return err
			})
		},
	}
	cmd.Flags().StringVar(&region, "region", "", "the tenant's home region (required)")
	cmd.Flags().StringVar(&cell, "cell", "", "place on this cell instead of letting the policy choose")
	cmd.Flags().StringVar(&standbyRegion, "standby-region", "", "give the tenant a standby in this (other) region")
	cmd.Flags().Float64Var(&limits.Rate, "rate", 0, "requests per second of the tenant's token bucket (0: default)")
	cmd.Flags().Uint32Var(&limits.Burst, "burst", 0, "burst of the tenant's token bucket (0: default)")
	cmd.Flags().Uint64Var(&limits.MaxBytes, "max-bytes", 0, "bytes the tenant may store (0: default)")
	cmd.Flags().DurationVar(&retention, "default-retention", 0, "contexts and memory keys written without an expiry expire this long after the write (0: the cell's default)")
	cmd.Flags().Float64Var(&limits.BytesRate, "bytes-rate", 0, "request bytes per second of the tenant's byte bucket at the routers (0: the router's --tenant-bytes-rate)")
	cmd.Flags().Uint32Var(&limits.BytesBurst, "bytes-burst", 0, "burst of the tenant's byte bucket, at least its largest request (0: the router's --tenant-bytes-burst)")
	cmd.Flags().BoolVar(&protect, "deletion-protection", false, "refuse to delete the tenant until this is turned off")
	cmd.Flags().StringVar(&requestID, "request-id", "", "idempotency key: a retry with the same id returns what the first call started instead of starting another (a different request with it is refused: REQUEST_ID_REUSED)")
	return cmd
}

func newTenantUpdateCmd(a *app) *cobra.Command {
	var (
		limits    cpv1.TenantLimits
		retention time.Duration
		protect   bool
		version   uint64
	)
	cmd := &cobra.Command{
		Use:   "update <id> [--rate R] [--burst B] [--bytes-rate R] [--bytes-burst B] [--deletion-protection=true|false]",
		Short: "Change a tenant's limits or its deletion protection",
		Long: `Change a tenant's limits (a flag not given keeps its value; 0: the
components' default) or turn its deletion protection on or off. Routers
apply new limits as soon as they see the placement change. The limits
are read, changed and written back only if the tenant did not change
meanwhile (REVISION_MISMATCH otherwise: run it again); --expected-version
makes the whole update conditional on the version 'cellctl tenant get -o
json' showed. --max-bytes is the tenant's storage quota at its cell: the
update returns once the cell enforces it (the controller pushes it; the
tenant must be ACTIVE).`,
		Example: `  cellctl tenant update acme --rate 200 --burst 400
  cellctl tenant update acme --bytes-rate 1048576 --bytes-burst 4194304
  cellctl tenant update acme --max-bytes 10737418240
  cellctl tenant update acme --deletion-protection=false`,
		Args: exactArgs("id"),
		RunE: func(cmd *cobra.Command, args []string) error {
			f := cmd.Flags()
			limitFlags := []string{"rate", "burst", "bytes-rate", "bytes-burst", "max-bytes", "default-retention"}
			changed := slices.ContainsFunc(limitFlags, f.Changed)
			if !changed && !f.Changed("deletion-protection") {
				return usageErrorf("nothing to change: give a limit (--rate, --burst, --bytes-rate, --bytes-burst, --max-bytes) or --deletion-protection")
			}
			if limits.Rate < 0 {
				return usageErrorf("--rate %g: must not be negative", limits.Rate)
			}
			if limits.BytesRate < 0 {
				return usageErrorf("--bytes-rate %g: must not be negative", limits.BytesRate)
			}
			c, err := a.connect()
			if err != nil {
				return err
			}
			defer c.Close()
			req := &cpv1.UpdateTenantRequest{Id: args[0], ExpectedVersion: version}
			if f.Changed("deletion-protection") {
				req.DeletionProtection = &protect
			}
			if changed {
				// The limits are replaced as a whole: keep what is not
				// given, and write only over the version read.
				cur, err := call(cmd.Context(), c, func(ctx context.Context, api cpv1.ControlPlaneServiceClient) (*cpv1.GetTenantResponse, error) {
					return api.GetTenant(ctx, &cpv1.GetTenantRequest{Id: args[0]})
				})
				if err != nil {
					return err
				}
				if version == 0 {
					req.ExpectedVersion = cur.GetVersion()
				}
				l := cur.GetTenant().GetLimits()
				req.Limits = &cpv1.TenantLimits{Rate: l.GetRate(), Burst: l.GetBurst(), MaxBytes: l.GetMaxBytes(), BytesRate: l.GetBytesRate(), BytesBurst: l.GetBytesBurst(),
					DefaultRetention: l.GetDefaultRetention()}
				if f.Changed("rate") {
					req.Limits.Rate = limits.Rate
				}
				if f.Changed("burst") {
					req.Limits.Burst = limits.Burst
				}
				if f.Changed("bytes-rate") {
					req.Limits.BytesRate = limits.BytesRate
				}
				if f.Changed("bytes-burst") {
					req.Limits.BytesBurst = limits.BytesBurst
				}
				if f.Changed("max-bytes") {
					req.Limits.MaxBytes = limits.MaxBytes
				}
				if f.Changed("default-retention") {
					req.Limits.DefaultRetention = durationpb.New(retention)
				}
			}
			resp, err := call(cmd.Context(), c, func(ctx context.Context, api cpv1.ControlPlaneServiceClient) (*cpv1.UpdateTenantResponse, error) {
				return api.UpdateTenant(ctx, req)
			})
			if err != nil {
				return err
			}
			return a.print(resp, func(w io.Writer) error {
				t := resp.GetTenant()
				_, err := fmt.Fprintf(w, "tenant %s updated (version %d, deletion protection %s)\n", t.GetId(), resp.GetVersion(), onOff(t.GetDeletionProtection()))
				return err
			})
		},
	}
	cmd.Flags().Float64Var(&limits.Rate, "rate", 0, "requests per second of the tenant's token bucket (0: default)")
	cmd.Flags().Uint32Var(&limits.Burst, "burst", 0, "burst of the tenant's token bucket (0: default)")
	cmd.Flags().Float64Var(&limits.BytesRate, "bytes-rate", 0, "request bytes per second of the tenant's byte bucket at the routers (0: the router's --tenant-bytes-rate)")
	cmd.Flags().Uint32Var(&limits.BytesBurst, "bytes-burst", 0, "burst of the tenant's byte bucket, at least its largest request (0: the router's --tenant-bytes-burst)")
	cmd.Flags().Uint64Var(&limits.MaxBytes, "max-bytes", 0, "bytes the tenant may store at its cell (0: the cell's default)")
	cmd.Flags().DurationVar(&retention, "default-retention", 0, "contexts and memory keys written without an expiry expire this long after the write, at its cell (0: the cell's default)")
	cmd.Flags().BoolVar(&protect, "deletion-protection", false, "turn deletion protection on (true) or off (false)")
	cmd.Flags().Uint64Var(&version, "expected-version", 0, "update only if the tenant is still at this version (0: the version read now)")
	return cmd
}

// onOff names a boolean setting.
func onOff(b bool) string {
	if b {
		return "on"
	}
	return "off"
}

func newTenantGetCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "get <id>",
		Short: "Show a tenant's placement and limits",
		Long: `Show a tenant's placement: its home region, owner cell, standby cell,
state and epoch (which grows each time the tenant moves), and its limits.
When the tenant has a standby, its lag behind the owner (events and time,
as the standby cell's leader reports it) is shown too; an operation in
progress (a move, a failover) is named.`,
		Example: `  cellctl tenant get acme
  cellctl tenant get acme -o json`,
		Args: exactArgs("id"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return do(a, cmd.Context(), func(ctx context.Context, api cpv1.ControlPlaneServiceClient) (*cpv1.GetTenantResponse, error) {
				return api.GetTenant(ctx, &cpv1.GetTenantRequest{Id: args[0]})
			}, func(w io.Writer, resp *cpv1.GetTenantResponse) error {
				t := resp.GetTenant()
				f := newFields(w)
				f.add("Tenant", t.GetId())
				f.add("Home region", t.GetHomeRegion())
				f.add("Cell", t.GetCell())
				f.add("Standby cell", t.GetStandbyCell())
				if r := resp.GetReplication(); r != nil {
					f.add("Standby lag", standbyLine(r)) // standby.go
				}
				if op := t.GetOperationId(); op != "" {
					f.add("Operation", op)
				}
				f.add("State", tenantState(t.GetState()))
				f.add("Epoch", fmt.Sprint(t.GetEpoch()))
				l := t.GetLimits()
				rate := "default"
				if l.GetRate() != 0 {
					rate = fmt.Sprintf("%g/s", l.GetRate())
				}
				f.add("Rate", rate)
				f.add("Burst", limit(uint64(l.GetBurst()), "default"))
				bytesRate := "default"
				if l.GetBytesRate() != 0 {
					bytesRate = fmt.Sprintf("%g B/s", l.GetBytesRate())
				}
				f.add("Bytes rate", bytesRate)
				f.add("Bytes burst", limit(uint64(l.GetBytesBurst()), "default"))
				f.add("Max bytes", limit(l.GetMaxBytes(), "default"))
				f.add("Deletion protection", onOff(t.GetDeletionProtection()))
				f.add("Created", timeString(t.GetCreateTime()))
				f.add("Updated", timeString(t.GetUpdateTime()))
				return f.flush()
			})
		},
	}
}

// tenantStates are the values of --state.
var tenantStates = []string{"active", "creating", "deleting"}

func parseTenantState(s string) (cpv1.TenantState, error) {
	if s == "" {
		return cpv1.TenantState_TENANT_STATE_UNSPECIFIED, nil
	}
	v, ok := cpv1.TenantState_value["TENANT_STATE_"+strings.ToUpper(s)]
	if !ok || v == 0 {
		return 0, usageErrorf("--state %q: want one of %s", s, strings.Join(tenantStates, ", "))
	}
	return cpv1.TenantState(v), nil
}

func tenantState(s cpv1.TenantState) string {
	return enumName(s.String(), "TENANT_STATE_")
}

func newTenantListCmd(a *app) *cobra.Command {
	var (
		req   cpv1.ListTenantsRequest
		state string
		all   bool
	)
	cmd := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List tenants, a page at a time",
		Long: `List tenants' placements by id, optionally only those on one cell, in one
region or in one state. The control plane answers a page at a time
(--page-size, default 100, at most 1000); when there is more, the table ends
with the command for the next page (--page-token), and -o json/yaml carry
nextPageToken. --all follows the pages to the end and prints them as one.`,
		Example: `  cellctl tenant list
  cellctl tenant list --cell eu1-a --state active
  cellctl tenant list --page-size 50 --page-token <token>
  cellctl tenant list --all -o json`,
		Args: exactArgs(),
		RunE: func(cmd *cobra.Command, args []string) error {
			st, err := parseTenantState(state)
			if err != nil {
				return err
			}
			if all && req.PageToken != "" {
				return usageErrorf("--all and --page-token are exclusive")
			}
			req.State = st
			c, err := a.connect()
			if err != nil {
				return err
			}
			defer c.Close()
			resp := &cpv1.ListTenantsResponse{}
			for {
				page, err := call(cmd.Context(), c, func(ctx context.Context, api cpv1.ControlPlaneServiceClient) (*cpv1.ListTenantsResponse, error) {
					return api.ListTenants(ctx, &req)
				})
				if err != nil {
					return err
				}
				resp.Tenants = append(resp.Tenants, page.GetTenants()...)
				resp.NextPageToken = page.GetNextPageToken()
				if !all || page.GetNextPageToken() == "" {
					break
				}
				if page.GetNextPageToken() == req.PageToken {
					return fmt.Errorf("the control plane returned the same page token %q twice", req.PageToken)
				}
				req.PageToken = page.GetNextPageToken()
			}
			return a.print(resp, func(w io.Writer) error {
				t := newTable(w, "TENANT", "REGION", "CELL", "STANDBY", "STATE", "EPOCH", "CREATED")
				for _, tn := range resp.GetTenants() {
					t.row(tn.GetId(), tn.GetHomeRegion(), tn.GetCell(), tn.GetStandbyCell(),
						tenantState(tn.GetState()), fmt.Sprint(tn.GetEpoch()), timeString(tn.GetCreateTime()))
				}
				if err := t.flush(); err != nil {
					return err
				}
				if resp.GetNextPageToken() != "" {
					_, err := fmt.Fprintf(w, "\nMore tenants: add --page-token %s (or use --all)\n", resp.GetNextPageToken())
					return err
				}
				return nil
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&req.Cell, "cell", "", "only the tenants owned by this cell")
	f.StringVar(&req.Region, "region", "", "only the tenants of this home region")
	f.StringVar(&state, "state", "", "only the tenants in this state: "+strings.Join(tenantStates, ", "))
	f.Uint32Var(&req.PageSize, "page-size", 0, "tenants per page (0: the control plane's default, 100; at most 1000)")
	f.StringVar(&req.PageToken, "page-token", "", "the page to list, from the previous page's answer")
	f.BoolVar(&all, "all", false, "follow the pages to the end")
	_ = cmd.RegisterFlagCompletionFunc("state", cobra.FixedCompletions(tenantStates, cobra.ShellCompDirectiveNoFileComp))
	return cmd
}

func newTenantDeleteCmd(a *app) *cobra.Command {
	var yes bool
	cmd := &cobra.Command{
		Use:   "delete <id> --yes",
		Short: "Delete a tenant, its data and its API keys",
		Long: `Delete a tenant: its placement is tombstoned (routers stop sending it
requests), its owner cell removes all its data, then the record and its API
keys are removed. This cannot be undone, so the command wants --yes. It
returns when the deletion is done. A tenant with deletion protection on is
refused (DELETION_PROTECTED) and nothing changes: 'cellctl tenant update
<id> --deletion-protection=false' first.`,
		Example: `  cellctl tenant delete acme --yes`,
		Args:    exactArgs("id"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if !yes {
				return usageErrorf("deleting tenant %q removes its data and API keys for good; add --yes to confirm", args[0])
			}
			return do(a, cmd.Context(), func(ctx context.Context, api cpv1.ControlPlaneServiceClient) (*cpv1.DeleteTenantResponse, error) {
				return api.DeleteTenant(ctx, &cpv1.DeleteTenantRequest{Id: args[0]})
			}, func(w io.Writer, resp *cpv1.DeleteTenantResponse) error {
				_, err := fmt.Fprintf(w, "tenant %s deleted\n", args[0])
				return err
			})
		},
	}
	cmd.Flags().BoolVar(&yes, "yes", false, "confirm the deletion")
	return cmd
}
