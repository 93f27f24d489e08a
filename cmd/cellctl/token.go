package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/types/known/timestamppb"

	cpv1 "github.com/cellplane/cellplane/proto/cellplane/controlplane/v1"
)

func newTokenCmd(a *app) *cobra.Command {
	return group("token", "Revoke a tenant's JWTs",
		`Tenants whose agents authenticate with JWTs (router --auth jwt, MCP --auth jwt)
cannot have a token taken back by the issuer alone: it is valid until its exp.
The control plane keeps a revocation list per tenant that routers and MCP
workers honour: a subject (every token of it issued up to now) or one token
(its jti), until an expiry you choose (the longest remaining lifetime of the
tokens concerned).`,
		`  cellctl tenant token revoke acme --subject agent-7 --for 24h
  cellctl tenant token revoke acme --jti 0f9c2e --for 1h --reason leaked`,
		newTokenRevokeCmd(a),
	)
}

func newTokenRevokeCmd(a *app) *cobra.Command {
	var (
		subject, jti, reason string
		keep                 time.Duration
	)
	cmd := &cobra.Command{
		Use:   "revoke <tenant> (--subject <sub> | --jti <id>) --for <duration>",
		Short: "Put a JWT subject or token on the tenant's revocation list",
		Long: `Revoke a tenant's JWTs: with --subject, every token of that subject issued up
to now (and any without an iat); with --jti, that one token. Routers and MCP
workers refuse them within seconds (through their watch on the registry);
the entry is kept for --for, then ignored: make it at least the longest
remaining lifetime of the tokens concerned. New tokens issued to the subject
afterwards are accepted.`,
		Example: `  cellctl tenant token revoke acme --subject agent-7 --for 24h
  cellctl tenant token revoke acme --jti 0f9c2e --for 1h --reason leaked`,
		Args: exactArgs("tenant"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if (subject == "") == (jti == "") {
				return usageErrorf("give exactly one of --subject and --jti")
			}
			if keep <= 0 {
				return usageErrorf("--for must be positive (how long the tokens concerned may still be presented)")
			}
			exp := timestamppb.New(time.Now().Add(keep))
			return do(a, cmd.Context(), func(ctx context.Context, api cpv1.ControlPlaneServiceClient) (*cpv1.RevokeTokenResponse, error) {
				return api.RevokeToken(ctx, &cpv1.RevokeTokenRequest{Tenant: args[0], Subject: subject, Jti: jti, ExpireTime: exp, Reason: reason})
			}, func(w io.Writer, resp *cpv1.RevokeTokenResponse) error {
				r := resp.GetRevoked()
				what := "subject " + r.GetSubject()
				if r.GetJti() != "" {
					what = "token " + r.GetJti()
				}
				_, err := fmt.Fprintf(w, "%s of tenant %s revoked until %s\n", what, r.GetTenant(), timeString(r.GetExpireTime()))
				return err
			})
		},
	}
	cmd.Flags().StringVar(&subject, "subject", "", `the tokens' "sub": every token of it issued up to now`)
	cmd.Flags().StringVar(&jti, "jti", "", `one token's "jti"`)
	cmd.Flags().DurationVar(&keep, "for", 0, "how long the entry is kept (required): at least the longest remaining lifetime of the tokens concerned")
	cmd.Flags().StringVar(&reason, "reason", "", "why, kept with the entry")
	return cmd
}
