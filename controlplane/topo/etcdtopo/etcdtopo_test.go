package etcdtopo_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/cellplane/cellplane/controlplane/topo"
	"github.com/cellplane/cellplane/controlplane/topo/etcdtopo"
	"github.com/cellplane/cellplane/controlplane/topo/topotest"
	"github.com/cellplane/cellplane/internal/faultnet"
	"github.com/cellplane/cellplane/internal/pki"
	"github.com/cellplane/cellplane/internal/testutil"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var _ topotest.Compacter = (*etcdtopo.Store)(nil)

func TestConformance(t *testing.T) {
	if testing.Short() {
		t.Skip("starts etcd")
	}
	topotest.Run(t, func(t *testing.T) topo.Store { return topotest.NewEtcdStore(t) })
}

// TestDialDeadEndpoint: nothing listens on the port (it was just freed).
func TestDialDeadEndpoint(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	cfg := etcdtopo.DefaultConfig()
	cfg.Endpoints = []string{"http://" + addr}
	cfg.DialTimeout = 300 * time.Millisecond
	start := time.Now()
	st, err := etcdtopo.Dial(testutil.Context(t, 10*time.Second), cfg)
	if err == nil {
		st.Close()
		t.Fatal("dial of a dead endpoint succeeded")
	}
	if !errors.Is(err, topo.ErrUnavailable) {
		t.Fatalf("dial = %v, want ErrUnavailable", err)
	}
	// Not a timing assertion on the store, a bound on a hang: the dial
	// must give up near its timeout, not wait for the test's.
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("dial took %s with a %s timeout", d, cfg.DialTimeout)
	}
}

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		mod  func(*etcdtopo.Config)
	}{
		{"no endpoints", func(c *etcdtopo.Config) { c.Endpoints = nil }},
		{"no prefix", func(c *etcdtopo.Config) { c.Prefix = "" }},
		{"no timeout", func(c *etcdtopo.Config) { c.DialTimeout = 0 }},
		{"cert without key", func(c *etcdtopo.Config) { c.CertFile = "c.pem" }},
		{"password without user", func(c *etcdtopo.Config) { c.Password = "x" }},
		{"max txn ops", func(c *etcdtopo.Config) { c.MaxTxnOps = 0 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := etcdtopo.DefaultConfig()
			c.Endpoints = []string{"http://127.0.0.1:1"}
			if err := c.Validate(); err != nil {
				t.Fatalf("valid config: %v", err)
			}
			tc.mod(&c)
			if err := c.Validate(); err == nil {
				t.Fatal("Validate accepted it")
			}
		})
	}
}

