package catalog

import (
	"context"
	"encoding/base64"
	"strings"

	"github.com/cellplane/cellplane/controlplane/topo"
	cpv1 "github.com/cellplane/cellplane/proto/cellplane/controlplane/v1"
)

// JWT revocation list: tenants/<t>/revoked/<id> holds a RevokedToken. The
// id names what is revoked: "sub-" or "jti-" and the base64url (no
// padding) of the subject or token id, so any string fits a key segment.

// Prefixes of a RevokedTokenID.
const (
	revokedSubject = "sub-"
	revokedJTI     = "jti-"
)

// NewRevokedToken is an empty RevokedToken, for the generic helpers.
func NewRevokedToken() *cpv1.RevokedToken { return &cpv1.RevokedToken{} }

// RevokedSubjectID is the id of the entry revoking subject's tokens.
func RevokedSubjectID(subject string) string {
	return revokedSubject + base64.RawURLEncoding.EncodeToString([]byte(subject))
}

// RevokedJTIID is the id of the entry revoking the token jti.
func RevokedJTIID(jti string) string {
	return revokedJTI + base64.RawURLEncoding.EncodeToString([]byte(jti))
}

// RevokedTokenID is the id of a RevokedToken (its subject's or its jti's).
func RevokedTokenID(r *cpv1.RevokedToken) string {
	if r.GetJti() != "" {
		return RevokedJTIID(r.GetJti())
	}
	return RevokedSubjectID(r.GetSubject())
}

// IsRevokedSubjectID reports whether id names a subject entry.
func IsRevokedSubjectID(id string) bool { return strings.HasPrefix(id, revokedSubject) }

// ListRevokedTokens lists a tenant's revocation list at one revision.
func ListRevokedTokens(ctx context.Context, st topo.Store, tenant string) ([]Record[*cpv1.RevokedToken], topo.Revision, error) {
	return ListRecords(ctx, st, topo.TenantRevokedPrefix(tenant), topo.KindRevokedToken, NewRevokedToken)
}
