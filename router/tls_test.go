package router_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"

	"github.com/cellplane/cellplane/client"
	"github.com/cellplane/cellplane/controlplane/catalog"
	"github.com/cellplane/cellplane/controlplane/topo"
	"github.com/cellplane/cellplane/controlplane/topo/memtopo"
	"github.com/cellplane/cellplane/internal/auth"
	"github.com/cellplane/cellplane/internal/pki/pkitest"
	"github.com/cellplane/cellplane/internal/testutil"
	contextv1 "github.com/cellplane/cellplane/proto/cellplane/context/v1"
	cpv1 "github.com/cellplane/cellplane/proto/cellplane/controlplane/v1"
	"github.com/cellplane/cellplane/router"
)

// frontCert is a router front-door certificate on disk, from a plain CA
// (no cellplane identity: a public CA's certificate must do).
type frontCert struct {
	ca                *pkitest.ServerCA
	certFile, keyFile string
	leaf              *x509.Certificate
}

func newFrontCert(t *testing.T) *frontCert {
	t.Helper()
	dir := t.TempDir()
	f := &frontCert{ca: pkitest.NewServerCA(t), certFile: filepath.Join(dir, "front.crt"), keyFile: filepath.Join(dir, "front.key")}
	f.rotate(t)
	return f
}

// rotate replaces the files with a new certificate of the same CA.
func (f *frontCert) rotate(t *testing.T) {
	t.Helper()
	f.leaf = f.ca.Write(t, f.certFile, f.keyFile, "127.0.0.1", "localhost")
}

// withTLS returns a router configuration hook serving f.
func (f *frontCert) withTLS(mod func(*router.Config)) func(*router.Config) {
	return func(c *router.Config) {
		c.TLS.CertFile, c.TLS.KeyFile = f.certFile, f.keyFile
		c.TLS.ReloadInterval = 10 * time.Millisecond
		if mod != nil {
			mod(c)
		}
	}
}

func (f *frontCert) clientTLS() *tls.Config { return &tls.Config{RootCAs: f.ca.Pool()} }

func (f *frontCert) dialTLS(t *testing.T, addr string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(f.clientTLS())))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

// httpsClient trusts f's CA and speaks HTTP/2 when the server offers it.
func (f *frontCert) httpsClient() *http.Client {
	return &http.Client{Transport: &http.Transport{TLSClientConfig: f.clientTLS(), ForceAttemptHTTP2: true}}
}

// cellAppends counts the Append calls the platform's cell nodes have
// received (started, whatever their outcome).
func (p *platform) cellAppends(t *testing.T) float64 {
	t.Helper()
	var n float64
	for _, node := range p.nodes {
		n += testutil.MetricSum(t, http.DefaultClient, "http://"+node.HTTPAddr()+"/metrics", "grpc_server_started_total", `grpc_method="Append"`)
	}
	return n
}

func appendReq(ctxID, text string) *contextv1.AppendRequest {
	return &contextv1.AppendRequest{ContextId: ctxID, Entries: []*contextv1.Entry{{Role: "user", Content: &contextv1.Entry_Text{Text: text}}}}
}

