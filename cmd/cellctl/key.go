package main

import (
	"context"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/cellplane/cellplane/internal/auth"
	cpv1 "github.com/cellplane/cellplane/proto/cellplane/controlplane/v1"
)

func newKeyCmd(a *app) *cobra.Command {
	return group("key", "Create, list and revoke a tenant's API keys",
		`A tenant's agents authenticate with API keys. The control plane keeps only a
hash of each key's secret: the secret is shown once, when the key is
created. A revoked key authenticates nothing.`,
		`  cellctl tenant key create acme --description "production agents"
  cellctl tenant key create acme --principal support-bot --scope contexts:read --scope memory:read
  cellctl tenant key create acme --replaces <old-key-id>   # rotate: same principal
  cellctl tenant key list acme
  cellctl tenant key revoke acme <key-id>`,
		newKeyCreateCmd(a),
		newKeyListCmd(a),
		newKeyRevokeCmd(a),
	)
}

func newKeyCreateCmd(a *app) *cobra.Command {
	var description, principal, replaces string
	var scopes []string
	cmd := &cobra.Command{
		Use:   "create <tenant>",
		Short: "Create an API key and print its secret once",
		Long: `Create an API key for a tenant and print its secret. The secret cannot be
shown again (the control plane keeps only its hash): store it now, in a
secret manager. With -o json or -o yaml the secret is the "secret" field.

A key acts for a principal (--principal; default: the key's id): what it
creates and its memory belong to that principal. --scope limits what it may
do (contexts:read, contexts:write, memory:read, memory:write, admin; repeat
the flag; default: every scope but admin). To rotate a key, create its
successor with --replaces <old-key-id>: the new key takes the old one's
principal and scopes, so the agent's contexts and memory stay reachable;
then revoke the old key.`,
		Example: `  cellctl tenant key create acme --description "production agents"
  cellctl tenant key create acme --principal support-bot --scope contexts:read --scope memory:read
  cellctl tenant key create acme --replaces 0123456789abcdef
  cellctl tenant key create acme -o json | jq -r .secret`,
		Args: exactArgs("tenant"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return do(a, cmd.Context(), func(ctx context.Context, api cpv1.ControlPlaneServiceClient) (*cpv1.CreateApiKeyResponse, error) {
				return api.CreateApiKey(ctx, &cpv1.CreateApiKeyRequest{Tenant: args[0], Description: description,
					Principal: principal, Scopes: scopes, Replaces: replaces})
			}, func(w io.Writer, resp *cpv1.CreateApiKeyResponse) error {
				k := resp.GetKey()
				_, err := fmt.Fprintf(w, "API key %s created for tenant %s (principal %s).\nSecret (shown only this once; it cannot be shown again, store it now):\n\n  %s\n",
					k.GetId(), k.GetTenant(), auth.KeyPrincipal(k.GetId(), k.GetPrincipal()), resp.GetSecret())
				return err
			})
		},
	}
	cmd.Flags().StringVar(&description, "description", "", "what the key is for, shown in listings")
	cmd.Flags().StringVar(&principal, "principal", "", "who the key acts for inside the tenant ([A-Za-z0-9._@+-]; default: the key's id)")
	cmd.Flags().StringArrayVar(&scopes, "scope", nil, "a scope the key holds (repeatable; default: every scope but admin)")
	cmd.Flags().StringVar(&replaces, "replaces", "", "rotate: the id of the key this one replaces (its principal and scopes carry over)")
	return cmd
}

func newKeyListCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:     "list <tenant>",
		Aliases: []string{"ls"},
		Short:   "List a tenant's API keys (never their secrets)",
		Long:    `List a tenant's API keys, revoked ones included, without their secrets.`,
		Example: `  cellctl tenant key list acme`,
		Args:    exactArgs("tenant"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return do(a, cmd.Context(), func(ctx context.Context, api cpv1.ControlPlaneServiceClient) (*cpv1.ListApiKeysResponse, error) {
				return api.ListApiKeys(ctx, &cpv1.ListApiKeysRequest{Tenant: args[0]})
			}, func(w io.Writer, resp *cpv1.ListApiKeysResponse) error {
				t := newTable(w, "KEY", "STATE", "PRINCIPAL", "SCOPES", "DESCRIPTION", "CREATED", "REVOKED")
				for _, k := range resp.GetKeys() {
					state := "ACTIVE"
					if k.GetRevokeTime() != nil {
						state = "REVOKED"
					}
					t.row(k.GetId(), state, auth.KeyPrincipal(k.GetId(), k.GetPrincipal()), auth.KeyScopes(k.GetScopes()).String(),
						k.GetDescription(), timeString(k.GetCreateTime()), timeString(k.GetRevokeTime()))
				}
				return t.flush()
			})
		},
	}
}

func newKeyRevokeCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "revoke <tenant> <key-id>",
		Short: "Revoke an API key",
		Long: `Revoke one of a tenant's API keys: from then on it authenticates nothing.
The key stays listed, as REVOKED.`,
		Example: `  cellctl tenant key revoke acme key-0001`,
		Args:    exactArgs("tenant", "key-id"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return do(a, cmd.Context(), func(ctx context.Context, api cpv1.ControlPlaneServiceClient) (*cpv1.RevokeApiKeyResponse, error) {
				return api.RevokeApiKey(ctx, &cpv1.RevokeApiKeyRequest{Tenant: args[0], Id: args[1]})
			}, func(w io.Writer, resp *cpv1.RevokeApiKeyResponse) error {
				_, err := fmt.Fprintf(w, "API key %s of tenant %s revoked\n", resp.GetKey().GetId(), resp.GetKey().GetTenant())
				return err
			})
		},
	}
}
