package store

import (
	"github.com/cellplane/cellplane/internal/failpoint"
	"github.com/hashicorp/raft"
	raftwal "github.com/hashicorp/raft-wal"
)

// failpointLog is the Raft log with the crash points around its append
// (raft-wal fsyncs each StoreLogs before it returns). Open uses it only
// when a failpoint spec is enabled. Embedding keeps every other method of
// the WAL, IsMonotonic included (raft treats a monotonic log store
// differently after a snapshot install).
type failpointLog struct{ *raftwal.WAL }

// StoreLogs implements raft.LogStore.
func (l failpointLog) StoreLogs(logs []*raft.Log) error {
	if err := failpoint.Inject(failpoint.StoreBeforeLogFsync); err != nil {
		return err
	}
	if err := l.WAL.StoreLogs(logs); err != nil {
		return err
	}
	return failpoint.Inject(failpoint.StoreAfterLogFsync)
}

// StoreLog implements raft.LogStore.
func (l failpointLog) StoreLog(log *raft.Log) error { return l.StoreLogs([]*raft.Log{log}) }
