package store

import (
	"bytes"
	"container/heap"
	"context"
	"encoding/binary"
	"errors"
	"math"
	"sort"
	"unicode/utf8"

	"github.com/cellplane/cellplane/internal/cperr"
	cellv1 "github.com/cellplane/cellplane/proto/cellplane/cell/v1"
	contextv1 "github.com/cellplane/cellplane/proto/cellplane/context/v1"
	"github.com/cockroachdb/pebble/v2"
	"google.golang.org/protobuf/proto"
)

// The keyword index (docs/search.md "Keyword search", DESIGN.md "Keyword
// index"). A document is an entry with text content or a memory item
// whose value is valid UTF-8, named by its data key without the tenant
// prefix ("doc": 'e' ctx \x00 seq(8), 'm' key, 'M' len(p) p key). The
// state machine writes, in the batch of the mutation itself:
//
//	'i' term \x00 doc     uvarint tf, uvarint doc length (a posting)
//	'w' doc               uvarint length, then (uvarint len, term, uvarint tf)...
//	                      (the document's terms: how its postings are removed)
//	'k' class             uvarint documents, uvarint total length (class
//	                      'e' entries, 'm' memory: BM25's N and avgdl)
//
// Terms never contain \x00 (tokenizer), so a posting key splits at its
// first \x00. Everything is in the tenant's range: snapshots, exports
// (moves, standby bootstraps) and tenant deletes carry or drop it with the
// data, and a standby's apply_changes writes it as its source did.
const (
	kindPosting      = 'i'
	kindForward      = 'w'
	kindKeywordStats = 'k'

	classEntry  = 'e'
	classMemory = 'm'
)

func postingPrefix(tenant, term string) []byte {
	k := append(tenantKey(tenant, kindPosting, len(term)+1), term...)
	return append(k, 0)
}

func forwardKey(tenant string, doc []byte) []byte {
	return append(tenantKey(tenant, kindForward, len(doc)), doc...)
}

func keywordStatsKey(tenant string, class byte) []byte {
	return append(tenantKey(tenant, kindKeywordStats, 1), class)
}

// entryDoc is an entry's document name; entryDocPrefix a context's.
func entryDoc(id string, seq uint64) []byte {
	return binary.BigEndian.AppendUint64(entryDocPrefix(id), seq)
}

func entryDocPrefix(id string) []byte {
	d := make([]byte, 0, len(id)+10)
	d = append(d, kindEntry)
	d = append(d, id...)
	return append(d, 0)
}

// memoryDoc is a memory item's document name (principal "": the tenant's
// shared memory).
func memoryDoc(principal, key string) []byte {
	return scopedMemoryKey("", principal, key)[len(tenantPrefix("")):]
}

func docClass(doc []byte) byte {
	if len(doc) > 0 && doc[0] == kindEntry {
		return classEntry
	}
	return classMemory
}

func (o *opCtx) tokenizer() tokenizer {
	s := o.tx.settings
	return newTokenizer(s.GetKeywordMaxTerms(), s.GetKeywordMaxTermBytes())
}

// indexDoc writes the postings of a new document (the caller removed any
// earlier version with unindexDoc). Nothing is written with the index off
// or for a text without terms.
func (o *opCtx) indexDoc(doc []byte, text string) {
	if o.tx.settings.GetKeywordIndexOff() || text == "" {
		return
	}
	order, tf, length := o.tokenizer().terms(text)
	if length == 0 {
		return
	}
	tenant := o.c.GetTenant()
	fwd := binary.AppendUvarint(make([]byte, 0, 8+len(text)), uint64(length))
	var val [2 * binary.MaxVarintLen64]byte
	for _, term := range order {
		n := tf[term]
		v := binary.AppendUvarint(val[:0], uint64(n))
		v = binary.AppendUvarint(v, uint64(length))
		k := append(postingPrefix(tenant, term), doc...)
		if err := o.tx.b.Set(k, v, nil); err != nil {
			o.tx.fail(err)
			return
		}
		fwd = binary.AppendUvarint(fwd, uint64(len(term)))
		fwd = append(fwd, term...)
		fwd = binary.AppendUvarint(fwd, uint64(n))
	}
	if err := o.tx.b.Set(forwardKey(tenant, doc), fwd, nil); err != nil {
		o.tx.fail(err)
		return
	}
	o.addStats(docClass(doc), 1, int64(length))
}

