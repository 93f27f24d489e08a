package store

import (
	"math"
	"strconv"

	"github.com/cellplane/cellplane/internal/cperr"
	cellv1 "github.com/cellplane/cellplane/proto/cellplane/cell/v1"
	contextv1 "github.com/cellplane/cellplane/proto/cellplane/context/v1"
	"github.com/cockroachdb/pebble/v2"
)

// Forks (copy-on-write). A fork of context P at seq s is a context whose
// record names parent_context_id P and parent_seq s and whose own entries
// start at s+1; its entries 1..s are P's, read in place. Forking is one
// command that writes two context records, whatever P's length. P counts
// its direct forks (fork_refs); deleting (or expiring) a P that forks
// still reference only marks its record deleted (invisible to clients)
// and keeps its entries; removing its last fork removes it too, and so on
// up the chain.
//
// A context's entries in seq order are therefore a list of spans, each
// stored under one context of the chain (entrySpans). Every read of
// entries goes through it (TenantView.EachEntry, EachEntryReverse).

// maxForkDepth bounds the walk up a chain of forks: a longer chain means
// corrupt state (a cycle), never a real one — every fork adds one level
// and the bound is far above what the fork quota (a context each) lets a
// tenant build in practice.
const maxForkDepth = 1 << 16

// entrySpan is one stretch of a context's entries: seqs lo..hi (inclusive)
// stored under context id.
type entrySpan struct {
	id     string
	lo, hi uint64
}

// entrySpans returns the spans of context id (record c) in seq order:
// the oldest ancestor's first. get reads a context record, deleted ones
// included.
func entrySpans(id string, c *contextv1.Context, get func(id string) (*contextv1.Context, error)) ([]entrySpan, error) {
	var rev []entrySpan
	hi := uint64(math.MaxUint64)
	for depth := 0; ; depth++ {
		if depth > maxForkDepth {
			return nil, cperr.New(cperr.Internal, "context %q: fork chain deeper than %d", id, maxForkDepth)
		}
		lo := uint64(1)
		if c.GetParentContextId() != "" {
			lo = c.GetParentSeq() + 1
		}
		if lo <= hi {
			rev = append(rev, entrySpan{id: id, lo: lo, hi: hi})
		}
		if c.GetParentContextId() == "" {
			break
		}
		hi = min(hi, c.GetParentSeq())
		id = c.GetParentContextId()
		p, err := get(id)
		if err != nil {
			return nil, err
		}
		if p == nil {
			return nil, cperr.New(cperr.Internal, "fork source %q is missing", id)
		}
		c = p
	}
	out := make([]entrySpan, len(rev))
	for i, s := range rev {
		out[len(rev)-1-i] = s
	}
	return out, nil
}

// spanBounds are the keys of span s's entries from seq from to seq to.
func spanBounds(tenant string, s entrySpan, from, to uint64) (lower, upper []byte) {
	lower = entryKey(tenant, s.id, max(s.lo, from))
	if hi := min(s.hi, to); hi == math.MaxUint64 {
		upper = prefixEnd(entryPrefix(tenant, s.id))
	} else {
		upper = entryKey(tenant, s.id, hi+1)
	}
	return lower, upper
}

// eachEntry calls fn with every stored entry (its encoding) of the context
// whose spans are given, from seq from up, in seq order, until fn says
// stop. fwd false: from seq from down, newest first.
func eachEntry(r pebble.Reader, tenant string, spans []entrySpan, from uint64, fwd bool, fn func(raw []byte) (bool, error)) error {
	for i := range spans {
		s := spans[i]
		var lower, upper []byte
		if fwd {
			if s.hi < from {
				continue
			}
			lower, upper = spanBounds(tenant, s, from, math.MaxUint64)
		} else {
			s = spans[len(spans)-1-i]
			if s.lo > from {
				continue
			}
			lower, upper = spanBounds(tenant, s, 0, from)
		}
		it, err := r.NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: upper})
		if err != nil {
			return err
		}
		more := true
		var ok bool
		if fwd {
			ok = it.First()
		} else {
			ok = it.Last()
		}
		for ; ok && more; ok = step(it, fwd) {
			if more, err = fn(it.Value()); err != nil {
				it.Close()
				return err
			}
		}
		if err := it.Close(); err != nil {
			return err
		}
		if !more {
			return nil
		}
	}
	return nil
}

