package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cellplane/cellplane/internal/failpoint"
	cellv1 "github.com/cellplane/cellplane/proto/cellplane/cell/v1"
	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/bloom"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// commandVersion is the newest Command encoding this node understands.
const commandVersion = 1

// errStopped is answered to proposals once the state machine stopped.
var errStopped = errors.New("store: state machine stopped")

var marshalOpts = proto.MarshalOptions{Deterministic: true}

// fsm is the Raft state machine: commands applied to Pebble. Each Raft
// apply batch becomes one Pebble batch that also records the last applied
// Raft index, so a restart resumes exactly where the state is and never
// re-applies a command.
//
// Pebble batches are committed without fsync: the Raft log is the durable
// record, and entries whose effects a crash lost are applied again on
// restart (the persisted applied index says which). Before a snapshot is
// handed to Raft the Pebble WAL is synced, so the state is never behind a
// snapshot Raft may truncate its log to.
type fsm struct {
	// mu is held for reading by views and by apply, and for writing only
	// while a snapshot restore swaps the database.
	mu  sync.RWMutex
	db  *pebble.DB
	fs  vfs.FS
	dir string

	log *slog.Logger
	// initial are the settings of a cell whose state holds none yet;
	// settings are the ones in force (replicated state, see CellSettings).
	initial    *cellv1.CellSettings
	settings   atomic.Pointer[cellv1.CellSettings]
	onFatal    func(error)
	onApply    func(uint64)
	onTime     func(int64) // the newest command time of each applied batch (cellClock.observe)
	onRejected func()      // counts an apply_changes batch refused by invariant 12
	notify     *notifier
	applied    atomic.Uint64
	stopped    atomic.Bool
	wakeMu     sync.Mutex
	wake       chan struct{} // closed and replaced after every applied batch
	pebbleOpts func() *pebble.Options

	// snaps are long-lived snapshots (exports) read in steps without
	// holding mu in between; closing or swapping the database closes them
	// first.
	snapMu sync.Mutex
	snaps  map[*pebble.Snapshot]struct{}

	// heads caches committed context heads for the apply path (nil: off).
	heads *headCache
	// vectors are the member's derived vector indexes (vecindex.go),
	// kept current by commit.
	vectors *vectorIndexes
	// dedup holds per-tenant negative filters of remembered request ids
	// (dedupfilter.go); nil: none.
	dedup *dedupFilters
	// reencode makes the change log encode every command again instead of
	// storing its bytes from the entry (tests compare the two).
	reencode bool
}

// openSnapshot opens a snapshot that outlives one view (see snaps).
func (f *fsm) openSnapshot() (*pebble.Snapshot, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if f.db == nil {
		return nil, errUnavailable("the node's state is closed")
	}
	s := f.db.NewSnapshot()
	f.snapMu.Lock()
	if f.snaps == nil {
		f.snaps = map[*pebble.Snapshot]struct{}{}
	}
	f.snaps[s] = struct{}{}
	f.snapMu.Unlock()
	return s, nil
}

// withSnapshot runs fn on s unless the database closed it meanwhile.
func (f *fsm) withSnapshot(s *pebble.Snapshot, fn func(pebble.Reader) error) error {
	f.mu.RLock()
	defer f.mu.RUnlock()
	f.snapMu.Lock()
	_, ok := f.snaps[s]
	f.snapMu.Unlock()
	if !ok || f.db == nil {
		return errUnavailable("the node's state was closed or replaced during the read")
	}
	return fn(s)
}

// releaseSnapshot closes s if the database has not already.
func (f *fsm) releaseSnapshot(s *pebble.Snapshot) {
	f.snapMu.Lock()
	_, ok := f.snaps[s]
	delete(f.snaps, s)
	f.snapMu.Unlock()
	if ok {
		_ = s.Close()
	}
}

// closeSnapshots closes every long-lived snapshot; f.mu is held for writing.
func (f *fsm) closeSnapshots() {
	f.snapMu.Lock()
	defer f.snapMu.Unlock()
	for s := range f.snaps {
		_ = s.Close()
	}
	f.snaps = nil
}

type fsmConfig struct {
	cacheBytes    int64
	memTableBytes uint64
	headCache     int   // context heads cached for the apply path (0: none)
	dedupFilter   int64 // bytes of request-id negative filters (0: none)
	reencode      bool  // tests: encode commands again for the change log
	fs            vfs.FS
	dir           string
	log           *slog.Logger
	dedupWindow   time.Duration
	dedupMaxIDs   int
	changelog     ChangeLogConfig
	tenantQuota   TenantQuota
	onFatal       func(error)
	onApply       func(uint64)
	onRejected    func()
}

