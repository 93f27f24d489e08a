// Package catalog reads and writes the control plane's records in the topo
// store as typed protobufs: the one place that knows which message lives at
// which key (topo/keys.go) and how a cell's registry entries assemble into
// a cell's live status and health. The controller and the API both use it.
//
//	cells, err := catalog.Cells(ctx, st)       // every cell with load, leader, nodes
//	t, v, err := catalog.GetTenant(ctx, st, "acme")
package catalog

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/cellplane/cellplane/controlplane/topo"
	"github.com/cellplane/cellplane/internal/cperr"
	cpv1 "github.com/cellplane/cellplane/proto/cellplane/controlplane/v1"
)

// ErrCorrupt is returned (wrapped) when a stored value does not decode.
var ErrCorrupt = errors.New("catalog: corrupt record")

// Get reads key into msg and returns its version (topo.ErrNotFound when
// absent).
func Get(ctx context.Context, st topo.Store, key string, msg proto.Message) (topo.Version, error) {
	kv, err := st.Get(ctx, key)
	if err != nil {
		return 0, err
	}
	if err := Decode(kv, msg); err != nil {
		return 0, err
	}
	return kv.Version, nil
}

// Decode unmarshals a KV's value into msg.
func Decode(kv topo.KV, msg proto.Message) error {
	if err := proto.Unmarshal(kv.Value, msg); err != nil {
		return fmt.Errorf("%w: %s: %v", ErrCorrupt, kv.Key, err)
	}
	return nil
}

// Encode marshals msg deterministically (so equal records are equal bytes).
func Encode(msg proto.Message) []byte {
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(msg)
	if err != nil {
		// Only an invalid message (e.g. bad UTF-8 in a string) fails; our
		// records are validated before they are built.
		panic(fmt.Sprintf("catalog: marshal %T: %v", msg, err))
	}
	return b
}

// GetTenant reads tenants/<id>.
func GetTenant(ctx context.Context, st topo.Store, id string) (*cpv1.Tenant, topo.Version, error) {
	t := &cpv1.Tenant{}
	v, err := Get(ctx, st, topo.TenantKey(id), t)
	return t, v, err
}

// GetWorkflow reads workflows/<id>.
func GetWorkflow(ctx context.Context, st topo.Store, id string) (*cpv1.Workflow, topo.Version, error) {
	w := &cpv1.Workflow{}
	v, err := Get(ctx, st, topo.WorkflowKey(id), w)
	return w, v, err
}

// Each calls fn for every key under prefix, page by page, all pages read
// at one revision (a consistent snapshot). It returns that revision: watch
// from it + 1 to follow later changes.
func Each(ctx context.Context, st topo.Store, prefix string, pageSize int, fn func(topo.KV) error) (topo.Revision, error) {
	opts := topo.ListOptions{Limit: pageSize}
	for {
		page, err := st.List(ctx, prefix, opts)
		if err != nil {
			return 0, err
		}
		for _, kv := range page.KVs {
			if err := fn(kv); err != nil {
				return 0, err
			}
		}
		opts.Revision = page.Revision
		if !page.More || len(page.KVs) == 0 {
			return page.Revision, nil
		}
		opts.After = page.KVs[len(page.KVs)-1].Key
	}
}

// Regions lists every region, by name.
func Regions(ctx context.Context, st topo.Store) ([]*cpv1.Region, error) {
	var out []*cpv1.Region
	_, err := Each(ctx, st, topo.RegionsPrefix, 0, func(kv topo.KV) error {
		if topo.ParseKey(kv.Key).Kind != topo.KindRegion {
			return nil
		}
		r := &cpv1.Region{}
		if err := Decode(kv, r); err != nil {
			return err
		}
		out = append(out, r)
		return nil
	})
	return out, err
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

// StoreError turns a topo error into the error contract: an unreachable
// store is CONTROLPLANE_UNAVAILABLE with a retry hint; context errors pass
// through; *cperr.Error passes through; anything else is INTERNAL (logged
// by the caller, never shown).
func StoreError(err error) error {
	var ce *cperr.Error
	switch {
	case err == nil:
		return nil
	case errors.As(err, &ce):
		return err
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return err
	case errors.Is(err, topo.ErrUnavailable), errors.Is(err, topo.ErrClosed):
		e := cperr.New(cperr.ControlPlaneUnavailable, "the control plane's store (etcd) is unreachable; try again")
		e.RetryAfter = time.Second
		return e
	}
	return fmt.Errorf("%w: %w", cperr.ErrInternal, err)
}
