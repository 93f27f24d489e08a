package etcdtopo

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"

	"github.com/cellplane/cellplane/controlplane/topo"
)

type session struct {
	st *Store
	cs *concurrency.Session
}

func (ss *session) Lease() topo.LeaseID   { return topo.LeaseID(ss.cs.Lease()) }
func (ss *session) Done() <-chan struct{} { return ss.cs.Done() }

// Close revokes the lease, waiting up to the TTL for etcd to answer.
func (ss *session) Close() error {
	if err := ss.cs.Close(); err != nil && !errors.Is(err, context.Canceled) {
		return ss.st.mapErr(context.Background(), "close session", err)
	}
	return nil
}

// NewSession implements topo.Store. ttl is rounded up to whole seconds
// (at least 1). ctx bounds the lease grant only: the keep-alive runs until
// Close, the lease's loss or the store's Close.
func (s *Store) NewSession(ctx context.Context, ttl time.Duration) (topo.Session, error) {
	if ttl <= 0 {
		return nil, fmt.Errorf("etcdtopo: session ttl %s: %w", ttl, topo.ErrInvalid)
	}
	secs := int64((ttl + time.Second - 1) / time.Second)
	// Grant here rather than in concurrency.NewSession: with WithContext,
	// its keep-alive would die with the (short) request ctx.
	g, err := s.cli.Grant(ctx, secs)
	if err != nil {
		return nil, s.mapErr(ctx, "grant lease", err)
	}
	cs, err := concurrency.NewSession(s.cli, concurrency.WithLease(g.ID), concurrency.WithTTL(int(secs)))
	if err != nil {
		rctx, cancel := context.WithTimeout(context.Background(), ttl)
		defer cancel()
		_, _ = s.cli.Revoke(rctx, g.ID)
		return nil, s.mapErr(ctx, "session", err)
	}
	return &session{st: s, cs: cs}, nil
}

// Grant implements topo.Leaser.
func (s *Store) Grant(ctx context.Context, ttl time.Duration) (topo.LeaseID, error) {
	if ttl <= 0 {
		return 0, fmt.Errorf("etcdtopo: lease ttl %s: %w", ttl, topo.ErrInvalid)
	}
	g, err := s.cli.Grant(ctx, int64((ttl+time.Second-1)/time.Second))
	if err != nil {
		return 0, s.mapErr(ctx, "grant lease", err)
	}
	return topo.LeaseID(g.ID), nil
}

// KeepAliveOnce implements topo.Leaser: one LeaseKeepAlive request
// (answered by etcd's leader from its lessor: no Raft proposal, no
// revision).
func (s *Store) KeepAliveOnce(ctx context.Context, id topo.LeaseID) (time.Duration, error) {
	resp, err := s.cli.KeepAliveOnce(ctx, clientv3.LeaseID(id))
	switch {
	case errors.Is(err, rpctypes.ErrLeaseNotFound):
		return 0, fmt.Errorf("etcdtopo: keep lease %x alive: %w", id, topo.ErrNotFound)
	case err != nil:
		return 0, s.mapErr(ctx, "keep lease alive", err)
	case resp.TTL <= 0:
		return 0, fmt.Errorf("etcdtopo: keep lease %x alive: expired: %w", id, topo.ErrNotFound)
	}
	return time.Duration(resp.TTL) * time.Second, nil
}

// Revoke implements topo.Leaser.
func (s *Store) Revoke(ctx context.Context, id topo.LeaseID) error {
	_, err := s.cli.Revoke(ctx, clientv3.LeaseID(id))
	if errors.Is(err, rpctypes.ErrLeaseNotFound) {
		return fmt.Errorf("etcdtopo: revoke lease %x: %w", id, topo.ErrNotFound)
	}
	if err != nil {
		return s.mapErr(ctx, "revoke lease", err)
	}
	return nil
}

var _ topo.Leaser = (*Store)(nil)

