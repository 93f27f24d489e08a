package store

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"os"
	"testing"

	cellv1 "github.com/cellplane/cellplane/proto/cellplane/cell/v1"
	"github.com/hashicorp/raft"
)

// populate gives h a bit of everything: tenants in every role, contexts
// with entries, memory, remembered request ids, change logs, nodes.
func populate(h *fsmHarness, tenants ...string) {
	h.t.Helper()
	h.mustApply(registerNode("n1", "10.0.0.1:1"))
	for i, tn := range tenants {
		h.mustApply(ownedBy(tn))
		h.mustApply(createContext(tn, "c1"))
		h.mustApply(createContext(tn, "c2"))
		h.mustApply(appendText(tn, "c1", "r1", "hello", "world"))
		h.mustApply(appendText(tn, "c2", "r2", string(make([]byte, 3000))))
		h.mustApply(putMemory(tn, "k", "v"))
		h.mustApply(withReq(putMemory(tn, "k2", "v2"), "r3"))
		h.mustApply(deleteContext(tn, "c2"))
		switch i % 3 {
		case 1:
			h.mustApply(setTenant(tn, standby, 2))
		case 2:
			h.mustApply(setTenant(tn, fenced, 2))
		}
	}
}

// takeSnapshot streams a snapshot of h's current state.
func takeSnapshot(t testing.TB, h *fsmHarness) []byte {
	t.Helper()
	snap, err := h.f.Snapshot()
	if err != nil {
		t.Fatalf("Snapshot: %v", err)
	}
	defer snap.Release()
	var buf bytes.Buffer
	if err := snap.(*fsmSnapshot).write(&buf); err != nil {
		t.Fatalf("write snapshot: %v", err)
	}
	return buf.Bytes()
}

// memSink is a raft.SnapshotSink in memory; it fails writes past failAt
// bytes when failAt > 0.
type memSink struct {
	bytes.Buffer
	failAt            int
	closed, cancelled bool
}

func (s *memSink) Write(p []byte) (int, error) {
	if s.failAt > 0 && s.Len()+len(p) > s.failAt {
		return 0, errors.New("disk full")
	}
	return s.Buffer.Write(p)
}
func (s *memSink) ID() string    { return "test" }
func (s *memSink) Close() error  { s.closed = true; return nil }
func (s *memSink) Cancel() error { s.cancelled = true; return nil }

var _ raft.SnapshotSink = (*memSink)(nil)

// closeTracker records whether Restore closed its reader.
type closeTracker struct {
	io.Reader
	closed bool
}

func (c *closeTracker) Close() error { c.closed = true; return nil }

func restore(t testing.TB, h *fsmHarness, data []byte) error {
	t.Helper()
	rc := &closeTracker{Reader: bytes.NewReader(data)}
	err := h.f.Restore(rc)
	if !rc.closed {
		t.Errorf("Restore did not close its reader")
	}
	if _, serr := h.fs.Stat(h.cfg.dir + ".restore"); !os.IsNotExist(serr) {
		t.Errorf("Restore left its temporary state behind (%v)", serr)
	}
	return err
}