// H5: the router's front door serves TLS. A client trusting the CA
// reaches a real cell through it; a plaintext client, or one that does not
// trust the certificate, is refused at the handshake and nothing reaches
// the cell; the Go client with TLS works through it (and does not call the
// plaintext cells directly); the certificate rotates under traffic without
// a failed call.
func TestTLSFrontDoor(t *testing.T) {
	p := newPlatform(t, &cpv1.CreateTenantRequest{Id: "acme"})
	front := newFrontCert(t)
	r := p.startRouterWith(t, front.withTLS(func(c *router.Config) { c.Routing.SnapshotPath = "" }))
	testutil.Eventually(t, 20*time.Second, func() error {
		if _, ok := r.Table().Lookup("acme"); !ok {
			return fmt.Errorf("the TLS router does not route acme yet")
		}
		return nil
	})
	ctx := testutil.Context(t, 90*time.Second)
	actx := p.as(ctx, "acme")
	cs := contextv1.NewContextServiceClient(front.dialTLS(t, r.GRPCAddr()))
	if _, err := cs.CreateContext(actx, &contextv1.CreateContextRequest{ContextId: "chat"}); err != nil {
		t.Fatal(err)
	}

	t.Run("grpc over TLS reaches the cell", func(t *testing.T) {
		before := p.cellAppends(t)
		var pr peer.Peer
		app, err := cs.Append(actx, appendReq("chat", "over tls"), grpc.Peer(&pr))
		if err != nil || app.GetLastSeq() != 1 {
			t.Fatalf("append through the TLS router: %v %v", app, err)
		}
		info, ok := pr.AuthInfo.(credentials.TLSInfo)
		if !ok || info.State.Version < tls.VersionTLS12 || info.State.NegotiatedProtocol != "h2" {
			t.Fatalf("the call's connection: %#v", pr.AuthInfo)
		}
		if got := p.cellAppends(t) - before; got < 1 {
			t.Fatalf("the cell saw %v appends, want the call", got)
		}
	})

	t.Run("plaintext and untrusting clients are refused", func(t *testing.T) {
		before := p.cellAppends(t)
		plain := contextv1.NewContextServiceClient(dial(t, r.GRPCAddr()))
		cctx, cancel := context.WithTimeout(actx, 3*time.Second)
		defer cancel()
		if _, err := plain.Append(cctx, appendReq("chat", "in clear")); err == nil {
			t.Fatal("a plaintext call through the TLS port succeeded")
		}
		untrusting, err := grpc.NewClient(r.GRPCAddr(), grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{})))
		if err != nil {
			t.Fatal(err)
		}
		defer untrusting.Close()
		if _, err := contextv1.NewContextServiceClient(untrusting).Append(cctx, appendReq("chat", "to anyone")); err == nil {
			t.Fatal("a client that does not trust the certificate got through")
		}
		if got := p.cellAppends(t) - before; got != 0 {
			t.Fatalf("refused clients: the cell saw %v appends, want 0", got)
		}
		rd, err := cs.Read(actx, &contextv1.ReadRequest{ContextId: "chat", Start: &contextv1.ReadRequest_Tail{Tail: 10}})
		if err != nil || len(rd.GetEntries()) != 1 {
			t.Fatalf("after the refused calls: %v %v, want the one entry", rd, err)
		}
	})

	t.Run("go client with TLS goes through the router", func(t *testing.T) {
		hc := front.httpsClient()
		forwarded := func() float64 {
			return testutil.MetricSum(t, hc, "https://"+r.HTTPAddr()+"/metrics", "cellplane_router_forwarded_total", `method="Append"`)
		}
		before := forwarded()
		cfg := client.DefaultConfig()
		cfg.Router, cfg.Tenant, cfg.APIKey, cfg.TLS = r.GRPCAddr(), "acme", p.keys["acme"], front.clientTLS()
		c, err := client.New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := c.Context().CreateContext(ctx, &contextv1.CreateContextRequest{ContextId: "client"}); err != nil {
			t.Fatal(err)
		}
		const n = 3
		for i := range n {
			if _, err := c.Context().Append(ctx, appendReq("client", fmt.Sprint("client ", i))); err != nil {
				t.Fatal(err)
			}
		}
		rd, err := c.Context().Read(ctx, &contextv1.ReadRequest{ContextId: "client", Start: &contextv1.ReadRequest_Tail{Tail: 10}})
		if err != nil || len(rd.GetEntries()) != n {
			t.Fatalf("read with the TLS client: %v %v", rd, err)
		}
		// Direct is on by default, but the cells do not serve TLS: every
		// append went through (and was forwarded by) the router.
		if got := forwarded() - before; got < n {
			t.Fatalf("the router forwarded %v appends of the TLS client, want %d", got, n)
		}
	})

	t.Run("certificate rotation under traffic", func(t *testing.T) {
		old := front.leaf.SerialNumber
		var (
			calls, failed atomic.Int64
			mu            sync.Mutex
			serials       = map[string]bool{}
			lastErr       error
			stop          = make(chan struct{})
			done          = make(chan struct{})
		)
		persistent := contextv1.NewContextServiceClient(front.dialTLS(t, r.GRPCAddr()))
		// The context exists before the loop appends to it.
		if _, err := cs.CreateContext(actx, &contextv1.CreateContextRequest{ContextId: "rot"}); err != nil {
			t.Fatal(err)
		}
		go func() {
			defer close(done)
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				// A new connection (a new handshake) each time, and the
				// long-lived one: neither may fail.
				conn, err := grpc.NewClient(r.GRPCAddr(), grpc.WithTransportCredentials(credentials.NewTLS(front.clientTLS())))
				if err != nil {
					failed.Add(1)
					return
				}
				var pr peer.Peer
				_, err = contextv1.NewContextServiceClient(conn).Append(actx, appendReq("rot", fmt.Sprint("fresh ", i)), grpc.Peer(&pr))
				_ = conn.Close()
				if err == nil {
					_, err = persistent.Append(actx, appendReq("rot", fmt.Sprint("kept ", i)))
				}
				calls.Add(1)
				mu.Lock()
				if err != nil {
					failed.Add(1)
					lastErr = err
				} else if info, ok := pr.AuthInfo.(credentials.TLSInfo); ok {
					serials[info.State.PeerCertificates[0].SerialNumber.Text(16)] = true
				}
				mu.Unlock()
			}
		}()
		stopLoop := sync.OnceFunc(func() { close(stop); <-done })
		defer stopLoop()
		seen := func(s *big.Int) bool { mu.Lock(); defer mu.Unlock(); return serials[s.Text(16)] }
		testutil.Eventually(t, 20*time.Second, func() error {
			if !seen(old) {
				return fmt.Errorf("no call with the first certificate yet")
			}
			return nil
		})
		front.rotate(t)
		testutil.Eventually(t, 20*time.Second, func() error {
			if !seen(front.leaf.SerialNumber) {
				return fmt.Errorf("no handshake presented the new certificate %x yet", front.leaf.SerialNumber)
			}
			return nil
		})
		at := calls.Load()
		testutil.Eventually(t, 20*time.Second, func() error {
			if calls.Load() < at+3 {
				return fmt.Errorf("%d calls since the rotation", calls.Load()-at)
			}
			return nil
		})
		stopLoop()
		mu.Lock()
		defer mu.Unlock()
		if failed.Load() != 0 {
			t.Fatalf("%d of %d calls failed during the rotation; last: %v", failed.Load(), calls.Load(), lastErr)
		}
	})
}

