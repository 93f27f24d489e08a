package store

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"math"
	"slices"
	"time"

	contextv1 "github.com/cellplane/cellplane/proto/cellplane/context/v1"
	"github.com/cockroachdb/pebble/v2"
)

// VectorHit is one vector found by a search: a context entry (ContextID,
// Seq) or a memory key (Principal, Key), with its cosine similarity.
type VectorHit struct {
	ContextID string
	Seq       uint64
	Principal string
	Key       string
	Score     float64
}

// VectorSearchStats says how a search was answered (tests, benchmarks).
type VectorSearchStats struct {
	// Approximate: the HNSW index answered; Fallback: it did not find k
	// accepted hits, so an exact search did.
	Approximate, Fallback bool
	Scanned               int
}

// VectorNamespace returns a namespace's dimension and vector count.
func (v *TenantView) VectorNamespace(ns byte) (dims int, count uint64, err error) {
	b, _, err := getRaw(v.r, vectorDimsKey(v.tenant, ns))
	if err != nil {
		return 0, 0, err
	}
	n := decodeVectorNS(b)
	return int(n.dims), n.count, nil
}

// SearchContextVectors returns up to k context entries nearest to vec
// (cosine similarity), best first, that accept accepts (it checks what
// the vector's key cannot: the context is visible, the filters, the
// caller's scope). ids, when given, restrict the search to those
// contexts' vectors (an exact scan of just them).
func (v *TenantView) SearchContextVectors(vec []float32, k int, ids []string, accept func(VectorHit) (bool, error)) ([]VectorHit, VectorSearchStats, error) {
	var prefixes [][]byte
	for _, id := range ids {
		prefixes = append(prefixes, contextVectorPrefix(v.tenant, id))
	}
	return v.searchVectors(VectorContexts, vec, k, prefixes, accept)
}

// SearchMemoryVectors is SearchContextVectors over principal's memory
// ("": the tenant's shared memory), keys with prefix only.
func (v *TenantView) SearchMemoryVectors(principal, prefix string, vec []float32, k int, accept func(VectorHit) (bool, error)) ([]VectorHit, VectorSearchStats, error) {
	return v.searchVectors(VectorMemory, vec, k, [][]byte{append(memoryVectorBase(v.tenant, principal), prefix...)}, accept)
}

// parseVectorKey reads a hit from a vector key without the tenant's 'v'
// prefix (namespace byte first).
func parseVectorKey(rest []byte) (VectorHit, bool) {
	if len(rest) == 0 {
		return VectorHit{}, false
	}
	switch rest[0] {
	case VectorContexts:
		if len(rest) < 10 || rest[len(rest)-9] != 0 {
			return VectorHit{}, false
		}
		return VectorHit{ContextID: string(rest[1 : len(rest)-9]), Seq: binary.BigEndian.Uint64(rest[len(rest)-8:])}, true
	case VectorMemory:
		p, key, ok := splitPrincipalKey(rest[1:])
		return VectorHit{Principal: p, Key: key}, ok
	}
	return VectorHit{}, false
}

