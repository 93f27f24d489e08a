package service

import (
	"github.com/cellplane/cellplane/cells/store"
	contextv1 "github.com/cellplane/cellplane/proto/cellplane/context/v1"
)

// readOptions converts validated API read options to the store's.
func readOptions(o *contextv1.ReadOptions) store.ReadOptions {
	return store.ReadOptions{
		Consistency:  o.GetConsistency(),
		MaxStaleness: o.GetMaxStaleness().AsDuration(),
	}
}

// localUnbounded reads this member's replica whatever its staleness; the
// store treats a negative MaxStaleness as "no bound". Watch uses it: it
// delivers entries in order from any member, and staleness only delays
// delivery.
var localUnbounded = store.ReadOptions{Consistency: contextv1.Consistency_CONSISTENCY_STALE, MaxStaleness: -1}
