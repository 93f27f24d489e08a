package topotest

import (
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cellplane/cellplane/controlplane/etcdserver"
	"github.com/cellplane/cellplane/controlplane/topo"
	"github.com/cellplane/cellplane/controlplane/topo/etcdtopo"
	"github.com/cellplane/cellplane/internal/serve"
	"github.com/cellplane/cellplane/internal/testutil"
)

// StartEtcd starts a single-member embedded etcd on free loopback ports,
// with fsync off and data in t.TempDir(), stopped on cleanup; it returns
// the client endpoints. etcd cannot take pre-opened listeners, so ports
// are picked by opening and closing 127.0.0.1:0, and the start is retried
// (up to 3 times) if another process took one in between.
func StartEtcd(t testing.TB) []string {
	t.Helper()
	return StartEtcdServer(t).Endpoints()
}

// StartEtcdServer is StartEtcd returning the server, for tests that stop
// etcd on purpose (Close is safe to call again at cleanup).
func StartEtcdServer(t testing.TB) *etcdserver.Server {
	t.Helper()
	return StartEtcdServerTLS(t, nil)
}

// StartEtcdServerTLS is StartEtcdServer serving https with tls (client
// certificates required; see etcdserver.Config.TLS); nil: plaintext.
func StartEtcdServerTLS(t testing.TB, tls *etcdserver.TLSFiles) *etcdserver.Server {
	t.Helper()
	return StartEtcdServerWith(t, func(c *etcdserver.Config) { c.TLS = tls })
}

// StartEtcdServerWith is StartEtcdServer with the config edited by edit
// (after the test defaults: data dir, free ports, no fsync, test logger;
// edit may set TLS, compaction, defragmentation...).
func StartEtcdServerWith(t testing.TB, edit func(*etcdserver.Config)) *etcdserver.Server {
	t.Helper()
	var probe etcdserver.Config
	if edit != nil {
		edit(&probe)
	}
	tls := probe.TLS
	scheme := "http"
	if tls != nil {
		scheme = "https"
	}
	var lastErr error
	for range 3 {
		ports, err := serve.FreeLoopbackPorts(2)
		if err != nil {
			t.Fatalf("topotest: free ports: %v", err)
		}
		cfg := etcdserver.DefaultConfig()
		cfg.DataDir = t.TempDir()
		cfg.ClientURL = fmt.Sprintf("%s://127.0.0.1:%d", scheme, ports[0])
		cfg.PeerURL = fmt.Sprintf("%s://127.0.0.1:%d", scheme, ports[1])
		cfg.TLS = tls
		cfg.UnsafeNoFsync = true
		cfg.Logger = testutil.Logger(t)
		if edit != nil {
			edit(&cfg)
		}
		srv, err := etcdserver.Start(testutil.Context(t, 30*time.Second), cfg)
		if err == nil {
			t.Cleanup(func() { _ = srv.Close() })
			return srv
		}
		lastErr = err
		if !errors.Is(err, etcdserver.ErrAddrInUse) {
			break
		}
	}
	t.Fatalf("topotest: start etcd: %v", lastErr)
	return nil
}

var storeSeq atomic.Int64

// NewEtcdStore returns an etcdtopo store on a fresh embedded etcd (see
// StartEtcd) under a unique prefix; both are closed on cleanup.
func NewEtcdStore(t testing.TB) topo.Store {
	t.Helper()
	eps := StartEtcd(t)
	cfg := etcdtopo.DefaultConfig()
	cfg.Endpoints = eps
	cfg.Prefix = fmt.Sprintf("/cellplane-test/%d/", storeSeq.Add(1))
	cfg.Logger = testutil.Logger(t)
	st, err := etcdtopo.Dial(testutil.Context(t, 10*time.Second), cfg)
	if err != nil {
		t.Fatalf("topotest: dial etcd: %v", err)
	}
	t.Cleanup(func() { _ = st.Close() })
	return st
}
