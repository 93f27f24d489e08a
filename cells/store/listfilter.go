package store

import (
	"github.com/cellplane/cellplane/internal/labelsel"
	contextv1 "github.com/cellplane/cellplane/proto/cellplane/context/v1"
	"google.golang.org/protobuf/proto"
)

// ListFilter narrows a listing in the store: ListContextsWhere,
// ListOwnedContextsWhere and ListMemoryWhere evaluate it while they scan,
// so a page is never filtered after the store returned it.
type ListFilter struct {
	// Labels keeps only items whose labels match (the zero Selector keeps
	// every item).
	Labels labelsel.Selector
	// UpdatedAfter (unix nanos; memory only) keeps only items whose
	// update_time is after it; 0 keeps every item.
	UpdatedAfter int64
	// MaxScan bounds the stored items one call examines (matching or not,
	// visible or not); <= 0: no bound. At the bound the call returns what
	// it found, with More set and Last the last item examined.
	MaxScan int
}

// ListPage is one filtered listing call's result.
type ListPage[T any] struct {
	// Items are the matching, visible items, in key order (at most the
	// call's limit).
	Items []T
	// Last is the id or key of the last stored item the call examined
	// (returned or skipped; "" when it examined none): the listing resumes
	// after it.
	Last string
	// Scanned counts the stored items examined.
	Scanned int
	// More reports that items after Last may exist (the limit or MaxScan
	// stopped the scan).
	More bool
}

// scanPage runs one bounded scan over [lower, upper): for each stored
// item it calls decode, which returns the item's id and the item when it
// is visible and matches (ok false: skipped).
func scanPage[T any](v *TenantView, lower, upper []byte, limit int, f ListFilter, decode func(k, val []byte) (string, T, bool, error)) (ListPage[T], error) {
	var p ListPage[T]
	err := scan(v.r, lower, upper, func(k, val []byte) (bool, error) {
		if len(p.Items) == limit || (f.MaxScan > 0 && p.Scanned >= f.MaxScan) {
			p.More = true
			return false, nil
		}
		id, it, ok, err := decode(k, val)
		if err != nil {
			return false, err
		}
		p.Scanned++
		p.Last = id
		if ok {
			p.Items = append(p.Items, it)
		}
		return true, nil
	})
	return p, err
}

// ListContextsWhere returns up to limit visible contexts whose labels
// match f, with ids after afterID ("" from the start), in id order,
// examining at most f.MaxScan stored contexts.
func (v *TenantView) ListContextsWhere(afterID string, limit int, f ListFilter) (ListPage[*contextv1.Context], error) {
	prefix := tenantKey(v.tenant, kindContext, 0)
	lower := prefix
	if afterID != "" {
		lower = after(prefix, afterID)
	}
	return scanPage(v, lower, prefixEnd(prefix), limit, f, func(k, val []byte) (string, *contextv1.Context, bool, error) {
		var c contextv1.Context
		if err := proto.Unmarshal(val, &c); err != nil {
			return "", nil, false, err
		}
		return string(k[len(prefix):]), &c, v.visible(&c) && f.Labels.Matches(c.GetLabels()), nil
	})
}

// ListOwnedContextsWhere is ListContextsWhere over the contexts principal
// created (PrincipalLabel), read through the owner index: it examines
// only that principal's contexts.
func (v *TenantView) ListOwnedContextsWhere(principal, afterID string, limit int, f ListFilter) (ListPage[*contextv1.Context], error) {
	prefix := principalPrefix(v.tenant, kindOwned, principal)
	lower := prefix
	if afterID != "" {
		lower = after(prefix, afterID)
	}
	return scanPage(v, lower, prefixEnd(prefix), limit, f, func(k, _ []byte) (string, *contextv1.Context, bool, error) {
		id := string(k[len(prefix):])
		var c contextv1.Context
		ok, err := getProto(v.r, contextKey(v.tenant, id), &c)
		if err != nil {
			return "", nil, false, err
		}
		return id, &c, ok && v.visible(&c) && f.Labels.Matches(c.GetLabels()), nil
	})
}

// ListMemoryWhere returns up to limit unexpired items of principal's
// memory ("": the tenant's) whose key has prefix and sorts after afterKey
// ("" from the start) and that match f, in key order, examining at most
// f.MaxScan stored items. keysOnly leaves values out.
func (v *TenantView) ListMemoryWhere(principal, prefix, afterKey string, limit int, keysOnly bool, f ListFilter) (ListPage[*contextv1.MemoryItem], error) {
	base := memoryBase(v.tenant, principal)
	p := append(append([]byte(nil), base...), prefix...)
	lower := p
	if afterKey != "" {
		lower = after(base, afterKey)
		if string(lower) < string(p) {
			lower = p
		}
	}
	upper := prefixEnd(p)
	if prefix == "" {
		upper = prefixEnd(base)
	}
	return scanPage(v, lower, upper, limit, f, func(k, val []byte) (string, *contextv1.MemoryItem, bool, error) {
		var m contextv1.MemoryItem
		if err := proto.Unmarshal(val, &m); err != nil {
			return "", nil, false, err
		}
		ok := !expired(m.GetExpireTime(), v.now) && f.Labels.Matches(m.GetLabels()) &&
			(f.UpdatedAfter == 0 || nanos(m.GetUpdateTime()) > f.UpdatedAfter)
		if keysOnly {
			m.Value = nil
		}
		return string(k[len(base):]), &m, ok, nil
	})
}
