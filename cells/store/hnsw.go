package store

import (
	"cmp"
	"container/heap"
	"math"
	"math/rand/v2"
	"slices"
)

// hnswGraph is a hierarchical navigable small world graph (Malkov and
// Yashunin, 2018) over unit vectors, distance 1 - cosine similarity.
//
// It is this package's own rather than github.com/coder/hnsw v0.6.1's:
// that one ends a search at the first expansion that does not improve on
// the best result so far (a greedy walk, whatever EfSearch says), and
// measured recall@10 of 0.04-0.2 on random unit vectors (5k of dimension
// 64, M 16, candidate lists of 10 to 400; docs/decisions.md). This one
// keeps the paper's candidate list of ef entries for both insertion and
// search.
//
// Deletes are tombstones: a deleted node still routes searches but is
// never returned; vecIndex drops the graph (to be built again) once the
// tombstones outnumber the live nodes. Not safe for concurrent use.
type hnswGraph struct {
	m, m0, efC int
	ml         float64
	rng        *rand.Rand
	nodes      []hnode
	ids        map[string]int32
	entry      int32
	top        int
	dead       int
	// visited marks nodes with the current search's generation.
	visited []uint32
	gen     uint32
}

type hnode struct {
	key  string
	vec  []float32 // normalised
	nbrs [][]int32 // by level
	dead bool
}

func newHNSW(m, efConstruction int, seed uint64) *hnswGraph {
	return &hnswGraph{m: m, m0: 2 * m, efC: efConstruction, ml: 1 / math.Log(float64(m)),
		rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)), ids: map[string]int32{}, entry: -1}
}

// Len is the number of live nodes.
func (g *hnswGraph) Len() int { return len(g.ids) }

func normalize(v []float32) []float32 {
	n := norm(v)
	out := make([]float32, len(v))
	if n == 0 {
		return out
	}
	for i, x := range v {
		out[i] = float32(float64(x) / n)
	}
	return out
}

func dist(a, b []float32) float32 {
	b = b[:len(a)]
	var s0, s1, s2, s3 float32
	i := 0
	for ; i+4 <= len(a); i += 4 {
		s0 += a[i] * b[i]
		s1 += a[i+1] * b[i+1]
		s2 += a[i+2] * b[i+2]
		s3 += a[i+3] * b[i+3]
	}
	for ; i < len(a); i++ {
		s0 += a[i] * b[i]
	}
	return 1 - (s0 + s1 + s2 + s3)
}

type distItem struct {
	id int32
	d  float32
}

// minHeap and maxHeap order distItems by distance.
type minHeap []distItem

func (h minHeap) Len() int           { return len(h) }
func (h minHeap) Less(i, j int) bool { return h[i].d < h[j].d }
func (h minHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *minHeap) Push(x any)        { *h = append(*h, x.(distItem)) }
func (h *minHeap) Pop() any          { o := *h; x := o[len(o)-1]; *h = o[:len(o)-1]; return x }

type maxHeap []distItem

func (h maxHeap) Len() int           { return len(h) }
func (h maxHeap) Less(i, j int) bool { return h[i].d > h[j].d }
func (h maxHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *maxHeap) Push(x any)        { *h = append(*h, x.(distItem)) }
func (h *maxHeap) Pop() any          { o := *h; x := o[len(o)-1]; *h = o[:len(o)-1]; return x }

func (g *hnswGraph) nextGen() {
	if len(g.visited) < len(g.nodes) {
		g.visited = append(g.visited, make([]uint32, len(g.nodes)-len(g.visited))...)
	}
	g.gen++
	if g.gen == 0 {
		clear(g.visited)
		g.gen = 1
	}
}

// searchLayer returns the ef nearest nodes to q at level found from eps,
// nearest first.
func (g *hnswGraph) searchLayer(q []float32, eps []distItem, ef, level int) []distItem {
	g.nextGen()
	cand := minHeap{}
	res := maxHeap{}
	for _, e := range eps {
		g.visited[e.id] = g.gen
		heap.Push(&cand, e)
		heap.Push(&res, e)
		if res.Len() > ef {
			heap.Pop(&res)
		}
	}
	for cand.Len() > 0 {
		c := heap.Pop(&cand).(distItem)
		if res.Len() >= ef && c.d > res[0].d {
			break
		}
		for _, nb := range g.nodes[c.id].nbrs[level] {
			if g.visited[nb] == g.gen {
				continue
			}
			g.visited[nb] = g.gen
			d := dist(q, g.nodes[nb].vec)
			if res.Len() < ef || d < res[0].d {
				heap.Push(&cand, distItem{nb, d})
				heap.Push(&res, distItem{nb, d})
				if res.Len() > ef {
					heap.Pop(&res)
				}
			}
		}
	}
	out := make([]distItem, res.Len())
	for i := len(out) - 1; i >= 0; i-- {
		out[i] = heap.Pop(&res).(distItem)
	}
	return out
}