// Campaign implements topo.Store with concurrency.Election under
// prefix+name: the leader is the key name/<lease hex> with the lowest
// create revision. If ctx ends while waiting, the key is deleted.
func (s *Store) Campaign(ctx context.Context, sess topo.Session, name string, value []byte) (topo.Leadership, error) {
	ss, ok := sess.(*session)
	if !ok || ss.st != s || name == "" {
		return nil, fmt.Errorf("etcdtopo: campaign %q: session of another store or empty name: %w", name, topo.ErrInvalid)
	}
	select {
	case <-ss.cs.Done():
		return nil, fmt.Errorf("etcdtopo: campaign %q: session: %w", name, topo.ErrClosed)
	default:
	}
	e := concurrency.NewElection(ss.cs, s.abs(name))
	if err := s.campaign(ctx, e, string(value)); err != nil {
		if errors.Is(err, concurrency.ErrSessionExpired) {
			return nil, fmt.Errorf("etcdtopo: campaign %q: session expired: %w", name, topo.ErrClosed)
		}
		return nil, s.mapErr(ctx, "campaign "+name, err)
	}
	// The version guarding writes is the key's ModRevision; read it (a
	// re-campaign of the same session rewrites the value, so it can differ
	// from the create revision etcd's Election.Rev reports).
	resp, err := s.get(ctx, e.Key())
	if err != nil {
		// Do not stay leader unbeknownst to the caller.
		rctx, cancel := context.WithTimeout(s.ctx, 5*time.Second)
		_ = e.Resign(rctx)
		cancel()
		return nil, s.mapErr(ctx, "campaign "+name, err)
	}
	if len(resp.Kvs) == 0 || resp.Kvs[0].Lease != int64(ss.cs.Lease()) {
		return nil, fmt.Errorf("etcdtopo: campaign %q: leader key vanished: %w", name, topo.ErrClosed)
	}
	ver := resp.Kvs[0].ModRevision
	mctx, cancel := context.WithCancel(s.ctx)
	l := &leadership{st: s, e: e, key: s.rel([]byte(e.Key())), ver: topo.Version(ver), done: make(chan struct{}), cancel: cancel}
	// The monitor's watch starts after ver: any change to the key ends
	// the leadership.
	wch := s.cli.Watch(clientv3.WithRequireLeader(mctx), e.Key(), clientv3.WithRev(ver+1))
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer l.end()
		select {
		case <-mctx.Done():
		case <-ss.cs.Done():
		case <-wch: // a change, an error or the end of the watch
		}
		cancel()
		for range wch { // drain until the client closes the channel
		}
	}()
	return l, nil
}

type leadership struct {
	st     *Store
	e      *concurrency.Election
	key    string
	ver    topo.Version
	done   chan struct{}
	once   sync.Once
	cancel context.CancelFunc
}

func (l *leadership) Key() string           { return l.key }
func (l *leadership) Version() topo.Version { return l.ver }
func (l *leadership) Done() <-chan struct{} { return l.done }
func (l *leadership) end()                  { l.once.Do(func() { close(l.done) }) }

// Resign deletes the leader key if it is still this leadership's.
func (l *leadership) Resign(ctx context.Context) error {
	defer l.cancel()
	k := l.st.abs(l.key)
	_, err := l.st.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.ModRevision(k), "=", int64(l.ver))).
		Then(clientv3.OpDelete(k)).
		Commit()
	if err != nil {
		return l.st.mapErr(ctx, "resign "+l.key, err)
	}
	l.end()
	return nil
}

// Leader implements topo.Store.
func (s *Store) Leader(ctx context.Context, name string) (topo.KV, error) {
	if name == "" {
		return topo.KV{}, fmt.Errorf("etcdtopo: empty election name: %w", topo.ErrInvalid)
	}
	resp, err := s.get(ctx, s.abs(name)+"/", append([]clientv3.OpOption{clientv3.WithPrefix()}, clientv3.WithFirstCreate()...)...)
	if err != nil {
		return topo.KV{}, s.mapErr(ctx, "leader "+name, err)
	}
	if len(resp.Kvs) == 0 {
		return topo.KV{}, fmt.Errorf("etcdtopo: leader of %q: %w", name, topo.ErrNotFound)
	}
	return s.kv(resp.Kvs[0]), nil
}

// campaign runs e.Campaign but returns when ctx ends even if etcd is
// unreachable. etcd's Campaign, once its context ends, resigns with the
// client's own context, which has no deadline: with etcd gone it blocks
// until the client is closed, and so did every Close that waited for a
// campaigning controller (found by the S22 test, docs/reliability.md).
// The abandoned call ends when etcd answers or the store closes its
// client; if it won in the meantime, it resigns (bounded), so the
// caller, told it lost, is never leader unbeknownst to it.
func (s *Store) campaign(ctx context.Context, e *concurrency.Election, value string) error {
	done := make(chan error, 1)
	go func() { done <- e.Campaign(ctx, value) }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		go func() {
			if err := <-done; err == nil {
				rctx, cancel := context.WithTimeout(s.ctx, 5*time.Second)
				_ = e.Resign(rctx)
				cancel()
			}
		}()
		return ctx.Err()
	}
}
