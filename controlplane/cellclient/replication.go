package cellclient

import (
	"context"

	"github.com/cellplane/cellplane/internal/ids"
	cellv1 "github.com/cellplane/cellplane/proto/cellplane/cell/v1"
	"google.golang.org/protobuf/proto"
)

// SetTenant sets req.Tenant's role and epoch on cell and returns the
// tenant's record there afterwards. For a STANDBY, req.SourceCell is the
// cell it replicates from and req.Resume keeps its data (its history is a
// prefix of the source's) instead of bootstrapping it again from an
// export. For an OWNER or FENCED transition the answer's tseq is the tseq
// of that event (for FENCED: the fence tseq). Repeating a call is
// harmless: the cell answers with the record it has for the role and
// epoch it already has (and a repeated request id gets the first answer).
func (c *Client) SetTenant(ctx context.Context, cell string, req *cellv1.SetTenantRequest) (*cellv1.TenantInfo, error) {
	var out *cellv1.TenantInfo
	err := c.call(ctx, cell, func(cl cellv1.CellServiceClient) error {
		fit := proto.Clone(req).(*cellv1.SetTenantRequest)
		fit.RequestId = ids.Fit(req.GetRequestId())
		resp, err := cl.SetTenant(ctx, fit)
		if err != nil {
			return err
		}
		out = resp.GetTenant()
		return nil
	})
	return out, err
}

// GetTenant returns tenant's record on cell, read on the cell's leader
// (linearizable), and, for a STANDBY, its replication stream as the
// leader's sink runs it (nil when no stream runs there). A cell that does
// not know the tenant answers TENANT_NOT_FOUND.
func (c *Client) GetTenant(ctx context.Context, cell, tenant string) (*cellv1.TenantInfo, *cellv1.ReplicationStatus, error) {
	var resp *cellv1.GetTenantResponse
	err := c.call(ctx, cell, func(cl cellv1.CellServiceClient) error {
		r, err := cl.GetTenant(ctx, &cellv1.GetTenantRequest{Tenant: tenant})
		if err != nil {
			return err
		}
		resp = r
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	return resp.GetTenant(), resp.GetReplication(), nil
}

// ListAudit reads tenant's audit records on cell (its leader first).
func (c *Client) ListAudit(ctx context.Context, cell string, req *cellv1.ListAuditRequest) (*cellv1.ListAuditResponse, error) {
	var out *cellv1.ListAuditResponse
	err := c.call(ctx, cell, func(cl cellv1.CellServiceClient) error {
		r, err := cl.ListAudit(ctx, req)
		out = r
		return err
	})
	return out, err
}

// EraseSubject erases a principal's or a context's data from tenant on
// cell (the owner). ctx carries the operator as the caller
// (tenantmd.WithCaller), which the erase's audit record names. A request
// id makes a retry on another member answer with the first erase.
func (c *Client) EraseSubject(ctx context.Context, cell string, req *cellv1.EraseSubjectRequest) (*cellv1.EraseSubjectResponse, error) {
	req = proto.CloneOf(req)
	req.RequestId = ids.Fit(req.GetRequestId())
	var out *cellv1.EraseSubjectResponse
	err := c.call(ctx, cell, func(cl cellv1.CellServiceClient) error {
		r, err := cl.EraseSubject(ctx, req)
		out = r
		return err
	})
	return out, err
}
