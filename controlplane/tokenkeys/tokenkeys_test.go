package tokenkeys_test

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/cellplane/cellplane/controlplane/catalog"
	"github.com/cellplane/cellplane/controlplane/tokenkeys"
	"github.com/cellplane/cellplane/controlplane/topo"
	"github.com/cellplane/cellplane/controlplane/topo/memtopo"
	"github.com/cellplane/cellplane/internal/tenanttoken"
	"github.com/cellplane/cellplane/internal/testutil"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func commitTo(st topo.Store) tokenkeys.Commit {
	return func(ctx context.Context, conds []topo.Cond, ops []topo.Op) error {
		_, err := st.Txn(ctx, conds, ops)
		return err
	}
}

func keyIDs(t *testing.T, st topo.Store) (pub, priv []string) {
	t.Helper()
	ctx := testutil.Context(t, 5*time.Second)
	ps, _, err := catalog.ListTokenPublicKeys(ctx, st)
	if err != nil {
		t.Fatal(err)
	}
	qs, _, err := catalog.ListTokenPrivateKeys(ctx, st)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range ps {
		pub = append(pub, p.Parsed.ID)
	}
	for _, q := range qs {
		priv = append(priv, q.Parsed.ID)
	}
	return pub, priv
}

// TestRotateLifecycle walks one key's life on a fake clock: the first
// key signs at once; its successor is published Lead before it signs;
// the old private half goes ClockSkew after the switch, the old public
// half Retain after it.
func TestRotateLifecycle(t *testing.T) {
	ctx := testutil.Context(t, 10*time.Second)
	st := memtopo.New()
	defer st.Close()
	cfg := tokenkeys.RotationConfig{Period: time.Hour, Lead: 10 * time.Minute, Retain: 20 * time.Minute, ClockSkew: time.Minute, Interval: time.Minute}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	t0 := time.Unix(1_800_000_000, 0)
	rot := func(at time.Time) tokenkeys.Changes {
		t.Helper()
		ch, err := tokenkeys.Rotate(ctx, st, cfg, at, commitTo(st))
		if err != nil {
			t.Fatal(err)
		}
		return ch
	}
	ch := rot(t0)
	if len(ch.Published) != 1 {
		t.Fatalf("first rotation published %v, want one key", ch.Published)
	}
	k1 := ch.Published[0]
	if ch := rot(t0.Add(49 * time.Minute)); len(ch.Published)+len(ch.Deleted) != 0 {
		t.Fatalf("before Period-Lead: %+v, want nothing", ch)
	}
	ch = rot(t0.Add(50 * time.Minute))
	if len(ch.Published) != 1 {
		t.Fatalf("at Period-Lead: %+v, want the next key", ch)
	}
	k2 := ch.Published[0]
	if ch := rot(t0.Add(55 * time.Minute)); len(ch.Published)+len(ch.Deleted) != 0 {
		t.Fatalf("with a pending key: %+v, want nothing", ch)
	}

	// A router's ring signs with k1 until k2's sign_from, then with k2.
	ring := tokenkeys.StartRing(ctx, st, tokenkeys.RingConfig{Private: true})
	defer ring.Close()
	testutil.Eventually(t, 5*time.Second, func() error {
		if len(ring.PublicKeyIDs()) != 2 {
			return errors.New("ring has not both keys")
		}
		if s, _ := ring.Signer(t0.Add(61 * time.Minute)); s.ID != k2 {
			return errors.New("ring has not both private keys")
		}
		return nil
	})
	if s, ok := ring.Signer(t0.Add(59 * time.Minute)); !ok || s.ID != k1 {
		t.Fatalf("signer before the switch = %v %v, want %s", s.ID, ok, k1)
	}
	if s, ok := ring.Signer(t0.Add(61 * time.Minute)); !ok || s.ID != k2 {
		t.Fatalf("signer after the switch = %v %v, want %s", s.ID, ok, k2)
	}
	// A token k1 signed just before the switch verifies with the ring.
	tc := tenanttoken.DefaultConfig()
	tok, _, err := tenanttoken.Mint(tc, tenanttoken.SigningKey{ID: k1, Private: mustSigner(t, ring, t0.Add(59*time.Minute)).Private}, tenanttoken.Claims{Tenant: "acme", Cell: "c1", Epoch: 1, Audience: "dev"}, t0.Add(59*time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tenanttoken.Verify(tc, ring, tok, "dev", t0.Add(62*time.Minute)); err != nil {
		t.Fatalf("k1's token after the switch: %v", err)
	}

	ch = rot(t0.Add(61 * time.Minute)) // k2 signs for 1 min = ClockSkew
	if !slices.Equal(ch.Deleted, []string{topo.TokenPrivateKeyKey(k1)}) {
		t.Fatalf("ClockSkew after the switch: deleted %v, want k1's private half", ch.Deleted)
	}
	if pub, priv := keyIDs(t, st); len(pub) != 2 || !slices.Equal(priv, []string{k2}) {
		t.Fatalf("keys: public %v private %v", pub, priv)
	}
	if ch := rot(t0.Add(79 * time.Minute)); len(ch.Deleted) != 0 {
		t.Fatalf("before Retain: deleted %v", ch.Deleted)
	}
	ch = rot(t0.Add(80 * time.Minute))
	if !slices.Equal(ch.Deleted, []string{topo.TokenPublicKeyKey(k1)}) {
		t.Fatalf("Retain after the switch: deleted %v, want k1's public half", ch.Deleted)
	}
	testutil.Eventually(t, 5*time.Second, func() error {
		if _, ok := ring.PublicKey(k1); ok {
			return errors.New("ring still has k1")
		}
		return nil
	})
	if _, err := tenanttoken.Verify(tc, ring, tok, "dev", t0.Add(62*time.Minute)); !errors.Is(err, tenanttoken.ErrUnknownKey) {
		t.Fatalf("k1's token after its key was deleted: %v, want ErrUnknownKey", err)
	}
}

func mustSigner(t *testing.T, r *tokenkeys.Ring, at time.Time) tenanttoken.SigningKey {
	t.Helper()
	s, ok := r.Signer(at)
	if !ok {
		t.Fatal("no signer")
	}
	return s
}

// TestRingWithoutPrivate: a cell's ring has the public keys and no signer.
func TestRingWithoutPrivate(t *testing.T) {
	ctx := testutil.Context(t, 10*time.Second)
	st := memtopo.New()
	defer st.Close()
	if _, err := tokenkeys.Rotate(ctx, st, tokenkeys.DefaultRotationConfig(), time.Now(), commitTo(st)); err != nil {
		t.Fatal(err)
	}
	ring := tokenkeys.StartRing(ctx, st, tokenkeys.RingConfig{})
	defer ring.Close()
	<-ring.Loaded()
	if len(ring.PublicKeyIDs()) != 1 {
		t.Fatalf("public keys %v", ring.PublicKeyIDs())
	}
	if _, ok := ring.Signer(time.Now()); ok {
		t.Fatal("a ring without Private has a signer")
	}
}

func TestRotationConfigValidate(t *testing.T) {
	if err := tokenkeys.DefaultRotationConfig().Validate(); err != nil {
		t.Fatal(err)
	}
	c := tokenkeys.DefaultRotationConfig()
	c.Lead = c.Period
	if c.Validate() == nil {
		t.Fatal("Lead = Period accepted")
	}
}