// unindexDoc removes a document's postings (none: nothing to do).
func (o *opCtx) unindexDoc(doc []byte) {
	fk := forwardKey(o.c.GetTenant(), doc)
	fwd := o.tx.getRaw(fk)
	if fwd == nil {
		return
	}
	o.dropPostings(doc, fwd)
	o.tx.del(fk)
}

// unindexPrefix removes the postings of every document under prefix (a
// context's entries): one scan of their forward keys, then one range
// delete of them. The cost is the documents' distinct terms.
func (o *opCtx) unindexPrefix(prefix []byte) {
	lo := forwardKey(o.c.GetTenant(), prefix)
	hi := prefixEnd(lo)
	it, err := o.tx.b.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: hi})
	if err != nil {
		o.tx.fail(err)
		return
	}
	type fwdDoc struct{ doc, fwd []byte }
	var docs []fwdDoc
	for ok := it.First(); ok; ok = it.Next() {
		docs = append(docs, fwdDoc{doc: bytes.Clone(it.Key()[len(lo)-len(prefix):]), fwd: bytes.Clone(it.Value())})
	}
	if err := it.Close(); err != nil {
		o.tx.fail(err)
		return
	}
	if len(docs) == 0 {
		return
	}
	for _, d := range docs {
		o.dropPostings(d.doc, d.fwd)
	}
	o.tx.delRange(lo, hi)
}

// dropPostings deletes the postings a forward value lists and takes the
// document out of its class's counters.
func (o *opCtx) dropPostings(doc, fwd []byte) {
	tenant := o.c.GetTenant()
	length, n := binary.Uvarint(fwd)
	if n <= 0 {
		o.tx.fail(errors.New("corrupt keyword forward entry"))
		return
	}
	for b := fwd[n:]; len(b) > 0; {
		l, w := binary.Uvarint(b)
		if w <= 0 || uint64(len(b)-w) < l {
			o.tx.fail(errors.New("corrupt keyword forward entry"))
			return
		}
		term := b[w : w+int(l)]
		b = b[w+int(l):]
		_, w = binary.Uvarint(b)
		if w <= 0 {
			o.tx.fail(errors.New("corrupt keyword forward entry"))
			return
		}
		b = b[w:]
		k := append(postingPrefix(tenant, string(term)), doc...)
		if err := o.tx.b.Delete(k, nil); err != nil {
			o.tx.fail(err)
			return
		}
	}
	o.addStats(docClass(doc), -1, -int64(length))
}

// keywordStats are a class's BM25 counters.
type keywordStats struct{ docs, length uint64 }

func decodeKeywordStats(v []byte) keywordStats {
	var s keywordStats
	d, n := binary.Uvarint(v)
	if n <= 0 {
		return s
	}
	l, m := binary.Uvarint(v[n:])
	if m <= 0 {
		return s
	}
	return keywordStats{docs: d, length: l}
}

func (o *opCtx) addStats(class byte, docs, length int64) {
	k := keywordStatsKey(o.c.GetTenant(), class)
	s := decodeKeywordStats(o.tx.getRaw(k))
	s.docs = uint64(max(int64(s.docs)+docs, 0))
	s.length = uint64(max(int64(s.length)+length, 0))
	if s.docs == 0 {
		o.tx.del(k)
		return
	}
	v := binary.AppendUvarint(nil, s.docs)
	o.tx.setRaw(k, binary.AppendUvarint(v, s.length))
}

// indexEntry indexes an appended entry's text.
func (o *opCtx) indexEntry(id string, e *contextv1.Entry) {
	if t, ok := e.GetContent().(*contextv1.Entry_Text); ok {
		o.indexDoc(entryDoc(id, e.GetSeq()), t.Text)
	}
}

// reindexMemory replaces a memory item's postings: the old value's go,
// the new value's (when it is UTF-8 text) come; item nil: deleted.
func (o *opCtx) reindexMemory(principal, key string, item *contextv1.MemoryItem) {
	doc := memoryDoc(principal, key)
	o.unindexDoc(doc)
	if item != nil && utf8.Valid(item.GetValue()) {
		o.indexDoc(doc, string(item.GetValue()))
	}
}

// BM25 parameters (Robertson, Zaragoza; Lucene's defaults).
const (
	bm25K1 = 1.2
	bm25B  = 0.75
)

// DefaultKeywordMaxPostings bounds the postings one query scans.
const DefaultKeywordMaxPostings = 200_000

// KeywordQuery is a keyword search over a tenant's view.
type KeywordQuery struct {
	// Text is tokenized as documents are (the cell's settings).
	Text string
	// MatchAll keeps only documents holding every query term.
	MatchAll bool
	// MaxPostings bounds the postings scanned (0: DefaultKeywordMaxPostings).
	MaxPostings int
	// Limit is the most hits returned.
	Limit int
}

