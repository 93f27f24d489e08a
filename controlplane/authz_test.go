package controlplane_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/cellplane/cellplane/cells"
	"github.com/cellplane/cellplane/controlplane"
	"github.com/cellplane/cellplane/controlplane/catalog"
	"github.com/cellplane/cellplane/controlplane/cptest"
	"github.com/cellplane/cellplane/controlplane/topo/topotest"
	"github.com/cellplane/cellplane/internal/cperr"
	"github.com/cellplane/cellplane/internal/dial"
	"github.com/cellplane/cellplane/internal/pki"
	"github.com/cellplane/cellplane/internal/rpcerr"
	"github.com/cellplane/cellplane/internal/testutil"
	cpv1 "github.com/cellplane/cellplane/proto/cellplane/controlplane/v1"
)

const testCluster = "test"

// Every RPC of ControlPlaneService is in the authorisation table, and
// the table names no method the service does not have.
func TestPolicyCoversEveryRPC(t *testing.T) {
	if missing := missingFromPolicy(controlplane.Policy()); len(missing) > 0 {
		t.Fatalf("ControlPlaneService RPCs missing from controlplane.Policy (add who may call them, and to docs/security.md): %v", missing)
	}
	sd := cpv1.File_cellplane_controlplane_v1_controlplane_proto.Services().ByName("ControlPlaneService")
	prefix := "/" + string(sd.FullName()) + "/"
	for m := range controlplane.Policy() {
		if name, ok := cutPrefix(m, prefix); ok && sd.Methods().ByName(protoreflect.Name(name)) == nil {
			t.Errorf("Policy names %s, which ControlPlaneService does not have", m)
		}
	}
	// The check itself catches a missing RPC.
	p := controlplane.Policy()
	delete(p, "/cellplane.controlplane.v1.ControlPlaneService/CreateApiKey")
	if got := missingFromPolicy(p); !slices.Equal(got, []string{"/cellplane.controlplane.v1.ControlPlaneService/CreateApiKey"}) {
		t.Fatalf("a table without CreateApiKey: missing %v", got)
	}
}

func cutPrefix(s, p string) (string, bool) {
	if len(s) >= len(p) && s[:len(p)] == p {
		return s[len(p):], true
	}
	return "", false
}

// missingFromPolicy lists the service's RPCs (from the proto descriptor)
// that p does not name.
func missingFromPolicy(p map[string]controlplane.Access) []string {
	var missing []string
	sd := cpv1.File_cellplane_controlplane_v1_controlplane_proto.Services().ByName("ControlPlaneService")
	for i := range sd.Methods().Len() {
		full := "/" + string(sd.FullName()) + "/" + string(sd.Methods().Get(i).Name())
		if _, ok := p[full]; !ok {
			missing = append(missing, full)
		}
	}
	return missing
}

// pkiEnv is a cluster CA, a certs directory with the control plane's and
// callers' certificates, and a control plane serving mutual TLS.
type pkiEnv struct {
	dir  string
	ca   *pki.CA
	env  *cptest.Env
	addr string
}

// issue writes a certificate of e's CA for id into e.dir.
func (e *pkiEnv) issue(t *testing.T, req pki.LeafRequest) {
	t.Helper()
	leaf, err := e.ca.Issue(req)
	if err != nil {
		t.Fatal(err)
	}
	if err := pki.WriteLeaf(e.dir, req.Identity.FileName(), leaf, true); err != nil {
		t.Fatal(err)
	}
}

