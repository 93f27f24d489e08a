package cells

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"google.golang.org/grpc"

	"github.com/cellplane/cellplane/cells/store"
	"github.com/cellplane/cellplane/controlplane/catalog"
	"github.com/cellplane/cellplane/internal/cperr"
	"github.com/cellplane/cellplane/internal/dial"
	"github.com/cellplane/cellplane/internal/retry"
	"github.com/cellplane/cellplane/internal/rpcerr"
	cellv1 "github.com/cellplane/cellplane/proto/cellplane/cell/v1"
	contextv1 "github.com/cellplane/cellplane/proto/cellplane/context/v1"
)

// Retry pacing of join and registration: quick at first (a cell that is
// just electing a leader answers within a second), then backing off so a
// node waiting for an absent cell does not spin.
const (
	retryMin     = 50 * time.Millisecond
	retryMax     = 2 * time.Second
	rpcTimeout   = 10 * time.Second
	errNoLeader  = staticError("no known leader")
	errNoAddress = staticError("leader has not registered its gRPC address yet")
)

// membershipRetry is the backoff of join and registration (full jitter).
var membershipRetry = retry.Policy{Min: retryMin, Max: retryMax}

type staticError string

func (e staticError) Error() string { return string(e) }

// join asks the cell, through the member at cfg.Join, to add this node:
// first as a non-voter (the leader then removes any old incarnation of
// this node: it lost its data and will never answer again), then, once
// this node has applied everything the cell had committed when it was
// added, as a voter. Each call is retried until it succeeds, a permanent
// error comes back, or ctx ends. A node that is already a voter (a
// restart) skips it all.
func (n *Node) join(ctx context.Context) error {
	if n.isVoter() {
		n.log.Info("already a voter of the cell; not joining again", "join", n.cfg.Join)
		return nil
	}
	if !n.st.Status().Member {
		if err := n.retryCall(ctx, "add as a non-voter", func(cctx context.Context, client cellv1.CellServiceClient) error {
			_, err := client.AddNonVoter(cctx, &cellv1.AddNonVoterRequest{Node: n.Info()})
			return err
		}); err != nil {
			return err
		}
		n.log.Info("added to the cell as a non-voter; catching up", "raft_id", n.st.RaftID())
	}
	var target uint64
	if err := n.retryCall(ctx, "read the cell's commit index", func(cctx context.Context, client cellv1.CellServiceClient) error {
		resp, err := client.GetStatus(cctx, &cellv1.GetStatusRequest{})
		target = resp.GetCommitIndex()
		return err
	}); err != nil {
		return err
	}
	if err := n.waitCaughtUp(ctx, target); err != nil {
		return fmt.Errorf("cells: join: catching up to index %d: %w", target, err)
	}
	if err := n.retryCall(ctx, "promote to a voter", func(cctx context.Context, client cellv1.CellServiceClient) error {
		_, err := client.AddVoter(cctx, &cellv1.AddVoterRequest{Node: n.Info()})
		return err
	}); err != nil {
		return err
	}
	n.log.Info("joined the cell as a voter", "raft_id", n.st.RaftID(), "caught_up_to", target)
	return nil
}

// joinAddr is the gRPC address the next join call goes to: the cell
// leader the registry names, when there is one (a member named in the
// bootstrap record may itself be waiting to be added), else cfg.Join.
func (n *Node) joinAddr(ctx context.Context) string {
	if n.cfg.Registry != nil {
		if l, err := catalog.GetCellLeader(ctx, n.cfg.Registry, n.cfg.CellID); err == nil {
			if a := l.Value.GetGrpcAddr(); a != "" && l.Value.GetNodeId() != n.cfg.NodeID {
				return a
			}
		}
	}
	return n.cfg.Join // "" when none: the caller retries
}

// retryCall runs call (one CellService RPC to joinAddr, bounded by
// rpcTimeout) until it succeeds, fails permanently, or ctx ends.
func (n *Node) retryCall(ctx context.Context, what string, call func(context.Context, cellv1.CellServiceClient) error) error {
	backoff := membershipRetry.Backoff()
	for attempt := 1; ; attempt++ {
		cctx, cancel := context.WithTimeout(ctx, rpcTimeout)
		addr := n.joinAddr(cctx)
		err := error(errNoLeader)
		if addr != "" {
			var conn *grpc.ClientConn
			if conn, err = dial.New(addr, n.cfg.Dial); err == nil {
				err = call(cctx, cellv1.NewCellServiceClient(conn))
				_ = conn.Close()
			}
		}
		cancel()
		if err == nil {
			return nil
		}
		err = rpcerr.FromStatus(err)
		if permanent(err) {
			return fmt.Errorf("cells: join through %s: %s refused: %w", addr, what, err)
		}
		n.log.Log(ctx, debugThenWarn(attempt), "join: "+what+" failed; retrying (a cell that lost its quorum's data needs 'cellplane cell unsafe-recover': docs/reliability.md)",
			"via", addr, "attempt", attempt, "err", err)
		if serr := retry.Sleep(ctx, backoff.Next()); serr != nil {
			return fmt.Errorf("cells: join through %s: %s: gave up after %d attempts: %w (last error: %v)", addr, what, attempt, serr, err)
		}
	}
}