// KeywordResult is what a keyword search found, best first.
type KeywordResult struct {
	Entries []EntryHit
	Memory  []MemoryHit
	// Truncated: the scan stopped at MaxPostings.
	Truncated bool
}

// EntryHit is an entry found by a keyword search.
type EntryHit struct {
	ContextID string
	Context   *contextv1.Context
	Entry     *contextv1.Entry
	Score     float64
}

// MemoryHit is a memory item found by a keyword search.
type MemoryHit struct {
	Item  *contextv1.MemoryItem
	Score float64
}

type scoredDoc struct {
	doc   string
	score float64
	terms int
}

// posting is one scanned posting of a query term.
type posting struct {
	d      *scoredDoc
	tf, dl uint64
}

// ranked yields scored documents best first (score, then name), lazily:
// a heap, so taking the first few of many costs O(n + k log n).
type ranked struct{ h []*scoredDoc }

func better(a, b *scoredDoc) bool {
	if a.score != b.score {
		return a.score > b.score
	}
	return a.doc < b.doc
}

func (r *ranked) Len() int           { return len(r.h) }
func (r *ranked) Less(i, j int) bool { return better(r.h[i], r.h[j]) }
func (r *ranked) Swap(i, j int)      { r.h[i], r.h[j] = r.h[j], r.h[i] }
func (r *ranked) Push(x any)         { r.h = append(r.h, x.(*scoredDoc)) }
func (r *ranked) Pop() any {
	x := r.h[len(r.h)-1]
	r.h = r.h[:len(r.h)-1]
	return x
}

// next pops the best remaining document (nil: none left).
func (r *ranked) next() *scoredDoc {
	if len(r.h) == 0 {
		return nil
	}
	return heap.Pop(r).(*scoredDoc)
}

// score ranks the documents under the given doc prefixes (one scan per
// query term and prefix) by BM25 with the class's counters.
func (v *TenantView) score(q KeywordQuery, class byte, prefixes [][]byte) (*ranked, bool, error) {
	settings, err := settingsIn(v.r)
	if err != nil {
		return nil, false, err
	}
	tok := newTokenizer(settings.GetKeywordMaxTerms(), settings.GetKeywordMaxTermBytes())
	order, _, _ := tok.terms(q.Text)
	if len(order) == 0 {
		return &ranked{}, false, nil
	}
	stats := keywordStats{}
	if val, ok, err := getRaw(v.r, keywordStatsKey(v.tenant, class)); err != nil {
		return nil, false, err
	} else if ok {
		stats = decodeKeywordStats(val)
	}
	avgdl := 1.0
	if stats.docs > 0 {
		avgdl = float64(stats.length) / float64(stats.docs)
	}
	budget := q.MaxPostings
	if budget <= 0 {
		budget = DefaultKeywordMaxPostings
	}
	truncated := false
	docs := map[string]*scoredDoc{}
	var list []posting
	// Each query word gets an equal share of the budget (a word common
	// enough to use it all must not starve the rarer, more telling ones);
	// a share a word leaves unused passes to the words after it.
	for i, term := range order {
		list = list[:0]
		total := budget
		budget = total / (len(order) - i)
		for _, p := range prefixes {
			pp := append(postingPrefix(v.tenant, term), p...)
			skip := len(pp) - len(p)
			err := scan(v.r, pp, prefixEnd(pp), func(k, val []byte) (bool, error) {
				if budget == 0 {
					truncated = true
					return false, nil
				}
				budget--
				tf, n := binary.Uvarint(val)
				dl, m := uint64(0), 0
				if n > 0 {
					dl, m = binary.Uvarint(val[n:])
				}
				if n <= 0 || m <= 0 {
					return false, errors.New("corrupt keyword posting")
				}
				d := docs[string(k[skip:])] // no allocation for the lookup
				if d == nil {
					d = &scoredDoc{doc: string(k[skip:])}
					docs[d.doc] = d
				}
				list = append(list, posting{d: d, tf: tf, dl: dl})
				return true, nil
			})
			if err != nil {
				return nil, false, err
			}
		}
		budget = total - total/(len(order)-i) + budget // the rest, with what this word left
		df := float64(len(list))
		n := max(float64(stats.docs), df)
		idf := math.Log(1 + (n-df+0.5)/(df+0.5))
		for _, p := range list {
			tf := float64(p.tf)
			p.d.score += idf * tf * (bm25K1 + 1) / (tf + bm25K1*(1-bm25B+bm25B*float64(p.dl)/avgdl))
			p.d.terms++
		}
	}
	r := &ranked{h: make([]*scoredDoc, 0, len(docs))}
	for _, d := range docs {
		if q.MatchAll && d.terms < len(order) {
			continue
		}
		r.h = append(r.h, d)
	}
	heap.Init(r)
	return r, truncated, nil
}

