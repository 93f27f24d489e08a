package memtopo

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/cellplane/cellplane/controlplane/topo"
)

// DefaultMaxWatchBacklog is the default Options.MaxWatchBacklog.
const DefaultMaxWatchBacklog = 100000

// DefaultMaxTxnOps is the default Options.MaxTxnOps (etcd's default).
const DefaultMaxTxnOps = 128

// Options tune a Store; the zero value takes the defaults.
type Options struct {
	// MaxWatchBacklog is how many undelivered events a watcher may have
	// before its watch ends with ErrCompacted.
	MaxWatchBacklog int
	// MaxTxnOps bounds the conds and the ops of one Txn (each), like
	// etcd's --max-txn-ops.
	MaxTxnOps int
}

// version is one state of a key: a write (deleted false) or a deletion.
type version struct {
	rev     int64
	created int64
	value   []byte
	lease   topo.LeaseID
	deleted bool
}

type lease struct {
	id   topo.LeaseID
	ttl  time.Duration
	keys map[string]struct{}
	done chan struct{}
}

// Store is an in-memory topo.Store. It is safe for concurrent use.
type Store struct {
	opts Options

	mu         sync.Mutex
	closed     bool
	rev        int64
	compactRev int64
	// keys holds every key's history, oldest first; the last entry is the
	// current state.
	keys      map[string][]version
	events    []revEvents
	leases    map[topo.LeaseID]*lease
	nextLease topo.LeaseID
	watchers  map[*watcher]struct{}
	// changed is closed and replaced on every write (campaigns wait on it).
	changed chan struct{}
	faults  []*fault
}

type revEvents struct {
	rev    int64
	events []topo.Event
}

var _ topo.Store = (*Store)(nil)

// New returns an empty store with default options.
func New() *Store { return NewWithOptions(Options{}) }

// NewWithOptions returns an empty store.
func NewWithOptions(o Options) *Store {
	if o.MaxWatchBacklog <= 0 {
		o.MaxWatchBacklog = DefaultMaxWatchBacklog
	}
	if o.MaxTxnOps <= 0 {
		o.MaxTxnOps = DefaultMaxTxnOps
	}
	return &Store{
		opts:      o,
		rev:       1, // like etcd: an empty store is at revision 1
		keys:      make(map[string][]version),
		leases:    make(map[topo.LeaseID]*lease),
		nextLease: 0x1000,
		watchers:  make(map[*watcher]struct{}),
		changed:   make(chan struct{}),
	}
}

// Revision returns the current revision.
func (s *Store) Revision() topo.Revision {
	s.mu.Lock()
	defer s.mu.Unlock()
	return topo.Revision(s.rev)
}

// begin checks ctx, closure and faults; it is called without s.mu.
func (s *Store) begin(ctx context.Context, op Operation, keys ...string) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("memtopo: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return fmt.Errorf("memtopo: %w", topo.ErrClosed)
	}
	return s.faultLocked(op, keys...)
}

func (s *Store) current(key string) (version, bool) {
	h := s.keys[key]
	if len(h) == 0 || h[len(h)-1].deleted {
		return version{}, false
	}
	return h[len(h)-1], true
}

// at returns key's state at rev.
func (s *Store) at(key string, rev int64) (version, bool) {
	h := s.keys[key]
	i := sort.Search(len(h), func(i int) bool { return h[i].rev > rev }) - 1
	if i < 0 || h[i].deleted {
		return version{}, false
	}
	return h[i], true
}

func toKV(key string, v version, keysOnly bool) topo.KV {
	kv := topo.KV{Key: key, Version: topo.Version(v.rev), Created: topo.Version(v.created), Lease: v.lease}
	if !keysOnly {
		kv.Value = append([]byte(nil), v.value...)
	}
	return kv
}