func openFSM(cfg fsmConfig) (*fsm, error) {
	f := &fsm{
		fs:         cfg.fs,
		dir:        cfg.dir,
		log:        cfg.log,
		initial:    withAudit(settingsOf(cfg.dedupWindow, cfg.dedupMaxIDs, cfg.changelog, cfg.tenantQuota), defaultAudit),
		onFatal:    cfg.onFatal,
		onApply:    cfg.onApply,
		notify:     newNotifier(),
		onRejected: cfg.onRejected,
		wake:       make(chan struct{}),
		heads:      newHeadCache(cfg.headCache),
		dedup:      newDedupFilters(cfg.dedupFilter),
		reencode:   cfg.reencode,
	}
	f.pebbleOpts = func() *pebble.Options {
		o := &pebble.Options{
			FS:           cfg.fs,
			Logger:       pebbleLogger{cfg.log},
			CacheSize:    cfg.cacheBytes,
			MemTableSize: cfg.memTableBytes,
		}
		// Bloom filters: most dedup lookups are for ids never seen.
		for i := range o.Levels {
			o.Levels[i].FilterPolicy = bloom.FilterPolicy(10)
		}
		return o
	}
	db, err := pebble.Open(cfg.dir, f.pebbleOpts())
	if err != nil {
		return nil, fmt.Errorf("open state in %s: %w", cfg.dir, err)
	}
	f.db = db
	idx, err := readApplied(db)
	if err == nil {
		err = f.loadSettings(db)
	}
	if err != nil {
		db.Close()
		return nil, err
	}
	f.applied.Store(idx)
	return f, nil
}

// settingsOf builds CellSettings from configuration values.
func settingsOf(window time.Duration, maxIDs int, cl ChangeLogConfig, q TenantQuota) *cellv1.CellSettings {
	var tq *cellv1.TenantQuota
	if q != (TenantQuota{}) {
		tq = &cellv1.TenantQuota{MaxBytes: q.MaxBytes, MaxContexts: q.MaxContexts, MaxMemoryKeys: q.MaxMemoryKeys,
			DefaultRetentionNanos: int64(q.DefaultRetention)}
	}
	return &cellv1.CellSettings{
		TenantQuota:             tq,
		DedupWindow:             uint64(max(maxIDs, 0)),
		DedupWindowNanos:        int64(max(window, 0)),
		ChangelogRetentionNanos: int64(cl.RetentionAge),
		ChangelogMaxBytes:       cl.MaxBytes,
		ChangelogMaxEvents:      cl.MaxEvents,
	}
}

// loadSettings reads the settings in force from the state.
func (f *fsm) loadSettings(r pebble.Reader) error {
	var st cellv1.CellSettings
	ok, err := getProto(r, keySettings, &st)
	if err != nil {
		return err
	}
	if ok {
		f.settings.Store(&st)
	} else {
		f.settings.Store(f.initial)
	}
	return nil
}

func readApplied(r pebble.Reader) (uint64, error) {
	v, closer, err := r.Get(keyApplied)
	if errors.Is(err, pebble.ErrNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("read applied index: %w", err)
	}
	defer closer.Close()
	if len(v) < 8 {
		return 0, fmt.Errorf("corrupt applied index (%d bytes)", len(v))
	}
	return binary.BigEndian.Uint64(v), nil
}

func (f *fsm) close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.stopped.Store(true)
	if f.db == nil {
		return nil
	}
	f.closeSnapshots()
	err := f.db.Close()
	f.db = nil
	return err
}

// fail stops the state machine for good: nothing more is applied and the
// store shuts down. The applied index stays before the failing entry, so a
// fixed (upgraded) node resumes from it.
func (f *fsm) fail(err error) {
	if f.stopped.Swap(true) {
		return
	}
	f.log.Error("state machine stopped", "err", err)
	if f.onFatal != nil {
		f.onFatal(err)
	}
}

// Apply implements raft.FSM for a single entry.
func (f *fsm) Apply(l *raft.Log) any { return f.ApplyBatch([]*raft.Log{l})[0] }

// batchResponse is the response to one Raft log entry: one result per
// command of its CommandBatch, or the error that stopped the machine.
type batchResponse struct {
	results []*cellv1.CommandResult
	err     error
	// term is the entry's Raft term; epochs[i] the tenant epoch command i
	// was admitted at as an owner write (0: not one). TestingKnobs.Acks
	// reads them.
	term   uint64
	epochs []uint64
}

