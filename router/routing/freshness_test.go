package routing

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/cellplane/cellplane/controlplane/topo"
	"github.com/cellplane/cellplane/controlplane/topo/memtopo"
	"github.com/cellplane/cellplane/internal/auth"
	"github.com/cellplane/cellplane/internal/cperr"
	"github.com/cellplane/cellplane/internal/testutil"
	cpv1 "github.com/cellplane/cellplane/proto/cellplane/controlplane/v1"
)

// M9: a quiet but healthy watch stays fresh (its progress notifications
// answer the probes); with the store unreachable the key view ages past
// the bound and KeysFresh refuses (routing goes on); back, it is fresh
// again.
func TestKeysFreshness(t *testing.T) {
	st := memtopo.New()
	putTenant(t, st, "acme", "c1", cpv1.TenantState_TENANT_STATE_ACTIVE, 1)
	cfg := testConfig(t)
	cfg.APIKeyMaxStaleness = 300 * time.Millisecond
	cfg.FreshnessInterval = 10 * time.Millisecond
	tb := start(t, st, cfg)
	waitLoaded(t, tb, 1)
	loadedAt := time.Now()
	// Nothing changes in the store: only progress notifications can keep
	// the view fresh beyond the bound.
	testutil.Eventually(t, wait, func() error {
		if err := tb.KeysFresh(); err != nil {
			t.Fatalf("a quiet, healthy watch went stale: %v", err)
		}
		if time.Since(loadedAt) < 3*cfg.APIKeyMaxStaleness {
			return errors.New("not yet three bounds after the load")
		}
		return nil
	})

	down := errors.Join(topo.ErrUnavailable, errors.New("injected"))
	st.Fail(memtopo.OpList, "", down)
	st.Fail(memtopo.OpWatch, "", down)
	testutil.Eventually(t, wait, func() error {
		err := tb.KeysFresh()
		if err == nil {
			return errors.New("still fresh")
		}
		var ce *cperr.Error
		if !errors.As(err, &ce) || ce.Reason != cperr.CredentialsStale || ce.Metadata[cperr.MetaMaxStaleness] != "300ms" || ce.RetryAfter <= 0 {
			t.Fatalf("KeysFresh = %#v, want CREDENTIALS_STALE with the bound and a retry hint", err)
		}
		return nil
	})
	if age, known := tb.KeysAge(); !known || age <= cfg.APIKeyMaxStaleness {
		t.Fatalf("KeysAge = %s, %v while stale", age, known)
	}
	if _, ok := tb.Lookup("acme"); !ok {
		t.Fatal("a stale key view stopped routing")
	}

	st.Clear()
	testutil.Eventually(t, wait, func() error { return tb.KeysFresh() })
}

// Bound 0 is the old behaviour: keys are served however old the view.
func TestKeysFreshnessUnbounded(t *testing.T) {
	st := memtopo.New()
	st.Fail(memtopo.OpList, "", topo.ErrUnavailable)
	cfg := testConfig(t)
	cfg.APIKeyMaxStaleness = 0
	tb := start(t, st, cfg)
	if err := tb.KeysFresh(); err != nil {
		t.Fatalf("unbounded: %v", err)
	}
	if _, known := tb.KeysAge(); known {
		t.Fatal("never loaded, yet the key view's age is known")
	}
}

// Nothing loaded yet and no snapshot: keys are refused with the age
// "unknown".
func TestKeysFreshNeverSynced(t *testing.T) {
	st := memtopo.New()
	st.Fail(memtopo.OpList, "", topo.ErrUnavailable)
	tb := start(t, st, testConfig(t))
	err := tb.KeysFresh()
	var ce *cperr.Error
	if !errors.As(err, &ce) || ce.Reason != cperr.CredentialsStale || ce.Metadata[cperr.MetaCredentialsAge] != "unknown" {
		t.Fatalf("KeysFresh before any load = %v", err)
	}
}

