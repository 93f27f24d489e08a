package platform_test

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"

	"github.com/cellplane/cellplane/client"
	"github.com/cellplane/cellplane/controlplane/catalog"
	"github.com/cellplane/cellplane/controlplane/tokenkeys"
	"github.com/cellplane/cellplane/internal/cperr"
	"github.com/cellplane/cellplane/internal/dial"
	"github.com/cellplane/cellplane/internal/pki"
	"github.com/cellplane/cellplane/internal/rpcerr"
	"github.com/cellplane/cellplane/internal/tenantmd"
	"github.com/cellplane/cellplane/internal/tenanttoken"
	"github.com/cellplane/cellplane/internal/testutil"
	"github.com/cellplane/cellplane/platform"
	cellv1 "github.com/cellplane/cellplane/proto/cellplane/cell/v1"
	contextv1 "github.com/cellplane/cellplane/proto/cellplane/context/v1"
	cpv1 "github.com/cellplane/cellplane/proto/cellplane/controlplane/v1"
	replicationv1 "github.com/cellplane/cellplane/proto/cellplane/replication/v1"
	routerv1 "github.com/cellplane/cellplane/proto/cellplane/router/v1"
)

// tokenPlatform is a platform with MutualTLS and API keys: 1 region × 2
// cells (us-east-a, us-east-b) × 1 node.
type tokenPlatform struct {
	*platform.Platform
	cfg  platform.Config
	cas  []*pki.CA
	keys map[string]string // tenant → API key secret
}

const (
	cellA = "us-east-a"
	cellB = "us-east-b"
)

func startTokenPlatform(t *testing.T, mutate func(*platform.Config)) *tokenPlatform {
	t.Helper()
	cfg := platform.DefaultConfig()
	cfg.Name = "tok"
	cfg.DataDir = t.TempDir()
	cfg.Regions, cfg.CellsPerRegion, cfg.NodesPerCell = []string{"us-east"}, 2, 1
	cfg.MutualTLS = true
	cfg.Auth = platform.AuthAPIKey
	cfg.Node.RegistryTTL = time.Second
	cfg.Controller.RetryMin, cfg.Controller.RetryMax = 10*time.Millisecond, 200*time.Millisecond
	cfg.Controller.Moves.CleanupGrace = 200 * time.Millisecond
	cfg.ShutdownTimeout = 5 * time.Second
	cfg.Logger = testutil.Logger(t)
	cfg.EtcdUnsafeNoFsync = true
	if mutate != nil {
		mutate(&cfg)
	}
	ctx := testutil.Context(t, 2*time.Minute)
	p, err := platform.Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return &tokenPlatform{Platform: p, cfg: cfg, keys: map[string]string{}}
}

// tenant creates a tenant on cell and an API key for it.
func (p *tokenPlatform) tenant(t *testing.T, ctx context.Context, id, cell string) {
	t.Helper()
	if _, err := p.Admin().CreateTenant(ctx, &cpv1.CreateTenantRequest{Id: id, HomeRegion: "us-east", Cell: cell}); err != nil {
		t.Fatalf("create tenant %s: %v", id, err)
	}
	k, err := p.Admin().CreateApiKey(ctx, &cpv1.CreateApiKeyRequest{Tenant: id})
	if err != nil {
		t.Fatal(err)
	}
	p.keys[id] = k.GetSecret()
	// Until the router knows the tenant and its key.
	testutil.Eventually(t, 30*time.Second, func() error {
		_, err := p.lookup(ctx, id)
		return err
	})
}

// asTenant is ctx with tenant's API key (and tenant header) for the router.
func (p *tokenPlatform) asTenant(ctx context.Context, keyOf, tenant string) context.Context {
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+p.keys[keyOf], tenantmd.TenantKey, tenant)
}

// lookup is RouterService.Lookup with tenant's own key; it fails until the
// answer carries a token.
func (p *tokenPlatform) lookup(ctx context.Context, tenant string) (*routerv1.LookupResponse, error) {
	resp, err := routerv1.NewRouterServiceClient(p.RouterConn()).Lookup(p.asTenant(ctx, tenant, tenant), &routerv1.LookupRequest{})
	if err != nil {
		return nil, err
	}
	if resp.GetToken() == "" {
		return nil, errors.New("no token yet")
	}
	return resp, nil
}

