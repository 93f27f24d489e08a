package cells

import (
	"github.com/cellplane/cellplane/cells/registry"
	"github.com/cellplane/cellplane/cells/store"
)

// TestingKnobs are the node's test hooks: one field per part of the node
// that has any, each forwarded to that part. The zero value is
// production. (The replication sink has no test-only hook: its OnApplied
// serves the replication benchmark too, so it stays in
// Config.Replication.)
type TestingKnobs struct {
	// Store reaches the node's store (Config.Store.TestingKnobs must stay
	// zero: this is the one way in).
	Store store.TestingKnobs
	// Authority reaches the authority keeper (with a Registry only), e.g.
	// AfterRead to race a fence with a publication.
	Authority registry.TestingKnobs
}
