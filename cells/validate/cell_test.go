package validate

import (
	"testing"

	cellv1 "github.com/cellplane/cellplane/proto/cellplane/cell/v1"
)

func TestCellRequests(t *testing.T) {
	lim := DefaultLimits()
	node := &cellv1.NodeInfo{NodeId: "n1", RaftAddr: "127.0.0.1:7210", GrpcAddr: "node1.example:9000", HttpAddr: "[::1]:8080"}
	tests := []struct {
		name   string
		err    error
		fields []string
	}{
		{"set ok", SetTenant(lim, &cellv1.SetTenantRequest{Tenant: "t1", Role: cellv1.Role_ROLE_OWNER, Epoch: 1}), nil},
		{"set fenced", SetTenant(lim, &cellv1.SetTenantRequest{Tenant: "t1", Role: cellv1.Role_ROLE_FENCED, Epoch: 7, RequestId: "r"}), nil},
		{"set bad", SetTenant(lim, &cellv1.SetTenantRequest{Tenant: "t 1", RequestId: "?"}), []string{"tenant", "role", "epoch", "request_id"}},
		{"set unknown role", SetTenant(lim, &cellv1.SetTenantRequest{Tenant: "t", Role: 42, Epoch: 1}), []string{"role"}},
		{"get ok", GetTenant(lim, &cellv1.GetTenantRequest{Tenant: "t"}), nil},
		{"get bad", GetTenant(lim, &cellv1.GetTenantRequest{}), []string{"tenant"}},
		{"list ok", ListTenants(lim, &cellv1.ListTenantsRequest{PageSize: 3}), nil},
		{"delete forced", DeleteTenant(lim, &cellv1.DeleteTenantRequest{Tenant: "t", Force: true}), nil},
		{"delete guarded", DeleteTenant(lim, &cellv1.DeleteTenantRequest{Tenant: "t", ExpectedEpoch: 2, AllowedRoles: []cellv1.Role{cellv1.Role_ROLE_FENCED}}), nil},
		{"delete epoch only", DeleteTenant(lim, &cellv1.DeleteTenantRequest{Tenant: "t", ExpectedEpoch: 2}), nil},
		{"delete roles only", DeleteTenant(lim, &cellv1.DeleteTenantRequest{Tenant: "t", AllowedRoles: []cellv1.Role{cellv1.Role_ROLE_STANDBY, cellv1.Role_ROLE_FENCED}}), nil},
		{"delete unguarded", DeleteTenant(lim, &cellv1.DeleteTenantRequest{Tenant: "t"}), []string{"expected_epoch"}},
		{"delete forced and guarded", DeleteTenant(lim, &cellv1.DeleteTenantRequest{Tenant: "t", Force: true, ExpectedEpoch: 1}), []string{"force"}},
		{"delete bad roles", DeleteTenant(lim, &cellv1.DeleteTenantRequest{Tenant: "t", AllowedRoles: []cellv1.Role{cellv1.Role_ROLE_UNSPECIFIED, 42, cellv1.Role_ROLE_OWNER, cellv1.Role_ROLE_OWNER}}), []string{"allowed_roles", "allowed_roles", "allowed_roles"}},
		{"delete bad", DeleteTenant(lim, &cellv1.DeleteTenantRequest{Tenant: "t*", Force: true}), []string{"tenant"}},
		{"voter ok", AddVoter(lim, &cellv1.AddVoterRequest{Node: node}), nil},
		{"voter missing", AddVoter(lim, &cellv1.AddVoterRequest{}), []string{"node"}},
		{"voter no raft", AddVoter(lim, &cellv1.AddVoterRequest{Node: &cellv1.NodeInfo{NodeId: "n"}}), []string{"node.raft_addr"}},
		{"voter bad addrs", AddVoter(lim, &cellv1.AddVoterRequest{Node: &cellv1.NodeInfo{NodeId: "n", RaftAddr: "nohost", GrpcAddr: ":9000", HttpAddr: "h:99999"}}), []string{"node.raft_addr", "node.grpc_addr", "node.http_addr"}},
		{"nonvoter ok", AddNonVoter(lim, &cellv1.AddNonVoterRequest{Node: node}), nil},
		{"nonvoter bad", AddNonVoter(lim, &cellv1.AddNonVoterRequest{Node: &cellv1.NodeInfo{RaftAddr: "h:1"}}), []string{"node.node_id"}},
		{"remove ok", RemoveServer(lim, &cellv1.RemoveServerRequest{NodeId: "n"}), nil},
		{"remove bad", RemoveServer(lim, &cellv1.RemoveServerRequest{}), []string{"node_id"}},
		{"transfer any", TransferLeadership(lim, &cellv1.TransferLeadershipRequest{}), nil},
		{"transfer bad", TransferLeadership(lim, &cellv1.TransferLeadershipRequest{NodeId: "n/1"}), []string{"node_id"}},
		{"register ok", RegisterNode(lim, &cellv1.RegisterNodeRequest{Node: &cellv1.NodeInfo{NodeId: "n", GrpcAddr: "h:1"}}), nil},
		{"register no grpc", RegisterNode(lim, &cellv1.RegisterNodeRequest{Node: &cellv1.NodeInfo{NodeId: "n", RaftAddr: "h:1"}}), []string{"node.grpc_addr"}},
		{"register nil", RegisterNode(lim, &cellv1.RegisterNodeRequest{}), []string{"node"}},
		{"nodeinfo", NodeInfo(lim, "node", node, true), nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { checkFields(t, tt.err, tt.fields...) })
	}
}
