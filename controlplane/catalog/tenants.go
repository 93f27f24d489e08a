package catalog

import (
	"context"

	"github.com/cellplane/cellplane/controlplane/topo"
	cpv1 "github.com/cellplane/cellplane/proto/cellplane/controlplane/v1"
)

// Placements: tenants/<t> holds a Tenant (where the tenant lives, at which
// epoch, and which operation holds it).

// NewTenant is an empty Tenant, for the generic helpers.
func NewTenant() *cpv1.Tenant { return &cpv1.Tenant{} }

// GetTenant reads tenants/<id>.
func GetTenant(ctx context.Context, st topo.Store, id string) (*cpv1.Tenant, topo.Version, error) {
	t := &cpv1.Tenant{}
	v, err := Get(ctx, st, topo.TenantKey(id), t)
	return t, v, err
}

// ListTenants lists every placement, by id, at one revision.
func ListTenants(ctx context.Context, st topo.Store) ([]Record[*cpv1.Tenant], topo.Revision, error) {
	return ListRecords(ctx, st, topo.TenantsPrefix, topo.KindTenant, NewTenant)
}

// TenantsOf lists the placements owned by cell (a scan of tenants/).
func TenantsOf(ctx context.Context, st topo.Store, cell string) ([]*cpv1.Tenant, error) {
	recs, _, err := ListTenants(ctx, st)
	if err != nil {
		return nil, err
	}
	var out []*cpv1.Tenant
	for _, r := range recs {
		if r.Value.GetCell() == cell {
			out = append(out, r.Value)
		}
	}
	return out, nil
}

// TenantEvent decodes a watch event that puts a placement (ok false for a
// delete or another key under tenants/).
func TenantEvent(ev topo.Event) (Record[*cpv1.Tenant], bool, error) {
	return DecodePut(ev, topo.KindTenant, NewTenant)
}
