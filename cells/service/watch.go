package service

import (
	"context"
	"errors"

	"github.com/cellplane/cellplane/cells/store"
	"github.com/cellplane/cellplane/cells/validate"
	"github.com/cellplane/cellplane/internal/cperr"
	"github.com/cellplane/cellplane/internal/tenantmd"
	cellv1 "github.com/cellplane/cellplane/proto/cellplane/cell/v1"
	contextv1 "github.com/cellplane/cellplane/proto/cellplane/context/v1"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Watch implements ContextService.Watch from this member's replica.
//
// It first catches up from the stored entries, remembering the tenant
// tseq of the view in which it reached the context's end; from then on it
// follows the tenant's change log after that tseq and re-reads the
// entries of this context's appends from the store (so they carry seq and
// create_time). It keeps two positions: next, the next seq to deliver,
// and tseq, the change every earlier one of which has been delivered.
// Both only move forward and entries are only sent from next on, so the
// stream has no gap and no duplicate. A trimmed change log sends it back
// to catching up from the entries. Deleting the context (or the tenant)
// ends the stream with CONTEXT_NOT_FOUND; a tenant that stops being owned
// here (fenced, moved) ends it with WRONG_CELL.
func (s *ContextServer) Watch(req *contextv1.WatchRequest, stream grpc.ServerStreamingServer[contextv1.WatchResponse]) error {
	ctx := stream.Context()
	tenant, epoch, err := tenantmd.FromIncoming(ctx)
	if err != nil {
		return err
	}
	if err := validate.Watch(s.lim, req); err != nil {
		return err
	}
	w := &watcher{
		core:       s.core,
		send:       stream.Send,
		tenant:     tenant,
		epoch:      epoch,
		id:         req.GetContextId(),
		next:       max(1, req.GetFromSeq()),
		maxEntries: s.lim.DefaultReadEntries,
		maxBytes:   s.lim.DefaultReadBytes,
		resume:     req.GetCursor(),
	}
	return s.runWatch(ctx, tenant, func(ctx context.Context) error {
		err := w.run(ctx)
		if err != nil && !errors.Is(err, cperr.ErrContextNotFound) {
			s.log.Debug("watch ended", "tenant", tenant, "context", w.id, "err", err)
		}
		return err
	})
}

type watcher struct {
	*core
	send       func(*contextv1.WatchResponse) error
	tenant     string
	epoch      uint64
	id         string
	next       uint64                 // next seq to deliver
	tseq       uint64                 // every change ≤ tseq is delivered
	created    *timestamppb.Timestamp // the watched context's incarnation
	known      bool                   // created was recorded
	maxEntries int
	maxBytes   uint64
	resume     *contextv1.ChangeCursor // the client's cursor, checked first (nil: none)
	at         *contextv1.ChangeCursor // covers every entry of the batch being delivered
}

func (w *watcher) run(ctx context.Context) error {
	if w.resume != nil {
		// The client saw entries up to its cursor: they must be this
		// cell's history (resumeCursor), else CURSOR_EXPIRED.
		err := w.read(ctx, func(v *store.TenantView) error {
			_, err := resumeCursor(v, w.tenant, w.resume)
			return err
		})
		if err != nil {
			return err
		}
	}
	if err := w.catchUp(ctx); err != nil {
		return err
	}
	for {
		if err := w.st.WaitTenant(ctx, w.tenant, w.tseq); err != nil {
			return w.storeErr("watch", err)
		}
		trimmed, err := w.follow(ctx)
		if err != nil {
			return err
		}
		if trimmed {
			if err := w.catchUp(ctx); err != nil {
				return err
			}
		}
	}
}

func (w *watcher) read(ctx context.Context, fn func(*store.TenantView) error) error {
	err := w.st.ReadTenant(ctx, w.tenant, w.epoch, localUnbounded, fn)
	if errors.Is(err, cperr.ErrWrongCell) && w.known && w.tenantDeleted(ctx) {
		// Deleting a tenant leaves no change event (its change log goes
		// with it); the watched context is gone like the rest.
		return contextGone(w.id)
	}
	return w.storeErr("watch", err)
}

// tenantDeleted reports whether the tenant no longer exists on this
// member, as opposed to existing in another role (fenced, standby), where
// WRONG_CELL is the answer that sends the client to the new owner.
func (w *watcher) tenantDeleted(ctx context.Context) bool {
	err := w.st.ReadCell(ctx, localUnbounded, func(v *store.CellView) error {
		_, err := v.Tenant(w.tenant)
		return err
	})
	return errors.Is(err, cperr.ErrTenantNotFound)
}

// sameContext checks that c is the incarnation of the context the watch
// started on: a context deleted and created again under the same id is
// another context, and the watch of the first one is over.
func (w *watcher) sameContext(c *contextv1.Context) error {
	if !w.known {
		w.created, w.known = c.GetCreateTime(), true
		return nil
	}
	if !proto.Equal(w.created, c.GetCreateTime()) {
		return contextGone(w.id)
	}
	return nil
}

func contextGone(id string) error {
	return cperr.New(cperr.ContextNotFound, "context %s was deleted", id)
}

// catchUp delivers the stored entries from next to the context's end,
// batch by batch, and sets tseq to the tenant tseq of the view in which
// it reached the end.
func (w *watcher) catchUp(ctx context.Context) error {
	for {
		var batch []*contextv1.Entry
		var done bool
		var tseq uint64
		err := w.read(ctx, func(v *store.TenantView) error {
			c, err := v.Context(w.id)
			if err != nil {
				return err
			}
			if err := w.sameContext(c); err != nil {
				return err
			}
			tseq = v.Info().GetTseq()
			batch, done = nil, true
			at, err := currentCursor(v)
			if err != nil {
				return err
			}
			w.at = at
			if w.next > c.GetLastSeq() {
				return nil
			}
			es, err := v.Entries(w.id, w.next, w.maxEntries, w.maxBytes)
			if err != nil {
				return err
			}
			batch = es
			done = len(es) == 0 || es[len(es)-1].GetSeq() >= c.GetLastSeq()
			return nil
		})
		if err != nil {
			return err
		}
		if err := w.deliver(batch, 0); err != nil {
			return err
		}
		if done {
			w.tseq = max(w.tseq, tseq)
			return nil
		}
	}
}

// follow handles the changes after tseq in one view. It reports trimmed
// when the change log cannot say what happened after tseq, which sends
// the watch back to catching up from the entries.
func (w *watcher) follow(ctx context.Context) (trimmed bool, err error) {
	var (
		batch  []*contextv1.Entry
		hi     uint64 // highest seq of this context's appends seen
		newT   uint64 // tseq to advance to once batch is delivered
		gone   bool   // the context was deleted after the covered changes
		marks  []mark
		ended  bool
		viewTS uint64
	)
	err = w.read(ctx, func(v *store.TenantView) error {
		batch, hi, newT, gone, marks, ended = nil, 0, w.tseq, false, nil, false
		viewTS = v.Info().GetTseq()
		evs, err := v.Changes(w.tseq, w.cfg.WatchChangeBatch)
		if errors.Is(err, store.ErrChangesTrimmed) {
			trimmed = true
			return nil
		}
		if err != nil {
			return err
		}
		if len(evs) == 0 && viewTS > w.tseq {
			// The log holds nothing after tseq although the tenant moved
			// on: the store cannot account for those changes; the entries
			// can.
			trimmed = true
			return nil
		}
		for _, ev := range evs {
			if ev.GetTseq() <= w.tseq {
				continue
			}
			if ev.GetResult().GetError() == nil {
				switch op := ev.GetCommand().GetOp().(type) {
				case *cellv1.Command_DeleteTenant:
					ended = true
				case *cellv1.Command_DeleteContext:
					ended = op.DeleteContext.GetContextId() == w.id
				case *cellv1.Command_Append:
					if op.Append.GetContextId() == w.id {
						last := ev.GetResult().GetAppend().GetLastSeq()
						if last == 0 {
							trimmed = true // no seqs to go by: use the entries
							return nil
						}
						hi = max(hi, last)
					}
				}
			}
			if ended {
				break
			}
			marks = append(marks, mark{tseq: ev.GetTseq(), hi: hi})
			w.at = &contextv1.ChangeCursor{Tseq: ev.GetTseq(), TimeUnixNano: ev.GetTimeUnixNano()}
		}
		if hi < w.next {
			return nil
		}
		c, err := v.Context(w.id)
		if errors.Is(err, cperr.ErrContextNotFound) {
			gone = true // deleted by a later change than those covered
			return nil
		}
		if err != nil {
			return err
		}
		if err := w.sameContext(c); err != nil {
			gone = true
			return nil
		}
		es, err := v.Entries(w.id, w.next, w.maxEntries, w.maxBytes)
		if err != nil {
			return err
		}
		for len(es) > 0 && es[len(es)-1].GetSeq() > hi {
			es = es[:len(es)-1]
		}
		batch = es
		return nil
	})
	if err != nil || trimmed {
		return trimmed, err
	}
	if gone {
		return false, contextGone(w.id)
	}
	delivered := w.next - 1
	if len(batch) > 0 {
		delivered = batch[len(batch)-1].GetSeq()
	}
	if err := w.deliver(batch, hi); err != nil {
		return false, err
	}
	for _, m := range marks {
		if m.hi > delivered {
			break
		}
		newT = m.tseq
	}
	w.tseq = max(w.tseq, newT)
	if ended && delivered >= hi {
		return false, contextGone(w.id)
	}
	return false, nil
}

// mark says: once every seq ≤ hi is delivered, every change ≤ tseq is.
type mark struct {
	tseq, hi uint64
}

// deliver sends entries from next on, checking that they continue the
// stream without a gap; upTo (when not 0) is the highest seq expected.
func (w *watcher) deliver(es []*contextv1.Entry, upTo uint64) error {
	for len(es) > 0 && es[0].GetSeq() < w.next {
		es = es[1:]
	}
	if len(es) == 0 {
		return nil
	}
	for i, e := range es {
		if e.GetSeq() != w.next+uint64(i) || (upTo != 0 && e.GetSeq() > upTo) {
			w.log.Error("watch: store returned entries out of order", "tenant", w.tenant, "context", w.id, "want_seq", w.next+uint64(i), "seq", e.GetSeq())
			return cperr.New(cperr.Internal, "internal error")
		}
	}
	if err := w.send(&contextv1.WatchResponse{Entries: es, Cursor: w.at}); err != nil {
		return err
	}
	w.next = es[len(es)-1].GetSeq() + 1
	return nil
}
