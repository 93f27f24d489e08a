package store

import (
	"context"
	"log/slog"
	"net"
	"testing"
	"time"

	cellv1 "github.com/cellplane/cellplane/proto/cellplane/cell/v1"
	contextv1 "github.com/cellplane/cellplane/proto/cellplane/context/v1"
)

// testLogger sends logs to t.Log so they show only when a test fails.
func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(string(p))
	return len(p), nil
}

// openSingle opens a one-node cell in dir (a fresh temp dir when empty)
// and waits until it leads.
func openSingle(t testing.TB, dir string, mutate ...func(*Config)) *Store {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.NodeID = "n1"
	cfg.RaftListener = ln
	cfg.DataDir = dir
	cfg.Bootstrap = []Peer{{ID: "n1", Addr: ln.Addr().String()}}
	cfg.Raft.HeartbeatTimeout = 50 * time.Millisecond
	cfg.Raft.ElectionTimeout = 50 * time.Millisecond
	cfg.Raft.LeaderLeaseTimeout = 50 * time.Millisecond
	cfg.Logger = testLogger(t)
	for _, m := range mutate {
		m(&cfg)
	}
	s, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	waitFor(t, 10*time.Second, func() bool { return s.IsLeader() && s.readyTerm.Load() == s.raft.CurrentTerm() })
	return s
}

// waitFor polls cond until it holds or the timeout passes.
func waitFor(t testing.TB, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %v", timeout)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func mustPropose(t testing.TB, s *Store, c *cellv1.Command) *cellv1.CommandResult {
	t.Helper()
	res, err := s.Propose(testCtx(t), c)
	if err != nil {
		t.Fatalf("propose %s: %v", opName(c), err)
	}
	return res
}

func setOwner(t testing.TB, s *Store, tenant string, epoch uint64) {
	t.Helper()
	mustPropose(t, s, &cellv1.Command{Tenant: tenant, Op: &cellv1.Command_SetTenant{SetTenant: &cellv1.SetTenantOp{Role: cellv1.Role_ROLE_OWNER, Epoch: epoch}}})
}

func createContext(tenant, id string) *cellv1.Command {
	return &cellv1.Command{Tenant: tenant, Op: &cellv1.Command_CreateContext{CreateContext: &contextv1.CreateContextRequest{ContextId: id}}}
}

func appendText(tenant, id, reqID string, texts ...string) *cellv1.Command {
	req := &contextv1.AppendRequest{ContextId: id}
	for _, tx := range texts {
		req.Entries = append(req.Entries, &contextv1.Entry{Role: "user", Content: &contextv1.Entry_Text{Text: tx}})
	}
	return &cellv1.Command{Tenant: tenant, RequestId: reqID, Op: &cellv1.Command_Append{Append: req}}
}

// readAll reads every entry of a context linearizably.
func readAll(t testing.TB, s *Store, tenant, id string) []*contextv1.Entry {
	t.Helper()
	var out []*contextv1.Entry
	err := s.ReadTenant(testCtx(t), tenant, 0, ReadOptions{}, func(v *TenantView) error {
		var err error
		out, err = v.Entries(id, 1, 1<<30, 1<<62)
		return err
	})
	if err != nil {
		t.Fatalf("read %s/%s: %v", tenant, id, err)
	}
	return out
}
