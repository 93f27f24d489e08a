package platform_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/cellplane/cellplane/cells/store"
	"github.com/cellplane/cellplane/internal/cperr"
	"github.com/cellplane/cellplane/internal/rpcerr"
	"github.com/cellplane/cellplane/internal/tenantmd"
	"github.com/cellplane/cellplane/internal/testutil"
	"github.com/cellplane/cellplane/platform"
	contextv1 "github.com/cellplane/cellplane/proto/cellplane/context/v1"
	cpv1 "github.com/cellplane/cellplane/proto/cellplane/controlplane/v1"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestPlatform starts 1 region × 1 cell × 3 nodes in process, creates a
// tenant through the control plane and writes through the router; the
// knobs in the bundle reach the controller and the nodes' stores; a killed
// node restarts as the same member; a killed follower whose data dir is
// lost comes back as a new member (a new Raft id) and ends a voter.
func TestPlatform(t *testing.T) {
	var steps, applied atomic.Int64
	cfg := platform.DefaultConfig()
	cfg.Name = "test"
	cfg.DataDir = t.TempDir()
	cfg.Regions, cfg.CellsPerRegion, cfg.NodesPerCell = []string{"us-east"}, 1, 3
	cfg.Node.MCPDisabled = true
	cfg.Node.RegistryTTL = time.Second
	cfg.Controller.RetryMin, cfg.Controller.RetryMax = 10*time.Millisecond, 200*time.Millisecond
	cfg.ShutdownTimeout = 5 * time.Second
	cfg.Logger = testutil.Logger(t)
	cfg.EtcdUnsafeNoFsync = true
	cfg.TestingKnobs.Controller.BeforeStep = func(context.Context, *cpv1.Workflow) error {
		steps.Add(1)
		return nil
	}
	cfg.TestingKnobs.Cell.Store.OnApply = func(uint64) { applied.Add(1) }
	ctx := testutil.Context(t, 2*time.Minute)
	p, err := platform.Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)

	d := p.Describe()
	if len(d.Nodes) != 3 || d.ControlPlane != p.ControlPlaneAddr() || d.RouterGRPC != p.RouterAddr() || len(d.Etcd) == 0 || d.Auth != platform.AuthNone {
		t.Fatalf("Describe = %+v", d)
	}
	cell := p.Cell("us-east-a")
	if cell == nil || len(cell.Nodes()) != 3 || cell.Nodes()[0].ID() != "us-east-a-n1" {
		t.Fatalf("cells %v", p.Cells())
	}

	if _, err := p.Admin().CreateTenant(ctx, &cpv1.CreateTenantRequest{Id: "acme", HomeRegion: "us-east"}); err != nil {
		t.Fatalf("create tenant: %v", err)
	}
	if steps.Load() == 0 {
		t.Error("the controller's BeforeStep knob was not called")
	}
	data := contextv1.NewContextServiceClient(p.RouterConn())
	tctx := tenantmd.Outgoing(ctx, "acme", 0)
	testutil.Eventually(t, 30*time.Second, func() error {
		_, err := data.CreateContext(tctx, &contextv1.CreateContextRequest{ContextId: "chat"})
		if err == nil || errors.Is(rpcerr.FromStatus(err), cperr.ErrAlreadyExists) {
			return nil
		}
		return err
	})
	appendText := func(text string) error {
		_, err := data.Append(tctx, &contextv1.AppendRequest{ContextId: "chat", RequestId: text,
			Entries: []*contextv1.Entry{{Role: "user", Content: &contextv1.Entry_Text{Text: text}}}})
		return err
	}
	if err := appendText("hello"); err != nil {
		t.Fatalf("append through the router: %v", err)
	}
	if applied.Load() == 0 {
		t.Error("the store's OnApply knob was not called")
	}

	leader, err := cell.WaitLeader(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	killedAt, down := leader.Kill()
	if leader.Running() || down.Before(killedAt) {
		t.Fatalf("after Kill: running %v, down %v before killed %v", leader.Running(), down, killedAt)
	}
	testutil.Eventually(t, 30*time.Second, func() error { return appendText("after-kill") })
	if err := cell.Restart(ctx); err != nil {
		t.Fatalf("restart: %v", err)
	}
	if !leader.Running() {
		t.Fatal("the killed node does not run after Restart")
	}
	leader, err = cell.WaitLeader(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}

	// A follower crashes and loses its disk (S2, H1): it comes back as a
	// new member under a new Raft id, never its old one; the cell replaces
	// the old incarnation and makes the new one a voter.
	var victim *platform.Node
	for _, n := range cell.Nodes() {
		if n != leader {
			victim = n
			break
		}
	}
	oldRaftID := victim.Node().Store().RaftID()
	victim.Kill()
	if err := os.RemoveAll(filepath.Join(cfg.DataDir, "nodes", victim.ID())); err != nil {
		t.Fatal(err)
	}
	if err := cell.Restart(ctx); err != nil {
		t.Fatalf("restart the wiped node: %v", err)
	}
	newRaftID := victim.Node().Store().RaftID()
	if newRaftID == oldRaftID || !store.HasIncarnation(newRaftID) {
		t.Fatalf("the wiped node runs as %q (was %q), want a new incarnation", newRaftID, oldRaftID)
	}
	testutil.Eventually(t, 30*time.Second, func() error {
		l := cell.Leader()
		if l == nil {
			return errors.New("no leader")
		}
		var got []string
		voters := 0
		for _, m := range l.Node().Store().Status().Members {
			got = append(got, fmt.Sprintf("%s/%v", m.RaftID, m.Voter))
			if m.RaftID == oldRaftID {
				return fmt.Errorf("members %v: the old incarnation is still there", got)
			}
			if m.Voter {
				voters++
			}
		}
		if voters != 3 || !victim.Node().Store().Status().Voter {
			return fmt.Errorf("members %v: want 3 voters, %s among them", got, newRaftID)
		}
		return nil
	})
	if err := appendText("after-disk-loss"); err != nil {
		t.Fatalf("append after the disk loss: %v", err)
	}
	if _, err := cell.WaitLeader(ctx, 0); err != nil {
		t.Fatal(err)
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name string
		mut  func(*platform.Config)
		want string // "" valid
	}{
		{"default", func(*platform.Config) {}, ""},
		{"no cells at start", func(c *platform.Config) { c.Regions, c.CellsPerRegion = nil, 0 }, ""},
		{"no data dir", func(c *platform.Config) { c.DataDir = "" }, "data dir"},
		{"no regions", func(c *platform.Config) { c.Regions = nil }, "region"},
		{"even nodes", func(c *platform.Config) { c.NodesPerCell = 2 }, "nodes per cell"},
		{"27 cells", func(c *platform.Config) { c.CellsPerRegion = 27 }, "cells per region"},
		{"port too low", func(c *platform.Config) { c.NodeBasePort = 80 }, "node base port"},
		{"bad auth", func(c *platform.Config) { c.Auth = "jwt" }, "auth"},
		{"bad address", func(c *platform.Config) { c.RouterAddr = "nowhere" }, "router address"},
		{"client URL alone", func(c *platform.Config) { c.EtcdClientURL = "http://127.0.0.1:2379" }, "go together"},
		{"bad etcd URL", func(c *platform.Config) { c.EtcdClientURL, c.EtcdPeerURL = "127.0.0.1:2379", "http://127.0.0.1:2380" }, "etcd URL"},
		{"https etcd without mTLS", func(c *platform.Config) {
			c.EtcdClientURL, c.EtcdPeerURL = "https://127.0.0.1:2379", "https://127.0.0.1:2380"
		}, "want http://"},
		{"http etcd with mTLS", func(c *platform.Config) {
			c.MutualTLS, c.EtcdClientURL, c.EtcdPeerURL = true, "http://127.0.0.1:2379", "http://127.0.0.1:2380"
		}, "want https://"},
		{"https etcd with mTLS", func(c *platform.Config) {
			c.MutualTLS, c.EtcdClientURL, c.EtcdPeerURL = true, "https://127.0.0.1:2379", "https://127.0.0.1:2380"
		}, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := platform.DefaultConfig()
			c.DataDir = "x"
			tc.mut(&c)
			err := c.Validate()
			if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
				t.Fatalf("Validate = %v, want %q", err, tc.want)
			}
		})
	}
	if platform.CellName("us-east", 1) != "us-east-b" || platform.NodeName("us-east-b", 0) != "us-east-b-n1" {
		t.Fatalf("names: %s %s", platform.CellName("us-east", 1), platform.NodeName("us-east-b", 0))
	}
}

// TestStartRefusesATakenPort: a fixed address that is taken fails Start
// at once with a PortError naming it.
func TestStartRefusesATakenPort(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	cfg := platform.DefaultConfig()
	cfg.DataDir = t.TempDir()
	cfg.RouterAddr = l.Addr().String()
	_, err = platform.Start(testutil.Context(t, 30*time.Second), cfg)
	var pe *platform.PortError
	if !errors.As(err, &pe) || pe.Field != "RouterAddr" || pe.Addr != l.Addr().String() {
		t.Fatalf("Start = %v, want a PortError for RouterAddr", err)
	}
}
