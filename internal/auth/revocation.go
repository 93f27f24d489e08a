package auth

import (
	"encoding/base64"
	"time"
)

// A tenant's JWT revocation list is kept in the registry
// (tenants/<t>/revoked/<entry id>, written by the control plane's
// RevokeToken) and honoured wherever JWTs are verified: the router (its
// routing table) and the MCP workers. An entry revokes either one token
// (by its jti) or a subject's tokens issued up to the revocation (by sub;
// a token without iat counts as issued before). Past its expiry an entry
// is ignored.

// RevocationEntry is one entry of a tenant's revocation list.
type RevocationEntry struct {
	// RevokedAt: a subject entry refuses the tokens issued at or before it.
	RevokedAt time.Time
	// ExpiresAt: the entry is ignored from then on.
	ExpiresAt time.Time
}

// Prefixes of an entry id.
const (
	revokedSubjectPrefix = "sub-"
	revokedJTIPrefix     = "jti-"
)

// RevokedSubjectID is the entry id revoking subject's tokens: "sub-" and
// the base64url (unpadded) subject, so any string fits a key segment.
func RevokedSubjectID(subject string) string {
	return revokedSubjectPrefix + base64.RawURLEncoding.EncodeToString([]byte(subject))
}

// RevokedJTIID is the entry id revoking the token jti.
func RevokedJTIID(jti string) string {
	return revokedJTIPrefix + base64.RawURLEncoding.EncodeToString([]byte(jti))
}

// Revoked reports whether a JWT identity is revoked at now by its tenant's
// entries, which lookup finds by entry id.
func Revoked(id Identity, now time.Time, lookup func(entryID string) (RevocationEntry, bool)) bool {
	if id.JTI != "" {
		if e, ok := lookup(RevokedJTIID(id.JTI)); ok && now.Before(e.ExpiresAt) {
			return true
		}
	}
	if id.Subject != "" {
		if e, ok := lookup(RevokedSubjectID(id.Subject)); ok && now.Before(e.ExpiresAt) &&
			(id.IssuedAt.IsZero() || !id.IssuedAt.After(e.RevokedAt)) {
			return true
		}
	}
	return false
}
