package registry_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
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

func TestAuthorityConfigValidate(t *testing.T) {
	valid := registry.DefaultAuthorityConfig()
	valid.Cell, valid.NodeID = cell, "n1"
	tests := []struct {
		name string
		mod  func(*registry.AuthorityConfig)
		want string // substring of the error; "" = valid
	}{
		{"defaults", func(*registry.AuthorityConfig) {}, ""},
		{"short window is fine at the minimum", func(c *registry.AuthorityConfig) { c.TTL, c.DriftMargin = time.Second, 500*time.Millisecond }, ""},
		{"no cell", func(c *registry.AuthorityConfig) { c.Cell = "" }, "Cell"},
		{"no node", func(c *registry.AuthorityConfig) { c.NodeID = "a b" }, "NodeID"},
		{"sub-second ttl", func(c *registry.AuthorityConfig) { c.TTL = 900 * time.Millisecond }, "whole seconds"},
		{"fractional ttl", func(c *registry.AuthorityConfig) { c.TTL = 2500 * time.Millisecond }, "whole seconds"},
		{"no margin", func(c *registry.AuthorityConfig) { c.DriftMargin = 0 }, "DriftMargin"},
		{"margin eats the ttl", func(c *registry.AuthorityConfig) { c.DriftMargin = c.TTL }, "TTL − DriftMargin"},
		{"window too short", func(c *registry.AuthorityConfig) { c.TTL, c.DriftMargin = time.Second, 700*time.Millisecond }, "TTL − DriftMargin"},
		{"renew beyond the window", func(c *registry.AuthorityConfig) { c.Renew = 4 * time.Second }, "Renew"},
		{"negative poll", func(c *registry.AuthorityConfig) { c.Poll = -1 }, "Poll"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := valid
			tt.mod(&c)
			err := c.Validate()
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("Validate = %v, want nil", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Fatalf("Validate = %v, want an error about %s", err, tt.want)
			}
		})
	}
	if w, r := valid.Window(), valid.RenewEvery(); w != 2*time.Second || r != w/3 {
		t.Fatalf("default window %s, renewal every %s; want 2s and a third of it", w, r)
	}
}

// The keeper publishes the authority while the node leads, is valid only
// then, and removes the key when leadership goes.
func TestAuthorityPublishesWhileLeading(t *testing.T) {
	st := newStore(t)
	createCell(t, st, 3)
	ctx := testutil.Context(t, 10*time.Second)
	l := &leader{}
	a := startAuthority(t, st, "n1", l, newFencer(), nil)
	if a.Valid() {
		t.Fatal("valid before leading")
	}
	l.set(3, true)
	testutil.Eventually(t, 5*time.Second, wantValid(a, true))
	auth, kv, err := getAuthority(ctx, st)
	if err != nil {
		t.Fatal(err)
	}
	if auth.GetNodeId() != "n1" || auth.GetTerm() != 3 || auth.GetTtl().AsDuration() != 2*time.Second ||
		auth.GetDriftMargin().AsDuration() != 500*time.Millisecond || auth.GetSince() == nil || kv.Lease == 0 {
		t.Fatalf("authority %v under lease %d", auth, kv.Lease)
	}
	if d := a.ValidFor(); d <= 0 || d > 1500*time.Millisecond {
		t.Fatalf("ValidFor = %s, want within the 1.5s window", d)
	}

	// A new term while still leading (lost and won back): not valid on
	// the old publication, valid again once republished for the term.
	l.set(5, true)
	if a.Valid() {
		t.Fatal("valid at term 5 on the term 3 publication")
	}
	testutil.Eventually(t, 5*time.Second, wantValid(a, true))
	if auth, _, _ := getAuthority(ctx, st); auth.GetTerm() != 5 {
		t.Fatalf("authority after the new term: %v", auth)
	}

	l.set(5, false)
	if a.Valid() {
		t.Fatal("valid after losing leadership")
	}
	testutil.Eventually(t, 5*time.Second, wantAbsent(ctx, st, topo.CellAuthorityKey(cell)))
}

// recorder wraps a store: it notes the (fake) time of every lease grant,
// and can make the authority write slow on the node's clock.
type recorder struct {
	topo.Store
	clock   *fakeClock
	mu      sync.Mutex
	grants  []time.Duration
	slowTxn atomic.Int64 // added to the clock by each authority write
}

func (r *recorder) NewSession(ctx context.Context, ttl time.Duration) (topo.Session, error) {
	at := r.clock.Now() // etcd grants after this: the lease ends no earlier than at + ttl
	s, err := r.Store.NewSession(ctx, ttl)
	if err == nil {
		r.mu.Lock()
		r.grants = append(r.grants, at)
		r.mu.Unlock()
	}
	return s, err
}

