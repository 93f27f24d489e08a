package service

import (
	"context"
	"strings"

	"github.com/cellplane/cellplane/cells/store"
	"github.com/cellplane/cellplane/cells/validate"
	"github.com/cellplane/cellplane/internal/cperr"
	"github.com/cellplane/cellplane/internal/labelsel"
	"github.com/cellplane/cellplane/internal/tenantmd"
	cellv1 "github.com/cellplane/cellplane/proto/cellplane/cell/v1"
	contextv1 "github.com/cellplane/cellplane/proto/cellplane/context/v1"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
)

// PutMemory implements ContextService.PutMemory.
func (s *ContextServer) PutMemory(ctx context.Context, req *contextv1.PutMemoryRequest) (*contextv1.PutMemoryResponse, error) {
	return tenantCall(ctx, s.core, req, validate.PutMemory, func(tenant string, epoch uint64) (*contextv1.PutMemoryResponse, error) {
		op := &contextv1.PutMemoryRequest{Key: req.GetKey(), Value: req.GetValue(), ExpectedRevision: req.ExpectedRevision, RequestId: req.GetRequestId(), Scope: req.GetScope(),
			ExpireTime: req.GetExpireTime(), Ttl: req.GetTtl(), Labels: req.GetLabels(), Embedding: req.GetEmbedding()}
		res, err := s.propose(ctx, &cellv1.Command{Tenant: tenant, Epoch: epoch, RequestId: req.GetRequestId(), Op: &cellv1.Command_PutMemory{PutMemory: op}})
		if err != nil {
			return nil, err
		}
		if res.GetPutMemory() == nil {
			return nil, s.missingResult("put_memory", tenant)
		}
		return res.GetPutMemory(), nil
	}, func(ctx context.Context, cc *grpc.ClientConn) (*contextv1.PutMemoryResponse, error) {
		return client(cc).PutMemory(ctx, req)
	})
}

// GetMemory implements ContextService.GetMemory.
func (s *ContextServer) GetMemory(ctx context.Context, req *contextv1.GetMemoryRequest) (*contextv1.GetMemoryResponse, error) {
	return tenantCall(ctx, s.core, req, validate.GetMemory, func(tenant string, epoch uint64) (*contextv1.GetMemoryResponse, error) {
		var out *contextv1.MemoryItem
		err := s.st.ReadTenant(ctx, tenant, epoch, readOptions(req.GetReadOptions()), func(v *store.TenantView) error {
			it, err := v.MemoryOf(memoryPrincipal(ctx, req.GetScope()), req.GetKey())
			out = it
			if err == nil {
				tseq, at := v.Cursor()
				tenantmd.SetReadCursor(ctx, tseq, at, expireNanos(it.GetExpireTime()))
			}
			return err
		})
		if err != nil {
			return nil, s.storeErr("get_memory", err)
		}
		return &contextv1.GetMemoryResponse{Item: out}, nil
	}, func(ctx context.Context, cc *grpc.ClientConn) (*contextv1.GetMemoryResponse, error) {
		return relayCursor(ctx, func(opt grpc.CallOption) (*contextv1.GetMemoryResponse, error) {
			return client(cc).GetMemory(ctx, req, opt)
		})
	})
}

// DeleteMemory implements ContextService.DeleteMemory.
func (s *ContextServer) DeleteMemory(ctx context.Context, req *contextv1.DeleteMemoryRequest) (*contextv1.DeleteMemoryResponse, error) {
	return tenantCall(ctx, s.core, req, validate.DeleteMemory, func(tenant string, epoch uint64) (*contextv1.DeleteMemoryResponse, error) {
		op := &contextv1.DeleteMemoryRequest{Key: req.GetKey(), ExpectedRevision: req.ExpectedRevision, RequestId: req.GetRequestId(), Scope: req.GetScope()}
		if _, err := s.propose(ctx, &cellv1.Command{Tenant: tenant, Epoch: epoch, RequestId: req.GetRequestId(), Op: &cellv1.Command_DeleteMemory{DeleteMemory: op}}); err != nil {
			return nil, err
		}
		return &contextv1.DeleteMemoryResponse{}, nil
	}, func(ctx context.Context, cc *grpc.ClientConn) (*contextv1.DeleteMemoryResponse, error) {
		return client(cc).DeleteMemory(ctx, req)
	})
}

// ListMemory implements ContextService.ListMemory.
func (s *ContextServer) ListMemory(ctx context.Context, req *contextv1.ListMemoryRequest) (*contextv1.ListMemoryResponse, error) {
	return tenantCall(ctx, s.core, req, validate.ListMemory, func(tenant string, epoch uint64) (*contextv1.ListMemoryResponse, error) {
		after, err := decodeMemoryToken(req.GetPageToken(), req.GetPrefix())
		if err != nil {
			return nil, err
		}
		chunk := pageChunk
		if !req.GetKeysOnly() {
			chunk = pageChunkValue
		}

		sel, err := labelsel.Compile(req.GetLabelSelector())
		if err != nil {
			return nil, cperr.Invalid(cperr.FieldViolation{Field: "label_selector", Description: err.Error()})
		}
		filter := store.ListFilter{Labels: sel}
		if t := req.GetUpdatedAfter(); t != nil {
			filter.UpdatedAfter = t.AsTime().UnixNano()
		}
		resp := &contextv1.ListMemoryResponse{}
		owner := memoryPrincipal(ctx, req.GetScope())
		err = s.st.ReadTenant(ctx, tenant, epoch, readOptions(req.GetReadOptions()), func(v *store.TenantView) error {
			// The store filters while it scans: never a page filtered
			// after the store returned it.
			list := func(after string, n int, f store.ListFilter) (store.ListPage[*contextv1.MemoryItem], error) {
				return v.ListMemoryWhere(owner, req.GetPrefix(), after, n, req.GetKeysOnly(), f)
			}
			items, resume, more, err := fillScanPage(s.lim.PageSize(req.GetPageSize()), chunk, s.lim.MaxReadBytes, s.lim.MaxListScan, after, list,
				filter, (*contextv1.MemoryItem).GetKey, func(it *contextv1.MemoryItem) int { return proto.Size(it) })
			if err != nil {
				return err
			}
			resp.Items, resp.NextPageToken = items, ""
			if more {
				if !strings.HasPrefix(resume, req.GetPrefix()) {
					return s.missingResult("list_memory", tenant)
				}
				resp.NextPageToken = encodePageToken(kindMemory, resume)
			}
			return nil
		})
		if err != nil {
			return nil, s.storeErr("list_memory", err)
		}
		return resp, nil
	}, func(ctx context.Context, cc *grpc.ClientConn) (*contextv1.ListMemoryResponse, error) {
		return client(cc).ListMemory(ctx, req)
	})
}

// memoryPrincipal is whose memory a read addresses: the principal the
// edge authenticated (tenantmd.Caller), as a write's Command.principal,
// unless the tenant scope is asked for.
func memoryPrincipal(ctx context.Context, scope contextv1.MemoryScope) string {
	principal, _ := tenantmd.Caller(ctx)
	return store.MemoryPrincipal(scope, principal)
}
