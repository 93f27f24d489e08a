package store

import (
	"github.com/cellplane/cellplane/internal/tokens"
	contextv1 "github.com/cellplane/cellplane/proto/cellplane/context/v1"
	"github.com/cockroachdb/pebble/v2"
	"google.golang.org/protobuf/proto"
)

// ReadQuery is what a context read asks for (ContextService.Read after the
// service resolved its start and caps).
type ReadQuery struct {
	// FromSeq is the oldest seq wanted (0 and 1: the first entry).
	FromSeq uint64
	// MaxEntries and MaxBytes bound the entries returned; at least one
	// entry is returned when one exists and fits MaxTokens.
	MaxEntries int
	MaxBytes   uint64
	// MaxTokens is a token budget (0: none). With one, the read returns
	// the newest entries that fit, preceded by the compaction summary
	// covering the older ones when it fits first; the tokens returned
	// never exceed it.
	MaxTokens uint64
	// Raw returns entries a compaction covers instead of its summary.
	Raw bool
	// Newest keeps the newest entries of the range when the caps cut it
	// (implied by MaxTokens).
	Newest bool
}

// entrySource is a context's entries in seq order. Reads (summaries,
// budgets, caps) are a layer over it, so that a context whose entries are
// stitched from elsewhere (a fork's parent prefix) reads through the same
// code with another source.
type entrySource interface {
	// ascend calls fn with the entries of seq ≥ from in seq order (and
	// each one's stored size) until fn returns false.
	ascend(from uint64, fn func(e *contextv1.Entry, size int) (bool, error)) error
	// descend calls fn with the entries of seq in [from, below), newest
	// first, until fn returns false.
	descend(from, below uint64, fn func(e *contextv1.Entry, size int) (bool, error)) error
}

// ownEntries is the entries stored under a context's own key range.
type ownEntries struct {
	r          pebble.Reader
	tenant, id string
}

func (s ownEntries) ascend(from uint64, fn func(*contextv1.Entry, int) (bool, error)) error {
	p := entryPrefix(s.tenant, s.id)
	return scan(s.r, entryKey(s.tenant, s.id, max(from, 1)), prefixEnd(p), func(_, val []byte) (bool, error) {
		var e contextv1.Entry
		if err := proto.Unmarshal(val, &e); err != nil {
			return false, err
		}
		return fn(&e, len(val))
	})
}

func (s ownEntries) descend(from, below uint64, fn func(*contextv1.Entry, int) (bool, error)) error {
	if below <= max(from, 1) {
		return nil
	}
	it, err := s.r.NewIter(&pebble.IterOptions{LowerBound: entryKey(s.tenant, s.id, max(from, 1)), UpperBound: entryKey(s.tenant, s.id, below)})
	if err != nil {
		return err
	}
	for ok := it.Last(); ok; ok = it.Prev() {
		var e contextv1.Entry
		if err := proto.Unmarshal(it.Value(), &e); err != nil {
			it.Close()
			return err
		}
		more, err := fn(&e, len(it.Value()))
		if err != nil {
			it.Close()
			return err
		}
		if !more {
			break
		}
	}
	return it.Close()
}

// entries is the source of a context's entries (the seam for stitched
// sources, see entrySource).
func (v *TenantView) entrySource(c *contextv1.Context) entrySource {
	if c.GetParentContextId() != "" {
		return forkEntries{v: v, c: c}
	}
	return ownEntries{r: v.r, tenant: v.tenant, id: c.GetContextId()}
}

// forkEntries is a fork's entries: its sources' prefixes stitched with its
// own (fork.go: spans, eachEntry).
type forkEntries struct {
	v *TenantView
	c *contextv1.Context
}

func (s forkEntries) ascend(from uint64, fn func(*contextv1.Entry, int) (bool, error)) error {
	spans, err := s.v.spans(s.c.GetContextId(), s.c)
	if err != nil {
		return err
	}
	return eachEntry(s.v.r, s.v.tenant, spans, max(from, 1), true, func(raw []byte) (bool, error) {
		var e contextv1.Entry
		if err := proto.Unmarshal(raw, &e); err != nil {
			return false, err
		}
		return fn(&e, len(raw))
	})
}