func (r *recorder) Txn(ctx context.Context, conds []topo.Cond, ops []topo.Op) (topo.Revision, error) {
	rev, err := r.Store.Txn(ctx, conds, ops)
	for _, op := range ops {
		if op.Key == topo.CellAuthorityKey(cell) && op.Kind == topo.OpPut {
			r.clock.Advance(time.Duration(r.slowTxn.Load()))
		}
	}
	return rev, err
}

func (r *recorder) lastGrant() time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.grants[len(r.grants)-1]
}

// Cut off from etcd, the leader stops being valid strictly before the
// lease its key is under can expire in etcd: the validity is counted from
// when the grant was sent, not from when the write that moved the key
// returned (here 2 s later).
func TestAuthorityLapsesBeforeItsLeaseCanExpire(t *testing.T) {
	clock := &fakeClock{}
	st := newStore(t)
	createCell(t, st, 3)
	ctx := testutil.Context(t, 10*time.Second)
	rec := &recorder{Store: st, clock: clock}
	l := &leader{}
	l.set(3, true)
	a := startAuthority(t, rec, "n1", l, newFencer(), func(c *registry.AuthorityConfig) {
		c.TTL, c.DriftMargin = 5*time.Second, time.Second
		c.TestingKnobs.Now = clock.Now
	})
	testutil.Eventually(t, 5*time.Second, wantValid(a, true))
	_, first, err := getAuthority(ctx, st)
	if err != nil {
		t.Fatal(err)
	}

	// A renewal whose write returns 2 s after its grant was sent.
	rec.slowTxn.Store(int64(2 * time.Second))
	clock.Advance(a.Config().RenewEvery())
	testutil.Eventually(t, 5*time.Second, func() error {
		_, kv, err := getAuthority(ctx, st)
		if err != nil {
			return err
		}
		if kv.Lease == first.Lease {
			return errors.New("not renewed yet")
		}
		return nil
	})
	if st.ExpireLease(first.Lease) {
		t.Fatalf("the lease the key was under before the renewal (%d) is still alive", first.Lease)
	}
	grant := rec.lastGrant()

	// etcd becomes unreachable for the node.
	for _, op := range []memtopo.Operation{memtopo.OpSession, memtopo.OpList, memtopo.OpTxn, memtopo.OpGet, memtopo.OpWatch} {
		st.Fail(op, "", topo.ErrUnavailable)
	}
	if !a.Valid() {
		t.Fatalf("not valid right after a renewal (clock %s, grant at %s)", clock.Now(), grant)
	}
	// Walk the node's clock forward: the first instant it refuses.
	var refusedAt time.Duration
	for now := clock.Now(); ; now += time.Millisecond {
		clock.Set(now)
		if !a.Valid() {
			refusedAt = now
			break
		}
	}
	earliestExpiry := grant + 5*time.Second
	if refusedAt != grant+4*time.Second {
		t.Errorf("refused from %s after the grant, want TTL − DriftMargin = 4s", refusedAt-grant)
	}
	if refusedAt >= earliestExpiry {
		t.Fatalf("still valid at %s, at or after the earliest expiry of its lease in etcd (%s)", refusedAt, earliestExpiry)
	}
}

// A fence written before this node leads is applied through Raft and
// reported before the authority is published.
func TestAuthorityAppliesFencesBeforePublishing(t *testing.T) {
	st := newStore(t)
	createCell(t, st, 3)
	ctx := testutil.Context(t, 10*time.Second)
	fenceRev := putFence(t, st, "acme", 7, "promote-acme-e7")
	prop := newFencer()
	prop.setTseq("acme", 41)
	l := &leader{}
	a := startAuthority(t, st, "n1", l, prop, nil)
	l.set(2, true)
	testutil.Eventually(t, 5*time.Second, wantValid(a, true))

	ps := prop.proposals()
	if len(ps) != 1 || ps[0].GetTenant() != "acme" || ps[0].GetSetTenant().GetEpoch() != 7 ||
		ps[0].GetSetTenant().GetRole() != cellv1.Role_ROLE_FENCED || ps[0].GetRequestId() != "fence.promote-acme-e7" {
		t.Fatalf("proposed %v, want one FENCED at epoch 7 with the failover's request id", ps)
	}
	f, err := getFence(ctx, st, "acme")
	if err != nil {
		t.Fatal(err)
	}
	if !f.GetApplied() || f.GetTseq() != 41 || f.GetEpoch() != 7 || f.GetFailoverId() != "promote-acme-e7" {
		t.Fatalf("fence report %v, want applied with tseq 41 (the FENCED event's 42 − 1)", f)
	}
	fkv, _ := st.Get(ctx, topo.CellFenceKey(cell, "acme"))
	_, akv, _ := getAuthority(ctx, st)
	if !(fkv.Version > topo.Version(fenceRev) && akv.Version > fkv.Version) {
		t.Fatalf("fence written at %d, reported at %d, authority published at %d: want the report before the publication", fenceRev, fkv.Version, akv.Version)
	}
	// Applied fences are not proposed again by later renewals.
	l.set(3, true)
	testutil.Eventually(t, 5*time.Second, wantValid(a, true))
	if n := len(prop.proposals()); n != 1 {
		t.Fatalf("%d proposals after a republication, want 1", n)
	}
}

