package cells

import (
	"context"
	"sync"
	"time"

	"github.com/cellplane/cellplane/cells/store"
	"github.com/cellplane/cellplane/internal/dial"
	"github.com/cellplane/cellplane/internal/rpcerr"
	cellv1 "github.com/cellplane/cellplane/proto/cellplane/cell/v1"
)

// peerDiskLoop, on the leader, asks every other voter for its free-space
// check (CellService.GetStatus: storage_full, free_bytes) every
// Store.Disk.CheckInterval and hands the answers to the store
// (store.NotePeerDisk), which refuses new writes with STORAGE_FULL naming
// a member that is below its watermark (finding H4: the replicas fill
// together, and the follower that runs out first falls behind). A member
// that does not answer keeps its last report until
// Store.Disk.PeerStaleAfter, then counts as having room: a member that is
// down or cut off must not stop the cell's writes (it receives no entries
// either; when it answers again, the next poll reports it).
//
// Polling from the leader needs nothing new on the followers (GetStatus
// is open to the nodes of the cell: authz.go) and no etcd: it works the
// same in a cell formed without a registry.
func (n *Node) peerDiskLoop() {
	disk := n.cfg.Store.Disk
	if disk.PeerStaleAfter <= 0 {
		return
	}
	pool := dial.NewPool(n.cfg.Dial)
	defer pool.Close()
	t := time.NewTicker(disk.CheckInterval)
	defer t.Stop()
	for {
		if st := n.st.Status(); st.State == "Leader" {
			n.pollPeerDisks(pool, st.Members, min(disk.CheckInterval, rpcTimeout))
		}
		select {
		case <-n.bg.Done():
			return
		case <-t.C:
		}
	}
}

// pollPeerDisks asks each other voter with a registered address for its
// disk status, concurrently, each within timeout.
func (n *Node) pollPeerDisks(pool *dial.Pool, members []store.Member, timeout time.Duration) {
	var wg sync.WaitGroup
	for _, m := range members {
		addr := m.Info.GetGrpcAddr()
		if m.ID == n.cfg.NodeID || addr == "" || !m.Voter {
			// Non-voters (a new incarnation catching up) are not polled:
			// they count for no quorum, and one that is full falls
			// behind without holding the cell's writes.
			continue
		}
		wg.Go(func() {
			conn, err := pool.Get(addr)
			if err != nil {
				n.log.Debug("disk poll: no connection", "member", m.ID, "addr", addr, "err", err)
				return
			}
			ctx, cancel := context.WithTimeout(n.bg, timeout)
			defer cancel()
			resp, err := cellv1.NewCellServiceClient(conn).GetStatus(ctx, &cellv1.GetStatusRequest{})
			if err != nil {
				n.log.Debug("disk poll: member did not answer", "member", m.ID, "addr", addr, "err", rpcerr.FromStatus(err))
				return
			}
			if resp.GetNode().GetNodeId() != m.ID {
				return // an address now used by another node
			}
			n.st.NotePeerDisk(m.ID, resp.GetStorageFull(), resp.GetFreeBytes())
		})
	}
	wg.Wait()
}
