// Package tenanttoken is the router-minted tenant token of the smart
// client's direct path (docs/security.md, "Tenant tokens (direct path)").
//
// A router that authenticated a tenant (API key or JWT) answers
// RouterService.Lookup with a token: short-lived, signed with an Ed25519
// key the cells trust (distributed and rotated through etcd by the
// control plane, package controlplane/tokenkeys), bound to the tenant, the
// owner cell, the tenant's epoch there, the cluster and an expiry. A cell
// serving mutual TLS accepts a ContextService call from a caller without
// a component certificate only with such a token, and only for that
// tenant, that cell and that epoch.
//
// The format is compact and has no alternatives to choose from (no
// algorithm field: Ed25519 only):
//
//	cpt1.<kid>.<base64url(claims JSON)>.<base64url(Ed25519 signature)>
//
// where the signature covers "cpt1.<kid>.<claims>" and kid names the
// public key in the cells' key set. Claims are decoded strictly (unknown
// or missing fields refuse the token), within explicit bounds
// (Config.MaxTokenBytes, MinTTL, MaxTTL, ClockSkew).
//
//	cfg := tenanttoken.DefaultConfig()
//	tok, exp, err := tenanttoken.Mint(cfg, key, tenanttoken.Claims{Tenant: "acme", Cell: "c1", Epoch: 3, Audience: "prod"}, time.Now())
//	claims, err := tenanttoken.Verify(cfg, keys, tok, "prod", time.Now())
//	// err: a cperr UNAUTHENTICATED that also wraps ErrExpired, ErrUnknownKey, ...
package tenanttoken
