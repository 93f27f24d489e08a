package routing

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/cellplane/cellplane/controlplane/catalog"
	"github.com/cellplane/cellplane/controlplane/topo"
	"github.com/cellplane/cellplane/internal/auth"
	"github.com/cellplane/cellplane/internal/retry"
	cpv1 "github.com/cellplane/cellplane/proto/cellplane/controlplane/v1"
)

// listTimeout bounds the wait for one page (or chunk) of a full load.
const listTimeout = 30 * time.Second

// cellState is the loader's raw view of one cell: it is owned by the
// loader goroutine and turned into an immutable CellRoute on change.
type cellState struct {
	cell   *cpv1.Cell
	leader *cpv1.CellLeader
	nodes  map[string]*cpv1.Node
}

type cellStates map[string]*cellState

func (cs cellStates) get(id string) *cellState {
	c := cs[id]
	if c == nil {
		c = &cellState{nodes: map[string]*cpv1.Node{}}
		cs[id] = c
	}
	return c
}

// route builds the CellRoute of a cell (nil: not a cell, only registry
// entries of a deleted or not yet created cell).
func (c *cellState) route(id string) *CellRoute {
	if c == nil || c.cell == nil {
		return nil
	}
	r := &CellRoute{ID: id, Region: c.cell.GetRegion()}
	if c.leader != nil {
		r.LeaderID, r.LeaderGRPC, r.LeaderHTTP = c.leader.GetNodeId(), c.leader.GetGrpcAddr(), c.leader.GetHttpAddr()
	}
	for nid, n := range c.nodes {
		node := Node{ID: nid, GRPCAddr: n.GetGrpcAddr(), HTTPAddr: n.GetHttpAddr(), Worker: n.GetRole() == cpv1.NodeRole_NODE_ROLE_WORKER}
		if node.Worker {
			r.Workers = append(r.Workers, node)
		} else {
			r.Members = append(r.Members, node)
		}
	}
	byID := func(a, b Node) int { return cmp.Compare(a.ID, b.ID) }
	slices.SortFunc(r.Members, byID)
	slices.SortFunc(r.Workers, byID)
	return r
}

// run loads, watches, and reloads until ctx ends.
func (t *Table) run(ctx context.Context) {
	backoff := retry.Policy{Min: t.cfg.RetryMin, Max: t.cfg.RetryMax}.Backoff()
	// wait logs msg and waits the next backoff; false when ctx ended.
	wait := func(msg string, err error) bool {
		d := backoff.Next()
		t.log.Warn(msg, "err", err, "retry_in", d)
		return retry.Sleep(ctx, d) == nil
	}
	for ctx.Err() == nil {
		// The load's first List is linearizable and starts after began:
		// the loaded view holds every change made before began.
		began := time.Now()
		v, cells, err := t.load(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			if !wait("routing: load failed; serving the previous table", err) {
				return
			}
			continue
		}
		t.view.Store(v)
		t.loaded.Store(true)
		t.touch()
		t.markFresh(began)
		t.changed()
		t.routes.notify()
		t.reloads.Inc()
		t.nReloads.Add(1)
		t.log.Info("routing: table loaded", "revision", v.rev.Load(), "tenants", v.n.Load(), "cells", len(v.cellMap()))
		progressed, err := t.watch(ctx, v, cells)
		if ctx.Err() != nil {
			return
		}
		if progressed {
			backoff.Reset()
		}
		if errors.Is(err, topo.ErrCompacted) && progressed {
			// A compaction (or a watch that fell too far behind) is not a
			// failure: reload at once. A watch compacted before its first
			// response waits a backoff, so that it cannot spin.
			t.log.Warn("routing: watch compacted; reloading", "err", err)
			continue
		}
		if !wait("routing: watch failed; reloading", err) {
			return
		}
	}
}

