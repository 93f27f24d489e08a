package store

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"

	"github.com/cockroachdb/pebble/v2"
)

// Digest summarises a replica's state machine at one applied index: two
// replicas that applied the same log to the same index have equal
// digests, whatever their history of restarts and snapshot installs
// (replica convergence, docs/reliability.md invariant I6).
type Digest struct {
	// AppliedIndex is the index of the last command the state reflects
	// (the state machine's own record, written with the state).
	AppliedIndex uint64
	// SHA256 hashes every key and value of the state, in key order.
	SHA256 [sha256.Size]byte
	// Keys is the number of keys hashed.
	Keys uint64
}

// StateDigest hashes a consistent view of the state machine (one Pebble
// snapshot, which holds the applied index it reflects). It reads the whole
// state: for tests and operators comparing replicas, not the request path.
func (s *Store) StateDigest() (Digest, error) {
	snap, err := s.fsm.openSnapshot()
	if err != nil {
		return Digest{}, err
	}
	defer s.fsm.releaseSnapshot(snap)
	var d Digest
	h := sha256.New()
	err = s.fsm.withSnapshot(snap, func(r pebble.Reader) error {
		var err error
		if d.AppliedIndex, err = readApplied(r); err != nil {
			return err
		}
		it, err := r.NewIter(nil)
		if err != nil {
			return err
		}
		var lenBuf [binary.MaxVarintLen64]byte
		for ok := it.First(); ok; ok = it.Next() {
			k, v := it.Key(), it.Value()
			h.Write(lenBuf[:binary.PutUvarint(lenBuf[:], uint64(len(k)))])
			h.Write(k)
			h.Write(lenBuf[:binary.PutUvarint(lenBuf[:], uint64(len(v)))])
			h.Write(v)
			d.Keys++
		}
		if err := it.Close(); err != nil {
			return fmt.Errorf("iterate state: %w", err)
		}
		return nil
	})
	if err != nil {
		return Digest{}, err
	}
	copy(d.SHA256[:], h.Sum(nil))
	return d, nil
}