func (v *TenantView) searchVectors(ns byte, q []float32, k int, prefixes [][]byte, accept func(VectorHit) (bool, error)) ([]VectorHit, VectorSearchStats, error) {
	var st VectorSearchStats
	dims, count, err := v.VectorNamespace(ns)
	if err != nil || count == 0 || k <= 0 {
		return nil, st, err
	}
	if dims != len(q) {
		return nil, st, dimsMismatch("vector", ns, len(q), uint32(dims))
	}
	qn := norm(q)
	narrowed := ns == VectorContexts && len(prefixes) > 0
	if count > uint64(v.vecExactMax()) && !narrowed {
		if ix := v.vec.get(vecNS{v.tenant, ns}); ix != nil {
			hits, full, err := v.searchIndex(ix, q, qn, k, prefixes, accept)
			if err != nil || len(hits) >= k || !full {
				st.Approximate = true
				return hits, st, err
			}
			st.Fallback = true // a selective filter: exact search finds what the index's candidates did not
		}
	}
	if len(prefixes) == 0 {
		prefixes = [][]byte{vectorBase(v.tenant, ns)}
	}
	base := len(tenantKey(v.tenant, kindVector, 0))
	type cand struct {
		key   []byte
		score float64
	}
	var cands []cand
	for _, p := range prefixes {
		err := scan(v.r, p, prefixEnd(p), func(key, val []byte) (bool, error) {
			st.Scanned++
			if len(val) != 4*dims {
				return true, nil // written before the namespace's dimension changed: not comparable
			}
			cands = append(cands, cand{key: bytes.Clone(key[base:]), score: cosineRaw(q, qn, val)})
			return true, nil
		})
		if err != nil {
			return nil, st, err
		}
	}
	slices.SortFunc(cands, func(a, b cand) int {
		if c := cmp.Compare(b.score, a.score); c != 0 {
			return c
		}
		return bytes.Compare(a.key, b.key)
	})
	var hits []VectorHit
	for _, c := range cands {
		h, ok := parseVectorKey(c.key)
		if !ok {
			continue
		}
		h.Score = c.score
		ok, err := accept(h)
		if err != nil {
			return nil, st, err
		}
		if ok {
			hits = append(hits, h)
			if len(hits) == k {
				break
			}
		}
	}
	return hits, st, nil
}

func (v *TenantView) vecExactMax() int {
	if v.vec == nil || v.vec.cfg.IndexBudgetBytes == 0 {
		return math.MaxInt
	}
	return v.vec.cfg.ExactMax
}

// searchIndex asks the HNSW index for k×OverFetch candidates and returns
// those accepted (and within prefixes), best first. full reports that the
// index returned every candidate asked for (more may exist).
func (v *TenantView) searchIndex(ix *vecIndex, q []float32, qn float64, k int, prefixes [][]byte, accept func(VectorHit) (bool, error)) ([]VectorHit, bool, error) {
	want := k * v.vec.cfg.OverFetch
	base := len(tenantKey(v.tenant, kindVector, 0))
	ix.mu.Lock()
	nodes := ix.g.Search(q, want, v.vec.cfg.EfSearch)
	ix.mu.Unlock()
	type cand struct {
		hit VectorHit
		key string
	}
	var cands []cand
	for _, n := range nodes {
		if len(prefixes) > 0 && !slices.ContainsFunc(prefixes, func(p []byte) bool {
			return bytes.HasPrefix([]byte(n.Key), p[base:])
		}) {
			continue
		}
		h, ok := parseVectorKey([]byte(n.Key))
		if !ok {
			continue
		}
		h.Score = cosine(q, qn, n.Value)
		cands = append(cands, cand{h, n.Key})
	}
	slices.SortFunc(cands, func(a, b cand) int {
		if c := cmp.Compare(b.hit.Score, a.hit.Score); c != 0 {
			return c
		}
		return cmp.Compare(a.key, b.key)
	})
	var hits []VectorHit
	for _, c := range cands {
		ok, err := accept(c.hit)
		if err != nil {
			return nil, false, err
		}
		if ok {
			hits = append(hits, c.hit)
			if len(hits) == k {
				break
			}
		}
	}
	return hits, len(nodes) >= want, nil
}

func norm(v []float32) float64 {
	var s float64
	for _, x := range v {
		s += float64(x) * float64(x)
	}
	return math.Sqrt(s)
}

// cosine is the cosine similarity of q (norm qn) and v (0 when v is 0).
func cosine(q []float32, qn float64, v []float32) float64 {
	var dot, vv float64
	for i, x := range v {
		dot += float64(q[i]) * float64(x)
		vv += float64(x) * float64(x)
	}
	if vv == 0 || qn == 0 {
		return 0
	}
	return dot / (qn * math.Sqrt(vv))
}

