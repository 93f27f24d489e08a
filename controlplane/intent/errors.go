package intent

import "errors"

// ErrNotLeader is returned by the Guarded variants (StartMoveGuarded,
// StartFailoverGuarded) when one of the guard conditions failed: the
// controller replica recording the intent no longer leads, and nothing was
// written.
var ErrNotLeader = errors.New("intent: not the leader any more")
