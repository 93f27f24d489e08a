package store

import (
	"github.com/cellplane/cellplane/internal/failpoint"
	"github.com/hashicorp/raft"
)

// failpointLog is a Raft log store with the crash points around its append
// (raft-wal fsyncs each StoreLogs before it returns). Open uses it only
// when a failpoint spec is enabled. It keeps the inner store's
// monotonicity (raft treats a monotonic log store differently after a
// snapshot install), so it can wrap any other wrapper of the WAL.
type failpointLog struct{ raft.LogStore }

// StoreLogs implements raft.LogStore.
func (l failpointLog) StoreLogs(logs []*raft.Log) error {
	if err := failpoint.Inject(failpoint.StoreBeforeLogFsync); err != nil {
		return err
	}
	if err := l.LogStore.StoreLogs(logs); err != nil {
		return err
	}
	return failpoint.Inject(failpoint.StoreAfterLogFsync)
}

// StoreLog implements raft.LogStore.
func (l failpointLog) StoreLog(log *raft.Log) error { return l.StoreLogs([]*raft.Log{log}) }

// IsMonotonic implements raft.MonotonicLogStore as the inner store does.
func (l failpointLog) IsMonotonic() bool {
	m, ok := l.LogStore.(raft.MonotonicLogStore)
	return ok && m.IsMonotonic()
}