// MCP over HTTPS: an MCP client trusting the CA initializes a session at
// /t/<tenant>/mcp over HTTP/2, the RFC 9728 metadata names the https
// resource, and plain HTTP to the TLS port gets no answer from MCP.
func TestMCPOverHTTPS(t *testing.T) {
	st := memtopo.New()
	t.Cleanup(func() { st.Close() })
	ctx := testutil.Context(t, 30*time.Second)
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
	front := newFrontCert(t)
	cfg := router.DefaultConfig()
	cfg.Store = st
	cfg.GRPCListener, cfg.HTTPListener = testutil.Listen(t), testutil.Listen(t)
	cfg.Auth.Mode = auth.ModeJWT
	cfg.Auth.JWKSFile, cfg.Auth.Issuer, cfg.Auth.Audience = iss.file, "https://issuer.test", "cellplane"
	cfg.MCP.PublicURL = "https://" + cfg.HTTPListener.Addr().String()
	front.withTLS(nil)(&cfg)
	cfg.Logger = testutil.Logger(t)
	r, err := router.Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	testutil.Eventually(t, 10*time.Second, func() error {
		if _, ok := r.Table().Lookup("acme"); !ok {
			return fmt.Errorf("not routed yet")
		}
		return nil
	})
	resource := cfg.MCP.PublicURL + "/t/acme/mcp"
	token := iss.token(t, "acme", resource, time.Minute)
	const initialize = `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"agent","version":"v0"}}}`
	post := func(hc *http.Client, url string) (*http.Response, string, error) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader(initialize))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "application/json, text/event-stream")
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := hc.Do(req)
		if err != nil {
			return nil, "", err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, string(b), nil
	}

	hc := front.httpsClient()
	resp, body, err := post(hc, "https://"+r.HTTPAddr()+"/t/acme/mcp")
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, `"protocolVersion"`) || !strings.Contains(body, `"id":1`) {
		t.Fatalf("initialize over HTTPS: %d %s", resp.StatusCode, body)
	}
	if resp.ProtoMajor != 2 || resp.TLS == nil {
		t.Fatalf("initialize over HTTPS: %s, TLS %v; want HTTP/2 over TLS", resp.Proto, resp.TLS != nil)
	}
	defer hc.CloseIdleConnections()
	// End the session the initialize opened at the worker.
	if sid := resp.Header.Get("Mcp-Session-Id"); sid != "" {
		req, _ := http.NewRequestWithContext(ctx, http.MethodDelete, "https://"+r.HTTPAddr()+"/t/acme/mcp", nil)
		req.Header.Set("Mcp-Session-Id", sid)
		req.Header.Set("Authorization", "Bearer "+token)
		dresp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		dresp.Body.Close()
	}

	// The metadata names the https resource.
	mresp, err := hc.Get("https://" + r.HTTPAddr() + "/.well-known/oauth-protected-resource/t/acme/mcp")
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Resource string `json:"resource"`
	}
	err = json.NewDecoder(mresp.Body).Decode(&doc)
	mresp.Body.Close()
	if err != nil || doc.Resource != resource || !strings.HasPrefix(doc.Resource, "https://") {
		t.Fatalf("metadata over HTTPS: %+v %v, want resource %s", doc, err, resource)
	}

	// Plain HTTP to the TLS port: Go's server answers 400 before any
	// handler runs; the MCP proxy never sees the request. Nor does it see
	// one from a client that does not trust the certificate.
	mcpRequests := func() float64 {
		return testutil.MetricSum(t, hc, "https://"+r.HTTPAddr()+"/metrics", "cellplane_router_mcp_requests_total")
	}
	before := mcpRequests()
	if before < 1 {
		t.Fatalf("the proxy counted %v requests, want the initialize", before)
	}
	if resp, body, err := post(&http.Client{}, "http://"+r.HTTPAddr()+"/t/acme/mcp"); err == nil && (resp.StatusCode == http.StatusOK || strings.Contains(body, "protocolVersion")) {
		t.Fatalf("plain HTTP to the TLS port: %d %s", resp.StatusCode, body)
	}
	if _, _, err := post(&http.Client{Transport: &http.Transport{}}, "https://"+r.HTTPAddr()+"/t/acme/mcp"); err == nil {
		t.Fatal("an HTTPS client that does not trust the certificate got through")
	}
	if got := mcpRequests() - before; got != 0 {
		t.Fatalf("refused clients: the MCP proxy counted %v requests, want 0", got)
	}
}

