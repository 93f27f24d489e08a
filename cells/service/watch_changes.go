package service

import (
	"context"
	"errors"

	"github.com/cellplane/cellplane/cells/store"
	"github.com/cellplane/cellplane/cells/validate"
	"github.com/cellplane/cellplane/internal/auth"
	"github.com/cellplane/cellplane/internal/changecursor"
	"github.com/cellplane/cellplane/internal/cperr"
	"github.com/cellplane/cellplane/internal/tenantmd"
	cellv1 "github.com/cellplane/cellplane/proto/cellplane/cell/v1"
	contextv1 "github.com/cellplane/cellplane/proto/cellplane/context/v1"
	"google.golang.org/grpc"
)

// WatchChanges implements ContextService.WatchChanges from this member's
// replica: the tenant's change log after the request's cursor, mapped to
// public Changes and filtered for the caller.
//
// The cursor names a change-log event by tseq and command time. It is
// checked against the event this member holds at that tseq: a trimmed
// event, another time (a promotion lost the history it names, and its
// tseq was reused) or a tseq beyond the tenant's ends the stream with
// CURSOR_EXPIRED, carrying the oldest resumable and the current cursor.
// Moves and switchovers carry the change log over unchanged (same tseqs,
// same times), so a cursor stays valid on the tenant's next owner.
//
// Who sees what (the caller as the edge authenticated it, tenantmd):
//   - a principal sees the changes of the contexts it created (labelled
//     store.PrincipalLabel = principal: what ListContexts created_by_caller
//     and the MCP tools call its own) and, with memory:read, the tenant's
//     shared memory and its own principal memory;
//   - a caller without a principal but with scopes (a tenant-level
//     credential) sees every context and, with memory:read, the shared
//     memory;
//   - a call without scopes metadata comes from a component's own
//     identity (a router's or worker's cache; the router and the workers
//     always set it for the callers they authenticated): it sees
//     everything, principal memory with Change.principal set.
//
// An erasure is sent to every watch (ERASED: drop what you hold). A
// tenant leaving this cell ends the stream with WRONG_CELL (resume
// through the router), a node shutting down with CELL_UNAVAILABLE.
func (s *ContextServer) WatchChanges(req *contextv1.WatchChangesRequest, stream grpc.ServerStreamingServer[contextv1.WatchChangesResponse]) error {
	ctx := stream.Context()
	tenant, epoch, err := tenantmd.FromIncoming(ctx)
	if err != nil {
		return err
	}
	if err := validate.WatchChanges(s.lim, req); err != nil {
		return err
	}
	w := &changeWatcher{
		core:   s.core,
		send:   stream.Send,
		tenant: tenant,
		epoch:  epoch,
		view:   newChangeView(ctx, req),
	}
	return s.runWatch(ctx, tenant, func(ctx context.Context) error {
		err := w.run(ctx, req.GetAfter())
		if err != nil && !errors.Is(err, cperr.ErrCursorExpired) {
			s.log.Debug("change watch ended", "tenant", tenant, "err", err)
		}
		return err
	})
}

// runWatch runs one watch stream of tenant: counted against
// Limits.MaxWatchesPerTenant, ended when the node closes (with
// CELL_UNAVAILABLE, so the client resumes on another member).
func (s *ContextServer) runWatch(streamCtx context.Context, tenant string, run func(context.Context) error) error {
	end, err := s.startWatch(tenant)
	if err != nil {
		return err
	}
	defer end()
	ctx, cancel := context.WithCancel(streamCtx)
	defer cancel()
	defer context.AfterFunc(s.closing, cancel)()
	err = run(ctx)
	if s.closing.Err() != nil && streamCtx.Err() == nil {
		return s.unavailable("node is shutting down; resume the watch on another member")
	}
	return err
}

// changeView decides which changes a watch sends (see WatchChanges).
type changeView struct {
	principal string
	infra     bool // no scopes metadata: a component's own call
	memory    bool // memory changes: asked for and allowed
	contexts  bool // context changes: asked for
	ids       map[string]bool
	owned     map[string]bool // context id → the caller's, as last decided
}

// maxOwnedCache bounds changeView.owned; past it the cache starts over
// (it only saves view lookups, and remembers deleted contexts' owners).
const maxOwnedCache = 65536

