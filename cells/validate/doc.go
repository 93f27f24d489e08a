// Package validate checks cellplane API requests against explicit,
// configurable limits before anything is proposed to the cell store.
//
// Every limit lives in Limits (DefaultLimits gives the documented
// defaults). There is one validator per request message; each returns nil
// or a single cperr INVALID_ARGUMENT error that lists every field
// violation it found (not just the first), with field paths such as
// "entries[3].content", so that a client can fix a request in one round
// trip. Validation is pure: it never touches the store, so a request that
// fails it has had no effect at all.
//
// The id rule shared by tenants, contexts, nodes and request ids is 1 to
// MaxIDLen characters of [A-Za-z0-9._-] (package internal/ids).
//
// Usage:
//
//	lim := validate.DefaultLimits()
//	if err := lim.Validate(); err != nil {
//		return err // a misconfiguration
//	}
//	if err := validate.Append(lim, req); err != nil {
//		return err // *cperr.Error, reason INVALID_ARGUMENT
//	}
package validate
