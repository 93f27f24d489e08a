package service

import (
	"context"
	"errors"

	"github.com/cellplane/cellplane/cells/store"
	"github.com/cellplane/cellplane/cells/validate"
	"github.com/cellplane/cellplane/internal/cperr"
	cellv1 "github.com/cellplane/cellplane/proto/cellplane/cell/v1"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
)

// CellServer implements cellv1.CellServiceServer over a Store. Its
// mutating calls are forwarded to the leader like data writes.
type CellServer struct {
	cellv1.UnimplementedCellServiceServer
	*core
}

var _ cellv1.CellServiceServer = (*CellServer)(nil)

func cellClient(cc *grpc.ClientConn) cellv1.CellServiceClient {
	return cellv1.NewCellServiceClient(cc)
}

// SetTenant implements CellService.SetTenant.
func (s *CellServer) SetTenant(ctx context.Context, req *cellv1.SetTenantRequest) (*cellv1.SetTenantResponse, error) {
	if err := validate.SetTenant(s.lim, req); err != nil {
		return nil, err
	}
	return forward(ctx, s.core, func() (*cellv1.SetTenantResponse, error) {
		op := &cellv1.SetTenantOp{Role: req.GetRole(), Epoch: req.GetEpoch(), SourceCell: req.GetSourceCell(), Resume: req.GetResume(), Quota: req.GetQuota()}
		res, err := s.propose(ctx, &cellv1.Command{Tenant: req.GetTenant(), RequestId: req.GetRequestId(), Op: &cellv1.Command_SetTenant{SetTenant: op}})
		if err != nil {
			return nil, err
		}
		if res.GetTenant() == nil {
			return nil, s.missingResult("set_tenant", req.GetTenant())
		}
		if r := s.cfg.Replication; r != nil {
			r.Notify(req.GetTenant())
		}
		s.log.Info("tenant role set", "tenant", req.GetTenant(), "role", req.GetRole().String(), "epoch", req.GetEpoch(),
			"source_cell", req.GetSourceCell(), "tseq", res.GetTseq())
		return &cellv1.SetTenantResponse{Tenant: res.GetTenant()}, nil
	}, func(ctx context.Context, cc *grpc.ClientConn) (*cellv1.SetTenantResponse, error) {
		return cellClient(cc).SetTenant(ctx, req)
	})
}

// GetTenant implements CellService.GetTenant.
func (s *CellServer) GetTenant(ctx context.Context, req *cellv1.GetTenantRequest) (*cellv1.GetTenantResponse, error) {
	if err := validate.GetTenant(s.lim, req); err != nil {
		return nil, err
	}
	return forward(ctx, s.core, func() (*cellv1.GetTenantResponse, error) {
		var out *cellv1.TenantInfo
		err := s.st.ReadCell(ctx, readOptions(req.GetReadOptions()), func(v *store.CellView) error {
			t, err := v.Tenant(req.GetTenant())
			out = t
			return err
		})
		if err != nil {
			return nil, s.storeErr("get_tenant", err)
		}
		resp := &cellv1.GetTenantResponse{Tenant: out}
		if r := s.cfg.Replication; r != nil && out.GetRole() == cellv1.Role_ROLE_STANDBY {
			resp.Replication = r.Status(req.GetTenant())
		}
		return resp, nil
	}, func(ctx context.Context, cc *grpc.ClientConn) (*cellv1.GetTenantResponse, error) {
		return cellClient(cc).GetTenant(ctx, req)
	})
}

// ListTenants implements CellService.ListTenants.
func (s *CellServer) ListTenants(ctx context.Context, req *cellv1.ListTenantsRequest) (*cellv1.ListTenantsResponse, error) {
	if err := validate.ListTenants(s.lim, req); err != nil {
		return nil, err
	}
	after, err := decodePageToken(kindTenants, req.GetPageToken())
	if err != nil {
		return nil, err
	}
	return forward(ctx, s.core, func() (*cellv1.ListTenantsResponse, error) {
		resp := &cellv1.ListTenantsResponse{}
		err := s.st.ReadCell(ctx, readOptions(req.GetReadOptions()), func(v *store.CellView) error {
			ts, more, err := fillPage(s.lim.PageSize(req.GetPageSize()), pageChunk, s.lim.MaxReadBytes, after, v.ListTenants,
				(*cellv1.TenantInfo).GetTenant, func(t *cellv1.TenantInfo) int { return proto.Size(t) })
			if err != nil {
				return err
			}
			resp.Tenants, resp.NextPageToken = ts, ""
			if more && len(ts) > 0 {
				resp.NextPageToken = encodePageToken(kindTenants, ts[len(ts)-1].GetTenant())
			}
			return nil
		})
		if err != nil {
			return nil, s.storeErr("list_tenants", err)
		}
		return resp, nil
	}, func(ctx context.Context, cc *grpc.ClientConn) (*cellv1.ListTenantsResponse, error) {
		return cellClient(cc).ListTenants(ctx, req)
	})
}

