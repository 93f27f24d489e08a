package registry_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cellplane/cellplane/cells/registry"
	"github.com/cellplane/cellplane/controlplane/topo"
	"github.com/cellplane/cellplane/controlplane/topo/memtopo"
	"github.com/cellplane/cellplane/internal/testutil"
	cellv1 "github.com/cellplane/cellplane/proto/cellplane/cell/v1"
)

// memLeaser gives a memtopo store bare leases (topo.Leaser) on a fake
// clock: a keep-alive can be made slow on the node's clock, and etcd
// unreachable for keep-alives and grants after it.
type memLeaser struct {
	*memtopo.Store
	clock *fakeClock
	// slowOnce is added to the clock by the next keep-alive, after which
	// keep-alives and grants fail (etcd unreachable).
	slowOnce atomic.Int64
	down     atomic.Bool
	// afterOnce runs once after the next keep-alive etcd answered.
	afterOnce atomic.Pointer[func()]
	mu        sync.Mutex
	sent      []time.Duration // send times of the keep-alives etcd answered
}

func (m *memLeaser) Grant(ctx context.Context, ttl time.Duration) (topo.LeaseID, error) {
	if m.down.Load() {
		return 0, topo.ErrUnavailable
	}
	s, err := m.Store.NewSession(ctx, ttl)
	if err != nil {
		return 0, err
	}
	return s.Lease(), nil
}

func (m *memLeaser) KeepAliveOnce(_ context.Context, id topo.LeaseID) (time.Duration, error) {
	at := m.clock.Now() // etcd renews after this: the lease ends no earlier than at + TTL
	if m.down.Load() {
		return 0, topo.ErrUnavailable
	}
	if !slices.Contains(m.Leases(), id) {
		return 0, fmt.Errorf("lease %x: %w", id, topo.ErrNotFound)
	}
	if d := m.slowOnce.Swap(0); d != 0 {
		m.clock.Advance(time.Duration(d))
		m.down.Store(true)
	}
	m.mu.Lock()
	m.sent = append(m.sent, at)
	m.mu.Unlock()
	if f := m.afterOnce.Swap(nil); f != nil {
		(*f)()
	}
	return 5 * time.Second, nil
}

func (m *memLeaser) Revoke(_ context.Context, id topo.LeaseID) error {
	if !m.ExpireLease(id) {
		return topo.ErrNotFound
	}
	return nil
}

func (m *memLeaser) lastSent() time.Duration {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.sent[len(m.sent)-1]
}

// With keep-alive renewals, the validity is counted from when the
// keep-alive was sent, not from when it returned (here 2 s later): a
// node cut off from etcd after it refuses strictly before the lease can
// expire in etcd. The key stays under one lease across renewals.
func TestAuthorityKeepAliveLapsesBeforeItsLeaseCanExpire(t *testing.T) {
	clock := &fakeClock{}
	st := newStore(t)
	createCell(t, st, 3)
	ctx := testutil.Context(t, 10*time.Second)
	ml := &memLeaser{Store: st, clock: clock}
	l := &leader{}
	l.set(3, true)
	a := startAuthority(t, ml, "n1", l, newFencer(), func(c *registry.AuthorityConfig) {
		c.TTL, c.DriftMargin = 5*time.Second, time.Second
		c.TestingKnobs.Now = clock.Now
	})
	testutil.Eventually(t, 5*time.Second, wantValid(a, true))
	_, first, err := getAuthority(ctx, st)
	if err != nil {
		t.Fatal(err)
	}

	// A renewal whose keep-alive returns 2 s after it was sent; etcd is
	// unreachable for keep-alives after it.
	ml.slowOnce.Store(int64(2 * time.Second))
	clock.Advance(a.Config().RenewEvery())
	testutil.Eventually(t, 5*time.Second, func() error {
		if !ml.down.Load() {
			return errors.New("the slow keep-alive was not sent yet")
		}
		if v := a.ValidFor(); v < 1500*time.Millisecond {
			return fmt.Errorf("valid for %s: the renewal did not land yet", v)
		}
		return nil
	})
	sent := ml.lastSent()
	_, kv, err := getAuthority(ctx, st)
	if err != nil {
		t.Fatal(err)
	}
	if kv.Lease != first.Lease || kv.Version != first.Version {
		t.Fatalf("key moved from lease %x (version %d) to %x (%d): a keep-alive renewal writes nothing", first.Lease, first.Version, kv.Lease, kv.Version)
	}
	for _, op := range []memtopo.Operation{memtopo.OpSession, memtopo.OpList, memtopo.OpTxn, memtopo.OpGet, memtopo.OpWatch} {
		st.Fail(op, "", topo.ErrUnavailable)
	}
	var refusedAt time.Duration
	for now := clock.Now(); ; now += time.Millisecond {
		clock.Set(now)
		if !a.Valid() {
			refusedAt = now
			break
		}
	}
	if refusedAt != sent+4*time.Second {
		t.Errorf("refused from %s after the keep-alive was sent, want TTL − DriftMargin = 4s", refusedAt-sent)
	}
	if earliest := sent + 5*time.Second; refusedAt >= earliest {
		t.Fatalf("still valid at %s, at or after the earliest expiry of its lease in etcd (%s)", refusedAt, earliest)
	}
}

// proposerHook runs hook before each proposal.
type proposerHook struct {
	registry.Proposer
	hook func()
}

