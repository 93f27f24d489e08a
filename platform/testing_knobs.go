package platform

import (
	"github.com/cellplane/cellplane/cells"
	"github.com/cellplane/cellplane/controlplane"
	"github.com/cellplane/cellplane/controlplane/controller"
)

// TestingKnobs is the one bundle of test hooks that reaches every
// component the platform builds: each in-process node, the control plane
// replica and its controller. The zero value is production. (The router
// has no knobs.)
type TestingKnobs struct {
	// Cell reaches every in-process node (its store and its authority).
	Cell CellKnobs
	// ControlPlane reaches the control plane replica.
	ControlPlane controlplane.TestingKnobs
	// Controller reaches the replica's controller.
	Controller controller.TestingKnobs
}

// CellKnobs are a node's knobs: its store's and its authority lease's.
type CellKnobs = cells.TestingKnobs

// applyCellKnobs forwards the cell knobs into a node's configuration.
func applyCellKnobs(c *cells.Config, k CellKnobs) { c.TestingKnobs = k }
