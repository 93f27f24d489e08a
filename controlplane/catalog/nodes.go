package catalog

import (
	"context"

	"github.com/cellplane/cellplane/controlplane/topo"
	cpv1 "github.com/cellplane/cellplane/proto/cellplane/controlplane/v1"
)

// Nodes: cells/<c>/nodes/<n> holds a Node, leased by the node itself (it
// goes when the node stops renewing).

// NewNode is an empty Node, for the generic helpers.
func NewNode() *cpv1.Node { return &cpv1.Node{} }

// GetNode reads cells/<cell>/nodes/<node> with its metadata (the lease
// says which registration wrote it).
func GetNode(ctx context.Context, st topo.Store, cell, node string) (Record[*cpv1.Node], error) {
	return GetRecord(ctx, st, topo.CellNodeKey(cell, node), NewNode)
}

// ListNodes lists a cell's registered nodes, by id, at one revision.
// Records that do not decode are left out (a node's registration is
// rewritten within its TTL).
func ListNodes(ctx context.Context, st topo.Store, cell string) ([]Record[*cpv1.Node], topo.Revision, error) {
	return ListDecodable(ctx, st, topo.CellNodesPrefix(cell), topo.KindCellNode, NewNode)
}
