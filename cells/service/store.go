package service

import (
	"context"

	"github.com/cellplane/cellplane/cells/store"
	cellv1 "github.com/cellplane/cellplane/proto/cellplane/cell/v1"
)

// Store is what the services need from a cell store. *store.Store
// implements it; tests may use fakes for the leadership paths.
//
// Contract relied upon beyond the store's doc comments:
//   - NOT_LEADER from Propose means the command was not applied, so the
//     call can be forwarded to the leader. (An outcome that is unknown
//     because leadership was lost mid-flight must be another error.)
//   - ReadTenant with CONSISTENCY_STALE and a negative MaxStaleness means
//     "no staleness bound" (used by Watch, served by any member).
//   - ReadTenant and ReadCell return fn's error unchanged.
type Store interface {
	Propose(ctx context.Context, cmd *cellv1.Command) (*cellv1.CommandResult, error)
	ReadTenant(ctx context.Context, tenant string, epoch uint64, opts store.ReadOptions, fn func(*store.TenantView) error) error
	ReadCell(ctx context.Context, opts store.ReadOptions, fn func(*store.CellView) error) error
	WaitTenant(ctx context.Context, tenant string, afterTseq uint64) error
	ReadReplica(tenant string, fn func(*store.TenantView) error) error
	Leader() (id string, info *cellv1.NodeInfo)
	Status() store.Status
	DiskStatus() store.DiskStatus
	StateDigest() (store.Digest, error)
	AddVoter(ctx context.Context, id, raftAddr string) error
	AddNonVoter(ctx context.Context, id, raftAddr string) error
	RemoveServer(ctx context.Context, id string) error
	RemoveStaleIncarnations(ctx context.Context, raftID string) ([]string, error)
	TransferLeadership(ctx context.Context, id string) (string, error)
}

var _ Store = (*store.Store)(nil)