// DeleteTenant implements CellService.DeleteTenant.
func (s *CellServer) DeleteTenant(ctx context.Context, req *cellv1.DeleteTenantRequest) (*cellv1.DeleteTenantResponse, error) {
	if err := validate.DeleteTenant(s.lim, req); err != nil {
		return nil, err
	}
	return forward(ctx, s.core, func() (*cellv1.DeleteTenantResponse, error) {
		cmd := &cellv1.Command{Tenant: req.GetTenant(), RequestId: req.GetRequestId(), Op: &cellv1.Command_DeleteTenant{DeleteTenant: &cellv1.DeleteTenantOp{
			ExpectedEpoch: req.GetExpectedEpoch(), AllowedRoles: req.GetAllowedRoles(), // force: no guard
		}}}
		if _, err := s.propose(ctx, cmd); err != nil {
			return nil, err
		}
		s.log.Info("tenant deleted", "tenant", req.GetTenant(), "expected_epoch", req.GetExpectedEpoch(),
			"allowed_roles", req.GetAllowedRoles(), "force", req.GetForce())
		return &cellv1.DeleteTenantResponse{}, nil
	}, func(ctx context.Context, cc *grpc.ClientConn) (*cellv1.DeleteTenantResponse, error) {
		return cellClient(cc).DeleteTenant(ctx, req)
	})
}

// AckReplica implements CellService.AckReplica.
func (s *CellServer) AckReplica(ctx context.Context, req *cellv1.AckReplicaRequest) (*cellv1.AckReplicaResponse, error) {
	if err := validate.AckReplica(s.lim, req); err != nil {
		return nil, err
	}
	return forward(ctx, s.core, func() (*cellv1.AckReplicaResponse, error) {
		cmd := &cellv1.Command{Tenant: req.GetTenant(), Op: &cellv1.Command_ReplicaAck{ReplicaAck: &cellv1.ReplicaAckOp{Tseq: req.GetTseq()}}}
		if _, err := s.propose(ctx, cmd); err != nil {
			return nil, err
		}
		return &cellv1.AckReplicaResponse{}, nil
	}, func(ctx context.Context, cc *grpc.ClientConn) (*cellv1.AckReplicaResponse, error) {
		return cellClient(cc).AckReplica(ctx, req)
	})
}

// ListChanges implements CellService.ListChanges: this node's applied
// change log of a tenant in any role (FENCED included).
func (s *CellServer) ListChanges(ctx context.Context, req *cellv1.ListChangesRequest) (*cellv1.ListChangesResponse, error) {
	if err := validate.ListChanges(s.lim, req); err != nil {
		return nil, err
	}
	limit := int(req.GetLimit())
	if limit == 0 {
		limit = 100
	}
	resp := &cellv1.ListChangesResponse{}
	err := s.st.ReadReplica(req.GetTenant(), func(v *store.TenantView) error {
		resp.Tenant = v.Info()
		evs, err := v.Changes(req.GetAfterTseq(), limit)
		if errors.Is(err, store.ErrChangesTrimmed) {
			return cperr.New(cperr.ChangesTrimmed, "the change log starts after tseq %d", req.GetAfterTseq()+1)
		}
		resp.Events = evs
		return err
	})
	if err != nil {
		return nil, s.storeErr("list_changes", err)
	}
	return resp, nil
}

// AddVoter implements CellService.AddVoter: it adds (or re-addresses)
// the member, then registers its addresses in the cell state when it
// has a gRPC address (an AddVoter naming only a Raft address must not
// erase an earlier registration).
func (s *CellServer) AddVoter(ctx context.Context, req *cellv1.AddVoterRequest) (*cellv1.AddVoterResponse, error) {
	if err := validate.AddVoter(s.lim, req); err != nil {
		return nil, err
	}
	return forward(ctx, s.core, func() (*cellv1.AddVoterResponse, error) {
		n := req.GetNode()
		if err := s.checkHosts(n); err != nil {
			return nil, err
		}
		if err := s.replaceIncarnation(ctx, n); err != nil {
			return nil, s.storeErr("add_voter", err)
		}
		if err := s.st.AddVoter(ctx, raftID(n), n.GetRaftAddr()); err != nil {
			return nil, s.storeErr("add_voter", err)
		}
		if err := s.register(ctx, n); err != nil {
			return nil, err
		}
		s.log.Info("voter added", "member", n.GetNodeId(), "raft_id", raftID(n), "raft_addr", n.GetRaftAddr())
		return &cellv1.AddVoterResponse{}, nil
	}, func(ctx context.Context, cc *grpc.ClientConn) (*cellv1.AddVoterResponse, error) {
		return cellClient(cc).AddVoter(ctx, req)
	})
}

