package service

import (
	"context"
	"slices"

	"github.com/cellplane/cellplane/cells/store"
	"github.com/cellplane/cellplane/internal/cperr"
	"github.com/cellplane/cellplane/internal/labelsel"
	"github.com/cellplane/cellplane/internal/tenantmd"
	contextv1 "github.com/cellplane/cellplane/proto/cellplane/context/v1"
)

// vectorContexts returns the best limit entries for req.Vector, best
// first, filtered as req says and scoped to the caller. The store ranks
// (exact scan or HNSW index, docs/search.md "Vector search"); this
// accepts or refuses each candidate: its context visible and matching
// the filters, the entry matching metadata and roles.
func (s *ContextServer) vectorContexts(ctx context.Context, tenant string, epoch uint64, req *contextv1.SearchContextsRequest, limit int) ([]*contextv1.ContextHit, error) {
	labels, err := labelsel.Compile(req.GetContextLabels())
	if err != nil {
		return nil, cperr.Invalid(cperr.FieldViolation{Field: "context_labels", Description: err.Error()})
	}
	meta, err := labelsel.Compile(req.GetEntryMetadata())
	if err != nil {
		return nil, cperr.Invalid(cperr.FieldViolation{Field: "entry_metadata", Description: err.Error()})
	}
	principal, _ := tenantmd.Caller(ctx)
	if req.GetCreatedByCaller() && principal == "" {
		return nil, nil // no principal: it created nothing
	}
	var hits []*contextv1.ContextHit
	err = s.st.ReadTenant(ctx, tenant, epoch, readOptions(req.GetReadOptions()), func(v *store.TenantView) error {
		visible := map[string]bool{}
		_, _, err := v.SearchContextVectors(req.GetVector(), limit, req.GetContextIds(), func(h store.VectorHit) (bool, error) {
			ok, seen := visible[h.ContextID]
			if !seen {
				c, err := v.Context(h.ContextID)
				switch {
				case cperr.ReasonOf(err) == cperr.ContextNotFound:
					ok = false // deleted (kept for its forks) or expired
				case err != nil:
					return false, err
				default:
					ok = labels.Matches(c.GetLabels()) &&
						(!req.GetCreatedByCaller() || c.GetLabels()[store.PrincipalLabel] == principal)
				}
				visible[h.ContextID] = ok
			}
			if !ok {
				return false, nil
			}
			e, err := v.VectorEntry(h)
			if err != nil || e == nil {
				return false, err
			}
			if !meta.Matches(e.GetMetadata()) || (len(req.GetRoles()) > 0 && !slices.Contains(req.GetRoles(), e.GetRole())) {
				return false, nil
			}
			hits = append(hits, &contextv1.ContextHit{ContextId: h.ContextID, Entry: e, Score: h.Score})
			return true, nil
		})
		return err
	})
	if err != nil {
		return nil, s.storeErr("search_contexts", err)
	}
	return hits, nil
}

// vectorMemory returns the best limit memory items for req.Vector, from
// the caller's memory (or the tenant's, scope TENANT) only.
func (s *ContextServer) vectorMemory(ctx context.Context, tenant string, epoch uint64, req *contextv1.SearchMemoryRequest, limit int) ([]*contextv1.MemoryHit, error) {
	labels, err := labelsel.Compile(req.GetLabels())
	if err != nil {
		return nil, cperr.Invalid(cperr.FieldViolation{Field: "labels", Description: err.Error()})
	}
	owner := memoryPrincipal(ctx, req.GetScope())
	var hits []*contextv1.MemoryHit
	err = s.st.ReadTenant(ctx, tenant, epoch, readOptions(req.GetReadOptions()), func(v *store.TenantView) error {
		_, _, err := v.SearchMemoryVectors(owner, req.GetPrefix(), req.GetVector(), limit, func(h store.VectorHit) (bool, error) {
			if h.Principal != owner {
				return false, nil
			}
			it, err := v.MemoryOf(owner, h.Key)
			switch {
			case cperr.ReasonOf(err) == cperr.KeyNotFound:
				return false, nil
			case err != nil:
				return false, err
			}
			if !labels.Empty() && !labels.Matches(it.GetLabels()) {
				return false, nil
			}
			hits = append(hits, &contextv1.MemoryHit{Item: it, Score: h.Score})
			return true, nil
		})
		return err
	})
	if err != nil {
		return nil, s.storeErr("search_memory", err)
	}
	return hits, nil
}
