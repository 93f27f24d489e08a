package cells_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/cellplane/cellplane/cells"
	"github.com/cellplane/cellplane/cells/celltest"
	"github.com/cellplane/cellplane/cells/store"
	"github.com/cellplane/cellplane/internal/cperr"
	"github.com/cellplane/cellplane/internal/rpcerr"
	"github.com/cellplane/cellplane/internal/tenantmd"
	"github.com/cellplane/cellplane/internal/testutil"
	cellv1 "github.com/cellplane/cellplane/proto/cellplane/cell/v1"
	contextv1 "github.com/cellplane/cellplane/proto/cellplane/context/v1"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const tenant = "acme"

// nodeConfig returns a config for node id on pre-opened loopback
// listeners, with logs to t.Log.

func followerOf(nodes []*cells.Node, leader *cells.Node) *cells.Node {
	for _, n := range nodes {
		if n != leader {
			return n
		}
	}
	return nil
}

func dial(t *testing.T, addr string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// ownTenant makes the cell OWNER of tenant at epoch 1, through any node.
func ownTenant(t *testing.T, _ context.Context, addr string) {
	t.Helper()
	celltest.Own(t, addr, tenant)
}

func appendText(ctx context.Context, c contextv1.ContextServiceClient, contextID, text string) (*contextv1.AppendResponse, error) {
	return c.Append(tenantmd.Outgoing(ctx, tenant, 0), &contextv1.AppendRequest{
		ContextId: contextID,
		Entries:   []*contextv1.Entry{{Role: "user", Content: &contextv1.Entry_Text{Text: text}}},
		RequestId: "req-" + strings.ReplaceAll(text, " ", "-"),
	})
}

func httpGet(t *testing.T, ctx context.Context, url string) (int, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: read body: %v", url, err)
	}
	return resp.StatusCode, string(body)
}

