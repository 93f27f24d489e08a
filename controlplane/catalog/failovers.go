package catalog

import (
	"cmp"
	"context"
	"slices"

	"github.com/cellplane/cellplane/controlplane/topo"
	cpv1 "github.com/cellplane/cellplane/proto/cellplane/controlplane/v1"
)

// Failovers: failovers/<id> holds a Failover (a switchover or an emergency
// promotion of a tenant's standby). Ids are "<tenant>-e<epoch>-<kind>", so
// a tenant's failovers to one epoch share a key prefix.

// NewFailover is an empty Failover, for the generic helpers.
func NewFailover() *cpv1.Failover { return &cpv1.Failover{} }

// GetFailover reads failovers/<id> (topo.ErrNotFound when absent).
func GetFailover(ctx context.Context, st topo.Store, id string) (*cpv1.Failover, topo.Version, error) {
	fo := &cpv1.Failover{}
	v, err := Get(ctx, st, topo.FailoverKey(id), fo)
	return fo, v, err
}

// ListFailovers lists every failover record, oldest first (by creation
// time, then id), at one revision.
func ListFailovers(ctx context.Context, st topo.Store) ([]Record[*cpv1.Failover], topo.Revision, error) {
	out, rev, err := ListRecords(ctx, st, topo.FailoversPrefix, topo.KindFailover, NewFailover)
	slices.SortFunc(out, func(a, b Record[*cpv1.Failover]) int {
		return cmp.Or(a.Value.GetCreateTime().AsTime().Compare(b.Value.GetCreateTime().AsTime()), cmp.Compare(a.Value.GetId(), b.Value.GetId()))
	})
	return out, rev, err
}

// FailoverEvent decodes a watch event that puts a failover.
func FailoverEvent(ev topo.Event) (Record[*cpv1.Failover], bool, error) {
	return DecodePut(ev, topo.KindFailover, NewFailover)
}