func (p proposerHook) Propose(ctx context.Context, cmd *cellv1.Command) (*cellv1.CommandResult, error) {
	p.hook()
	return p.Proposer.Propose(ctx, cmd)
}

// A fence that lands right after a keep-alive renewal was sent (before
// its read) is applied before that renewal extends the validity: the
// renewal's read follows its keep-alive, like a publication's read
// precedes its conditional write.
func TestAuthorityKeepAliveRenewalAppliesFencesFirst(t *testing.T) {
	clock := &fakeClock{}
	st := newStore(t)
	createCell(t, st, 3)
	ctx := testutil.Context(t, 10*time.Second)
	ml := &memLeaser{Store: st, clock: clock}
	fen := newFencer()
	fen.setTseq("acme", 4)
	var a *registry.Authority
	var validAtPropose atomic.Int64
	prop := proposerHook{Proposer: fen, hook: func() { validAtPropose.Store(int64(a.ValidFor())) }}
	l := &leader{}
	l.set(2, true)
	a = startAuthority(t, ml, "n1", l, prop, func(c *registry.AuthorityConfig) {
		c.TestingKnobs.Now = clock.Now
	})
	testutil.Eventually(t, 5*time.Second, wantValid(a, true))
	st.Fail(memtopo.OpWatch, "", topo.ErrUnavailable)
	fence := func() { putFence(t, st, "acme", 3, "promote-acme-e3") }
	ml.afterOnce.Store(&fence)
	clock.Advance(a.Config().RenewEvery())
	testutil.Eventually(t, 5*time.Second, func() error {
		f, err := getFence(ctx, st, "acme")
		if err != nil {
			return err
		}
		if !f.GetApplied() {
			return errors.New("fence not applied yet")
		}
		return nil
	})
	// Window 1.5 s, renewal 0.5 s after the last anchor: 1 s left before
	// the renewal, 1.5 s after it.
	if v := time.Duration(validAtPropose.Load()); v > 1200*time.Millisecond {
		t.Fatalf("valid for %s when the fence was proposed: the renewal extended the validity before applying a fence written before its read", v)
	}
	testutil.Eventually(t, 5*time.Second, func() error {
		if v := a.ValidFor(); v < 1400*time.Millisecond {
			return fmt.Errorf("valid for %s: not renewed", v)
		}
		return nil
	})
}

// TestAuthorityDriftMargin is S23 for the authority lease: the node's
// clock runs slower than etcd's by a rate r (the node's seconds are r
// etcd seconds). After its last keep-alive, the node must stop
// acknowledging strictly before etcd can expire the lease (sent + TTL, on
// etcd's clock) and grant the authority elsewhere: it does for any r >
// 1 − DriftMargin/TTL (0.8 here) and cannot below. The cases below the
// bound are the oracle's self-test: the overlap it reports is the
// at-most-one-writer violation (I5) a drift beyond the margin causes.
func TestAuthorityDriftMargin(t *testing.T) {
	const ttl, margin = 5 * time.Second, time.Second
	cases := []struct {
		rate    float64 // node clock rate relative to etcd's
		overlap bool    // whether the node still acknowledges after etcd may expire its lease
	}{
		{1.0, false},
		{0.9, false},
		{0.81, false}, // within the margin: (TTL − margin)/0.81 = 4.94 s < 5 s
		{0.79, true},  // beyond it: 5.06 s
		{0.5, true},
	}
	for _, tc := range cases {
		t.Run(fmt.Sprintf("rate=%.2f", tc.rate), func(t *testing.T) {
			clock := &fakeClock{}
			st := newStore(t)
			createCell(t, st, 3)
			ml := &memLeaser{Store: st, clock: clock}
			l := &leader{}
			l.set(3, true)
			a := startAuthority(t, ml, "n1", l, newFencer(), func(c *registry.AuthorityConfig) {
				c.TTL, c.DriftMargin = ttl, margin
				c.TestingKnobs.Now = clock.Now
			})
			testutil.Eventually(t, 5*time.Second, wantValid(a, true))
			// One more keep-alive, then etcd is unreachable.
			ml.slowOnce.Store(1)
			clock.Advance(a.Config().RenewEvery())
			testutil.Eventually(t, 5*time.Second, func() error {
				if !ml.down.Load() {
					return errors.New("the last keep-alive was not sent yet")
				}
				if v := a.ValidFor(); v < ttl-margin-time.Second {
					return fmt.Errorf("valid for %s: the renewal did not land yet", v)
				}
				return nil
			})
			sent := ml.lastSent()
			for _, op := range []memtopo.Operation{memtopo.OpSession, memtopo.OpList, memtopo.OpTxn, memtopo.OpGet, memtopo.OpWatch} {
				st.Fail(op, "", topo.ErrUnavailable)
			}
			// Real (etcd) time e after the send; the node's clock reads
			// sent + rate·e.
			var refusedAt time.Duration
			for e := time.Millisecond; e < 2*ttl; e += time.Millisecond {
				clock.Set(sent + time.Duration(tc.rate*float64(e)))
				if !a.Valid() {
					refusedAt = e
					break
				}
			}
			if refusedAt == 0 {
				t.Fatalf("never refused within %s", 2*ttl)
			}
			if overlap := refusedAt >= ttl; overlap != tc.overlap {
				t.Fatalf("refused %s (etcd time) after the keep-alive was sent, lease expiry in etcd at %s: overlap=%v, want %v", refusedAt, ttl, overlap, tc.overlap)
			}
		})
	}
}