func TestMaxTxnOps(t *testing.T) {
	if testing.Short() {
		t.Skip("starts etcd")
	}
	eps := topotest.StartEtcd(t)
	cfg := etcdtopo.DefaultConfig()
	cfg.Endpoints = eps
	cfg.MaxTxnOps = 3
	st, err := etcdtopo.Dial(testutil.Context(t, 10*time.Second), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ctx := testutil.Context(t, 10*time.Second)
	ops := make([]topo.Op, 4)
	for i := range ops {
		ops[i] = topo.Put(fmt.Sprint(i), nil)
	}
	if _, err := st.Txn(ctx, nil, ops); !errors.Is(err, topo.ErrInvalid) {
		t.Fatalf("txn of 4 ops with MaxTxnOps 3 = %v", err)
	}
	if _, err := st.Txn(ctx, nil, ops[:3]); err != nil {
		t.Fatal(err)
	}
	// The default prefix is topo.Prefix.
	kv, err := st.Get(ctx, "0")
	if err != nil || kv.Key != "0" {
		t.Fatalf("get = %+v, %v", kv, err)
	}
}

// A Lazy store is returned at once even with etcd down; its calls fail
// with ErrUnavailable within their context.
func TestLazyDialToDeadEndpoint(t *testing.T) {
	cfg := etcdtopo.DefaultConfig()
	cfg.Endpoints = []string{"http://127.0.0.1:1"}
	cfg.Lazy = true
	start := time.Now()
	st, err := etcdtopo.Dial(testutil.Context(t, 10*time.Second), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if d := time.Since(start); d > time.Second {
		t.Fatalf("lazy Dial took %v", d)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if _, err := st.Get(ctx, "x"); !errors.Is(err, topo.ErrUnavailable) && !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Get on a dead etcd: %v", err)
	}
}

// TestValidateTLS: no plaintext fallback, no client certificate in clear.
func TestValidateTLS(t *testing.T) {
	dir := t.TempDir()
	ca, err := pki.NewCA("test", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := pki.WriteCA(dir, ca, false); err != nil {
		t.Fatal(err)
	}
	id := pki.RouterIdentity("test", "r1")
	leaf, err := ca.Issue(pki.LeafRequest{Identity: id})
	if err != nil {
		t.Fatal(err)
	}
	if err := pki.WriteLeaf(dir, id.FileName(), leaf, false); err != nil {
		t.Fatal(err)
	}
	src, err := pki.NewSource(pki.DirConfig(dir, id.FileName()))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		mod  func(*etcdtopo.Config)
		ok   bool
	}{
		{"http, no TLS", func(c *etcdtopo.Config) { c.Endpoints = []string{"http://127.0.0.1:1"} }, true},
		{"bare, no TLS", func(c *etcdtopo.Config) { c.Endpoints = []string{"127.0.0.1:1"} }, true},
		{"https with identity", func(c *etcdtopo.Config) { c.Endpoints, c.Identity = []string{"https://127.0.0.1:1"}, src }, true},
		{"https with files", func(c *etcdtopo.Config) { c.Endpoints, c.CAFile = []string{"https://127.0.0.1:1"}, "ca.crt" }, true},
		{"https without TLS material", func(c *etcdtopo.Config) { c.Endpoints = []string{"https://127.0.0.1:1"} }, false},
		{"http with identity", func(c *etcdtopo.Config) { c.Endpoints, c.Identity = []string{"http://127.0.0.1:1"}, src }, false},
		{"http with files", func(c *etcdtopo.Config) {
			c.Endpoints, c.CertFile, c.KeyFile = []string{"http://127.0.0.1:1"}, "a.crt", "a.key"
		}, false},
		{"mixed schemes", func(c *etcdtopo.Config) {
			c.Endpoints, c.Identity = []string{"https://127.0.0.1:1", "http://127.0.0.1:2"}, src
		}, false},
		{"identity and files", func(c *etcdtopo.Config) {
			c.Endpoints, c.Identity, c.CAFile = []string{"https://127.0.0.1:1"}, src, "ca.crt"
		}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := etcdtopo.DefaultConfig()
			tc.mod(&c)
			if err := c.Validate(); (err == nil) != tc.ok {
				t.Fatalf("Validate() = %v, want ok %v", err, tc.ok)
			}
			if !tc.ok {
				// Dial refuses it as invalid, before any connection.
				if _, err := etcdtopo.Dial(testutil.Context(t, 5*time.Second), c); !errors.Is(err, topo.ErrInvalid) {
					t.Fatalf("Dial = %v, want topo.ErrInvalid", err)
				}
			}
		})
	}
}

// Bare leases: a key under a granted lease lives while it is kept alive;
// a revoked lease deletes its key, and keep-alives and revokes of it
// then report ErrNotFound. A keep-alive writes nothing (no revision).
func TestLeaser(t *testing.T) {
	if testing.Short() {
		t.Skip("starts etcd")
	}
	st := topotest.NewEtcdStore(t)
	l, ok := st.(topo.Leaser)
	if !ok {
		t.Fatal("etcdtopo.Store is not a topo.Leaser")
	}
	ctx := testutil.Context(t, 10*time.Second)
	if _, err := l.Grant(ctx, 0); !errors.Is(err, topo.ErrInvalid) {
		t.Fatalf("grant of ttl 0: %v, want ErrInvalid", err)
	}
	id, err := l.Grant(ctx, 1500*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	rev, err := st.Txn(ctx, nil, []topo.Op{topo.PutLeased("k", []byte("v"), id)})
	if err != nil {
		t.Fatal(err)
	}
	ttl, err := l.KeepAliveOnce(ctx, id)
	if err != nil || ttl != 2*time.Second {
		t.Fatalf("keep-alive: ttl %s, %v; want 2s (rounded up to whole seconds)", ttl, err)
	}
	page, err := st.List(ctx, "k", topo.ListOptions{})
	if err != nil || len(page.KVs) != 1 || page.Revision != rev {
		t.Fatalf("after a keep-alive: %v at revision %d (%v), want the key at revision %d", page.KVs, page.Revision, err, rev)
	}
	if err := l.Revoke(ctx, id); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Get(ctx, "k"); !errors.Is(err, topo.ErrNotFound) {
		t.Fatalf("key after revoke: %v, want ErrNotFound", err)
	}
	if _, err := l.KeepAliveOnce(ctx, id); !errors.Is(err, topo.ErrNotFound) {
		t.Fatalf("keep-alive of a revoked lease: %v, want ErrNotFound", err)
	}
	if err := l.Revoke(ctx, id); !errors.Is(err, topo.ErrNotFound) {
		t.Fatalf("revoke of a revoked lease: %v, want ErrNotFound", err)
	}
}

// TestCampaignReturnsWhenEtcdIsGone: a replica waiting in Campaign when
// its etcd becomes unreachable must get Campaign back once its context
// ends. etcd's own Campaign resigns with the client's context (no
// deadline) and so blocked until the client closed, and with it every
// Close that waited for the controller (seen in the S22 test).
func TestCampaignReturnsWhenEtcdIsGone(t *testing.T) {
	if testing.Short() {
		t.Skip("starts etcd")
	}
	eps := topotest.StartEtcd(t)
	dial := func(ep string) topo.Store {
		cfg := etcdtopo.DefaultConfig()
		cfg.Endpoints = []string{ep}
		cfg.Prefix = "/campaign-gone/"
		cfg.Logger = testutil.Logger(t)
		st, err := etcdtopo.Dial(testutil.Context(t, 10*time.Second), cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = st.Close() })
		return st
	}
	ctx := testutil.Context(t, 30*time.Second)
	leader := dial(eps[0])
	ls, err := leader.NewSession(ctx, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := leader.Campaign(ctx, ls, "ctl", []byte("a")); err != nil {
		t.Fatal(err)
	}

	proxy := faultnet.Start(t, strings.TrimPrefix(eps[0], "http://"))
	waiter := dial("http://" + proxy.Addr())
	ws, err := waiter.NewSession(ctx, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	cctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		_, err := waiter.Campaign(cctx, ws, "ctl", []byte("b"))
		done <- err
	}()
	// The waiter is queued behind the leader's key.
	testutil.Eventually(t, 10*time.Second, func() error {
		page, err := leader.List(ctx, "ctl", topo.ListOptions{})
		if err != nil {
			return err
		}
		if len(page.KVs) < 2 {
			return fmt.Errorf("%d campaign keys, want 2", len(page.KVs))
		}
		return nil
	})
	// Unreachable without a broken connection (a broken watch would end
	// Campaign with an error of its own): nothing gets through.
	proxy.Blackhole(faultnet.Both)
	cancel()
	timer := time.NewTimer(5 * time.Second)
	defer timer.Stop()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("campaign won while its etcd was cut off and its context ended")
		}
	case <-timer.C:
		proxy.Clear() // let the stuck call end so the test can close
		t.Fatal("Campaign still blocked 5 s after its context ended with etcd unreachable")
	}
	proxy.Clear()
}
