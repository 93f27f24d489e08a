// Package auth authenticates the requests of the global router (DESIGN §6,
// §10), for gRPC (metadata) and HTTP (headers) alike: the caller passes the
// "authorization" value (or the "x-api-key" value) and gets an Identity or
// an UNAUTHENTICATED *cperr.Error (DESIGN §9).
//
// Credentials:
//
//   - Tenant API keys ("cpk_<id>_<random>", created by cellctl, stored as
//     SHA-256 only) as "authorization: Bearer cpk_..." or "x-api-key:
//     cpk_...". The key is looked up by id through a KeyLookup (the routing
//     table) and compared in constant time. Unknown, revoked and wrong keys
//     all fail with the same "invalid API key".
//   - JWT bearer tokens (ModeJWT), verified against a JWKS file parsed here
//     (RFC 7517: RSA keys for RS256, EC P-256 keys for ES256, by kid). Only
//     RS256 and ES256 are accepted, and the key named by kid must be of the
//     header's algorithm: "none", HS256 signed with a public key and other
//     algorithm-confusion tricks fail. The issuer must match exactly, the
//     audience must contain Config.Audience, exp is required, exp/nbf/iat
//     are checked with Config.Leeway, the tenant comes from the string
//     claim Config.TenantClaim and the subject from "sub". ReloadJWKS
//     re-reads the file when keys rotate.
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
package auth