// With TLS, the MCP public URL must be https (the resource a JWT's audience
// and the RFC 9728 metadata name); the certificate and key go together.
func TestTLSConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		mod  func(*router.Config)
		want string
	}{
		{"plaintext", func(c *router.Config) {}, ""},
		{"tls", func(c *router.Config) { c.TLS.CertFile, c.TLS.KeyFile = "a.crt", "a.key" }, ""},
		{"tls and an https public URL", func(c *router.Config) {
			c.TLS.CertFile, c.TLS.KeyFile, c.MCP.PublicURL = "a.crt", "a.key", "https://mcp.example.com"
		}, ""},
		{"tls and an http public URL", func(c *router.Config) {
			c.TLS.CertFile, c.TLS.KeyFile, c.MCP.PublicURL = "a.crt", "a.key", "http://mcp.example.com"
		}, "is not https"},
		{"plaintext behind a TLS proxy", func(c *router.Config) { c.MCP.PublicURL = "https://mcp.example.com" }, ""},
		{"cert without key", func(c *router.Config) { c.TLS.CertFile = "a.crt" }, "KeyFile"},
		{"key without cert", func(c *router.Config) { c.TLS.KeyFile = "a.key" }, "CertFile"},
		{"negative reload interval", func(c *router.Config) { c.TLS.ReloadInterval = -1 }, "ReloadInterval"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := router.DefaultConfig()
			c.EtcdEndpoints = []string{"http://127.0.0.1:1"}
			tc.mod(&c)
			err := c.Validate()
			if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
				t.Fatalf("Validate() = %v, want %q", err, tc.want)
			}
		})
	}
}

// A router whose certificate cannot be loaded does not start (never a
// plaintext fallback).
func TestTLSBadCertificateFailsStart(t *testing.T) {
	cfg := router.DefaultConfig()
	cfg.Store = memtopo.New()
	t.Cleanup(func() { cfg.Store.Close() })
	cfg.GRPCListener, cfg.HTTPListener = testutil.Listen(t), testutil.Listen(t)
	cfg.TLS.CertFile, cfg.TLS.KeyFile = filepath.Join(t.TempDir(), "missing.crt"), filepath.Join(t.TempDir(), "missing.key")
	cfg.Logger = testutil.Logger(t)
	if r, err := router.Start(testutil.Context(t, 10*time.Second), cfg); err == nil {
		_ = r.Close()
		t.Fatal("a router started without its certificate")
	}
	_ = cfg.GRPCListener.Close()
	_ = cfg.HTTPListener.Close()
}
