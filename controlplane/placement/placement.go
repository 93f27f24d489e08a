// Package placement is the policy that chooses a new tenant's cell: among
// the ACTIVE and HEALTHY cells of the tenant's home region that have room,
// the one with the lowest load. It is pure (no I/O), so the controller can run it on a
// snapshot of the registry and the API can run it as a pre-check.
//
//	cell, err := placement.Pick(candidates, placement.Request{Region: "us-east"})
//	if errors.Is(err, cperr.ErrNoCapacity) { ... }
package placement

import (
	"cmp"
	"strconv"

	"github.com/cellplane/cellplane/internal/cperr"
	cpv1 "github.com/cellplane/cellplane/proto/cellplane/controlplane/v1"
)

// Candidate is a cell with its current load and health.
type Candidate struct {
	Cell *cpv1.Cell
	Load *cpv1.CellLoad
	// Health is the cell's health as the registry shows it now
	// (catalog.Health). Only HEALTHY cells are chosen by the policy: a
	// cell just created has no members yet (NOT_STARTED) and a cell with
	// a member missing (DEGRADED) or no quorum (UNAVAILABLE) should not
	// take new tenants (docs/decisions.md). A cell asked for explicitly
	// (Request.Cell) is not held to it.
	Health cpv1.CellHealth
}

// Request is what the new tenant asks for.
type Request struct {
	// Region is the tenant's home region.
	Region string
	// Cell, if set, is the cell asked for explicitly: it must be in Region,
	// ACTIVE and under capacity.
	Cell string
	// Bytes is the tenant's expected size (0: unknown), counted against
	// the cells' byte capacity.
	Bytes uint64
}

// Pick returns the chosen cell id. Errors (*cperr.Error):
//   - CELL_NOT_FOUND: Request.Cell names no candidate;
//   - INVALID_ARGUMENT: Request.Cell is in another region;
//   - CELL_NOT_ACTIVE: Request.Cell is cordoned, draining or down;
//   - NO_CAPACITY: no ACTIVE, HEALTHY cell of the region has room (the
//     message says how many cells the region has and why they were passed
//     over).
//
// Ties on load are broken by fewer bytes, then by cell id, so that the
// choice is deterministic.
func Pick(cands []Candidate, req Request) (string, error) {
	if req.Cell != "" {
		for _, c := range cands {
			if c.Cell.GetId() != req.Cell {
				continue
			}
			switch {
			case c.Cell.GetRegion() != req.Region:
				return "", cperr.Invalid(cperr.FieldViolation{Field: "cell",
					Description: "cell " + req.Cell + " is in region " + c.Cell.GetRegion() + ", not the home region " + req.Region})
			case c.Cell.GetState() != cpv1.CellState_CELL_STATE_ACTIVE:
				return "", cperr.New(cperr.CellNotActive, "cell %s is %s and takes no new tenants", req.Cell, StateName(c.Cell.GetState()))
			case !hasRoom(c, req.Bytes):
				return "", cperr.New(cperr.NoCapacity, "cell %s is full (%s)", req.Cell, usage(c))
			}
			return req.Cell, nil
		}
		return "", cperr.New(cperr.CellNotFound, "cell %s does not exist", req.Cell)
	}

	var inRegion, active, healthy int
	var best *Candidate
	for i := range cands {
		c := &cands[i]
		if c.Cell.GetRegion() != req.Region {
			continue
		}
		inRegion++
		if c.Cell.GetState() != cpv1.CellState_CELL_STATE_ACTIVE {
			continue
		}
		active++
		if c.Health != cpv1.CellHealth_CELL_HEALTH_HEALTHY {
			continue
		}
		healthy++
		if !hasRoom(*c, req.Bytes) {
			continue
		}
		if best == nil || less(*c, *best) {
			best = c
		}
	}
	switch {
	case best != nil:
		return best.Cell.GetId(), nil
	case inRegion == 0:
		return "", cperr.New(cperr.NoCapacity, "region %s has no cells: create one with 'cellctl cell create <id> --region %s'", req.Region, req.Region)
	case active == 0:
		return "", cperr.New(cperr.NoCapacity, "region %s has %d cell(s), none ACTIVE (all cordoned, draining or down)", req.Region, inRegion)
	case healthy == 0:
		return "", cperr.New(cperr.NoCapacity, "region %s has %d ACTIVE cell(s), none HEALTHY (not started yet, a member missing, or no quorum): 'cellctl cell list --region %s' shows why", req.Region, active, req.Region)
	default:
		return "", cperr.New(cperr.NoCapacity, "region %s: all %d ACTIVE, HEALTHY cell(s) are at capacity; raise a cell's capacity or add a cell", req.Region, healthy)
	}
}

func less(a, b Candidate) bool {
	return cmp.Or(
		cmp.Compare(a.Load.GetTenants(), b.Load.GetTenants()),
		cmp.Compare(a.Load.GetBytes(), b.Load.GetBytes()),
		cmp.Compare(a.Cell.GetId(), b.Cell.GetId()),
	) < 0
}

func hasRoom(c Candidate, bytes uint64) bool {
	capa := c.Cell.GetCapacity()
	if m := capa.GetMaxTenants(); m > 0 && c.Load.GetTenants() >= m {
		return false
	}
	if m := capa.GetMaxBytes(); m > 0 && c.Load.GetBytes()+bytes > m {
		return false
	}
	return true
}

func usage(c Candidate) string {
	return "tenants " + u(c.Load.GetTenants()) + "/" + limit(c.Cell.GetCapacity().GetMaxTenants()) +
		", bytes " + u(c.Load.GetBytes()) + "/" + limit(c.Cell.GetCapacity().GetMaxBytes())
}

func limit(v uint64) string {
	if v == 0 {
		return "unbounded"
	}
	return u(v)
}

func u(v uint64) string { return strconv.FormatUint(v, 10) }

// StateName is the short name of a cell state (ACTIVE, CORDONED, ...).
func StateName(s cpv1.CellState) string {
	name := s.String()
	const p = "CELL_STATE_"
	if len(name) > len(p) && name[:len(p)] == p {
		return name[len(p):]
	}
	return name
}