// list calls fn for each key under prefix, all at revision rev (0: now),
// and returns the revision read. It reads through topo.Scan: etcd's
// RangeStream when the store has it (no per-page count of the remaining
// keys, which made a paged full load quadratic in the number of tenants),
// List pages of Config.PageSize otherwise. The read fails when no chunk
// arrives for listTimeout.
func (t *Table) list(ctx context.Context, prefix string, rev topo.Revision, fn func(topo.KV)) (topo.Revision, error) {
	lctx, cancel := context.WithCancel(ctx)
	defer cancel()
	idle := time.AfterFunc(listTimeout, cancel)
	defer idle.Stop()
	read, err := topo.Scan(lctx, t.st, prefix, rev, t.cfg.PageSize, func(kvs []topo.KV) error {
		idle.Reset(listTimeout)
		for _, kv := range kvs {
			fn(kv)
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("routing: list %s: %w", prefix, err)
	}
	return read, nil
}

// load builds a new view from a full listing of tenants/ and cells/ at one
// revision.
func (t *Table) load(ctx context.Context) (*view, cellStates, error) {
	v := newView()
	rev, err := t.list(ctx, topo.TenantsPrefix, 0, func(kv topo.KV) { t.applyTenantEvent(v, topo.Event{Type: topo.EventPut, KV: kv}) })
	if err != nil {
		return nil, nil, err
	}
	cells := cellStates{}
	if _, err := t.list(ctx, topo.CellsPrefix, rev, func(kv topo.KV) { t.applyCell(cells, topo.Event{Type: topo.EventPut, KV: kv}) }); err != nil {
		return nil, nil, err
	}
	m := make(map[string]*CellRoute, len(cells))
	for id, c := range cells {
		if r := c.route(id); r != nil {
			m[id] = r
		}
	}
	v.setCells(m)
	v.rev.Store(int64(rev))
	v.tenantsRev.Store(int64(rev))
	return v, cells, nil
}

// probe is a freshness probe in flight: etcd was at rev after began, so
// a tenants/ watch that reports progress at rev or later held, as of
// began, every change made before it.
type probe struct {
	began time.Time
	rev   int64
}

// probeFreshness reads etcd's current revision and asks the watches for a
// progress notification (ok false: etcd did not answer; the view ages).
func (t *Table) probeFreshness(ctx context.Context) (probe, bool) {
	began := time.Now()
	pctx, cancel := context.WithTimeout(ctx, t.cfg.FreshnessInterval)
	defer cancel()
	res, err := t.st.List(pctx, topo.RevisionProbePrefix, topo.ListOptions{Limit: 1})
	if err == nil {
		err = t.st.RequestProgress(pctx)
	}
	if err != nil {
		if ctx.Err() == nil {
			t.log.Debug("routing: freshness probe failed", "err", err)
		}
		return probe{}, false
	}
	return probe{began: began, rev: int64(res.Revision)}, true
}

// watch follows tenants/ and cells/ from the view's revision + 1 until a
// watch fails (returned) or ctx ends. progressed reports that at least one
// response was applied. Every FreshnessInterval it probes that the
// tenants/ watch is caught up (see Config.APIKeyMaxStaleness).
func (t *Table) watch(ctx context.Context, v *view, cells cellStates) (progressed bool, err error) {
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	from := topo.Revision(v.rev.Load() + 1)
	tch := t.st.Watch(wctx, topo.TenantsPrefix, from)
	cch := t.st.Watch(wctx, topo.CellsPrefix, from)
	tick := time.NewTicker(t.cfg.FreshnessInterval)
	defer tick.Stop()
	// pending is the newest probe not yet answered by the tenants/ watch.
	var pending *probe
	for {
		var (
			r  topo.WatchResponse
			ok bool
		)
		isTenants := false
		select {
		case <-ctx.Done():
			return progressed, ctx.Err()
		case <-tick.C:
			if p, ok := t.probeFreshness(wctx); ok {
				pending = &p
			}
			continue
		case r, ok = <-tch:
			isTenants = true
		case r, ok = <-cch:
		}
		switch {
		case !ok:
			return progressed, errors.New("routing: watch channel closed")
		case r.Err != nil:
			return progressed, r.Err
		}
		progressed = true
		if len(r.Events) == 0 {
			// A progress notification: the tenants/ watch delivered every
			// change up to r.Revision.
			if isTenants && pending != nil && int64(r.Revision) >= pending.rev {
				t.markFresh(pending.began)
				pending = nil
			}
			continue
		}
		rev := int64(r.Revision)
		for _, e := range r.Events {
			rev = max(rev, int64(e.KV.Version))
		}
		if isTenants {
			// Published before the events apply: Refresh must not re-add a
			// tenant these events delete (see Table.Refresh).
			if rev > v.tenantsRev.Load() {
				v.tenantsRev.Store(rev)
			}
			for _, e := range r.Events {
				t.applyTenantEvent(v, e)
			}
			t.routes.notify()
		} else {
			dirty := map[string]bool{}
			for _, e := range r.Events {
				if id := t.applyCell(cells, e); id != "" {
					dirty[id] = true
				}
			}
			if len(dirty) > 0 {
				old := v.cellMap()
				m := make(map[string]*CellRoute, len(old)+1)
				for id, c := range old {
					m[id] = c
				}
				for id := range dirty {
					if r := cells[id].route(id); r != nil {
						m[id] = r
					} else {
						delete(m, id)
					}
					if c := cells[id]; c != nil && c.cell == nil && c.leader == nil && len(c.nodes) == 0 {
						delete(cells, id)
					}
				}
				v.setCells(m)
			}
		}
		if rev > v.rev.Load() {
			v.rev.Store(rev)
		}
		t.touch()
		t.changed()
	}
}

// applyTenantEvent applies one event of tenants/.
func (t *Table) applyTenantEvent(v *view, ev topo.Event) {
	e, err := catalog.DecodeEvent(ev)
	pk, put := e.Key, ev.Type == topo.EventPut
	switch {
	case pk.Kind == topo.KindTenant && !put:
		v.del(pk.ID, int64(ev.KV.Version))
	case pk.Kind == topo.KindAPIKey && !put:
		v.delKey(pk.Sub)
	case pk.Kind == topo.KindRevokedToken && !put:
		v.delRevoked(pk.ID, pk.Sub)
	case pk.Kind == topo.KindRevokedToken:
		if err != nil {
			t.log.Warn("routing: skipping corrupt revoked-token record", "tenant", pk.ID, "err", err)
			return
		}
		rec := e.Value.(*cpv1.RevokedToken)
		v.setRevoked(clone(pk.ID), clone(pk.Sub), auth.RevocationEntry{RevokedAt: rec.GetRevokeTime().AsTime(), ExpiresAt: rec.GetExpireTime().AsTime()})
	case pk.Kind == topo.KindTenant:
		if err != nil {
			t.log.Warn("routing: skipping corrupt tenant record", "err", err)
			return
		}
		ent, err := v.makeEntry(e.Value.(*cpv1.Tenant), int64(ev.KV.Version))
		if err != nil {
			t.log.Warn("routing: skipping tenant", "tenant", pk.ID, "err", err)
			return
		}
		// Clone: pk.ID is a substring of the key, whose prefix the map
		// would otherwise keep alive.
		v.put(clone(pk.ID), ent, nil)
	case pk.Kind == topo.KindAPIKey:
		if err != nil {
			t.log.Warn("routing: skipping corrupt API key record", "err", err)
			return
		}
		rec := e.Value.(*cpv1.ApiKey)
		v.setKey(clone(pk.Sub), apiKey{tenant: clone(pk.ID), hash: slices.Clone(rec.GetSecretHash()), revoked: rec.GetRevokeTime() != nil,
			principal: rec.GetPrincipal(), scopes: auth.KeyScopes(rec.GetScopes())})
	}
}

// applyCell applies one event of cells/ to the raw cell states and
// returns the cell it touched ("" if none).
func (t *Table) applyCell(cells cellStates, ev topo.Event) string {
	e, err := catalog.DecodeEvent(ev)
	pk, put := e.Key, ev.Type == topo.EventPut
	switch pk.Kind {
	case topo.KindCell:
		c := cells.get(pk.ID)
		c.cell = nil
		if put {
			if err != nil {
				t.log.Warn("routing: skipping corrupt cell record", "err", err)
				return pk.ID
			}
			c.cell = e.Value.(*cpv1.Cell)
		}
	case topo.KindCellLeader:
		c := cells.get(pk.ID)
		c.leader = nil
		if put {
			if err != nil {
				t.log.Warn("routing: skipping corrupt cell leader record", "err", err)
				return pk.ID
			}
			c.leader = e.Value.(*cpv1.CellLeader)
		}
	case topo.KindCellNode:
		c := cells.get(pk.ID)
		delete(c.nodes, pk.Sub)
		if put {
			if err != nil {
				t.log.Warn("routing: skipping corrupt node record", "err", err)
				return pk.ID
			}
			c.nodes[pk.Sub] = e.Value.(*cpv1.Node)
		}
	default:
		return ""
	}
	return pk.ID
}