// ApplyBatch implements raft.BatchingFSM.
func (f *fsm) ApplyBatch(logs []*raft.Log) []any {
	_ = failpoint.Inject(failpoint.StoreAfterCommitBeforeApply) // crash or sleep; an error means nothing here
	resps := make([]any, len(logs))
	f.mu.RLock()
	defer f.mu.RUnlock()
	if f.stopped.Load() {
		for i := range resps {
			resps[i] = &batchResponse{err: errStopped}
		}
		return resps
	}

	tx := newTxn(f)
	defer tx.close()
	var last *raft.Log
	var newest int64 // the newest command time applied
	for i, l := range logs {
		if l.Index <= f.applied.Load() {
			continue // already part of the persisted state
		}
		if l.Type == raft.LogCommand {
			cmds, raws, err := decodeBatchRaw(l.Data)
			if err == nil {
				err = checkKnown(cmds)
			}
			if err != nil {
				// Commit what came before, then stop: applying past an
				// entry this node does not understand would diverge.
				f.commit(tx, last)
				f.fail(fmt.Errorf("raft index %d: %w", l.Index, err))
				for j := i; j < len(resps); j++ {
					resps[j] = &batchResponse{err: errStopped}
				}
				return resps
			}
			results := make([]*cellv1.CommandResult, len(cmds))
			epochs := make([]uint64, len(cmds))
			for j, c := range cmds {
				tx.raw = raws[j]
				results[j] = tx.apply(c)
				tx.raw = nil
				epochs[j] = tx.ownerEpoch
				newest = max(newest, c.GetTimeUnixNano())
			}
			if tx.err != nil {
				f.fail(fmt.Errorf("raft index %d: %w", l.Index, tx.err))
				for j := range resps {
					resps[j] = &batchResponse{err: errStopped}
				}
				return resps
			}
			resps[i] = &batchResponse{results: results, term: l.Term, epochs: epochs}
		}
		if f.onApply != nil {
			f.onApply(l.Index)
		}
		last = l
	}
	f.commit(tx, last)
	if f.onTime != nil && newest != 0 && !f.stopped.Load() {
		f.onTime(newest)
	}
	return resps
}

// commit writes the batch with the applied index of last, then publishes
// the new state to waiters.
func (f *fsm) commit(tx *txn, last *raft.Log) {
	if last == nil {
		return
	}
	if err := tx.flushRecords(); err != nil {
		f.fail(err)
		return
	}
	var v [16]byte
	binary.BigEndian.PutUint64(v[:8], last.Index)
	binary.BigEndian.PutUint64(v[8:], last.Term)
	if err := tx.b.Set(keyApplied, v[:], nil); err != nil {
		f.fail(err)
		return
	}
	if err := tx.b.Commit(pebble.NoSync); err != nil {
		f.heads.clear()
		f.dedup.clear()
		f.vectors.clear()
		f.fail(fmt.Errorf("commit state: %w", err))
		return
	}
	tx.heads.publish(f.heads)
	tx.vec.publish(f.vectors)
	f.applied.Store(last.Index)
	f.settings.Store(tx.settings)
	for tenant := range tx.touched {
		f.notify.notify(tenant)
	}
	f.wakeMu.Lock()
	close(f.wake)
	f.wake = make(chan struct{})
	f.wakeMu.Unlock()
}

// appliedWake returns a channel closed at the next applied batch.
func (f *fsm) appliedWake() <-chan struct{} {
	f.wakeMu.Lock()
	defer f.wakeMu.Unlock()
	return f.wake
}

// decodeBatch decodes a Raft entry's CommandBatch.
func decodeBatch(data []byte) ([]*cellv1.Command, error) {
	cmds, _, err := decodeBatchRaw(data)
	return cmds, err
}

// decodeBatchRaw decodes a Raft entry's CommandBatch as proto.Unmarshal
// would, and also returns each command's encoded bytes (slices of data),
// which the change log stores as they are instead of encoding the command
// again (see eventBytes).
func decodeBatchRaw(data []byte) ([]*cellv1.Command, [][]byte, error) {
	var cmds []*cellv1.Command
	var raws [][]byte
	for b := data; len(b) > 0; {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return nil, nil, fmt.Errorf("decode command batch: %w", protowire.ParseError(n))
		}
		if num > protowire.MaxValidNumber {
			return nil, nil, errors.New("decode command batch: invalid field number")
		}
		b = b[n:]
		if num != 1 || typ != protowire.BytesType { // unknown to CommandBatch: skipped, as proto.Unmarshal keeps it aside
			n = protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return nil, nil, fmt.Errorf("decode command batch: %w", protowire.ParseError(n))
			}
			b = b[n:]
			continue
		}
		raw, n := protowire.ConsumeBytes(b)
		if n < 0 {
			return nil, nil, fmt.Errorf("decode command batch: %w", protowire.ParseError(n))
		}
		b = b[n:]
		c := &cellv1.Command{}
		if err := proto.Unmarshal(raw, c); err != nil {
			return nil, nil, fmt.Errorf("decode command batch: %w", err)
		}
		cmds = append(cmds, c)
		raws = append(raws, raw)
	}
	return cmds, raws, nil
}

