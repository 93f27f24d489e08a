package catalog

import (
	"context"

	"github.com/cellplane/cellplane/controlplane/topo"
	cpv1 "github.com/cellplane/cellplane/proto/cellplane/controlplane/v1"
)

// API keys: tenants/<t>/keys/<id> holds an ApiKey (the hash of the secret,
// never the secret).

// NewAPIKey is an empty ApiKey, for the generic helpers.
func NewAPIKey() *cpv1.ApiKey { return &cpv1.ApiKey{} }

// GetAPIKey reads tenants/<tenant>/keys/<id>.
func GetAPIKey(ctx context.Context, st topo.Store, tenant, id string) (*cpv1.ApiKey, topo.Version, error) {
	k := &cpv1.ApiKey{}
	v, err := Get(ctx, st, topo.APIKeyKey(tenant, id), k)
	return k, v, err
}

// ListAPIKeys lists a tenant's API keys, by id, at one revision.
func ListAPIKeys(ctx context.Context, st topo.Store, tenant string) ([]Record[*cpv1.ApiKey], topo.Revision, error) {
	return ListRecords(ctx, st, topo.TenantKeysPrefix(tenant), topo.KindAPIKey, NewAPIKey)
}
