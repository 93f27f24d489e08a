package validate

import (
	cellv1 "github.com/cellplane/cellplane/proto/cellplane/cell/v1"
)

// SetTenant validates a SetTenantRequest: a valid tenant id, a known role
// other than UNSPECIFIED, and an epoch of at least 1.
func SetTenant(lim Limits, req *cellv1.SetTenantRequest) error {
	var v violations
	v.id("tenant", req.GetTenant(), lim.MaxIDLen)
	r := req.GetRole()
	if _, ok := cellv1.Role_name[int32(r)]; !ok || r == cellv1.Role_ROLE_UNSPECIFIED {
		v.add("role", "must be OWNER, STANDBY or FENCED")
	}
	if req.GetEpoch() < 1 {
		v.add("epoch", "must be at least 1")
	}
	if r == cellv1.Role_ROLE_STANDBY {
		v.id("source_cell", req.GetSourceCell(), lim.MaxIDLen)
	} else if req.GetSourceCell() != "" || req.GetResume() {
		v.add("source_cell", "only a STANDBY has a source cell")
	}
	v.requestID(lim, req.GetRequestId())
	return v.err()
}

// AckReplica validates an AckReplicaRequest.
func AckReplica(lim Limits, req *cellv1.AckReplicaRequest) error {
	var v violations
	v.id("tenant", req.GetTenant(), lim.MaxIDLen)
	return v.err()
}

// ListChanges validates a ListChangesRequest.
func ListChanges(lim Limits, req *cellv1.ListChangesRequest) error {
	var v violations
	v.id("tenant", req.GetTenant(), lim.MaxIDLen)
	if req.GetLimit() > 1000 {
		v.add("limit", "must be at most 1000")
	}
	return v.err()
}

// GetTenant validates a GetTenantRequest.
func GetTenant(lim Limits, req *cellv1.GetTenantRequest) error {
	var v violations
	v.id("tenant", req.GetTenant(), lim.MaxIDLen)
	v.readOptions("read_options", req.GetReadOptions())
	return v.err()
}

// ListTenants validates a ListTenantsRequest.
func ListTenants(lim Limits, req *cellv1.ListTenantsRequest) error {
	var v violations
	v.pageToken(lim, req.GetPageToken())
	v.readOptions("read_options", req.GetReadOptions())
	return v.err()
}

// DeleteTenant validates a DeleteTenantRequest: a guarded delete
// (expected_epoch and/or allowed_roles, each role a real one listed once)
// or a forced one, never neither nor both.
func DeleteTenant(lim Limits, req *cellv1.DeleteTenantRequest) error {
	var v violations
	v.id("tenant", req.GetTenant(), lim.MaxIDLen)
	v.requestID(lim, req.GetRequestId())
	guarded := req.GetExpectedEpoch() != 0 || len(req.GetAllowedRoles()) > 0
	switch {
	case req.GetForce() && guarded:
		v.add("force", "must not be set with expected_epoch or allowed_roles")
	case !req.GetForce() && !guarded:
		v.add("expected_epoch", "a delete needs a guard (expected_epoch, allowed_roles) or force")
	}
	seen := map[cellv1.Role]bool{}
	for _, r := range req.GetAllowedRoles() {
		switch {
		case r != cellv1.Role_ROLE_OWNER && r != cellv1.Role_ROLE_STANDBY && r != cellv1.Role_ROLE_FENCED:
			v.add("allowed_roles", "only ROLE_OWNER, ROLE_STANDBY and ROLE_FENCED")
		case seen[r]:
			v.add("allowed_roles", "a role is listed twice")
		}
		seen[r] = true
	}
	return v.err()
}

// AddVoter validates an AddVoterRequest: node id and Raft address are
// required; the other addresses are checked when present.
func AddVoter(lim Limits, req *cellv1.AddVoterRequest) error {
	var v violations
	v.node(lim, "node", req.GetNode(), true)
	return v.err()
}

// AddNonVoter validates an AddNonVoterRequest like AddVoter.
func AddNonVoter(lim Limits, req *cellv1.AddNonVoterRequest) error {
	var v violations
	v.node(lim, "node", req.GetNode(), true)
	return v.err()
}

// RemoveServer validates a RemoveServerRequest.
func RemoveServer(lim Limits, req *cellv1.RemoveServerRequest) error {
	var v violations
	v.id("node_id", req.GetNodeId(), lim.MaxIDLen)
	return v.err()
}

// TransferLeadership validates a TransferLeadershipRequest (node_id is
// optional).
func TransferLeadership(lim Limits, req *cellv1.TransferLeadershipRequest) error {
	var v violations
	v.optionalID("node_id", req.GetNodeId(), lim.MaxIDLen)
	return v.err()
}

// RegisterNode validates a RegisterNodeRequest: a node id and at least a
// gRPC address (registration exists so that members can forward to it).
func RegisterNode(lim Limits, req *cellv1.RegisterNodeRequest) error {
	var v violations
	v.node(lim, "node", req.GetNode(), false)
	if n := req.GetNode(); n != nil && n.GetGrpcAddr() == "" {
		v.add("node.grpc_addr", "is required")
	}
	return v.err()
}

// NodeInfo validates a NodeInfo found at field (for example this node's
// own configuration). needRaft says whether raft_addr is required.
func NodeInfo(lim Limits, field string, n *cellv1.NodeInfo, needRaft bool) error {
	var v violations
	v.node(lim, field, n, needRaft)
	return v.err()
}

func (v *violations) node(lim Limits, field string, n *cellv1.NodeInfo, needRaft bool) {
	if n == nil {
		v.add(field, "is required")
		return
	}
	v.id(field+".node_id", n.GetNodeId(), lim.MaxIDLen)
	if r := n.GetRaftId(); r != "" && !RaftIDOf(n.GetNodeId(), r) {
		v.add(field+".raft_id", "must be node_id, or node_id followed by "+IncarnationSep+" and 16 lowercase hex digits")
	}
	v.addr(lim, field+".raft_addr", n.GetRaftAddr(), needRaft)
	v.addr(lim, field+".grpc_addr", n.GetGrpcAddr(), false)
	v.addr(lim, field+".http_addr", n.GetHttpAddr(), false)
}
