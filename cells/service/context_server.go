package service

import (
	"context"

	"github.com/cellplane/cellplane/cells/store"
	"github.com/cellplane/cellplane/cells/validate"
	"github.com/cellplane/cellplane/internal/cperr"
	"github.com/cellplane/cellplane/internal/labelsel"
	"github.com/cellplane/cellplane/internal/tenantmd"
	"github.com/cellplane/cellplane/internal/tokens"
	cellv1 "github.com/cellplane/cellplane/proto/cellplane/cell/v1"
	contextv1 "github.com/cellplane/cellplane/proto/cellplane/context/v1"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
)

// ContextServer implements contextv1.ContextServiceServer over a Store.
type ContextServer struct {
	contextv1.UnimplementedContextServiceServer
	*core
}

var _ contextv1.ContextServiceServer = (*ContextServer)(nil)

func client(cc *grpc.ClientConn) contextv1.ContextServiceClient {
	return contextv1.NewContextServiceClient(cc)
}

// CreateContext implements ContextService.CreateContext. An empty
// context_id is minted here, before proposing, so that every replica
// applies the same id.
func (s *ContextServer) CreateContext(ctx context.Context, req *contextv1.CreateContextRequest) (*contextv1.CreateContextResponse, error) {
	return tenantCall(ctx, s.core, req, validate.CreateContext, func(tenant string, epoch uint64) (*contextv1.CreateContextResponse, error) {
		op := &contextv1.CreateContextRequest{ContextId: req.GetContextId(), Labels: req.GetLabels(), RequestId: req.GetRequestId(),
			ExpireTime: req.GetExpireTime(), Ttl: req.GetTtl(), TokenEncoding: req.GetTokenEncoding()}
		if op.ContextId == "" {
			op.ContextId = mintContextID()
		}
		if op.TokenEncoding == "" {
			op.TokenEncoding = s.cfg.TokenEncoding // stamped: every replica stores the same
		}
		res, err := s.propose(ctx, &cellv1.Command{Tenant: tenant, Epoch: epoch, RequestId: req.GetRequestId(), Op: &cellv1.Command_CreateContext{CreateContext: op}})
		if err != nil {
			return nil, err
		}
		if res.GetContext() == nil {
			return nil, s.missingResult("create_context", tenant)
		}
		s.rememberEncoding(tenant, res.GetContext().GetContextId(), tokens.Resolve(res.GetContext().GetTokenEncoding()))
		return &contextv1.CreateContextResponse{Context: res.GetContext()}, nil
	}, func(ctx context.Context, cc *grpc.ClientConn) (*contextv1.CreateContextResponse, error) {
		return client(cc).CreateContext(ctx, req)
	})
}

// GetContext implements ContextService.GetContext.
func (s *ContextServer) GetContext(ctx context.Context, req *contextv1.GetContextRequest) (*contextv1.GetContextResponse, error) {
	return tenantCall(ctx, s.core, req, validate.GetContext, func(tenant string, epoch uint64) (*contextv1.GetContextResponse, error) {
		var out *contextv1.Context
		err := s.st.ReadTenant(ctx, tenant, epoch, readOptions(req.GetReadOptions()), func(v *store.TenantView) error {
			c, err := v.Context(req.GetContextId())
			out = c
			if err == nil {
				tseq, at := v.Cursor()
				tenantmd.SetReadCursor(ctx, tseq, at, expireNanos(c.GetExpireTime()))
			}
			return err
		})
		if err != nil {
			return nil, s.storeErr("get_context", err)
		}
		return &contextv1.GetContextResponse{Context: out}, nil
	}, func(ctx context.Context, cc *grpc.ClientConn) (*contextv1.GetContextResponse, error) {
		return relayCursor(ctx, func(opt grpc.CallOption) (*contextv1.GetContextResponse, error) {
			return client(cc).GetContext(ctx, req, opt)
		})
	})
}

