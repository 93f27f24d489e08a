package mcpauth

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/cellplane/cellplane/controlplane/catalog"
	"github.com/cellplane/cellplane/controlplane/topo"
	"github.com/cellplane/cellplane/controlplane/topo/etcdtopo"
	"github.com/cellplane/cellplane/controlplane/topo/memtopo"
	"github.com/cellplane/cellplane/controlplane/topo/topotest"
	"github.com/cellplane/cellplane/internal/auth"
	"github.com/cellplane/cellplane/internal/cperr"
	"github.com/cellplane/cellplane/internal/faultnet"
	"github.com/cellplane/cellplane/internal/testutil"
)

func gauge(g prometheus.Gauge) float64 {
	m := &dto.Metric{}
	if err := g.Write(m); err != nil {
		return -1
	}
	return m.GetGauge().GetValue()
}

// run starts a.Run for the test's lifetime.
func run(t *testing.T, a *Authenticator) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		a.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		wg.Wait()
	})
}

// revokeKey marks the key of secret revoked in the registry, as the
// control plane's RevokeApiKey does.
func revokeKey(t *testing.T, st topo.Store, tenant, secret string) {
	t.Helper()
	ctx := testutil.Context(t, 10*time.Second)
	id, _ := auth.KeyID(secret)
	rec, ver, err := catalog.GetAPIKey(ctx, st, tenant, id)
	if err != nil {
		t.Fatal(err)
	}
	rec.RevokeTime = timestamppb.Now()
	if _, err := st.Update(ctx, topo.APIKeyKey(tenant, id), catalog.Encode(rec), ver); err != nil {
		t.Fatal(err)
	}
}

func dialEtcd(t *testing.T, endpoint string) topo.Store {
	t.Helper()
	cfg := etcdtopo.DefaultConfig()
	cfg.Endpoints = []string{endpoint}
	cfg.DialTimeout = 2 * time.Second
	st, err := etcdtopo.Dial(testutil.Context(t, 10*time.Second), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	return st
}

// M9, with a real etcd: a cached key whose record is revoked is refused
// at the watch event, long before its cache TTL (an hour here); the other
// key stays cached.
func TestWatchEvictsRevokedKey(t *testing.T) {
	if testing.Short() {
		t.Skip("starts etcd")
	}
	st := dialEtcd(t, topotest.StartEtcd(t)[0])
	a, err := New(Config{Registry: st, KeyCacheTTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	run(t, a)
	revoked, kept := newKey(t, st, "acme", false), newKey(t, st, "acme", false)
	testutil.Eventually(t, 10*time.Second, func() error {
		if gauge(a.watchUp) != 1 {
			return errors.New("watch not up")
		}
		return nil
	})
	// Cached (the creation events may evict a first read: check until a
	// hit answers).
	testutil.Eventually(t, 10*time.Second, func() error {
		hits := value(a.lookups.WithLabelValues(resultHit))
		for _, k := range []string{revoked, kept} {
			if err := check(a, k); err != nil {
				t.Fatalf("key before the revocation: %v", err)
			}
		}
		if value(a.lookups.WithLabelValues(resultHit)) < hits+2 {
			return errors.New("not both cached yet")
		}
		return nil
	})
	revokeKey(t, st, "acme", revoked)
	testutil.Eventually(t, 10*time.Second, func() error {
		if err := check(a, revoked); cperr.ReasonOf(err) != cperr.Unauthenticated {
			return fmt.Errorf("revoked key: %v", err)
		}
		return nil
	})
	if err := check(a, kept); err != nil {
		t.Fatalf("the other key: %v", err)
	}
}

// M9, with a real etcd behind a proxy the test cuts: a key revoked while
// the worker cannot reach etcd keeps working at most until
// APIKeyMaxStaleness, then every cached key is refused with
// CREDENTIALS_STALE; once etcd is back the revoked key is refused and the
// other one works.
func TestStaleRecordRefusedWhileEtcdCut(t *testing.T) {
	if testing.Short() {
		t.Skip("starts etcd")
	}
	eps := topotest.StartEtcd(t)
	admin := dialEtcd(t, eps[0])
	proxy := faultnet.Start(t, strings.TrimPrefix(eps[0], "http://"))
	st := dialEtcd(t, "http://"+proxy.Addr())
	const bound = time.Second
	a, err := New(Config{Registry: st, KeyCacheTTL: 50 * time.Millisecond, APIKeyMaxStaleness: bound, LookupTimeout: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	// The keys exist before the watch starts: no creation event can evict
	// them from the cache after the checks below.
	revoked, kept := newKey(t, admin, "acme", false), newKey(t, admin, "acme", false)
	run(t, a)
	testutil.Eventually(t, 10*time.Second, func() error {
		if gauge(a.watchUp) != 1 {
			return errors.New("watch not up")
		}
		return nil
	})
	for _, k := range []string{revoked, kept} {
		if err := check(a, k); err != nil {
			t.Fatalf("key before the cut: %v", err)
		}
	}
	proxy.Cut()
	cut := time.Now()
	revokeKey(t, admin, "acme", revoked)
	testutil.Eventually(t, 20*time.Second, func() error {
		err := check(a, revoked)
		switch cperr.ReasonOf(err) {
		case "":
			if since := time.Since(cut); since > bound+time.Second {
				t.Fatalf("the revoked key still works %s after the cut (bound %s)", since, bound)
			}
			return errors.New("the revoked key still works")
		case cperr.CredentialsStale:
			return nil
		}
		t.Fatalf("revoked key while cut: %v", err)
		return nil
	})
	if err := check(a, kept); cperr.ReasonOf(err) != cperr.CredentialsStale {
		t.Fatalf("valid key with a stale record: %v, want CREDENTIALS_STALE", err)
	}
	proxy.Heal()
	testutil.Eventually(t, 30*time.Second, func() error {
		if err := check(a, revoked); cperr.ReasonOf(err) != cperr.Unauthenticated {
			return fmt.Errorf("revoked key after the heal: %v", err)
		}
		if err := check(a, kept); err != nil {
			return fmt.Errorf("valid key after the heal: %v", err)
		}
		return nil
	})
}

// Bound 0 keeps the old behaviour: the last answer stands while the
// registry is down, however old.
func TestUnboundedStalenessKeepsLastAnswer(t *testing.T) {
	st := memtopo.New()
	defer st.Close()
	a, err := New(Config{Registry: st, KeyCacheTTL: time.Nanosecond})
	if err != nil {
		t.Fatal(err)
	}
	k := newKey(t, st, "acme", false)
	if err := check(a, k); err != nil {
		t.Fatal(err)
	}
	st.Fail(memtopo.OpGet, "", topo.ErrUnavailable)
	start := time.Now()
	testutil.Eventually(t, 5*time.Second, func() error {
		if err := check(a, k); err != nil {
			t.Fatalf("unbounded: %v", err)
		}
		if time.Since(start) < 100*time.Millisecond {
			return errors.New("not yet")
		}
		return nil
	})
}