func TestSnapshotRoundTrip(t *testing.T) {
	src := newFSM(t)
	populate(src, "a", "a.b", "b", "c")
	data := takeSnapshot(t, src)

	if idx, err := snapshotAppliedIndex(bytes.NewReader(data)); err != nil || idx != src.f.applied.Load() {
		t.Errorf("snapshotAppliedIndex = %d, %v; want %d", idx, err, src.f.applied.Load())
	}

	// Persist writes the same stream and closes the sink.
	snap, err := src.f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	sink := &memSink{}
	if err := snap.Persist(sink); err != nil {
		t.Fatalf("Persist: %v", err)
	}
	snap.Release()
	if !sink.closed || sink.cancelled || !bytes.Equal(sink.Bytes(), data) {
		t.Errorf("Persist: closed %v cancelled %v, %d bytes (write gave %d)", sink.closed, sink.cancelled, sink.Len(), len(data))
	}

	// Restore into a node that has other state, some of it newer.
	dst := newFSM(t)
	populate(dst, "old", "a")
	for range 50 {
		dst.mustApply(noop())
	}
	waiter := dst.f.notify.wait("a")
	if err := restore(t, dst, data); err != nil {
		t.Fatalf("Restore: %v", err)
	}
	if d := diffDumps(src.dump(true), dst.dump(true)); d != "" {
		t.Errorf("restored state differs: %s", d)
	}
	if dst.f.applied.Load() != src.f.applied.Load() {
		t.Errorf("applied = %d, want %d", dst.f.applied.Load(), src.f.applied.Load())
	}
	select {
	case <-waiter:
	default:
		t.Errorf("Restore did not wake tenant waiters")
	}
	checkState(t, dst.f)
	if n := dst.f.tenantCount(); n != 4 {
		t.Errorf("tenant count = %d, want 4", n)
	}

	// Both continue identically from the snapshot's index.
	dst.index, dst.now = src.index, src.now
	for _, h := range []*fsmHarness{src, dst} {
		h.mustApply(appendText("a", "c1", "r9", "more"))
		if r := h.mustApply(appendText("a", "c1", "r1", "hello", "world")); !r.GetDeduplicated() {
			t.Errorf("dedup window lost: %v", r)
		}
	}
	if d := diffDumps(src.dump(true), dst.dump(true)); d != "" {
		t.Errorf("states diverge after the snapshot: %s", d)
	}

	// The restored state survives a restart, at the restored index.
	want := dst.dump(true)
	dst.reopen()
	if d := diffDumps(want, dst.dump(true)); d != "" || dst.f.applied.Load() != src.f.applied.Load() {
		t.Errorf("after reopen: applied %d, diff %s", dst.f.applied.Load(), d)
	}

	// A second restore over a restored state works too.
	empty := takeSnapshot(t, newFSM(t))
	if err := restore(t, dst, empty); err != nil {
		t.Fatalf("second Restore: %v", err)
	}
	if d := dst.dump(true); len(d) != 0 || dst.f.applied.Load() != 0 {
		t.Errorf("after restoring an empty snapshot: %d keys, applied %d", len(d), dst.f.applied.Load())
	}
}

// TestSnapshotIsConsistentView: what is applied after Snapshot returns is
// not in the stream.
func TestSnapshotIsConsistentView(t *testing.T) {
	src := newFSM(t)
	populate(src, "a")
	want, applied := src.dump(true), src.f.applied.Load()
	snap, err := src.f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	defer snap.Release()
	src.mustApply(createContext("a", "later"))
	src.mustApply(ownedBy("later"))
	var buf bytes.Buffer
	if err := snap.(*fsmSnapshot).write(&buf); err != nil {
		t.Fatal(err)
	}
	dst := newFSM(t)
	if err := restore(t, dst, buf.Bytes()); err != nil {
		t.Fatal(err)
	}
	if d := diffDumps(want, dst.dump(true)); d != "" || dst.f.applied.Load() != applied {
		t.Errorf("snapshot is not the state at Snapshot time: applied %d (want %d), diff %s", dst.f.applied.Load(), applied, d)
	}
}