// AddNonVoter implements CellService.AddNonVoter like AddVoter.
func (s *CellServer) AddNonVoter(ctx context.Context, req *cellv1.AddNonVoterRequest) (*cellv1.AddNonVoterResponse, error) {
	if err := validate.AddNonVoter(s.lim, req); err != nil {
		return nil, err
	}
	return forward(ctx, s.core, func() (*cellv1.AddNonVoterResponse, error) {
		n := req.GetNode()
		if err := s.checkHosts(n); err != nil {
			return nil, err
		}
		if err := s.replaceIncarnation(ctx, n); err != nil {
			return nil, s.storeErr("add_nonvoter", err)
		}
		if err := s.st.AddNonVoter(ctx, raftID(n), n.GetRaftAddr()); err != nil {
			return nil, s.storeErr("add_nonvoter", err)
		}
		if err := s.register(ctx, n); err != nil {
			return nil, err
		}
		s.log.Info("non-voter added", "member", n.GetNodeId(), "raft_id", raftID(n), "raft_addr", n.GetRaftAddr())
		return &cellv1.AddNonVoterResponse{}, nil
	}, func(ctx context.Context, cc *grpc.ClientConn) (*cellv1.AddNonVoterResponse, error) {
		return cellClient(cc).AddNonVoter(ctx, req)
	})
}

// raftID is n's Raft server id: raft_id, or node_id for a node that does
// not send one.
func raftID(n *cellv1.NodeInfo) string {
	if r := n.GetRaftId(); r != "" {
		return r
	}
	return n.GetNodeId()
}

// replaceIncarnation, when n names its Raft id, removes the node's other
// incarnations from the Raft configuration before n is added: the node
// came back without its data dir (under a new Raft id), so they will
// never answer again (H1; store.RemoveStaleIncarnations says why this
// never costs the quorum). A node that names no Raft id replaces
// nothing.
func (s *CellServer) replaceIncarnation(ctx context.Context, n *cellv1.NodeInfo) error {
	if n.GetRaftId() == "" {
		return nil
	}
	_, err := s.st.RemoveStaleIncarnations(ctx, n.GetRaftId())
	return err
}

func (s *CellServer) register(ctx context.Context, n *cellv1.NodeInfo) error {
	if n.GetGrpcAddr() == "" {
		return nil
	}
	_, err := s.propose(ctx, &cellv1.Command{Op: &cellv1.Command_RegisterNode{RegisterNode: n}})
	return err
}

// RemoveServer implements CellService.RemoveServer.
func (s *CellServer) RemoveServer(ctx context.Context, req *cellv1.RemoveServerRequest) (*cellv1.RemoveServerResponse, error) {
	if err := validate.RemoveServer(s.lim, req); err != nil {
		return nil, err
	}
	return forward(ctx, s.core, func() (*cellv1.RemoveServerResponse, error) {
		if err := s.st.RemoveServer(ctx, req.GetNodeId()); err != nil {
			return nil, s.storeErr("remove_server", err)
		}
		s.log.Info("member removed", "member", req.GetNodeId())
		return &cellv1.RemoveServerResponse{}, nil
	}, func(ctx context.Context, cc *grpc.ClientConn) (*cellv1.RemoveServerResponse, error) {
		return cellClient(cc).RemoveServer(ctx, req)
	})
}

// TransferLeadership implements CellService.TransferLeadership.
func (s *CellServer) TransferLeadership(ctx context.Context, req *cellv1.TransferLeadershipRequest) (*cellv1.TransferLeadershipResponse, error) {
	if err := validate.TransferLeadership(s.lim, req); err != nil {
		return nil, err
	}
	return forward(ctx, s.core, func() (*cellv1.TransferLeadershipResponse, error) {
		id, err := s.st.TransferLeadership(ctx, req.GetNodeId())
		if err != nil {
			return nil, s.storeErr("transfer_leadership", err)
		}
		s.log.Info("leadership transferred", "leader", id)
		return &cellv1.TransferLeadershipResponse{LeaderId: id}, nil
	}, func(ctx context.Context, cc *grpc.ClientConn) (*cellv1.TransferLeadershipResponse, error) {
		return cellClient(cc).TransferLeadership(ctx, req)
	})
}