func newChangeView(ctx context.Context, req *contextv1.WatchChangesRequest) *changeView {
	principal, _ := tenantmd.Caller(ctx)
	cv := &changeView{principal: principal, contexts: req.GetContexts(), memory: req.GetMemory()}
	if !cv.contexts && !cv.memory {
		cv.contexts, cv.memory = true, true
	}
	raw, ok := tenantmd.CallerScopes(ctx)
	if !ok {
		cv.infra = principal == ""
	} else if sc, err := auth.ParseScopes(raw); err != nil || !sc.Has(auth.ScopeMemoryRead) {
		cv.memory = false
	}
	if len(req.GetContextIds()) > 0 {
		cv.ids = make(map[string]bool, len(req.GetContextIds()))
		for _, id := range req.GetContextIds() {
			cv.ids[id] = true
		}
		cv.memory = false // context_ids names contexts only
	}
	if principal != "" {
		cv.owned = make(map[string]bool)
	}
	return cv
}

// ownedBy records whether context id is the caller's.
func (cv *changeView) setOwned(id string, mine bool) {
	if cv.owned == nil {
		return
	}
	if len(cv.owned) >= maxOwnedCache {
		clear(cv.owned)
	}
	cv.owned[id] = mine
}

// mine reports whether the caller may see the changes of context id:
// every context without a principal; with one, a context labelled with
// it. A context no longer in v is the caller's when the watch saw it so,
// or when the caller itself changed it (ev's principal).
func (cv *changeView) mine(v *store.TenantView, ev *cellv1.ChangeEvent, id string) bool {
	if cv.principal == "" {
		return true
	}
	if m, ok := cv.owned[id]; ok {
		return m
	}
	c, err := v.Context(id)
	var m bool
	if err == nil {
		m = c.GetLabels()[store.PrincipalLabel] == cv.principal
	} else {
		m = ev.GetCommand().GetPrincipal() == cv.principal
	}
	cv.setOwned(id, m)
	return m
}

// changes maps one change-log event to the Changes this watch sends.
func (cv *changeView) changes(v *store.TenantView, ev *cellv1.ChangeEvent) []*contextv1.Change {
	res := ev.GetResult()
	if res.GetError() != nil {
		return nil
	}
	cmd := ev.GetCommand()
	cur := &contextv1.ChangeCursor{Tseq: ev.GetTseq(), TimeUnixNano: ev.GetTimeUnixNano()}
	ctxChange := func(kind contextv1.ChangeKind, id string, labels map[string]string) []*contextv1.Change {
		if !cv.contexts || id == "" || (cv.ids != nil && !cv.ids[id]) {
			return nil
		}
		if labels != nil && cv.principal != "" {
			cv.setOwned(id, labels[store.PrincipalLabel] == cv.principal)
		}
		if !cv.mine(v, ev, id) {
			return nil
		}
		ch := &contextv1.Change{Cursor: cur, Kind: kind, ContextId: id}
		if kind == contextv1.ChangeKind_CHANGE_KIND_CONTEXT_DELETED && cv.owned != nil {
			delete(cv.owned, id)
		}
		return []*contextv1.Change{ch}
	}
	memChange := func(kind contextv1.ChangeKind, key string, scope contextv1.MemoryScope, rev uint64) []*contextv1.Change {
		if !cv.memory {
			return nil
		}
		owner := store.MemoryPrincipal(scope, cmd.GetPrincipal())
		ch := &contextv1.Change{Cursor: cur, Kind: kind, MemoryKey: key, Revision: rev, MemoryScope: contextv1.MemoryScope_MEMORY_SCOPE_TENANT}
		if owner != "" {
			ch.MemoryScope = contextv1.MemoryScope_MEMORY_SCOPE_PRINCIPAL
			switch {
			case cv.infra:
				ch.Principal = owner
			case owner != cv.principal:
				return nil
			}
		}
		return []*contextv1.Change{ch}
	}
	switch op := cmd.GetOp().(type) {
	case *cellv1.Command_CreateContext:
		c := res.GetContext()
		return ctxChange(contextv1.ChangeKind_CHANGE_KIND_CONTEXT_CREATED, c.GetContextId(), nonNilLabels(c.GetLabels()))
	case *cellv1.Command_ForkContext:
		c := res.GetContext()
		return ctxChange(contextv1.ChangeKind_CHANGE_KIND_CONTEXT_FORKED, c.GetContextId(), nonNilLabels(c.GetLabels()))
	case *cellv1.Command_Append:
		out := ctxChange(contextv1.ChangeKind_CHANGE_KIND_CONTEXT_APPENDED, op.Append.GetContextId(), nil)
		for _, ch := range out {
			ch.FirstSeq, ch.LastSeq = res.GetAppend().GetFirstSeq(), res.GetAppend().GetLastSeq()
		}
		return out
	case *cellv1.Command_DeleteContext:
		return ctxChange(contextv1.ChangeKind_CHANGE_KIND_CONTEXT_DELETED, op.DeleteContext.GetContextId(), nil)
	case *cellv1.Command_CompactContext:
		out := ctxChange(contextv1.ChangeKind_CHANGE_KIND_CONTEXT_COMPACTED, op.CompactContext.GetContextId(), nil)
		for _, ch := range out {
			ch.LastSeq = op.CompactContext.GetUpToSeq()
		}
		return out
	case *cellv1.Command_PutMemory:
		return memChange(contextv1.ChangeKind_CHANGE_KIND_MEMORY_PUT, op.PutMemory.GetKey(), op.PutMemory.GetScope(), res.GetPutMemory().GetRevision())
	case *cellv1.Command_DeleteMemory:
		return memChange(contextv1.ChangeKind_CHANGE_KIND_MEMORY_DELETED, op.DeleteMemory.GetKey(), op.DeleteMemory.GetScope(), 0)
	case *cellv1.Command_ExpireSweep:
		// The sweep's result counts what it removed without naming it;
		// expired items read as absent from their expire_time on, which
		// the put or create named. Only a caller that sees everything
		// gets the (unnamed) signal.
		if cv.principal != "" {
			return nil
		}
		var out []*contextv1.Change
		r := res.GetExpireSweep()
		if r.GetContexts() > 0 && cv.contexts && cv.ids == nil {
			out = append(out, &contextv1.Change{Cursor: cur, Kind: contextv1.ChangeKind_CHANGE_KIND_CONTEXT_EXPIRED})
		}
		if r.GetMemoryKeys() > 0 && cv.memory {
			out = append(out, &contextv1.Change{Cursor: cur, Kind: contextv1.ChangeKind_CHANGE_KIND_MEMORY_EXPIRED})
		}
		return out
	case *cellv1.Command_EraseSubject:
		if op.EraseSubject.GetErasedOp() != "" {
			return nil // a placeholder of a scrubbed event: nothing happened here
		}
		return []*contextv1.Change{{Cursor: cur, Kind: contextv1.ChangeKind_CHANGE_KIND_ERASED}}
	}
	return nil // set_tenant and other events: only the cursor moves
}

