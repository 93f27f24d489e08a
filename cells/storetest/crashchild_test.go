package storetest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/rpc"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/cellplane/cellplane/cells/store"
	"github.com/cellplane/cellplane/internal/cperr"
	"github.com/cellplane/cellplane/internal/failpoint"
	"github.com/cellplane/cellplane/internal/retry"
	cellv1 "github.com/cellplane/cellplane/proto/cellplane/cell/v1"
	"google.golang.org/protobuf/proto"
)

// The crash tests (crash_test.go) run each node of a cell as a child
// process: this test binary again, with childEnv naming its config. The
// child runs one store and serves a small net/rpc control API on
// loopback; a crash point (CELLPLANE_FAILPOINTS) ends it abruptly.

const childEnv = "STORETEST_CRASH_CHILD"

// childConfig is what the parent hands a child node (JSON in childEnv).
type childConfig struct {
	ID, RaftAddr, ControlAddr, Dir string
	Peers                          []store.Peer
	SnapshotThreshold              uint64
	TrailingLogs                   uint64
	LogSegmentBytes                int
}

// runChildIfAsked runs a child node and exits when this process is one.
func runChildIfAsked() {
	spec := os.Getenv(childEnv)
	if spec == "" {
		return
	}
	var cfg childConfig
	if err := json.Unmarshal([]byte(spec), &cfg); err != nil {
		fmt.Fprintln(os.Stderr, "child config:", err)
		os.Exit(2)
	}
	if err := runChild(cfg); err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		os.Exit(1)
	}
	os.Exit(0)
}

func runChild(c childConfig) error {
	if _, err := failpoint.EnableFromEnv(); err != nil {
		return err
	}
	cfg := TestConfig()
	cfg.NodeID, cfg.RaftBind, cfg.DataDir, cfg.Bootstrap = c.ID, c.RaftAddr, c.Dir, c.Peers
	cfg.GRPCAdvertise = "grpc-" + c.ID
	if c.SnapshotThreshold > 0 {
		cfg.Raft.SnapshotThreshold, cfg.Raft.TrailingLogs = c.SnapshotThreshold, c.TrailingLogs
		cfg.Raft.SnapshotInterval = 50 * time.Millisecond
	}
	cfg.Raft.LogSegmentBytes = c.LogSegmentBytes
	cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	s, err := store.Open(cfg)
	if err != nil {
		return err
	}
	defer s.Close()
	srv := rpc.NewServer()
	if err := srv.RegisterName("Node", &nodeRPC{s: s}); err != nil {
		return err
	}
	ln, err := net.Listen("tcp", c.ControlAddr)
	if err != nil {
		return err
	}
	defer ln.Close()
	go srv.Accept(ln)
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	select {
	case <-sig:
	case <-s.Done():
		return s.Err()
	}
	return nil
}

// nodeRPC is the child's control API.
type nodeRPC struct{ s *store.Store }

// ProposeReply is a proposal's outcome: Result (an encoded
// CommandResult), or Err with Retry telling whether resending the same
// command is safe and useful.
type ProposeReply struct {
	Result []byte
	Err    string
	Retry  bool
}

func (n *nodeRPC) Propose(cmd []byte, reply *ProposeReply) error {
	var c cellv1.Command
	if err := proto.Unmarshal(cmd, &c); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	res, err := n.s.Propose(ctx, &c)
	if err != nil {
		var ce *cperr.Error
		reply.Err = err.Error()
		reply.Retry = retry.Resend(retry.Idempotent, err) || errors.Is(err, context.DeadlineExceeded) || !errors.As(err, &ce)
		return nil
	}
	reply.Result, err = proto.Marshal(res)
	return err
}

// ReadArgs names a context to read.
type ReadArgs struct{ Tenant, Context string }

// Texts reads a context's entry texts from the node's own state (STALE).
func (n *nodeRPC) Texts(a ReadArgs, out *[]string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return n.s.ReadTenant(ctx, a.Tenant, 0, stale, func(v *store.TenantView) error {
		es, err := v.Entries(a.Context, 1, 1<<30, 1<<62)
		for _, e := range es {
			*out = append(*out, e.GetText())
		}
		return err
	})
}

// NodeStatus is the part of a node's Raft status the tests use.
type NodeStatus struct {
	Leader                                   bool
	CommitIndex, AppliedIndex, FirstLogIndex uint64
}

// Status is the node's Raft status.
func (n *nodeRPC) Status(_ struct{}, out *NodeStatus) error {
	st := n.s.Status()
	*out = NodeStatus{Leader: n.s.IsLeader(), CommitIndex: st.CommitIndex, AppliedIndex: st.AppliedIndex, FirstLogIndex: st.FirstLogIndex}
	return nil
}

// Transfer hands leadership to the node id (this node must lead).
func (n *nodeRPC) Transfer(id string, _ *struct{}) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := n.s.TransferLeadership(ctx, id)
	return err
}

// Snapshot takes a snapshot now.
func (n *nodeRPC) Snapshot(_ struct{}, _ *struct{}) error { return n.s.Snapshot() }