// KeywordEntries searches the text of entries: of the contexts ids (none:
// every context of the tenant), visible at the view's time, that accept
// takes (nil: all), best BM25 score first. A deleted context's entries
// (kept for its forks) are not found; a fork's inherited entries are
// found under the context that stores them.
func (v *TenantView) KeywordEntries(q KeywordQuery, ids []string, accept func(c *contextv1.Context, e *contextv1.Entry) bool) (KeywordResult, error) {
	prefixes := [][]byte{{kindEntry}}
	if len(ids) > 0 {
		prefixes = prefixes[:0]
		for _, id := range dedupStrings(ids) {
			prefixes = append(prefixes, entryDocPrefix(id))
		}
	}
	ranked, truncated, err := v.score(q, classEntry, prefixes)
	res := KeywordResult{Truncated: truncated}
	if err != nil {
		return res, err
	}
	ctxs := map[string]*contextv1.Context{}
	for d := ranked.next(); d != nil && len(res.Entries) < q.Limit; d = ranked.next() {
		doc := d.doc
		if len(doc) < 10 || doc[0] != kindEntry {
			continue
		}
		id := doc[1 : len(doc)-9]
		c, seen := ctxs[id]
		if !seen {
			var rc contextv1.Context
			ok, err := getProto(v.r, contextKey(v.tenant, id), &rc)
			if err != nil {
				return res, err
			}
			if ok && v.visible(&rc) {
				c = &rc
			}
			ctxs[id] = c
		}
		if c == nil {
			continue
		}
		var e contextv1.Entry
		ok, err := getProto(v.r, append(tenantPrefix(v.tenant), doc...), &e)
		if err != nil {
			return res, err
		}
		if !ok || (accept != nil && !accept(c, &e)) {
			continue
		}
		res.Entries = append(res.Entries, EntryHit{ContextID: id, Context: c, Entry: &e, Score: d.score})
	}
	return res, nil
}

// KeywordMemory searches the values of principal's memory ("": the
// tenant's shared memory) under key prefix, unexpired at the view's time,
// that accept takes (nil: all).
func (v *TenantView) KeywordMemory(q KeywordQuery, principal, prefix string, accept func(*contextv1.MemoryItem) bool) (KeywordResult, error) {
	ranked, truncated, err := v.score(q, classMemory, [][]byte{memoryDoc(principal, prefix)})
	res := KeywordResult{Truncated: truncated}
	if err != nil {
		return res, err
	}
	base := tenantPrefix(v.tenant)
	for d := ranked.next(); d != nil && len(res.Memory) < q.Limit; d = ranked.next() {
		var m contextv1.MemoryItem
		ok, err := getProto(v.r, append(bytes.Clone(base), d.doc...), &m)
		if err != nil {
			return res, err
		}
		if !ok || expired(m.GetExpireTime(), v.now) || (accept != nil && !accept(&m)) {
			continue
		}
		res.Memory = append(res.Memory, MemoryHit{Item: &m, Score: d.score})
	}
	return res, nil
}

func dedupStrings(s []string) []string {
	seen := map[string]bool{}
	out := s[:0:0]
	for _, x := range s {
		if !seen[x] {
			seen[x] = true
			out = append(out, x)
		}
	}
	sort.Strings(out)
	return out
}

// getRaw reads key from r (ok false: absent); the value is a copy.
func getRaw(r pebble.Reader, key []byte) ([]byte, bool, error) {
	v, closer, err := r.Get(key)
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	defer closer.Close()
	return bytes.Clone(v), true, nil
}

// settingsIn reads the cell settings stored in r (empty when none are).
func settingsIn(r pebble.Reader) (*cellv1.CellSettings, error) {
	var st cellv1.CellSettings
	if _, err := getProto(r, keySettings, &st); err != nil {
		return nil, err
	}
	return &st, nil
}

// defaultReindexBatch is a reindex_keywords batch when the op says 0.
const defaultReindexBatch = 1024

// reindexKinds are the document kinds in the order a rebuild visits them
// (key order: 'M' < 'e' < 'm').
var reindexKinds = []byte{kindPrincipalMemory, kindEntry, kindMemory}

