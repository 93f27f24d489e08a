package store

import (
	raftwal "github.com/hashicorp/raft-wal"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"
	"github.com/hashicorp/raft"
)

// faultLog is the Raft log store with TestingKnobs.LogStoreFault in front
// of its writes: a test makes the log return ENOSPC or EIO on purpose (S13)
// and shows that the node neither corrupts nor crash-loops. Reads and the
// stable store (term, vote) pass through.
type faultLog struct {
	*raftwal.WAL
	fault func(op string) error
}

func (f *faultLog) StoreLog(l *raft.Log) error { return f.StoreLogs([]*raft.Log{l}) }

func (f *faultLog) StoreLogs(logs []*raft.Log) error {
	if err := f.fault("store_logs"); err != nil {
		return err
	}
	return f.WAL.StoreLogs(logs)
}

func (f *faultLog) DeleteRange(lo, hi uint64) error {
	if err := f.fault("delete_range"); err != nil {
		return err
	}
	return f.WAL.DeleteRange(lo, hi)
}

// logStore is what Raft gets as its log store: the WAL, or the WAL behind
// the test's fault injector.
func (s *Store) logStore() raft.LogStore {
	if fault := s.cfg.TestingKnobs.LogStoreFault; fault != nil {
		return &faultLog{WAL: s.wal, fault: fault}
	}
	return s.wal
}

// stateFS is the state store's filesystem, with TestingKnobs.StateStoreFault
// in front of its writes when set.
func (s *Store) stateFS(fs vfs.FS) vfs.FS {
	fault := s.cfg.TestingKnobs.StateStoreFault
	if fault == nil {
		return fs
	}
	return errorfs.Wrap(fs, errorfs.InjectorFunc(func(op errorfs.Op) error {
		if op.Kind.ReadOrWrite() != errorfs.OpIsWrite {
			return nil
		}
		return fault(op.Path)
	}))
}
