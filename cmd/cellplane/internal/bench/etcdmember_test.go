package bench

import (
	"context"
	"crypto/tls"
	"fmt"
	"net/http"
	"path/filepath"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/cellplane/cellplane/internal/pki"
	"github.com/cellplane/cellplane/internal/testutil"
)

// TestEtcdMember runs a one-member etcd baseline in this process: a client
// with a certificate of the cluster CA writes; one without a certificate
// is refused and writes nothing; /metrics counts the WAL's fsyncs.
func TestEtcdMember(t *testing.T) {
	if testing.Short() {
		t.Skip("starts an etcd member")
	}
	dir := t.TempDir()
	bp, err := newBenchPKI(filepath.Join(dir, "certs"), 1)
	if err != nil {
		t.Fatal(err)
	}
	addrs, err := loopbackAddrs(2)
	if err != nil {
		t.Fatal(err)
	}
	peer, client := "https://"+addrs[0], "https://"+addrs[1]
	cert, key := leafFiles(bp.Dir, pki.ControlPlaneIdentity(benchPKICluster, "etcd1"))
	cfg := EtcdMemberConfig{Name: "etcd1", DataDir: filepath.Join(dir, "etcd1"), PeerURL: peer, ClientURL: client,
		InitialCluster: etcdInitialCluster([]string{"etcd1"}, []string{peer}),
		CertFile:       cert, KeyFile: key, CAFile: filepath.Join(bp.Dir, pki.CACertFile)}
	ctx, cancel := context.WithCancel(testutil.Context(t, time.Minute))
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait(); waitNoLeaks(t) }()
	wg.Go(func() {
		if err := RunEtcdMember(ctx, cfg); err != nil {
			t.Error(err)
		}
	})

	https, err := newTestHTTPS(bp)
	if err != nil {
		t.Fatal(err)
	}
	good := https.Transport.(*http.Transport).TLSClientConfig.Clone()
	cli := newEtcdTestClient(t, ctx, client, good)
	defer cli.Close()
	testutil.Eventually(t, 30*time.Second, func() error {
		_, err := cli.Put(ctx, "k", "v")
		return err
	})
	env := &procEnv{https: https}
	if n := env.scrape(client+"/metrics", metricEtcdFsyncs)[metricEtcdFsyncs]; n < 1 {
		t.Errorf("%s = %v after a Put", metricEtcdFsyncs, n)
	}

	bad := newEtcdTestClient(t, ctx, client, noClientCert(bp))
	defer bad.Close()
	pctx, pcancel := context.WithTimeout(ctx, 3*time.Second)
	defer pcancel()
	if _, err := bad.Put(pctx, "k", "overwritten"); err == nil {
		t.Error("a Put without a client certificate was accepted")
	}
	got, err := cli.Get(ctx, "k")
	if err != nil || len(got.Kvs) != 1 || string(got.Kvs[0].Value) != "v" {
		t.Errorf("k = %v, %v; want v", got, err)
	}
}

func newEtcdTestClient(t *testing.T, ctx context.Context, endpoint string, tc *tls.Config) *clientv3.Client {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{endpoint}, DialTimeout: 5 * time.Second, TLS: tc, Logger: zap.NewNop(), Context: ctx})
	if err != nil {
		t.Fatal(fmt.Errorf("etcd client: %w", err))
	}
	return cli
}