// TestCell runs the node scenarios on one 3-node cell (starting a cell is
// the slow part). The subtests run in order and build on each other.
func TestCell(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a 3-node cell; skipped with -short")
	}
	ctx := testutil.Context(t, 2*time.Minute)
	nodes := celltest.StartCell(t, 3)
	leader := celltest.WaitLeader(t, nodes)
	follower := followerOf(nodes, leader)
	ownTenant(t, ctx, follower.GRPCAddr()) // forwarded to the leader too

	t.Run("write through a follower is forwarded", func(t *testing.T) {
		fc := contextv1.NewContextServiceClient(dial(t, follower.GRPCAddr()))
		if _, err := fc.CreateContext(tenantmd.Outgoing(ctx, tenant, 0), &contextv1.CreateContextRequest{ContextId: "chat-1", RequestId: "create-chat-1"}); err != nil {
			t.Fatalf("CreateContext via follower: %v", err)
		}
		resp, err := appendText(ctx, fc, "chat-1", "hello")
		if err != nil {
			t.Fatalf("Append via follower: %v", err)
		}
		if resp.GetFirstSeq() != 1 || resp.GetLastSeq() != 1 {
			t.Fatalf("Append = %v, want seq 1..1", resp)
		}
		lc := contextv1.NewContextServiceClient(dial(t, leader.GRPCAddr()))
		read, err := lc.Read(tenantmd.Outgoing(ctx, tenant, 0), &contextv1.ReadRequest{ContextId: "chat-1"})
		if err != nil {
			t.Fatalf("Read on leader: %v", err)
		}
		if len(read.GetEntries()) != 1 || read.GetEntries()[0].GetText() != "hello" {
			t.Fatalf("Read = %v", read)
		}
	})

	t.Run("no-forward answers NOT_LEADER with the leader address", func(t *testing.T) {
		fc := contextv1.NewContextServiceClient(dial(t, follower.GRPCAddr()))
		_, err := appendText(tenantmd.WithNoForward(ctx), fc, "chat-1", "not forwarded")
		if status.Code(err) != codes.Unavailable {
			t.Fatalf("Append with no-forward: %v, want UNAVAILABLE", err)
		}
		var ce *cperr.Error
		if !errors.As(rpcerr.FromStatus(err), &ce) || ce.Reason != cperr.NotLeader {
			t.Fatalf("Append with no-forward: %v, want NOT_LEADER", err)
		}
		if got := ce.Metadata[cperr.MetaLeader]; got != leader.GRPCAddr() {
			t.Fatalf("NOT_LEADER names leader %q, want %q", got, leader.GRPCAddr())
		}
	})

	t.Run("grpc health and reflection", func(t *testing.T) {
		for _, n := range nodes {
			hc := healthpb.NewHealthClient(dial(t, n.GRPCAddr()))
			testutil.Eventually(t, 10*time.Second, func() error {
				for _, svc := range []string{"", "cellplane.context.v1.ContextService", "cellplane.cell.v1.CellService"} {
					resp, err := hc.Check(ctx, &healthpb.HealthCheckRequest{Service: svc})
					if err != nil {
						return err
					}
					if resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
						return fmt.Errorf("%s health of %q = %v", n.Info().NodeId, svc, resp.GetStatus())
					}
				}
				return nil
			})
		}
		stream, err := reflectionpb.NewServerReflectionClient(dial(t, leader.GRPCAddr())).ServerReflectionInfo(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := stream.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}}); err != nil {
			t.Fatal(err)
		}
		resp, err := stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		_ = stream.CloseSend()
		var names []string
		for _, s := range resp.GetListServicesResponse().GetService() {
			names = append(names, s.GetName())
		}
		for _, want := range []string{"cellplane.context.v1.ContextService", "cellplane.cell.v1.CellService", "grpc.health.v1.Health"} {
			if !strings.Contains(strings.Join(names, " "), want) {
				t.Errorf("reflection lists %v, missing %s", names, want)
			}
		}
	})

	t.Run("http endpoints", func(t *testing.T) {
		for _, n := range nodes {
			base := "http://" + n.HTTPAddr()
			if code, body := httpGet(t, ctx, base+"/healthz"); code != http.StatusOK {
				t.Errorf("%s /healthz = %d %q", n.Info().NodeId, code, body)
			}
			code, body := httpGet(t, ctx, base+"/readyz")
			if code != http.StatusOK {
				t.Errorf("%s /readyz = %d %q", n.Info().NodeId, code, body)
			}
			var r struct {
				Ready        bool   `json:"ready"`
				NodeID       string `json:"node_id"`
				State        string `json:"state"`
				LeaderID     string `json:"leader_id"`
				Leader       string `json:"leader"`
				AppliedIndex uint64 `json:"applied_index"`
				StorageFull  *bool  `json:"storage_full"`
				FreeBytes    uint64 `json:"free_bytes"`
			}
			if err := json.Unmarshal([]byte(body), &r); err != nil {
				t.Fatalf("/readyz body %q: %v", body, err)
			}
			if !r.Ready || r.NodeID != n.Info().NodeId || r.LeaderID != leader.Info().NodeId || r.Leader != leader.GRPCAddr() || r.AppliedIndex == 0 || r.State == "" ||
				r.StorageFull == nil || *r.StorageFull || r.FreeBytes == 0 {
				t.Errorf("/readyz of %s = %+v", n.Info().NodeId, r)
			}
		}
		code, body := httpGet(t, ctx, "http://"+follower.HTTPAddr()+"/metrics")
		if code != http.StatusOK {
			t.Fatalf("/metrics = %d", code)
		}
		for _, want := range []string{
			`grpc_server_handled_total{grpc_code="OK",grpc_method="Append",grpc_service="cellplane.context.v1.ContextService",grpc_type="unary"}`,
			"grpc_server_handling_seconds_bucket",
			"cellplane_raft_term",
			"cellplane_store_disk_free_bytes",
			"cellplane_store_storage_full 0",
			"go_goroutines",
		} {
			if !strings.Contains(body, want) {
				t.Errorf("/metrics lacks %s", want)
			}
		}
	})

	t.Run("a fourth node joins through a follower", func(t *testing.T) {
		cfg := celltest.NodeConfig(t, "n4")
		cfg.Join = follower.GRPCAddr()
		n4 := celltest.StartNode(t, cfg)
		// Leave the cell as it was even if this subtest fails: with n4
		// stopped but still a voter, closing the leader below would leave
		// 2 of 4 voters, no quorum. (Cleanups run last-in first-out: this
		// runs before n4 is closed.)
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			if err := testutil.Poll(ctx, 20*time.Second, func() error {
				_, err := cellv1.NewCellServiceClient(dial(t, follower.GRPCAddr())).RemoveServer(ctx, &cellv1.RemoveServerRequest{NodeId: "n4"})
				return err
			}); err != nil {
				t.Errorf("RemoveServer n4: %v", err)
			}
		})
		all := append(append([]*cells.Node(nil), nodes...), n4)
		testutil.Eventually(t, 20*time.Second, func() error {
			st := leader.Store().Status()
			voters := 0
			for _, m := range st.Members {
				if m.Voter {
					voters++
				}
			}
			if voters != 4 {
				return fmt.Errorf("%d voters, want 4", voters)
			}
			return nil
		})
		// n4 registers its addresses, so it reports the leader's and can
		// forward writes.
		celltest.WaitLeader(t, all)
		testutil.Eventually(t, 20*time.Second, func() error {
			return leader.Store().ReadCell(ctx, store.ReadOptions{}, func(v *store.CellView) error {
				infos, err := v.Nodes()
				if err != nil {
					return err
				}
				for _, info := range infos {
					if info.GetNodeId() == "n4" && info.GetGrpcAddr() == n4.GRPCAddr() {
						return nil
					}
				}
				return fmt.Errorf("n4 not registered in %v", infos)
			})
		})
		c4 := contextv1.NewContextServiceClient(dial(t, n4.GRPCAddr()))
		if _, err := appendText(ctx, c4, "chat-1", "from n4"); err != nil {
			t.Fatalf("Append via n4: %v", err)
		}
	})
	leader = celltest.WaitLeader(t, nodes) // n4's arrival may have moved leadership

	t.Run("close is graceful", func(t *testing.T) {
		// A watcher on the leader must be ended by Close, not hang it.
		lc := contextv1.NewContextServiceClient(dial(t, leader.GRPCAddr()))
		watch, err := lc.Watch(tenantmd.Outgoing(ctx, tenant, 0), &contextv1.WatchRequest{ContextId: "chat-1"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := watch.Recv(); err != nil {
			t.Fatalf("first Watch batch: %v", err)
		}
		watchErr := make(chan error, 1)
		go func() {
			for {
				if _, err := watch.Recv(); err != nil {
					watchErr <- err
					return
				}
			}
		}()

		hc := healthpb.NewHealthClient(dial(t, leader.GRPCAddr()))
		healthStream, err := hc.Watch(ctx, &healthpb.HealthCheckRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if resp, err := healthStream.Recv(); err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			t.Fatalf("health before close: %v, %v", resp, err)
		}

		start := time.Now()
		if err := leader.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
		if took := time.Since(start); took > 5*time.Second {
			t.Errorf("Close took %s, want the drain bounded by ShutdownTimeout", took)
		}
		select {
		case <-leader.Done():
		default:
			t.Error("Done not closed after Close")
		}
		if err := leader.Err(); err != nil {
			t.Errorf("Err after Close = %v, want nil", err)
		}
		if err := leader.Close(); err != nil {
			t.Errorf("second Close: %v", err)
		}
		if resp, err := healthStream.Recv(); err == nil && resp.GetStatus() != healthpb.HealthCheckResponse_NOT_SERVING {
			t.Errorf("health after shutdown started = %v, want NOT_SERVING or a closed stream", resp.GetStatus())
		}
		select {
		case err := <-watchErr:
			if code := status.Code(err); code != codes.Unavailable {
				t.Errorf("Watch ended with %v, want UNAVAILABLE (resume elsewhere)", err)
			}
		case <-ctx.Done():
			t.Fatal("Watch stream still open after Close")
		}

		// The others elect a new leader (handed over by Close) and keep
		// taking writes.
		rest := []*cells.Node{}
		for _, n := range nodes {
			if n != leader {
				rest = append(rest, n)
			}
		}
		newLeader := celltest.WaitLeader(t, rest)
		c := contextv1.NewContextServiceClient(dial(t, followerOf(rest, newLeader).GRPCAddr()))
		testutil.Eventually(t, 10*time.Second, func() error {
			_, err := appendText(ctx, c, "chat-1", "after close")
			return err
		})
	})
}

func TestTakenPortIsAClearError(t *testing.T) {
	taken := testutil.Listen(t)
	cfg := cells.DefaultConfig()
	cfg.NodeID = "n1"
	cfg.DataDir = t.TempDir()
	cfg.RaftAddr = "127.0.0.1:0"
	cfg.GRPCAddr = taken.Addr().String()
	cfg.HTTPAddr = "127.0.0.1:0"
	cfg.Logger = testutil.Logger(t)
	n, err := cells.Start(testutil.Context(t, 10*time.Second), cfg)
	if err == nil {
		n.Close()
		t.Fatal("Start on a taken port succeeded")
	}
	var le *cells.ListenError
	if !errors.As(err, &le) || le.Name != "grpc" || le.Addr != taken.Addr().String() {
		t.Fatalf("Start = %v, want a ListenError for the grpc address", err)
	}
	if !strings.Contains(err.Error(), "already in use") {
		t.Fatalf("error %q does not say the address is in use", err)
	}
}

func TestUnusableDataDirIsAClearError(t *testing.T) {
	file := filepath.Join(t.TempDir(), "not-a-dir")
	if err := os.WriteFile(file, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := celltest.NodeConfig(t, "n1")
	cfg.DataDir = filepath.Join(file, "data")
	n, err := cells.Start(testutil.Context(t, 10*time.Second), cfg)
	if err == nil {
		n.Close()
		t.Fatal("Start with a data dir under a file succeeded")
	}
	if !strings.Contains(err.Error(), "data dir") || !strings.Contains(err.Error(), cfg.DataDir) {
		t.Fatalf("error %q does not name the data dir", err)
	}
	// The pre-opened listeners were closed: their ports are free again.
	for _, l := range []net.Listener{cfg.RaftListener, cfg.GRPCListener, cfg.HTTPListener} {
		ln, err := net.Listen("tcp", l.Addr().String())
		if err != nil {
			t.Fatalf("listener %s not closed: %v", l.Addr(), err)
		}
		ln.Close()
	}
}

func TestSingleNodeRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a node twice; skipped with -short")
	}
	cfg := celltest.NodeConfig(t, "solo")
	cfg.Bootstrap = []store.Peer{{ID: "solo", Addr: cfg.RaftListener.Addr().String()}}
	ctx := testutil.Context(t, time.Minute)
	n, err := cells.Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	celltest.WaitLeader(t, []*cells.Node{n})
	ownTenant(t, ctx, n.GRPCAddr())
	c1 := contextv1.NewContextServiceClient(dial(t, n.GRPCAddr()))
	if _, err := c1.CreateContext(tenantmd.Outgoing(ctx, tenant, 0), &contextv1.CreateContextRequest{ContextId: "c1"}); err != nil {
		t.Fatalf("CreateContext: %v", err)
	}
	if _, err := appendText(ctx, c1, "c1", "before restart"); err != nil {
		t.Fatalf("Append: %v", err)
	}
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}

	// Same data dir, new ports: the node keeps its state and re-registers
	// its new addresses.
	cfg2 := celltest.NodeConfig(t, "solo")
	cfg2.DataDir = cfg.DataDir
	cfg2.Bootstrap = []store.Peer{{ID: "solo", Addr: cfg2.RaftListener.Addr().String()}}
	n2 := celltest.StartNode(t, cfg2)
	celltest.WaitLeader(t, []*cells.Node{n2})
	c := contextv1.NewContextServiceClient(dial(t, n2.GRPCAddr()))
	var read *contextv1.ReadResponse
	testutil.Eventually(t, 10*time.Second, func() error {
		read, err = c.Read(tenantmd.Outgoing(ctx, tenant, 0), &contextv1.ReadRequest{ContextId: "c1"})
		return err
	})
	if len(read.GetEntries()) != 1 || read.GetEntries()[0].GetText() != "before restart" {
		t.Fatalf("Read after restart = %v", read)
	}
}