// RegisterNode implements CellService.RegisterNode.
func (s *CellServer) RegisterNode(ctx context.Context, req *cellv1.RegisterNodeRequest) (*cellv1.RegisterNodeResponse, error) {
	if err := validate.RegisterNode(s.lim, req); err != nil {
		return nil, err
	}
	return forward(ctx, s.core, func() (*cellv1.RegisterNodeResponse, error) {
		if err := s.checkRegistration(req.GetNode()); errors.Is(err, cperr.ErrNotLeader) {
			return nil, err
		} else if err != nil {
			s.log.Warn("node registration refused", "member", req.GetNode().GetNodeId(), "raft_addr", req.GetNode().GetRaftAddr(),
				"grpc_addr", req.GetNode().GetGrpcAddr(), "http_addr", req.GetNode().GetHttpAddr(), "err", err)
			return nil, err
		}
		if err := s.register(ctx, req.GetNode()); err != nil {
			return nil, err
		}
		return &cellv1.RegisterNodeResponse{}, nil
	}, func(ctx context.Context, cc *grpc.ClientConn) (*cellv1.RegisterNodeResponse, error) {
		return cellClient(cc).RegisterNode(ctx, req)
	})
}

// ListAudit implements CellService.ListAudit: this node's applied audit
// records of a tenant in any role (docs/contexts.md "Audit").
func (s *CellServer) ListAudit(ctx context.Context, req *cellv1.ListAuditRequest) (*cellv1.ListAuditResponse, error) {
	if err := validate.ListAudit(s.lim, req); err != nil {
		return nil, err
	}
	limit := int(req.GetLimit())
	if limit == 0 {
		limit = 100
	}
	resp := &cellv1.ListAuditResponse{}
	err := s.st.ReadReplica(req.GetTenant(), func(v *store.TenantView) error {
		resp.Tenant = v.Info()
		var err error
		resp.Records, resp.NextAfterTseq, err = v.Audit(store.AuditQuery{AfterTseq: req.GetAfterTseq(), Limit: limit,
			Principal: req.GetPrincipal(), SinceUnixNano: req.GetSinceUnixNano()})
		return err
	})
	if err != nil {
		return nil, s.storeErr("list_audit", err)
	}
	return resp, nil
}

// EraseSubject implements CellService.EraseSubject: one erase_subject
// command naming the subject by its digest (the name is never proposed).
// The caller's principal and origin (the control plane sets the
// operator's) go into the erase's audit record.
func (s *CellServer) EraseSubject(ctx context.Context, req *cellv1.EraseSubjectRequest) (*cellv1.EraseSubjectResponse, error) {
	if err := validate.EraseSubject(s.lim, req); err != nil {
		return nil, err
	}
	return forward(ctx, s.core, func() (*cellv1.EraseSubjectResponse, error) {
		return s.erase(ctx, req.GetTenant(), 0, req.GetPrincipal(), req.GetContextId(), req.GetRequestId())
	}, func(ctx context.Context, cc *grpc.ClientConn) (*cellv1.EraseSubjectResponse, error) {
		return cellClient(cc).EraseSubject(ctx, req)
	})
}

// erase proposes the erasure of a principal's data or of one context
// (exactly one of principal and contextID) and answers its tseq, time and
// counts (shared by CellService.EraseSubject and ContextService.Erase).
func (c *core) erase(ctx context.Context, tenant string, epoch uint64, principal, contextID, requestID string) (*cellv1.EraseSubjectResponse, error) {
	kind, subject := cellv1.EraseSubjectOp_KIND_PRINCIPAL, principal
	if contextID != "" {
		kind, subject = cellv1.EraseSubjectOp_KIND_CONTEXT, contextID
	}
	cmd := &cellv1.Command{Tenant: tenant, Epoch: epoch, RequestId: requestID, Op: &cellv1.Command_EraseSubject{EraseSubject: &cellv1.EraseSubjectOp{
		Kind: kind, SubjectSha256: store.SubjectDigest(tenant, kind, subject)}}}
	res, err := c.propose(ctx, cmd)
	if err != nil {
		return nil, err
	}
	if res.GetEraseSubject() == nil {
		return nil, c.missingResult("erase_subject", tenant)
	}
	// The erase's command time, also for a retry answered from the
	// first erase's dedup record: its audit record has it.
	at := cmd.GetTimeUnixNano()
	_ = c.st.ReadReplica(tenant, func(v *store.TenantView) error {
		if recs, _, err := v.Audit(store.AuditQuery{AfterTseq: res.GetTseq() - 1, Limit: 1}); err == nil && len(recs) == 1 && recs[0].GetTseq() == res.GetTseq() {
			at = recs[0].GetTimeUnixNano()
		}
		return nil
	})
	c.log.Info("subject erased", "tenant", tenant, "kind", kind.String(), "tseq", res.GetTseq(), "deduplicated", res.GetDeduplicated())
	return &cellv1.EraseSubjectResponse{Tseq: res.GetTseq(), TimeUnixNano: at, Erased: res.GetEraseSubject(), Deduplicated: res.GetDeduplicated()}, nil
}