// Get implements topo.Store.
func (s *Store) Get(ctx context.Context, key string) (topo.KV, error) {
	if key == "" {
		return topo.KV{}, fmt.Errorf("memtopo: empty key: %w", topo.ErrInvalid)
	}
	if err := s.begin(ctx, OpGet, key); err != nil {
		return topo.KV{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.current(key)
	if !ok {
		return topo.KV{}, fmt.Errorf("memtopo: get %q: %w", key, topo.ErrNotFound)
	}
	return toKV(key, v, false), nil
}

// Create implements topo.Store.
func (s *Store) Create(ctx context.Context, key string, value []byte) (topo.Version, error) {
	if key == "" {
		return 0, fmt.Errorf("memtopo: empty key: %w", topo.ErrInvalid)
	}
	if err := s.begin(ctx, OpCreate, key); err != nil {
		return 0, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.current(key); ok {
		return 0, fmt.Errorf("memtopo: create %q: %w", key, topo.ErrExists)
	}
	rev, err := s.applyLocked([]topo.Op{topo.Put(key, value)})
	return topo.Version(rev), err
}

// Update implements topo.Store. expect must be a version (> 0): use
// Create for new keys.
func (s *Store) Update(ctx context.Context, key string, value []byte, expect topo.Version) (topo.Version, error) {
	if key == "" || expect <= 0 {
		return 0, fmt.Errorf("memtopo: update %q at version %d: %w", key, expect, topo.ErrInvalid)
	}
	if err := s.begin(ctx, OpUpdate, key); err != nil {
		return 0, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.current(key)
	if !ok {
		return 0, fmt.Errorf("memtopo: update %q: %w", key, topo.ErrNotFound)
	}
	if topo.Version(v.rev) != expect {
		return 0, fmt.Errorf("memtopo: update %q: version %d, want %d: %w", key, v.rev, expect, topo.ErrVersionMismatch)
	}
	rev, err := s.applyLocked([]topo.Op{topo.Put(key, value)})
	return topo.Version(rev), err
}

// Delete implements topo.Store.
func (s *Store) Delete(ctx context.Context, key string, expect topo.Version) error {
	if key == "" || expect < 0 {
		return fmt.Errorf("memtopo: delete %q at version %d: %w", key, expect, topo.ErrInvalid)
	}
	if err := s.begin(ctx, OpDelete, key); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.current(key)
	if !ok {
		return fmt.Errorf("memtopo: delete %q: %w", key, topo.ErrNotFound)
	}
	if expect != 0 && topo.Version(v.rev) != expect {
		return fmt.Errorf("memtopo: delete %q: version %d, want %d: %w", key, v.rev, expect, topo.ErrVersionMismatch)
	}
	_, err := s.applyLocked([]topo.Op{topo.Del(key)})
	return err
}

// validateTxn checks what etcd would reject.
func validateTxn(conds []topo.Cond, ops []topo.Op, max int) error {
	if len(conds) > max || len(ops) > max {
		return fmt.Errorf("txn of %d conds and %d ops exceeds %d: %w", len(conds), len(ops), max, topo.ErrInvalid)
	}
	for i, c := range conds {
		if c.Key == "" || (c.Kind != topo.CondVersion && c.Kind != topo.CondExists) || c.Version < 0 {
			return fmt.Errorf("cond %d %+v: %w", i, c, topo.ErrInvalid)
		}
	}
	seen := make(map[string]struct{}, len(ops))
	for i, o := range ops {
		if o.Key == "" || (o.Kind != topo.OpPut && o.Kind != topo.OpDelete) {
			return fmt.Errorf("op %d (kind %d, key %q): %w", i, o.Kind, o.Key, topo.ErrInvalid)
		}
		if _, dup := seen[o.Key]; dup {
			return fmt.Errorf("duplicate key %q in txn: %w", o.Key, topo.ErrInvalid)
		}
		seen[o.Key] = struct{}{}
	}
	return nil
}

// Txn implements topo.Store.
func (s *Store) Txn(ctx context.Context, conds []topo.Cond, ops []topo.Op) (topo.Revision, error) {
	if err := validateTxn(conds, ops, s.opts.MaxTxnOps); err != nil {
		return 0, fmt.Errorf("memtopo: %w", err)
	}
	keys := make([]string, 0, len(conds)+len(ops))
	for _, c := range conds {
		keys = append(keys, c.Key)
	}
	for _, o := range ops {
		keys = append(keys, o.Key)
	}
	if err := s.begin(ctx, OpTxn, keys...); err != nil {
		return 0, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, c := range conds {
		v, ok := s.current(c.Key)
		var actual topo.Version
		if ok {
			actual = topo.Version(v.rev)
		}
		holds := false
		switch c.Kind {
		case topo.CondVersion:
			holds = actual == c.Version
		case topo.CondExists:
			holds = ok
		}
		if !holds {
			return 0, &topo.CondError{Index: i, Cond: c, Actual: actual}
		}
	}
	for _, o := range ops {
		if o.Kind == topo.OpPut && o.Lease != 0 {
			if _, ok := s.leases[o.Lease]; !ok {
				return 0, fmt.Errorf("memtopo: lease %x: %w", o.Lease, topo.ErrNotFound)
			}
		}
	}
	rev, err := s.applyLocked(ops)
	return topo.Revision(rev), err
}

// applyLocked writes ops at a new revision (none if nothing changes) and
// returns the revision of the store after it.
func (s *Store) applyLocked(ops []topo.Op) (int64, error) {
	next := s.rev + 1
	var evs []topo.Event
	for _, o := range ops {
		cur, exists := s.current(o.Key)
		switch o.Kind {
		case topo.OpPut:
			created := next
			if exists {
				created = cur.created
				if cur.lease != 0 {
					if l := s.leases[cur.lease]; l != nil {
						delete(l.keys, o.Key)
					}
				}
			}
			v := version{rev: next, created: created, value: append([]byte(nil), o.Value...), lease: o.Lease}
			if o.Lease != 0 {
				s.leases[o.Lease].keys[o.Key] = struct{}{}
			}
			s.keys[o.Key] = append(s.keys[o.Key], v)
			evs = append(evs, topo.Event{Type: topo.EventPut, KV: toKV(o.Key, v, false)})
		case topo.OpDelete:
			if !exists {
				continue
			}
			if cur.lease != 0 {
				if l := s.leases[cur.lease]; l != nil {
					delete(l.keys, o.Key)
				}
			}
			s.keys[o.Key] = append(s.keys[o.Key], version{rev: next, deleted: true})
			evs = append(evs, topo.Event{Type: topo.EventDelete, KV: topo.KV{Key: o.Key, Version: topo.Version(next)}})
		}
	}
	if len(evs) == 0 {
		return s.rev, nil
	}
	s.rev = next
	s.events = append(s.events, revEvents{rev: next, events: evs})
	for w := range s.watchers {
		w.push(next, evs)
	}
	close(s.changed)
	s.changed = make(chan struct{})
	return next, nil
}

// List implements topo.Store.
func (s *Store) List(ctx context.Context, prefix string, opts topo.ListOptions) (topo.ListResult, error) {
	if opts.Limit < 0 || opts.Revision < 0 {
		return topo.ListResult{}, fmt.Errorf("memtopo: list %q: %+v: %w", prefix, opts, topo.ErrInvalid)
	}
	if err := s.begin(ctx, OpList, prefix); err != nil {
		return topo.ListResult{}, err
	}
	limit := opts.Limit
	if limit == 0 {
		limit = topo.DefaultListLimit
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	rev := int64(opts.Revision)
	if rev == 0 {
		rev = s.rev
	}
	if rev < s.compactRev {
		return topo.ListResult{}, fmt.Errorf("memtopo: list %q at %d (compacted at %d): %w", prefix, rev, s.compactRev, topo.ErrCompacted)
	}
	if rev > s.rev {
		return topo.ListResult{}, fmt.Errorf("memtopo: list %q at future revision %d: %w", prefix, rev, topo.ErrInvalid)
	}
	var names []string
	for k := range s.keys {
		if strings.HasPrefix(k, prefix) && (opts.After == "" || k > opts.After) {
			names = append(names, k)
		}
	}
	sort.Strings(names)
	res := topo.ListResult{Revision: topo.Revision(rev)}
	for _, k := range names {
		v, ok := s.at(k, rev)
		if !ok {
			continue
		}
		if len(res.KVs) == limit {
			res.More = true
			break
		}
		res.KVs = append(res.KVs, toKV(k, v, opts.KeysOnly))
	}
	return res, nil
}

// Compact discards history before rev: List and Watch at an older
// revision return ErrCompacted. Like etcd, compacting at or below the
// current compaction point returns ErrCompacted and a future revision
// ErrInvalid.
func (s *Store) Compact(ctx context.Context, rev topo.Revision) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("memtopo: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	r := int64(rev)
	switch {
	case s.closed:
		return fmt.Errorf("memtopo: %w", topo.ErrClosed)
	case r <= s.compactRev:
		return fmt.Errorf("memtopo: compact at %d (compacted at %d): %w", r, s.compactRev, topo.ErrCompacted)
	case r > s.rev:
		return fmt.Errorf("memtopo: compact at future revision %d: %w", r, topo.ErrInvalid)
	}
	s.compactRev = r
	for k, h := range s.keys {
		// Keep the state at r and everything after it.
		i := sort.Search(len(h), func(i int) bool { return h[i].rev > r }) - 1
		if i > 0 {
			h = append([]version(nil), h[i:]...)
		}
		if len(h) > 0 && h[0].deleted && h[0].rev <= r {
			h = h[1:]
		}
		if len(h) == 0 {
			delete(s.keys, k)
		} else {
			s.keys[k] = h
		}
	}
	i := sort.Search(len(s.events), func(i int) bool { return s.events[i].rev >= r })
	s.events = append([]revEvents(nil), s.events[i:]...)
	return nil
}

// Close ends every watch (with ErrClosed) and makes later calls fail with
// ErrClosed. Leases are dropped without deleting their keys.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	for w := range s.watchers {
		w.fail(fmt.Errorf("memtopo: %w", topo.ErrClosed))
	}
	s.watchers = map[*watcher]struct{}{}
	for id, l := range s.leases {
		close(l.done)
		delete(s.leases, id)
	}
	close(s.changed)
	s.changed = make(chan struct{})
	return nil
}
