package service

import (
	"context"

	"github.com/cellplane/cellplane/cells/store"
	cellv1 "github.com/cellplane/cellplane/proto/cellplane/cell/v1"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
)

// GetStatus implements CellService.GetStatus: this node's own view, which
// is available with or without a leader and is never forwarded.
func (s *CellServer) GetStatus(ctx context.Context, req *cellv1.GetStatusRequest) (*cellv1.GetStatusResponse, error) {
	st := s.st.Status()
	registered := map[string]*cellv1.NodeInfo{}
	err := s.st.ReadCell(ctx, localUnbounded, func(v *store.CellView) error {
		nodes, err := v.Nodes()
		for _, n := range nodes {
			registered[n.GetNodeId()] = n
		}
		return err
	})
	if err != nil {
		// The Raft part of the status is still worth answering with.
		s.log.Warn("status: cannot read registered nodes", "err", err)
	}
	info := func(id, raftAddr string, known *cellv1.NodeInfo) *cellv1.NodeInfo {
		n := known
		if n == nil {
			n = registered[id]
		}
		if n == nil {
			return &cellv1.NodeInfo{NodeId: id, RaftAddr: raftAddr}
		}
		if n.GetRaftAddr() == "" && raftAddr != "" {
			n = proto.Clone(n).(*cellv1.NodeInfo)
			n.RaftAddr = raftAddr
		}
		return n
	}
	resp := &cellv1.GetStatusResponse{
		Node:          s.node,
		State:         st.State,
		Term:          st.Term,
		LeaderId:      st.LeaderID,
		CommitIndex:   st.CommitIndex,
		AppliedIndex:  st.AppliedIndex,
		LastLogIndex:  st.LastLogIndex,
		FirstLogIndex: st.FirstLogIndex,
		LastContact:   durationpb.New(st.LastContact),
		Tenants:       st.Tenants,
		Member:        st.Member,
	}
	if d := s.st.DiskStatus(); !d.Unsupported {
		resp.StorageFull, resp.FreeBytes, resp.TotalBytes = d.Full, d.FreeBytes, d.TotalBytes
	}
	for _, m := range st.Members {
		suffrage := cellv1.Suffrage_SUFFRAGE_NONVOTER
		if m.Voter {
			suffrage = cellv1.Suffrage_SUFFRAGE_VOTER
		}
		n := info(m.ID, m.RaftAddr, m.Info)
		if m.RaftID != "" && raftID(n) != m.RaftID {
			// Not registered yet under this incarnation (or an old
			// incarnation whose node came back under a new Raft id): show
			// the configuration's id and address.
			n = proto.Clone(n).(*cellv1.NodeInfo)
			n.RaftId, n.RaftAddr = m.RaftID, m.RaftAddr
		}
		leader := m.Leader || st.LeaderRaftID != "" && m.RaftID == st.LeaderRaftID ||
			st.LeaderRaftID == "" && st.LeaderID != "" && m.ID == st.LeaderID
		resp.Members = append(resp.Members, &cellv1.Member{Node: n, Suffrage: suffrage, Leader: leader})
		if leader {
			resp.Leader = n
		}
	}
	if resp.Leader == nil && st.LeaderID != "" {
		resp.Leader = info(st.LeaderID, st.LeaderAddr, nil)
	}
	if req.GetStateDigest() {
		d, err := s.st.StateDigest()
		if err != nil {
			return nil, err
		}
		resp.StateDigest = &cellv1.StateDigest{AppliedIndex: d.AppliedIndex, Sha256: d.SHA256[:], Keys: d.Keys}
	}
	return resp, nil
}