// The snapshot records when the table was last fresh, not when it was
// written: a table that went stale and was then saved restarts stale.
func TestSnapshotKeepsFreshness(t *testing.T) {
	st := memtopo.New()
	putTenant(t, st, "acme", "c1", cpv1.TenantState_TENANT_STATE_ACTIVE, 1)
	cfg := testConfig(t)
	cfg.SnapshotPath = t.TempDir() + "/snap"
	tb, err := Start(testutil.Context(t, time.Minute), st, cfg)
	if err != nil {
		t.Fatal(err)
	}
	waitLoaded(t, tb, 1)
	old := time.Now().Add(-time.Hour)
	tb.keysFresh.Store(int64(old.Sub(tb.start))) // as if its watch had been down for an hour
	tb.cancel()
	tb.wg.Wait()
	tb.changed()
	if err := tb.Close(); err != nil {
		t.Fatal(err)
	}
	st2 := memtopo.New()
	st2.Fail(memtopo.OpList, "", topo.ErrUnavailable)
	tb2 := start(t, st2, cfg)
	if !tb2.Loaded() {
		t.Fatal("snapshot not loaded")
	}
	age, known := tb2.KeysAge()
	if !known || age < time.Hour {
		t.Fatalf("restarted key age = %s, %v; want ≥ 1h (the freshness saved)", age, known)
	}
	if cperr.ReasonOf(tb2.KeysFresh()) != cperr.CredentialsStale {
		t.Fatal("a restart from a stale snapshot serves keys")
	}
}

// A table that does not change is still saved when only its freshness
// advanced (at Close here): a router restarted while etcd is down counts
// its keys as fresh as they were at the stop, not at the last change.
func TestSnapshotRewrittenForFreshness(t *testing.T) {
	st := memtopo.New()
	putTenant(t, st, "acme", "c1", cpv1.TenantState_TENANT_STATE_ACTIVE, 1)
	cfg := testConfig(t)
	cfg.SnapshotPath = t.TempDir() + "/snap"
	cfg.SnapshotInterval = time.Hour // only the explicit writes below
	cfg.APIKeyMaxStaleness = 300 * time.Millisecond
	cfg.FreshnessInterval = 10 * time.Millisecond
	tb, err := Start(testutil.Context(t, time.Minute), st, cfg)
	if err != nil {
		t.Fatal(err)
	}
	waitLoaded(t, tb, 1)
	if err := tb.writeSnapshotIfChanged(); err != nil {
		t.Fatal(err)
	}
	written, _ := tb.freshAt()
	testutil.Eventually(t, wait, func() error {
		if now, _ := tb.freshAt(); now.Sub(written) < 2*cfg.APIKeyMaxStaleness {
			return errors.New("freshness has not advanced past twice the bound yet")
		}
		return nil
	})
	if err := tb.Close(); err != nil {
		t.Fatal(err)
	}
	st2 := memtopo.New()
	st2.Fail(memtopo.OpList, "", topo.ErrUnavailable)
	tb2 := start(t, st2, cfg)
	if got, _ := tb2.freshAt(); !got.After(written.Add(cfg.APIKeyMaxStaleness)) {
		t.Fatalf("restarted freshness %s, want after %s (the freshness at Close, not at the last change)", got, written.Add(cfg.APIKeyMaxStaleness))
	}
}