// A fence written while the node leads is applied within a poll (the
// fence watch), and the authority stays valid.
func TestAuthorityAppliesFenceWhileLeading(t *testing.T) {
	st := newStore(t)
	createCell(t, st, 3)
	ctx := testutil.Context(t, 10*time.Second)
	prop := newFencer()
	prop.setTseq("acme", 9)
	l := &leader{}
	l.set(4, true)
	a := startAuthority(t, st, "n1", l, prop, func(c *registry.AuthorityConfig) {
		// No renewal in the test's time: only the watch can apply it.
		c.TTL, c.DriftMargin, c.Renew = 60*time.Second, time.Second, 50*time.Second
	})
	testutil.Eventually(t, 5*time.Second, wantValid(a, true))
	putFence(t, st, "acme", 2, "promote-acme-e2")
	testutil.Eventually(t, 5*time.Second, func() error {
		f, err := getFence(ctx, st, "acme")
		if err != nil {
			return err
		}
		if !f.GetApplied() || f.GetTseq() != 9 {
			return fmt.Errorf("fence %v not reported yet", f)
		}
		return nil
	})
	if !a.Valid() {
		t.Fatal("applying a fence made the authority invalid")
	}

	// A fence for a tenant the cell does not have is reported applied
	// (with tseq 0) rather than retried forever.
	putFence(t, st, "ghost", 3, "promote-ghost-e3")
	testutil.Eventually(t, 5*time.Second, func() error {
		f, err := getFence(ctx, st, "ghost")
		if err != nil {
			return err
		}
		if !f.GetApplied() || f.GetTseq() != 0 {
			return fmt.Errorf("ghost fence %v", f)
		}
		return nil
	})
}

// A fence that lands between a publication's read and its write (the race
// an emergency promotion can run with a new leader) makes the write fail;
// the next attempt applies the fence before publishing.
func TestAuthorityPublicationRacingAFence(t *testing.T) {
	st := newStore(t)
	createCell(t, st, 3)
	ctx := testutil.Context(t, 10*time.Second)
	prop := newFencer()
	prop.setTseq("acme", 5)
	var once sync.Once
	var fenceRev topo.Revision
	l := &leader{}
	a := startAuthority(t, st, "n1", l, prop, func(c *registry.AuthorityConfig) {
		c.TestingKnobs.AfterRead = func() {
			once.Do(func() { fenceRev = putFence(t, st, "acme", 3, "promote-acme-e3") })
		}
	})
	l.set(1, true)
	testutil.Eventually(t, 5*time.Second, wantValid(a, true))
	if ps := prop.proposals(); len(ps) != 1 || ps[0].GetTenant() != "acme" {
		t.Fatalf("proposals %v: the fence written during the publication was not applied before it", ps)
	}
	_, akv, err := getAuthority(ctx, st)
	if err != nil {
		t.Fatal(err)
	}
	if akv.Created <= topo.Version(fenceRev) {
		t.Fatalf("authority created at %d, not after the fence (%d): a publication ignored the fence", akv.Created, fenceRev)
	}
}

// A key published by another node at a later term is not taken over: a
// stale leader never becomes valid.
func TestAuthorityStaleLeaderNeverValid(t *testing.T) {
	st := newStore(t)
	createCell(t, st, 3)
	lNew, lOld := &leader{}, &leader{}
	lNew.set(9, true)
	fresh := startAuthority(t, st, "n2", lNew, newFencer(), nil)
	testutil.Eventually(t, 5*time.Second, wantValid(fresh, true))
	lOld.set(8, true) // n1 still believes it leads at term 8
	stale := startAuthority(t, st, "n1", lOld, newFencer(), nil)
	ctx := testutil.Context(t, 10*time.Second)
	if err := testutil.Poll(ctx, 300*time.Millisecond, wantValid(stale, true)); err == nil {
		t.Fatal("a leader of an older term became valid over a newer leader's authority")
	}
	if auth, _, err := getAuthority(ctx, st); err != nil || auth.GetNodeId() != "n2" {
		t.Fatalf("authority %v (%v), want n2's", auth, err)
	}
}
