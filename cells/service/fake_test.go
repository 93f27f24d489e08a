package service

import (
	"context"
	"sync"

	"github.com/cellplane/cellplane/cells/store"
	"github.com/cellplane/cellplane/internal/cperr"
	cellv1 "github.com/cellplane/cellplane/proto/cellplane/cell/v1"
)

// fakeStore is a Store for the paths that do not need a real view:
// leadership, forwarding and error translation. Reads never call fn;
// they return readErr.
type fakeStore struct {
	mu       sync.Mutex
	follower bool // every leader-only call answers NOT_LEADER
	leaderID string
	leader   *cellv1.NodeInfo
	hintAddr string // MetaLeader in NOT_LEADER errors
	proposed []*cellv1.Command
	propose  func(*cellv1.Command) (*cellv1.CommandResult, error)
	readErr  error
	transfer string
	members  []store.Member // the Raft configuration Status reports (nil: f1 and the leader)
}

var _ Store = (*fakeStore)(nil)

func (f *fakeStore) notLeader() error {
	e := cperr.New(cperr.NotLeader, "not the leader")
	if f.hintAddr != "" {
		e.With(cperr.MetaLeader, f.hintAddr)
	}
	return e
}

func (f *fakeStore) Propose(_ context.Context, cmd *cellv1.Command) (*cellv1.CommandResult, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.follower {
		return nil, f.notLeader()
	}
	f.proposed = append(f.proposed, cmd)
	if f.propose != nil {
		return f.propose(cmd)
	}
	return &cellv1.CommandResult{}, nil
}

func (f *fakeStore) commands() []*cellv1.Command {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]*cellv1.Command(nil), f.proposed...)
}

func (f *fakeStore) ReadTenant(_ context.Context, _ string, _ uint64, opts store.ReadOptions, _ func(*store.TenantView) error) error {
	return f.read(opts)
}

func (f *fakeStore) ReadCell(_ context.Context, opts store.ReadOptions, _ func(*store.CellView) error) error {
	return f.read(opts)
}

func (f *fakeStore) read(opts store.ReadOptions) error {
	if f.follower && opts.Consistency != 3 { // CONSISTENCY_STALE
		return f.notLeader()
	}
	if f.readErr != nil {
		return f.readErr
	}
	return cperr.New(cperr.Internal, "fake store has no views")
}

func (f *fakeStore) ReadReplica(string, func(*store.TenantView) error) error { return f.leaderOnly() }

func (f *fakeStore) WaitTenant(ctx context.Context, _ string, _ uint64) error {
	<-ctx.Done()
	return ctx.Err()
}

func (f *fakeStore) Leader() (string, *cellv1.NodeInfo) { return f.leaderID, f.leader }

// fakeLeaderRaft is the leader's Raft address in the fake configuration.
const fakeLeaderRaft = "127.0.0.1:7212"

// StateDigest is a fixed digest: the fake has no state machine.
func (f *fakeStore) StateDigest() (store.Digest, error) { return store.Digest{AppliedIndex: 1}, nil }

// DiskStatus: the fake has no disk check.
func (f *fakeStore) DiskStatus() store.DiskStatus { return store.DiskStatus{Unsupported: true} }

func (f *fakeStore) Status() store.Status {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.members != nil {
		return store.Status{NodeID: "f1", State: "Follower", Term: 3, LeaderID: f.leaderID, Members: f.members}
	}
	return store.Status{NodeID: "f1", State: "Follower", Term: 3, LeaderID: f.leaderID, Members: []store.Member{
		{ID: "f1", RaftAddr: "127.0.0.1:7211", Voter: true},
		{ID: f.leaderID, RaftAddr: fakeLeaderRaft, Voter: true, Info: f.leader},
	}}
}

func (f *fakeStore) leaderOnly() error {
	if f.follower {
		return f.notLeader()
	}
	return nil
}

func (f *fakeStore) AddVoter(context.Context, string, string) error    { return f.leaderOnly() }
func (f *fakeStore) AddNonVoter(context.Context, string, string) error { return f.leaderOnly() }
func (f *fakeStore) RemoveServer(context.Context, string) error        { return f.leaderOnly() }
func (f *fakeStore) RemoveStaleIncarnations(context.Context, string) ([]string, error) {
	return nil, f.leaderOnly()
}
func (f *fakeStore) TransferLeadership(context.Context, string) (string, error) {
	return f.transfer, f.leaderOnly()
}
