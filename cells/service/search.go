package service

import (
	"context"
	"sort"
	"strconv"

	"github.com/cellplane/cellplane/cells/validate"
	contextv1 "github.com/cellplane/cellplane/proto/cellplane/context/v1"
	"google.golang.org/grpc"
)

// SearchContexts implements ContextService.SearchContexts: keyword
// ranking (search_keyword.go), vector ranking (search_vector.go), or both
// fused by reciprocal rank (fuse).
func (s *ContextServer) SearchContexts(ctx context.Context, req *contextv1.SearchContextsRequest) (*contextv1.SearchContextsResponse, error) {
	return tenantCall(ctx, s.core, req, validate.SearchContexts, func(tenant string, epoch uint64) (*contextv1.SearchContextsResponse, error) {
		limit := s.lim.SearchHits(req.GetLimit())
		var lists [][]*contextv1.ContextHit
		truncated := false
		if req.GetQuery() != "" {
			hits, trunc, err := s.keywordContexts(ctx, tenant, epoch, req, limit)
			truncated = trunc
			if err != nil {
				return nil, err
			}
			lists = append(lists, hits)
		}
		if len(req.GetVector()) > 0 {
			hits, err := s.vectorContexts(ctx, tenant, epoch, req, limit)
			if err != nil {
				return nil, err
			}
			lists = append(lists, hits)
		}
		return &contextv1.SearchContextsResponse{Hits: fuse(lists, limit, contextHitKey,
			func(h *contextv1.ContextHit, score float64) { h.Score = score }), Truncated: truncated}, nil
	}, func(ctx context.Context, cc *grpc.ClientConn) (*contextv1.SearchContextsResponse, error) {
		return client(cc).SearchContexts(ctx, req)
	})
}

// SearchMemory implements ContextService.SearchMemory, like
// SearchContexts over memory items.
func (s *ContextServer) SearchMemory(ctx context.Context, req *contextv1.SearchMemoryRequest) (*contextv1.SearchMemoryResponse, error) {
	return tenantCall(ctx, s.core, req, validate.SearchMemory, func(tenant string, epoch uint64) (*contextv1.SearchMemoryResponse, error) {
		limit := s.lim.SearchHits(req.GetLimit())
		var lists [][]*contextv1.MemoryHit
		truncated := false
		if req.GetQuery() != "" {
			hits, trunc, err := s.keywordMemory(ctx, tenant, epoch, req, limit)
			truncated = trunc
			if err != nil {
				return nil, err
			}
			lists = append(lists, hits)
		}
		if len(req.GetVector()) > 0 {
			hits, err := s.vectorMemory(ctx, tenant, epoch, req, limit)
			if err != nil {
				return nil, err
			}
			lists = append(lists, hits)
		}
		return &contextv1.SearchMemoryResponse{Hits: fuse(lists, limit, func(h *contextv1.MemoryHit) string { return h.GetItem().GetKey() },
			func(h *contextv1.MemoryHit, score float64) { h.Score = score }), Truncated: truncated}, nil
	}, func(ctx context.Context, cc *grpc.ClientConn) (*contextv1.SearchMemoryResponse, error) {
		return client(cc).SearchMemory(ctx, req)
	})
}

func contextHitKey(h *contextv1.ContextHit) string {
	return h.GetContextId() + "\x00" + strconv.FormatUint(h.GetEntry().GetSeq(), 10)
}

// rrfK is the rank constant of reciprocal rank fusion (Cormack et al.
// 2009): a hit at rank r (from 1) in a list scores 1/(rrfK+r).
const rrfK = 60

// fuse returns the best limit hits of lists. One list is returned as it
// is (its own scores, its order). Several are fused by reciprocal rank:
// each hit's score is the sum of 1/(rrfK+rank) over the lists it is in,
// ties broken by key so the order is deterministic.
func fuse[H any](lists [][]H, limit int, key func(H) string, setScore func(H, float64)) []H {
	switch len(lists) {
	case 0:
		return nil
	case 1:
		if len(lists[0]) > limit {
			return lists[0][:limit]
		}
		return lists[0]
	}
	type fused struct {
		hit   H
		key   string
		score float64
	}
	byKey := map[string]*fused{}
	var all []*fused
	for _, l := range lists {
		for rank, h := range l {
			k := key(h)
			f, ok := byKey[k]
			if !ok {
				f = &fused{hit: h, key: k}
				byKey[k] = f
				all = append(all, f)
			}
			f.score += 1 / float64(rrfK+rank+1)
		}
	}
	sort.Slice(all, func(i, j int) bool {
		if all[i].score != all[j].score {
			return all[i].score > all[j].score
		}
		return all[i].key < all[j].key
	})
	out := make([]H, 0, min(limit, len(all)))
	for _, f := range all[:min(limit, len(all))] {
		setScore(f.hit, f.score)
		out = append(out, f.hit)
	}
	return out
}
