package controlplane_test

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/goleak"
	"go.uber.org/zap"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/cellplane/cellplane/controlplane"
	"github.com/cellplane/cellplane/controlplane/cptest"
	"github.com/cellplane/cellplane/controlplane/topo/topotest"
	"github.com/cellplane/cellplane/internal/cperr"
	"github.com/cellplane/cellplane/internal/dial"
	"github.com/cellplane/cellplane/internal/rpcerr"
	"github.com/cellplane/cellplane/internal/testutil"
	cellv1 "github.com/cellplane/cellplane/proto/cellplane/cell/v1"
	cpv1 "github.com/cellplane/cellplane/proto/cellplane/controlplane/v1"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func wantReason(t *testing.T, what string, err error, code codes.Code, reason cperr.Reason) {
	t.Helper()
	if status.Code(err) != code {
		t.Fatalf("%s: code %v (%v), want %v", what, status.Code(err), err, code)
	}
	if got := cperr.ReasonOf(rpcerr.FromStatus(err)); got != reason {
		t.Fatalf("%s: reason %q (%v), want %q", what, got, err, reason)
	}
}

// The API's error contract, over real gRPC on a real etcd.
func TestAPIErrors(t *testing.T) {
	env := cptest.New(t)
	cl := env.Client(t)
	ctx := testutil.Context(t, 30*time.Second)

	_, err := cl.CreateRegion(ctx, &cpv1.CreateRegionRequest{Name: "bad name!"})
	wantReason(t, "bad region name", err, codes.InvalidArgument, cperr.InvalidArgument)
	if _, err := cl.CreateRegion(ctx, &cpv1.CreateRegionRequest{Name: "us-east"}); err != nil {
		t.Fatal(err)
	}
	_, err = cl.CreateRegion(ctx, &cpv1.CreateRegionRequest{Name: "us-east"})
	wantReason(t, "region twice", err, codes.AlreadyExists, cperr.AlreadyExists)
	_, err = cl.CreateCell(ctx, &cpv1.CreateCellRequest{Id: "c1", Region: "nowhere"})
	wantReason(t, "cell in unknown region", err, codes.NotFound, cperr.RegionNotFound)
	_, err = cl.CreateCell(ctx, &cpv1.CreateCellRequest{Id: "c1", Region: "us-east", ExpectedMembers: 4})
	wantReason(t, "even cell", err, codes.InvalidArgument, cperr.InvalidArgument)
	_, err = cl.GetCell(ctx, &cpv1.GetCellRequest{Id: "c9"})
	wantReason(t, "unknown cell", err, codes.NotFound, cperr.CellNotFound)
	_, err = cl.CreateTenant(ctx, &cpv1.CreateTenantRequest{Id: "acme", HomeRegion: "us-east"})
	wantReason(t, "tenant in a region without cells", err, codes.FailedPrecondition, cperr.NoCapacity)
	if !strings.Contains(status.Convert(err).Message(), "cellctl cell create") {
		t.Fatalf("NO_CAPACITY message %q does not tell the operator what to do", status.Convert(err).Message())
	}
	_, err = cl.CreateTenant(ctx, &cpv1.CreateTenantRequest{Id: "acme", HomeRegion: "mars"})
	wantReason(t, "tenant in unknown region", err, codes.NotFound, cperr.RegionNotFound)
	_, err = cl.GetTenant(ctx, &cpv1.GetTenantRequest{Id: "acme"})
	wantReason(t, "unknown tenant", err, codes.NotFound, cperr.TenantNotFound)
	_, err = cl.ListTenants(ctx, &cpv1.ListTenantsRequest{PageToken: "!!"})
	wantReason(t, "bad page token", err, codes.InvalidArgument, cperr.InvalidArgument)
	_, err = cl.CreateApiKey(ctx, &cpv1.CreateApiKeyRequest{Tenant: "acme"})
	wantReason(t, "key of unknown tenant", err, codes.NotFound, cperr.TenantNotFound)

	// Cordon: a cordoned cell takes no tenant, even when asked by name.
	if _, err := cl.CreateCell(ctx, &cpv1.CreateCellRequest{Id: "c1", Region: "us-east"}); err != nil {
		t.Fatal(err)
	}
	if _, err := cl.CordonCell(ctx, &cpv1.CordonCellRequest{Id: "c1"}); err != nil {
		t.Fatal(err)
	}
	_, err = cl.CreateTenant(ctx, &cpv1.CreateTenantRequest{Id: "acme", HomeRegion: "us-east", Cell: "c1"})
	wantReason(t, "tenant on a cordoned cell", err, codes.FailedPrecondition, cperr.CellNotActive)
	_, err = cl.CreateTenant(ctx, &cpv1.CreateTenantRequest{Id: "acme", HomeRegion: "us-east"})
	wantReason(t, "tenant with only a cordoned cell", err, codes.FailedPrecondition, cperr.NoCapacity)
}

