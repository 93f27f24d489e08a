package store

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"

	"github.com/cellplane/cellplane/internal/failpoint"
	"github.com/cockroachdb/pebble/v2"
	"github.com/hashicorp/raft"
)

// Snapshot stream format (version 1):
//
//	magic "CPSNAP1\n"
//	applied index       8 bytes, big endian: the state machine's index
//	records             uvarint(len key) key uvarint(len value) value …
//	end                 uvarint(0)
//	checksum            4 bytes, CRC-32C of everything before it
//
// Keys are never empty, so a zero length ends the records. The applied
// index is the state machine's own (Raft's snapshot index can be a little
// higher: no-op entries never reach the state machine).
var snapMagic = []byte("CPSNAP1\n")

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// errCorruptSnapshot is returned when a snapshot fails its checks.
var errCorruptSnapshot = errors.New("corrupt snapshot")

type fsmSnapshot struct {
	snap    *pebble.Snapshot
	applied uint64
}

// Persist streams every key of the view into the sink.
func (s *fsmSnapshot) Persist(sink raft.SnapshotSink) error {
	if err := s.write(sink); err != nil {
		_ = sink.Cancel()
		return err
	}
	// Written, not yet committed (the sink's Close renames it into place).
	if err := failpoint.Inject(failpoint.StoreSnapshotPersist); err != nil {
		_ = sink.Cancel()
		return err
	}
	return sink.Close()
}

func (s *fsmSnapshot) write(w io.Writer) error {
	crc := crc32.New(crcTable)
	bw := bufio.NewWriterSize(io.MultiWriter(w, crc), 1<<20)
	bw.Write(snapMagic)
	var hdr [8]byte
	binary.BigEndian.PutUint64(hdr[:], s.applied)
	bw.Write(hdr[:])
	it, err := s.snap.NewIter(nil)
	if err != nil {
		return err
	}
	var lenBuf [binary.MaxVarintLen64]byte
	for ok := it.First(); ok; ok = it.Next() {
		k, v := it.Key(), it.Value()
		bw.Write(lenBuf[:binary.PutUvarint(lenBuf[:], uint64(len(k)))])
		bw.Write(k)
		bw.Write(lenBuf[:binary.PutUvarint(lenBuf[:], uint64(len(v)))])
		if _, err := bw.Write(v); err != nil {
			it.Close()
			return err
		}
	}
	if err := it.Close(); err != nil {
		return fmt.Errorf("iterate state: %w", err)
	}
	bw.Write(lenBuf[:binary.PutUvarint(lenBuf[:], 0)])
	if err := bw.Flush(); err != nil {
		return err
	}
	var sum [4]byte
	binary.BigEndian.PutUint32(sum[:], crc.Sum32())
	_, err = w.Write(sum[:])
	return err
}

// Release frees the Pebble view.
func (s *fsmSnapshot) Release() { _ = s.snap.Close() }

// crcReader checksums what it reads.
type crcReader struct {
	r   *bufio.Reader
	crc hash.Hash32
}

func (c *crcReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.crc.Write(p[:n])
	return n, err
}

func (c *crcReader) ReadByte() (byte, error) {
	b, err := c.r.ReadByte()
	if err == nil {
		c.crc.Write([]byte{b})
	}
	return b, err
}

// maxSnapshotRecord bounds one key or value in a snapshot (far above any
// limit the API allows) so a corrupt length cannot exhaust memory.
const maxSnapshotRecord = 64 << 20

// readSnapshot loads a snapshot stream into db and returns its applied
// index. It verifies the checksum; the caller discards db on error.
func readSnapshot(r io.Reader, db *pebble.DB) (uint64, error) {
	cr := &crcReader{r: bufio.NewReaderSize(r, 1<<20), crc: crc32.New(crcTable)}
	head := make([]byte, len(snapMagic)+8)
	if _, err := io.ReadFull(cr, head); err != nil {
		return 0, fmt.Errorf("%w: header: %v", errCorruptSnapshot, err)
	}
	if !bytes.Equal(head[:len(snapMagic)], snapMagic) {
		return 0, fmt.Errorf("%w: bad magic", errCorruptSnapshot)
	}
	applied := binary.BigEndian.Uint64(head[len(snapMagic):])
	b := db.NewBatch()
	defer func() { b.Close() }()
	readField := func() ([]byte, error) {
		n, err := binary.ReadUvarint(cr)
		if err != nil {
			return nil, err
		}
		if n > maxSnapshotRecord {
			return nil, fmt.Errorf("record of %d bytes", n)
		}
		buf := make([]byte, n)
		_, err = io.ReadFull(cr, buf)
		return buf, err
	}
	for {
		k, err := readField()
		if err != nil {
			return 0, fmt.Errorf("%w: %v", errCorruptSnapshot, err)
		}
		if len(k) == 0 {
			break
		}
		v, err := readField()
		if err != nil {
			return 0, fmt.Errorf("%w: %v", errCorruptSnapshot, err)
		}
		if err := b.Set(k, v, nil); err != nil {
			return 0, err
		}
		if b.Len() > 8<<20 {
			if err := b.Commit(pebble.NoSync); err != nil {
				return 0, err
			}
			b.Close()
			b = db.NewBatch()
		}
	}
	want := cr.crc.Sum32()
	var sum [4]byte
	if _, err := io.ReadFull(cr.r, sum[:]); err != nil {
		return 0, fmt.Errorf("%w: checksum: %v", errCorruptSnapshot, err)
	}
	if got := binary.BigEndian.Uint32(sum[:]); got != want {
		return 0, fmt.Errorf("%w: checksum %08x, want %08x", errCorruptSnapshot, got, want)
	}
	if err := b.Commit(pebble.NoSync); err != nil {
		return 0, err
	}
	return applied, nil
}

// snapshotAppliedIndex reads the state-machine index from a snapshot
// stream's header without reading the rest.
func snapshotAppliedIndex(r io.Reader) (uint64, error) {
	head := make([]byte, len(snapMagic)+8)
	if _, err := io.ReadFull(r, head); err != nil {
		return 0, fmt.Errorf("%w: header: %v", errCorruptSnapshot, err)
	}
	if !bytes.Equal(head[:len(snapMagic)], snapMagic) {
		return 0, fmt.Errorf("%w: bad magic", errCorruptSnapshot)
	}
	return binary.BigEndian.Uint64(head[len(snapMagic):]), nil
}
