// Package ids is the one rule for the names the platform gives things:
// tenant, region, cell, node, context, move and request ids are 1 to
// MaxLen characters of [A-Za-z0-9._-].
//
// Every component checks ids here, so the rule, its bound and the words
// of its error have one home. A component may configure a lower bound
// (the limits of a cell, of the control plane API, of a replication
// source), but every default is MaxLen (docs/decisions.md, "One id rule").
//
//	if !ids.Valid(s, ids.MaxLen) { ... }
//	if err := ids.Check("tenant", req.GetTenant(), ids.MaxLen); err != nil {
//		return nil, err // *cperr.Error, INVALID_ARGUMENT naming the field
//	}
//
// An id built from other ids (a move id "<tenant>-<8 hex>", a request id
// "<move id>.cleanup") goes through Fit, which shortens it
// deterministically when it would exceed MaxLen.
//
// ids imports nothing but internal/cperr and the standard library: it is
// the ground floor every component stands on.
package ids
