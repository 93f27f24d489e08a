package router_test

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"math/big"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/modelcontextprotocol/go-sdk/mcp"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/cellplane/cellplane/controlplane/catalog"
	"github.com/cellplane/cellplane/controlplane/topo"
	"github.com/cellplane/cellplane/controlplane/topo/topotest"
	"github.com/cellplane/cellplane/internal/auth"
	"github.com/cellplane/cellplane/internal/cperr"
	"github.com/cellplane/cellplane/internal/rpcerr"
	"github.com/cellplane/cellplane/internal/testutil"
	contextv1 "github.com/cellplane/cellplane/proto/cellplane/context/v1"
	cpv1 "github.com/cellplane/cellplane/proto/cellplane/controlplane/v1"
	routerv1 "github.com/cellplane/cellplane/proto/cellplane/router/v1"
	"github.com/cellplane/cellplane/router"
)

// jwtIssuer signs RS256 tokens with a key published in a JWKS file.
type jwtIssuer struct {
	key  *rsa.PrivateKey
	file string
}

func newIssuer(t *testing.T) *jwtIssuer {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	jwks := map[string]any{"keys": []map[string]string{{
		"kty": "RSA", "kid": "k1", "use": "sig", "alg": "RS256",
		"n": base64.RawURLEncoding.EncodeToString(key.N.Bytes()),
		"e": base64.RawURLEncoding.EncodeToString(big.NewInt(int64(key.E)).Bytes()),
	}}}
	b, _ := json.Marshal(jwks)
	file := filepath.Join(t.TempDir(), "jwks.json")
	if err := os.WriteFile(file, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return &jwtIssuer{key: key, file: file}
}

func (i *jwtIssuer) token(t *testing.T, tenant, audience string, ttl time.Duration) string {
	t.Helper()
	return i.tokenWith(t, tenant, audience, ttl, nil)
}

// tokenWith is token with extra claims.
func (i *jwtIssuer) tokenWith(t *testing.T, tenant, audience string, ttl time.Duration, extra jwt.MapClaims) string {
	t.Helper()
	claims := jwt.MapClaims{
		"iss": "https://issuer.test", "aud": audience, "sub": "agent-7", "tenant": tenant,
		"exp": time.Now().Add(ttl).Unix(), "iat": time.Now().Unix(),
	}
	for k, v := range extra {
		claims[k] = v
	}
	tok := jwt.NewWithClaims(jwt.SigningMethodRS256, claims)
	tok.Header["kid"] = "k1"
	s, err := tok.SignedString(i.key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// A router in JWT mode in front of a registered MCP worker pool: the
// placement, cell and worker are written to etcd as the control plane and
// a worker process would.
func TestJWTAndMCPThroughRouter(t *testing.T) {
	if testing.Short() {
		t.Skip("starts etcd and a router")
	}
	st := topotest.NewEtcdStore(t)
	ctx := testutil.Context(t, 60*time.Second)
	worker := mcpWorker(t)
	for key, val := range map[string][]byte{
		topo.CellKey("w1"):               catalog.Encode(&cpv1.Cell{Id: "w1", Region: "us-east", ExpectedMembers: 1, State: cpv1.CellState_CELL_STATE_ACTIVE}),
		topo.CellNodeKey("w1", "pool-1"): catalog.Encode(&cpv1.Node{Id: "pool-1", Cell: "w1", Role: cpv1.NodeRole_NODE_ROLE_WORKER, HttpAddr: worker}),
		topo.TenantKey("acme"):           catalog.Encode(&cpv1.Tenant{Id: "acme", HomeRegion: "us-east", Cell: "w1", State: cpv1.TenantState_TENANT_STATE_ACTIVE, Epoch: 1}),
	} {
		if _, err := st.Create(ctx, key, val); err != nil {
			t.Fatal(err)
		}
	}
	iss := newIssuer(t)
	cfg := router.DefaultConfig()
	cfg.Store = st
	cfg.GRPCListener, cfg.HTTPListener = testutil.Listen(t), testutil.Listen(t)
	cfg.Auth.Mode = auth.ModeJWT
	cfg.Auth.JWKSFile = iss.file
	cfg.Auth.Issuer = "https://issuer.test"
	cfg.Auth.Audience = "cellplane"
	cfg.Logger = testutil.Logger(t)
	r, err := router.Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	testutil.Eventually(t, 10*time.Second, func() error {
		if _, ok := r.Table().Lookup("acme"); !ok {
			return status.Error(codes.NotFound, "not routed yet")
		}
		return nil
	})

	// Health checks and reflection need no credentials.
	conn := dial(t, r.GRPCAddr())
	if hr, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{}); err != nil || hr.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health check without credentials: %v %v", hr, err)
	}
	// gRPC: the tenant comes from the token's claim.
	lookup := routerv1.NewRouterServiceClient(conn)
	good := iss.token(t, "acme", "cellplane", time.Minute)
	resp, err := lookup.Lookup(metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+good), &routerv1.LookupRequest{})
	if err != nil || resp.GetTenant() != "acme" || resp.GetCell() != "w1" {
		t.Fatalf("lookup with a good token: %v %v", resp, err)
	}
	for name, tok := range map[string]string{
		"wrong audience": iss.token(t, "acme", "someone-else", time.Minute),
		"expired":        iss.token(t, "acme", "cellplane", -time.Hour),
		"garbage":        "not.a.jwt",
	} {
		_, err := lookup.Lookup(metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+tok), &routerv1.LookupRequest{})
		if status.Code(err) != codes.Unauthenticated {
			t.Errorf("%s: %v, want UNAUTHENTICATED", name, err)
		}
	}
	_, err = lookup.Lookup(metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+iss.token(t, "globex", "cellplane", time.Minute)), &routerv1.LookupRequest{Tenant: "acme"})
	if status.Code(err) != codes.PermissionDenied {
		t.Fatalf("globex token asking for acme: %v, want PERMISSION_DENIED", err)
	}

	// A token's scope claim limits the ContextService methods it may call:
	// refused at the router, before anything is forwarded.
	readOnly := iss.tokenWith(t, "acme", "cellplane", time.Minute, jwt.MapClaims{"scope": "openid contexts:read memory:read"})
	_, err = contextv1.NewContextServiceClient(conn).PutMemory(metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+readOnly),
		&contextv1.PutMemoryRequest{Key: "k", Value: []byte("v")})
	var ce *cperr.Error
	if !errors.As(rpcerr.FromStatus(err), &ce) || ce.Reason != cperr.PermissionDenied || ce.Metadata[auth.MetaScope] != string(auth.ScopeMemoryWrite) {
		t.Fatalf("PutMemory with a read-only token: %v, want PERMISSION_DENIED naming memory:write", err)
	}
	// The audit log needs the admin scope, which the default scopes leave
	// out (a token without a scope claim gets them): refused here, and a
	// client's own admin mark is never forwarded (authFunc drops it).
	_, err = contextv1.NewContextServiceClient(conn).ReadAudit(metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+good, "x-cellplane-admin", "true"),
		&contextv1.ReadAuditRequest{})
	if !errors.As(rpcerr.FromStatus(err), &ce) || ce.Reason != cperr.PermissionDenied || ce.Metadata[auth.MetaScope] != string(auth.ScopeAdmin) {
		t.Fatalf("ReadAudit without the admin scope: %v, want PERMISSION_DENIED naming admin", err)
	}
	if _, err := lookup.Lookup(metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+readOnly), &routerv1.LookupRequest{}); err != nil {
		t.Fatalf("Lookup needs no scope: %v", err)
	}

	// MCP over HTTP through the router with the bearer token.
	hc := &http.Client{Transport: bearer{token: good}}
	client := mcp.NewClient(&mcp.Implementation{Name: "agent", Version: "v0"}, nil)
	cs, err := client.Connect(ctx, &mcp.StreamableClientTransport{Endpoint: "http://" + r.HTTPAddr() + "/t/acme/mcp", HTTPClient: hc, MaxRetries: -1}, nil)
	if err != nil {
		t.Fatal(err)
	}
	res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"text": "via router"}})
	if err != nil || res.IsError {
		t.Fatalf("MCP call through the router: %v %v", res, err)
	}
	if err := cs.Close(); err != nil {
		t.Fatal(err)
	}
	// Without a token: 401 with a Bearer challenge.
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+r.HTTPAddr()+"/t/acme/mcp", strings.NewReader("{}"))
	hresp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	hresp.Body.Close()
	if hresp.StatusCode != http.StatusUnauthorized || !strings.HasPrefix(hresp.Header.Get("WWW-Authenticate"), "Bearer") {
		t.Fatalf("no token: %d %q", hresp.StatusCode, hresp.Header.Get("WWW-Authenticate"))
	}
}

type bearer struct{ token string }

func (b bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+b.token)
	return http.DefaultTransport.RoundTrip(r)
}

type echoArgs struct {
	Text string `json:"text"`
}

// mcpWorker is a small real Streamable-HTTP MCP server at /t/<tenant>/mcp.
func mcpWorker(t *testing.T) string {
	t.Helper()
	server := mcp.NewServer(&mcp.Implementation{Name: "worker", Version: "v0"}, nil)
	mcp.AddTool(server, &mcp.Tool{Name: "echo", Description: "echo"},
		func(ctx context.Context, req *mcp.CallToolRequest, in echoArgs) (*mcp.CallToolResult, echoArgs, error) {
			return nil, in, nil
		})
	h := mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return server }, nil)
	mux := http.NewServeMux()
	mux.Handle("/t/{tenant}/mcp", h)
	l := testutil.Listen(t)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	})
	return l.Addr().String()
}