// The JWT revocation list is loaded and followed with the tenants, kept
// in the snapshot, and matched by auth.Revoked.
func TestTokenRevocationList(t *testing.T) {
	st := memtopo.New()
	putTenant(t, st, "acme", "c1", cpv1.TenantState_TENANT_STATE_ACTIVE, 1)
	now := time.Now()
	revokedAt := now.Add(-time.Minute)
	entry := func(sub, jti string, exp time.Time) *cpv1.RevokedToken {
		return &cpv1.RevokedToken{Tenant: "acme", Subject: sub, Jti: jti, RevokeTime: timestamppb.New(revokedAt), ExpireTime: timestamppb.New(exp)}
	}
	put(t, st, topo.RevokedTokenKey("acme", auth.RevokedSubjectID("alice")), entry("alice", "", now.Add(time.Hour)))
	tb := start(t, st, testConfig(t))
	waitLoaded(t, tb, 1)
	// Added while watched.
	put(t, st, topo.RevokedTokenKey("acme", auth.RevokedJTIID("tok-1")), entry("", "tok-1", now.Add(time.Hour)))
	put(t, st, topo.RevokedTokenKey("acme", auth.RevokedSubjectID("old")), entry("old", "", now.Add(-time.Second)))
	jwt := func(sub, jti string, iat time.Time) auth.Identity {
		return auth.Identity{Tenant: "acme", Subject: sub, JTI: jti, IssuedAt: iat, Method: auth.MethodJWT}
	}
	cases := []struct {
		name    string
		id      auth.Identity
		revoked bool
	}{
		{"subject, issued before", jwt("alice", "", revokedAt.Add(-time.Second)), true},
		{"subject, issued at the revocation", jwt("alice", "", revokedAt), true},
		{"subject, no iat", jwt("alice", "", time.Time{}), true},
		{"subject, issued after", jwt("alice", "", revokedAt.Add(time.Second)), false},
		{"jti", jwt("bob", "tok-1", now), true},
		{"another jti", jwt("bob", "tok-2", now), false},
		{"expired entry", jwt("old", "", time.Time{}), false},
		{"another tenant", auth.Identity{Tenant: "globex", Subject: "alice"}, false},
	}
	check := func(tb *Table) error {
		for _, tc := range cases {
			err := tb.TokenRevoked(tc.id)
			if tc.revoked != (err != nil) {
				return fmt.Errorf("%s: TokenRevoked = %v, want revoked %v", tc.name, err, tc.revoked)
			}
			if err != nil && cperr.ReasonOf(err) != cperr.Unauthenticated {
				return fmt.Errorf("%s: %v, want UNAUTHENTICATED", tc.name, err)
			}
		}
		return nil
	}
	testutil.Eventually(t, wait, func() error { return check(tb) })

	// The snapshot keeps the list; a version 2 file has none.
	v := tb.view.Load()
	got, _, err := decodeSnapshot(encodeSnapshot(v, now))
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := got.revokedEntry("acme", auth.RevokedJTIID("tok-1")); !ok {
		t.Fatal("the snapshot lost the revocation list")
	}
	old, _, err := decodeSnapshot(encodeSnapshotFormat(v, now, 2))
	if err != nil || len(old.revoked) != 0 {
		t.Fatalf("version 2 snapshot: %v, %d revoked", err, len(old.revoked))
	}

	// A deleted entry no longer revokes.
	del(t, st, topo.RevokedTokenKey("acme", auth.RevokedJTIID("tok-1")))
	testutil.Eventually(t, wait, func() error { return tb.TokenRevoked(jwt("bob", "tok-1", now)) })
}

// With JWTRevocationMaxStaleness, a JWT cannot be vouched for by a list
// older than the bound; without (the default), the last list stands.
func TestTokenRevocationStaleness(t *testing.T) {
	for _, bound := range []time.Duration{0, 200 * time.Millisecond} {
		t.Run(bound.String(), func(t *testing.T) {
			st := memtopo.New()
			putTenant(t, st, "acme", "c1", cpv1.TenantState_TENANT_STATE_ACTIVE, 1)
			cfg := testConfig(t)
			cfg.JWTRevocationMaxStaleness = bound
			cfg.FreshnessInterval = 10 * time.Millisecond
			tb := start(t, st, cfg)
			waitLoaded(t, tb, 1)
			id := auth.Identity{Tenant: "acme", Subject: "alice"}
			if err := tb.TokenRevoked(id); err != nil {
				t.Fatal(err)
			}
			st.Fail(memtopo.OpList, "", topo.ErrUnavailable)
			st.Fail(memtopo.OpWatch, "", topo.ErrUnavailable)
			if bound == 0 {
				if _, known := tb.KeysAge(); !known {
					t.Fatal("never fresh")
				}
				testutil.Eventually(t, wait, func() error {
					if age, _ := tb.KeysAge(); age < 500*time.Millisecond {
						return errors.New("not stale yet")
					}
					return nil
				})
				if err := tb.TokenRevoked(id); err != nil {
					t.Fatalf("unbounded: %v", err)
				}
				return
			}
			testutil.Eventually(t, wait, func() error {
				if cperr.ReasonOf(tb.TokenRevoked(id)) != cperr.CredentialsStale {
					return errors.New("not refused as stale yet")
				}
				return nil
			})
		})
	}
}
