package cells

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"github.com/cellplane/cellplane/internal/auth"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"

	"github.com/cellplane/cellplane/internal/cperr"
	"github.com/cellplane/cellplane/internal/pki"
	"github.com/cellplane/cellplane/internal/tenantmd"
	"github.com/cellplane/cellplane/internal/tenanttoken"
	"github.com/cellplane/cellplane/internal/testutil"
)

// tokenAuthz is an authoriser of node n1 of cell c1 (cluster "test")
// trusting one token key, and the CA that issued its certificate.
func tokenAuthz(t *testing.T) (*authorizer, *pki.CA, tenanttoken.SigningKey) {
	t.Helper()
	ca, err := pki.NewCA("test", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := pki.WriteCA(dir, ca, false); err != nil {
		t.Fatal(err)
	}
	self := pki.NodeIdentity("test", "eu", "c1", "n1")
	leaf, err := ca.Issue(pki.LeafRequest{Identity: self})
	if err != nil {
		t.Fatal(err)
	}
	if err := pki.WriteLeaf(dir, self.FileName(), leaf, false); err != nil {
		t.Fatal(err)
	}
	src, err := pki.NewSource(pki.DirConfig(dir, self.FileName()))
	if err != nil {
		t.Fatal(err)
	}
	key, pub, err := tenanttoken.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	return newAuthorizer(src, tenanttoken.Keys{key.ID: pub}, tenanttoken.DefaultConfig(), testutil.Logger(t)), ca, key
}

// callCtx is an incoming call from a peer presenting cert (nil: a TLS
// connection without a client certificate) with metadata kv.
func callCtx(t *testing.T, ca *pki.CA, cert *pki.Identity, kv ...string) context.Context {
	t.Helper()
	state := tls.ConnectionState{HandshakeComplete: true}
	if cert != nil {
		leaf, err := ca.Issue(pki.LeafRequest{Identity: *cert})
		if err != nil {
			t.Fatal(err)
		}
		state.PeerCertificates = []*x509.Certificate{leaf.Cert}
	}
	ctx := peer.NewContext(context.Background(), &peer.Peer{Addr: &net.TCPAddr{}, AuthInfo: credentials.TLSInfo{State: state}})
	return metadata.NewIncomingContext(ctx, metadata.Pairs(kv...))
}

func mint(t *testing.T, key tenanttoken.SigningKey, c tenanttoken.Claims, at time.Time) string {
	t.Helper()
	tok, _, err := tenanttoken.Mint(tenanttoken.DefaultConfig(), key, c, at)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// TestTokenRule covers the token rule of the cells' authoriser row by
// row: who is refused, with which reason, and the tenant and epoch an
// allowed call runs with.
func TestTokenRule(t *testing.T) {
	az, ca, key := tokenAuthz(t)
	otherKey, _, _ := tenanttoken.GenerateKey()
	now := time.Now()
	acme := tenanttoken.Claims{Tenant: "acme", Cell: "c1", Epoch: 3, Audience: "test"}
	tok := mint(t, key, acme, now)
	victimTok := mint(t, key, tenanttoken.Claims{Tenant: "victim", Cell: "c1", Epoch: 1, Audience: "test"}, now)
	otherCell := mint(t, key, tenanttoken.Claims{Tenant: "acme", Cell: "c2", Epoch: 3, Audience: "test"}, now)
	otherCluster := mint(t, key, tenanttoken.Claims{Tenant: "acme", Cell: "c1", Epoch: 3, Audience: "prod"}, now)
	expired := mint(t, key, acme, now.Add(-tenanttoken.DefaultTTL-tenanttoken.DefaultClockSkew-time.Second))
	unknownKey := mint(t, otherKey, acme, now)
	clientAcme := pki.ClientIdentity("test", "acme")
	operator := pki.OperatorIdentity("test", pki.RoleAdmin, "alice")
	const (
		appendM = "/cellplane.context.v1.ContextService/Append"
		watchM  = "/cellplane.context.v1.ContextService/Watch"
		deleteM = "/cellplane.cell.v1.CellService/DeleteTenant"
		exportM = "/cellplane.replication.v1.ReplicationService/ExportTenant"
		healthM = "/grpc.health.v1.Health/Check"
	)
	tests := []struct {
		name   string
		method string
		cert   *pki.Identity
		md     []string
		want   cperr.Reason // "" allowed
		sent   error        // a tenanttoken sentinel the refusal wraps
	}{
		{"no certificate, no token", appendM, nil, []string{tenantmd.TenantKey, "acme"}, cperr.Unauthenticated, nil},
		{"token", appendM, nil, []string{tenantmd.TokenKey, tok}, "", nil},
		{"token with its tenant and epoch", appendM, nil, []string{tenantmd.TokenKey, tok, tenantmd.TenantKey, "acme", tenantmd.EpochKey, "3"}, "", nil},
		{"token on a stream", watchM, nil, []string{tenantmd.TokenKey, tok}, "", nil},
		{"forged tenant header", appendM, nil, []string{tenantmd.TokenKey, tok, tenantmd.TenantKey, "victim"}, cperr.PermissionDenied, nil},
		{"two tenant headers", appendM, nil, []string{tenantmd.TokenKey, tok, tenantmd.TenantKey, "acme", tenantmd.TenantKey, "victim"}, cperr.PermissionDenied, nil},
		{"another epoch", appendM, nil, []string{tenantmd.TokenKey, tok, tenantmd.EpochKey, "2"}, cperr.PermissionDenied, nil},
		{"token for another cell", appendM, nil, []string{tenantmd.TokenKey, otherCell}, cperr.PermissionDenied, nil},
		{"token for another cluster", appendM, nil, []string{tenantmd.TokenKey, otherCluster}, cperr.Unauthenticated, tenanttoken.ErrAudience},
		{"expired token", appendM, nil, []string{tenantmd.TokenKey, expired}, cperr.Unauthenticated, tenanttoken.ErrExpired},
		{"token signed by an unknown key", appendM, nil, []string{tenantmd.TokenKey, unknownKey}, cperr.Unauthenticated, tenanttoken.ErrUnknownKey},
		{"garbage token", appendM, nil, []string{tenantmd.TokenKey, "cpt1.x.y.z"}, cperr.Unauthenticated, tenanttoken.ErrMalformed},
		{"two tokens", appendM, nil, []string{tenantmd.TokenKey, tok, tenantmd.TokenKey, tok}, cperr.Unauthenticated, nil},
		{"token on CellService", deleteM, nil, []string{tenantmd.TokenKey, tok}, cperr.Unauthenticated, nil},
		{"token on ReplicationService", exportM, nil, []string{tenantmd.TokenKey, tok}, cperr.Unauthenticated, nil},
		{"token on health", healthM, nil, []string{tenantmd.TokenKey, tok}, cperr.Unauthenticated, nil},
		{"client certificate and its tenant's token", appendM, &clientAcme, []string{tenantmd.TokenKey, tok}, "", nil},
		{"client certificate and another tenant's token", appendM, &clientAcme, []string{tenantmd.TokenKey, victimTok, tenantmd.TenantKey, "victim"}, cperr.PermissionDenied, nil},
		{"client certificate, no token", appendM, &clientAcme, []string{tenantmd.TenantKey, "acme"}, cperr.PermissionDenied, nil},
		{"operator certificate with a token", appendM, &operator, []string{tenantmd.TokenKey, tok}, cperr.PermissionDenied, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, err := az.check(callCtx(t, ca, tt.cert, tt.md...), tt.method, nil)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				tenant, epoch, err := tenantmd.FromIncoming(ctx)
				if err != nil || tenant != "acme" || epoch != 3 {
					t.Fatalf("runs as %q at epoch %d (%v), want acme at 3", tenant, epoch, err)
				}
				if md, _ := metadata.FromIncomingContext(ctx); len(md.Get(tenantmd.TokenKey)) != 0 {
					t.Fatal("the token is passed on to the handler")
				}
				return
			}
			if got := reasonOf(err); got != tt.want {
				t.Fatalf("err %v (reason %s), want %s", err, got, tt.want)
			}
			if tt.sent != nil && !errors.Is(err, tt.sent) {
				t.Fatalf("err %v does not wrap %v", err, tt.sent)
			}
		})
	}

	// A token call marked forwarded loses the mark (only a node of the
	// cell forwards).
	ctx, err := az.check(callCtx(t, ca, nil, tenantmd.TokenKey, tok, tenantmd.ForwardedKey, "true"), appendM, nil)
	if err != nil || tenantmd.Forwarded(ctx) {
		t.Fatalf("forwarded token call: err %v, forwarded %v", err, tenantmd.Forwarded(ctx))
	}

	// The principal is the token's: a direct caller's own value is
	// dropped, a token without one acts as the tenant.
	withP := acme
	withP.Principal = "key:alice"
	pTok := mint(t, key, withP, now)
	for _, tc := range []struct {
		tok, sent, want string
	}{
		{pTok, "", "key:alice"},
		{pTok, "key:mallory", "key:alice"},
		{tok, "key:mallory", ""},
	} {
		md := []string{tenantmd.TokenKey, tc.tok}
		if tc.sent != "" {
			md = append(md, tenantmd.PrincipalKey, tc.sent)
		}
		ctx, err := az.check(callCtx(t, ca, nil, md...), appendM, nil)
		if err != nil {
			t.Fatal(err)
		}
		if got, _ := tenantmd.Caller(ctx); got != tc.want {
			t.Errorf("token call sending principal %q runs as %q, want %q", tc.sent, got, tc.want)
		}
	}
	// The scopes are the token's (the default ones), never the caller's
	// claim, and a call cannot drop them to pass as a component's.
	for _, sent := range []string{"", "admin", "contexts:read memory:read memory:write contexts:write admin"} {
		md := []string{tenantmd.TokenKey, pTok}
		if sent != "" {
			md = append(md, tenantmd.ScopesKey, sent)
		}
		ctx, err := az.check(callCtx(t, ca, nil, md...), appendM, nil)
		if err != nil {
			t.Fatal(err)
		}
		if got, ok := tenantmd.CallerScopes(ctx); !ok || got != auth.DefaultScopes.String() {
			t.Errorf("token call sending scopes %q runs with %q (%v), want the default scopes", sent, got, ok)
		}
	}

	// A node without a registry has no keys: every token is refused.
	az.keys = nil
	if _, err := az.check(callCtx(t, ca, nil, tenantmd.TokenKey, tok), appendM, nil); reasonOf(err) != cperr.Unauthenticated {
		t.Fatalf("no keys: %v, want UNAUTHENTICATED", err)
	}
}

// reasonOf is the reason of the cperr error err wraps (errors.As, as
// rpcerr maps it: a token refusal wraps a sentinel and a cperr error).
func reasonOf(err error) cperr.Reason {
	var ce *cperr.Error
	if errors.As(err, &ce) {
		return ce.Reason
	}
	return ""
}
