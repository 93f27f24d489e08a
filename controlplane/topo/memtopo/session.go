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

type session struct {
	s     *Store
	lease *lease
}

func (ss *session) Lease() topo.LeaseID   { return ss.lease.id }
func (ss *session) Done() <-chan struct{} { return ss.lease.done }
func (ss *session) Close() error {
	ss.s.revoke(ss.lease.id)
	return nil
}

// NewSession implements topo.Store. ttl is rounded up to whole seconds
// like etcd's; the lease lives until Close, ExpireLease or Store.Close.
func (s *Store) NewSession(ctx context.Context, ttl time.Duration) (topo.Session, error) {
	if ttl <= 0 {
		return nil, fmt.Errorf("memtopo: session ttl %s: %w", ttl, topo.ErrInvalid)
	}
	if err := s.begin(ctx, OpSession); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.nextLease++
	l := &lease{id: s.nextLease, ttl: ttl.Round(time.Second), keys: map[string]struct{}{}, done: make(chan struct{})}
	if l.ttl < ttl {
		l.ttl += time.Second
	}
	s.leases[l.id] = l
	return &session{s: s, lease: l}, nil
}

// ExpireLease ends lease id as if its TTL ran out: its keys are deleted
// (one revision, seen by watches) and its session's Done closes. It
// returns false if there is no such lease.
func (s *Store) ExpireLease(id topo.LeaseID) bool { return s.revoke(id) }

func (s *Store) revoke(id topo.LeaseID) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	l, ok := s.leases[id]
	if !ok {
		return false
	}
	delete(s.leases, id)
	keys := make([]string, 0, len(l.keys))
	for k := range l.keys {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	ops := make([]topo.Op, len(keys))
	for i, k := range keys {
		ops[i] = topo.Del(k)
	}
	_, _ = s.applyLocked(ops)
	close(l.done)
	return true
}

// Leases returns the ids of the live leases (for tests).
func (s *Store) Leases() []topo.LeaseID {
	s.mu.Lock()
	defer s.mu.Unlock()
	ids := make([]topo.LeaseID, 0, len(s.leases))
	for id := range s.leases {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	return ids
}

// leaderLocked returns the key under name/ with the lowest create revision.
func (s *Store) leaderLocked(name string) (string, version, bool) {
	pfx := name + "/"
	var (
		best  string
		bestV version
		found bool
	)
	for k := range s.keys {
		if !strings.HasPrefix(k, pfx) {
			continue
		}
		v, ok := s.current(k)
		if ok && (!found || v.created < bestV.created) {
			best, bestV, found = k, v, true
		}
	}
	return best, bestV, found
}

// Campaign implements topo.Store: like etcd's election, the session puts
// name/<lease hex> and leads when that key has the lowest create revision
// under name/. If ctx ends first, the key is deleted.
func (s *Store) Campaign(ctx context.Context, sess topo.Session, name string, value []byte) (topo.Leadership, error) {
	ss, ok := sess.(*session)
	if !ok || ss.s != s || name == "" {
		return nil, fmt.Errorf("memtopo: campaign %q: session of another store or empty name: %w", name, topo.ErrInvalid)
	}
	if err := s.begin(ctx, OpCampaign, name); err != nil {
		return nil, err
	}
	key := fmt.Sprintf("%s/%x", name, ss.lease.id)
	s.mu.Lock()
	if _, live := s.leases[ss.lease.id]; !live {
		s.mu.Unlock()
		return nil, fmt.Errorf("memtopo: campaign %q: session: %w", name, topo.ErrClosed)
	}
	// A second campaign of the same session rewrites its key's value
	// (etcd's election proclaims in that case).
	_, _ = s.applyLocked([]topo.Op{topo.PutLeased(key, value, ss.lease.id)})
	for {
		mine, ok := s.current(key)
		if !ok {
			s.mu.Unlock()
			return nil, fmt.Errorf("memtopo: campaign %q: key deleted while waiting: %w", name, topo.ErrClosed)
		}
		if lk, _, _ := s.leaderLocked(name); lk == key {
			l := &leadership{s: s, key: key, ver: topo.Version(mine.rev), done: make(chan struct{})}
			s.mu.Unlock()
			go l.monitor(ss.lease.done)
			return l, nil
		}
		changed := s.changed
		s.mu.Unlock()
		select {
		case <-ctx.Done():
			s.mu.Lock()
			if cur, ok := s.current(key); ok && cur.lease == ss.lease.id {
				_, _ = s.applyLocked([]topo.Op{topo.Del(key)})
			}
			s.mu.Unlock()
			return nil, fmt.Errorf("memtopo: campaign %q: %w", name, ctx.Err())
		case <-ss.lease.done:
			return nil, fmt.Errorf("memtopo: campaign %q: session ended: %w", name, topo.ErrClosed)
		case <-changed:
		}
		s.mu.Lock()
	}
}

// Leader implements topo.Store.
func (s *Store) Leader(ctx context.Context, name string) (topo.KV, error) {
	if name == "" {
		return topo.KV{}, fmt.Errorf("memtopo: empty election name: %w", topo.ErrInvalid)
	}
	if err := s.begin(ctx, OpGet, name+"/"); err != nil {
		return topo.KV{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	k, v, ok := s.leaderLocked(name)
	if !ok {
		return topo.KV{}, fmt.Errorf("memtopo: leader of %q: %w", name, topo.ErrNotFound)
	}
	return toKV(k, v, false), nil
}

type leadership struct {
	s    *Store
	key  string
	ver  topo.Version
	done chan struct{}
	stop sync.Once
}

func (l *leadership) Key() string           { return l.key }
func (l *leadership) Version() topo.Version { return l.ver }
func (l *leadership) Done() <-chan struct{} { return l.done }

// monitor closes done when the session ends, the key changes or the store
// closes.
func (l *leadership) monitor(sessDone <-chan struct{}) {
	defer l.stop.Do(func() { close(l.done) })
	for {
		l.s.mu.Lock()
		v, ok := l.s.current(l.key)
		closed := l.s.closed
		changed := l.s.changed
		l.s.mu.Unlock()
		if closed || !ok || topo.Version(v.rev) != l.ver {
			return
		}
		select {
		case <-sessDone:
			return
		case <-l.done:
			return
		case <-changed:
		}
	}
}

func (l *leadership) Resign(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("memtopo: resign: %w", err)
	}
	l.s.mu.Lock()
	if v, ok := l.s.current(l.key); ok && topo.Version(v.rev) == l.ver {
		_, _ = l.s.applyLocked([]topo.Op{topo.Del(l.key)})
	}
	l.s.mu.Unlock()
	l.stop.Do(func() { close(l.done) })
	return nil
}