// descend walks greedily from the entry point down to level stop+1.
func (g *hnswGraph) descend(q []float32, stop int) distItem {
	ep := distItem{g.entry, dist(q, g.nodes[g.entry].vec)}
	for l := g.top; l > stop; l-- {
		for changed := true; changed; {
			changed = false
			for _, nb := range g.nodes[ep.id].nbrs[l] {
				if d := dist(q, g.nodes[nb].vec); d < ep.d {
					ep, changed = distItem{nb, d}, true
				}
			}
		}
	}
	return ep
}

// Add inserts (or replaces) key's vector.
func (g *hnswGraph) Add(key string, vec []float32) {
	g.Delete(key)
	q := normalize(vec)
	level := int(math.Floor(-math.Log(1-g.rng.Float64()) * g.ml))
	id := int32(len(g.nodes))
	g.nodes = append(g.nodes, hnode{key: key, vec: q, nbrs: make([][]int32, level+1)})
	g.ids[key] = id
	if g.entry < 0 {
		g.entry, g.top = id, level
		return
	}
	ep := g.descend(q, level)
	eps := []distItem{ep}
	for l := min(level, g.top); l >= 0; l-- {
		w := g.searchLayer(q, eps, g.efC, l)
		maxN := g.m
		if l == 0 {
			maxN = g.m0
		}
		nbrs := g.selectNeighbors(w, g.m)
		g.nodes[id].nbrs[l] = nbrs
		for _, nb := range nbrs {
			list := append(g.nodes[nb].nbrs[l], id)
			if len(list) > maxN {
				list = g.prune(nb, list, maxN)
			}
			g.nodes[nb].nbrs[l] = list
		}
		eps = w
	}
	if level > g.top {
		g.entry, g.top = id, level
	}
}

// selectNeighbors picks up to m of candidates (nearest first) with the
// paper's heuristic: a candidate is kept when it is nearer to the new
// node than to every neighbour kept so far (so that edges spread in
// directions), the rest filling what is left.
func (g *hnswGraph) selectNeighbors(cands []distItem, m int) []int32 {
	out := make([]int32, 0, m)
	var skipped []int32
	for _, c := range cands {
		if len(out) == m {
			break
		}
		good := true
		for _, o := range out {
			if dist(g.nodes[c.id].vec, g.nodes[o].vec) < c.d {
				good = false
				break
			}
		}
		if good {
			out = append(out, c.id)
		} else {
			skipped = append(skipped, c.id)
		}
	}
	for _, s := range skipped {
		if len(out) == m {
			break
		}
		out = append(out, s)
	}
	return out
}

// prune keeps node's maxN nearest neighbours of list.
func (g *hnswGraph) prune(node int32, list []int32, maxN int) []int32 {
	cands := make([]distItem, len(list))
	for i, nb := range list {
		cands[i] = distItem{nb, dist(g.nodes[node].vec, g.nodes[nb].vec)}
	}
	// The nearest maxN (not the spreading heuristic of selectNeighbors:
	// pruning runs for most neighbours of every insert, and the heuristic's
	// quadratic cost made builds several times slower for no measured
	// recall).
	slices.SortFunc(cands, func(a, b distItem) int { return cmp.Compare(a.d, b.d) })
	out := list[:0]
	for _, c := range cands[:maxN] {
		out = append(out, c.id)
	}
	return out
}

// Delete tombstones key; false when it is not in the graph.
func (g *hnswGraph) Delete(key string) bool {
	id, ok := g.ids[key]
	if !ok {
		return false
	}
	delete(g.ids, key)
	g.nodes[id].dead = true
	g.dead++
	return true
}

// Has reports whether key is in the graph.
func (g *hnswGraph) Has(key string) bool {
	_, ok := g.ids[key]
	return ok
}

// hnswResult is one search result.
type hnswResult struct {
	Key   string
	Value []float32 // normalised
}

// Search returns up to k live nodes nearest to q, nearest first, from a
// candidate list of max(ef, k).
func (g *hnswGraph) Search(q []float32, k, ef int) []hnswResult {
	if g.entry < 0 || len(g.ids) == 0 {
		return nil
	}
	qn := normalize(q)
	ep := g.descend(qn, 0)
	w := g.searchLayer(qn, []distItem{ep}, max(ef, k), 0)
	out := make([]hnswResult, 0, k)
	for _, c := range w {
		if g.nodes[c.id].dead {
			continue
		}
		out = append(out, hnswResult{Key: g.nodes[c.id].key, Value: g.nodes[c.id].vec})
		if len(out) == k {
			break
		}
	}
	return out
}
