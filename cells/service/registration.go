package service

import (
	"net"
	"net/netip"
	"strings"

	"github.com/cellplane/cellplane/cells/store"
	"github.com/cellplane/cellplane/internal/cperr"
	cellv1 "github.com/cellplane/cellplane/proto/cellplane/cell/v1"
)

// Node registration and leader addresses (security finding C5).
//
// The cell state records each member's addresses (NodeInfo: Raft, gRPC,
// HTTP); followers forward writes to the leader's recorded gRPC address
// and routers learn it from the registry. Whoever can rewrite a member's
// record can redirect those writes to itself and acknowledge writes that
// are then lost. Two rules keep the record tied to the Raft configuration
// (the one thing a caller cannot rewrite with RegisterNode):
//
//  1. Registration (RegisterNode, and the registration AddVoter and
//     AddNonVoter make) for node id X is accepted only when X is a member
//     of the Raft configuration at the leader and the request's raft_addr
//     is X's address there; AddVoter/AddNonVoter (the join path) put X in
//     the configuration first, so a join registers in one call. And the
//     gRPC and HTTP addresses must be on the host of the Raft address
//     (same host string, or the same IP), unless
//     Config.AllowCrossHostAddrs. A node restarting with new gRPC or HTTP
//     ports on its host re-registers; a new Raft address needs AddVoter
//     (which re-addresses the member) first. A violation is refused with
//     PERMISSION_DENIED and nothing is written.
//  2. A follower forwards to the leader's recorded gRPC address only when
//     the record belongs to the Raft leader's id, its Raft address is the
//     leader's address in the configuration (or the address Raft sees the
//     leader at), and rule 1's host check holds; otherwise the call fails
//     with CELL_UNAVAILABLE and nothing is forwarded.
//
// The rules hold with or without mTLS: with it, they bind a certificate's
// node to the addresses the cell sends traffic to.

// checkHosts refuses a NodeInfo whose gRPC or HTTP address is on another
// host than its Raft address (unless the configuration allows it).
func (c *core) checkHosts(n *cellv1.NodeInfo) error {
	if c.cfg.AllowCrossHostAddrs {
		return nil
	}
	for _, a := range []struct{ field, addr string }{{"grpc_addr", n.GetGrpcAddr()}, {"http_addr", n.GetHttpAddr()}} {
		if a.addr != "" && !sameHost(a.addr, n.GetRaftAddr()) {
			return cperr.New(cperr.PermissionDenied, "node %s: %s %q is not on the host of its raft_addr %q", n.GetNodeId(), a.field, a.addr, n.GetRaftAddr())
		}
	}
	return nil
}

// checkRegistration applies rule 1 (see above). Only the leader judges
// (its configuration is the latest): elsewhere it answers NOT_LEADER, and
// the call is forwarded to the leader like any other write. Should the
// leadership move between this check and the proposal, the proposal
// fails with NOT_LEADER and the new leader checks again.
func (c *core) checkRegistration(n *cellv1.NodeInfo) error {
	if id, _ := c.st.Leader(); id != c.node.GetNodeId() {
		return cperr.New(cperr.NotLeader, "this node is not the cell leader")
	}
	m, ok := member(c.st.Status(), n.GetNodeId())
	switch {
	case !ok:
		return cperr.New(cperr.PermissionDenied, "node %s is not a member of the cell: it registers when it joins (AddVoter or AddNonVoter)", n.GetNodeId())
	case n.GetRaftAddr() != m.RaftAddr:
		return cperr.New(cperr.PermissionDenied, "node %s: raft_addr %q is not its address in the Raft configuration", n.GetNodeId(), n.GetRaftAddr())
	}
	return c.checkHosts(n)
}

// leaderIsMember applies rule 2: addr may be forwarded to as leader id's.
func (c *core) leaderIsMember(id, addr string) bool {
	if v := c.verifiedLeader.Load(); v != nil && v[0] == id && v[1] == addr {
		return true
	}
	if !c.checkLeaderMember(id, addr) {
		return false
	}
	c.verifiedLeader.Store(&[2]string{id, addr})
	return true
}

// checkLeaderMember is leaderIsMember without the memo.
func (c *core) checkLeaderMember(id, addr string) bool {
	st := c.st.Status()
	m, ok := member(st, id)
	if !ok || m.Info == nil || m.Info.GetNodeId() != id || m.Info.GetGrpcAddr() != addr {
		return false
	}
	raftAddr := m.Info.GetRaftAddr()
	if raftAddr != m.RaftAddr && (st.LeaderID != id || raftAddr != st.LeaderAddr) {
		return false
	}
	return c.checkHosts(m.Info) == nil
}

func member(st store.Status, id string) (store.Member, bool) {
	for _, m := range st.Members {
		if m.ID == id {
			return m, true
		}
	}
	return store.Member{}, false
}

// sameHost reports whether two host:port addresses name the same host:
// the same host string (case-insensitive) or the same IP address.
func sameHost(a, b string) bool {
	ha, _, err := net.SplitHostPort(a)
	if err != nil {
		return false
	}
	hb, _, err := net.SplitHostPort(b)
	if err != nil {
		return false
	}
	if strings.EqualFold(ha, hb) {
		return true
	}
	ia, erra := netip.ParseAddr(ha)
	ib, errb := netip.ParseAddr(hb)
	return erra == nil && errb == nil && ia.Unmap() == ib.Unmap()
}