// cosineRaw is cosine against a stored vector, decoded on the fly.
func cosineRaw(q []float32, qn float64, raw []byte) float64 {
	var dot, vv float64
	for i := range q {
		x := float64(math.Float32frombits(binary.LittleEndian.Uint32(raw[4*i:])))
		dot += float64(q[i]) * x
		vv += x * x
	}
	if vv == 0 || qn == 0 {
		return 0
	}
	return dot / (qn * math.Sqrt(vv))
}

// buildVectorIndex builds a namespace's index from a snapshot of the
// stored vectors (in the background: searches are exact meanwhile), then
// installs it, replaying what was committed since (vectorIndexes.finish).
func (f *fsm) buildVectorIndex(ix *vecIndex, closing <-chan struct{}) {
	x := f.vectors
	start := time.Now()
	g := x.newGraph()
	var byContext map[string][]string
	if ix.id.ns == VectorContexts {
		byContext = map[string][]string{}
	}
	var bytesUsed int64
	dims := 0
	snap, err := f.openSnapshot()
	if err != nil {
		x.finish(ix, false, 0)
		return
	}
	defer f.releaseSnapshot(snap)
	base := len(tenantKey(ix.id.tenant, kindVector, 0))
	lower := vectorBase(ix.id.tenant, ix.id.ns)
	n := 0
	err = f.withSnapshot(snap, func(r pebble.Reader) error {
		d, _, _ := getRaw(r, vectorDimsKey(ix.id.tenant, ix.id.ns))
		dims = int(decodeVectorNS(d).dims)
		return scan(r, lower, prefixEnd(lower), func(k, v []byte) (bool, error) {
			if n++; n%1024 == 0 {
				select {
				case <-closing:
					return false, errUnavailable("the node is shutting down")
				default:
				}
			}
			if len(v) != 4*dims {
				return true, nil
			}
			vec, err := DecodeVector(v)
			if err != nil {
				return true, nil
			}
			key := string(k[base:])
			bytesUsed += x.nodeBytes(dims, len(key))
			if bytesUsed > x.cfg.IndexBudgetBytes {
				return false, errUnavailable("the vector index would exceed the member's budget")
			}
			g.Add(key, vec)
			if byContext != nil {
				if id, ok := contextOfVectorKey(key); ok {
					byContext[id] = append(byContext[id], key)
				}
			}
			return true, nil
		})
	})
	if err != nil {
		f.log.Warn("vector index not built", "tenant", ix.id.tenant, "namespace", nsName(ix.id.ns), "err", err)
		x.finish(ix, false, 0)
		return
	}
	ix.mu.Lock()
	ix.g, ix.byContext, ix.bytes, ix.dims = g, byContext, bytesUsed, dims
	ix.mu.Unlock()
	x.finish(ix, true, time.Since(start))
}

// VectorEntry returns the entry a context hit names, as stored under its
// context (nil: no longer stored).
func (v *TenantView) VectorEntry(h VectorHit) (*contextv1.Entry, error) {
	var e contextv1.Entry
	ok, err := getProto(v.r, entryKey(v.tenant, h.ContextID, h.Seq), &e)
	if !ok || err != nil {
		return nil, err
	}
	return &e, nil
}

// ExactVectors returns the view searching vectors exactly only (no
// index): benchmarks' baseline.
func (v *TenantView) ExactVectors() *TenantView {
	c := *v
	c.vec = nil
	return &c
}

// VectorIndexStats describes a member's loaded vector indexes.
type VectorIndexStats struct {
	Loaded int
	Bytes  int64
}

// VectorIndexStats returns the member's loaded indexes and their
// estimated memory.
func (s *Store) VectorIndexStats() VectorIndexStats {
	x := s.fsm.vectors
	x.mu.Lock()
	defer x.mu.Unlock()
	n := 0
	for _, ix := range x.m {
		ix.mu.Lock()
		if ix.ready {
			n++
		}
		ix.mu.Unlock()
	}
	return VectorIndexStats{Loaded: n, Bytes: x.used}
}