// applyReindexKeywords indexes a batch of documents that have no postings
// (written while the index was off, or before it existed): at most
// max_docs documents visited, in key order, after the op's cursor. With
// the index off it indexes nothing (and says the rebuild is complete).
func applyReindexKeywords(o *opCtx) (*cellv1.CommandResult, error) {
	op := o.c.GetReindexKeywords()
	limit := int(op.GetMaxDocs())
	if limit <= 0 {
		limit = defaultReindexBatch
	}
	res := &cellv1.ReindexKeywordsResult{}
	out := &cellv1.CommandResult{Result: &cellv1.CommandResult_ReindexKeywords{ReindexKeywords: res}}
	if o.tx.settings.GetKeywordIndexOff() {
		return out, nil
	}
	tenant := o.c.GetTenant()
	base := tenantPrefix(tenant)
	after := op.GetAfter()
	type doc struct{ name, val []byte }
	var docs []doc
	more := false
	for _, kind := range reindexKinds {
		if len(after) > 0 && after[0] > kind {
			continue
		}
		lo := tenantKey(tenant, kind, 0)
		if len(after) > 0 && after[0] == kind {
			lo = append(append(bytes.Clone(base), after...), 0) // just after the cursor
		}
		it, err := o.tx.b.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: prefixEnd(tenantKey(tenant, kind, 0))})
		if err != nil {
			o.tx.fail(err)
			return nil, nil
		}
		for ok := it.First(); ok; ok = it.Next() {
			if len(docs) == limit {
				more = true
				break
			}
			docs = append(docs, doc{name: bytes.Clone(it.Key()[len(base):]), val: bytes.Clone(it.Value())})
		}
		if err := it.Close(); err != nil {
			o.tx.fail(err)
			return nil, nil
		}
		if more {
			break
		}
	}
	// What the result says and whether the tenant changed depend only on
	// the data keys, never on the index (replicas that applied earlier
	// commands with a binary without the index hold fewer postings: they
	// must still assign the same tseq and log the same result).
	for _, d := range docs {
		res.Visited++
		var text string
		if d.name[0] == kindEntry {
			var e contextv1.Entry
			if err := proto.Unmarshal(d.val, &e); err != nil {
				o.tx.fail(err)
				return nil, nil
			}
			t, ok := e.GetContent().(*contextv1.Entry_Text)
			if !ok {
				continue
			}
			text = t.Text
		} else {
			var m contextv1.MemoryItem
			if err := proto.Unmarshal(d.val, &m); err != nil {
				o.tx.fail(err)
				return nil, nil
			}
			if !utf8.Valid(m.GetValue()) {
				continue
			}
			text = string(m.GetValue())
		}
		if text == "" {
			continue
		}
		res.Indexed++ // a text document: indexed now unless it was already
		if o.tx.getRaw(forwardKey(tenant, d.name)) == nil {
			o.indexDoc(d.name, text)
		}
	}
	if more && len(docs) > 0 {
		res.Next = docs[len(docs)-1].name
	}
	o.changed = len(docs) > 0
	return out, nil
}

// ReindexKeywords rebuilds a tenant's keyword index for the documents
// that have none (written while the index was off, or by a version
// without it), in replicated batches of batch documents (0: 1024), from
// the start or from a previous call's next cursor. It returns the text
// documents visited (each indexed unless it was already) and where a
// later call would resume (nil: complete).
// Each batch is one command through Raft, so replicas and standbys index
// alike; the tenant's writes interleave with the batches. The leader
// runs it (Propose); a failed batch can be resumed from the cursor.
func (s *Store) ReindexKeywords(ctx context.Context, tenant string, batch int, from []byte) (indexed uint64, next []byte, err error) {
	cursor := from
	for {
		if err := ctx.Err(); err != nil {
			return indexed, cursor, err
		}
		res, err := s.Propose(ctx, &cellv1.Command{Tenant: tenant,
			Op: &cellv1.Command_ReindexKeywords{ReindexKeywords: &cellv1.ReindexKeywordsOp{After: cursor, MaxDocs: uint32(max(batch, 0))}}})
		if err != nil {
			return indexed, cursor, err
		}
		if e := res.GetError(); e != nil {
			return indexed, cursor, cperr.New(cperr.Reason(e.GetReason()), "%s", e.GetMessage())
		}
		r := res.GetReindexKeywords()
		indexed += uint64(r.GetIndexed())
		if len(r.GetNext()) == 0 {
			return indexed, nil, nil
		}
		cursor = r.GetNext()
	}
}
