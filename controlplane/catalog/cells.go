package catalog

import (
	"context"
	"slices"

	"github.com/cellplane/cellplane/controlplane/topo"
	"github.com/cellplane/cellplane/internal/cperr"
	cpv1 "github.com/cellplane/cellplane/proto/cellplane/controlplane/v1"
)

// Cells: cells/<c> holds a Cell, and under it the cell's registry entries:
// load (CellLoad, written by the controller), bootstrap (CellBootstrap),
// leader (leaders.go), nodes (nodes.go), authority (authority.go) and
// fences (fences.go). CellInfo assembles them into a cell's live status.

// NewCell is an empty Cell, for the generic helpers.
func NewCell() *cpv1.Cell { return &cpv1.Cell{} }

// GetCell reads cells/<id> alone (topo.ErrNotFound when absent); Cell
// reads it with its registry entries.
func GetCell(ctx context.Context, st topo.Store, id string) (*cpv1.Cell, topo.Version, error) {
	c := &cpv1.Cell{}
	v, err := Get(ctx, st, topo.CellKey(id), c)
	return c, v, err
}

// GetCellBootstrap reads cells/<id>/bootstrap (topo.ErrNotFound until the
// cell's first members agreed on it).
func GetCellBootstrap(ctx context.Context, st topo.Store, id string) (*cpv1.CellBootstrap, topo.Version, error) {
	b := &cpv1.CellBootstrap{}
	v, err := Get(ctx, st, topo.CellBootstrapKey(id), b)
	return b, v, err
}

// FindCell returns the cell id of cells (nil when id is "" or absent).
func FindCell(cells []*CellInfo, id string) *CellInfo {
	if id == "" {
		return nil
	}
	for _, ci := range cells {
		if ci.Cell.GetId() == id {
			return ci
		}
	}
	return nil
}

// CellInfo is a cell with everything the registry holds about it.
type CellInfo struct {
	Cell        *cpv1.Cell
	CellVersion topo.Version
	Load        *cpv1.CellLoad
	LoadVersion topo.Version // 0: no load record yet
	Leader      *cpv1.CellLeader
	Nodes       []*cpv1.Node
}

// Status returns the API view of the cell, with derived health.
func (ci *CellInfo) Status() *cpv1.CellStatus {
	return &cpv1.CellStatus{Cell: ci.Cell, Health: Health(ci), Leader: ci.Leader, Nodes: ci.Nodes, Load: ci.Load}
}

// Health derives a cell's health from the registry: a published leader and
// every expected member alive is HEALTHY; a leader and a quorum DEGRADED;
// no leader or no quorum UNAVAILABLE; nothing registered yet NOT_STARTED.
func Health(ci *CellInfo) cpv1.CellHealth {
	members := 0
	for _, n := range ci.Nodes {
		if n.GetRole() == cpv1.NodeRole_NODE_ROLE_MEMBER {
			members++
		}
	}
	expected := int(ci.Cell.GetExpectedMembers())
	if expected == 0 {
		expected = 3
	}
	switch {
	case members == 0 && ci.Leader == nil:
		return cpv1.CellHealth_CELL_HEALTH_NOT_STARTED
	case ci.Leader == nil || members < expected/2+1:
		return cpv1.CellHealth_CELL_HEALTH_UNAVAILABLE
	case members < expected:
		return cpv1.CellHealth_CELL_HEALTH_DEGRADED
	default:
		return cpv1.CellHealth_CELL_HEALTH_HEALTHY
	}
}

// Cells lists every cell with its load, leader and live nodes, by id.
func Cells(ctx context.Context, st topo.Store) ([]*CellInfo, error) {
	byID := map[string]*CellInfo{}
	get := func(id string) *CellInfo {
		ci := byID[id]
		if ci == nil {
			ci = &CellInfo{Load: &cpv1.CellLoad{}}
			byID[id] = ci
		}
		return ci
	}
	_, err := Each(ctx, st, topo.CellsPrefix, 0, func(kv topo.KV) error {
		pk := topo.ParseKey(kv.Key)
		switch pk.Kind {
		case topo.KindCell:
			ci := get(pk.ID)
			ci.Cell = &cpv1.Cell{}
			ci.CellVersion = kv.Version
			return Decode(kv, ci.Cell)
		case topo.KindCellLoad:
			ci := get(pk.ID)
			ci.LoadVersion = kv.Version
			return Decode(kv, ci.Load)
		case topo.KindCellLeader:
			l := &cpv1.CellLeader{}
			if err := Decode(kv, l); err != nil {
				return err
			}
			get(pk.ID).Leader = l
		case topo.KindCellNode:
			n := &cpv1.Node{}
			if err := Decode(kv, n); err != nil {
				return err
			}
			ci := get(pk.ID)
			ci.Nodes = append(ci.Nodes, n)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	out := make([]*CellInfo, 0, len(byID))
	for _, ci := range byID {
		if ci.Cell != nil { // registry entries of a deleted cell are not a cell
			out = append(out, ci)
		}
	}
	slices.SortFunc(out, func(a, b *CellInfo) int {
		switch {
		case a.Cell.GetId() < b.Cell.GetId():
			return -1
		case a.Cell.GetId() > b.Cell.GetId():
			return 1
		}
		return 0
	})
	return out, nil
}

// Cell reads one cell with its registry entries; CELL_NOT_FOUND if absent.
func Cell(ctx context.Context, st topo.Store, id string) (*CellInfo, error) {
	ci := &CellInfo{Cell: &cpv1.Cell{}, Load: &cpv1.CellLoad{}}
	_, err := Each(ctx, st, topo.CellKey(id), 0, func(kv topo.KV) error {
		pk := topo.ParseKey(kv.Key)
		if pk.ID != id {
			return nil // cells/<id>x/...: another cell sharing the prefix
		}
		switch pk.Kind {
		case topo.KindCell:
			ci.CellVersion = kv.Version
			return Decode(kv, ci.Cell)
		case topo.KindCellLoad:
			ci.LoadVersion = kv.Version
			return Decode(kv, ci.Load)
		case topo.KindCellLeader:
			ci.Leader = &cpv1.CellLeader{}
			return Decode(kv, ci.Leader)
		case topo.KindCellNode:
			n := &cpv1.Node{}
			if err := Decode(kv, n); err != nil {
				return err
			}
			ci.Nodes = append(ci.Nodes, n)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if ci.CellVersion == 0 {
		return nil, cperr.New(cperr.CellNotFound, "cell %s does not exist", id)
	}
	return ci, nil
}
