package cells_test

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/cellplane/cellplane/cells"
	"github.com/cellplane/cellplane/cells/celltest"
	"github.com/cellplane/cellplane/cells/store"
	"github.com/cellplane/cellplane/internal/cperr"
	cpdial "github.com/cellplane/cellplane/internal/dial"
	"github.com/cellplane/cellplane/internal/pki"
	"github.com/cellplane/cellplane/internal/rpcerr"
	"github.com/cellplane/cellplane/internal/tenantmd"
	"github.com/cellplane/cellplane/internal/testutil"
	cellv1 "github.com/cellplane/cellplane/proto/cellplane/cell/v1"
	contextv1 "github.com/cellplane/cellplane/proto/cellplane/context/v1"
	replicationv1 "github.com/cellplane/cellplane/proto/cellplane/replication/v1"
)

const tlsCluster = "test"

// tlsCell is a 3-node cell c1 (region eu) serving mutual TLS, and a
// certs directory of its CA from which callers of any identity dial it.
type tlsCell struct {
	ca     *pki.CA
	dir    string
	nodes  []*cells.Node
	leader *cells.Node
}

// source returns a Source for id, issuing its certificate from ca into
// dir unless there already is one.
func source(t *testing.T, ca *pki.CA, dir string, id pki.Identity) *pki.Source {
	t.Helper()
	if _, err := os.Stat(dir + "/" + pki.CACertFile); err != nil {
		if err := pki.WriteCA(dir, ca, false); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := os.Stat(dir + "/" + id.FileName() + ".crt"); err != nil {
		leaf, err := ca.Issue(pki.LeafRequest{Identity: id, Hosts: []string{"127.0.0.1"}})
		if err != nil {
			t.Fatal(err)
		}
		if err := pki.WriteLeaf(dir, id.FileName(), leaf, false); err != nil {
			t.Fatal(err)
		}
	}
	src, err := pki.NewSource(pki.DirConfig(dir, id.FileName()))
	if err != nil {
		t.Fatal(err)
	}
	return src
}

func startTLSCell(t *testing.T) *tlsCell {
	t.Helper()
	ca, err := pki.NewCA(tlsCluster, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	c := &tlsCell{ca: ca, dir: t.TempDir()}
	var cfgs []cells.Config
	var peers []store.Peer
	for i := range 3 {
		id := fmt.Sprintf("n%d", i+1)
		cfg := celltest.NodeConfig(t, id)
		cfg.CellID = "c1"
		cfg.TLS = source(t, ca, c.dir, pki.NodeIdentity(tlsCluster, "eu", "c1", id))
		cfg.Store.Disk.CheckInterval = 50 * time.Millisecond // the leader polls its members' disks this often
		cfgs = append(cfgs, cfg)
		peers = append(peers, store.Peer{ID: id, Addr: cfg.RaftListener.Addr().String()})
	}
	for _, cfg := range cfgs {
		cfg.Bootstrap = peers
		c.nodes = append(c.nodes, celltest.StartNode(t, cfg))
	}
	c.leader = celltest.WaitLeader(t, c.nodes)
	return c
}

// dialConfig returns the dial configuration of a caller with id.
func (c *tlsCell) dialConfig(t *testing.T, id pki.Identity) cpdial.Config {
	t.Helper()
	cfg := cpdial.DefaultConfig()
	cfg.Credentials = pki.ClientCredentials(source(t, c.ca, c.dir, id), pki.ExpectKinds(pki.KindNode))
	return cfg
}

// httpClient returns an HTTP client presenting id's certificate and
// accepting only a node's.
func (c *tlsCell) httpClient(t *testing.T, id pki.Identity) *http.Client {
	t.Helper()
	tr := &http.Transport{TLSClientConfig: source(t, c.ca, c.dir, id).ClientTLSConfig(pki.ExpectKinds(pki.KindNode))}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

func dialWith(t *testing.T, addr string, cfg cpdial.Config) *grpc.ClientConn {
	t.Helper()
	conn, err := cpdial.New(addr, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

func (c *tlsCell) dialAs(t *testing.T, addr string, id pki.Identity) *grpc.ClientConn {
	t.Helper()
	return dialWith(t, addr, c.dialConfig(t, id))
}

var (
	cpID       = pki.ControlPlaneIdentity(tlsCluster, "cp1")
	routerID   = pki.RouterIdentity(tlsCluster, "r1")
	workerID   = pki.WorkerIdentity(tlsCluster, "w1")
	adminID    = pki.OperatorIdentity(tlsCluster, pki.RoleAdmin, "alice")
	readOnlyID = pki.OperatorIdentity(tlsCluster, pki.RoleReadOnly, "bob")
	clientID   = pki.ClientIdentity(tlsCluster, tenant)
	otherCell  = pki.NodeIdentity(tlsCluster, "eu", "c2", "n1")
)

// denied fails unless err is an authorisation refusal with code and the
// matching cperr reason.
func denied(t *testing.T, what string, err error, code codes.Code) {
	t.Helper()
	if status.Code(err) != code {
		t.Fatalf("%s: %v, want %s", what, err, code)
	}
	reason := cperr.PermissionDenied
	if code == codes.Unauthenticated {
		reason = cperr.Unauthenticated
	}
	if got := cperr.ReasonOf(rpcerr.FromStatus(err)); got != reason {
		t.Fatalf("%s: reason %s, want %s", what, got, reason)
	}
}

// contexts lists the tenant's context ids, as the router.
func contexts(t *testing.T, ctx context.Context, cs contextv1.ContextServiceClient) []string {
	t.Helper()
	resp, err := cs.ListContexts(tenantmd.Outgoing(ctx, tenant, 0), &contextv1.ListContextsRequest{})
	if err != nil {
		t.Fatalf("ListContexts: %v", err)
	}
	var ids []string
	for _, c := range resp.GetContexts() {
		ids = append(ids, c.GetContextId())
	}
	return ids
}

// TestCellTLSCluster: a 3-node cell with TLS elects, registers every
// member's addresses, forwards a follower's writes to the leader, serves
// the control plane's tenant placement, the router's data calls and a
// peer cell's replication export.
func TestCellTLSCluster(t *testing.T) {
	c := startTLSCell(t)
	ctx := testutil.Context(t, time.Minute)
	follower := followerOf(c.nodes, c.leader)

	// The control plane places the tenant, through a follower (forwarded).
	celltest.OwnWith(t, c.dialConfig(t, cpID), follower.GRPCAddr(), tenant)

	// Every member registered its addresses with the leader.
	cs := cellv1.NewCellServiceClient(c.dialAs(t, c.leader.GRPCAddr(), cpID))
	testutil.Eventually(t, 20*time.Second, func() error {
		st, err := cs.GetStatus(ctx, &cellv1.GetStatusRequest{})
		if err != nil {
			return err
		}
		var reg []string
		for _, m := range st.GetMembers() {
			if m.GetNode().GetGrpcAddr() != "" {
				reg = append(reg, m.GetNode().GetNodeId())
			}
		}
		if len(reg) != 3 {
			return fmt.Errorf("registered members %v", reg)
		}
		return nil
	})

	// The router writes through a follower (forwarded to the leader).
	data := contextv1.NewContextServiceClient(c.dialAs(t, follower.GRPCAddr(), routerID))
	if _, err := data.CreateContext(tenantmd.Outgoing(ctx, tenant, 0), &contextv1.CreateContextRequest{ContextId: "c1", RequestId: "r1"}); err != nil {
		t.Fatalf("CreateContext as router through a follower: %v", err)
	}
	if _, err := data.Append(tenantmd.Outgoing(ctx, tenant, 0), &contextv1.AppendRequest{ContextId: "c1", RequestId: "r2",
		Entries: []*contextv1.Entry{{Role: "user", Content: &contextv1.Entry_Text{Text: "hello"}}}}); err != nil {
		t.Fatalf("Append as router through a follower: %v", err)
	}
	// The node's own MCP worker (a self-connection with the node's
	// identity) on a follower, called by a router over mutual TLS: its
	// call is forwarded to the leader.
	mc := sdk.NewClient(&sdk.Implementation{Name: "agent", Version: "v0"}, nil)
	mcs, err := mc.Connect(ctx, &sdk.StreamableClientTransport{Endpoint: "https://" + follower.HTTPAddr() + "/t/" + tenant + "/mcp",
		HTTPClient: c.httpClient(t, routerID), MaxRetries: -1}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer mcs.Close()
	if res, err := mcs.CallTool(ctx, &sdk.CallToolParams{Name: "context_create", Arguments: map[string]any{"context_id": "c2"}}); err != nil || res.IsError {
		t.Fatalf("MCP context_create on a TLS node: %v %v", res, err)
	}
	// A stand-alone worker reads it.
	wk := contextv1.NewContextServiceClient(c.dialAs(t, c.leader.GRPCAddr(), workerID))
	if got := contexts(t, ctx, wk); !slices.Equal(got, []string{"c1", "c2"}) {
		t.Fatalf("contexts as worker: %v", got)
	}
	// A node of another cell (a standby's sink) exports the tenant.
	exp, err := replicationv1.NewReplicationServiceClient(c.dialAs(t, c.leader.GRPCAddr(), otherCell)).
		ExportTenant(ctx, &replicationv1.ExportTenantRequest{Tenant: tenant})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := exp.Recv(); err != nil {
		t.Fatalf("ExportTenant as a peer cell's node: %v", err)
	}
}

// TestCellTLSRefusals: for each surface of the node's gRPC port, callers
// without a certificate, with another CA's certificate, or of the wrong
// identity are refused, and nothing is written.
func TestCellTLSRefusals(t *testing.T) {
	c := startTLSCell(t)
	ctx := testutil.Context(t, time.Minute)
	addr := c.leader.GRPCAddr()
	celltest.OwnWith(t, c.dialConfig(t, cpID), addr, tenant)
	router := contextv1.NewContextServiceClient(c.dialAs(t, addr, routerID))
	if _, err := router.CreateContext(tenantmd.Outgoing(ctx, tenant, 0), &contextv1.CreateContextRequest{ContextId: "keep", RequestId: "k"}); err != nil {
		t.Fatal(err)
	}
	if _, err := router.Append(tenantmd.Outgoing(ctx, tenant, 0), &contextv1.AppendRequest{ContextId: "keep", RequestId: "ka",
		Entries: []*contextv1.Entry{{Role: "user", Content: &contextv1.Entry_Text{Text: "kept"}}}}); err != nil {
		t.Fatal(err)
	}
	cp := cellv1.NewCellServiceClient(c.dialAs(t, addr, cpID))
	tenantState := func() string {
		resp, err := cp.GetTenant(ctx, &cellv1.GetTenantRequest{Tenant: tenant})
		if err != nil {
			t.Fatalf("GetTenant as control plane: %v", err)
		}
		return resp.GetTenant().String()
	}
	beforeTenant, beforeContexts := tenantState(), contexts(t, ctx, router)

	// Callers without a valid certificate of the cluster.
	otherCA, err := pki.NewCA(tlsCluster, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	noCert := cpdial.DefaultConfig()
	noCert.Credentials = credentials.NewTLS(&tls.Config{MinVersion: tls.VersionTLS13, InsecureSkipVerify: true}) //nolint:gosec // the test's point
	foreign := cpdial.DefaultConfig()
	foreign.Credentials = pki.ClientCredentials(source(t, otherCA, t.TempDir(), routerID), nil)
	plain := cpdial.DefaultConfig()
	for name, cfg := range map[string]cpdial.Config{"plaintext": plain, "no certificate": noCert, "another CA": foreign} {
		conn := dialWith(t, addr, cfg)
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, err := contextv1.NewContextServiceClient(conn).CreateContext(tenantmd.Outgoing(cctx, tenant, 0), &contextv1.CreateContextRequest{ContextId: "evil", RequestId: "e1"})
		if err == nil {
			t.Fatalf("%s: CreateContext succeeded", name)
		}
		_, err = cellv1.NewCellServiceClient(conn).DeleteTenant(cctx, &cellv1.DeleteTenantRequest{Tenant: tenant, RequestId: "e2", Force: true})
		if err == nil {
			t.Fatalf("%s: DeleteTenant succeeded", name)
		}
		exp, err := replicationv1.NewReplicationServiceClient(conn).ExportTenant(cctx, &replicationv1.ExportTenantRequest{Tenant: tenant})
		if err == nil {
			_, err = exp.Recv()
		}
		if err == nil {
			t.Fatalf("%s: ExportTenant succeeded", name)
		}
		cancel()
	}

	// ContextService: operators and clients go through the router.
	for _, id := range []pki.Identity{adminID, clientID, cpID} {
		cs := contextv1.NewContextServiceClient(c.dialAs(t, addr, id))
		_, err := cs.CreateContext(tenantmd.Outgoing(ctx, tenant, 0), &contextv1.CreateContextRequest{ContextId: "evil", RequestId: "e3"})
		denied(t, "CreateContext as "+id.String(), err, codes.PermissionDenied)
		_, err = cs.Fork(tenantmd.Outgoing(ctx, tenant, 0), &contextv1.ForkRequest{ContextId: "keep", NewContextId: "evil-fork", RequestId: "e3f"})
		denied(t, "Fork as "+id.String(), err, codes.PermissionDenied)
		_, err = cs.Compact(tenantmd.Outgoing(ctx, tenant, 0), &contextv1.CompactRequest{ContextId: "keep", UpToSeq: 1, Summary: "evil", RequestId: "e3c"})
		denied(t, "Compact as "+id.String(), err, codes.PermissionDenied)
	}
	// ContextService: a node of another cell.
	_, err = contextv1.NewContextServiceClient(c.dialAs(t, addr, otherCell)).
		CreateContext(tenantmd.Outgoing(ctx, tenant, 0), &contextv1.CreateContextRequest{ContextId: "evil", RequestId: "e4"})
	denied(t, "CreateContext as another cell's node", err, codes.PermissionDenied)
	_, err = contextv1.NewContextServiceClient(c.dialAs(t, addr, otherCell)).
		Fork(tenantmd.Outgoing(ctx, tenant, 0), &contextv1.ForkRequest{ContextId: "keep", NewContextId: "evil-fork", RequestId: "e4f"})
	denied(t, "Fork as another cell's node", err, codes.PermissionDenied)
	// ... even claiming the call was forwarded.
	_, err = contextv1.NewContextServiceClient(c.dialAs(t, addr, otherCell)).
		CreateContext(tenantmd.WithForwarded(tenantmd.Outgoing(ctx, tenant, 0)), &contextv1.CreateContextRequest{ContextId: "evil", RequestId: "e5"})
	denied(t, "forwarded CreateContext as another cell's node", err, codes.PermissionDenied)

	// CellService: only the control plane changes tenants.
	for _, id := range []pki.Identity{routerID, workerID, readOnlyID, adminID, otherCell} {
		cs := cellv1.NewCellServiceClient(c.dialAs(t, addr, id))
		_, err := cs.DeleteTenant(ctx, &cellv1.DeleteTenantRequest{Tenant: tenant, RequestId: "e6", Force: true})
		denied(t, "DeleteTenant as "+id.String(), err, codes.PermissionDenied)
		_, err = cs.SetTenant(ctx, &cellv1.SetTenantRequest{Tenant: tenant, Role: cellv1.Role_ROLE_FENCED, Epoch: 2, RequestId: "e7"})
		denied(t, "SetTenant as "+id.String(), err, codes.PermissionDenied)
		// Erasure: the control plane only (an admin operator erases
		// through it, which reports where the erase applied).
		_, err = cs.EraseSubject(ctx, &cellv1.EraseSubjectRequest{Tenant: tenant, ContextId: "keep", RequestId: "e8"})
		denied(t, "EraseSubject as "+id.String(), err, codes.PermissionDenied)
	}
	// Audit records: the control plane and admin operators.
	for _, id := range []pki.Identity{routerID, workerID, readOnlyID, clientID, otherCell} {
		_, err := cellv1.NewCellServiceClient(c.dialAs(t, addr, id)).ListAudit(ctx, &cellv1.ListAuditRequest{Tenant: tenant})
		denied(t, "ListAudit as "+id.String(), err, codes.PermissionDenied)
	}
	if resp, err := cellv1.NewCellServiceClient(c.dialAs(t, addr, adminID)).ListAudit(ctx, &cellv1.ListAuditRequest{Tenant: tenant}); err != nil || len(resp.GetRecords()) == 0 {
		t.Fatalf("ListAudit as an admin operator: %v, %v", resp, err)
	}
	// CellService: a node registers itself, never another node, and
	// joins only itself.
	follower := followerOf(c.nodes, c.leader)
	n2 := cellv1.NewCellServiceClient(c.dialAs(t, addr, pki.NodeIdentity(tlsCluster, "eu", "c1", follower.Info().GetNodeId())))
	var victim *cells.Node
	for _, n := range c.nodes {
		if n != c.leader && n != follower {
			victim = n
		}
	}
	forged := &cellv1.NodeInfo{NodeId: victim.Info().GetNodeId(), RaftAddr: victim.Info().GetRaftAddr(), GrpcAddr: "127.0.0.1:1", HttpAddr: "127.0.0.1:2"}
	_, err = n2.RegisterNode(ctx, &cellv1.RegisterNodeRequest{Node: forged})
	denied(t, "RegisterNode for another node", err, codes.PermissionDenied)
	_, err = n2.AddVoter(ctx, &cellv1.AddVoterRequest{Node: &cellv1.NodeInfo{NodeId: "n9", RaftAddr: "127.0.0.1:3"}})
	denied(t, "AddVoter for another node", err, codes.PermissionDenied)
	_, err = n2.RemoveServer(ctx, &cellv1.RemoveServerRequest{NodeId: victim.Info().GetNodeId()})
	denied(t, "RemoveServer as a node", err, codes.PermissionDenied)
	// Re-registering itself is allowed.
	if _, err := n2.RegisterNode(ctx, &cellv1.RegisterNodeRequest{Node: follower.Info()}); err != nil {
		t.Fatalf("RegisterNode of itself: %v", err)
	}
	st, err := cp.GetStatus(ctx, &cellv1.GetStatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range st.GetMembers() {
		if m.GetNode().GetGrpcAddr() == forged.GetGrpcAddr() || m.GetNode().GetNodeId() == "n9" {
			t.Fatalf("membership changed by a refused call: %v", m)
		}
	}
	if len(st.GetMembers()) != 3 {
		t.Fatalf("members %v", st.GetMembers())
	}

	// ReplicationService: only nodes.
	for _, id := range []pki.Identity{routerID, adminID, clientID, cpID} {
		exp, err := replicationv1.NewReplicationServiceClient(c.dialAs(t, addr, id)).ExportTenant(ctx, &replicationv1.ExportTenantRequest{Tenant: tenant})
		if err == nil {
			_, err = exp.Recv()
		}
		denied(t, "ExportTenant as "+id.String(), err, codes.PermissionDenied)
		sc, err := replicationv1.NewReplicationServiceClient(c.dialAs(t, addr, id)).StreamChanges(ctx, &replicationv1.StreamChangesRequest{Tenant: tenant})
		if err == nil {
			_, err = sc.Recv()
		}
		denied(t, "StreamChanges as "+id.String(), err, codes.PermissionDenied)
	}

	if got := tenantState(); got != beforeTenant {
		t.Fatalf("tenant changed by refused calls: %s, was %s", got, beforeTenant)
	}
	if got := contexts(t, ctx, router); !slices.Equal(got, beforeContexts) {
		t.Fatalf("contexts changed by refused calls: %v, were %v", got, beforeContexts)
	}
	if kept, err := router.GetContext(tenantmd.Outgoing(ctx, tenant, 0), &contextv1.GetContextRequest{ContextId: "keep"}); err != nil || kept.GetContext().GetCompactedSeq() != 0 {
		t.Fatalf("context compacted by refused calls: %v, %v", kept, err)
	}
	// The allowed identity can do what the others could not.
	if _, err := cp.DeleteTenant(ctx, &cellv1.DeleteTenantRequest{Tenant: tenant, RequestId: "ok", Force: true}); err != nil {
		t.Fatalf("DeleteTenant as the control plane: %v", err)
	}
}

// TestCellTLSJoinWithoutMaterial: a node without TLS material cannot join a

// TestCellTLSHTTP: a TLS node's HTTP port serves mutual TLS only and
// authorises by mcp.HTTPPolicy: MCP from a router only (plaintext, no
// certificate, another CA's and every other identity refused, nothing
// written), /metrics from components and operators, never a tenant's
// client certificate.
func TestCellTLSHTTP(t *testing.T) {
	c := startTLSCell(t)
	ctx := testutil.Context(t, time.Minute)
	celltest.OwnWith(t, c.dialConfig(t, cpID), c.leader.GRPCAddr(), tenant)
	node := followerOf(c.nodes, c.leader)
	otherCA, err := pki.NewCA(tlsCluster, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	transport := func(cfg *tls.Config) *http.Client {
		tr := &http.Transport{TLSClientConfig: cfg}
		t.Cleanup(tr.CloseIdleConnections)
		return &http.Client{Transport: tr}
	}
	for _, tc := range []struct {
		name         string
		client       *http.Client
		scheme       string
		mcp, metrics bool
	}{
		{name: "router", client: c.httpClient(t, routerID), mcp: true, metrics: true},
		{name: "plaintext", client: http.DefaultClient, scheme: "http"},
		{name: "no certificate", client: transport(&tls.Config{MinVersion: tls.VersionTLS13, InsecureSkipVerify: true})}, //nolint:gosec // the test's point
		{name: "another CA", client: transport(source(t, otherCA, t.TempDir(), routerID).ClientTLSConfig(nil))},
		{name: "tenant client", client: c.httpClient(t, clientID)},
		{name: "admin operator", client: c.httpClient(t, adminID), metrics: true},
		{name: "read-only operator", client: c.httpClient(t, readOnlyID), metrics: true},
		{name: "control plane", client: c.httpClient(t, cpID), metrics: true},
		{name: "worker", client: c.httpClient(t, workerID), metrics: true},
		{name: "node of another cell", client: c.httpClient(t, otherCell), metrics: true},
	} {
		scheme := tc.scheme
		if scheme == "" {
			scheme = "https"
		}
		base := scheme + "://" + node.HTTPAddr()
		id := strings.ReplaceAll(tc.name, " ", "-")
		err := func() error {
			mcs, err := sdk.NewClient(&sdk.Implementation{Name: "agent", Version: "v0"}, nil).Connect(ctx,
				&sdk.StreamableClientTransport{Endpoint: base + "/t/" + tenant + "/mcp", HTTPClient: tc.client, MaxRetries: -1}, nil)
			if err != nil {
				return err
			}
			defer mcs.Close()
			res, err := mcs.CallTool(ctx, &sdk.CallToolParams{Name: "context_create", Arguments: map[string]any{"context_id": id}})
			if err == nil && res.IsError {
				err = fmt.Errorf("tool error %v", res.Content)
			}
			return err
		}()
		if (err == nil) != tc.mcp {
			t.Errorf("%s: MCP context_create: %v, want served %v", tc.name, err, tc.mcp)
		}
		code := 0
		if resp, err := tc.client.Get(base + "/metrics"); err == nil {
			code = resp.StatusCode
			_ = resp.Body.Close()
		}
		if (code == http.StatusOK) != tc.metrics {
			t.Errorf("%s: /metrics = %d, want served %v", tc.name, code, tc.metrics)
		}
	}
	// Only the router's context exists.
	got := contexts(t, ctx, contextv1.NewContextServiceClient(c.dialAs(t, c.leader.GRPCAddr(), routerID)))
	if !slices.Equal(got, []string{"router"}) {
		t.Fatalf("contexts after the refusals: %v", got)
	}
}

// cell that requires it: the join fails with a clear error, no fallback.
func TestCellTLSJoinWithoutMaterial(t *testing.T) {
	c := startTLSCell(t)
	cfg := celltest.NodeConfig(t, "n4")
	cfg.CellID = "c1"
	cfg.Join = c.leader.GRPCAddr()
	ctx, cancel := context.WithTimeout(testutil.Context(t, time.Minute), 3*time.Second)
	defer cancel()
	n, err := cells.Start(ctx, cfg)
	if err == nil {
		_ = n.Close()
		t.Fatal("a node without TLS material joined a TLS cell")
	}
	if !errors.Is(err, context.DeadlineExceeded) && !strings.Contains(err.Error(), "join") {
		t.Fatalf("join error: %v", err)
	}
}

// Every RPC of the node's three services is in the table, and the table
// names no method they do not have.
func TestCellPolicyCoversEveryRPC(t *testing.T) {
	if missing := missingFromCellPolicy(cells.Policy()); len(missing) > 0 {
		t.Fatalf("RPCs missing from cells.Policy (add who may call them, and to docs/security.md): %v", missing)
	}
	p := cells.Policy()
	delete(p, "/cellplane.cell.v1.CellService/DeleteTenant")
	if got := missingFromCellPolicy(p); !slices.Equal(got, []string{"/cellplane.cell.v1.CellService/DeleteTenant"}) {
		t.Fatalf("a table without DeleteTenant: missing %v", got)
	}
	known := map[string]bool{}
	for _, sd := range cellServices() {
		for i := range sd.Methods().Len() {
			known["/"+string(sd.FullName())+"/"+string(sd.Methods().Get(i).Name())] = true
		}
	}
	for m := range cells.Policy() {
		if strings.HasPrefix(m, "/cellplane.") && !known[m] {
			t.Errorf("Policy names %s, which no service of the node has", m)
		}
	}
}

func cellServices() []protoreflect.ServiceDescriptor {
	return []protoreflect.ServiceDescriptor{
		cellv1.File_cellplane_cell_v1_cell_proto.Services().ByName("CellService"),
		contextv1.File_cellplane_context_v1_context_proto.Services().ByName("ContextService"),
		replicationv1.File_cellplane_replication_v1_replication_proto.Services().ByName("ReplicationService"),
	}
}

func missingFromCellPolicy(p map[string]cells.Access) []string {
	var missing []string
	for _, sd := range cellServices() {
		for i := range sd.Methods().Len() {
			full := "/" + string(sd.FullName()) + "/" + string(sd.Methods().Get(i).Name())
			if _, ok := p[full]; !ok {
				missing = append(missing, full)
			}
		}
	}
	return missing
}

// docs/security.md's "Cell gRPC" table mirrors cells.Policy: one row per
// method, `| `package.Service/Method` | who |`.
func TestCellPolicyDocumented(t *testing.T) {
	b, err := os.ReadFile("../docs/security.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	rows := map[string]bool{}
	for m, a := range cells.Policy() {
		row := fmt.Sprintf("| `%s` | %s |", strings.TrimPrefix(m, "/"), a.Describe())
		rows[row] = true
		if !strings.Contains(doc, row) {
			t.Errorf("docs/security.md lacks the row %s", row)
		}
	}
	// And the section has no row the table does not.
	_, section, ok := strings.Cut(doc, "\n## Cell gRPC (C1, C2)\n")
	if !ok {
		t.Fatal(`docs/security.md has no "## Cell gRPC (C1, C2)" section`)
	}
	section, _, _ = strings.Cut(section, "\n## ")
	for _, line := range strings.Split(section, "\n") {
		if strings.HasPrefix(line, "| `") && !rows[line] {
			t.Errorf("docs/security.md has a row cells.Policy does not: %s", line)
		}
	}
}

// Access.Allows, rule by rule.
func TestAccessAllows(t *testing.T) {
	self := pki.NodeIdentity(tlsCluster, "eu", "c1", "n1")
	peer := pki.NodeIdentity(tlsCluster, "eu", "c1", "n2")
	p := cells.Policy()
	m := func(svc, name string) cells.Access { return p["/cellplane."+svc+"/"+name] }
	tests := []struct {
		name      string
		access    cells.Access
		id        pki.Identity
		reqNode   string
		forwarded bool
		want      bool
	}{
		{"control plane deletes", m("cell.v1.CellService", "DeleteTenant"), cpID, "", false, true},
		{"router deletes", m("cell.v1.CellService", "DeleteTenant"), routerID, "", false, false},
		{"peer forwards a delete", m("cell.v1.CellService", "DeleteTenant"), peer, "", true, true},
		{"peer deletes unforwarded", m("cell.v1.CellService", "DeleteTenant"), peer, "", false, false},
		{"other cell forwards a delete", m("cell.v1.CellService", "DeleteTenant"), otherCell, "", true, false},
		{"node registers itself", m("cell.v1.CellService", "RegisterNode"), peer, "n2", false, true},
		{"node registers another", m("cell.v1.CellService", "RegisterNode"), peer, "n3", false, false},
		{"other cell's node registers its namesake", m("cell.v1.CellService", "RegisterNode"), pki.NodeIdentity(tlsCluster, "eu", "c2", "n2"), "n2", false, false},
		{"control plane registers", m("cell.v1.CellService", "RegisterNode"), cpID, "n2", false, false},
		{"node joins itself", m("cell.v1.CellService", "AddVoter"), peer, "n2", false, true},
		{"node joins another", m("cell.v1.CellService", "AddVoter"), peer, "n9", false, false},
		{"control plane adds a voter", m("cell.v1.CellService", "AddVoter"), cpID, "n9", false, true},
		{"node removes a member", m("cell.v1.CellService", "RemoveServer"), peer, "", false, false},
		{"admin reads changes", m("cell.v1.CellService", "ListChanges"), adminID, "", false, true},
		{"read-only reads changes", m("cell.v1.CellService", "ListChanges"), readOnlyID, "", false, false},
		{"read-only status", m("cell.v1.CellService", "GetStatus"), readOnlyID, "", false, true},
		{"other cell acks", m("cell.v1.CellService", "AckReplica"), otherCell, "", false, true},
		{"router acks", m("cell.v1.CellService", "AckReplica"), routerID, "", false, false},
		{"other cell exports", m("replication.v1.ReplicationService", "ExportTenant"), otherCell, "", false, true},
		{"admin exports", m("replication.v1.ReplicationService", "ExportTenant"), adminID, "", false, false},
		{"router appends", m("context.v1.ContextService", "Append"), routerID, "", false, true},
		{"worker reads", m("context.v1.ContextService", "Read"), workerID, "", false, true},
		{"peer appends", m("context.v1.ContextService", "Append"), peer, "", false, true},
		{"other cell appends", m("context.v1.ContextService", "Append"), otherCell, "", true, false},
		{"client appends", m("context.v1.ContextService", "Append"), clientID, "", false, false},
		{"admin appends", m("context.v1.ContextService", "Append"), adminID, "", false, false},
		{"control plane appends", m("context.v1.ContextService", "Append"), cpID, "", false, false},
		{"control plane erases", m("cell.v1.CellService", "EraseSubject"), cpID, "", false, true},
		{"admin erases directly", m("cell.v1.CellService", "EraseSubject"), adminID, "", false, false},
		{"read-only erases", m("cell.v1.CellService", "EraseSubject"), readOnlyID, "", false, false},
		{"router erases", m("cell.v1.CellService", "EraseSubject"), routerID, "", false, false},
		{"worker erases", m("cell.v1.CellService", "EraseSubject"), workerID, "", false, false},
		{"tenant client erases", m("cell.v1.CellService", "EraseSubject"), clientID, "", false, false},
		{"peer forwards an erase", m("cell.v1.CellService", "EraseSubject"), peer, "", true, true},
		{"admin reads the audit", m("cell.v1.CellService", "ListAudit"), adminID, "", false, true},
		{"read-only reads the audit", m("cell.v1.CellService", "ListAudit"), readOnlyID, "", false, false},
		{"router reads the audit", m("cell.v1.CellService", "ListAudit"), routerID, "", false, false},
		{"tenant client reads the audit", m("cell.v1.CellService", "ListAudit"), clientID, "", false, false},
		{"client checks health", p["/grpc.health.v1.Health/Check"], clientID, "", false, true},
		{"unknown method", cells.Access{}, adminID, "", false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.access.Allows(self, tt.id, tt.reqNode, tt.forwarded); got != tt.want {
				t.Fatalf("Allows(%s, node %q, forwarded %v) = %v, want %v", tt.id, tt.reqNode, tt.forwarded, got, tt.want)
			}
		})
	}
}