// A tenant created through the API ends up OWNER at epoch 1 in a real
// 3-node cell formed from the registry; API keys are stored hashed; delete
// removes the cell's data and every record.
func TestTenantLifecycleOnRealCell(t *testing.T) {
	if testing.Short() {
		t.Skip("starts etcd, a control plane and a 3-node cell")
	}
	env := cptest.New(t)
	nodes := env.CreateCell(t, "us-east", "use1-a", 3)
	cl := env.Client(t)
	ctx := testutil.Context(t, 60*time.Second)

	st, err := cl.GetStatus(ctx, &cpv1.GetStatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(st.GetCells()) != 1 || len(st.GetCells()[0].GetNodes()) != 3 || st.GetCells()[0].GetLeader().GetNodeId() == "" {
		t.Fatalf("status: %v", st)
	}
	if st.GetControllerLeader().GetId() != "cp1" {
		t.Fatalf("controller leader %q, want cp1", st.GetControllerLeader().GetId())
	}

	resp, err := cl.CreateTenant(ctx, &cpv1.CreateTenantRequest{Id: "acme", HomeRegion: "us-east", Limits: &cpv1.TenantLimits{Rate: 100, Burst: 200}})
	if err != nil {
		t.Fatal(err)
	}
	tn := resp.GetTenant()
	if tn.GetCell() != "use1-a" || tn.GetEpoch() != 1 || tn.GetState() != cpv1.TenantState_TENANT_STATE_ACTIVE || tn.GetLimits().GetBurst() != 200 {
		t.Fatalf("created tenant %v", tn)
	}
	_, err = cl.CreateTenant(ctx, &cpv1.CreateTenantRequest{Id: "acme", HomeRegion: "us-east"})
	wantReason(t, "tenant twice", err, codes.AlreadyExists, cperr.AlreadyExists)

	// Every member of the cell agrees: OWNER at epoch 1.
	for _, n := range nodes {
		info := cellTenant(t, n.GRPCAddr(), "acme")
		if info.GetRole() != cellv1.Role_ROLE_OWNER || info.GetEpoch() != 1 {
			t.Fatalf("node %s: tenant %v, want OWNER at epoch 1", n.Info().GetNodeId(), info)
		}
	}

	key, err := cl.CreateApiKey(ctx, &cpv1.CreateApiKeyRequest{Tenant: "acme", Description: "ci"})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(key.GetSecret(), "cpk_"+key.GetKey().GetId()+"_") || len(key.GetKey().GetSecretHash()) != 0 {
		t.Fatalf("key %v: secret shape or hash leaked", key)
	}
	keys, err := cl.ListApiKeys(ctx, &cpv1.ListApiKeysRequest{Tenant: "acme"})
	if err != nil || len(keys.GetKeys()) != 1 || len(keys.GetKeys()[0].GetSecretHash()) != 0 {
		t.Fatalf("list keys: %v %v", keys, err)
	}
	rev, err := cl.RevokeApiKey(ctx, &cpv1.RevokeApiKeyRequest{Tenant: "acme", Id: key.GetKey().GetId()})
	if err != nil || rev.GetKey().GetRevokeTime() == nil {
		t.Fatalf("revoke: %v %v", rev, err)
	}
	_, err = cl.RevokeApiKey(ctx, &cpv1.RevokeApiKeyRequest{Tenant: "acme", Id: "0000000000000000"})
	wantReason(t, "revoke unknown key", err, codes.NotFound, cperr.APIKeyNotFound)

	cs, err := cl.GetCell(ctx, &cpv1.GetCellRequest{Id: "use1-a"})
	if err != nil || cs.GetCell().GetLoad().GetTenants() != 1 {
		t.Fatalf("cell load: %v %v", cs, err)
	}

	if _, err := cl.DeleteTenant(ctx, &cpv1.DeleteTenantRequest{Id: "acme"}); err != nil {
		t.Fatal(err)
	}
	_, err = cl.GetTenant(ctx, &cpv1.GetTenantRequest{Id: "acme"})
	wantReason(t, "deleted tenant", err, codes.NotFound, cperr.TenantNotFound)
	for _, n := range nodes {
		_, err := cellClient(t, n.GRPCAddr()).GetTenant(ctx, &cellv1.GetTenantRequest{Tenant: "acme"})
		if err == nil {
			t.Fatalf("node %s still has the deleted tenant", n.Info().GetNodeId())
		}
	}
	cs, err = cl.GetCell(ctx, &cpv1.GetCellRequest{Id: "use1-a"})
	if err != nil || cs.GetCell().GetLoad().GetTenants() != 0 {
		t.Fatalf("cell load after delete: %v %v", cs, err)
	}
}

// Two replicas on one etcd: one leads; when it is killed the other leads
// within a few seconds and drives the workflows.
func TestControllerFailover(t *testing.T) {
	if testing.Short() {
		t.Skip("starts etcd, two control planes and a 3-node cell")
	}
	env := cptest.New(t)
	env.CreateCell(t, "us-east", "c1", 3)
	second := env.AddReplica(t, "cp2")
	first := env.Replicas[0]
	if !first.IsLeader() || second.IsLeader() {
		t.Fatalf("leaders: cp1=%v cp2=%v, want cp1 only", first.IsLeader(), second.IsLeader())
	}
	start := time.Now()
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, func() error {
		if !second.IsLeader() {
			return errors.New("cp2 does not lead yet")
		}
		return nil
	})
	t.Logf("cp2 took over %v after cp1 stopped", time.Since(start).Round(time.Millisecond))
	cl := cptest.Dial(t, second.GRPCAddr())
	ctx := testutil.Context(t, 30*time.Second)
	resp, err := cl.CreateTenant(ctx, &cpv1.CreateTenantRequest{Id: "after-failover", HomeRegion: "us-east"})
	if err != nil || resp.GetTenant().GetCell() != "c1" {
		t.Fatalf("create after failover: %v %v", resp, err)
	}
	metrics := httpGet(t, "http://"+second.HTTPAddr()+"/metrics")
	for _, want := range []string{
		`cellplane_cell_health{cell="c1",health="HEALTHY",region="us-east"} 1`,
		`cellplane_cell_live_members{cell="c1",region="us-east"} 3`,
		`cellplane_cell_tenants{cell="c1",region="us-east"} 1`,
		`cellplane_controller_leader 1`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	// readyz names the new leader.
	body := httpGet(t, "http://"+second.HTTPAddr()+"/readyz")
	if !strings.Contains(body, `"controller_leader":"cp2"`) || !strings.Contains(body, `"ready":true`) {
		t.Fatalf("readyz: %s", body)
	}
}

// A killed leader (no resignation: its lease just stops being renewed) is
// replaced within a few seconds: the session TTL (1 s here) plus an
// election.
func TestKilledControllerReplaced(t *testing.T) {
	if testing.Short() {
		t.Skip("starts etcd and two control planes")
	}
	env := &cptest.Env{Endpoints: topotest.StartEtcd(t)}
	first := env.AddReplica(t, "cp1", func(c *controlplane.Config) { c.Controller.TestingKnobs.Abandon = true })
	testutil.Eventually(t, 10*time.Second, func() error {
		if !first.IsLeader() {
			return errors.New("cp1 does not lead yet")
		}
		return nil
	})
	second := env.AddReplica(t, "cp2")
	start := time.Now()
	_ = first.Close() // the process dies: nothing resigns, the lease lapses
	testutil.Eventually(t, 15*time.Second, func() error {
		if !second.IsLeader() {
			return errors.New("cp2 does not lead yet")
		}
		return nil
	})
	took := time.Since(start)
	t.Logf("cp2 took over %v after cp1 was killed", took.Round(time.Millisecond))
	if took < 500*time.Millisecond {
		t.Fatalf("cp2 led after %v: before cp1's lease could have expired (did cp1 resign?)", took)
	}
}

func TestListenErrorNamesTheAddress(t *testing.T) {
	taken := testutil.Listen(t)
	cfg := controlplane.DefaultConfig()
	cfg.EtcdEndpoints = []string{"http://127.0.0.1:1"}
	cfg.GRPCAddr = taken.Addr().String()
	cfg.HTTPListener = testutil.Listen(t)
	_, err := controlplane.Start(testutil.Context(t, 10*time.Second), cfg)
	var le *controlplane.ListenError
	if !errors.As(err, &le) || le.Name != "grpc" || !strings.Contains(err.Error(), "already in use") {
		t.Fatalf("Start on a taken port: %v", err)
	}
}

func TestUnreachableEtcdFailsStart(t *testing.T) {
	cfg := controlplane.DefaultConfig()
	cfg.EtcdEndpoints = []string{"http://127.0.0.1:1"}
	cfg.EtcdDialTimeout = 500 * time.Millisecond
	cfg.GRPCListener = testutil.Listen(t)
	cfg.HTTPListener = testutil.Listen(t)
	start := time.Now()
	_, err := controlplane.Start(testutil.Context(t, 10*time.Second), cfg)
	if err == nil {
		t.Fatal("Start with an unreachable etcd succeeded")
	}
	if time.Since(start) > 5*time.Second {
		t.Fatalf("Start took %v to fail", time.Since(start))
	}
}

func cellClient(t *testing.T, addr string) cellv1.CellServiceClient {
	conn, err := dial.New(addr, dial.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return cellv1.NewCellServiceClient(conn)
}

func cellTenant(t *testing.T, addr, tenant string) *cellv1.TenantInfo {
	t.Helper()
	resp, err := cellClient(t, addr).GetTenant(testutil.Context(t, 10*time.Second), &cellv1.GetTenantRequest{Tenant: tenant})
	if err != nil {
		t.Fatalf("GetTenant at %s: %v", addr, err)
	}
	return resp.GetTenant()
}

func httpGet(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return fmt.Sprintf("%d %s", resp.StatusCode, b)
}

// freeURL returns an http URL on a loopback port that was free a moment
// ago (embedded etcd binds its own listeners).
func freeURL(t *testing.T) string {
	l := testutil.Listen(t)
	addr := l.Addr().String()
	_ = l.Close()
	return "http://" + addr
}

// Without endpoints the replica embeds etcd in its data dir; a restart on
// the same dir finds everything again.
func TestEmbeddedEtcdKeepsDataAcrossRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("starts embedded etcd twice")
	}
	dir := t.TempDir()
	clientURL, peerURL := freeURL(t), freeURL(t)
	start := func() *controlplane.Server {
		cfg := controlplane.DefaultConfig()
		cfg.ID = "solo"
		cfg.DataDir = dir
		cfg.EmbeddedClientURL, cfg.EmbeddedPeerURL = clientURL, peerURL
		cfg.GRPCListener, cfg.HTTPListener = testutil.Listen(t), testutil.Listen(t)
		cfg.Controller.SessionTTL = time.Second
		cfg.EtcdUnsafeNoFsync = true
		cfg.Logger = testutil.Logger(t)
		s, err := controlplane.Start(testutil.Context(t, 30*time.Second), cfg)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	s := start()
	if got := s.EtcdEndpoints(); len(got) != 1 || got[0] != clientURL {
		t.Fatalf("embedded endpoints %v, want [%s]", got, clientURL)
	}
	ctx := testutil.Context(t, 30*time.Second)
	if _, err := cptest.Dial(t, s.GRPCAddr()).CreateRegion(ctx, &cpv1.CreateRegionRequest{Name: "eu-west"}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = start()
	defer s.Close()
	regions, err := cptest.Dial(t, s.GRPCAddr()).ListRegions(ctx, &cpv1.ListRegionsRequest{})
	if err != nil || len(regions.GetRegions()) != 1 || regions.GetRegions()[0].GetName() != "eu-west" {
		t.Fatalf("after restart: %v %v", regions, err)
	}
}

// The embedded member's NOSPACE alarm makes /readyz answer 503 naming
// it, and shows as cellplane_etcd_alarm{type="NOSPACE"} 1.
func TestReadyzReportsEtcdAlarm(t *testing.T) {
	if testing.Short() {
		t.Skip("starts embedded etcd")
	}
	clientURL, peerURL := freeURL(t), freeURL(t)
	cfg := controlplane.DefaultConfig()
	cfg.ID = "solo"
	cfg.DataDir = t.TempDir()
	cfg.EmbeddedClientURL, cfg.EmbeddedPeerURL = clientURL, peerURL
	cfg.GRPCListener, cfg.HTTPListener = testutil.Listen(t), testutil.Listen(t)
	cfg.Controller.SessionTTL = time.Second
	cfg.EtcdUnsafeNoFsync = true
	cfg.EmbeddedEtcdHealth.QuotaBackendBytes = 1 << 20
	cfg.Logger = testutil.Logger(t)
	s, err := controlplane.Start(testutil.Context(t, 30*time.Second), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if body := httpGet(t, "http://"+s.HTTPAddr()+"/readyz"); !strings.HasPrefix(body, "200 ") {
		t.Fatalf("readyz before the alarm: %s", body)
	}
	if body := httpGet(t, "http://"+s.HTTPAddr()+"/metrics"); !strings.Contains(body, `cellplane_etcd_alarm{type="NOSPACE"} 0`) {
		t.Fatalf("metrics lack cellplane_etcd_alarm{type=\"NOSPACE\"} 0")
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{clientURL}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cli.Close() }()
	ctx := testutil.Context(t, 30*time.Second)
	val := string(make([]byte, 64<<10))
	for i := 0; ; i++ {
		if _, err := cli.Put(ctx, "/filler", val); err != nil {
			break
		}
		if i > 200 {
			t.Fatal("no NOSPACE under a 1 MiB quota")
		}
	}
	body := httpGet(t, "http://"+s.HTTPAddr()+"/readyz")
	if !strings.HasPrefix(body, "503 ") || !strings.Contains(body, `"etcd_alarms":["NOSPACE"]`) {
		t.Fatalf("readyz under NOSPACE: %s", body)
	}
	if body := httpGet(t, "http://"+s.HTTPAddr()+"/metrics"); !strings.Contains(body, `cellplane_etcd_alarm{type="NOSPACE"} 1`) {
		t.Fatalf("metrics lack cellplane_etcd_alarm{type=\"NOSPACE\"} 1")
	}
}
