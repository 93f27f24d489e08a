package catalog

import (
	"context"

	"github.com/cellplane/cellplane/controlplane/topo"
	cpv1 "github.com/cellplane/cellplane/proto/cellplane/controlplane/v1"
)

// Regions: regions/<r> holds a Region.

// NewRegion is an empty Region, for the generic helpers.
func NewRegion() *cpv1.Region { return &cpv1.Region{} }

// GetRegion reads regions/<name>.
func GetRegion(ctx context.Context, st topo.Store, name string) (*cpv1.Region, topo.Version, error) {
	r := &cpv1.Region{}
	v, err := Get(ctx, st, topo.RegionKey(name), r)
	return r, v, err
}

// Regions lists every region, by name.
func Regions(ctx context.Context, st topo.Store) ([]*cpv1.Region, error) {
	out, _, err := List(ctx, st, topo.RegionsPrefix, topo.KindRegion, NewRegion)
	return out, err
}