func nonNilLabels(l map[string]string) map[string]string {
	if l == nil {
		return map[string]string{}
	}
	return l
}

// changeWatcher is one WatchChanges stream.
type changeWatcher struct {
	*core
	send   func(*contextv1.WatchChangesResponse) error
	tenant string
	epoch  uint64
	view   *changeView
	cur    *contextv1.ChangeCursor // every change up to here is handled
}

func (w *changeWatcher) read(ctx context.Context, fn func(*store.TenantView) error) error {
	return w.storeErr("watch_changes", w.st.ReadTenant(ctx, w.tenant, w.epoch, localUnbounded, fn))
}

func (w *changeWatcher) run(ctx context.Context, after *contextv1.ChangeCursor) error {
	err := w.read(ctx, func(v *store.TenantView) error {
		c, err := resumeCursor(v, w.tenant, after)
		w.cur = c
		return err
	})
	if err != nil {
		return err
	}
	// The first response is the starting cursor (the client's, checked,
	// or the current one): a client holding none learns it, and one
	// resuming learns that its cursor was accepted.
	if err := w.send(&contextv1.WatchChangesResponse{Cursor: w.cur}); err != nil {
		return err
	}
	for {
		more, err := w.follow(ctx)
		if err != nil {
			return err
		}
		if more {
			continue
		}
		hb, cancel := context.WithTimeout(ctx, w.cfg.WatchHeartbeat)
		err = w.st.WaitTenant(hb, w.tenant, w.cur.GetTseq())
		cancel()
		switch {
		case err == nil:
		case ctx.Err() == nil && errors.Is(err, context.DeadlineExceeded):
			// Idle: a heartbeat keeps the client's cursor fresh.
			if err := w.send(&contextv1.WatchChangesResponse{Cursor: w.cur}); err != nil {
				return err
			}
		default:
			return w.storeErr("watch_changes", err)
		}
	}
}

