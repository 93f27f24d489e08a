package catalog

import (
	"cmp"
	"context"
	"slices"

	"github.com/cellplane/cellplane/controlplane/topo"
	cpv1 "github.com/cellplane/cellplane/proto/cellplane/controlplane/v1"
)

// Moves: moves/<id> holds a Move (a live move of a tenant to another
// cell). The records are bounded: the unfinished ones plus the kept history.

// NewMove is an empty Move, for the generic helpers.
func NewMove() *cpv1.Move { return &cpv1.Move{} }

// GetMove reads moves/<id> (topo.ErrNotFound when absent).
func GetMove(ctx context.Context, st topo.Store, id string) (*cpv1.Move, topo.Version, error) {
	mv := &cpv1.Move{}
	v, err := Get(ctx, st, topo.MoveKey(id), mv)
	return mv, v, err
}

// ListMoves lists every move record, oldest first (by creation time, then
// id), at one revision.
func ListMoves(ctx context.Context, st topo.Store) ([]Record[*cpv1.Move], topo.Revision, error) {
	out, rev, err := ListRecords(ctx, st, topo.MovesPrefix, topo.KindMove, NewMove)
	slices.SortFunc(out, func(a, b Record[*cpv1.Move]) int {
		return cmp.Or(a.Value.GetCreateTime().AsTime().Compare(b.Value.GetCreateTime().AsTime()), cmp.Compare(a.Value.GetId(), b.Value.GetId()))
	})
	return out, rev, err
}

// MoveEvent decodes a watch event that puts a move.
func MoveEvent(ev topo.Event) (Record[*cpv1.Move], bool, error) {
	return DecodePut(ev, topo.KindMove, NewMove)
}