// caFile is the cluster CA bundle.
func (p *tokenPlatform) caFile() string { return filepath.Join(p.CertsDir(), pki.CACertFile) }

// noCertConn is a TLS connection to a node that presents no certificate
// and accepts only a node identity of the cluster.
func (p *tokenPlatform) noCertConn(t *testing.T, addr string) *grpc.ClientConn {
	t.Helper()
	cas, err := pki.ReadCerts(p.caFile())
	if err != nil {
		t.Fatal(err)
	}
	conn, err := dial.New(addr, dial.Config{Credentials: credentials.NewTLS(pki.ClientTLSConfigFromCAs(cas, p.cfg.Name, nil, pki.ExpectKinds(pki.KindNode)))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

func (p *tokenPlatform) nodeAddr(cell string) string { return p.Cell(cell).Nodes()[0].Info().GRPC }

// state is what every tenant holds, read through the router with its
// own key: its contexts and their entries.
func (p *tokenPlatform) state(t *testing.T, ctx context.Context) string {
	t.Helper()
	var b strings.Builder
	data := contextv1.NewContextServiceClient(p.RouterConn())
	tenants := make([]string, 0, len(p.keys))
	for tn := range p.keys {
		tenants = append(tenants, tn)
	}
	slices.Sort(tenants)
	for _, tn := range tenants {
		tctx := p.asTenant(ctx, tn, tn)
		var ls *contextv1.ListContextsResponse
		testutil.Eventually(t, 20*time.Second, func() (err error) {
			ls, err = data.ListContexts(tctx, &contextv1.ListContextsRequest{})
			return err
		})
		for _, c := range ls.GetContexts() {
			r, err := data.Read(tctx, &contextv1.ReadRequest{ContextId: c.GetContextId()})
			if err != nil {
				t.Fatalf("read %s/%s: %v", tn, c.GetContextId(), err)
			}
			fmt.Fprintf(&b, "%s/%s:", tn, c.GetContextId())
			for _, e := range r.GetEntries() {
				fmt.Fprintf(&b, " %d=%s", e.GetSeq(), e.GetText())
			}
			b.WriteString("\n")
		}
	}
	return b.String()
}

// writeClientConfig writes a CELLPLANE_CONFIG-style file for tenant: the
// router, the tenant, its API key and the cluster CA for the cells.
func (p *tokenPlatform) writeClientConfig(t *testing.T, tenant string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "client.yaml")
	body := fmt.Sprintf("router: %s\ntenant: %s\napiKey: %s\ncellCA: %s\n", p.RouterAddr(), tenant, p.keys[tenant], p.caFile())
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// callCounter counts ContextService calls by target (router or a node).
type callCounter struct {
	mu sync.Mutex
	n  map[string]int
}

func (c *callCounter) intercept(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, inv grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	err := inv(ctx, method, req, reply, cc, opts...)
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case strings.HasPrefix(method, "/cellplane.context.v1.ContextService/"):
		c.n[cc.Target()]++
	case method == routerv1.RouterService_Lookup_FullMethodName:
		c.n["lookup"]++
		if r, ok := reply.(*routerv1.LookupResponse); ok && err == nil && r.GetToken() == "" {
			c.n["lookup without token"]++
		}
	}
	return err
}

func (c *callCounter) get(target string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[target]
}

// newClient is the smart client of tenant from its configuration file,
// counting its data calls by target.
func (p *tokenPlatform) newClient(t *testing.T, tenant string) (*client.Client, *callCounter) {
	t.Helper()
	cf, err := client.LoadConfigFile(p.writeClientConfig(t, tenant))
	if err != nil {
		t.Fatal(err)
	}
	cc, err := cf.ClientConfig()
	if err != nil {
		t.Fatal(err)
	}
	if len(cc.CellCAs) == 0 || !cc.Direct {
		t.Fatalf("client config without the direct path: %+v", cc)
	}
	cnt := &callCounter{n: map[string]int{}}
	cc.DialOptions = append(cc.DialOptions, grpc.WithChainUnaryInterceptor(cnt.intercept))
	cc.Logger = testutil.Logger(t)
	c, err := client.New(cc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c, cnt
}

func appendText(ctx context.Context, cs contextv1.ContextServiceClient, ctxID, text string) error {
	_, err := cs.Append(ctx, &contextv1.AppendRequest{ContextId: ctxID, Entries: []*contextv1.Entry{{Role: "user", Content: &contextv1.Entry_Text{Text: text}}}})
	return err
}

// signingKey reads the current tenant-token signing key from etcd (what
// only the control plane and routers can read), to forge tokens.
func (p *tokenPlatform) signingKey(t *testing.T, ctx context.Context) tenanttoken.SigningKey {
	t.Helper()
	ring := tokenkeys.StartRing(ctx, p.ControlPlane().Store(), tokenkeys.RingConfig{Private: true})
	defer ring.Close()
	var key tenanttoken.SigningKey
	testutil.Eventually(t, 10*time.Second, func() error {
		var ok bool
		if key, ok = ring.Signer(time.Now()); !ok {
			return errors.New("no signing key")
		}
		return nil
	})
	return key
}

func reason(err error) cperr.Reason { return cperr.ReasonOf(rpcerr.FromStatus(err)) }

// TestTenantTokensDirectPath: with mutual TLS on every internal hop and
// API keys at the router, the smart client configured by a
// CELLPLANE_CONFIG-style file (router, tenant, apiKey, cellCA) writes and
// reads directly at its cell with the router-minted token; cells refuse,
// with nothing written, a caller without a token, a token for another
// tenant (a forged x-cellplane-tenant), an expired token, a token of an
// unknown key, a token for another cell, a token on CellService and
// ReplicationService, and a token of an old epoch after moves; the
// client follows the tenant across the moves.
func TestTenantTokensDirectPath(t *testing.T) {
	p := startTokenPlatform(t, nil)
	ctx := testutil.Context(t, 3*time.Minute)
	p.tenant(t, ctx, "acme", cellA)
	p.tenant(t, ctx, "victim", cellA)
	router := contextv1.NewContextServiceClient(p.RouterConn())
	if _, err := router.CreateContext(p.asTenant(ctx, "victim", "victim"), &contextv1.CreateContextRequest{ContextId: "secret"}); err != nil {
		t.Fatal(err)
	}
	if err := appendText(p.asTenant(ctx, "victim", "victim"), router, "secret", "victim's data"); err != nil {
		t.Fatal(err)
	}

	// The smart client: direct, over TLS, with its token.
	c, cnt := p.newClient(t, "acme")
	cs := c.Context()
	if _, err := cs.CreateContext(ctx, &contextv1.CreateContextRequest{ContextId: "chat"}); err != nil {
		t.Fatalf("CreateContext on the direct path: %v", err)
	}
	for i := range 3 {
		if err := appendText(ctx, cs, "chat", fmt.Sprintf("m%d", i)); err != nil {
			t.Fatalf("Append on the direct path: %v", err)
		}
	}
	got, err := cs.Read(ctx, &contextv1.ReadRequest{ContextId: "chat"})
	if err != nil || len(got.GetEntries()) != 3 {
		t.Fatalf("Read on the direct path: %v %v", got, err)
	}
	// All direct (a last attempt through the router after transient cell
	// errors on a loaded machine would be legitimate, once).
	if n := cnt.get(p.RouterAddr()); n > 1 {
		t.Fatalf("%d data calls went through the router, want them direct", n)
	}
	if n := cnt.get(p.nodeAddr(cellA)); n < 4 {
		t.Fatalf("%d data calls reached %s's node directly, want 5", n, cellA)
	}

	// Refusals at the cell, state compared.
	before := p.state(t, ctx)
	acme, err := p.lookup(ctx, "acme")
	if err != nil {
		t.Fatal(err)
	}
	key := p.signingKey(t, ctx)
	forge := func(c tenanttoken.Claims, at time.Time, k tenanttoken.SigningKey) string {
		tok, _, err := tenanttoken.Mint(tenanttoken.DefaultConfig(), k, c, at)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	_, stranger, _ := ed25519.GenerateKey(nil)
	unknown := tenanttoken.SigningKey{ID: "stranger", Private: stranger}
	claims := tenanttoken.Claims{Tenant: "acme", Cell: cellA, Epoch: acme.GetEpoch(), Audience: p.cfg.Name}
	connA := p.noCertConn(t, p.nodeAddr(cellA))
	connB := p.noCertConn(t, p.nodeAddr(cellB))
	for _, tc := range []struct {
		name   string
		conn   *grpc.ClientConn
		md     []string
		want   cperr.Reason
		target string // the tenant the call tries to reach
	}{
		{"no certificate, no token", connA, []string{tenantmd.TenantKey, "victim"}, cperr.Unauthenticated, "victim"},
		{"acme's token, forged x-cellplane-tenant", connA, []string{tenantmd.TokenKey, acme.GetToken(), tenantmd.TenantKey, "victim"}, cperr.PermissionDenied, "victim"},
		{"expired token", connA, []string{tenantmd.TokenKey, forge(claims, time.Now().Add(-time.Hour), key)}, cperr.Unauthenticated, "acme"},
		{"token of an unknown key", connA, []string{tenantmd.TokenKey, forge(claims, time.Now(), unknown)}, cperr.Unauthenticated, "acme"},
		{"token for another cell", connB, []string{tenantmd.TokenKey, acme.GetToken()}, cperr.PermissionDenied, "acme"},
		{"token for another cluster", connA, []string{tenantmd.TokenKey, forge(tenanttoken.Claims{Tenant: "acme", Cell: cellA, Epoch: acme.GetEpoch(), Audience: "other"}, time.Now(), key)}, cperr.Unauthenticated, "acme"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cctx := metadata.AppendToOutgoingContext(ctx, tc.md...)
			data := contextv1.NewContextServiceClient(tc.conn)
			_, err := data.CreateContext(cctx, &contextv1.CreateContextRequest{ContextId: "evil"})
			if reason(err) != tc.want {
				t.Fatalf("CreateContext: %v, want %s", err, tc.want)
			}
			if err := appendText(cctx, data, "secret", "evil"); reason(err) != tc.want {
				t.Fatalf("Append: %v, want %s", err, tc.want)
			}
			if _, err := data.DeleteContext(cctx, &contextv1.DeleteContextRequest{ContextId: "secret"}); reason(err) != tc.want {
				t.Fatalf("DeleteContext: %v, want %s", err, tc.want)
			}
			if _, err := data.Read(cctx, &contextv1.ReadRequest{ContextId: "secret"}); reason(err) != tc.want {
				t.Fatalf("Read: %v, want %s", err, tc.want)
			}
		})
	}
	// A valid token opens ContextService only.
	tctx := metadata.AppendToOutgoingContext(ctx, tenantmd.TokenKey, acme.GetToken())
	if _, err := cellv1.NewCellServiceClient(connA).DeleteTenant(tctx, &cellv1.DeleteTenantRequest{Tenant: "victim", RequestId: "x", Force: true}); reason(err) != cperr.Unauthenticated {
		t.Fatalf("DeleteTenant with a token: %v", err)
	}
	if _, err := cellv1.NewCellServiceClient(connA).SetTenant(tctx, &cellv1.SetTenantRequest{Tenant: "acme", Role: cellv1.Role_ROLE_FENCED, Epoch: 9, RequestId: "y"}); reason(err) != cperr.Unauthenticated {
		t.Fatalf("SetTenant with a token: %v", err)
	}
	exp, err := replicationv1.NewReplicationServiceClient(connA).ExportTenant(tctx, &replicationv1.ExportTenantRequest{Tenant: "victim"})
	if err == nil {
		_, err = exp.Recv()
	}
	if reason(err) != cperr.Unauthenticated {
		t.Fatalf("ExportTenant with a token: %v", err)
	}
	if after := p.state(t, ctx); after != before {
		t.Fatalf("state changed by refused calls:\nbefore:\n%s\nafter:\n%s", before, after)
	}

	// The token carries the key's principal: memory written on the direct
	// path is the key's own, read back through the router with the key
	// (not the tenant's shared memory).
	if _, err := contextv1.NewContextServiceClient(connA).PutMemory(tctx, &contextv1.PutMemoryRequest{Key: "direct-k", Value: []byte("mine"), RequestId: "direct-put"}); err != nil {
		t.Fatalf("PutMemory with a token: %v", err)
	}
	viaRouter := contextv1.NewContextServiceClient(p.RouterConn())
	if got, err := viaRouter.GetMemory(p.asTenant(ctx, "acme", "acme"), &contextv1.GetMemoryRequest{Key: "direct-k"}); err != nil || string(got.GetItem().GetValue()) != "mine" {
		t.Fatalf("the direct write read through the router: %v, %v", got, err)
	}
	if _, err := viaRouter.GetMemory(p.asTenant(ctx, "acme", "acme"), &contextv1.GetMemoryRequest{Key: "direct-k", Scope: contextv1.MemoryScope_MEMORY_SCOPE_TENANT}); reason(err) != cperr.KeyNotFound {
		t.Fatalf("the direct write in the tenant's shared memory: %v", err)
	}

	// Moves: acme goes to cell B and back. The first token (cell A,
	// epoch E) is then refused at B (another cell) and at A (an old
	// epoch), and the client follows without failing.
	move := func(to string) {
		t.Helper()
		resp, err := p.Admin().StartMove(ctx, &cpv1.StartMoveRequest{Tenant: "acme", TargetCell: to})
		if err != nil {
			t.Fatal(err)
		}
		testutil.Eventually(t, time.Minute, func() error {
			m, err := p.Admin().GetMove(ctx, &cpv1.GetMoveRequest{Id: resp.GetMove().GetId()})
			if err != nil {
				return err
			}
			if s := m.GetMove().GetState(); s != cpv1.MoveState_MOVE_STATE_DONE {
				return fmt.Errorf("move %s", s)
			}
			return nil
		})
	}
	old := acme.GetToken()
	move(cellB)
	if err := appendText(ctx, cs, "chat", "after the move"); err != nil {
		t.Fatalf("Append after the move: %v", err)
	}
	if n := cnt.get(p.nodeAddr(cellB)); n == 0 {
		t.Fatal("no direct call reached the new cell")
	}
	octx := metadata.AppendToOutgoingContext(ctx, tenantmd.TokenKey, old)
	if err := appendText(octx, contextv1.NewContextServiceClient(connB), "chat", "old token"); reason(err) != cperr.PermissionDenied {
		t.Fatalf("old token at the new cell: %v, want PERMISSION_DENIED", err)
	}
	move(cellA)
	if err := appendText(octx, contextv1.NewContextServiceClient(connA), "chat", "old token"); reason(err) != cperr.StaleEpoch {
		t.Fatalf("old token at its cell after two moves: %v, want STALE_EPOCH", err)
	}
	if err := appendText(ctx, cs, "chat", "back home"); err != nil {
		t.Fatalf("Append after moving back: %v", err)
	}
	got, err = router.Read(p.asTenant(ctx, "acme", "acme"), &contextv1.ReadRequest{ContextId: "chat"})
	if err != nil {
		t.Fatal(err)
	}
	var texts []string
	for _, e := range got.GetEntries() {
		texts = append(texts, e.GetText())
	}
	if want := []string{"m0", "m1", "m2", "after the move", "back home"}; !slices.Equal(texts, want) {
		t.Fatalf("acme's chat %v, want %v (no write of a refused token)", texts, want)
	}
}

// TestTenantTokenKeyRotation: the control plane rotates the signing key
// every 2 s and drops a retired public key 300 ms after its successor took
// over (far below a token's lifetime, so the client's tokens die with
// their key) while the smart client writes without pause: no call fails,
// the client looks up again about once per rotation.
func TestTenantTokenKeyRotation(t *testing.T) {
	p := startTokenPlatform(t, func(cfg *platform.Config) {
		cfg.Controller.TokenKeys = tokenkeys.RotationConfig{Period: 2 * time.Second, Lead: 500 * time.Millisecond,
			Retain: 300 * time.Millisecond, Interval: 100 * time.Millisecond}
	})
	ctx := testutil.Context(t, 3*time.Minute)
	p.tenant(t, ctx, "acme", cellA)
	c, cnt := p.newClient(t, "acme")
	cs := c.Context()
	if _, err := cs.CreateContext(ctx, &contextv1.CreateContextRequest{ContextId: "chat"}); err != nil {
		t.Fatal(err)
	}
	ring := tokenkeys.StartRing(ctx, p.ControlPlane().Store(), tokenkeys.RingConfig{})
	defer ring.Close()
	seen := map[string]bool{}
	writes := 0
	pace := time.NewTicker(5 * time.Millisecond) // a steady writer, not a flood
	defer pace.Stop()
	for len(seen) < 4 {
		<-pace.C
		if err := appendText(ctx, cs, "chat", fmt.Sprintf("w%d", writes)); err != nil {
			t.Fatalf("write %d during key rotation: %v (keys seen %d)", writes, err, len(seen))
		}
		writes++
		for _, k := range ring.PublicKeyIDs() {
			seen[k] = true
		}
		if ctx.Err() != nil {
			t.Fatal(ctx.Err())
		}
	}
	// The rotation leaves no gap: every Lookup answer carried a token.
	// (A write may still go through the router as the last attempt after
	// transient cell errors on a loaded machine, which is not a token
	// matter: the bulk must be direct.)
	if n := cnt.get("lookup without token"); n != 0 {
		t.Fatalf("%d Lookup answers without a token during the rotation", n)
	}
	if n := cnt.get(p.RouterAddr()); n > writes/100 {
		t.Fatalf("%d of %d writes went through the router", n, writes)
	}
	pubs, _, err := catalog.ListTokenPublicKeys(ctx, p.ControlPlane().Store())
	if err != nil {
		t.Fatal(err)
	}
	if len(pubs) > 3 {
		t.Fatalf("%d public keys kept, want retired ones deleted", len(pubs))
	}
	got, err := cs.GetContext(ctx, &contextv1.GetContextRequest{ContextId: "chat"})
	if err != nil || got.GetContext().GetEntryCount() != uint64(writes) {
		t.Fatalf("context has %d entries (%v), want %d", got.GetContext().GetEntryCount(), err, writes)
	}
	// The tokens died with their keys: the client looked up again after
	// each rotation, once.
	if n := cnt.get("lookup"); n < 3 || n > 2*len(seen)+2 {
		t.Fatalf("%d lookups over %d keys: want one per rotation", n, len(seen))
	}
	t.Logf("%d writes over %d keys, %d lookups, %d writes through the router", writes, len(seen), cnt.get("lookup"), cnt.get(p.RouterAddr()))
}

// TestPlaintextClientGoesThroughTheRouter: a smart client with its
// default configuration (Direct, no cell CA) against cells serving mutual
// TLS sees a token in the Lookup answer and sends every call through the
// router instead of trying plaintext direct calls the cells would refuse.
func TestPlaintextClientGoesThroughTheRouter(t *testing.T) {
	p := startTokenPlatform(t, nil)
	ctx := testutil.Context(t, 2*time.Minute)
	p.tenant(t, ctx, "acme", cellA)

	cfg := client.DefaultConfig()
	cfg.Router, cfg.Tenant, cfg.APIKey = p.RouterAddr(), "acme", p.keys["acme"]
	cnt := &callCounter{n: map[string]int{}}
	cfg.DialOptions = append(cfg.DialOptions, grpc.WithChainUnaryInterceptor(cnt.intercept))
	cfg.Logger = testutil.Logger(t)
	c, err := client.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	cs := c.Context()
	if _, err := cs.CreateContext(ctx, &contextv1.CreateContextRequest{ContextId: "chat"}); err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		if err := appendText(ctx, cs, "chat", fmt.Sprintf("m%d", i)); err != nil {
			t.Fatalf("Append %d: %v", i, err)
		}
	}
	if got, err := cs.Read(ctx, &contextv1.ReadRequest{ContextId: "chat"}); err != nil || len(got.GetEntries()) != 5 {
		t.Fatalf("Read: %v %v", got, err)
	}
	if n := cnt.get(p.RouterAddr()); n != 7 {
		t.Fatalf("%d data calls through the router, want all 7", n)
	}
	for _, node := range p.Nodes() {
		if n := cnt.get(node.Info().GRPC); n != 0 {
			t.Fatalf("%d plaintext direct calls to %s, want none", n, node.Info().GRPC)
		}
	}
}