func TestSnapshotRestoreCorrupt(t *testing.T) {
	src := newFSM(t)
	populate(src, "a", "b")
	good := takeSnapshot(t, src)
	head := len(snapMagic) + 8
	mutate := func(f func(b []byte) []byte) []byte { return f(bytes.Clone(good)) }
	flip := func(i int) []byte { return mutate(func(b []byte) []byte { b[i] ^= 0x20; return b }) }
	hugeRecord := append(bytes.Clone(good[:head]), binary.AppendUvarint(nil, 1<<40)...)
	midRecord := append(bytes.Clone(good[:head]), binary.AppendUvarint(nil, 3)...)
	midRecord = append(midRecord, "abc"...)
	cases := []struct {
		name string
		data []byte
	}{
		{"empty", nil},
		{"magic only", good[:len(snapMagic)]},
		{"bad magic", flip(0)},
		{"other version", mutate(func(b []byte) []byte { b[len(snapMagic)-2] = '2'; return b })},
		{"flipped applied index", flip(head - 1)},
		{"flipped byte in the middle", flip(len(good) / 2)},
		{"flipped byte near the end", flip(len(good) - 6)},
		{"flipped checksum", flip(len(good) - 1)},
		{"header only", good[:head]},
		{"truncated in the middle", good[:len(good)/2]},
		{"no checksum", good[:len(good)-4]},
		{"partial checksum", good[:len(good)-1]},
		{"no end marker", good[:len(good)-5]},
		{"huge record length", hugeRecord},
		{"record without value", midRecord},
		{"zeroed checksum", mutate(func(b []byte) []byte { copy(b[len(b)-4:], []byte{0, 0, 0, 0}); return b })},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dst := newFSM(t)
			populate(dst, "mine")
			before, applied := dst.dump(true), dst.f.applied.Load()
			err := restore(t, dst, tc.data)
			if err == nil {
				t.Fatalf("Restore accepted a corrupt snapshot")
			}
			if !errors.Is(err, errCorruptSnapshot) {
				t.Errorf("Restore error = %v, want errCorruptSnapshot", err)
			}
			if d := diffDumps(before, dst.dump(true)); d != "" || dst.f.applied.Load() != applied {
				t.Errorf("failed Restore changed the state: applied %d (was %d), %s", dst.f.applied.Load(), applied, d)
			}
			// Still readable and writable.
			dst.tenant("mine", func(v *TenantView) {
				if es, err := v.Entries("c1", 0, 10, 1<<20); err != nil || len(es) != 2 {
					t.Errorf("entries after failed restore = %v, %v", es, err)
				}
			})
			dst.mustApply(createContext("mine", "c3"))
			checkState(t, dst.f)
		})
	}
	t.Run("reader error", func(t *testing.T) {
		dst := newFSM(t)
		populate(dst, "mine")
		before := dst.dump(true)
		rc := &closeTracker{Reader: io.MultiReader(bytes.NewReader(good[:len(good)/2]), errReader{})}
		if err := dst.f.Restore(rc); err == nil {
			t.Fatalf("Restore succeeded on a failing reader")
		}
		if d := diffDumps(before, dst.dump(true)); d != "" {
			t.Errorf("failed Restore changed the state: %s", d)
		}
		dst.mustApply(noop())
	})
}

type errReader struct{}

func (errReader) Read([]byte) (int, error) { return 0, errors.New("connection reset") }

func TestSnapshotAppliedIndex(t *testing.T) {
	h := newFSM(t)
	populate(h, "a")
	good := takeSnapshot(t, h)
	// Only the header is read.
	r := io.MultiReader(bytes.NewReader(good[:len(snapMagic)+8]), errReader{})
	if idx, err := snapshotAppliedIndex(r); err != nil || idx != h.f.applied.Load() {
		t.Errorf("snapshotAppliedIndex = %d, %v; want %d", idx, err, h.f.applied.Load())
	}
	bad := bytes.Clone(good)
	bad[1] = 'X'
	for name, data := range map[string][]byte{"empty": nil, "short": good[:10], "bad magic": bad} {
		if _, err := snapshotAppliedIndex(bytes.NewReader(data)); !errors.Is(err, errCorruptSnapshot) {
			t.Errorf("%s: err = %v, want errCorruptSnapshot", name, err)
		}
	}
}

func TestSnapshotPersistFailure(t *testing.T) {
	h := newFSM(t)
	populate(h, "a", "b")
	snap, err := h.f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	defer snap.Release()
	sink := &memSink{failAt: 100}
	if err := snap.Persist(sink); err == nil {
		t.Errorf("Persist succeeded on a failing sink")
	}
	if !sink.cancelled || sink.closed {
		t.Errorf("failing Persist: cancelled %v closed %v; want cancelled only", sink.cancelled, sink.closed)
	}
}

func TestSnapshotOfClosedFSM(t *testing.T) {
	h := newFSM(t)
	if err := h.f.close(); err != nil {
		t.Fatal(err)
	}
	if _, err := h.f.Snapshot(); !errors.Is(err, errStopped) {
		t.Errorf("Snapshot of a closed fsm = %v", err)
	}
	h.f = nil
}

// TestSnapshotMetaKeys: the stream carries the applied index key and the
// tenant count, so a restored node needs nothing else.
func TestSnapshotMetaKeys(t *testing.T) {
	h := newFSM(t)
	populate(h, "a", "b")
	data := takeSnapshot(t, h)
	dst := newFSM(t)
	if err := restore(t, dst, data); err != nil {
		t.Fatal(err)
	}
	dst.reopen()
	if dst.f.applied.Load() != h.f.applied.Load() || dst.f.tenantCount() != 2 {
		t.Errorf("reopened restored state: applied %d tenants %d", dst.f.applied.Load(), dst.f.tenantCount())
	}
	var n *cellv1.NodeInfo
	n, _ = dst.f.node("n1")
	if n.GetGrpcAddr() != "10.0.0.1:1" {
		t.Errorf("node = %v", n)
	}
}
