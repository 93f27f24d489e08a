package catalog

import (
	"context"

	"github.com/cellplane/cellplane/controlplane/topo"
	cpv1 "github.com/cellplane/cellplane/proto/cellplane/controlplane/v1"
)

// Fences: cells/<c>/fence/<t> holds a CellFence, written by an emergency
// promotion: cell c must fence tenant t at the fence's epoch, and reports
// (applied, tseq) in the same record once it has.

// NewFence is an empty CellFence, for the generic helpers.
func NewFence() *cpv1.CellFence { return &cpv1.CellFence{} }

// GetFence reads cells/<cell>/fence/<tenant> (topo.ErrNotFound when
// absent).
func GetFence(ctx context.Context, st topo.Store, cell, tenant string) (*cpv1.CellFence, topo.Version, error) {
	f := &cpv1.CellFence{}
	v, err := Get(ctx, st, topo.CellFenceKey(cell, tenant), f)
	return f, v, err
}

// ListFences lists a cell's fences, by tenant, at one revision.
func ListFences(ctx context.Context, st topo.Store, cell string) ([]Record[*cpv1.CellFence], topo.Revision, error) {
	return ListRecords(ctx, st, topo.CellFencePrefix(cell), topo.KindCellFence, NewFence)
}