func (s forkEntries) descend(from, below uint64, fn func(*contextv1.Entry, int) (bool, error)) error {
	if below <= max(from, 1) {
		return nil
	}
	spans, err := s.v.spans(s.c.GetContextId(), s.c)
	if err != nil {
		return err
	}
	return eachEntry(s.v.r, s.v.tenant, spans, below-1, false, func(raw []byte) (bool, error) {
		var e contextv1.Entry
		if err := proto.Unmarshal(raw, &e); err != nil {
			return false, err
		}
		if e.GetSeq() < max(from, 1) {
			return false, nil
		}
		return fn(&e, len(raw))
	})
}

// EntryTokens is an entry's stored token count; entries stored before
// counts existed are counted now (in the context's encoding, the same on
// every replica).
func EntryTokens(encoding string, e *contextv1.Entry) uint64 {
	if n := e.GetTokenCount(); n != 0 {
		return uint64(n)
	}
	return uint64(tokens.Entry(encoding, e))
}

// Summary returns the compaction summary covering entries 1..upTo (nil
// when there is none).
func (v *TenantView) Summary(id string, upTo uint64) (*contextv1.Summary, error) {
	var s contextv1.Summary
	ok, err := getProto(v.r, summaryKey(v.tenant, id, upTo), &s)
	if !ok || err != nil {
		return nil, err
	}
	return &s, nil
}

// ReadContext reads context c (found in this view) as q asks: the newest
// compaction summary in place of the entries it covers (unless q.Raw),
// then entries, within q's caps and token budget. A budget is spent on
// the summary first (when it fits), then on entries from the newest back;
// the entries returned are contiguous and end at the newest that fit.
func (v *TenantView) ReadContext(c *contextv1.Context, q ReadQuery) (*contextv1.ReadResponse, error) {
	enc := tokens.Resolve(c.GetTokenEncoding())
	last := c.GetLastSeq()
	resp := &contextv1.ReadResponse{LastSeq: last, TotalTokens: c.GetTotalTokens(), TokenEncoding: enc}
	lower := max(q.FromSeq, 1)
	budget, budgeted := q.MaxTokens, q.MaxTokens > 0
	var bytes uint64
	if cs := c.GetCompactedSeq(); !q.Raw && cs > 0 && lower <= cs && lower <= last {
		s, err := v.Summary(c.GetContextId(), cs)
		if err != nil {
			return nil, err
		}
		if s != nil && (!budgeted || uint64(s.GetTokenCount()) <= budget) {
			resp.Summary = s
			resp.TokensReturned += uint64(s.GetTokenCount())
			budget -= min(budget, uint64(s.GetTokenCount()))
			bytes = uint64(len(s.GetText()))
		}
		lower = cs + 1
	}
	resp.NextSeq = lower
	if lower > last {
		return resp, nil
	}
	// fits is the caps' rule for one more entry: never past the budget;
	// within max_entries; within max_bytes unless it would be the first.
	fits := func(e *contextv1.Entry, size int) bool {
		n := len(resp.Entries)
		if n >= q.MaxEntries || (n > 0 && bytes+uint64(size) > q.MaxBytes) {
			return false
		}
		return !budgeted || EntryTokens(enc, e) <= budget
	}
	take := func(e *contextv1.Entry, size int) {
		t := EntryTokens(enc, e)
		resp.Entries = append(resp.Entries, e)
		resp.TokensReturned += t
		budget -= min(budget, t)
		bytes += uint64(size)
	}
	src := v.entrySource(c)
	if !budgeted && !q.Newest {
		err := src.ascend(lower, func(e *contextv1.Entry, size int) (bool, error) {
			if !fits(e, size) {
				return false, nil
			}
			take(e, size)
			return true, nil
		})
		if err != nil {
			return nil, err
		}
	} else {
		// The newest entries that fit: walk back from the end, stop at the
		// first that does not fit (what is returned stays contiguous).
		err := src.descend(lower, last+1, func(e *contextv1.Entry, size int) (bool, error) {
			if !fits(e, size) {
				return false, nil
			}
			take(e, size)
			return true, nil
		})
		if err != nil {
			return nil, err
		}
		for i, j := 0, len(resp.Entries)-1; i < j; i, j = i+1, j-1 {
			resp.Entries[i], resp.Entries[j] = resp.Entries[j], resp.Entries[i]
		}
	}
	if n := len(resp.Entries); n > 0 {
		resp.NextSeq = resp.Entries[n-1].GetSeq() + 1
	} else if budgeted || q.Newest {
		resp.NextSeq = last + 1
	}
	return resp, nil
}
