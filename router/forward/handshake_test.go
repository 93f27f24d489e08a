package forward

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/cellplane/cellplane/internal/pki"
	"github.com/cellplane/cellplane/internal/rpcerr"
	"github.com/cellplane/cellplane/internal/tenantmd"
	"github.com/cellplane/cellplane/internal/testutil"
	contextv1 "github.com/cellplane/cellplane/proto/cellplane/context/v1"
)

const testCluster = "fwdtest"

// testPKI writes a CA and one leaf per identity into a new directory and
// returns a Source per identity.
func testPKI(t *testing.T, ids ...pki.Identity) []*pki.Source {
	t.Helper()
	dir := t.TempDir()
	ca, err := pki.NewCA(testCluster, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := pki.WriteCA(dir, ca, false); err != nil {
		t.Fatal(err)
	}
	var srcs []*pki.Source
	for _, id := range ids {
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
		srcs = append(srcs, src)
	}
	return srcs
}

// startTLSFake serves a fakeCell with mutual TLS (src's certificate, any
// client identity of the cluster).
func startTLSFake(t *testing.T, src *pki.Source) *fakeCell {
	t.Helper()
	fc := &fakeCell{}
	lis := testutil.Listen(t)
	fc.addr = lis.Addr().String()
	srv := grpc.NewServer(grpc.Creds(pki.ServerCredentials(src)), grpc.ChainUnaryInterceptor(rpcerr.UnaryServerInterceptor()))
	contextv1.RegisterContextServiceServer(srv, fc)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(lis)
	}()
	t.Cleanup(func() {
		srv.Stop()
		<-done
	})
	return fc
}

// TestBackendHandshakes checks that the router's hop to cells with mutual
// TLS makes one handshake per backend, however many calls (concurrent
// or not) it carries: a handshake per call or per stream would cost every
// call a round trip and the crypto of a handshake (`cellplane bench
// mtls`, router path).
func TestBackendHandshakes(t *testing.T) {
	srcs := testPKI(t,
		pki.RouterIdentity(testCluster, "r1"),
		pki.NodeIdentity(testCluster, "reg", "c1", "n1"),
		pki.NodeIdentity(testCluster, "reg", "c2", "n1"))
	router, cellA, cellB := srcs[0], startTLSFake(t, srcs[1]), startTLSFake(t, srcs[2])

	for _, tc := range []struct {
		name      string
		backends  []*fakeCell
		callers   int
		perCaller int
	}{
		{"one backend, sequential calls", []*fakeCell{cellA}, 1, 50},
		{"one backend, 32 in flight", []*fakeCell{cellA}, 32, 20},
		{"two backends, 16 in flight each", []*fakeCell{cellA, cellB}, 16, 20},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testutil.Context(t, 20*time.Second)
			res := newResolver()
			for i, b := range tc.backends {
				res.set(fmt.Sprintf("t%d", i), Target{Cell: fmt.Sprintf("c%d", i+1), Epoch: 1, LeaderAddr: b.addr, Members: []string{b.addr}})
			}
			cfg := testConfig()
			cfg.Dial.Credentials = pki.ClientCredentials(router, pki.ExpectKinds(pki.KindNode))
			client, fwd, _ := startRouter(t, cfg, res)

			var wg sync.WaitGroup
			errs := make(chan error, len(tc.backends)*tc.callers)
			for i := range tc.backends {
				tctx := tenantmd.Outgoing(ctx, fmt.Sprintf("t%d", i), 0)
				for range tc.callers {
					wg.Go(func() {
						for k := range tc.perCaller {
							if _, err := client.Append(tctx, &contextv1.AppendRequest{ContextId: "c", RequestId: fmt.Sprint(k),
								Entries: []*contextv1.Entry{{Role: "user", Content: &contextv1.Entry_Text{Text: "hi"}}}}); err != nil {
								errs <- err
								return
							}
							if _, err := client.GetContext(tctx, &contextv1.GetContextRequest{ContextId: "c"}); err != nil {
								errs <- err
								return
							}
						}
					})
				}
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Fatal(err)
			}
			ok := counterValue(t, fwd.m.handshakes.WithLabelValues("ok"))
			bad := counterValue(t, fwd.m.handshakes.WithLabelValues("error"))
			if want := float64(len(tc.backends)); ok != want || bad != 0 {
				t.Errorf("%d calls: %v handshakes ok, %v failed; want %v ok (one per backend), 0 failed",
					2*len(tc.backends)*tc.callers*tc.perCaller, ok, bad, want)
			}
			if got := fwd.pool.size(); got != len(tc.backends) {
				t.Errorf("pool holds %d connections, want %d", got, len(tc.backends))
			}
		})
	}
}

// TestBackendHandshakeRefused checks that the counter reports failed
// handshakes: a backend whose identity is not a node's is refused.
func TestBackendHandshakeRefused(t *testing.T) {
	srcs := testPKI(t, pki.RouterIdentity(testCluster, "r1"), pki.WorkerIdentity(testCluster, "w1"))
	impostor := startTLSFake(t, srcs[1])
	ctx := testutil.Context(t, 20*time.Second)
	res := newResolver()
	res.set("t", Target{Cell: "c1", Epoch: 1, LeaderAddr: impostor.addr, Members: []string{impostor.addr}})
	cfg := testConfig()
	cfg.FailoverHold = 200 * time.Millisecond
	cfg.Dial.Credentials = pki.ClientCredentials(srcs[0], pki.ExpectKinds(pki.KindNode))
	client, fwd, _ := startRouter(t, cfg, res)
	if _, err := client.GetContext(tenantmd.Outgoing(ctx, "t", 0), &contextv1.GetContextRequest{ContextId: "c"}); err == nil {
		t.Fatal("a call through a backend of the wrong kind succeeded")
	}
	if got := counterValue(t, fwd.m.handshakes.WithLabelValues("error")); got < 1 {
		t.Errorf("failed handshakes = %v, want at least 1", got)
	}
	if got := counterValue(t, fwd.m.handshakes.WithLabelValues("ok")); got != 0 {
		t.Errorf("handshakes ok = %v, want 0", got)
	}
	if len(impostor.calls()) != 0 {
		t.Errorf("the impostor received %d calls", len(impostor.calls()))
	}
}