func TestConcurrentClose(t *testing.T) {
	cfg := celltest.NodeConfig(t, "solo")
	cfg.Bootstrap = []store.Peer{{ID: "solo", Addr: cfg.RaftListener.Addr().String()}}
	n, err := cells.Start(testutil.Context(t, time.Minute), cfg)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			if err := n.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
		})
	}
	wg.Wait()
}

// TestStoreFailureStopsNode: when the store stops by itself (here: a
// command from a newer version that this node cannot apply), the node stops
// serving and Done/Err say why.
func TestStoreFailureStopsNode(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a node; skipped with -short")
	}
	cfg := celltest.NodeConfig(t, "solo")
	cfg.Bootstrap = []store.Peer{{ID: "solo", Addr: cfg.RaftListener.Addr().String()}}
	// Act as a newer node whose proposal this binary cannot apply.
	cfg.TestingKnobs.Store.ProposeUnchecked = true
	n := celltest.StartNode(t, cfg)
	celltest.WaitLeader(t, []*cells.Node{n})
	ctx := testutil.Context(t, 30*time.Second)

	unknown := &cellv1.Command{Tenant: tenant}
	b := protowire.AppendTag(nil, 99, protowire.BytesType)
	unknown.ProtoReflect().SetUnknown(protowire.AppendBytes(b, []byte("from the future")))
	if _, err := n.Store().Propose(ctx, unknown); err == nil {
		t.Fatal("an unknown command was acknowledged")
	}
	select {
	case <-n.Done():
	case <-ctx.Done():
		t.Fatal("node did not stop after its store failed")
	}
	if err := n.Err(); !errors.Is(err, store.ErrUnknownCommand) {
		t.Fatalf("Err() = %v, want store.ErrUnknownCommand", err)
	}
	if _, err := net.DialTimeout("tcp", n.GRPCAddr(), time.Second); err == nil {
		t.Error("gRPC still accepts connections after the node stopped")
	}
}
