package main

import (
	"log/slog"

	"github.com/spf13/pflag"

	"github.com/cellplane/cellplane/cells/mcp"
	"github.com/cellplane/cellplane/cells/mcpauth"
	"github.com/cellplane/cellplane/controlplane/topo"
	"github.com/cellplane/cellplane/internal/auth"
)

// mcpFlags are the MCP worker's flags, shared by 'cell' (prefixed mcp-)
// and 'worker' (no prefix).
type mcpFlags struct {
	auth        string
	jwks        string
	issuer      string
	tenantClaim string
	origins     string
	maxBody     int64
}

func (f *mcpFlags) register(fs *pflag.FlagSet, prefix string) {
	d := mcp.DefaultConfig()
	f.auth, f.tenantClaim, f.maxBody = "auto", auth.DefaultConfig().TenantClaim, d.MaxBodyBytes
	fs.StringVar(&f.auth, prefix+"auth", f.auth, "MCP authentication: apikey (tenant API keys from the registry), jwt (bearer JWTs whose audience is the tenant's MCP URL; API keys too), none, or auto (apikey with a registry, else none)")
	fs.StringVar(&f.jwks, prefix+"jwks-file", "", "jwt: JSON Web Key Set file with the RS256/ES256 verification keys")
	fs.StringVar(&f.issuer, prefix+"jwt-issuer", "", "jwt: required issuer (iss), also published as the authorization server")
	fs.StringVar(&f.tenantClaim, prefix+"jwt-tenant-claim", f.tenantClaim, "jwt: claim holding the tenant id")
	fs.StringVar(&f.origins, prefix+"allowed-origins", "", "comma-separated browser origins allowed to call (scheme://host[:port]); requests with another Origin get 403 (default: same host only)")
	fs.Int64Var(&f.maxBody, prefix+"max-body-bytes", f.maxBody, "largest MCP request body (413 above it)")
}

// apply sets the worker configuration from the flags.
func (f *mcpFlags) apply(cfg *mcp.Config) {
	cfg.AllowedOrigins = splitList(f.origins)
	cfg.MaxBodyBytes = f.maxBody
}

// authenticator builds the MCP authenticator; nil means no authentication.
func (f *mcpFlags) authenticator(registry topo.Store, log *slog.Logger) (mcp.Authenticator, error) {
	mode := f.auth
	if mode == "auto" {
		mode = "none"
		if registry != nil {
			mode = "apikey"
		}
	}
	switch mode {
	case "none":
		return nil, nil
	case "apikey":
		if registry == nil {
			return nil, usageErrorf("MCP auth apikey needs the registry (--etcd-endpoints): API keys live there")
		}
		return mcpauth.New(mcpauth.Config{Registry: registry})
	case "jwt":
		jc := auth.DefaultConfig()
		jc.JWKSFile, jc.Issuer, jc.TenantClaim, jc.Logger = f.jwks, f.issuer, f.tenantClaim, log
		return mcpauth.New(mcpauth.Config{Registry: registry, JWT: &jc})
	}
	return nil, usageErrorf("MCP auth must be auto, apikey, jwt or none, got %q", f.auth)
}
