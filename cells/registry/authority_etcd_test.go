package registry_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/cellplane/cellplane/controlplane/topo"
	"github.com/cellplane/cellplane/controlplane/topo/etcdtopo"
	"github.com/cellplane/cellplane/controlplane/topo/topotest"
	"github.com/cellplane/cellplane/internal/faultnet"
	"github.com/cellplane/cellplane/internal/testutil"
)

// With a real etcd: the node's connection to etcd is cut (a TCP proxy
// between them closes every connection and refuses new ones, so the
// lease keep-alives stop too). The keeper stops being valid strictly
// before etcd expires its lease and deletes the authority key, as seen by
// an observer that still reaches etcd.
func TestAuthorityLapsesBeforeEtcdDeletesTheKey(t *testing.T) {
	if testing.Short() {
		t.Skip("starts etcd")
	}
	eps := topotest.StartEtcd(t)
	proxy := faultnet.Start(t, trimScheme(eps[0]))
	dial := func(endpoint string) topo.Store {
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
	observer := dial(eps[0])
	nodeStore := dial("http://" + proxy.Addr())
	createCell(t, observer, 3)
	ctx := testutil.Context(t, 30*time.Second)

	l := &leader{}
	l.set(2, true)
	a := startAuthority(t, nodeStore, "n1", l, newFencer(), nil) // TTL 2s, margin 500ms
	t.Cleanup(proxy.Heal)                                        // before the keeper's Close: a quick clean-up
	testutil.Eventually(t, 10*time.Second, wantValid(a, true))

	// Watch the key's deletion from the observer's side.
	page, err := observer.List(ctx, topo.CellAuthorityKey(cell), topo.ListOptions{})
	if err != nil || len(page.KVs) != 1 {
		t.Fatalf("authority key before the cut: %v (%d keys)", err, len(page.KVs))
	}
	wctx, stop := context.WithCancel(ctx)
	defer stop()
	deleted := make(chan time.Time, 1)
	go func() {
		for resp := range observer.Watch(wctx, topo.CellAuthorityKey(cell), page.Revision+1) {
			for _, ev := range resp.Events {
				if ev.Type == topo.EventDelete {
					deleted <- time.Now()
					return
				}
			}
		}
	}()

	cut := time.Now()
	proxy.Cut()
	var invalidAt time.Time
	testutil.Eventually(t, 10*time.Second, func() error {
		if a.Valid() {
			return errors.New("still valid")
		}
		invalidAt = time.Now()
		return nil
	})
	var deletedAt time.Time
	select {
	case deletedAt = <-deleted:
	case <-time.After(15 * time.Second):
		t.Fatal("etcd did not delete the authority key of a node cut off from it")
	}
	t.Logf("cut, then invalid after %s, key deleted after %s", invalidAt.Sub(cut), deletedAt.Sub(cut))
	if !invalidAt.Before(deletedAt) {
		t.Fatalf("the node was valid until %s after the cut, the key deleted %s after it: the node must stop first", invalidAt.Sub(cut), deletedAt.Sub(cut))
	}
}

func trimScheme(ep string) string {
	for _, p := range []string{"http://", "https://"} {
		if len(ep) > len(p) && ep[:len(p)] == p {
			return ep[len(p):]
		}
	}
	return ep
}
