package mcpserver_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	"github.com/cellplane/cellplane/cells"
	"github.com/cellplane/cellplane/cells/mcpauth"
	"github.com/cellplane/cellplane/controlplane/cptest"
	"github.com/cellplane/cellplane/internal/auth"
	"github.com/cellplane/cellplane/internal/cperr"
	"github.com/cellplane/cellplane/internal/rpcerr"
	"github.com/cellplane/cellplane/internal/testutil"
	contextv1 "github.com/cellplane/cellplane/proto/cellplane/context/v1"
	cpv1 "github.com/cellplane/cellplane/proto/cellplane/controlplane/v1"
	"github.com/cellplane/cellplane/router"
)

// TestPrincipalsAndScopesThroughTheRouter: two agents of one tenant, each
// with its own API key, reach MCP through the router with the real go-sdk
// client. Their memory and contexts are their own (the tenant scope is
// shared); a read-only key sees only read tools and is refused writes on
// both faces with nothing written; rotating a key keeps what its agent
// created reachable; request_id and expected_seq make retries and
// concurrent writers safe.
func TestPrincipalsAndScopesThroughTheRouter(t *testing.T) {
	if testing.Short() {
		t.Skip("starts etcd, a control plane, a 3-node cell and a router")
	}
	env := cptest.New(t)
	st := env.Store(t)
	env.CreateCell(t, "us-east", "c1", 3, func(c *cells.Config) {
		a, err := mcpauth.New(mcpauth.Config{Registry: st})
		if err != nil {
			t.Fatal(err)
		}
		c.MCPAuth = a
	})
	ctx := testutil.Context(t, 120*time.Second)
	cl := env.Client(t)
	if _, err := cl.CreateTenant(ctx, &cpv1.CreateTenantRequest{Id: "acme", HomeRegion: "us-east"}); err != nil {
		t.Fatal(err)
	}
	newKey := func(req *cpv1.CreateApiKeyRequest) *cpv1.CreateApiKeyResponse {
		t.Helper()
		req.Tenant = "acme"
		k, err := cl.CreateApiKey(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	alice := newKey(&cpv1.CreateApiKeyRequest{Principal: "alice"})
	bob := newKey(&cpv1.CreateApiKeyRequest{}) // principal: its id
	reader := newKey(&cpv1.CreateApiKeyRequest{Principal: "auditor", Scopes: []string{"contexts:read", "memory:read"}})
	if _, err := cl.CreateApiKey(ctx, &cpv1.CreateApiKeyRequest{Tenant: "acme", Principal: "not a name"}); !errors.Is(rpcerr.FromStatus(err), cperr.ErrInvalidArgument) {
		t.Fatalf("bad principal: %v, want INVALID_ARGUMENT", err)
	}
	if _, err := cl.CreateApiKey(ctx, &cpv1.CreateApiKeyRequest{Tenant: "acme", Scopes: []string{"root"}}); !errors.Is(rpcerr.FromStatus(err), cperr.ErrInvalidArgument) {
		t.Fatalf("bad scope: %v, want INVALID_ARGUMENT", err)
	}

	rcfg := router.DefaultConfig()
	rcfg.EtcdEndpoints = env.Endpoints
	rcfg.GRPCListener, rcfg.HTTPListener = testutil.Listen(t), testutil.Listen(t)
	rcfg.Auth.Mode = auth.ModeAPIKey
	rcfg.Logger = testutil.Logger(t)
	r, err := router.Start(ctx, rcfg)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	waitKeys := func(keys ...*cpv1.CreateApiKeyResponse) {
		t.Helper()
		testutil.Eventually(t, 10*time.Second, func() error {
			if _, ok := r.Table().Lookup("acme"); !ok {
				return errors.New("acme not routed yet")
			}
			for _, k := range keys {
				if _, _, ok := r.Table().APIKey(k.GetKey().GetId()); !ok {
					return errors.New("key not in the router's table yet")
				}
			}
			return nil
		})
	}
	waitKeys(alice, bob, reader)
	url := "http://" + r.HTTPAddr() + "/t/acme/mcp"
	a, b, ro := connect(t, ctx, url, alice.GetSecret()), connect(t, ctx, url, bob.GetSecret()), connect(t, ctx, url, reader.GetSecret())
	must := func(cs *sdk.ClientSession, tool string, args map[string]any) string {
		t.Helper()
		out, err := call(ctx, cs, tool, args)
		if err != nil {
			t.Fatalf("%s %v: %v", tool, args, err)
		}
		return out
	}
	fails := func(cs *sdk.ClientSession, tool string, args map[string]any, reason cperr.Reason) {
		t.Helper()
		_, err := call(ctx, cs, tool, args)
		if err == nil || !strings.HasPrefix(err.Error(), string(reason)+":") {
			t.Fatalf("%s %v: %v, want %s", tool, args, err, reason)
		}
	}

	// Memory: per principal by default, shared with scope tenant.
	must(a, "memory_put", map[string]any{"key": "k", "value": "alice's"})
	must(b, "memory_put", map[string]any{"key": "k", "value": "bob's"})
	must(a, "memory_put", map[string]any{"key": "team", "value": "shared", "scope": "tenant"})
	if out := must(a, "memory_get", map[string]any{"key": "k"}); !strings.Contains(out, "alice's") {
		t.Fatalf("alice reads %s", out)
	}
	if out := must(b, "memory_get", map[string]any{"key": "k"}); !strings.Contains(out, "bob's") {
		t.Fatalf("bob reads %s", out)
	}
	if out := must(b, "memory_get", map[string]any{"key": "team", "scope": "tenant"}); !strings.Contains(out, "shared") {
		t.Fatalf("bob reads the tenant's team: %s", out)
	}
	fails(b, "memory_get", map[string]any{"key": "team"}, cperr.KeyNotFound)
	if out := must(b, "memory_list", map[string]any{}); strings.Count(out, "key:") != 1 {
		t.Fatalf("bob's memory list: %s", out)
	}

	// Contexts: listed per creator, through the store's index.
	must(a, "context_create", map[string]any{"context_id": "alice-chat"})
	must(b, "context_create", map[string]any{"context_id": "bob-chat"})
	if out := must(a, "context_list", map[string]any{}); !strings.Contains(out, "alice-chat") || strings.Contains(out, "bob-chat") {
		t.Fatalf("alice lists %s", out)
	}
	fails(b, "context_read", map[string]any{"context_id": "alice-chat"}, cperr.ContextNotFound)

	// request_id: a retried create or put applies once.
	first := must(a, "context_create", map[string]any{"request_id": "mk-1"})
	if again := must(a, "context_create", map[string]any{"request_id": "mk-1"}); again != first {
		t.Fatalf("retried create: %s then %s", first, again)
	}
	p1 := must(a, "memory_put", map[string]any{"key": "n", "value": "1", "request_id": "put-1"})
	if p2 := must(a, "memory_put", map[string]any{"key": "n", "value": "1", "request_id": "put-1"}); p1 != p2 {
		t.Fatalf("retried put: %s then %s", p1, p2)
	}
	// expected_seq: a stale writer is refused and appends nothing.
	must(a, "context_append", map[string]any{"context_id": "alice-chat", "expected_seq": 0, "entries": []map[string]any{{"role": "user", "content": "one"}}})
	fails(a, "context_append", map[string]any{"context_id": "alice-chat", "expected_seq": 0, "entries": []map[string]any{{"role": "user", "content": "stale"}}}, cperr.SequenceMismatch)
	if out := must(a, "context_read", map[string]any{"context_id": "alice-chat"}); strings.Contains(out, "stale") {
		t.Fatalf("a refused append was written: %s", out)
	}

	// A read-only key: write tools absent from tools/list and refused.
	lt, err := ro.ListTools(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, tool := range lt.Tools {
		names = append(names, tool.Name)
	}
	slices.Sort(names)
	if want := []string{"changes_read", "context_list", "context_read", "context_search", "memory_get", "memory_list", "memory_search"}; !slices.Equal(names, want) {
		t.Fatalf("read-only tools/list = %v, want %v", names, want)
	}
	fails(ro, "memory_put", map[string]any{"key": "k", "value": "x"}, cperr.PermissionDenied)
	fails(ro, "context_create", map[string]any{"context_id": "ro-chat"}, cperr.PermissionDenied)
	fails(ro, "memory_get", map[string]any{"key": "k"}, cperr.KeyNotFound) // nothing was written
	fails(a, "context_read", map[string]any{"context_id": "ro-chat"}, cperr.ContextNotFound)

	// gRPC through the router: the same scopes and principals.
	conn, err := grpc.NewClient(r.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	svc := contextv1.NewContextServiceClient(conn)
	as := func(k *cpv1.CreateApiKeyResponse) context.Context {
		return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+k.GetSecret())
	}
	_, err = svc.PutMemory(as(reader), &contextv1.PutMemoryRequest{Key: "g", Value: []byte("x"), Scope: contextv1.MemoryScope_MEMORY_SCOPE_TENANT})
	if !errors.Is(rpcerr.FromStatus(err), cperr.ErrPermissionDenied) {
		t.Fatalf("read-only PutMemory over gRPC: %v, want PERMISSION_DENIED", err)
	}
	if _, err := svc.GetMemory(as(alice), &contextv1.GetMemoryRequest{Key: "g", Scope: contextv1.MemoryScope_MEMORY_SCOPE_TENANT}); !errors.Is(rpcerr.FromStatus(err), cperr.ErrKeyNotFound) {
		t.Fatalf("after a refused put: %v, want KEY_NOT_FOUND", err)
	}
	if got, err := svc.GetMemory(as(alice), &contextv1.GetMemoryRequest{Key: "k"}); err != nil || string(got.GetItem().GetValue()) != "alice's" {
		t.Fatalf("alice's k over gRPC: %v, %v (MCP and gRPC share the principal)", got, err)
	}
	lc, err := svc.ListContexts(as(bob), &contextv1.ListContextsRequest{CreatedByCaller: true})
	if err != nil || len(lc.GetContexts()) != 1 || lc.GetContexts()[0].GetContextId() != "bob-chat" {
		t.Fatalf("bob's contexts over gRPC: %v, %v", lc, err)
	}
	// A label selector narrows the caller's own contexts in the cell; it
	// never widens them to another principal's.
	for _, tc := range []struct {
		op   contextv1.LabelOperator
		want int
	}{{contextv1.LabelOperator_LABEL_OPERATOR_NOT_EXISTS, 1}, {contextv1.LabelOperator_LABEL_OPERATOR_EXISTS, 0}} {
		sel := &contextv1.LabelSelector{Requirements: []*contextv1.LabelRequirement{{Key: "archived", Operator: tc.op}}}
		lc, err := svc.ListContexts(as(bob), &contextv1.ListContextsRequest{CreatedByCaller: true, LabelSelector: sel})
		if err != nil || len(lc.GetContexts()) != tc.want || (tc.want == 1 && lc.GetContexts()[0].GetContextId() != "bob-chat") {
			t.Fatalf("bob's contexts %v archived over gRPC: %v, %v", tc.op, lc, err)
		}
	}

	// Rotation: alice's successor key keeps her principal; the old key is
	// revoked; her memory and contexts stay reachable.
	alice2 := newKey(&cpv1.CreateApiKeyRequest{Replaces: alice.GetKey().GetId()})
	if alice2.GetKey().GetPrincipal() != "alice" {
		t.Fatalf("rotated key's principal %q", alice2.GetKey().GetPrincipal())
	}
	if _, err := cl.RevokeApiKey(ctx, &cpv1.RevokeApiKeyRequest{Tenant: "acme", Id: alice.GetKey().GetId()}); err != nil {
		t.Fatal(err)
	}
	waitKeys(alice2)
	a2 := connect(t, ctx, url, alice2.GetSecret())
	if out := must(a2, "memory_get", map[string]any{"key": "k"}); !strings.Contains(out, "alice's") {
		t.Fatalf("after rotation alice reads %s", out)
	}
	if out := must(a2, "context_read", map[string]any{"context_id": "alice-chat"}); !strings.Contains(out, "one") {
		t.Fatalf("after rotation alice's chat: %s", out)
	}
	if out := must(a2, "context_list", map[string]any{}); !strings.Contains(out, "alice-chat") {
		t.Fatalf("after rotation alice lists %s", out)
	}
	// And bob's default-principal key rotates onto its id.
	bob2 := newKey(&cpv1.CreateApiKeyRequest{Replaces: bob.GetKey().GetId()})
	waitKeys(bob2)
	if out := must(connect(t, ctx, url, bob2.GetSecret()), "memory_get", map[string]any{"key": "k"}); !strings.Contains(out, "bob's") {
		t.Fatalf("after rotation bob reads %s", out)
	}
}