func step(it *pebble.Iterator, fwd bool) bool {
	if fwd {
		return it.Next()
	}
	return it.Prev()
}

// spans returns the entry spans of a context this view found.
func (v *TenantView) spans(id string, c *contextv1.Context) ([]entrySpan, error) {
	return entrySpans(id, c, func(id string) (*contextv1.Context, error) {
		var p contextv1.Context
		ok, err := getProto(v.r, contextKey(v.tenant, id), &p)
		if !ok || err != nil {
			return nil, err
		}
		return &p, nil
	})
}

// EachEntry calls fn with the encoded entries (contextv1.Entry) of context
// id from seq fromSeq on (0 and 1: the first), in seq order, until fn
// returns false or an error. A fork's entries are its source's up to its
// fork seq, then its own (stitched in place, never copied). This is the
// one way the store reads a context's entries: budgeted reads and overlays
// build on it. CONTEXT_NOT_FOUND when the context does not exist for
// clients (deleted, expired).
func (v *TenantView) EachEntry(id string, fromSeq uint64, fn func(raw []byte) (bool, error)) error {
	c, err := v.Context(id)
	if err != nil {
		return err
	}
	spans, err := v.spans(id, c)
	if err != nil {
		return err
	}
	return eachEntry(v.r, v.tenant, spans, max(fromSeq, 1), true, fn)
}

// EachEntryReverse is EachEntry newest first: from seq toSeq down to the
// first entry (toSeq above last_seq: from the newest).
func (v *TenantView) EachEntryReverse(id string, toSeq uint64, fn func(raw []byte) (bool, error)) error {
	c, err := v.Context(id)
	if err != nil {
		return err
	}
	spans, err := v.spans(id, c)
	if err != nil {
		return err
	}
	return eachEntry(v.r, v.tenant, spans, toSeq, false, fn)
}

// getContext reads a context record in apply, deleted ones included.
func (o *opCtx) getContext(id string) (*contextv1.Context, bool) {
	var c contextv1.Context
	if !o.tx.get(contextKey(o.c.GetTenant(), id), &c) {
		return nil, false
	}
	return &c, true
}

// liveContext reads a context clients can see at the command's time: not
// deleted, not expired.
func (o *opCtx) liveContext(id string) (*contextv1.Context, bool) {
	c, ok := o.getContext(id)
	if !ok || c.GetDeleted() || expired(c.GetExpireTime(), o.now) {
		return nil, false
	}
	return c, true
}

func applyForkContext(o *opCtx) (*cellv1.CommandResult, error) {
	req := o.c.GetForkContext()
	tenant, srcID, id := o.c.GetTenant(), req.GetContextId(), req.GetNewContextId()
	if id == "" {
		return nil, cperr.Invalid(cperr.FieldViolation{Field: "new_context_id", Description: "required"})
	}
	src, ok := o.liveContext(srcID)
	if !ok {
		return nil, cperr.New(cperr.ContextNotFound, "context %q not found", srcID)
	}
	at := req.GetAtSeq()
	if at == 0 {
		at = src.GetLastSeq()
	}
	if at > src.GetLastSeq() {
		return nil, cperr.New(cperr.SequenceMismatch, "cannot fork at seq %d: context %q ends at %d", at, srcID, src.GetLastSeq()).
			With(cperr.MetaLastSeq, strconv.FormatUint(src.GetLastSeq(), 10))
	}
	clear, err := o.makeRoom(id)
	if err != nil {
		return nil, err
	}
	if err := o.checkQuota(1, 0, 0); err != nil {
		return nil, err
	}
	clear()
	labels := o.ownerLabels(req.GetLabels())
	fork := &contextv1.Context{ContextId: id, Labels: labels, LastSeq: at, CreateTime: o.ts(), UpdateTime: o.ts(),
		ExpireTime: o.expiry(req.GetExpireTime(), req.GetTtl(), resultContext(o).GetExpireTime())}
	fork.TokenEncoding = src.GetTokenEncoding() // stitched entries count alike
	if at > 0 {                                 // a fork of nothing is a plain empty context
		fork.ParentContextId, fork.ParentSeq = srcID, at
		src.ForkRefs++
		o.tx.put(contextKey(tenant, srcID), src)
	}
	o.tx.put(contextKey(tenant, id), fork)
	o.indexOwner(id, labels)
	o.indexExpiry(kindContext, id, nil, fork.GetExpireTime())
	o.st.rec.Usage = usage(o.st.rec)
	o.st.rec.Usage.Contexts++
	o.changed = true
	return &cellv1.CommandResult{Result: &cellv1.CommandResult_Context{Context: fork}}, nil
}

