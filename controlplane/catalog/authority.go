package catalog

import (
	"context"

	"github.com/cellplane/cellplane/controlplane/topo"
	cpv1 "github.com/cellplane/cellplane/proto/cellplane/controlplane/v1"
)

// Authority: cells/<c>/authority holds the CellAuthority, leased by the
// cell's leader while it may acknowledge writes (cells/registry).

// NewAuthority is an empty CellAuthority, for the generic helpers.
func NewAuthority() *cpv1.CellAuthority { return &cpv1.CellAuthority{} }

// GetAuthority reads cells/<cell>/authority with its metadata. On
// ErrCorrupt the metadata is set.
func GetAuthority(ctx context.Context, st topo.Store, cell string) (Record[*cpv1.CellAuthority], error) {
	return GetRecord(ctx, st, topo.CellAuthorityKey(cell), NewAuthority)
}
