package catalog

import (
	"context"
	"github.com/cellplane/cellplane/controlplane/topo"
	"github.com/cellplane/cellplane/internal/auth"
	cpv1 "github.com/cellplane/cellplane/proto/cellplane/controlplane/v1"
)

// JWT revocation list: tenants/<t>/revoked/<id> holds a RevokedToken. The
// id names what is revoked: "sub-" or "jti-" and the base64url (no
// padding) of the subject or token id, so any string fits a key segment
// (auth.RevokedSubjectID, auth.RevokedJTIID).

// NewRevokedToken is an empty RevokedToken, for the generic helpers.
func NewRevokedToken() *cpv1.RevokedToken { return &cpv1.RevokedToken{} }

// RevokedSubjectID is the id of the entry revoking subject's tokens (the
// rule is internal/auth's, which matches tokens against the list).
func RevokedSubjectID(subject string) string { return auth.RevokedSubjectID(subject) }

// RevokedJTIID is the id of the entry revoking the token jti.
func RevokedJTIID(jti string) string { return auth.RevokedJTIID(jti) }

// RevokedTokenID is the id of a RevokedToken (its subject's or its jti's).
func RevokedTokenID(r *cpv1.RevokedToken) string {
	if r.GetJti() != "" {
		return RevokedJTIID(r.GetJti())
	}
	return RevokedSubjectID(r.GetSubject())
}

// ListRevokedTokens lists a tenant's revocation list at one revision.
func ListRevokedTokens(ctx context.Context, st topo.Store, tenant string) ([]Record[*cpv1.RevokedToken], topo.Revision, error) {
	return ListRecords(ctx, st, topo.TenantRevokedPrefix(tenant), topo.KindRevokedToken, NewRevokedToken)
}