// makeRoom checks that id is free for a new context at the command's
// time: absent, or expired without forks (clear then removes it, as a
// sweep would; the caller calls clear once every check passed, since a
// rejected command writes nothing). A deleted or expired context that
// forks still read keeps its id.
func (o *opCtx) makeRoom(id string) (clear func(), err error) {
	old, ok := o.getContext(id)
	switch {
	case !ok:
		return func() {}, nil
	case old.GetDeleted():
		return nil, cperr.New(cperr.AlreadyExists, "context id %q is held by a deleted context its forks still read", id)
	case !expired(old.GetExpireTime(), o.now):
		return nil, cperr.New(cperr.AlreadyExists, "context %q already exists", id)
	case old.GetForkRefs() > 0:
		return nil, cperr.New(cperr.AlreadyExists, "context id %q is held by an expired context its forks still read", id)
	}
	return func() { o.removeContext(id, old) }, nil
}

// removeContext deletes context id (record c) for clients: with forks
// still referencing it, it only becomes a deleted record that keeps its
// entries; otherwise its entries and record go, and its fork source loses
// a reference (and goes too when it was deleted and this was its last
// fork, and so on up the chain). Tenant usage follows what is stored:
// the context count drops at once, entries and bytes when they are
// removed. Each removal is one range delete, so the cost is the chain's
// length, never the entries'.
func (o *opCtx) removeContext(id string, c *contextv1.Context) {
	tenant := o.c.GetTenant()
	u := usage(o.st.rec)
	if !c.GetDeleted() {
		u.Contexts = sub(u.Contexts, 1)
		o.indexExpiry(kindContext, id, c.GetExpireTime(), nil)
		if owner := c.GetLabels()[PrincipalLabel]; owner != "" {
			o.tx.del(ownedKey(tenant, owner, id)) // no longer listed
		}
	}
	for depth := 0; depth <= maxForkDepth; depth++ {
		if c.GetForkRefs() > 0 {
			if !c.GetDeleted() {
				c.Deleted, c.ExpireTime = true, nil
				o.tx.put(contextKey(tenant, id), c)
			}
			return
		}
		p := entryPrefix(tenant, id)
		o.tx.delRange(p, prefixEnd(p))
		o.dropContextVectors(id, c)
		o.unindexPrefix(entryDocPrefix(id))
		if c.GetCompactedSeq() != 0 {
			sp := summaryPrefix(tenant, id)
			o.tx.delRange(sp, prefixEnd(sp))
		}
		o.tx.del(contextKey(tenant, id))
		u.Entries = sub(u.Entries, c.GetEntryCount())
		u.Bytes = sub(u.Bytes, c.GetSizeBytes())
		parentID := c.GetParentContextId()
		if parentID == "" {
			return
		}
		parent, ok := o.getContext(parentID)
		if !ok {
			return
		}
		parent.ForkRefs = sub(parent.ForkRefs, 1)
		if !parent.GetDeleted() || parent.GetForkRefs() > 0 {
			o.tx.put(contextKey(tenant, parentID), parent)
			return
		}
		id, c = parentID, parent // a deleted source whose last fork this was
	}
}

// resultContext is, for a standby applying its source's event, the
// context the source's result holds (nil otherwise).
func resultContext(o *opCtx) *contextv1.Context {
	if o.source == nil {
		return nil
	}
	return o.source.GetContext()
}
