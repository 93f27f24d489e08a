package catalog

import (
	"context"

	"github.com/cellplane/cellplane/controlplane/topo"
	cpv1 "github.com/cellplane/cellplane/proto/cellplane/controlplane/v1"
)

// Drains: drains/<c> holds the DrainCellRequest that started draining
// cell c (the concurrency asked for; 0: the controller's default). The
// record goes when the drain ends.

// NewDrain is an empty drain record, for the generic helpers.
func NewDrain() *cpv1.DrainCellRequest { return &cpv1.DrainCellRequest{} }

// GetDrain reads drains/<cell> (topo.ErrNotFound when the cell is not
// being drained).
func GetDrain(ctx context.Context, st topo.Store, cell string) (*cpv1.DrainCellRequest, topo.Version, error) {
	d := &cpv1.DrainCellRequest{}
	v, err := Get(ctx, st, topo.DrainKey(cell), d)
	return d, v, err
}

// ListDrains lists every recorded drain, by cell, at one revision.
func ListDrains(ctx context.Context, st topo.Store) ([]Record[*cpv1.DrainCellRequest], topo.Revision, error) {
	return ListRecords(ctx, st, topo.DrainsPrefix, topo.KindDrain, NewDrain)
}
