package router_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/cellplane/cellplane/internal/cperr"
	"github.com/cellplane/cellplane/internal/rpcerr"
	"github.com/cellplane/cellplane/internal/testutil"
	contextv1 "github.com/cellplane/cellplane/proto/cellplane/context/v1"
	cpv1 "github.com/cellplane/cellplane/proto/cellplane/controlplane/v1"
	"github.com/cellplane/cellplane/router"
	"github.com/cellplane/cellplane/router/forward"
)

// TestRouterReadCache: STALE reads are answered by the router's cache
// (after authentication and authorisation), LINEARIZABLE ones never are,
// and writes reach the cache through the tenant's change stream.
func TestRouterReadCache(t *testing.T) {
	p := newPlatform(t, &cpv1.CreateTenantRequest{Id: "acme"}, &cpv1.CreateTenantRequest{Id: "globex"})
	r := p.startRouterWith(t, func(c *router.Config) { c.Forward.ReadCache.MaxBytes = 1 << 20 })
	testutil.Eventually(t, 20*time.Second, func() error {
		if _, ok := r.Table().Lookup("acme"); !ok {
			return errors.New("not routed yet")
		}
		return nil
	})
	cs := contextv1.NewContextServiceClient(dial(t, r.GRPCAddr()))
	ctx := testutil.Context(t, 60*time.Second)
	key := func(tenant, principal string, scopes ...string) context.Context {
		k, err := p.env.Client(t).CreateApiKey(ctx, &cpv1.CreateApiKeyRequest{Tenant: tenant, Principal: principal, Scopes: scopes})
		if err != nil {
			t.Fatal(err)
		}
		return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+k.GetSecret())
	}
	alice, bob := key("acme", "alice"), key("acme", "bob")
	noMemory := key("acme", "carol", "contexts:read")
	globex := p.as(ctx, "globex")
	staleOpts := &contextv1.ReadOptions{Consistency: contextv1.Consistency_CONSISTENCY_STALE, MaxStaleness: durationpb.New(time.Minute)}

	if _, err := cs.CreateContext(alice, &contextv1.CreateContextRequest{ContextId: "chat"}); err != nil {
		t.Fatal(err)
	}
	appendText := func(s string) {
		t.Helper()
		if _, err := cs.Append(alice, &contextv1.AppendRequest{ContextId: "chat", Entries: []*contextv1.Entry{{Role: "user", Content: &contextv1.Entry_Text{Text: s}}}}); err != nil {
			t.Fatal(err)
		}
	}
	appendText("a")
	if _, err := cs.PutMemory(alice, &contextv1.PutMemoryRequest{Key: "k", Value: []byte("alice's")}); err != nil {
		t.Fatal(err)
	}
	read := func(ctx context.Context, opts *contextv1.ReadOptions) (*contextv1.ReadResponse, bool, error) {
		var h metadata.MD
		res, err := cs.Read(ctx, &contextv1.ReadRequest{ContextId: "chat", Start: &contextv1.ReadRequest_Tail{Tail: 10}, ReadOptions: opts}, grpc.Header(&h))
		return res, len(h.Get(forward.CacheHeader)) > 0, err
	}
	getMem := func(ctx context.Context) (*contextv1.GetMemoryResponse, bool, error) {
		var h metadata.MD
		res, err := cs.GetMemory(ctx, &contextv1.GetMemoryRequest{Key: "k", ReadOptions: staleOpts}, grpc.Header(&h))
		return res, len(h.Get(forward.CacheHeader)) > 0, err
	}

	if _, hit, err := read(alice, staleOpts); err != nil || hit {
		t.Fatalf("first stale read: hit %v, %v", hit, err)
	}
	testutil.Eventually(t, 10*time.Second, func() error {
		res, hit, err := read(alice, staleOpts)
		if err != nil || !hit || len(res.GetEntries()) != 1 {
			return fmt.Errorf("stale read: hit %v, %v, %v", hit, res, err)
		}
		return nil
	})
	if _, hit, err := read(alice, nil); err != nil || hit {
		t.Fatalf("linearizable read: hit %v, %v", hit, err)
	}

	// Authorisation first: another tenant, no credentials, a key without
	// the scope never get the cached answer.
	if _, hit, err := read(globex, staleOpts); hit || reasonOf(err) != cperr.ContextNotFound {
		t.Fatalf("globex: hit %v, %v", hit, err)
	}
	if _, hit, err := read(ctx, staleOpts); hit || reasonOf(err) != cperr.Unauthenticated {
		t.Fatalf("no credentials: hit %v, %v", hit, err)
	}
	if _, _, err := getMem(alice); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, func() error {
		if res, hit, err := getMem(alice); err != nil || !hit || string(res.GetItem().GetValue()) != "alice's" {
			return fmt.Errorf("alice's memory: hit %v, %v, %v", hit, res, err)
		}
		return nil
	})
	if _, hit, err := getMem(noMemory); hit || reasonOf(err) != cperr.PermissionDenied {
		t.Fatalf("no memory:read: hit %v, %v", hit, err)
	}
	// Principal memory is never served across principals.
	if _, hit, err := getMem(bob); hit || reasonOf(err) != cperr.KeyNotFound {
		t.Fatalf("bob reading alice's key: hit %v, %v", hit, err)
	}

	// A write reaches the cache through the change stream.
	appendText("b")
	testutil.Eventually(t, 10*time.Second, func() error {
		if res, _, err := read(alice, staleOpts); err != nil || len(res.GetEntries()) != 2 {
			return fmt.Errorf("after the append: %v, %v", res, err)
		}
		return nil
	})
}

func reasonOf(err error) cperr.Reason {
	if err == nil {
		return ""
	}
	return cperr.ReasonOf(rpcerr.FromStatus(err))
}