func newPKIEnv(t *testing.T) *pkiEnv {
	t.Helper()
	ca, err := pki.NewCA(testCluster, 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	e := &pkiEnv{dir: t.TempDir(), ca: ca}
	if err := pki.WriteCA(e.dir, ca, false); err != nil {
		t.Fatal(err)
	}
	e.issue(t, pki.LeafRequest{Identity: pki.ControlPlaneIdentity(testCluster, "cp1")})
	src, err := pki.NewSource(pki.DirConfig(e.dir, "controlplane.cp1"))
	if err != nil {
		t.Fatal(err)
	}
	e.env = &cptest.Env{Endpoints: topotest.StartEtcd(t)}
	e.env.AddReplica(t, "cp1", func(c *controlplane.Config) { c.TLS = src })
	e.addr = e.env.Addr()
	return e
}

// dialAs returns a client of the control plane presenting id's
// certificate (issued by e's CA unless already in e.dir).
func (e *pkiEnv) dialAs(t *testing.T, id pki.Identity) *grpc.ClientConn {
	t.Helper()
	src, err := pki.NewSource(pki.DirConfig(e.dir, id.FileName()))
	if err != nil {
		e.issue(t, pki.LeafRequest{Identity: id})
		if src, err = pki.NewSource(pki.DirConfig(e.dir, id.FileName())); err != nil {
			t.Fatal(err)
		}
	}
	return dialCreds(t, e.addr, pki.ClientCredentials(src, pki.ExpectKinds(pki.KindControlPlane)))
}

func dialCreds(t *testing.T, addr string, creds credentials.TransportCredentials) *grpc.ClientConn {
	t.Helper()
	cfg := dial.DefaultConfig()
	cfg.Credentials = creds
	conn, err := dial.New(addr, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

var (
	admin    = pki.OperatorIdentity(testCluster, pki.RoleAdmin, "alice")
	readonly = pki.OperatorIdentity(testCluster, pki.RoleReadOnly, "bob")
	node     = pki.NodeIdentity(testCluster, "r1", "c1", "c1-n1")
	router   = pki.RouterIdentity(testCluster, "r1")
	worker   = pki.WorkerIdentity(testCluster, "w1")
	tenantID = pki.ClientIdentity(testCluster, "t1")
)

// invoke calls method with an empty request and returns the error.
func invoke(ctx context.Context, conn *grpc.ClientConn, method protoreflect.MethodDescriptor) error {
	in, err := protoregistry.GlobalTypes.FindMessageByName(method.Input().FullName())
	if err != nil {
		return err
	}
	out, err := protoregistry.GlobalTypes.FindMessageByName(method.Output().FullName())
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	full := "/" + string(method.Parent().FullName()) + "/" + string(method.Name())
	return conn.Invoke(ctx, full, in.New().Interface(), out.New().Interface())
}

// refused reports whether err is an authorisation refusal.
func refused(err error) bool {
	c := status.Code(err)
	return c == codes.PermissionDenied || c == codes.Unauthenticated
}

// TestAuthorisationTable calls every RPC (with an empty request, which
// the handlers refuse as invalid or answer, writing nothing) as each kind
// of identity: refused exactly when the table says so.
func TestAuthorisationTable(t *testing.T) {
	e := newPKIEnv(t)
	ctx := testutil.Context(t, 2*time.Minute)
	sd := cpv1.File_cellplane_controlplane_v1_controlplane_proto.Services().ByName("ControlPlaneService")
	readOnlyRPCs := []string{"GetStatus", "ListRegions", "GetCell", "ListCells", "GetTenant", "ListTenants",
		"ListApiKeys", "GetMove", "ListMoves", "GetFailover", "ListFailovers", "GetRegistry", "GetFailoverPolicy", "ListTenantAudit"}
	for _, tc := range []struct {
		id      pki.Identity
		allowed func(rpc string) bool
	}{
		{admin, func(string) bool { return true }},
		{readonly, func(rpc string) bool { return slices.Contains(readOnlyRPCs, rpc) }},
		{node, func(rpc string) bool { return rpc == "GetRegistry" }},
		{router, func(rpc string) bool { return rpc == "GetRegistry" }},
		{worker, func(rpc string) bool { return rpc == "GetRegistry" }},
		{tenantID, func(string) bool { return false }},
		{pki.ControlPlaneIdentity(testCluster, "cp2"), func(string) bool { return false }},
	} {
		t.Run(tc.id.FileName(), func(t *testing.T) {
			conn := e.dialAs(t, tc.id)
			for i := range sd.Methods().Len() {
				m := sd.Methods().Get(i)
				err := invoke(ctx, conn, m)
				if want := !tc.allowed(string(m.Name())); refused(err) != want {
					t.Errorf("%s as %s: %v, want refused=%v", m.Name(), tc.id, err, want)
				}
				if refused(err) && (status.Code(err) != codes.PermissionDenied || cperr.ReasonOf(rpcerr.FromStatus(err)) != cperr.PermissionDenied) {
					t.Errorf("%s as %s: %v, want PERMISSION_DENIED", m.Name(), tc.id, err)
				}
			}
			// Health answers every identity of the cluster.
			if _, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
				t.Errorf("health check as %s: %v", tc.id, err)
			}
		})
	}
}

// TestMutualTLSRefusals: a control plane with TLS refuses callers without
// a valid certificate of its cluster, and a read-only operator or a
// component cannot change anything.
func TestMutualTLSRefusals(t *testing.T) {
	if testing.Short() {
		t.Skip("runs etcd, a control plane with mutual TLS and a cell node")
	}
	e := newPKIEnv(t)
	ctx := testutil.Context(t, 2*time.Minute)
	adm := cpv1.NewControlPlaneServiceClient(e.dialAs(t, admin))

	// An admin sets up a region, a cell with a real node, a tenant and a key.
	if _, err := adm.CreateRegion(ctx, &cpv1.CreateRegionRequest{Name: "r1"}); err != nil {
		t.Fatal(err)
	}
	if _, err := adm.CreateCell(ctx, &cpv1.CreateCellRequest{Id: "c1", Region: "r1", ExpectedMembers: 1}); err != nil {
		t.Fatal(err)
	}
	// The cell serves mutual TLS too: the control plane's cell client
	// presents its identity, and a cell with TLS accepts it (C1, C2).
	e.env.StartNodes(t, "c1", 1, func(c *cells.Config) {
		id := pki.NodeIdentity(testCluster, "r1", "c1", c.NodeID)
		e.issue(t, pki.LeafRequest{Identity: id})
		src, err := pki.NewSource(pki.DirConfig(e.dir, id.FileName()))
		if err != nil {
			t.Fatal(err)
		}
		c.TLS = src
	})
	testutil.Eventually(t, 30*time.Second, func() error {
		resp, err := adm.GetCell(ctx, &cpv1.GetCellRequest{Id: "c1"})
		if err != nil {
			return err
		}
		if h := resp.GetCell().GetHealth(); h != cpv1.CellHealth_CELL_HEALTH_HEALTHY {
			return fmt.Errorf("cell c1 is %s", h)
		}
		return nil
	})
	if _, err := adm.CreateTenant(ctx, &cpv1.CreateTenantRequest{Id: "t1", HomeRegion: "r1"}); err != nil {
		t.Fatal(err)
	}
	key, err := adm.CreateApiKey(ctx, &cpv1.CreateApiKeyRequest{Tenant: "t1", Description: "k"})
	if err != nil {
		t.Fatal(err)
	}

	st := e.env.Store(t)
	revokeReq := &cpv1.RevokeTokenRequest{Tenant: "t1", Subject: "mallory", ExpireTime: timestamppb.New(time.Now().Add(time.Hour))}
	// state is what the refused calls must not change.
	state := func() string {
		t.Helper()
		revoked, _, err := catalog.ListRevokedTokens(ctx, st, "t1")
		if err != nil {
			t.Fatal(err)
		}
		b := fmt.Appendf(nil, "revoked tokens: %d\n", len(revoked))
		for _, m := range []proto.Message{
			must(t)(adm.ListTenants(ctx, &cpv1.ListTenantsRequest{})),
			must(t)(adm.GetTenant(ctx, &cpv1.GetTenantRequest{Id: "t1"})).(*cpv1.GetTenantResponse).GetTenant(),
			must(t)(adm.GetCell(ctx, &cpv1.GetCellRequest{Id: "c1"})).(*cpv1.GetCellResponse).GetCell().GetCell(),
			must(t)(adm.ListApiKeys(ctx, &cpv1.ListApiKeysRequest{Tenant: "t1"})),
			must(t)(adm.ListMoves(ctx, &cpv1.ListMovesRequest{})),
			must(t)(adm.ListFailovers(ctx, &cpv1.ListFailoversRequest{})),
			must(t)(adm.ListRegions(ctx, &cpv1.ListRegionsRequest{})),
			must(t)(adm.GetFailoverPolicy(ctx, &cpv1.GetFailoverPolicyRequest{})),
		} {
			j, err := protojson.Marshal(m)
			if err != nil {
				t.Fatal(err)
			}
			b = append(append(b, j...), '\n')
		}
		return string(b)
	}
	before := state()

	t.Run("no certificate", func(t *testing.T) {
		noCert := dialCreds(t, e.addr, credentials.NewTLS(&tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS13}))
		_, err := cpv1.NewControlPlaneServiceClient(noCert).CreateApiKey(ctx, &cpv1.CreateApiKeyRequest{Tenant: "t1"})
		wantHandshakeRefused(t, "no client certificate", err)
		_, err = cpv1.NewControlPlaneServiceClient(noCert).RevokeToken(ctx, revokeReq)
		wantHandshakeRefused(t, "no client certificate RevokeToken", err)
		plain := dialCreds(t, e.addr, insecure.NewCredentials())
		_, err = cpv1.NewControlPlaneServiceClient(plain).ListTenants(ctx, &cpv1.ListTenantsRequest{})
		wantHandshakeRefused(t, "plaintext", err)
	})
	t.Run("another CA", func(t *testing.T) {
		other := &pkiEnv{dir: t.TempDir(), addr: e.addr}
		if other.ca, err = pki.NewCA(testCluster, time.Hour); err != nil {
			t.Fatal(err)
		}
		if err := pki.WriteCA(other.dir, other.ca, false); err != nil {
			t.Fatal(err)
		}
		// It trusts the real CA too, so only the server's check refuses.
		if err := os.WriteFile(filepath.Join(other.dir, pki.CACertFile), pki.EncodeCerts(other.ca.Cert, e.ca.Cert), 0o644); err != nil {
			t.Fatal(err)
		}
		cl := cpv1.NewControlPlaneServiceClient(other.dialAs(t, admin))
		_, err := cl.CreateApiKey(ctx, &cpv1.CreateApiKeyRequest{Tenant: "t1"})
		wantHandshakeRefused(t, "another CA", err)
	})
	t.Run("expired", func(t *testing.T) {
		expired := pki.OperatorIdentity(testCluster, pki.RoleAdmin, "old")
		e.issue(t, pki.LeafRequest{Identity: expired, NotBefore: time.Now().Add(-2 * time.Hour), Lifetime: time.Hour})
		cl := cpv1.NewControlPlaneServiceClient(e.dialAs(t, expired))
		_, err := cl.CreateApiKey(ctx, &cpv1.CreateApiKeyRequest{Tenant: "t1"})
		wantHandshakeRefused(t, "expired CreateApiKey", err)
		_, err = cl.ListTenants(ctx, &cpv1.ListTenantsRequest{})
		wantHandshakeRefused(t, "expired ListTenants", err)
	})
	t.Run("read-only", func(t *testing.T) {
		ro := cpv1.NewControlPlaneServiceClient(e.dialAs(t, readonly))
		denied := map[string]error{}
		_, denied["CreateApiKey"] = ro.CreateApiKey(ctx, &cpv1.CreateApiKeyRequest{Tenant: "t1"})
		_, denied["RevokeApiKey"] = ro.RevokeApiKey(ctx, &cpv1.RevokeApiKeyRequest{Tenant: "t1", Id: key.GetKey().GetId()})
		_, denied["RevokeToken"] = ro.RevokeToken(ctx, revokeReq)
		_, denied["DeleteTenant"] = ro.DeleteTenant(ctx, &cpv1.DeleteTenantRequest{Id: "t1"})
		_, denied["StartMove"] = ro.StartMove(ctx, &cpv1.StartMoveRequest{Tenant: "t1", TargetCell: "c1"})
		_, denied["Failover"] = ro.Failover(ctx, &cpv1.FailoverRequest{Tenant: "t1"})
		_, denied["DrainCell"] = ro.DrainCell(ctx, &cpv1.DrainCellRequest{Cell: "c1"})
		_, denied["CordonCell"] = ro.CordonCell(ctx, &cpv1.CordonCellRequest{Id: "c1"})
		_, denied["CreateTenant"] = ro.CreateTenant(ctx, &cpv1.CreateTenantRequest{Id: "t2", HomeRegion: "r1"})
		_, denied["UpdateTenant"] = ro.UpdateTenant(ctx, &cpv1.UpdateTenantRequest{Id: "t1", Limits: &cpv1.TenantLimits{Rate: 1}})
		_, denied["UpdateCell"] = ro.UpdateCell(ctx, &cpv1.UpdateCellRequest{Id: "c1", State: cpv1.CellState_CELL_STATE_CORDONED})
		_, denied["DeleteCell"] = ro.DeleteCell(ctx, &cpv1.DeleteCellRequest{Id: "c1"})
		_, denied["UpdateRegion"] = ro.UpdateRegion(ctx, &cpv1.UpdateRegionRequest{Name: "r1", Description: "x"})
		_, denied["DeleteRegion"] = ro.DeleteRegion(ctx, &cpv1.DeleteRegionRequest{Name: "r1"})
		_, denied["SetFailoverPolicy"] = ro.SetFailoverPolicy(ctx, &cpv1.SetFailoverPolicyRequest{Policy: &cpv1.FailoverPolicy{Enabled: true}})
		for rpc, err := range denied {
			wantReason(t, "read-only "+rpc, err, codes.PermissionDenied, cperr.PermissionDenied)
		}
		if resp, err := ro.ListTenants(ctx, &cpv1.ListTenantsRequest{}); err != nil || len(resp.GetTenants()) != 1 {
			t.Fatalf("read-only ListTenants: %v %v", resp, err)
		}
		if resp, err := ro.GetTenant(ctx, &cpv1.GetTenantRequest{Id: "t1"}); err != nil || resp.GetTenant().GetCell() != "c1" {
			t.Fatalf("read-only GetTenant: %v %v", resp, err)
		}
	})
	t.Run("components", func(t *testing.T) {
		for _, id := range []pki.Identity{node, router} {
			cl := cpv1.NewControlPlaneServiceClient(e.dialAs(t, id))
			_, err := cl.CreateApiKey(ctx, &cpv1.CreateApiKeyRequest{Tenant: "t1"})
			wantReason(t, id.String()+" CreateApiKey", err, codes.PermissionDenied, cperr.PermissionDenied)
			_, err = cl.DeleteTenant(ctx, &cpv1.DeleteTenantRequest{Id: "t1"})
			wantReason(t, id.String()+" DeleteTenant", err, codes.PermissionDenied, cperr.PermissionDenied)
			_, err = cl.ListTenants(ctx, &cpv1.ListTenantsRequest{})
			wantReason(t, id.String()+" ListTenants", err, codes.PermissionDenied, cperr.PermissionDenied)
			if reg, err := cl.GetRegistry(ctx, &cpv1.GetRegistryRequest{}); err != nil || len(reg.GetEtcdEndpoints()) == 0 {
				t.Fatalf("%s GetRegistry: %v %v", id, reg, err)
			}
		}
	})
	if after := state(); after != before {
		t.Fatalf("refused calls changed the state:\nbefore %s\nafter  %s", before, after)
	}
	// And the admin can still do what the others could not.
	if _, err := adm.RevokeApiKey(ctx, &cpv1.RevokeApiKeyRequest{Tenant: "t1", Id: key.GetKey().GetId()}); err != nil {
		t.Fatal(err)
	}
	if _, err := adm.RevokeToken(ctx, revokeReq); err != nil {
		t.Fatal(err)
	}
	if revoked, _, err := catalog.ListRevokedTokens(ctx, st, "t1"); err != nil || len(revoked) != 1 || revoked[0].Value.GetSubject() != "mallory" {
		t.Fatalf("the admin's RevokeToken wrote %v, %v", revoked, err)
	}
	if _, err := adm.DeleteTenant(ctx, &cpv1.DeleteTenantRequest{Id: "t1"}); err != nil {
		t.Fatal(err)
	}
}

// must returns a function returning v, failing t on err.
// wantHandshakeRefused fails t unless err is the failure of a call whose
// connection the server refused (UNAVAILABLE: the TLS handshake failed)
// or whose caller it could not authenticate.
func wantHandshakeRefused(t *testing.T, what string, err error) {
	t.Helper()
	if c := status.Code(err); c != codes.Unavailable && c != codes.Unauthenticated {
		t.Fatalf("%s: %v, want the connection refused", what, err)
	}
}

func must(t *testing.T) func(v proto.Message, err error) proto.Message {
	return func(v proto.Message, err error) proto.Message {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
}

// docs/security.md's table of the control plane API says what Policy
// does, for every RPC.
func TestPolicyDocumented(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("..", "docs", "security.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(data), "\n## Control plane API (C3)\n")
	if !ok {
		t.Fatal("docs/security.md has no section \"## Control plane API (C3)\"")
	}
	section, _, _ = strings.Cut(section, "\n## ")
	rows := map[string][]string{}
	for _, line := range strings.Split(section, "\n") {
		cols := strings.Split(line, "|")
		if len(cols) < 5 {
			continue
		}
		for i := range cols {
			cols[i] = strings.TrimSpace(cols[i])
		}
		rows[strings.Trim(cols[1], "`")] = cols[2:5]
	}
	policy := controlplane.Policy()
	sd := cpv1.File_cellplane_controlplane_v1_controlplane_proto.Services().ByName("ControlPlaneService")
	for i := range sd.Methods().Len() {
		name := string(sd.Methods().Get(i).Name())
		row, ok := rows[name]
		if !ok {
			t.Errorf("docs/security.md: no row for %s", name)
			continue
		}
		a := policy["/"+string(sd.FullName())+"/"+name]
		if want := map[bool]string{true: "yes", false: "—"}[a.ReadOnly]; row[1] != want {
			t.Errorf("docs/security.md: %s read-only %q, Policy says %q", name, row[1], want)
		}
		for _, k := range a.Kinds {
			if !strings.Contains(row[2], string(k)) {
				t.Errorf("docs/security.md: %s does not name %s, which Policy allows", name, k)
			}
		}
		if len(a.Kinds) == 0 && row[2] != "—" {
			t.Errorf("docs/security.md: %s allows %q, Policy nobody but operators", name, row[2])
		}
	}
}

// Config.TLS must hold a control plane's certificate.
func TestConfigTLSIdentity(t *testing.T) {
	e := &pkiEnv{dir: t.TempDir()}
	var err error
	if e.ca, err = pki.NewCA(testCluster, time.Hour); err != nil {
		t.Fatal(err)
	}
	if err := pki.WriteCA(e.dir, e.ca, false); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		id pki.Identity
		ok bool
	}{{pki.ControlPlaneIdentity(testCluster, "cp1"), true}, {admin, false}, {router, false}} {
		e.issue(t, pki.LeafRequest{Identity: tc.id})
		src, err := pki.NewSource(pki.DirConfig(e.dir, tc.id.FileName()))
		if err != nil {
			t.Fatal(err)
		}
		cfg := controlplane.DefaultConfig()
		cfg.DataDir = t.TempDir()
		cfg.TLS = src
		cfg.EmbeddedClientURL, cfg.EmbeddedPeerURL = controlplane.DefaultEmbeddedTLSClientURL, controlplane.DefaultEmbeddedTLSPeerURL
		if err := cfg.Validate(); (err == nil) != tc.ok {
			t.Errorf("TLS with %s: Validate() = %v", tc.id, err)
		}
		if !tc.ok {
			continue
		}
		// The embedded etcd is https with TLS, http without: no
		// plaintext listener next to the mutual-TLS API, no https
		// without certificates.
		cfg.EmbeddedClientURL = controlplane.DefaultEmbeddedClientURL
		if err := cfg.Validate(); err == nil {
			t.Error("TLS with an http embedded etcd URL: Validate accepted it")
		}
		cfg.TLS, cfg.EmbeddedClientURL, cfg.EmbeddedPeerURL = nil, controlplane.DefaultEmbeddedTLSClientURL, controlplane.DefaultEmbeddedPeerURL
		if err := cfg.Validate(); err == nil {
			t.Error("no TLS with an https embedded etcd URL: Validate accepted it")
		}
		cfg.EtcdEndpoints = []string{"https://10.0.0.1:2379"} // external: the URLs are unused
		if err := cfg.Validate(); err != nil {
			t.Errorf("external etcd: %v", err)
		}
	}
}
