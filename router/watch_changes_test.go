package router_test

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/cellplane/cellplane/internal/cperr"
	"github.com/cellplane/cellplane/internal/tenantmd"
	"github.com/cellplane/cellplane/internal/testutil"
	contextv1 "github.com/cellplane/cellplane/proto/cellplane/context/v1"
	cpv1 "github.com/cellplane/cellplane/proto/cellplane/controlplane/v1"
)

// WatchChanges through the router: the cell filters by the scopes the
// router authenticated (a client's own x-cellplane-scopes is dropped), and
// a credential without contexts:read is refused.
func TestWatchChangesThroughRouter(t *testing.T) {
	p := newPlatform(t, &cpv1.CreateTenantRequest{Id: "acme"})
	ctx := testutil.Context(t, 60*time.Second)
	cl := p.env.Client(t)
	key := func(scopes ...string) string {
		k, err := cl.CreateApiKey(ctx, &cpv1.CreateApiKeyRequest{Tenant: "acme", Principal: "app", Scopes: scopes})
		if err != nil {
			t.Fatal(err)
		}
		return k.GetSecret()
	}
	full, ctxOnly, memOnly := key(), key("contexts:read"), key("memory:read")
	cs := contextv1.NewContextServiceClient(dial(t, p.router.GRPCAddr()))
	as := func(secret string, kv ...string) context.Context {
		return metadata.AppendToOutgoingContext(ctx, append([]string{"authorization", "Bearer " + secret}, kv...)...)
	}
	open := func(c context.Context) (contextv1.ContextService_WatchChangesClient, error) {
		s, err := cs.WatchChanges(c, &contextv1.WatchChangesRequest{})
		if err == nil {
			_, err = s.Recv()
		}
		return s, err
	}
	var fullW, narrowW contextv1.ContextService_WatchChangesClient
	testutil.Eventually(t, 20*time.Second, func() error { // the keys reach the router's table
		var err error
		if fullW, err = open(as(full)); err != nil {
			return err
		}
		if narrowW, err = open(as(ctxOnly, tenantmd.ScopesKey, "contexts:read memory:read")); err != nil {
			return err
		}
		if _, err = open(as(memOnly)); status.Code(err) == codes.Unauthenticated {
			return err // not in the router's table yet
		}
		return nil
	})
	_, err := open(as(memOnly))
	wantCode(t, "WatchChanges with a memory:read key", err, codes.PermissionDenied, cperr.PermissionDenied)
	// The search RPCs: each needs its read scope, and a call without a
	// credential is refused before the cell.
	_, err = cs.SearchContexts(as(memOnly), &contextv1.SearchContextsRequest{Query: "x"})
	wantCode(t, "SearchContexts with a memory:read key", err, codes.PermissionDenied, cperr.PermissionDenied)
	_, err = cs.SearchMemory(as(ctxOnly), &contextv1.SearchMemoryRequest{Query: "x"})
	wantCode(t, "SearchMemory with a contexts:read key", err, codes.PermissionDenied, cperr.PermissionDenied)
	_, err = cs.SearchMemory(ctx, &contextv1.SearchMemoryRequest{Query: "x"})
	wantCode(t, "SearchMemory without a credential", err, codes.Unauthenticated, cperr.Unauthenticated)

	if _, err := cs.PutMemory(as(full), &contextv1.PutMemoryRequest{Key: "k", Value: []byte("v")}); err != nil {
		t.Fatal(err)
	}
	if _, err := cs.CreateContext(as(full), &contextv1.CreateContextRequest{ContextId: "c"}); err != nil {
		t.Fatal(err)
	}
	kinds := func(s contextv1.ContextService_WatchChangesClient) string {
		var out []string
		for len(out) == 0 || out[len(out)-1] != "CHANGE_KIND_CONTEXT_CREATED" {
			resp, err := s.Recv()
			if err != nil {
				t.Fatal(err)
			}
			for _, c := range resp.GetChanges() {
				out = append(out, c.GetKind().String())
			}
		}
		return fmt.Sprint(out)
	}
	if got := kinds(fullW); got != "[CHANGE_KIND_MEMORY_PUT CHANGE_KIND_CONTEXT_CREATED]" {
		t.Errorf("full key: %s", got)
	}
	if got := kinds(narrowW); got != "[CHANGE_KIND_CONTEXT_CREATED]" {
		t.Errorf("contexts:read key (claiming memory:read in metadata): %s", got)
	}

	// MCP subscriptions/listen through the router's proxy: one long-lived
	// POST whose events are flushed as they come.
	body := `{"jsonrpc":"2.0","id":1,"method":"subscriptions/listen","params":{"_meta":{` +
		`"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientInfo":{"name":"t","version":"v0"},` +
		`"io.modelcontextprotocol/clientCapabilities":{}},"notifications":{"resourceSubscriptions":["cellplane://t/acme/contexts/c"]}}}`
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+p.router.HTTPAddr()+"/t/acme/mcp", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	req.Header.Set("Mcp-Protocol-Version", "2026-07-28")
	req.Header.Set("Mcp-Method", "subscriptions/listen")
	req.Header.Set("Authorization", "Bearer "+full)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("listen through the router: %s", resp.Status)
	}
	sc := bufio.NewScanner(resp.Body)
	next := func() string {
		for sc.Scan() {
			if data, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
				return data
			}
		}
		t.Fatalf("the listen stream ended: %v", sc.Err())
		return ""
	}
	if ack := next(); !strings.Contains(ack, "notifications/subscriptions/acknowledged") {
		t.Fatalf("first event %s, want the acknowledgement", ack)
	}
	if _, err := cs.Append(as(full), &contextv1.AppendRequest{ContextId: "c", Entries: []*contextv1.Entry{{Role: "user", Content: &contextv1.Entry_Text{Text: "hi"}}}}); err != nil {
		t.Fatal(err)
	}
	// A listen without a cursor starts at the serving member's position,
	// which may be a follower's a moment behind: the context's creation
	// can still arrive first. Nothing else may.
	for {
		ev := next()
		if !strings.Contains(ev, "notifications/resources/updated") {
			t.Fatalf("event %s, want a resource notification", ev)
		}
		if strings.Contains(ev, `"cellplane/kind":"context_created"`) {
			continue
		}
		if !strings.Contains(ev, `"cellplane/seqs":"1-1"`) {
			t.Fatalf("event %s, want the append's notification", ev)
		}
		break
	}
}
