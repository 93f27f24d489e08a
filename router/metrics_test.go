package router_test

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/metadata"

	"github.com/cellplane/cellplane/internal/testutil"
	contextv1 "github.com/cellplane/cellplane/proto/cellplane/context/v1"
	cpv1 "github.com/cellplane/cellplane/proto/cellplane/controlplane/v1"
)

// TestMetricsNameNoTenant (M7): /metrics is not authenticated on the
// router's public HTTP port nor on cell nodes, so after a tenant's calls
// (gRPC and MCP, accepted and refused) neither names the tenant or its
// API key. A guard: no router or cell metric has carried a tenant label;
// the standby lag metrics that did are tested in replication.
func TestMetricsNameNoTenant(t *testing.T) {
	const tenant = "m7guardtenant"
	p := newPlatform(t, &cpv1.CreateTenantRequest{Id: tenant})
	ctx := testutil.Context(t, 60*time.Second)
	keys, err := p.env.Client(t).ListApiKeys(ctx, &cpv1.ListApiKeysRequest{Tenant: tenant})
	if err != nil || len(keys.GetKeys()) != 1 {
		t.Fatalf("list keys: %v %v", keys, err)
	}
	keyID := keys.GetKeys()[0].GetId()

	cs := contextv1.NewContextServiceClient(dial(t, p.router.GRPCAddr()))
	tctx := p.as(ctx, tenant)
	if _, err := cs.CreateContext(tctx, &contextv1.CreateContextRequest{ContextId: "chat"}); err != nil {
		t.Fatal(err)
	}
	if _, err := cs.Append(tctx, &contextv1.AppendRequest{ContextId: "chat",
		Entries: []*contextv1.Entry{{Role: "user", Content: &contextv1.Entry_Text{Text: "hello"}}}}); err != nil {
		t.Fatal(err)
	}
	// Refused calls: no credentials, and a tenant header without them.
	_, _ = cs.Read(metadata.AppendToOutgoingContext(ctx, "x-cellplane-tenant", tenant), &contextv1.ReadRequest{ContextId: "chat"})
	get := func(url string, header ...string) string {
		t.Helper()
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i+1 < len(header); i += 2 {
			req.Header.Set(header[i], header[i+1])
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = resp.Body.Close() }()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	get("http://"+p.router.HTTPAddr()+"/t/"+tenant+"/mcp", "Authorization", "Bearer "+p.keys[tenant])
	get("http://" + p.router.HTTPAddr() + "/t/" + tenant + "/mcp")

	pages := map[string]string{"router": get("http://" + p.router.HTTPAddr() + "/metrics")}
	for _, n := range p.nodes {
		pages["node "+n.HTTPAddr()] = get("http://" + n.HTTPAddr() + "/metrics")
	}
	for where, body := range pages {
		if !strings.Contains(body, "# TYPE") {
			t.Fatalf("%s: /metrics is not a metrics page: %.200q", where, body)
		}
		for _, secret := range []string{tenant, keyID} {
			if i := strings.Index(body, secret); i >= 0 {
				line := body[strings.LastIndexByte(body[:i], '\n')+1:]
				line, _, _ = strings.Cut(line, "\n")
				t.Errorf("%s: /metrics names %q: %s", where, secret, line)
			}
		}
	}
}
