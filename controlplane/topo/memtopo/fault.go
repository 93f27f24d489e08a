package memtopo

import (
	"fmt"
	"strings"
)

// Operation names a Store method for fault injection.
type Operation int

// Operations that Fail and FailNext can target.
const (
	OpGet Operation = iota + 1
	OpCreate
	OpUpdate
	OpDelete
	OpTxn
	OpList
	OpWatch
	OpSession
	OpCampaign
)

var opNames = map[Operation]string{
	OpGet: "get", OpCreate: "create", OpUpdate: "update", OpDelete: "delete", OpTxn: "txn",
	OpList: "list", OpWatch: "watch", OpSession: "session", OpCampaign: "campaign",
}

func (o Operation) String() string {
	if n, ok := opNames[o]; ok {
		return n
	}
	return fmt.Sprintf("Operation(%d)", int(o))
}

type fault struct {
	op     Operation
	prefix string
	err    error
	// left is how many more calls fail; -1: until Clear.
	left int
}

// Fail makes op return err (wrapped) for keys starting with keyPrefix
// until Clear. Keys are: the key for Get/Create/Update/Delete, any cond or
// op key for Txn, the prefix argument for List and Watch, the election
// name for Campaign, and "" for NewSession (so only keyPrefix "" matches
// it). A failing Watch yields one response with err, then the channel
// closes.
func (s *Store) Fail(op Operation, keyPrefix string, err error) {
	s.addFault(&fault{op: op, prefix: keyPrefix, err: err, left: -1})
}

// FailNext is Fail for the next n matching calls only.
func (s *Store) FailNext(op Operation, keyPrefix string, err error, n int) {
	if n <= 0 {
		return
	}
	s.addFault(&fault{op: op, prefix: keyPrefix, err: err, left: n})
}

func (s *Store) addFault(f *fault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = append(s.faults, f)
}

// Clear removes every injected fault.
func (s *Store) Clear() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = nil
}

// faultLocked returns the first injected error matching op and one of
// keys, consuming one use of a FailNext.
func (s *Store) faultLocked(op Operation, keys ...string) error {
	if len(keys) == 0 {
		keys = []string{""}
	}
	for i, f := range s.faults {
		if f.op != op {
			continue
		}
		for _, k := range keys {
			if !strings.HasPrefix(k, f.prefix) {
				continue
			}
			if f.left > 0 {
				f.left--
				if f.left == 0 {
					s.faults = append(s.faults[:i:i], s.faults[i+1:]...)
				}
			}
			return fmt.Errorf("memtopo: injected %s fault on %q: %w", op, k, f.err)
		}
	}
	return nil
}
