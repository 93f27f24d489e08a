package platform_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"

	"github.com/cellplane/cellplane/internal/dial"
	"github.com/cellplane/cellplane/internal/pki"
	"github.com/cellplane/cellplane/internal/tenantmd"
	"github.com/cellplane/cellplane/internal/testutil"
	cellv1 "github.com/cellplane/cellplane/proto/cellplane/cell/v1"
	contextv1 "github.com/cellplane/cellplane/proto/cellplane/context/v1"
	cpv1 "github.com/cellplane/cellplane/proto/cellplane/controlplane/v1"
	replicationv1 "github.com/cellplane/cellplane/proto/cellplane/replication/v1"
	routerv1 "github.com/cellplane/cellplane/proto/cellplane/router/v1"
)

// TestMaliciousTenant: a tenant ("evil") with a valid API key, on the
// same cell as its victim, with mutual TLS on every internal hop and API
// keys at the router, cannot read, write or delete the victim by any
// path — the router, Lookup + a direct call to the cell (with its own
// token, a forged x-cellplane-tenant, no token, plaintext), MCP on a node
// and through the router — cannot mint API keys (the control plane
// answers operators' certificates only; the router forwards no admin
// API) and cannot export (ReplicationService, CellService). The victim's
// data, tenant and keys are compared before and after.
func TestMaliciousTenant(t *testing.T) {
	p := startTokenPlatform(t, nil)
	ctx := testutil.Context(t, 3*time.Minute)
	p.tenant(t, ctx, "victim", cellA)
	p.tenant(t, ctx, "evil", cellA)
	router := contextv1.NewContextServiceClient(p.RouterConn())
	vctx := p.asTenant(ctx, "victim", "victim")
	if _, err := router.CreateContext(vctx, &contextv1.CreateContextRequest{ContextId: "secret"}); err != nil {
		t.Fatal(err)
	}
	if err := appendText(vctx, router, "secret", "the victim's data"); err != nil {
		t.Fatal(err)
	}
	victimState := func() string {
		s := p.state(t, ctx)
		tn, err := p.Admin().GetTenant(ctx, &cpv1.GetTenantRequest{Id: "victim"})
		if err != nil {
			t.Fatal(err)
		}
		keys, err := p.Admin().ListApiKeys(ctx, &cpv1.ListApiKeysRequest{Tenant: "victim"})
		if err != nil {
			t.Fatal(err)
		}
		return fmt.Sprintf("%s\ntenant %v\nkeys %d", s, tn.GetTenant().GetId(), len(keys.GetKeys()))
	}
	before := victimState()
	refused := func(path string, err error) {
		t.Helper()
		if err == nil {
			t.Errorf("%s: succeeded", path)
		}
	}
	tryData := func(path string, ctx context.Context, data contextv1.ContextServiceClient) {
		t.Helper()
		_, err := data.Read(ctx, &contextv1.ReadRequest{ContextId: "secret"})
		refused(path+": Read", err)
		_, err = data.ListContexts(ctx, &contextv1.ListContextsRequest{})
		refused(path+": ListContexts", err)
		refused(path+": Append", appendText(ctx, data, "secret", "evil"))
		_, err = data.CreateContext(ctx, &contextv1.CreateContextRequest{ContextId: "evil"})
		refused(path+": CreateContext", err)
		_, err = data.DeleteContext(ctx, &contextv1.DeleteContextRequest{ContextId: "secret"})
		refused(path+": DeleteContext", err)
	}
	evilAs := func(tenant string) context.Context { return p.asTenant(ctx, "evil", tenant) }

	// 1. The router: evil's key naming the victim.
	tryData("router", evilAs("victim"), router)
	_, err := routerv1.NewRouterServiceClient(p.RouterConn()).Lookup(evilAs("evil"), &routerv1.LookupRequest{Tenant: "victim"})
	refused("router: Lookup of the victim", err)

	// 2. Lookup + direct: evil's own token is for evil only.
	evil, err := p.lookup(ctx, "evil")
	if err != nil {
		t.Fatal(err)
	}
	if evil.GetCell() != cellA {
		t.Fatalf("evil is on %s, want the victim's cell", evil.GetCell())
	}
	node := p.noCertConn(t, p.nodeAddr(cellA))
	direct := contextv1.NewContextServiceClient(node)
	tryData("direct, evil's token, x-cellplane-tenant victim", metadata.AppendToOutgoingContext(ctx, tenantmd.TokenKey, evil.GetToken(), tenantmd.TenantKey, "victim"), direct)
	tryData("direct, no token", metadata.AppendToOutgoingContext(ctx, tenantmd.TenantKey, "victim"), direct)
	tryData("direct, evil's API key as the credential", metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+p.keys["evil"], tenantmd.TenantKey, "victim"), direct)
	plain, err := dial.New(p.nodeAddr(cellA), dial.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	tryData("direct, plaintext", metadata.AppendToOutgoingContext(ctx, tenantmd.TenantKey, "victim"), contextv1.NewContextServiceClient(plain))
	// With its token and no tenant header, a call runs as evil: the
	// victim's context is not there.
	_, err = direct.Read(metadata.AppendToOutgoingContext(ctx, tenantmd.TokenKey, evil.GetToken()), &contextv1.ReadRequest{ContextId: "secret"})
	refused("direct, evil's token: the victim's context", err)

	// 3. MCP on the node and through the router, with evil's key. The
	// node's HTTP port serves mutual TLS to routers only: evil, with no
	// certificate, is refused at the handshake (https) or by the TLS port
	// (plain http: 400); the router authenticates evil and refuses the
	// victim's tenant.
	cas, err := pki.ReadCerts(p.caFile())
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	for _, c := range cas {
		pool.AddCert(c)
	}
	noCert := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS13}}}
	nodeHTTP := p.Cell(cellA).Nodes()[0].Info().HTTP
	for _, target := range []struct {
		base   string
		client *http.Client
		router bool
	}{
		{"https://" + nodeHTTP, noCert, false},
		{"http://" + nodeHTTP, http.DefaultClient, false},
		{p.MCPPublicURL(), http.DefaultClient, true},
	} {
		for _, hdr := range []string{"Authorization", "X-Api-Key"} {
			body := []byte(`{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"evil","version":"0"}}}`)
			req, err := http.NewRequestWithContext(ctx, http.MethodPost, target.base+"/t/victim/mcp", bytes.NewReader(body))
			if err != nil {
				t.Fatal(err)
			}
			v := p.keys["evil"]
			if hdr == "Authorization" {
				v = "Bearer " + v
			}
			req.Header.Set(hdr, v)
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Accept", "application/json, text/event-stream")
			resp, err := target.client.Do(req)
			switch {
			case err != nil && target.router:
				t.Fatal(err)
			case err != nil:
				continue // refused at the TLS handshake
			}
			_ = resp.Body.Close()
			ok := resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden
			if !target.router {
				ok = ok || resp.StatusCode == http.StatusBadRequest // plain HTTP to a TLS port
			}
			if !ok {
				t.Errorf("MCP %s/t/victim/mcp with evil's key (%s): status %d, want a refusal", target.base, hdr, resp.StatusCode)
			}
		}
	}

	// 4. Minting API keys: the control plane takes operators' certificates
	// only; the router forwards no admin API.
	for name, cfg := range map[string]dial.Config{
		"plaintext":                 {},
		"TLS without a certificate": {Credentials: credentials.NewTLS(pki.ClientTLSConfigFromCAs(cas, p.cfg.Name, nil, pki.ExpectKinds(pki.KindControlPlane)))},
	} {
		conn, err := dial.New(p.ControlPlaneAddr(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		_, err = cpv1.NewControlPlaneServiceClient(conn).CreateApiKey(metadata.AppendToOutgoingContext(cctx, "authorization", "Bearer "+p.keys["evil"]), &cpv1.CreateApiKeyRequest{Tenant: "victim"})
		cancel()
		_ = conn.Close()
		refused("control plane ("+name+"): CreateApiKey", err)
	}
	_, err = cpv1.NewControlPlaneServiceClient(p.RouterConn()).CreateApiKey(evilAs("victim"), &cpv1.CreateApiKeyRequest{Tenant: "victim"})
	refused("router: CreateApiKey", err)
	_, err = cpv1.NewControlPlaneServiceClient(p.RouterConn()).CreateApiKey(evilAs("evil"), &cpv1.CreateApiKeyRequest{Tenant: "victim"})
	refused("router as evil: CreateApiKey for the victim", err)

	// 5. Exporting or deleting: ReplicationService and CellService.
	for path, c := range map[string]struct {
		conn *grpc.ClientConn
		ctx  context.Context
	}{
		"router":            {p.RouterConn(), evilAs("victim")},
		"router as evil":    {p.RouterConn(), evilAs("evil")},
		"direct with token": {node, metadata.AppendToOutgoingContext(ctx, tenantmd.TokenKey, evil.GetToken())},
		"direct, plaintext": {plain, ctx},
		"direct, no token":  {node, ctx},
	} {
		exp, err := replicationv1.NewReplicationServiceClient(c.conn).ExportTenant(c.ctx, &replicationv1.ExportTenantRequest{Tenant: "victim"})
		if err == nil {
			_, err = exp.Recv()
		}
		refused(path+": ExportTenant", err)
		st, err := replicationv1.NewReplicationServiceClient(c.conn).StreamChanges(c.ctx, &replicationv1.StreamChangesRequest{Tenant: "victim"})
		if err == nil {
			_, err = st.Recv()
		}
		refused(path+": StreamChanges", err)
		_, err = cellv1.NewCellServiceClient(c.conn).DeleteTenant(c.ctx, &cellv1.DeleteTenantRequest{Tenant: "victim", RequestId: "evil", Force: true})
		refused(path+": DeleteTenant", err)
		_, err = cellv1.NewCellServiceClient(c.conn).ListChanges(c.ctx, &cellv1.ListChangesRequest{Tenant: "victim"})
		refused(path+": ListChanges", err)
	}

	if after := victimState(); after != before {
		t.Fatalf("the victim changed:\nbefore:\n%s\nafter:\n%s", before, after)
	}
}