// ErrUnknownCommand is the store's Err() after the state machine met a
// non-ignorable command it does not know (a newer node proposed it): the
// node stops instead of diverging; upgrade it and restart.
var ErrUnknownCommand = errors.New("store: unknown command")

var errUnknownCommand = ErrUnknownCommand

// checkKnown verifies every command of an entry can be applied (or may be
// skipped) before any of them is, so an entry is applied whole or not at all.
func checkKnown(cmds []*cellv1.Command) error {
	for i, c := range cmds {
		if c.GetIgnorable() {
			continue
		}
		if c.GetVersion() > commandVersion {
			return fmt.Errorf("%w: command %d has version %d, this node knows up to %d", errUnknownCommand, i, c.GetVersion(), commandVersion)
		}
		if _, ok := lookupOp(c); !ok {
			return fmt.Errorf("%w: command %d has an operation this node does not know (fields %x)", errUnknownCommand, i, c.ProtoReflect().GetUnknown())
		}
	}
	return nil
}

// Snapshot implements raft.FSM: a consistent Pebble view at the applied
// index, streamed by Persist.
func (f *fsm) Snapshot() (raft.FSMSnapshot, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if f.db == nil {
		return nil, errStopped
	}
	// Make the state durable up to here before Raft may truncate its log.
	if err := f.db.LogData(nil, pebble.Sync); err != nil {
		return nil, fmt.Errorf("sync state: %w", err)
	}
	return &fsmSnapshot{snap: f.db.NewSnapshot(), applied: f.applied.Load()}, nil
}

// Restore implements raft.FSM: it replaces the state with a snapshot. The
// snapshot is written to a fresh database and checked whole before it
// replaces the current one, so a corrupt snapshot leaves the state as it was.
func (f *fsm) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	tmp := f.dir + ".restore"
	_ = f.fs.RemoveAll(tmp)
	db, err := pebble.Open(tmp, f.pebbleOpts())
	if err != nil {
		return fmt.Errorf("open restore state: %w", err)
	}
	applied, err := readSnapshot(rc, db)
	if err == nil {
		err = db.Flush()
	}
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		_ = f.fs.RemoveAll(tmp)
		return fmt.Errorf("restore snapshot: %w", err)
	}

	f.mu.Lock()
	defer f.mu.Unlock()
	if f.db != nil {
		f.closeSnapshots()
		if err := f.db.Close(); err != nil {
			return fmt.Errorf("close state for restore: %w", err)
		}
		f.db = nil
	}
	if err := f.fs.RemoveAll(f.dir); err != nil {
		return fmt.Errorf("remove old state: %w", err)
	}
	// The old state is gone, the restored one not yet in place: a crash
	// here finds no state/ at start and restores the snapshot Raft
	// persisted before it called Restore (catchUpFromSnapshot).
	if err := failpoint.Inject(failpoint.StoreSnapshotInstall); err != nil {
		return err
	}
	if err := f.fs.Rename(tmp, f.dir); err != nil {
		return fmt.Errorf("install restored state: %w", err)
	}
	db, err = pebble.Open(f.dir, f.pebbleOpts())
	if err != nil {
		return fmt.Errorf("reopen restored state: %w", err)
	}
	f.heads.clear() // the cache described the old database
	f.vectors.clear()
	f.dedup.clear()
	f.db = db
	if err := f.loadSettings(db); err != nil {
		return err
	}
	f.applied.Store(applied)
	f.log.Info("state restored from snapshot", "applied_index", applied)
	f.notify.notifyAll()
	return nil
}

// pebbleLogger sends Pebble's logs to slog.
type pebbleLogger struct{ log *slog.Logger }

func (l pebbleLogger) Infof(format string, args ...any) {
	l.log.Debug(fmt.Sprintf(format, args...), "component", "pebble")
}

func (l pebbleLogger) Errorf(format string, args ...any) {
	l.log.Error(fmt.Sprintf(format, args...), "component", "pebble")
}

func (l pebbleLogger) Fatalf(format string, args ...any) {
	l.log.Error(fmt.Sprintf(format, args...), "component", "pebble")
	panic(fmt.Sprintf(format, args...))
}