// ListContexts implements ContextService.ListContexts.
func (s *ContextServer) ListContexts(ctx context.Context, req *contextv1.ListContextsRequest) (*contextv1.ListContextsResponse, error) {
	return tenantCall(ctx, s.core, req, validate.ListContexts, func(tenant string, epoch uint64) (*contextv1.ListContextsResponse, error) {
		after, err := decodePageToken(kindContexts, req.GetPageToken())
		if err != nil {
			return nil, err
		}
		sel, err := labelsel.Compile(req.GetLabelSelector())
		if err != nil {
			return nil, cperr.Invalid(cperr.FieldViolation{Field: "label_selector", Description: err.Error()})
		}
		resp := &contextv1.ListContextsResponse{}
		err = s.st.ReadTenant(ctx, tenant, epoch, readOptions(req.GetReadOptions()), func(v *store.TenantView) error {
			// The store filters while it scans (labels, and the owner
			// index for created_by_caller): never a page of other
			// principals' or non-matching contexts filtered afterwards.
			list := v.ListContextsWhere
			if req.GetCreatedByCaller() {
				principal, _ := tenantmd.Caller(ctx)
				list = func(after string, n int, f store.ListFilter) (store.ListPage[*contextv1.Context], error) {
					if principal == "" {
						return store.ListPage[*contextv1.Context]{}, nil
					}
					return v.ListOwnedContextsWhere(principal, after, n, f)
				}
			}
			cs, resume, more, err := fillScanPage(s.lim.PageSize(req.GetPageSize()), pageChunk, s.lim.MaxReadBytes, s.lim.MaxListScan, after, list,
				store.ListFilter{Labels: sel}, (*contextv1.Context).GetContextId, func(c *contextv1.Context) int { return proto.Size(c) })
			if err != nil {
				return err
			}
			resp.Contexts, resp.NextPageToken = cs, ""
			if more {
				resp.NextPageToken = encodePageToken(kindContexts, resume)
			}
			return nil
		})
		if err != nil {
			return nil, s.storeErr("list_contexts", err)
		}
		return resp, nil
	}, func(ctx context.Context, cc *grpc.ClientConn) (*contextv1.ListContextsResponse, error) {
		return client(cc).ListContexts(ctx, req)
	})
}

// DeleteContext implements ContextService.DeleteContext.
func (s *ContextServer) DeleteContext(ctx context.Context, req *contextv1.DeleteContextRequest) (*contextv1.DeleteContextResponse, error) {
	return tenantCall(ctx, s.core, req, validate.DeleteContext, func(tenant string, epoch uint64) (*contextv1.DeleteContextResponse, error) {
		op := &contextv1.DeleteContextRequest{ContextId: req.GetContextId(), RequestId: req.GetRequestId()}
		if _, err := s.propose(ctx, &cellv1.Command{Tenant: tenant, Epoch: epoch, RequestId: req.GetRequestId(), Op: &cellv1.Command_DeleteContext{DeleteContext: op}}); err != nil {
			return nil, err
		}
		return &contextv1.DeleteContextResponse{}, nil
	}, func(ctx context.Context, cc *grpc.ClientConn) (*contextv1.DeleteContextResponse, error) {
		return client(cc).DeleteContext(ctx, req)
	})
}

// Append implements ContextService.Append.
func (s *ContextServer) Append(ctx context.Context, req *contextv1.AppendRequest) (*contextv1.AppendResponse, error) {
	return tenantCall(ctx, s.core, req, validate.Append, func(tenant string, epoch uint64) (*contextv1.AppendResponse, error) {
		enc := s.encodingOf(ctx, tenant, epoch, req.GetContextId())
		op := &contextv1.AppendRequest{ContextId: req.GetContextId(), Entries: countEntries(enc, req.GetEntries()), RequestId: req.GetRequestId(), ExpectedSeq: req.ExpectedSeq, TokenEncoding: enc}
		res, err := s.propose(ctx, &cellv1.Command{Tenant: tenant, Epoch: epoch, RequestId: req.GetRequestId(), Op: &cellv1.Command_Append{Append: op}})
		if err != nil {
			return nil, err
		}
		if res.GetAppend() == nil {
			return nil, s.missingResult("append", tenant)
		}
		return res.GetAppend(), nil
	}, func(ctx context.Context, cc *grpc.ClientConn) (*contextv1.AppendResponse, error) {
		return client(cc).Append(ctx, req)
	})
}

