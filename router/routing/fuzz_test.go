package routing

import (
	"encoding/binary"
	"hash/crc32"
	"math"
	"testing"
	"time"

	"github.com/cellplane/cellplane/controlplane/topo/memtopo"
	"github.com/cellplane/cellplane/internal/auth"
)

// FuzzSnapshot feeds arbitrary bytes to the snapshot decoder: it must
// never panic, and whatever decodes must re-encode to a snapshot that
// decodes to the same table.
func FuzzSnapshot(f *testing.F) {
	st := memtopo.New()
	defer st.Close()
	fixture(f, st, 5)
	v, _ := loadView(f, st)
	v.setRevoked("t1", auth.RevokedSubjectID("alice"), auth.RevocationEntry{RevokedAt: time.Unix(0, 7), ExpiresAt: time.Unix(3600, 0)})
	good := encodeSnapshot(v, time.Unix(0, 12345))
	f.Add(good)
	f.Add(good[:len(good)/2])
	f.Add(encodeSnapshot(newView(), time.Unix(0, 1)))
	f.Add(encodeSnapshotFormat(v, time.Unix(0, 12345), snapshotVersionNoFlags))
	f.Add([]byte(snapshotMagic))
	f.Add(good[headerLen : len(good)-4]) // a bare payload (sealed below)
	f.Fuzz(func(t *testing.T, b []byte) {
		checkRoundTrip(t, b)
		// The checksum stops most mutations before the payload decoder:
		// also decode b as a payload with a valid header and checksum.
		sealed := make([]byte, headerLen, headerLen+len(b)+4)
		copy(sealed, snapshotMagic)
		binary.LittleEndian.PutUint32(sealed[8:], snapshotVersion)
		binary.LittleEndian.PutUint64(sealed[12:], uint64(len(b)))
		sealed = append(sealed, b...)
		sealed = binary.LittleEndian.AppendUint32(sealed, crc32.Checksum(sealed, castagnoli))
		checkRoundTrip(t, sealed)
	})
}

func checkRoundTrip(t *testing.T, b []byte) {
	t.Helper()
	v, written, err := decodeSnapshot(b)
	if err != nil {
		return
	}
	again := encodeSnapshot(v, written)
	v2, written2, err := decodeSnapshot(again)
	if err != nil {
		t.Fatalf("re-encoded snapshot does not decode: %v", err)
	}
	if !written2.Equal(written) || v2.rev.Load() != v.rev.Load() || v2.n.Load() != v.n.Load() ||
		len(v2.keys) != len(v.keys) || len(v2.cellMap()) != len(v.cellMap()) || len(v2.revoked) != len(v.revoked) {
		t.Fatalf("round trip differs")
	}
	for i := range v.shards {
		for id, e := range v.shards[i].m {
			e2, ok := v2.get(id)
			r, r2 := v.route(id, e), v2.route(id, e2)
			if !ok || e2.epoch != e.epoch || e2.ver != e.ver || e2.state != e.state || e2.flags != e.flags || r.Cell != r2.Cell ||
				r.Limits.Burst != r2.Limits.Burst || math.Float64bits(r.Limits.Rate) != math.Float64bits(r2.Limits.Rate) {
				t.Fatalf("tenant %q differs", id)
			}
		}
	}
}
