package service

import (
	"context"
	"slices"

	"github.com/cellplane/cellplane/cells/store"
	"github.com/cellplane/cellplane/internal/labelsel"
	"github.com/cellplane/cellplane/internal/tenantmd"
	contextv1 "github.com/cellplane/cellplane/proto/cellplane/context/v1"
)

// keywordContexts returns the best limit entries for req.Query, best
// first, filtered as req says and scoped to the caller: the tenant's
// contexts, or with created_by_caller only those the calling principal
// created (none for a caller without a principal). truncated: the scan
// stopped at Limits.MaxKeywordPostings.
func (s *ContextServer) keywordContexts(ctx context.Context, tenant string, epoch uint64, req *contextv1.SearchContextsRequest, limit int) ([]*contextv1.ContextHit, bool, error) {
	labels, err := labelsel.Compile(req.GetContextLabels())
	if err != nil {
		return nil, false, err // validated already
	}
	meta, err := labelsel.Compile(req.GetEntryMetadata())
	if err != nil {
		return nil, false, err
	}
	principal, _ := tenantmd.Caller(ctx)
	if req.GetCreatedByCaller() && principal == "" {
		return nil, false, nil
	}
	roles := req.GetRoles()
	accept := func(c *contextv1.Context, e *contextv1.Entry) bool {
		return (!req.GetCreatedByCaller() || c.GetLabels()[store.PrincipalLabel] == principal) &&
			labels.Matches(c.GetLabels()) && meta.Matches(e.GetMetadata()) &&
			(len(roles) == 0 || slices.Contains(roles, e.GetRole()))
	}
	var res store.KeywordResult
	err = s.st.ReadTenant(ctx, tenant, epoch, readOptions(req.GetReadOptions()), func(v *store.TenantView) error {
		var err error
		res, err = v.KeywordEntries(store.KeywordQuery{Text: req.GetQuery(), MatchAll: req.GetMatchAll(),
			MaxPostings: s.lim.MaxKeywordPostings, Limit: limit}, req.GetContextIds(), accept)
		return err
	})
	if err != nil {
		return nil, false, s.storeErr("search_contexts", err)
	}
	hits := make([]*contextv1.ContextHit, 0, len(res.Entries))
	for _, h := range res.Entries {
		hits = append(hits, &contextv1.ContextHit{ContextId: h.ContextID, Entry: h.Entry, Score: h.Score})
	}
	return hits, res.Truncated, nil
}

// keywordMemory returns the best limit memory items for req.Query, in the
// memory the scope names (the caller's own by default, as GetMemory).
// req.Labels filters the ranked items (labelsel).
func (s *ContextServer) keywordMemory(ctx context.Context, tenant string, epoch uint64, req *contextv1.SearchMemoryRequest, limit int) ([]*contextv1.MemoryHit, bool, error) {
	owner := memoryPrincipal(ctx, req.GetScope())
	labels, err := labelsel.Compile(req.GetLabels())
	if err != nil {
		return nil, false, err // validated already
	}
	var accept func(*contextv1.MemoryItem) bool
	if !labels.Empty() {
		accept = func(m *contextv1.MemoryItem) bool { return labels.Matches(m.GetLabels()) }
	}
	var res store.KeywordResult
	err = s.st.ReadTenant(ctx, tenant, epoch, readOptions(req.GetReadOptions()), func(v *store.TenantView) error {
		var err error
		res, err = v.KeywordMemory(store.KeywordQuery{Text: req.GetQuery(), MatchAll: req.GetMatchAll(),
			MaxPostings: s.lim.MaxKeywordPostings, Limit: limit}, owner, req.GetPrefix(), accept)
		return err
	})
	if err != nil {
		return nil, false, s.storeErr("search_memory", err)
	}
	hits := make([]*contextv1.MemoryHit, 0, len(res.Memory))
	for _, h := range res.Memory {
		hits = append(hits, &contextv1.MemoryHit{Item: h.Item, Score: h.Score})
	}
	return hits, res.Truncated, nil
}