// follow sends the changes of one batch of events after the cursor and
// reports whether more events may be waiting.
func (w *changeWatcher) follow(ctx context.Context) (more bool, err error) {
	var resp *contextv1.WatchChangesResponse
	err = w.read(ctx, func(v *store.TenantView) error {
		resp = nil
		evs, err := v.Changes(w.cur.GetTseq(), w.cfg.WatchChangeBatch)
		if errors.Is(err, store.ErrChangesTrimmed) {
			return cursorExpired(v, w.tenant, "the change log was trimmed past tseq %d before this watch read it", w.cur.GetTseq())
		}
		if err != nil {
			return err
		}
		if len(evs) == 0 {
			if v.Info().GetTseq() > w.cur.GetTseq() {
				return cursorExpired(v, w.tenant, "the change log holds nothing after tseq %d", w.cur.GetTseq())
			}
			return nil
		}
		resp = &contextv1.WatchChangesResponse{}
		for _, ev := range evs {
			resp.Changes = append(resp.Changes, w.view.changes(v, ev)...)
		}
		last := evs[len(evs)-1]
		resp.Cursor = &contextv1.ChangeCursor{Tseq: last.GetTseq(), TimeUnixNano: last.GetTimeUnixNano()}
		more = len(evs) >= w.cfg.WatchChangeBatch
		return nil
	})
	if err != nil || resp == nil {
		return false, err
	}
	if err := w.send(resp); err != nil {
		return false, err
	}
	w.cur = resp.Cursor
	return more, nil
}

// resumeCursor checks a client's cursor against v's change log and
// returns the position to follow from: the tenant's current one for an
// unset cursor; the cursor itself when the log holds its event with its
// time (tseq 0: the very beginning, while nothing is trimmed), or it is
// the tenant's position with nothing logged. Anything else is
// CURSOR_EXPIRED.
func resumeCursor(v *store.TenantView, tenant string, after *contextv1.ChangeCursor) (*contextv1.ChangeCursor, error) {
	info := v.Info()
	if after == nil {
		return currentCursor(v)
	}
	t := after.GetTseq()
	switch {
	case t > info.GetTseq():
		return nil, cursorExpired(v, tenant, "the cursor's tseq %d is beyond the tenant's %d on this cell (a promotion lost the history it names)", t, info.GetTseq())
	case t == 0:
		if info.GetTseq() == 0 || (info.GetChangelogCount() > 0 && info.GetChangelogFirstTseq() <= 1) {
			return after, nil
		}
		return nil, cursorExpired(v, tenant, "the change log no longer starts at the tenant's first change")
	case info.GetChangelogCount() == 0 && t == info.GetTseq():
		return after, nil // nothing logged to check against, nothing to miss
	}
	ev, err := eventAt(v, t)
	if err != nil {
		return nil, err
	}
	if ev == nil {
		return nil, cursorExpired(v, tenant, "the change log no longer holds tseq %d", t)
	}
	if ev.GetTimeUnixNano() != after.GetTimeUnixNano() {
		return nil, cursorExpired(v, tenant, "the change at tseq %d on this cell is not the one the cursor names (a promotion lost that history)", t)
	}
	return after, nil
}

// eventAt returns the logged event at tseq (nil when not logged).
func eventAt(v *store.TenantView, tseq uint64) (*cellv1.ChangeEvent, error) {
	evs, err := v.Changes(tseq-1, 1)
	if errors.Is(err, store.ErrChangesTrimmed) || (err == nil && (len(evs) == 0 || evs[0].GetTseq() != tseq)) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return evs[0], nil
}

// currentCursor is the tenant's position in v: its latest event.
func currentCursor(v *store.TenantView) (*contextv1.ChangeCursor, error) {
	t := v.Info().GetTseq()
	c := &contextv1.ChangeCursor{Tseq: t}
	if t == 0 {
		return c, nil
	}
	ev, err := eventAt(v, t)
	if err != nil {
		return nil, err
	}
	c.TimeUnixNano = ev.GetTimeUnixNano()
	return c, nil
}

// cursorExpired is CURSOR_EXPIRED with the oldest resumable cursor (the
// log's first event) and the current one in its metadata.
func cursorExpired(v *store.TenantView, tenant, format string, args ...any) error {
	e := cperr.New(cperr.CursorExpired, format, args...).With(cperr.MetaTenant, tenant)
	info := v.Info()
	if info.GetChangelogCount() > 0 {
		if ev, err := eventAt(v, info.GetChangelogFirstTseq()); err == nil && ev != nil {
			e = e.With(cperr.MetaOldestCursor, changecursor.Format(&contextv1.ChangeCursor{Tseq: ev.GetTseq(), TimeUnixNano: ev.GetTimeUnixNano()}))
		}
	}
	if cur, err := currentCursor(v); err == nil {
		e = e.With(cperr.MetaCurrentCursor, changecursor.Format(cur))
	}
	return e
}
