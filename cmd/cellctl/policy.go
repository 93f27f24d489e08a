package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	cpv1 "github.com/cellplane/cellplane/proto/cellplane/controlplane/v1"
)

func newFailoverPolicyCmd(a *app) *cobra.Command {
	return group("failover-policy", "Show and set the automatic promotion policy",
		`The failover policy says whether the controller leader promotes the standbys
of a cell's tenants on its own once the cell has stayed unhealthy for a
delay, and for which regions' cells. It is stored in etcd and followed by
whichever replica leads; until it is first set, the leader's flags apply
(--auto-promote, --auto-promote-after, --auto-promote-regions), which is
what 'get' shows then ("stored: no"). A promotion may lose the writes a
standby had not received.`,
		`  cellctl failover-policy get
  cellctl failover-policy set --enabled --after 30s --regions us-east,eu-west
  cellctl failover-policy set --enabled=false`,
		newFailoverPolicyGetCmd(a),
		newFailoverPolicySetCmd(a),
	)
}

func newFailoverPolicyGetCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "get",
		Short: "Show the automatic promotion policy in force",
		Long: `Show the automatic promotion policy the controller leader follows: the stored
one, or the answering replica's flag defaults while none is stored.`,
		Example: `  cellctl failover-policy get
  cellctl failover-policy get -o json`,
		Args: exactArgs(),
		RunE: func(cmd *cobra.Command, args []string) error {
			return do(a, cmd.Context(), func(ctx context.Context, api cpv1.ControlPlaneServiceClient) (*cpv1.GetFailoverPolicyResponse, error) {
				return api.GetFailoverPolicy(ctx, &cpv1.GetFailoverPolicyRequest{})
			}, func(w io.Writer, resp *cpv1.GetFailoverPolicyResponse) error {
				return writePolicy(w, resp.GetPolicy(), resp.GetStored(), resp.GetVersion())
			})
		},
	}
}

func writePolicy(w io.Writer, p *cpv1.FailoverPolicy, stored bool, version uint64) error {
	f := newFields(w)
	f.add("Enabled", map[bool]string{true: "yes", false: "no"}[p.GetEnabled()])
	after := "the leader's default"
	if d := p.GetUnhealthyFor().AsDuration(); d > 0 {
		after = d.String()
	}
	f.add("Unhealthy for", after)
	regions := "all"
	if len(p.GetRegions()) > 0 {
		regions = strings.Join(p.GetRegions(), ",")
	}
	f.add("Regions", regions)
	f.add("Max concurrent", limit(uint64(p.GetMaxConcurrent()), "the leader's default"))
	if stored {
		f.add("Stored", fmt.Sprintf("yes (version %d)", version))
		f.add("Updated", timeString(p.GetUpdateTime()))
	} else {
		f.add("Stored", "no: the leader's flags apply")
	}
	return f.flush()
}

func newFailoverPolicySetCmd(a *app) *cobra.Command {
	var (
		enabled       bool
		after         time.Duration
		regions       []string
		maxConcurrent uint32
		version       uint64
	)
	cmd := &cobra.Command{
		Use:   "set [--enabled[=false]] [--after D] [--regions r1,r2] [--max-concurrent N]",
		Short: "Store the automatic promotion policy",
		Long: `Store the automatic promotion policy; the controller leader follows it from
its next pass (about a second). A flag not given keeps the policy's current
value (the flag defaults when none is stored yet). --after is how long a
cell must stay unhealthy (at least 1s; 0: the leader's --auto-promote-after),
--regions the regions whose cells it covers (empty: all), --max-concurrent
the most of its promotions in flight (0: the leader's default). The policy
is read and written back only if nobody changed it meanwhile
(REVISION_MISMATCH otherwise: run it again).`,
		Example: `  cellctl failover-policy set --enabled --after 30s
  cellctl failover-policy set --regions us-east,eu-west
  cellctl failover-policy set --enabled=false`,
		Args: exactArgs(),
		RunE: func(cmd *cobra.Command, args []string) error {
			f := cmd.Flags()
			if !f.Changed("enabled") && !f.Changed("after") && !f.Changed("regions") && !f.Changed("max-concurrent") {
				return usageErrorf("nothing to change: give --enabled, --after, --regions or --max-concurrent")
			}
			if after < 0 {
				return usageErrorf("--after %v: must not be negative", after)
			}
			c, err := a.connect()
			if err != nil {
				return err
			}
			defer c.Close()
			cur, err := call(cmd.Context(), c, func(ctx context.Context, api cpv1.ControlPlaneServiceClient) (*cpv1.GetFailoverPolicyResponse, error) {
				return api.GetFailoverPolicy(ctx, &cpv1.GetFailoverPolicyRequest{})
			})
			if err != nil {
				return err
			}
			p := proto.Clone(cur.GetPolicy()).(*cpv1.FailoverPolicy)
			p.UpdateTime = nil
			if f.Changed("enabled") {
				p.Enabled = enabled
			}
			if f.Changed("after") {
				p.UnhealthyFor = durationpb.New(after)
			}
			if f.Changed("regions") {
				p.Regions = regions
			}
			if f.Changed("max-concurrent") {
				p.MaxConcurrent = maxConcurrent
			}
			req := &cpv1.SetFailoverPolicyRequest{Policy: p, ExpectedVersion: cur.GetVersion()}
			if version != 0 {
				req.ExpectedVersion = version
			}
			resp, err := call(cmd.Context(), c, func(ctx context.Context, api cpv1.ControlPlaneServiceClient) (*cpv1.SetFailoverPolicyResponse, error) {
				return api.SetFailoverPolicy(ctx, req)
			})
			if err != nil {
				return err
			}
			return a.print(resp, func(w io.Writer) error {
				return writePolicy(w, resp.GetPolicy(), true, resp.GetVersion())
			})
		},
	}
	cmd.Flags().BoolVar(&enabled, "enabled", false, "promote automatically (true) or not (false)")
	cmd.Flags().DurationVar(&after, "after", 0, "how long a cell must stay unhealthy (at least 1s; 0: the leader's default)")
	cmd.Flags().StringSliceVar(&regions, "regions", nil, "the regions whose cells the policy covers, comma-separated (empty: all)")
	cmd.Flags().Uint32Var(&maxConcurrent, "max-concurrent", 0, "most of the policy's promotions in flight (0: the leader's default)")
	cmd.Flags().Uint64Var(&version, "expected-version", 0, "store only if the policy is still at this version (0: the version read now)")
	return cmd
}
