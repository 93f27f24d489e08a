package etcdserver_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/goleak"
	"go.uber.org/zap"

	"github.com/cellplane/cellplane/controlplane/etcdserver"
	"github.com/cellplane/cellplane/controlplane/topo/topotest"
	"github.com/cellplane/cellplane/internal/testutil"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		mod  func(*etcdserver.Config)
	}{
		{"no data dir", func(c *etcdserver.Config) { c.DataDir = "" }},
		{"no name", func(c *etcdserver.Config) { c.Name = "" }},
		{"bad client url", func(c *etcdserver.Config) { c.ClientURL = "127.0.0.1:1" }},
		{"https peer url", func(c *etcdserver.Config) { c.PeerURL = "https://127.0.0.1:2" }},
		{"same urls", func(c *etcdserver.Config) { c.PeerURL = c.ClientURL }},
		{"no start timeout", func(c *etcdserver.Config) { c.StartTimeout = 0 }},
		{"bad compaction mode", func(c *etcdserver.Config) { c.AutoCompactionMode = "daily" }},
		{"bad periodic retention", func(c *etcdserver.Config) { c.AutoCompactionRetention = "soon" }},
		{"negative periodic retention", func(c *etcdserver.Config) { c.AutoCompactionRetention = "-1m" }},
		{"duration as revision retention", func(c *etcdserver.Config) {
			c.AutoCompactionMode, c.AutoCompactionRetention = "revision", "10m"
		}},
		{"no quota", func(c *etcdserver.Config) { c.QuotaBackendBytes = -1 }},
		{"defrag ratio above 1", func(c *etcdserver.Config) { c.DefragMinFreeRatio = 1.5 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := etcdserver.DefaultConfig()
			c.DataDir = "/tmp/x"
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

// TestValidateTLS: https with TLS files, http without; the files must be
// files.
func TestValidateTLS(t *testing.T) {
	dir := t.TempDir()
	files := &etcdserver.TLSFiles{CertFile: filepath.Join(dir, "a.crt"), KeyFile: filepath.Join(dir, "a.key"), CAFile: filepath.Join(dir, "ca.crt")}
	for _, f := range []string{files.CertFile, files.KeyFile, files.CAFile} {
		if err := os.WriteFile(f, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	https := func(c *etcdserver.Config) {
		c.TLS = files
		c.ClientURL, c.PeerURL = "https://127.0.0.1:1", "https://127.0.0.1:2"
	}
	for _, tc := range []struct {
		name string
		mod  func(*etcdserver.Config)
		ok   bool
	}{
		{"https with TLS", https, true},
		{"http with TLS", func(c *etcdserver.Config) { c.TLS = files }, false},
		{"http peer with TLS", func(c *etcdserver.Config) { https(c); c.PeerURL = "http://127.0.0.1:2" }, false},
		{"https without TLS", func(c *etcdserver.Config) { https(c); c.TLS = nil }, false},
		{"no CA file", func(c *etcdserver.Config) {
			https(c)
			c.TLS = &etcdserver.TLSFiles{CertFile: files.CertFile, KeyFile: files.KeyFile}
		}, false},
		{"CA directory", func(c *etcdserver.Config) {
			https(c)
			c.TLS = &etcdserver.TLSFiles{CertFile: files.CertFile, KeyFile: files.KeyFile, CAFile: dir}
		}, false},
		{"missing key", func(c *etcdserver.Config) {
			https(c)
			c.TLS = &etcdserver.TLSFiles{CertFile: files.CertFile, KeyFile: filepath.Join(dir, "none"), CAFile: files.CAFile}
		}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := etcdserver.DefaultConfig()
			c.DataDir = dir
			tc.mod(&c)
			if err := c.Validate(); (err == nil) != tc.ok {
				t.Fatalf("Validate() = %v, want ok %v", err, tc.ok)
			}
		})
	}
}

func TestStartServeClose(t *testing.T) {
	if testing.Short() {
		t.Skip("starts etcd")
	}
	eps := topotest.StartEtcd(t)
	cli, err := clientv3.New(clientv3.Config{Endpoints: eps, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	ctx := testutil.Context(t, 10*time.Second)
	if _, err := cli.Put(ctx, "k", "v"); err != nil {
		t.Fatalf("put: %v", err)
	}
	resp, err := cli.Get(ctx, "k")
	if err != nil || len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "v" {
		t.Fatalf("get = %v, %v", resp, err)
	}
}

func TestAddrInUse(t *testing.T) {
	if testing.Short() {
		t.Skip("starts etcd")
	}
	eps := topotest.StartEtcd(t)
	cfg := etcdserver.DefaultConfig()
	cfg.DataDir = t.TempDir()
	cfg.ClientURL = eps[0] // taken by the first member
	l := testutil.Listen(t)
	cfg.PeerURL = "http://" + l.Addr().String()
	l.Close()
	cfg.Logger = testutil.Logger(t)
	_, err := etcdserver.Start(testutil.Context(t, 10*time.Second), cfg)
	if !errors.Is(err, etcdserver.ErrAddrInUse) {
		t.Fatalf("start on a taken client port = %v, want ErrAddrInUse", err)
	}
}

// TestRestart: a member restarted in place keeps its data and leases on
// the same URLs; a client's watch and lease keep-alive carry on; and the
// restart does not wait for those streams (etcd's own graceful close
// would, for at least 5s).
func TestRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("starts etcd")
	}
	srv := topotest.StartEtcdServer(t)
	eps := srv.Endpoints()
	cli, err := clientv3.New(clientv3.Config{Endpoints: eps, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	ctx := testutil.Context(t, 30*time.Second)
	if _, err := cli.Put(ctx, "k", "v"); err != nil {
		t.Fatal(err)
	}
	lease, err := cli.Grant(ctx, 5)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Put(ctx, "leased", "x", clientv3.WithLease(lease.ID)); err != nil {
		t.Fatal(err)
	}
	kctx, kcancel := context.WithCancel(ctx)
	defer kcancel()
	ka, err := cli.KeepAlive(kctx, lease.ID)
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for range ka { // drain the keep-alive answers
		}
	}()
	wctx, wcancel := context.WithCancel(ctx)
	defer wcancel()
	wch := cli.Watch(wctx, "w")

	start := time.Now()
	if err := srv.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("restarted in %s", time.Since(start))
	if d := time.Since(start); d > 4*time.Second {
		t.Errorf("Restart took %s with a watch and a keep-alive open, want well under etcd's 5s graceful wait", d)
	}
	if got := srv.Endpoints(); !slices.Equal(got, eps) {
		t.Errorf("endpoints after Restart %v, want %v", got, eps)
	}
	if n := srv.Restarts(); n != 1 {
		t.Errorf("Restarts() = %d, want 1", n)
	}
	resp, err := cli.Get(ctx, "k")
	if err != nil || len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "v" {
		t.Fatalf("get after Restart = %v, %v", resp, err)
	}
	// The lease outlives the restart and its keep-alive goes on: still
	// there after more than its TTL.
	testutil.Eventually(t, 10*time.Second, func() error {
		if time.Since(start) < 6*time.Second {
			return errors.New("waiting past the lease's TTL")
		}
		return nil
	})
	ttl, err := cli.TimeToLive(ctx, lease.ID)
	if err != nil || ttl.TTL <= 0 {
		t.Fatalf("the lease after Restart and its TTL: %v, %v", ttl, err)
	}
	// The watch resumed.
	if _, err := cli.Put(ctx, "w", "1"); err != nil {
		t.Fatal(err)
	}
	select {
	case wr := <-wch:
		if err := wr.Err(); err != nil || len(wr.Events) != 1 || string(wr.Events[0].Kv.Value) != "1" {
			t.Fatalf("the watch after Restart: %+v, %v", wr, err)
		}
	case <-ctx.Done():
		t.Fatal("the watch opened before Restart saw nothing")
	}
	srv.Close()
	if err := srv.Restart(ctx); !errors.Is(err, etcdserver.ErrClosed) {
		t.Fatalf("Restart after Close = %v, want ErrClosed", err)
	}
}

// A member whose backend reaches its quota raises NOSPACE: Alarms and
// cellplane_etcd_alarm{type="NOSPACE"} report it; a defragmentation
// after the data is deleted and compacted gives the space back.
func TestNoSpaceAlarmAndDefrag(t *testing.T) {
	if testing.Short() {
		t.Skip("starts etcd")
	}
	srv := topotest.StartEtcdServerWith(t, func(c *etcdserver.Config) {
		c.QuotaBackendBytes = 1 << 20
		c.DefragInterval = -1
	})
	if a := srv.Alarms(); len(a) != 0 {
		t.Fatalf("alarms at start: %v", a)
	}
	if v := alarmMetric(t, srv, "NOSPACE"); v != 0 {
		t.Fatalf("cellplane_etcd_alarm{NOSPACE} = %v at start", v)
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: srv.Endpoints(), DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cli.Close() }()
	ctx := testutil.Context(t, 30*time.Second)
	val := string(make([]byte, 64<<10))
	// The quota is checked against the backend's committed size, which
	// etcd updates once per batch interval (100 ms): a fast machine puts
	// many times the quota before the first check sees it, so the loop is
	// bounded by count and time, not by the quota.
	var nospace bool
	const maxPuts = 5000
	for i := range maxPuts {
		if _, err := cli.Put(ctx, "k", val); err != nil {
			if !errors.Is(err, rpctypes.ErrNoSpace) {
				t.Fatalf("put %d: %v", i, err)
			}
			nospace = true
			break
		}
	}
	if !nospace {
		t.Fatalf("%d puts of 64 KiB under a 1 MiB quota: no NOSPACE", maxPuts)
	}
	if a := srv.Alarms(); len(a) != 1 || a[0].Type != "NOSPACE" {
		t.Fatalf("alarms %v, want NOSPACE", a)
	}
	if v := alarmMetric(t, srv, "NOSPACE"); v != 1 {
		t.Fatalf("cellplane_etcd_alarm{NOSPACE} = %v, want 1", v)
	}

	// The runbook: delete, compact, defragment, disarm.
	if _, err := cli.Delete(ctx, "k"); err != nil {
		t.Fatal(err)
	}
	cur, _ := srv.Revisions()
	// Physical: wait until the compacted revisions are gone from the
	// backend, or the defragmentation below has little to reclaim.
	if _, err := cli.Compact(ctx, cur, clientv3.WithCompactPhysical()); err != nil {
		t.Fatal(err)
	}
	before, _ := srv.BackendSize()
	if err := srv.Defragment(); err != nil {
		t.Fatal(err)
	}
	after, _ := srv.BackendSize()
	if after >= before {
		t.Fatalf("backend %d bytes before the defragmentation, %d after", before, after)
	}
	if _, err := cli.AlarmDisarm(ctx, &clientv3.AlarmMember{}); err != nil { // every alarm (etcdctl alarm disarm)
		t.Fatal(err)
	}
	if a := srv.Alarms(); len(a) != 0 {
		t.Fatalf("alarms after disarm: %v", a)
	}
	if _, err := cli.Put(ctx, "k", "v"); err != nil {
		t.Fatalf("put after disarm: %v", err)
	}
}

func alarmMetric(t *testing.T, srv *etcdserver.Server, typ string) float64 {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(srv.Collectors()...)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "cellplane_etcd_alarm" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "type" && l.GetValue() == typ {
					return m.GetGauge().GetValue()
				}
			}
		}
	}
	t.Fatalf("no cellplane_etcd_alarm{type=%q}", typ)
	return 0
}
