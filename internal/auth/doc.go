// Package auth authenticates the requests that reach the platform's edges,
// the global router and the cells' MCP workers, for gRPC (metadata) and
// HTTP (headers) alike: the caller passes the "authorization" value (or the
// "x-api-key" value) and gets an Identity or an UNAUTHENTICATED
// *cperr.Error (docs/errors.md). It also makes and checks tenant API keys
// (NewKey, HashKey, KeyID, VerifyKey) for the control plane that issues
// them. It imports no component: whoever stores the keys implements
// KeyLookup.
//
// Credentials:
//
//   - Tenant API keys ("cpk_<16 hex id>_<43 base64url chars>", created by
//     cellctl through the control plane with NewKey, stored as SHA-256
//     only, HashKey) as "authorization: Bearer cpk_..." or "x-api-key:
//     cpk_...". The key is looked up by id (KeyID) through a KeyLookup (the
//     router's routing table) and compared in constant time (VerifyKey).
//     Unknown, revoked and wrong keys all fail with the same "invalid API
//     key".
//   - JWT bearer tokens (ModeJWT), verified against a JWKS file parsed here
//     (RFC 7517: RSA keys for RS256, EC P-256 keys for ES256, by kid). Only
//     RS256 and ES256 are accepted, and the key named by kid must be of the
//     header's algorithm: "none", HS256 signed with a public key and other
//     algorithm-confusion tricks fail. The issuer must match exactly, the
//     audience must contain Config.Audience (or, with PerRequestAudience,
//     the one given to AuthenticateFor, e.g. the tenant's MCP URL), exp is
//     required, exp/nbf/iat are checked with Config.Leeway, the tenant comes
//     from the string claim Config.TenantClaim and the subject from "sub".
//     ReloadJWKS re-reads the file when keys rotate.
//   - ModeNone (--auth=none) accepts everything, for local development only;
//     New logs a warning saying so, and callers must then name their tenant.
//
// Error messages are short and never contain the credentials.
// WWWAuthenticate gives the RFC 6750 challenge for a 401 (or 403).
//
// Usage at an edge:
//
//	a, err := auth.New(cfg, table)
//	...
//	id, err := a.Authenticate(ctx, md.Get("authorization"))   // or a.AuthenticateAPIKey(r.Header.Get("x-api-key"))
//	if err != nil {
//		w.Header().Set("WWW-Authenticate", a.WWWAuthenticate(err)) // HTTP 401
//		return err
//	}
//	tenant, err := auth.CheckTenant(id, md.Get("x-cellplane-tenant")) // mismatch: PERMISSION_DENIED
//
// Making a key (control plane):
//
//	id, secret, hash, err := auth.NewKey() // store hash under id; show secret once
package auth