// Read implements ContextService.Read.
func (s *ContextServer) Read(ctx context.Context, req *contextv1.ReadRequest) (*contextv1.ReadResponse, error) {
	return tenantCall(ctx, s.core, req, validate.Read, func(tenant string, epoch uint64) (*contextv1.ReadResponse, error) {
		maxEntries, maxBytes := s.lim.ReadEntries(req.GetMaxEntries()), s.lim.ReadBytes(req.GetMaxBytes())
		resp := &contextv1.ReadResponse{}
		err := s.st.ReadTenant(ctx, tenant, epoch, readOptions(req.GetReadOptions()), func(v *store.TenantView) error {
			c, err := v.Context(req.GetContextId())
			if err != nil {
				return err
			}
			r, err := v.ReadContext(c, store.ReadQuery{FromSeq: readStart(req, c.GetLastSeq()), MaxEntries: maxEntries, MaxBytes: maxBytes,
				MaxTokens: uint64(req.GetMaxTokens()), Raw: req.GetRaw(), Newest: req.GetNewest()})
			resp = r
			if err == nil {
				tseq, at := v.Cursor()
				tenantmd.SetReadCursor(ctx, tseq, at, expireNanos(c.GetExpireTime()))
			}
			return err
		})
		if err != nil {
			return nil, s.storeErr("read", err)
		}
		return resp, nil
	}, func(ctx context.Context, cc *grpc.ClientConn) (*contextv1.ReadResponse, error) {
		return relayCursor(ctx, func(opt grpc.CallOption) (*contextv1.ReadResponse, error) { return client(cc).Read(ctx, req, opt) })
	})
}

// Compact implements ContextService.Compact: the summary's tokens are
// counted here, before proposing, like an append's.
func (s *ContextServer) Compact(ctx context.Context, req *contextv1.CompactRequest) (*contextv1.CompactResponse, error) {
	return tenantCall(ctx, s.core, req, validate.Compact, func(tenant string, epoch uint64) (*contextv1.CompactResponse, error) {
		op := &contextv1.CompactRequest{ContextId: req.GetContextId(), UpToSeq: req.GetUpToSeq(), Summary: req.GetSummary(), RequestId: req.GetRequestId()}
		if enc := s.encodingOf(ctx, tenant, epoch, req.GetContextId()); enc != "" {
			op.TokenEncoding, op.SummaryTokens = enc, tokens.Text(enc, req.GetSummary())
		}
		res, err := s.propose(ctx, &cellv1.Command{Tenant: tenant, Epoch: epoch, RequestId: req.GetRequestId(), Op: &cellv1.Command_CompactContext{CompactContext: op}})
		if err != nil {
			return nil, err
		}
		if res.GetCompact() == nil {
			return nil, s.missingResult("compact_context", tenant)
		}
		return res.GetCompact(), nil
	}, func(ctx context.Context, cc *grpc.ClientConn) (*contextv1.CompactResponse, error) {
		return client(cc).Compact(ctx, req)
	})
}

// readStart is the first seq a read asks for: from_seq (0 and 1 both mean
// the first entry), or max(1, last-tail+1) for a tail (tail 0 reads
// nothing: last+1).
func readStart(req *contextv1.ReadRequest, last uint64) uint64 {
	switch st := req.GetStart().(type) {
	case *contextv1.ReadRequest_Tail:
		n := uint64(st.Tail)
		if n > last {
			return 1
		}
		return last - n + 1
	case *contextv1.ReadRequest_FromSeq:
		return max(1, st.FromSeq)
	}
	return 1
}

// Fork implements ContextService.Fork: one fork_context command (the
// store stitches the source's prefix at read). An empty new_context_id is
// minted here, before proposing, so that every replica applies the same id.
func (s *ContextServer) Fork(ctx context.Context, req *contextv1.ForkRequest) (*contextv1.ForkResponse, error) {
	return tenantCall(ctx, s.core, req, validate.Fork, func(tenant string, epoch uint64) (*contextv1.ForkResponse, error) {
		op := proto.Clone(req).(*contextv1.ForkRequest)
		if op.NewContextId == "" {
			op.NewContextId = mintContextID()
		}
		res, err := s.propose(ctx, &cellv1.Command{Tenant: tenant, Epoch: epoch, RequestId: req.GetRequestId(), Op: &cellv1.Command_ForkContext{ForkContext: op}})
		if err != nil {
			return nil, err
		}
		if res.GetContext() == nil {
			return nil, s.missingResult("fork_context", tenant)
		}
		return &contextv1.ForkResponse{Context: res.GetContext()}, nil
	}, func(ctx context.Context, cc *grpc.ClientConn) (*contextv1.ForkResponse, error) {
		return client(cc).Fork(ctx, req)
	})
}