// waitCaughtUp waits until this node is in the Raft configuration and
// its state reflects index.
func (n *Node) waitCaughtUp(ctx context.Context, index uint64) error {
	for {
		if st := n.st.Status(); st.Member && st.AppliedIndex >= index {
			return nil
		}
		if err := retry.Sleep(ctx, retryMin); err != nil {
			return err
		}
	}
}

// isVoter reports whether the store's Raft configuration already lists
// this node's incarnation as a voter.
func (n *Node) isVoter() bool { return n.st.Status().Voter }

// registerLoop makes sure the cell state holds this node's addresses (so
// that peers can forward to it and report it), then ends. The leader
// registers itself from within the store; a follower asks the leader.
func (n *Node) registerLoop() {
	defer n.bgWG.Done()
	ctx := n.bg
	backoff := membershipRetry.Backoff()
	for attempt := 1; ; attempt++ {
		done, err := n.ensureRegistered(ctx)
		if done {
			n.log.Debug("node registered in the cell state", "attempts", attempt)
			return
		}
		if ctx.Err() != nil {
			return
		}
		if errors.Is(err, errNoLeader) || errors.Is(err, errNoAddress) || err == nil {
			// Waiting on this node's own view (an election, the leader's
			// self-registration, our registration being applied): cheap
			// to check, so check often.
			if retry.Sleep(ctx, retryMin) != nil {
				return
			}
			continue
		}
		n.log.Log(ctx, debugThenWarn(attempt), "registration pending", "attempt", attempt, "err", err)
		if retry.Sleep(ctx, backoff.Next()) != nil {
			return
		}
	}
}

// ensureRegistered returns true when the cell state already has this
// node's current addresses, or after the leader accepted them.
func (n *Node) ensureRegistered(ctx context.Context) (bool, error) {
	leaderID, leader := n.st.Leader()
	if leaderID == "" {
		return false, errNoLeader
	}
	registered := false
	err := n.st.ReadCell(ctx, store.ReadOptions{Consistency: contextv1.Consistency_CONSISTENCY_STALE}, func(v *store.CellView) error {
		nodes, err := v.Nodes()
		if err != nil {
			return err
		}
		for _, info := range nodes {
			if sameInfo(info, n.info) {
				registered = true
			}
		}
		return nil
	})
	if err != nil {
		return false, fmt.Errorf("read cell state: %w", err)
	}
	if registered {
		return true, nil
	}
	if leaderID == n.cfg.NodeID {
		// The store registers the leader itself; wait to see it applied.
		return false, nil
	}
	if leader.GetGrpcAddr() == "" {
		return false, errNoAddress
	}
	conn, err := dial.New(leader.GetGrpcAddr(), n.cfg.Dial)
	if err != nil {
		return false, err
	}
	defer conn.Close()
	cctx, cancel := context.WithTimeout(ctx, rpcTimeout)
	defer cancel()
	if _, err := cellv1.NewCellServiceClient(conn).RegisterNode(cctx, &cellv1.RegisterNodeRequest{Node: n.Info()}); err != nil {
		return false, fmt.Errorf("RegisterNode at leader %s (%s): %w", leaderID, leader.GetGrpcAddr(), rpcerr.FromStatus(err))
	}
	n.log.Info("registered with the leader", "leader_id", leaderID)
	return true, nil
}

func sameInfo(a, b *cellv1.NodeInfo) bool {
	return a.GetNodeId() == b.GetNodeId() && a.GetRaftId() == b.GetRaftId() && a.GetRaftAddr() == b.GetRaftAddr() &&
		a.GetGrpcAddr() == b.GetGrpcAddr() && a.GetHttpAddr() == b.GetHttpAddr()
}

// permanent reports errors a retry cannot fix.
func permanent(err error) bool {
	return errors.Is(err, cperr.ErrInvalidArgument) || errors.Is(err, cperr.ErrPermissionDenied) ||
		errors.Is(err, cperr.ErrUnauthenticated) || errors.Is(err, cperr.ErrAlreadyExists)
}

// debugThenWarn logs the first few retries at Debug (a cell electing a
// leader is normal) and later ones at Warn (something is wrong).
func debugThenWarn(attempt int) slog.Level {
	if attempt < 10 {
		return slog.LevelDebug
	}
	return slog.LevelWarn
}
