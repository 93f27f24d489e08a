package catalog

import (
	"context"

	"github.com/cellplane/cellplane/controlplane/topo"
	cpv1 "github.com/cellplane/cellplane/proto/cellplane/controlplane/v1"
)

// Leaders: cells/<c>/leader holds the CellLeader (the cell's Raft leader,
// leased by it); the controller replicas' election value is a
// ControllerLeader.

// NewCellLeader is an empty CellLeader, for the generic helpers.
func NewCellLeader() *cpv1.CellLeader { return &cpv1.CellLeader{} }

// GetCellLeader reads cells/<cell>/leader with its metadata (the lease
// says which publication wrote it). On ErrCorrupt the metadata is set.
func GetCellLeader(ctx context.Context, st topo.Store, cell string) (Record[*cpv1.CellLeader], error) {
	return GetRecord(ctx, st, topo.CellLeaderKey(cell), NewCellLeader)
}

// ControllerLeader reads the controller replicas' current leader
// (topo.ErrNotFound while none leads).
func ControllerLeader(ctx context.Context, st topo.Store) (*cpv1.ControllerLeader, error) {
	kv, err := st.Leader(ctx, topo.ControllerElection)
	if err != nil {
		return nil, err
	}
	l := &cpv1.ControllerLeader{}
	return l, Decode(kv, l)
}
